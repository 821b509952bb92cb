#pragma once
// The field pipeline: processors compiled from a config's `pipeline` array and applied to the
// list of values a field selected. Semantics are documented in config_module.hpp; the casts are
// exposed for tests.
//
// Threading: compiled processors are immutable; RunPipeline is reentrant.

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/result.hpp"
#include "extractor/parse/regex.hpp"

namespace celeriac::extractor::parse {

struct Processor {
  enum class Kind {
    kTrim, kNormalizeSpace, kRegex, kReplace, kSplit, kJoin, kUrlJoin, kCastInt,
    kCastDecimal, kCastBool, kCastDate, kLower, kStripTags, kFirst, kUnique, kMap,
  };
  Kind kind;
  std::shared_ptr<const Regex> regex;  // kRegex, kReplace
  int group = 0;                       // kRegex
  std::string text;                    // kReplace (PCRE2 syntax), kSplit, kJoin, kCastDate
  nlohmann::json map;                  // kMap
};

// One processor object ({"trim": true}, {"regex": {...}}, ...), schema-valid. The error
// message is relative; the caller prefixes the JSON pointer.
Result<Processor> CompileProcessor(const nlohmann::json& spec);

// Applies `pipeline` to `values` in place. `base_url` is what urljoin resolves against.
void RunPipeline(const std::vector<Processor>& pipeline, std::string_view base_url,
                 std::vector<nlohmann::json>* values);

// Whether a pipeline reduces a list to one value (contains join or first).
bool PipelineReduces(const std::vector<Processor>& pipeline);

std::optional<nlohmann::json> CastInt(const nlohmann::json& value);
std::optional<nlohmann::json> CastDecimal(const nlohmann::json& value);
std::optional<nlohmann::json> CastBool(const nlohmann::json& value);
std::optional<nlohmann::json> CastDate(const nlohmann::json& value, const std::string& format);

}  // namespace celeriac::extractor::parse
