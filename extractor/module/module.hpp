#pragma once
// Module: what a crawl does with pages (Mocra's generate / parse / steps).
//
// A module turns a job into its first requests (Generate) and each downloaded page into items
// and further requests (Parse). A "step" is a page type: every request names the page type its
// response is parsed as, so a module is a small state machine over page types. The
// config-driven module (extractor/parse/config_module.hpp) is one implementation, built from a
// crawl_configs.config document; a crawl that needs code implements Module in C++ and is
// registered by name.
//
// Threading: Generate and Parse are const and may run concurrently on several threads; a module
// keeps no per-page state. Parse never throws for bad input: hostile or broken pages give a
// Parse-class error or a partial outcome.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/result.hpp"
#include "state/crawl_types.hpp"

namespace celeriac::extractor {

using state::Item;
using state::RequestSpec;

// A downloaded page handed to Parse.
struct Page {
  std::string url;                // final URL, after redirects
  std::string content_type;       // the Content-Type header, may be empty
  std::string_view body;          // decompressed body
  int status = 200;
  std::string page_type;          // from the request
  int depth = 0;
  int pagination_index = 0;
};

struct ParseOutcome {
  std::vector<Item> items;
  std::vector<RequestSpec> requests;      // links and pagination, absolute, already filtered by
                                          // allow/deny/scope/depth and routed to a page type
  std::vector<std::string> item_errors;   // items dropped (e.g. a required field missing): each
                                          // one is counted as a Parse error, the page still counts
};

class Module {
 public:
  virtual ~Module() = default;
  // The first requests of a job (start URLs at depth 0).
  virtual std::vector<RequestSpec> Generate() const = 0;
  // Items and further requests from one page. An error means the page as a whole could not be
  // parsed (error class Parse); partial results come back as an outcome with item_errors.
  virtual Result<ParseOutcome> Parse(const Page& page) const = 0;
};

}  // namespace celeriac::extractor
