#pragma once
// Checks shared by the crawl_config and extract targets: what the pipeline relies on in every
// ParseOutcome of the config module (extractor/module/module.hpp, config_module.hpp).

#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "core/url/url.hpp"
#include "extractor/parse/config_module.hpp"
#include "tests/fuzz/fuzz_support.hpp"

namespace celeriac::fuzz {

// Requests the pipeline will fetch: absolute http(s) URLs the downloader accepts, routed to a
// page type the module has.
inline void CheckRequest(const extractor::RequestSpec& r, const std::set<std::string>& page_types) {
  FUZZ_CHECK(url::ParseHttpUrl(r.url).ok(), "request URL the downloader refuses: " + r.url);
  FUZZ_CHECK(page_types.contains(r.page_type), "request routed to no page type: " + r.page_type);
  FUZZ_CHECK(r.depth >= 0 && r.pagination_index >= 0, "negative depth or pagination index");
  FUZZ_CHECK(r.method == "GET" || r.method == "POST", "method " + r.method);
}

// Items go to Postgres as jsonb, keyed by `key`: the data must serialise as JSON (valid UTF-8).
inline void CheckItem(const extractor::Item& item) {
  FUZZ_CHECK(!item.key.empty(), "item without a key");
  FUZZ_CHECK(ValidUtf8(item.key), "item key is not UTF-8");
  FUZZ_CHECK(item.data.is_object(), "item data is not an object");
  std::string text;
  try {
    text = item.data.dump();
  } catch (const nlohmann::json::exception& e) {
    CheckFailed(__FILE__, __LINE__, "item.data.dump()", e.what());
  }
  FUZZ_CHECK(item.content_hash.size() == 64 &&
                 item.content_hash.find_first_not_of("0123456789abcdef") == std::string::npos,
             "content hash " + item.content_hash);
}

inline void CheckOutcome(const extractor::parse::ConfigModule& module,
                         const Result<extractor::ParseOutcome>& outcome, const std::string& url) {
  if (!outcome.ok()) {
    // Parse catches exceptions and reports them as "cannot parse URL: what()": on a page, that
    // is a bug in the module (it gives up the whole page), not bad input.
    FUZZ_CHECK(outcome.error().message().rfind("cannot parse " + url + ":", 0) != 0,
               "Parse threw: " + outcome.error().message());
    return;
  }
  std::set<std::string> page_types;
  for (const auto& name : module.PageTypes()) page_types.insert(name);
  for (const auto& item : outcome->items) CheckItem(item);
  for (const auto& request : outcome->requests) CheckRequest(request, page_types);
}

}  // namespace celeriac::fuzz
