// JSONPath (RFC 9535 subset): selection on a document, order, and compile errors.

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "extractor/parse/jsonpath.hpp"

namespace celeriac::extractor::parse {
namespace {

using nlohmann::json;

const json kDoc = json::parse(R"({
  "store": {
    "book": [
      {"category": "reference", "author": "Nigel Rees", "title": "Sayings", "price": 8.95},
      {"category": "fiction", "author": "Evelyn Waugh", "title": "Sword", "price": 12.99},
      {"category": "fiction", "author": "Herman Melville", "title": "Moby Dick", "isbn": "0-553", "price": 8.99},
      {"category": "fiction", "author": "Tolkien", "title": "LOTR", "isbn": "0-395", "price": 22.99}
    ],
    "bicycle": {"color": "red", "price": 399}
  },
  "odd key": {"it's": 1},
  "n": null
})");

json Eval(const std::string& path, const json& doc = kDoc) {
  auto compiled = JsonPath::Compile(path);
  if (!compiled.ok()) return json("ERROR: " + compiled.error().message());
  std::vector<const json*> nodes;
  compiled->Evaluate(doc, &nodes);
  json out = json::array();
  for (const json* n : nodes) out.push_back(*n);
  return out;
}

TEST(JsonPath, RootAndMembers) {
  EXPECT_EQ(Eval("$"), json::array({kDoc}));
  EXPECT_EQ(Eval("$.store.bicycle.color"), json::array({"red"}));
  EXPECT_EQ(Eval("$['store']['bicycle']['color']"), json::array({"red"}));
  EXPECT_EQ(Eval("$[\"odd key\"]['it\\'s']"), json::array({1}));
  EXPECT_EQ(Eval("$.missing"), json::array());
  EXPECT_EQ(Eval("$.n"), json::array({nullptr}));
  EXPECT_EQ(Eval("$.store.book.title"), json::array());  // no member of an array
}

TEST(JsonPath, IndexesWildcardsAndSlices) {
  EXPECT_EQ(Eval("$.store.book[0].title"), json::array({"Sayings"}));
  EXPECT_EQ(Eval("$.store.book[-1].title"), json::array({"LOTR"}));
  EXPECT_EQ(Eval("$.store.book[9]"), json::array());
  EXPECT_EQ(Eval("$.store.book[*].author").size(), 4u);
  EXPECT_EQ(Eval("$.store.bicycle.*"), json::array({"red", 399}));  // key order
  EXPECT_EQ(Eval("$.store.book[1:3].title"), json::array({"Sword", "Moby Dick"}));
  EXPECT_EQ(Eval("$.store.book[::2].title"), json::array({"Sayings", "Moby Dick"}));
  EXPECT_EQ(Eval("$.store.book[::-1].title"),
            json::array({"LOTR", "Moby Dick", "Sword", "Sayings"}));
  EXPECT_EQ(Eval("$.store.book[-2:].title"), json::array({"Moby Dick", "LOTR"}));
  EXPECT_EQ(Eval("$.store.book[0,2].title"), json::array({"Sayings", "Moby Dick"}));
  EXPECT_EQ(Eval("$.store.book[0:4:0]"), json::array());
}

TEST(JsonPath, Descendants) {
  EXPECT_EQ(Eval("$..isbn"), json::array({"0-553", "0-395"}));
  EXPECT_EQ(Eval("$..price").size(), 5u);
  EXPECT_EQ(Eval("$.store..color"), json::array({"red"}));
  EXPECT_EQ(Eval("$..book[0].author"), json::array({"Nigel Rees"}));
  EXPECT_EQ(Eval("$..['color']"), json::array({"red"}));
}

TEST(JsonPath, Filters) {
  EXPECT_EQ(Eval("$.store.book[?@.price < 10].title"), json::array({"Sayings", "Moby Dick"}));
  EXPECT_EQ(Eval("$.store.book[?@.isbn].title"), json::array({"Moby Dick", "LOTR"}));
  EXPECT_EQ(Eval("$.store.book[?!@.isbn].title"), json::array({"Sayings", "Sword"}));
  EXPECT_EQ(Eval("$.store.book[?@.category == 'fiction' && @.price > 20].title"),
            json::array({"LOTR"}));
  EXPECT_EQ(Eval("$.store.book[?(@.author == \"Tolkien\" || @.price == 8.95)].title"),
            json::array({"Sayings", "LOTR"}));
  EXPECT_EQ(Eval("$.store.book[?@.price >= 12.99 && @.price <= 22.99].title"),
            json::array({"Sword", "LOTR"}));
  EXPECT_EQ(Eval("$.store.book[?@.category != 'fiction'].title"), json::array({"Sayings"}));
  EXPECT_EQ(Eval("$.store.book[?@.price > $.store.bicycle.price]"), json::array());
  EXPECT_EQ(Eval("$[?@ == 399]", json::parse("[1, 399, \"399\"]")), json::array({399}));
  EXPECT_EQ(Eval("$[?@.a == null]", json::parse(R"([{"a": null}, {"b": 1}])")),
            json::parse(R"([{"a": null}])"));
}

TEST(JsonPath, ContainerRelative) {
  auto path = JsonPath::Compile("$.title");
  ASSERT_TRUE(path.ok());
  std::vector<const json*> nodes;
  path->Evaluate(kDoc["store"]["book"][2], &nodes);
  ASSERT_EQ(nodes.size(), 1u);
  EXPECT_EQ(*nodes[0], "Moby Dick");
}

TEST(JsonPath, DeepDescentIsIterative) {
  json deep = json::object();
  json* cur = &deep;
  for (int i = 0; i < 5000; ++i) cur = &((*cur)["a"] = json::object());
  (*cur)["x"] = 1;
  EXPECT_EQ(Eval("$..x", deep), json::array({1}));
  // Leave no deep recursion for nlohmann's destructor either: unwind by hand.
  while (deep.is_object() && deep.contains("a")) {
    json next = std::move(deep["a"]);
    deep = std::move(next);
  }
}

TEST(JsonPath, CompileErrors) {
  for (const char* bad : {"", "store", "$.", "$[", "$['a'", "$[?@.a ==]", "$.a b", "$[?length(@) > 1]",
                          "$[1:2:x]", "$['\\q']"}) {
    auto r = JsonPath::Compile(bad);
    EXPECT_FALSE(r.ok()) << bad;
  }
  auto fn = JsonPath::Compile("$[?length(@) > 1]");
  ASSERT_FALSE(fn.ok());
  EXPECT_NE(fn.error().message().find("not supported"), std::string::npos) << fn.error().message();
}

}  // namespace
}  // namespace celeriac::extractor::parse
