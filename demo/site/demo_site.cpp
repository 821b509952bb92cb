// demo-site: the bundled demo shop that `./dev demo` crawls, a small HTTP server on loopback.
//
//   demo-site [--host 127.0.0.1] [--port 18081] [--slow-ms N] [--quiet] [--threads N]
//             [--catalogue NAME=N[:PER_PAGE]]...
//   demo-site --print-expected 2|4 [--host H --port P]   (the items a full crawl must yield)
//   demo-site --print-catalogue NAME --catalogue NAME=N[:PER_PAGE] [--host H --port P]
//
// Contract: everything it serves is generated in code and deterministic (the same bytes on every
// start), and matches the crawl configs in demo/seed.sql:
//   /robots.txt                disallows /private/ and /_demo/ for every user agent
//   /products?page=1..5        listing: 10 `article.product h2 a` links each, `a[rel=next]`
//   /products/<slug>           product detail: [itemprop=sku], h1, [itemprop=price][content],
//                              .availability ("In stock" / "Sold out"), ul.tags li
//   /clearance/?page=N         listing with the items inline (CLR-001..CLR-024, 8 a page);
//                              past the last page it repeats the last page, as many shops do
//   /retired/                  410 Gone (the retired catalogue's config is inactive)
//   /_demo/hits                JSON {path: requests}, so a test can see what was fetched
//   /_demo/agents              JSON {User-Agent: requests}, so a test can see who fetched
// With --catalogue NAME=N[:PER_PAGE] (repeatable; tests/chaos uses it) a generated section of N
// products per NAME, each URL a path of its own (so /_demo/hits counts fetches per URL):
//   /c/NAME/page-K             listing: PER_PAGE (default 25) `article.product h2 a` links each,
//                              `a[rel=next]` but on the last page
//   /c/NAME/item-NNNNN         product: the same markup as /products/<slug> (no broken cases)
// and `--print-catalogue NAME` prints the items a full crawl of it must yield.
// The 50 listed products include the broken cases a crawl must survive, one each (kBroken...):
// malformed HTML that still parses, a page without its required sku, a 503 on the first request
// only (Retry-After: 1), a permanent 500, a dead link (404), and a page behind robots.txt.
//
// Threading: httplib's thread pool serves requests; the hit counter is the only shared state
// (mutex). Shutdown: SIGINT/SIGTERM stop the listener, in-flight requests finish, exit 0.

#include <httplib.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

namespace celeriac::demo {
namespace {

constexpr int kListingPages = 5;
constexpr int kProductsPerPage = 10;
constexpr int kProducts = kListingPages * kProductsPerPage;
constexpr int kClearancePages = 3;
constexpr int kClearancePerPage = 8;

enum class Kind {
  kNormal,
  kBrokenHtml,    // malformed markup; every field still parses -> an item
  kMissingSku,    // no [itemprop=sku] -> the required field is missing: an item error
  kFlaky,         // 503 + Retry-After: 1 on the first request since start, then normal
  kServerError,   // always 500 -> fails after the config's retries
  kNotFound,      // the listing links to a page that does not exist -> 404
  kRobotsBlocked  // under /private/, disallowed by robots.txt; a valid product if fetched
};

Kind KindOf(int i) {
  switch (i) {
    case 7: return Kind::kFlaky;
    case 14: return Kind::kBrokenHtml;
    case 23: return Kind::kMissingSku;
    case 31: return Kind::kServerError;
    case 38: return Kind::kNotFound;
    case 44: return Kind::kRobotsBlocked;
    default: return Kind::kNormal;
  }
}

struct Product {
  int index = 0;
  std::string sku;   // DEMO-001..DEMO-050
  std::string name;  // unique
  std::string path;  // /products/<slug>, or /private/<slug>
  std::string price; // decimal string, two places
  bool in_stock = true;
  std::vector<std::string> tags;
  Kind kind = Kind::kNormal;
};

constexpr std::string_view kAdjectives[] = {"Crisp", "Rustic", "Golden", "Hardy", "Smoky",
                                            "Bright", "Tender", "Sturdy", "Wild", "Velvet"};
constexpr std::string_view kNouns[] = {
    "Celeriac Peeler", "Root Brush",    "Soup Pot",      "Garden Trowel", "Seed Tray",
    "Herb Scissors",   "Potato Masher", "Salad Bowl",    "Compost Bin",   "Pepper Mill",
    "Cutting Board",   "Watering Can",  "Apron",         "Colander",      "Knife Roll",
    "Jam Jar",         "Bread Bin",     "Cheese Grater", "Plant Label",   "Spice Rack",
    "Tea Towel",       "Ladle",         "Mandoline",     "Pruning Saw",   "Fermenting Crock"};
constexpr std::string_view kTags[] = {"kitchen", "garden", "steel", "wood",
                                      "gift",    "eco",    "bestseller", "new"};

std::string Slug(std::string_view name) {
  std::string out;
  for (char c : name) out += c == ' ' ? '-' : static_cast<char>(std::tolower(c));
  return out;
}

std::string Money(int cents) { return fmt::format("{}.{:02}", cents / 100, cents % 100); }

Product MakeProduct(int i) {
  Product p;
  p.index = i;
  p.kind = KindOf(i);
  p.sku = fmt::format("DEMO-{:03}", i + 1);
  // (i % 10, (17 * (i / 10) + i % 10) % 25) differs for every i < 50: names are unique.
  p.name = fmt::format("{} {}", kAdjectives[i % 10], kNouns[(17 * (i / 10) + i % 10) % 25]);
  p.path = (p.kind == Kind::kRobotsBlocked ? "/private/" : "/products/") + Slug(p.name);
  p.price = Money(199 + (i * 7919) % 9000);
  p.in_stock = i % 4 != 3;
  for (int k = 0; k <= i % 3; ++k) p.tags.emplace_back(kTags[(i + 3 * k) % 8]);
  return p;
}

const std::vector<Product>& Products() {
  static const std::vector<Product> products = [] {
    std::vector<Product> v;
    for (int i = 0; i < kProducts; ++i) v.push_back(MakeProduct(i));
    return v;
  }();
  return products;
}

struct ClearanceItem {
  std::string sku, name, price;
};

ClearanceItem MakeClearance(int i) {
  return {fmt::format("CLR-{:03}", i + 1),
          fmt::format("{} {} (last one)", kAdjectives[(i + 3) % 10], kNouns[(i * 7 + 2) % 25]),
          Money(99 + (i * 3571) % 2500)};
}

std::string Escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string Head(std::string_view title) {
  return fmt::format(
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      "<title>{} | Celeriac demo shop</title>\n"
      "<link rel=\"stylesheet\" href=\"/static/shop.css\">\n</head>\n<body>\n"
      "<header class=\"site\"><a class=\"logo\" href=\"/\">Celeriac demo shop</a>\n"
      "<nav><a href=\"/products?page=1\">Products</a> <a href=\"/clearance/?page=1\">Clearance</a>"
      " <a href=\"/about\">About</a></nav></header>\n",
      Escape(title));
}

constexpr std::string_view kFoot =
    "<footer class=\"site\"><p>A demo site for Celeriac's extractor. Nothing here is for sale."
    "</p></footer>\n</body>\n</html>\n";

std::string HomePage() {
  return Head("Welcome") +
         "<main><h1>Celeriac demo shop</h1>\n"
         "<p>Browse <a href=\"/products?page=1\">all products</a> or the "
         "<a href=\"/clearance/?page=1\">clearance corner</a>.</p></main>\n" +
         std::string(kFoot);
}

std::string ListingPage(int page) {
  std::string body = Head(fmt::format("Products, page {}", page));
  body += fmt::format("<main>\n<h1>Products</h1>\n<p class=\"count\">Page {} of {}</p>\n",
                      page, kListingPages);
  for (int i = (page - 1) * kProductsPerPage; i < page * kProductsPerPage; ++i) {
    const Product& p = Products()[i];
    // The 404 case: the listing still links to a product that was taken down.
    const std::string href = p.kind == Kind::kNotFound ? "/products/discontinued-" + Slug(p.name)
                                                       : p.path;
    body += fmt::format(
        "<article class=\"product\">\n  <h2><a href=\"{}\">{}</a></h2>\n"
        "  <p class=\"teaser\">From {} EUR. {}</p>\n</article>\n",
        href, Escape(p.name), p.price, p.in_stock ? "Ships tomorrow." : "Back soon.");
  }
  body += "<nav class=\"pagination\">";
  if (page > 1) body += fmt::format("<a rel=\"prev\" href=\"/products?page={}\">Previous</a> ", page - 1);
  if (page < kListingPages)
    body += fmt::format("<a rel=\"next\" href=\"/products?page={}\">Next</a>", page + 1);
  body += "</nav>\n</main>\n";
  return body + std::string(kFoot);
}

std::string Description(const Product& p) {
  return fmt::format(
      "The {} is made to last: {} and easy to clean. Customers who bought it also liked our "
      "{}.",
      Escape(p.name), p.in_stock ? "in stock today" : "popular enough to sell out",
      Escape(Products()[(p.index + 1) % kProducts].name));
}

std::string TagList(const Product& p) {
  std::string out = "<ul class=\"tags\">";
  for (const auto& t : p.tags) out += fmt::format("<li> {} </li>", t);
  return out + "</ul>\n";
}

std::string ProductPage(const Product& p) {
  if (p.kind == Kind::kBrokenHtml) {
    // Unquoted attributes, unclosed p/li/td/b, stray and mismatched end tags, a bare '&' and
    // '<', no </main>, </body> or </html>, and a comment cut off at the end. libxml2's HTML
    // parser (and therefore lxml/parsel) still finds every field.
    return fmt::format(
        "<html><head><title>{0} | Celeriac demo shop</title>\n<body>\n"
        "<div class=crumbs><a href=/>Home</a> &gt <a href=/products?page=2>Products</a> & more\n"
        "<main itemscope itemtype=https://schema.org/Product>\n"
        "<h1>{0}</h1></span></div>\n"
        "<p>SKU: <span itemprop=sku> {1} </span>\n"
        "<p class=price>Now <b>only <span itemprop=price content={2}>{2} EUR</span>\n"
        "<p class=\"availability\">{3}\n"
        "<ul class=tags><li>{4}</ul>\n"
        "<table class=specs><tr><td>Weight<td>300 g<tr><td>Size < 30 cm<td>yes</table>\n"
        "<p>{5}\n</div></div>\n<!-- the rest of this page was lost",
        Escape(p.name), p.sku, p.price, p.in_stock ? "In stock" : "Sold out",
        [&] {
          std::string s;
          for (size_t k = 0; k < p.tags.size(); ++k) s += (k ? "<li>" : "") + p.tags[k] + "\n";
          return s;
        }(),
        Description(p));
  }
  std::string body = Head(p.name);
  body += "<main itemscope itemtype=\"https://schema.org/Product\">\n";
  body += fmt::format(
      "<nav class=\"crumbs\"><a href=\"/\">Home</a> &gt; <a href=\"/products?page={}\">"
      "Products</a></nav>\n",
      p.index / kProductsPerPage + 1);
  body += fmt::format("<h1 itemprop=\"name\">\n  {}\n</h1>\n", Escape(p.name));
  if (p.kind == Kind::kMissingSku)
    body += "<p class=\"sku\">SKU: to be assigned</p>\n";
  else
    body += fmt::format("<p class=\"sku\">SKU: <span itemprop=\"sku\">\n  {}\n</span></p>\n", p.sku);
  body += fmt::format(
      "<p class=\"price\"><span itemprop=\"price\" content=\"{0}\">{0} EUR</span>"
      "<meta itemprop=\"priceCurrency\" content=\"EUR\"></p>\n",
      p.price);
  body += fmt::format("<p class=\"availability\">{}</p>\n", p.in_stock ? "In stock" : "Sold out");
  body += TagList(p);
  body += fmt::format("<section class=\"description\"><p>{}</p></section>\n", Description(p));
  body += "<aside class=\"related\"><h2>Related</h2><ul>";
  for (int k = 1; k <= 3; ++k) {
    const Product& r = Products()[(p.index + 7 * k) % kProducts];
    body += fmt::format("<li><a href=\"{}\">{}</a></li>", r.path, Escape(r.name));
  }
  body += "</ul></aside>\n</main>\n";
  return body + std::string(kFoot);
}

std::string ClearancePage(int page) {
  const int shown = std::min(page, kClearancePages);  // past the end: the last page again
  std::string body = Head("Clearance");
  body += fmt::format("<main>\n<h1>Clearance</h1>\n<p class=\"count\">Page {} of {}</p>\n",
                      shown, kClearancePages);
  for (int i = (shown - 1) * kClearancePerPage; i < shown * kClearancePerPage; ++i) {
    const ClearanceItem c = MakeClearance(i);
    body += fmt::format(
        "<article class=\"product\">\n  <h2>{}</h2>\n"
        "  <p>SKU <span itemprop=\"sku\">{}</span>, now "
        "<span itemprop=\"price\" content=\"{}\">{} EUR</span></p>\n</article>\n",
        Escape(c.name), c.sku, c.price, c.price);
  }
  body += "</main>\n";
  return body + std::string(kFoot);
}

// --catalogue sections: generated shops of any size, deterministic, without broken cases.
struct Catalogue {
  std::string name;  // [a-z0-9-]+, the URL segment
  int products = 0;
  int per_page = 25;

  int Pages() const { return (products + per_page - 1) / per_page; }
  std::string ListingPath(int page) const { return fmt::format("/c/{}/page-{}", name, page); }
  std::string ItemPath(int i) const { return fmt::format("/c/{}/item-{:05}", name, i); }
};

struct CatalogueItem {
  std::string sku, name, price;
  bool in_stock = true;
  std::vector<std::string> tags;
};

CatalogueItem MakeCatalogueItem(const Catalogue& c, int i) {
  CatalogueItem item;
  std::string upper;
  for (char ch : c.name) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  item.sku = fmt::format("{}-{:05}", upper, i);
  item.name = fmt::format("{} {} No. {}", kAdjectives[i % 10], kNouns[(i / 10) % 25], i);
  item.price = Money(199 + (i * 7919) % 9000);
  item.in_stock = i % 4 != 3;
  for (int k = 0; k <= i % 3; ++k) item.tags.emplace_back(kTags[(i + 3 * k) % 8]);
  return item;
}

std::string CatalogueListing(const Catalogue& c, int page) {
  std::string body = Head(fmt::format("Catalogue {}, page {}", c.name, page));
  body += fmt::format("<main>\n<h1>Catalogue {}</h1>\n<p class=\"count\">Page {} of {}</p>\n",
                      Escape(c.name), page, c.Pages());
  const int first = (page - 1) * c.per_page + 1;
  for (int i = first; i < first + c.per_page && i <= c.products; ++i) {
    const CatalogueItem item = MakeCatalogueItem(c, i);
    body += fmt::format(
        "<article class=\"product\">\n  <h2><a href=\"{}\">{}</a></h2>\n"
        "  <p class=\"teaser\">From {} EUR.</p>\n</article>\n",
        c.ItemPath(i), Escape(item.name), item.price);
  }
  body += "<nav class=\"pagination\">";
  if (page > 1) body += fmt::format("<a rel=\"prev\" href=\"{}\">Previous</a> ", c.ListingPath(page - 1));
  if (page < c.Pages())
    body += fmt::format("<a rel=\"next\" href=\"{}\">Next</a>", c.ListingPath(page + 1));
  body += "</nav>\n</main>\n";
  return body + std::string(kFoot);
}

std::string CatalogueProduct(const Catalogue& c, int i) {
  const CatalogueItem item = MakeCatalogueItem(c, i);
  std::string body = Head(item.name);
  body += "<main itemscope itemtype=\"https://schema.org/Product\">\n";
  body += fmt::format(
      "<nav class=\"crumbs\"><a href=\"/\">Home</a> &gt; <a href=\"{}\">Catalogue</a></nav>\n",
      c.ListingPath((i - 1) / c.per_page + 1));
  body += fmt::format("<h1 itemprop=\"name\">\n  {}\n</h1>\n", Escape(item.name));
  body += fmt::format("<p class=\"sku\">SKU: <span itemprop=\"sku\">\n  {}\n</span></p>\n",
                      item.sku);
  body += fmt::format(
      "<p class=\"price\"><span itemprop=\"price\" content=\"{0}\">{0} EUR</span>"
      "<meta itemprop=\"priceCurrency\" content=\"EUR\"></p>\n",
      item.price);
  body += fmt::format("<p class=\"availability\">{}</p>\n", item.in_stock ? "In stock" : "Sold out");
  body += "<ul class=\"tags\">";
  for (const auto& t : item.tags) body += fmt::format("<li> {} </li>", t);
  body += "</ul>\n</main>\n";
  return body + std::string(kFoot);
}

// "NAME=N" or "NAME=N:PER_PAGE"; nullopt when malformed.
std::optional<Catalogue> ParseCatalogue(const std::string& spec) {
  const auto eq = spec.find('=');
  if (eq == 0 || eq == std::string::npos) return std::nullopt;
  Catalogue c;
  c.name = spec.substr(0, eq);
  if (c.name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") != std::string::npos)
    return std::nullopt;
  const std::string rest = spec.substr(eq + 1);
  const auto colon = rest.find(':');
  const std::string count = rest.substr(0, colon);
  const std::string per_page = colon == std::string::npos ? "25" : rest.substr(colon + 1);
  for (const auto& digits : {count, per_page})
    if (digits.empty() || digits.size() > 5 || digits.find_first_not_of("0123456789") != std::string::npos)
      return std::nullopt;
  c.products = std::stoi(count);
  c.per_page = std::stoi(per_page);
  if (c.products < 1 || c.products > 99999 || c.per_page < 1) return std::nullopt;
  return c;
}

int PrintCatalogue(const Catalogue& c, const std::string& origin) {
  for (int i = 1; i <= c.products; ++i) {
    const CatalogueItem item = MakeCatalogueItem(c, i);
    nlohmann::json out = {{"sku", item.sku},     {"name", item.name},
                          {"price", item.price}, {"in_stock", item.in_stock},
                          {"tags", item.tags},   {"url", origin + c.ItemPath(i)}};
    std::cout << out.dump() << "\n";
  }
  return 0;
}

constexpr std::string_view kRobots =
    "# Celeriac demo shop\n"
    "User-agent: *\n"
    "Disallow: /private/\n"
    "Disallow: /_demo/\n";

// --print-expected: what a complete crawl of demo/seed.sql's config 2 or 4 must store, one JSON
// object per line in key order. Prices are the decimal strings of the pages' content attributes
// (how `cast: decimal` represents them is the pipeline's business).
int PrintExpected(int config_id, const std::string& origin) {
  if (config_id == 2) {
    for (const Product& p : Products()) {
      if (p.kind == Kind::kMissingSku || p.kind == Kind::kServerError ||
          p.kind == Kind::kNotFound || p.kind == Kind::kRobotsBlocked)
        continue;
      nlohmann::json item = {{"sku", p.sku},       {"name", p.name},
                             {"price", p.price},   {"in_stock", p.in_stock},
                             {"tags", p.tags},     {"url", origin + p.path}};
      std::cout << item.dump() << "\n";
    }
    return 0;
  }
  if (config_id == 4) {
    for (int i = 0; i < kClearancePages * kClearancePerPage; ++i) {
      const ClearanceItem c = MakeClearance(i);
      std::cout << nlohmann::json{{"sku", c.sku}, {"name", c.name}, {"price", c.price}}.dump()
                << "\n";
    }
    return 0;
  }
  std::cerr << "demo-site: --print-expected knows configs 2 and 4\n";
  return 2;
}

std::optional<int> PageParam(const httplib::Request& req) {
  if (!req.has_param("page")) return 1;
  const std::string v = req.get_param_value("page");
  if (v.empty() || v.size() > 6 || v.find_first_not_of("0123456789") != std::string::npos)
    return std::nullopt;
  const int n = std::stoi(v);
  return n >= 1 ? std::optional<int>(n) : std::nullopt;
}

void Html(httplib::Response& res, int status, std::string body) {
  res.status = status;
  res.set_content(std::move(body), "text/html; charset=utf-8");
}

std::string ErrorPage(int status, std::string_view message) {
  return Head(fmt::format("{} {}", status, message)) +
         fmt::format("<main><h1>{} {}</h1></main>\n", status, message) + std::string(kFoot);
}

class Site {
 public:
  Site(int slow_ms, bool quiet, std::vector<Catalogue> catalogues)
      : slow_ms_(slow_ms), quiet_(quiet), catalogues_(std::move(catalogues)) {}

  void Mount(httplib::Server& server) {
    server.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response&) {
      Hit(req.path, req.get_header_value("User-Agent"));
      if (slow_ms_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(slow_ms_));
      return httplib::Server::HandlerResponse::Unhandled;
    });
    if (!quiet_) {
      server.set_logger([](const httplib::Request& req, const httplib::Response& res) {
        std::fprintf(stderr, "demo-site: %s %s%s%s -> %d\n", req.method.c_str(),
                     req.path.c_str(), req.params.empty() ? "" : "?",
                     req.params.empty() ? "" : httplib::detail::params_to_query_str(req.params).c_str(),
                     res.status);
      });
    }
    server.Get("/", [](const httplib::Request&, httplib::Response& res) {
      Html(res, 200, HomePage());
    });
    server.Get("/robots.txt", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(std::string(kRobots), "text/plain; charset=utf-8");
    });
    server.Get("/products", [](const httplib::Request& req, httplib::Response& res) {
      const auto page = PageParam(req);
      if (!page || *page > kListingPages) return Html(res, 404, ErrorPage(404, "No such page"));
      Html(res, 200, ListingPage(*page));
    });
    server.Get(R"(/(products|private)/([a-z0-9-]+))",
               [this](const httplib::Request& req, httplib::Response& res) {
                 ServeProduct(req, res);
               });
    server.Get("/clearance", [](const httplib::Request&, httplib::Response& res) {
      res.set_redirect("/clearance/?page=1", 301);
    });
    server.Get("/clearance/", [](const httplib::Request& req, httplib::Response& res) {
      const auto page = PageParam(req);
      if (!page) return Html(res, 404, ErrorPage(404, "No such page"));
      Html(res, 200, ClearancePage(*page));
    });
    server.Get(R"(/retired(/.*)?)", [](const httplib::Request&, httplib::Response& res) {
      Html(res, 410, ErrorPage(410, "This catalogue has been retired"));
    });
    server.Get("/_demo/hits", [this](const httplib::Request&, httplib::Response& res) {
      std::lock_guard lock(mu_);
      res.set_content(nlohmann::json(hits_).dump(), "application/json");
    });
    server.Get("/_demo/agents", [this](const httplib::Request&, httplib::Response& res) {
      std::lock_guard lock(mu_);
      res.set_content(nlohmann::json(agents_).dump(), "application/json");
    });
    server.Get(R"(/c/([a-z0-9-]+)/(page|item)-(\d{1,5}))",
               [this](const httplib::Request& req, httplib::Response& res) {
                 ServeCatalogue(req, res);
               });
    server.set_error_handler([](const httplib::Request&, httplib::Response& res) {
      if (res.body.empty()) Html(res, res.status, ErrorPage(res.status, "Not found"));
    });
  }

 private:
  void ServeProduct(const httplib::Request& req, httplib::Response& res) {
    for (const Product& p : Products()) {
      if (p.path != req.path) continue;
      switch (p.kind) {
        case Kind::kServerError:
          return Html(res, 500, ErrorPage(500, "Internal Server Error"));
        case Kind::kFlaky:
          if (Hits(req.path) == 1) {
            res.set_header("Retry-After", "1");
            return Html(res, 503, ErrorPage(503, "Service Unavailable"));
          }
          break;
        case Kind::kNotFound:  // taken down: the listing's link and the page itself are gone
          return Html(res, 404, ErrorPage(404, "No such product"));
        default:
          break;
      }
      return Html(res, 200, ProductPage(p));
    }
    Html(res, 404, ErrorPage(404, "No such product"));
  }

  void ServeCatalogue(const httplib::Request& req, httplib::Response& res) {
    const std::string name = req.matches[1];
    const bool listing = req.matches[2] == "page";
    const int n = std::stoi(req.matches[3]);
    for (const Catalogue& c : catalogues_) {
      if (c.name != name) continue;
      // Only the canonical spelling of each URL exists, so each page has exactly one URL.
      if (listing && n >= 1 && n <= c.Pages() && req.path == c.ListingPath(n))
        return Html(res, 200, CatalogueListing(c, n));
      if (!listing && n >= 1 && n <= c.products && req.path == c.ItemPath(n))
        return Html(res, 200, CatalogueProduct(c, n));
      break;
    }
    Html(res, 404, ErrorPage(404, "No such page"));
  }

  void Hit(const std::string& path, const std::string& agent) {
    std::lock_guard lock(mu_);
    ++hits_[path];
    ++agents_[agent];
  }
  int Hits(const std::string& path) {
    std::lock_guard lock(mu_);
    return hits_[path];
  }

  const int slow_ms_;
  const bool quiet_;
  const std::vector<Catalogue> catalogues_;
  std::mutex mu_;
  std::map<std::string, int> hits_;
  std::map<std::string, int> agents_;
};

}  // namespace
}  // namespace celeriac::demo

int main(int argc, char** argv) {
  using namespace celeriac::demo;
  CLI::App app{"demo-site: the Celeriac demo shop on loopback"};
  std::string host = "127.0.0.1";
  int port = 18081;
  int slow_ms = 0;
  bool quiet = false;
  int expected = 0;
  app.add_option("--host", host, "address to listen on")->capture_default_str();
  app.add_option("--port", port, "port to listen on; 0 picks a free one and prints it")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  app.add_option("--slow-ms", slow_ms, "delay every response by this many milliseconds")
      ->check(CLI::Range(0, 600000));
  app.add_flag("--quiet", quiet, "do not log requests to stderr");
  app.add_option("--print-expected", expected,
                 "print the items a full crawl of demo config 2 or 4 must yield, and exit");
  std::vector<std::string> catalogue_specs;
  std::string print_catalogue;
  int threads = 0;
  app.add_option("--catalogue", catalogue_specs,
                 "serve a generated section NAME=N[:PER_PAGE] under /c/NAME/ (repeatable)");
  app.add_option("--print-catalogue", print_catalogue,
                 "print the items a full crawl of catalogue NAME must yield, and exit");
  app.add_option("--threads", threads, "requests served at once (default: httplib's pool size)")
      ->check(CLI::Range(1, 1024));
  CLI11_PARSE(app, argc, argv);

  std::vector<Catalogue> catalogues;
  for (const auto& spec : catalogue_specs) {
    auto c = ParseCatalogue(spec);
    if (!c) {
      std::cerr << "demo-site: --catalogue: \"" << spec
                << "\" is not NAME=N[:PER_PAGE] (NAME in [a-z0-9-], 1 <= N <= 99999)\n";
      return 2;
    }
    catalogues.push_back(*c);
  }
  // The URLs the crawl stores are those the listing links resolve to on this host and port.
  const std::string origin = fmt::format("http://{}:{}", host, port == 0 ? 18081 : port);
  if (expected != 0) return PrintExpected(expected, origin);
  if (!print_catalogue.empty()) {
    for (const auto& c : catalogues)
      if (c.name == print_catalogue) return PrintCatalogue(c, origin);
    std::cerr << "demo-site: --print-catalogue: no --catalogue named " << print_catalogue << "\n";
    return 2;
  }

  // Signals are taken by a dedicated thread (httplib's stop() is not async-signal-safe).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  httplib::Server server;
  if (threads > 0)
    server.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  Site site(slow_ms, quiet, std::move(catalogues));
  site.Mount(server);
  int bound = port;
  if (port == 0) {
    bound = server.bind_to_any_port(host.c_str());
  } else if (!server.bind_to_port(host.c_str(), port)) {
    bound = -1;
  }
  if (bound < 0) {
    std::fprintf(stderr, "demo-site: cannot listen on %s:%d\n", host.c_str(), port);
    return 1;
  }
  std::printf("demo-site: listening on http://%s:%d/\n", host.c_str(), bound);
  std::fflush(stdout);

  std::atomic<bool> signalled{false};
  std::thread stopper([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    signalled = true;
    server.stop();
  });
  server.listen_after_bind();
  const bool by_signal = signalled.load();
  if (!by_signal) pthread_kill(stopper.native_handle(), SIGTERM);  // wake the stopper
  stopper.join();
  if (!by_signal) {
    std::fprintf(stderr, "demo-site: the listener stopped unexpectedly\n");
    return 1;
  }
  return 0;
}
