// parse_bench: pages/s of the config-driven parser on one core, against libxml2's HTML parser
// alone (the floor for any libxml2-based extractor), on realistic pages from tests/data/pages.
// Also times each hostile body of the unit tests once, so a regression to super-linear time
// shows as a number. Usage: parse_bench [seconds per case, default 2]

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "extractor/parse/config_module.hpp"
#include "extractor/parse/markup.hpp"

using celeriac::extractor::Page;
using celeriac::extractor::parse::CompileConfig;
using celeriac::extractor::parse::ConfigModule;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

std::string Read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "cannot read %s\n", path.c_str());
    std::exit(1);
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// {wall pages/s, CPU microseconds per page}. On a shared machine the CPU time per page is the
// figure to compare with other runs; the wall rate shows what this thread actually got.
std::pair<double, double> Rate(double seconds, const std::function<void()>& body) {
  for (int i = 0; i < 50; ++i) body();  // warm up
  long n = 0;
  const auto start = Clock::now();
  const double cpu_start = ThreadCpuSeconds();
  const auto end = start + std::chrono::duration<double>(seconds);
  while (Clock::now() < end) {
    for (int i = 0; i < 20; ++i) body();
    n += 20;
  }
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  const double cpu = ThreadCpuSeconds() - cpu_start;
  return {n / elapsed, cpu / n * 1e6};
}

std::shared_ptr<const ConfigModule> Compile(const json& config) {
  auto m = CompileConfig(config);
  if (!m.ok()) {
    std::fprintf(stderr, "config: %s\n", m.error().message().c_str());
    std::exit(1);
  }
  return *m;
}

const char* kProduct8 = R"J({
  "start_urls": ["https://books.example.com/"], "start_page": "detail",
  "pages": {"detail": {"item": {"key": ["upc"], "fields": {
    "upc": {"xpath": "//table[contains(@class,'table-striped')]//tr[th='UPC']/td", "required": true, "pipeline": [{"trim": true}]},
    "title": {"css": "div.product_main h1", "required": true},
    "price": {"css": "div.product_main p.price_color", "pipeline": [{"regex": "([0-9]+[.,][0-9]{2})"}, {"cast": "decimal"}]},
    "in_stock": {"css": "div.product_main p.availability", "vary": true, "pipeline": [{"lower": true}, {"regex": "(in stock|out of stock)"}, {"map": {"in stock": true, "out of stock": false}}]},
    "rating": {"css": "div.product_main p.star-rating", "attr": "class", "pipeline": [{"regex": "star-rating (One|Two|Three|Four|Five)"}, {"map": {"One": 1, "Two": 2, "Three": 3, "Four": 4, "Five": 5}}]},
    "image": {"css": "#product_gallery img", "attr": "src", "pipeline": [{"urljoin": true}]},
    "breadcrumbs": {"xpath": "//ul[@class='breadcrumb']/li/a/text()", "multiple": true, "pipeline": [{"trim": true}]},
    "url": {"url": "full"}
  }}}}})J";

const char* kListing25 = R"J({
  "start_urls": ["https://books.example.com/"], "start_page": "listing",
  "pages": {
    "listing": {
      "links": [{"css": "article.product_pod h3 a", "route_to": "detail"}],
      "pagination": {"next": {"css": "li.next a"}}
    },
    "detail": {}
  }})J";

}  // namespace

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 2.0;
  const std::string dir = std::string(CELERIAC_SOURCE_DIR) + "/";
  const std::string product = Read(dir + "tests/data/pages/product.html");
  const std::string listing = Read(dir + "tests/data/pages/listing.html");
  const json shop = json::parse(Read(dir + "schemas/examples/crawl_config/valid/shop_listing_detail.json"));

  auto product8 = Compile(json::parse(kProduct8));
  auto shop_module = Compile(shop);
  auto listing25 = Compile(json::parse(kListing25));

  Page detail_page{"https://books.example.com/catalogue/a-light-in-the-attic_1000/index.html",
                   "text/html; charset=utf-8", product, 200, "detail", 1, 0};
  Page listing_page{"https://books.example.com/catalogue/page-1.html", "text/html; charset=utf-8",
                    listing, 200, "listing", 0, 0};

  // Sanity: the cases extract what they should.
  auto p8 = product8->Parse(detail_page);
  auto l25 = listing25->Parse(listing_page);
  auto shop_listing = shop_module->Parse(listing_page);
  if (!p8.ok() || p8->items.size() != 1 || p8->items[0].data.size() != 8 || !l25.ok() ||
      l25->requests.size() != 26 || !shop_listing.ok() || shop_listing->requests.size() != 76) {
    std::fprintf(stderr, "sanity check failed\n");
    return 1;
  }

  std::printf("parse_bench: one thread, %.1f s per case; product page %zu bytes, listing %zu bytes\n",
              seconds, product.size(), listing.size());
  const std::string utf8 = "UTF-8";
  auto row = [&](const char* name, std::pair<double, double> r) {
    std::printf("  %-58s %7.0f pages/s wall  %7.1f us CPU/page  (%6.0f pages/s per CPU)\n", name,
                r.first, r.second, 1e6 / r.second);
  };
  row("libxml2 htmlReadMemory + free, product page",
      Rate(seconds, [&] { celeriac::extractor::parse::MarkupDocument::ParseHtml(product, utf8); }));
  row("ConfigModule::Parse product, 8 fields",
      Rate(seconds, [&] { (void)product8->Parse(detail_page); }));
  row("ConfigModule::Parse product, shop example (15 fields)",
      Rate(seconds, [&] { (void)shop_module->Parse(detail_page); }));
  row("libxml2 htmlReadMemory + free, listing page",
      Rate(seconds, [&] { celeriac::extractor::parse::MarkupDocument::ParseHtml(listing, utf8); }));
  row("ConfigModule::Parse listing, 25 links + next",
      Rate(seconds, [&] { (void)listing25->Parse(listing_page); }));
  row("ConfigModule::Parse listing, shop example (75 links + next)",
      Rate(seconds, [&] { (void)shop_module->Parse(listing_page); }));

  // Hostile bodies, once each.
  const json hostile_config = json::parse(R"J({
    "start_urls": ["https://h.example.com/"], "start_page": "p",
    "pages": {"p": {
      "item": {"key": ["title"], "container": {"css": "div.product"}, "fields": {
        "title": {"css": "h2", "required": true},
        "price": {"css": ".price", "pipeline": [{"cast": "decimal"}]},
        "html": {"css": "h2", "text": "outer_html"},
        "bytes": {"regex": "bad bytes: ([^<]*)"}
      }},
      "links": [{"css": "a", "scope": "any", "route_to": "p"}]
    }}})J");
  auto hostile = Compile(hostile_config);
  std::string deep = "<html><body>";
  for (int i = 0; i < 100000; ++i) deep += "<div class='product'>";
  deep += "<h2>deep</h2>";
  std::string big = "<html><body>";
  while (big.size() < 10 * 1024 * 1024) {
    big += "<div class='product'><h2>t</h2><span class='price'>1.5</span><a href='/n'>n</a></div>\n";
  }
  std::string binary;
  uint32_t x = 12345;
  for (int i = 0; i < 200000; ++i) {
    x = x * 1103515245 + 12345;
    binary += static_cast<char>(x >> 24);
  }
  std::printf("hostile bodies (one parse each):\n");
  for (const auto& [name, body] : std::vector<std::pair<std::string, std::string>>{
           {"100k nested divs", deep}, {"10 MB of products", big}, {"200 KB binary", binary}}) {
    const auto start = Clock::now();
    Page page{"https://h.example.com/", "text/html", body, 200, "p", 0, 0};
    auto r = hostile->Parse(page);
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    std::printf("  %-20s %8.1f ms  %s, %zu items, %zu requests\n", name.c_str(), ms,
                r.ok() ? "ok" : r.error().message().c_str(), r.ok() ? r->items.size() : 0,
                r.ok() ? r->requests.size() : 0);
  }
  return 0;
}
