// crawl_config: the crawl-config compiler (extractor/parse/config_module.hpp, crawl_settings.hpp)
// on JSON documents, as the BFF may write them straight into crawl_configs.config.
//
// Input: a JSON document (the config).
//
// Invariants: nothing throws and nothing reaches the compiler's last-resort catch (its message
// starts "crawl config: "); a config that compiles has its start page among its page types,
// generates start requests the downloader accepts, and parses a small HTML page and a small JSON
// page with each of its page types into outcomes the pipeline can store (parse_checks.hpp).

#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "extractor/parse/config_module.hpp"
#include "tests/fuzz/fuzz_support.hpp"
#include "tests/fuzz/parse_checks.hpp"

namespace {

using celeriac::fuzz::AsText;
using nlohmann::json;
namespace parse = celeriac::extractor::parse;
namespace extractor = celeriac::extractor;

constexpr const char* kUrl = "https://books.example.com/catalogue/page-2.html?page=2&q=a+b";

constexpr std::string_view kHtml = R"(<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Page 2</title><base href="/catalogue/"></head>
<body><ul class="breadcrumb"><li><a href="/">Home</a></li><li><a href="/c/">Books</a></li></ul>
<article class="product_pod" id="p1"><h3><a href="a-light_1000/index.html" title="A Light">A Light</a></h3>
<p class="price_color">£51.77</p><p class="availability">In stock (22 available)</p>
<p class="star-rating Three"></p><table class="table table-striped"><tr><th>UPC</th><td>a897fe39</td></tr>
<tr><th>Tax</th><td>0.00</td></tr></table><ul class="tags"><li>Poetry, Fiction</li></ul></article>
<article class="product_pod" id="p2"><h3><a href="../tipping_999/index.html">Tipping</a></h3>
<p class="price_color">£53,74</p><p class="availability">Out of stock</p></article>
<meta name="keywords" content="  books ,  poetry "><div id="product_description"></div><p>Desc &amp; <b>bold</b></p>
<ul class="pager"><li class="next"><a href="page-3.html">next</a></li></ul></body></html>)";

constexpr std::string_view kJson = R"({"data": [
 {"id": "7", "attributes": {"name": " Lamp  shade ", "price": {"amount": "0012.50", "currency": "EUR"},
  "active": "yes", "updated_at": "2024-05-01T10:00:00+0200", "categories": [{"slug": "home"}, {"slug": "home"}],
  "variants": [{"sku": "L-1", "size": "M"}], "body": "<p>ok</p>"},
  "relationships": {"product": {"id": 7}}, "links": {"reviews": "https://api.shop.example.com/v2/products/7/reviews"}},
 {"id": 8, "attributes": {"name": "Chair", "price": {"amount": 19.9}, "active": false}}],
 "next": "https://books.example.com/catalogue/page-3.html"})";

void ParseWith(const parse::ConfigModule& module, const std::string& page_type,
               std::string_view body, const std::string& content_type) {
  extractor::Page page;
  page.url = kUrl;
  page.page_type = page_type;
  page.content_type = content_type;
  page.body = body;
  page.depth = 1;
  celeriac::fuzz::CheckOutcome(module, module.Parse(page), page.url);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const json config = json::parse(AsText(data, size), nullptr, false);
  if (config.is_discarded()) return 0;
  auto compiled = parse::CompileConfig(config);
  if (!compiled.ok()) {
    FUZZ_CHECK(compiled.error().message().rfind("crawl config: ", 0) != 0,
               "the compiler threw: " + compiled.error().message());
    return 0;
  }
  const parse::ConfigModule& module = **compiled;
  const auto names = module.PageTypes();
  const std::set<std::string> page_types(names.begin(), names.end());
  FUZZ_CHECK(page_types.contains(config["start_page"].get<std::string>()), "start page lost");
  for (const auto& request : module.Generate()) celeriac::fuzz::CheckRequest(request, page_types);
  (void)module.settings();
  for (const auto& name : names) {
    ParseWith(module, name, kHtml, "text/html; charset=utf-8");
    ParseWith(module, name, kJson, "application/json");
  }
  return 0;
}
