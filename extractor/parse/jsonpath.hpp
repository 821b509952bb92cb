#pragma once
// JsonPath: an RFC 9535 JSONPath subset, compiled once per config, evaluated on nlohmann::json.
//
// Supported: `$`, `.name`, `.*`, `['name']` / `["name"]`, `[index]` (negative from the end),
// `[*]`, `[start:end:step]`, selector lists `['a', 0]`, descendants `..name` `..*` `..[...]`,
// and filters `[?<expr>]` where expr combines `@`/`$` paths, literals (numbers, strings,
// true, false, null), == != < <= > >=, existence tests (`?@.sku`), `!`, `&&`, `||` and
// parentheses. Function extensions (length(), match(), ...) are not supported and fail to
// compile with a message saying so.
//
// Threading: immutable after Compile; Evaluate is const and may run concurrently.

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/result.hpp"

namespace celeriac::extractor::parse {

class JsonPath {
 public:
  static Result<JsonPath> Compile(std::string_view path);

  // Appends the selected nodes, in RFC 9535 order (object members in key order, since
  // nlohmann::json keeps keys sorted), to `out`. `root` is what `$` denotes.
  void Evaluate(const nlohmann::json& root, std::vector<const nlohmann::json*>* out) const;

  const std::string& text() const { return text_; }

  struct Segment;
  struct Filter;

 private:
  std::string text_;
  std::shared_ptr<const std::vector<Segment>> segments_;
};

}  // namespace celeriac::extractor::parse
