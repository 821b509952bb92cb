// extract: pages through a FIXED realistic config (data/extract_config.json: CSS, XPath, regex,
// JSONPath, every processor, containers, link rules with allow/deny/scope/depth, next-link and
// parameter pagination) over HTML, XML and JSON bodies, as ConfigModule::Parse sees what a site
// sends.
//
// Input: one selector byte, then the page body.
//   byte & 3         page type: listing (html), detail (auto), api (json), feed (xml)
//   (byte >> 2) & 15 Content-Type, from kContentTypes (charsets libxml2 knows and does not,
//                    JSON, XML, none)
//   byte >> 6        page URL, from kUrls (with a page parameter, a userinfo, a port, an IP)
//
// Invariants: Parse neither throws nor falls back to its catch-all; items serialise as JSON and
// have keys and hashes; requests are URLs the downloader accepts, routed to existing page types
// (parse_checks.hpp); the same page parses to the same outcome twice (no hidden state).

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "extractor/parse/config_module.hpp"
#include "tests/fuzz/fuzz_data.hpp"
#include "tests/fuzz/fuzz_support.hpp"
#include "tests/fuzz/parse_checks.hpp"

namespace {

namespace parse = celeriac::extractor::parse;
namespace extractor = celeriac::extractor;

constexpr const char* kPageTypes[] = {"listing", "detail", "api", "feed"};

constexpr const char* kContentTypes[] = {
    "text/html; charset=utf-8",  "text/html",
    "text/html; charset=ISO-8859-1", "text/html; charset=windows-1251",
    "text/html; charset=shift_jis", "text/html; charset=utf-16",
    "text/html; charset=\"bogus-x\"", "",
    "application/json", "application/json; charset=utf-8",
    "application/vnd.api+json", "application/xml",
    "text/xml; charset=iso-8859-2", "application/rss+xml",
    "application/xhtml+xml", "text/plain; charset=gb18030",
};

constexpr const char* kUrls[] = {
    "https://shop.example.com/catalogue/page-2.html?page=2&sort=price",
    "http://user:pw@shop.example.com:8080/catalogue/a-light_1000/index.html",
    "https://api.shop.example.com/v2/products?page=499&per_page=100",
    "http://203.0.113.7/feed.xml?page=x#frag",
};

const parse::ConfigModule& Module() {
  static const std::shared_ptr<const parse::ConfigModule> module = [] {
    auto compiled = parse::CompileConfig(
        nlohmann::json::parse(celeriac::FuzzData("extract_config.json")));
    FUZZ_CHECK(compiled.ok(), "data/extract_config.json does not compile: " +
                                  (compiled.ok() ? std::string() : compiled.error().message()));
    return *compiled;
  }();
  return *module;
}

std::string Summary(const celeriac::Result<extractor::ParseOutcome>& outcome) {
  if (!outcome.ok()) return "error: " + outcome.error().message();
  std::string s;
  for (const auto& item : outcome->items) s += item.key + " " + item.content_hash + "\n";
  for (const auto& request : outcome->requests)
    s += request.url + " " + request.page_type + " " + std::to_string(request.depth) + "\n";
  for (const auto& error : outcome->item_errors) s += error + "\n";
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const parse::ConfigModule& module = Module();
  if (size == 0) return 0;
  const uint8_t selector = data[0];
  extractor::Page page;
  page.page_type = kPageTypes[selector & 3];
  page.content_type = kContentTypes[(selector >> 2) & 15];
  page.url = kUrls[selector >> 6];
  page.body = celeriac::fuzz::AsText(data + 1, size - 1);
  page.depth = 1;
  page.pagination_index = 3;

  const auto outcome = module.Parse(page);
  celeriac::fuzz::CheckOutcome(module, outcome, page.url);
  FUZZ_CHECK(Summary(module.Parse(page)) == Summary(outcome), "a second parse differs");
  return 0;
}
