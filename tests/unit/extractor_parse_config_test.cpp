// The config-driven module end to end: every schema example compiles (or fails where
// _expected.json says), compile errors name JSON pointers, and real pages (tests/data/pages)
// give the items, links and pagination requests the config describes. Hostile bodies end as a
// partial outcome or a Parse-class error, never a crash.

#include <filesystem>
#include <atomic>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "extractor/parse/config_module.hpp"
#include "tests/support/paths.hpp"

namespace celeriac::extractor::parse {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

fs::path ExamplesDir() { return testing::SourceDir() / "schemas" / "examples" / "crawl_config"; }
json Example(const std::string& name) {
  return json::parse(testing::ReadFile(ExamplesDir() / "valid" / name));
}
std::string Fixture(const std::string& name) {
  return testing::ReadFile(testing::SourceDir() / "tests" / "data" / "pages" / name);
}

std::shared_ptr<const ConfigModule> MustCompile(const json& config) {
  auto m = CompileConfig(config);
  EXPECT_TRUE(m.ok()) << (m.ok() ? "" : m.error().message());
  return m.ok() ? *m : nullptr;
}

std::string CompileError(const json& config) {
  auto m = CompileConfig(config);
  return m.ok() ? std::string("<compiled>") : m.error().message();
}

Page MakePage(const std::string& url, const std::string& page_type, std::string_view body,
              const std::string& content_type = "text/html; charset=utf-8", int depth = 0) {
  Page p;
  p.url = url;
  p.page_type = page_type;
  p.body = body;
  p.content_type = content_type;
  p.depth = depth;
  return p;
}

TEST(ConfigModule, EveryValidExampleCompiles) {
  size_t n = 0;
  for (const auto& entry : fs::directory_iterator(ExamplesDir() / "valid")) {
    auto m = CompileConfig(json::parse(testing::ReadFile(entry.path())));
    EXPECT_TRUE(m.ok()) << entry.path() << ": " << (m.ok() ? "" : m.error().message());
    ++n;
  }
  EXPECT_GE(n, 4u);
}

TEST(ConfigModule, EveryInvalidExampleFailsNamingItsPointer) {
  const json expected = json::parse(testing::ReadFile(ExamplesDir() / "invalid" / "_expected.json"));
  size_t n = 0;
  for (const auto& entry : fs::directory_iterator(ExamplesDir() / "invalid")) {
    const std::string file = entry.path().filename().string();
    if (file == "_expected.json") continue;
    auto m = CompileConfig(json::parse(testing::ReadFile(entry.path())));
    ASSERT_FALSE(m.ok()) << file;
    EXPECT_EQ(m.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_FALSE(m.error().retryable());
    ASSERT_TRUE(expected.contains(file)) << file;
    const std::string pointer = expected[file];
    if (!pointer.empty()) {
      EXPECT_NE(m.error().message().find(pointer), std::string::npos)
          << file << ": " << m.error().message();
    }
    ++n;
  }
  EXPECT_GE(n, 20u);
}

json MinimalWithPage(const json& page, const std::string& format = "") {
  json c = {{"start_urls", {"https://example.com/"}}, {"start_page", "p"}, {"pages", {{"p", page}}}};
  if (!format.empty()) c["pages"]["p"]["format"] = format;
  return c;
}

TEST(ConfigModule, CrossReferenceAndCompileErrorsNameTheirPointer) {
  json c = Example("minimal.json");
  c["start_page"] = "nope";
  EXPECT_NE(CompileError(c).find("/start_page: names no page type"), std::string::npos)
      << CompileError(c);

  c = Example("shop_listing_detail.json");
  c["pages"]["listing"]["links"][1]["route_to"] = "nowhere";
  EXPECT_NE(CompileError(c).find("/pages/listing/links/1/route_to"), std::string::npos);

  c = Example("shop_listing_detail.json");
  c["pages"]["detail"]["item"]["key"] = {"title", "isbn"};
  EXPECT_NE(CompileError(c).find("/pages/detail/item/key/1"), std::string::npos);

  // The schema's pattern lets these through; no request could fetch them.
  for (const char* url : {"http://127.0.0.1:1--8081/products", "http://h:70000/",
                          "http://h:0/", "https://sh%op.example/"}) {
    c = Example("shop_listing_detail.json");
    c["start_urls"][1] = url;
    EXPECT_NE(CompileError(c).find("/start_urls/1: not an http(s) URL that can be fetched"),
              std::string::npos)
        << url << ": " << CompileError(c);
  }

  const json item_field = [] {
    return json{{"item", {{"key", {"a"}}, {"fields", {{"a", {{"css", "x"}}}}}}}};
  }();
  struct Case {
    json field;
    std::string format;
    std::string pointer;
  };
  const std::vector<Case> cases = {
      {{{"css", "a:hover"}}, "", "/pages/p/item/fields/a/css"},
      {{{"css", "a[href"}}, "", "/pages/p/item/fields/a/css"},
      {{{"xpath", "//a["}}, "", "/pages/p/item/fields/a/xpath"},
      {{{"xpath", "no-such-fn(.)"}}, "", "/pages/p/item/fields/a/xpath"},
      {{{"jsonpath", "$.a["}}, "json", "/pages/p/item/fields/a/jsonpath"},
      {{{"jsonpath", "$.a"}}, "html", "/pages/p/item/fields/a/jsonpath"},
      {{{"css", "a"}}, "json", "/pages/p/item/fields/a/css"},
      {{{"regex", "(unclosed"}}, "", "/pages/p/item/fields/a/regex"},
      {{{"regex", {{"pattern", "(a)"}, {"group", 3}}}}, "", "/pages/p/item/fields/a/regex/group"},
      {{{"css", "a"}, {"pipeline", {{{"regex", "[z-a]"}}}}}, "", "/pages/p/item/fields/a/pipeline/0/regex"},
      {{{"container", {{"jsonpath", "$.x[*]"}}}, {"fields", {{"b", {{"css", "b"}}}}}},
       "auto", "/pages/p/item/fields/a/fields/b/css"},
  };
  for (const auto& tc : cases) {
    json page = item_field;
    page["item"]["fields"]["a"] = tc.field;
    const std::string err = CompileError(MinimalWithPage(page, tc.format));
    EXPECT_NE(err.find(tc.pointer), std::string::npos) << tc.field.dump() << " -> " << err;
  }

  json links = {{"links", {{{"css", "a"}, {"allow", {"ok", "(bad"}}}}}};
  EXPECT_NE(CompileError(MinimalWithPage(links)).find("/pages/p/links/0/allow/1"),
            std::string::npos);
  json match = {{"match", {{"url_regex", {"(bad"}}}}};
  EXPECT_NE(CompileError(MinimalWithPage(match)).find("/pages/p/match/url_regex/0"),
            std::string::npos);
  // Not even an object: a Parse-class error, not a crash.
  EXPECT_FALSE(CompileConfig(json::array()).ok());
  EXPECT_FALSE(CompileConfig(json("x")).ok());
}

TEST(ConfigModule, SettingsCarryTheSchemaDefaults) {
  auto minimal = MustCompile(Example("minimal.json"));
  ASSERT_TRUE(minimal);
  const CrawlSettings& s = minimal->settings();
  EXPECT_EQ(s.request.method, "GET");
  EXPECT_EQ(s.request.timeout.count(), 30000);
  EXPECT_EQ(s.request.connect_timeout.count(), 10000);
  EXPECT_EQ(s.request.max_bytes, 10485760);
  EXPECT_EQ(s.request.max_redirects, 10);
  EXPECT_TRUE(s.request.cookies);
  EXPECT_FALSE(s.request.proxy.has_value());
  EXPECT_FALSE(s.allow_private_network);
  EXPECT_TRUE(s.politeness.robots_txt);
  EXPECT_EQ(s.politeness.per_host_concurrency, 2);
  EXPECT_EQ(s.politeness.min_delay.count(), 250);
  EXPECT_EQ(s.politeness.max_retry_after.count(), 120000);
  EXPECT_EQ(s.retry.max_retries, 3);
  EXPECT_EQ(s.retry.backoff_base.count(), 1000);
  EXPECT_EQ(s.retry.backoff_max.count(), 60000);
  EXPECT_TRUE(s.retry.jitter);
  EXPECT_EQ(s.errors.module_pause_after, 3);
  EXPECT_EQ(s.errors.module_cooldown.count(), 60000);
  EXPECT_EQ(s.errors.run_abort_after, 10);
  EXPECT_FALSE(s.errors.run_abort_error_rate.has_value());
  EXPECT_FALSE(s.limits.max_pages.has_value());
  EXPECT_FALSE(s.limits.max_depth.has_value());
  EXPECT_EQ(s.limits.watchdog.count(), 300000);

  auto post = MustCompile(Example("local_demo_post.json"));
  ASSERT_TRUE(post);
  EXPECT_EQ(post->settings().request.method, "POST");
  EXPECT_EQ(post->settings().request.body, "q=celeriac&sort=newest");
  EXPECT_EQ(post->settings().request.user_agent.value_or(""), "CeleriacDemo/1.0");
  EXPECT_FALSE(post->settings().request.cookies);
  EXPECT_TRUE(post->settings().allow_private_network);
  EXPECT_EQ(post->settings().errors.run_abort_after, 1);
  auto generated = post->Generate();
  ASSERT_EQ(generated.size(), 1u);
  EXPECT_EQ(generated[0].url, "http://127.0.0.1:8089/search");
  EXPECT_EQ(generated[0].method, "POST");
  EXPECT_EQ(generated[0].body, "q=celeriac&sort=newest");
  EXPECT_EQ(generated[0].page_type, "results");
  EXPECT_EQ(generated[0].depth, 0);

  auto shop = MustCompile(Example("shop_listing_detail.json"));
  ASSERT_TRUE(shop);
  EXPECT_EQ(shop->settings().limits.max_depth.value_or(-1), 3);
  EXPECT_EQ(shop->settings().errors.run_abort_error_rate.value_or(0), 0.2);
  EXPECT_EQ(shop->settings().request.headers.at("Accept-Language"), "en-GB,en;q=0.8");
  EXPECT_EQ(shop->settings().user_agent.value_or(""), "CeleriacBot/1.0 (+https://example.org/bot)");
  EXPECT_EQ(shop->Generate().size(), 2u);
  EXPECT_EQ(shop->PageTypes(), (std::vector<std::string>{"detail", "listing"}));
}

TEST(ConfigModule, ExtractsAProductPage) {
  auto m = MustCompile(Example("shop_listing_detail.json"));
  ASSERT_TRUE(m);
  const std::string body = Fixture("product.html");
  const std::string url = "https://books.example.com/catalogue/a-light-in-the-attic_1000/index.html";
  auto out = m->Parse(MakePage(url, "detail", body, "text/html", 1));
  ASSERT_TRUE(out.ok()) << out.error().message();
  EXPECT_TRUE(out->item_errors.empty()) << json(out->item_errors).dump();
  EXPECT_TRUE(out->requests.empty());
  ASSERT_EQ(out->items.size(), 1u);
  const Item& item = out->items[0];
  const json& d = item.data;
  EXPECT_EQ(item.key, R"(["a897fe39b1053632"])");
  EXPECT_EQ(d["upc"], "a897fe39b1053632");
  EXPECT_EQ(d["title"], "A Light in the Attic");
  EXPECT_EQ(d["price"], "51.77");
  EXPECT_EQ(d["currency"], "&pound;");  // a regex on the raw body sees the entity
  EXPECT_EQ(d["in_stock"], true);
  EXPECT_EQ(d["stock_count"], 22);
  EXPECT_EQ(d["rating"], 3);
  EXPECT_EQ(d["image"],
            "https://books.example.com/media/cache/fe/72/fe72f0532301ec28892ae79a629a293c.jpg");
  const std::string description = d["description"];
  EXPECT_TRUE(description.starts_with("It's hard to imagine a world without A Light in the Attic."))
      << description;
  EXPECT_TRUE(description.ends_with("readers & listeners.")) << description;
  EXPECT_EQ(d["breadcrumbs"], json::parse(R"(["Home", "Books", "Poetry"])"));
  EXPECT_EQ(d["tags"], json::parse(R"(["poetry", "classics", "humour"])"));
  EXPECT_EQ(d["keywords"], "poetry, shel silverstein , classics");
  ASSERT_TRUE(d["specs"].is_array());
  ASSERT_EQ(d["specs"].size(), 7u);
  EXPECT_EQ(d["specs"][0], json::parse(R"({"name": "UPC", "value": "a897fe39b1053632"})"));
  EXPECT_EQ(d["specs"][5], json::parse(R"J({"name": "Availability", "value": "In stock (22 available)"})J"));
  EXPECT_EQ(d["url"], url);
  EXPECT_EQ(d["source"], "books.example.com");
  EXPECT_EQ(item.content_hash.size(), 64u);

  // vary fields (in_stock, stock_count) do not change the content hash; other fields do.
  std::string changed = body;
  changed.replace(changed.find("22 available"), 12, "3 available");
  auto out2 = m->Parse(MakePage(url, "detail", changed, "text/html", 1));
  ASSERT_TRUE(out2.ok());
  ASSERT_EQ(out2->items.size(), 1u);
  EXPECT_EQ(out2->items[0].data["stock_count"], 3);
  EXPECT_EQ(out2->items[0].content_hash, item.content_hash);
  changed.replace(changed.find("&pound;51.77"), 12, "&pound;52.00");
  auto out3 = m->Parse(MakePage(url, "detail", changed, "text/html", 1));
  ASSERT_TRUE(out3.ok());
  EXPECT_EQ(out3->items[0].data["price"], "52.00");
  EXPECT_NE(out3->items[0].content_hash, item.content_hash);
}

TEST(ConfigModule, FollowsListingLinksAndPagination) {
  auto m = MustCompile(Example("shop_listing_detail.json"));
  ASSERT_TRUE(m);
  const std::string body = Fixture("listing.html");
  const std::string url = "https://books.example.com/catalogue/page-1.html";
  auto out = m->Parse(MakePage(url, "listing", body));
  ASSERT_TRUE(out.ok()) << out.error().message();
  EXPECT_TRUE(out->items.empty());
  size_t detail = 0, listing = 0, pages = 0;
  for (const auto& r : out->requests) {
    EXPECT_TRUE(r.url.starts_with("https://books.example.com/catalogue/")) << r.url;
    EXPECT_EQ(r.url.find('#'), std::string::npos) << r.url;
    EXPECT_EQ(r.method, "GET");
    if (r.is_pagination) {
      ++pages;
      EXPECT_EQ(r.url, "https://books.example.com/catalogue/page-2.html");
      EXPECT_EQ(r.page_type, "listing");
      EXPECT_EQ(r.depth, 0);
      EXPECT_EQ(r.pagination_index, 1);
      EXPECT_FALSE(r.stop_when_no_new_items);
    } else if (r.page_type == "detail") {
      ++detail;
      EXPECT_EQ(r.depth, 1);
      EXPECT_TRUE(r.url.ends_with("/index.html"));
    } else {
      ++listing;
      EXPECT_EQ(r.page_type, "listing");
      EXPECT_NE(r.url.find("/catalogue/category/books/"), std::string::npos) << r.url;
    }
  }
  EXPECT_EQ(detail, 25u);
  EXPECT_EQ(listing, 50u);
  EXPECT_EQ(pages, 1u);
  EXPECT_EQ(out->requests.front().url,
            "https://books.example.com/catalogue/a-light-in-the-attic_1000/index.html");

  // Deeper pages: the category rule stops after depth 1; limits.max_depth (3) stops all links.
  auto deeper = m->Parse(MakePage(url, "listing", body, "text/html", 2));
  ASSERT_TRUE(deeper.ok());
  EXPECT_EQ(deeper->requests.size(), 26u);  // 25 details + next page
  auto deepest = m->Parse(MakePage(url, "listing", body, "text/html", 3));
  ASSERT_TRUE(deepest.ok());
  ASSERT_EQ(deepest->requests.size(), 1u);
  EXPECT_TRUE(deepest->requests[0].is_pagination);
  EXPECT_EQ(deepest->requests[0].depth, 3);

  // max_pages (60) bounds pagination.
  Page last = MakePage(url, "listing", body);
  last.pagination_index = 60;
  auto at_limit = m->Parse(last);
  ASSERT_TRUE(at_limit.ok());
  for (const auto& r : at_limit->requests) EXPECT_FALSE(r.is_pagination);
}

TEST(ConfigModule, ExtractsAJsonApiWithNestedContainersAndParamPagination) {
  auto m = MustCompile(Example("json_api.json"));
  ASSERT_TRUE(m);
  const std::string body = R"({"data": [
    {"id": 17, "attributes": {"name": "  Blue \n Mug ", "price": {"amount": "12.50", "currency": "USD"},
      "active": "yes", "updated_at": "2024-03-05T10:20:30+0200",
      "categories": [{"slug": "kitchen"}, {"slug": "mugs"}, {"slug": "kitchen"}],
      "variants": [{"sku": "M-1", "size": "S"}, {"sku": "M-2"}]},
     "links": {"reviews": "https://api.shop.example.com/v2/products/17/reviews"}},
    {"id": "18", "attributes": {"name": "Plate", "price": {"amount": 3}},
     "links": {"reviews": "https://other.example.com/v2/products/18/reviews"}},
    {"attributes": {"name": "No id"}}
  ]})";
  const std::string url = "https://api.shop.example.com/v2/products?page=1&per_page=100";
  auto out = m->Parse(MakePage(url, "products", body, "application/json"));
  ASSERT_TRUE(out.ok()) << out.error().message();
  ASSERT_EQ(out->items.size(), 2u);
  EXPECT_EQ(out->items[0].key, "[17]");
  EXPECT_EQ(out->items[0].data, json::parse(R"({
    "id": 17, "name": "Blue Mug", "price": "12.50", "currency": "USD", "active": true,
    "updated_at": "2024-03-05T08:20:30Z", "categories": ["kitchen", "mugs"],
    "variants": [{"sku": "M-1", "size": "S"}, {"sku": "M-2", "size": null}], "page": 1})"));
  EXPECT_EQ(out->items[1].key, "[18]");
  EXPECT_EQ(out->items[1].data,
            json::parse(R"({"id": 18, "name": "Plate", "price": "3", "currency": "EUR", "page": 1})"));
  ASSERT_EQ(out->item_errors.size(), 1u);
  EXPECT_NE(out->item_errors[0].find("item 3 of 3: required field 'id' missing"), std::string::npos)
      << out->item_errors[0];

  ASSERT_EQ(out->requests.size(), 2u);
  EXPECT_EQ(out->requests[0].url, "https://api.shop.example.com/v2/products/17/reviews");
  EXPECT_EQ(out->requests[0].page_type, "reviews");
  EXPECT_EQ(out->requests[0].depth, 1);
  EXPECT_EQ(out->requests[1].url, "https://api.shop.example.com/v2/products?page=2&per_page=100");
  EXPECT_TRUE(out->requests[1].is_pagination);
  EXPECT_TRUE(out->requests[1].stop_when_no_new_items);
  EXPECT_EQ(out->requests[1].page_type, "products");

  // Param pagination stops at max (500).
  Page last = MakePage("https://api.shop.example.com/v2/products?page=500&per_page=100",
                       "products", body, "application/json");
  auto at_max = m->Parse(last);
  ASSERT_TRUE(at_max.ok());
  for (const auto& r : at_max->requests) EXPECT_FALSE(r.is_pagination);

  // A body that is not JSON is a non-retryable Parse-class error.
  for (const std::string bad : {"<html>oops</html>", "", "{\"data\": [", "\xFF\xFE{}"}) {
    auto r = m->Parse(MakePage(url, "products", bad, "application/json"));
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_FALSE(r.error().retryable());
  }
  // Absurdly deep JSON is refused before parsing.
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  auto d = m->Parse(MakePage(url, "products", deep, "application/json"));
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.error().message().find("deeper"), std::string::npos);
}

TEST(ConfigModule, ExtractsThePostDemoResults) {
  auto m = MustCompile(Example("local_demo_post.json"));
  ASSERT_TRUE(m);
  const std::string body = R"(<html><body>
    <div class="result"><a class="title" href="/recipes/celeriac-soup"> Celeriac soup </a>
      <ul><li class="ingredient"> celeriac </li><li class="ingredient">leek</li></ul>
      <p class="snippet">A <b>creamy</b> soup</p></div>
    <div class="result"><a class="title" href="/recipes/remoulade">Remoulade</a></div>
    <div class="result"><a class="title">no link</a></div>
  </body></html>)";
  auto out = m->Parse(MakePage("http://127.0.0.1:8089/search", "results", body));
  ASSERT_TRUE(out.ok()) << out.error().message();
  ASSERT_EQ(out->items.size(), 2u);
  EXPECT_EQ(out->items[0].data, json::parse(R"({"slug": "celeriac-soup", "title": "Celeriac soup",
      "ingredients": "celeriac, leek", "snippet": "A creamy soup", "found_by": {"query": "celeriac"}})"));
  EXPECT_EQ(out->items[1].data["slug"], "remoulade");
  EXPECT_FALSE(out->items[1].data.contains("ingredients"));
  EXPECT_EQ(out->item_errors.size(), 1u);
  ASSERT_EQ(out->requests.size(), 2u);
  EXPECT_EQ(out->requests[0].url, "http://127.0.0.1:8089/recipes/celeriac-soup");
  EXPECT_EQ(out->requests[0].page_type, "recipe");
  EXPECT_EQ(out->requests[0].method, "POST");  // request.method applies to every page

  auto recipe = m->Parse(MakePage("http://127.0.0.1:8089/recipes/celeriac-soup", "recipe",
                                  "<p>Ready in 45 min</p>"));
  ASSERT_TRUE(recipe.ok());
  ASSERT_EQ(recipe->items.size(), 1u);
  EXPECT_EQ(recipe->items[0].data, json::parse(R"({"slug": "celeriac-soup", "minutes": 45})"));
  EXPECT_EQ(recipe->items[0].key, R"(["celeriac-soup"])");
}

json LinkConfig(const json& rule) {
  return json{{"start_urls", {"https://www.shop.example.co.uk/"}},
              {"start_page", "list"},
              {"pages",
               {{"list", {{"links", {rule}}}},
                {"detail", {{"match", {{"url_regex", {"/p/"}}}}}},
                {"other", {{"match", {{"url_regex", {"/p/", "/o/"}}}}}}}}};
}

std::vector<std::string> LinkUrls(const json& rule, const std::string& body,
                                  const std::string& page_url = "https://www.shop.example.co.uk/list/") {
  auto m = MustCompile(LinkConfig(rule));
  if (!m) return {"<no module>"};
  auto out = m->Parse(MakePage(page_url, "list", body));
  if (!out.ok()) return {"<error> " + out.error().message()};
  std::vector<std::string> urls;
  for (const auto& r : out->requests) urls.push_back(r.url + " " + r.page_type);
  return urls;
}

TEST(ConfigModule, LinkScopesFiltersAndRouting) {
  const std::string body = R"J(<a href="/p/1#x">1</a><a href="/p/1">dup</a><a href="../o/2">2</a>
    <a href="https://img.shop.example.co.uk/p/3">3</a><a href="http://www.shop.example.co.uk/p/4">4</a>
    <a href="https://other.co.uk/p/5">5</a><a href="mailto:a@b">m</a><a href="javascript:x()">j</a>
    <a href="/x/6">unrouted</a><a>no href</a><a href="https://www.shop.example.co.uk:8443/p/7">7</a>)J";
  using V = std::vector<std::string>;
  EXPECT_EQ(LinkUrls({{"css", "a"}}, body),
            (V{"https://www.shop.example.co.uk/p/1 detail", "https://www.shop.example.co.uk/o/2 other",
               "http://www.shop.example.co.uk/p/4 detail", "https://www.shop.example.co.uk:8443/p/7 detail"}));
  EXPECT_EQ(LinkUrls({{"css", "a"}, {"scope", "same-origin"}}, body),
            (V{"https://www.shop.example.co.uk/p/1 detail", "https://www.shop.example.co.uk/o/2 other"}));
  EXPECT_EQ(LinkUrls({{"css", "a"}, {"scope", "same-domain"}}, body),
            (V{"https://www.shop.example.co.uk/p/1 detail", "https://www.shop.example.co.uk/o/2 other",
               "https://img.shop.example.co.uk/p/3 detail", "http://www.shop.example.co.uk/p/4 detail",
               "https://www.shop.example.co.uk:8443/p/7 detail"}));
  EXPECT_EQ(LinkUrls({{"css", "a"}, {"scope", "any"}, {"deny", {"^http:", "7"}}}, body),
            (V{"https://www.shop.example.co.uk/p/1 detail", "https://www.shop.example.co.uk/o/2 other",
               "https://img.shop.example.co.uk/p/3 detail", "https://other.co.uk/p/5 detail"}));
  EXPECT_EQ(LinkUrls({{"css", "a"}, {"allow", {"/o/", "/p/1"}}, {"deny", {"/p/"}}}, body),
            (V{"https://www.shop.example.co.uk/o/2 other"}));
  EXPECT_EQ(LinkUrls({{"css", "a"}, {"route_to", "other"}, {"allow", {"/x/"}}}, body),
            (V{"https://www.shop.example.co.uk/x/6 other"}));
  EXPECT_EQ(LinkUrls({{"xpath", "//a/@href"}, {"allow", {"/o/"}}}, body),
            (V{"https://www.shop.example.co.uk/o/2 other"}));
  EXPECT_EQ(LinkUrls({{"css", "a::attr(href)"}, {"allow", {"/o/"}}}, body),
            (V{"https://www.shop.example.co.uk/o/2 other"}));
  // <base href> changes what relative links resolve against.
  EXPECT_EQ(LinkUrls({{"css", "a"}},
                     R"(<html><head><base href="/deep/dir/"></head><body><a href="p/9">9</a></body></html>)"),
            (V{"https://www.shop.example.co.uk/deep/dir/p/9 detail"}));
}

json HostileConfig() {
  return json::parse(R"J({
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
}

TEST(ConfigModule, BrokenAndHostilePagesNeverCrash) {
  auto m = MustCompile(HostileConfig());
  ASSERT_TRUE(m);
  // Broken markup: libxml2 recovers; links are cleaned; bad bytes end as valid UTF-8.
  const std::string broken = Fixture("broken.html");
  auto out = m->Parse(MakePage("https://h.example.com/x/", "p", broken, "text/html"));
  ASSERT_TRUE(out.ok()) << out.error().message();
  ASSERT_GE(out->items.size(), 2u);
  EXPECT_EQ(out->items[0].data["title"], "First item");
  for (const auto& item : out->items) {
    EXPECT_NO_THROW((void)item.data.dump());
    EXPECT_EQ(item.content_hash.size(), 64u);
  }
  std::set<std::string> urls;
  for (const auto& r : out->requests) urls.insert(r.url);
  EXPECT_TRUE(urls.contains("https://h.example.com/path%20with%20spaces/?q=a%20b")) << json(urls).dump();
  EXPECT_TRUE(urls.contains("http://example.com/a/c")) << json(urls).dump();
  EXPECT_EQ(urls.size(), 2u) << json(urls).dump();

  const std::vector<std::pair<std::string, std::string>> bodies = {
      {"empty", ""},
      {"nul bytes", std::string(1000, '\0')},
      {"binary", [] {
         std::string s;
         uint32_t x = 12345;
         for (int i = 0; i < 200000; ++i) {
           x = x * 1103515245 + 12345;
           s += static_cast<char>(x >> 24);
         }
         return s;
       }()},
      {"deep nesting", [] {
         std::string s = "<html><body>";
         for (int i = 0; i < 100000; ++i) s += "<div class='product'>";
         return s + "<h2>deep</h2>";
       }()},
      {"10 MB", [] {
         std::string s = "<html><body>";
         while (s.size() < 10 * 1024 * 1024) {
           s += "<div class='product'><h2>t</h2><span class='price'>1.5</span><a href='/n'>n</a></div>\n";
         }
         return s;
       }()},
      {"unterminated", "<html><body><div class='product'><h2>x<a href='"},
      {"utf16 bom", std::string("\xFF\xFE<\0h\0", 6)},
  };
  for (const auto& [name, body] : bodies) {
    for (const char* ct : {"text/html", "text/html; charset=utf-8", "text/html; charset=shift_jis",
                           "application/xml"}) {
      if (name == "10 MB" && std::string(ct) != "text/html") continue;  // once is enough
      auto r = m->Parse(MakePage("https://h.example.com/", "p", body, ct));
      ASSERT_TRUE(r.ok()) << name << " " << ct << ": " << r.error().message();
      for (const auto& item : r->items) EXPECT_NO_THROW((void)item.data.dump()) << name;
    }
  }
}

TEST(ConfigModule, DecodesLegacyCharsets) {
  json config = json::parse(R"J({
    "start_urls": ["https://h.example.com/"], "start_page": "p",
    "pages": {"p": {"item": {"key": ["name"], "fields": {
      "name": {"css": "h1.name"},
      "title": {"css": "title"},
      "price": {"regex": "Prix: ([^<]+)"},
      "raw": {"regex": "<h1[^>]*>(.*?)</h1>"}
    }}}}})J");
  auto m = MustCompile(config);
  ASSERT_TRUE(m);
  const std::string body = Fixture("latin1.html");
  auto out = m->Parse(MakePage("https://h.example.com/", "p", body, "text/html"));
  ASSERT_TRUE(out.ok());
  ASSERT_EQ(out->items.size(), 1u);
  EXPECT_EQ(out->items[0].data["name"], "Caf\xC3\xA9 cr\xC3\xA8me \xE2\x82\xAC 5");
  EXPECT_EQ(out->items[0].data["title"], "Caf\xC3\xA9 cr\xC3\xA8me");
  // Body regexes search the body decoded from its charset.
  EXPECT_EQ(out->items[0].data["price"], "3,50\xC2\xA0\xE2\x82\xAC");
  EXPECT_EQ(out->items[0].data["raw"], "Caf\xC3\xA9 cr\xC3\xA8me \xE2\x82\xAC 5");
}

TEST(ConfigModule, ItemErrorsAndUnknownPageTypes) {
  json config = json::parse(R"({
    "start_urls": ["https://h.example.com/"], "start_page": "p",
    "pages": {"p": {"item": {"key": ["sku", "color"], "container": {"css": "li"}, "fields": {
      "sku": {"css": ".sku"},
      "color": {"css": ".color", "default": "none"},
      "name": {"css": ".name", "required": true},
      "from_url": {"url": "param:ref"}
    }}}}})");
  auto m = MustCompile(config);
  ASSERT_TRUE(m);
  const std::string body = R"(<ul>
    <li><b class="sku">A1</b><i class="name">Alpha</i><i class="color">red</i></li>
    <li><b class="sku">A2</b><i class="name">  </i></li>
    <li><i class="name">No sku</i></li>
    <li><b class="sku">A4</b><i class="name">Delta</i></li></ul>)";
  auto out = m->Parse(MakePage("https://h.example.com/?ref=x%20y", "p", body));
  ASSERT_TRUE(out.ok());
  ASSERT_EQ(out->items.size(), 2u);
  EXPECT_EQ(out->items[0].key, R"(["A1","red"])");
  EXPECT_EQ(out->items[0].data["from_url"], "x y");
  EXPECT_EQ(out->items[1].key, R"(["A4","none"])");
  ASSERT_EQ(out->item_errors.size(), 2u);
  EXPECT_EQ(out->item_errors[0], "item 2 of 4: required field 'name' missing");
  EXPECT_EQ(out->item_errors[1], "item 3 of 4: key field 'sku' missing");

  auto unknown = m->Parse(MakePage("https://h.example.com/", "nope", body));
  ASSERT_FALSE(unknown.ok());
  EXPECT_FALSE(unknown.error().retryable());
}

}  // namespace
}  // namespace celeriac::extractor::parse

namespace celeriac::extractor::parse {
namespace {

TEST(ConfigModule, XmlPagesWithoutExternalEntities) {
  json config = json::parse(R"J({
    "start_urls": ["https://h.example.com/feed"], "start_page": "feed",
    "pages": {"feed": {"format": "xml",
      "item": {"key": ["id"], "container": {"css": "Entry"}, "fields": {
        "id": {"xpath": "string(@id)"},
        "title": {"css": "Title"},
        "secret": {"css": "Secret"}
      }},
      "links": [{"xpath": "//Link/@href", "route_to": "feed"}]
    }}})J");
  auto m = MustCompile(config);
  ASSERT_TRUE(m);
  const std::string body = R"(<?xml version="1.0"?>
<!DOCTYPE Feed [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Feed><Entry id="1"><Title>One &amp; only</Title><Secret>&xxe;</Secret><Link href="/feed?p=2"/></Entry>
<Entry id="2"><Title><![CDATA[Two <b>]]></Title></Entry><entry id="3"><Title>lower</Title></entry></Feed>)";
  auto out = m->Parse(MakePage("https://h.example.com/feed", "feed", body, "application/xml"));
  ASSERT_TRUE(out.ok()) << out.error().message();
  ASSERT_EQ(out->items.size(), 2u);  // XML names are case-sensitive: <entry> is not <Entry>
  EXPECT_EQ(out->items[0].data["title"], "One & only");
  EXPECT_EQ(out->items[0].data.value("secret", std::string()).find("root:"), std::string::npos);
  EXPECT_EQ(out->items[1].data["title"], "Two <b>");
  ASSERT_EQ(out->requests.size(), 1u);
  EXPECT_EQ(out->requests[0].url, "https://h.example.com/feed?p=2");
}

TEST(ConfigModule, ParsesConcurrentlyWithIdenticalResults) {
  auto m = MustCompile(Example("shop_listing_detail.json"));
  ASSERT_TRUE(m);
  const std::string body = Fixture("product.html");
  const Page page = MakePage("https://books.example.com/catalogue/x_1/index.html", "detail", body);
  auto reference = m->Parse(page);
  ASSERT_TRUE(reference.ok());
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 25; ++i) {
        auto r = m->Parse(page);
        if (!r.ok() || r->items.size() != 1 ||
            r->items[0].content_hash != reference->items[0].content_hash) {
          ++mismatches;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

}  // namespace
}  // namespace celeriac::extractor::parse
