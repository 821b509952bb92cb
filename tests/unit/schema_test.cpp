// Every schema in schemas/ against its examples: valid ones pass, invalid ones fail, and the
// error names the location that _expected.json says is wrong.

#include <filesystem>
#include <set>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/schema/validator.hpp"
#include "schemas/schemas.hpp"
#include "tests/support/paths.hpp"

namespace celeriac {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// "tasks/orchestrator.tasks.execute_crawl_task.body" -> its examples folder name.
std::string ExampleFolderName(const std::string& schema_name) {
  return fs::path(schema_name).filename().string();
}

json ReadJson(const fs::path& p) { return json::parse(testing::ReadFile(p)); }

TEST(Schemas, EveryEmbeddedSchemaCompilesAndHasExamples) {
  const auto names = schemas::Names();
  ASSERT_GE(names.size(), 7u) << "crawl_config plus three task bodies and three results";
  for (const auto& name : names) {
    auto v = schemas::Get(name);
    ASSERT_TRUE(v.ok()) << v.error().message();
    const auto dir = testing::SourceDir() / "schemas" / "examples" / ExampleFolderName(name);
    EXPECT_TRUE(fs::is_directory(dir / "valid")) << name << " has no valid examples in " << dir;
    EXPECT_TRUE(fs::is_directory(dir / "invalid")) << name << " has no invalid examples";
  }
}

TEST(Schemas, UnknownNameIsNotFound) {
  auto v = schemas::Get("no_such_schema");
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.error().code(), ErrorCode::kNotFound);
}

TEST(Schemas, ValidExamplesPass) {
  size_t checked = 0;
  for (const auto& name : schemas::Names()) {
    auto validator = schemas::Get(name);
    ASSERT_TRUE(validator.ok());
    const auto dir =
        testing::SourceDir() / "schemas" / "examples" / ExampleFolderName(name) / "valid";
    for (const auto& entry : fs::directory_iterator(dir)) {
      const auto doc = ReadJson(entry.path());
      const auto st = (*validator)->Validate(doc);
      EXPECT_TRUE(st.ok()) << entry.path() << ": " << (st.ok() ? "" : st.error().message());
      ++checked;
    }
  }
  EXPECT_GE(checked, 10u);
}

// Crawl configs shipped outside schemas/examples (benchmarks) must load too.
TEST(Schemas, BenchCrawlConfigsPass) {
  auto validator = schemas::Get("crawl_config");
  ASSERT_TRUE(validator.ok());
  for (const char* rel : {"bench/extractor_vs_scrapy/celeriac_config.json"}) {
    const auto st = (*validator)->Validate(ReadJson(testing::SourceDir() / rel));
    EXPECT_TRUE(st.ok()) << rel << ": " << (st.ok() ? "" : st.error().message());
  }
}

TEST(Schemas, InvalidExamplesFailAtTheExpectedPath) {
  size_t checked = 0;
  for (const auto& name : schemas::Names()) {
    auto validator = schemas::Get(name);
    ASSERT_TRUE(validator.ok());
    const auto dir =
        testing::SourceDir() / "schemas" / "examples" / ExampleFolderName(name) / "invalid";
    const json expected = ReadJson(dir / "_expected.json");
    std::set<std::string> files;
    for (const auto& entry : fs::directory_iterator(dir)) {
      const auto file = entry.path().filename().string();
      if (file == "_expected.json") continue;
      files.insert(file);
      ASSERT_TRUE(expected.contains(file)) << dir / file << " has no entry in _expected.json";
      const std::string pointer = expected[file].get<std::string>();
      const auto doc = ReadJson(entry.path());
      const auto violations = (*validator)->Check(doc);
      ASSERT_FALSE(violations.empty()) << dir / file << " was accepted";
      const auto st = (*validator)->Validate(doc);
      ASSERT_FALSE(st.ok());
      const std::string shown = pointer.empty() ? "/" : pointer;
      EXPECT_NE(st.error().message().find("invalid at " + shown + ":"), std::string::npos)
          << dir / file << ": expected the error at " << shown << ", got: "
          << st.error().message();
      EXPECT_FALSE(st.error().retryable());
      ++checked;
    }
    for (const auto& [file, _] : expected.items())
      EXPECT_TRUE(files.count(file)) << "_expected.json names missing file " << dir / file;
  }
  EXPECT_GE(checked, 20u);
}

TEST(ContextToPointer, TellsIndexesFromNumericKeysAndEscapes) {
  const json doc = {{"pages", {{"0", {{"a/b", {1, 2, {{"x~y", true}}}}}}}}};
  EXPECT_EQ(schema::ContextToPointer({"<root>"}, doc), "");
  EXPECT_EQ(schema::ContextToPointer({"<root>", "[pages]", "[0]", "[a/b]", "[2]", "[x~y]"}, doc),
            "/pages/0/a~1b/2/x~0y");
}

TEST(SchemaValidator, NamesTheMissingOrUnknownProperty) {
  auto v = schema::SchemaValidator::Compile(
      json::parse(R"({"type": "object", "required": ["css"], "additionalProperties": false,
                      "properties": {"css": {"type": "string"}, "o": {"type": "object",
                      "properties": {}, "additionalProperties": false}}})"),
      "props");
  ASSERT_TRUE(v.ok()) << v.error().message();
  auto missing = (*v)->Check(json::object());
  ASSERT_EQ(missing.size(), 1u);
  EXPECT_EQ(missing[0].pointer, "");
  EXPECT_EQ(missing[0].property, "css");
  auto unknown = (*v)->Check(json{{"css", "a"}, {"o", {{"it's", 1}}}});
  ASSERT_FALSE(unknown.empty());
  EXPECT_EQ(unknown[0].pointer, "/o");
  EXPECT_EQ(unknown[0].property, "it's");
  auto typed = (*v)->Check(json{{"css", 1}});
  ASSERT_FALSE(typed.empty());
  EXPECT_EQ(typed[0].pointer, "/css");
  EXPECT_EQ(typed[0].property, "") << "a rule about the value itself names no property";
}

TEST(SchemaValidator, RefusesABrokenSchema) {
  auto v = schema::SchemaValidator::Compile(json{{"type", 42}}, "broken");
  EXPECT_FALSE(v.ok());
}

}  // namespace
}  // namespace celeriac
