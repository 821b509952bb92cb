// The admin API's input checks (orchestrator/api/request_validator.hpp): every operation of
// openapi.json has its validator, and what OpenAPI 3.0 says ($ref, nullable, parameters read as
// their types) is checked through core/schema, errors naming the field and the rule.

#include <algorithm>
#include <set>
#include <string>
#include <variant>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "orchestrator/api/admin_api.hpp"
#include "orchestrator/api/request_validator.hpp"
#include "tests/support/paths.hpp"

namespace celeriac::orchestrator::api {
namespace {

using nlohmann::json;

const json& Document() {
  static const json doc = json::parse(
      testing::ReadFile(testing::SourceDir() / "orchestrator" / "api" / "openapi.json"));
  return doc;
}

std::shared_ptr<const RequestValidator> AdminApiValidator() {
  auto v = RequestValidator::ForAdminApi();
  EXPECT_TRUE(v.ok()) << v.error().message();
  return v.ok() ? *v : nullptr;
}

std::string Upper(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), ::toupper);
  return s;
}

// ---- the admin API's document -----------------------------------------------------------------

// A route added to openapi.json cannot skip the checks: each operation that takes input has a
// validator for exactly the parameters and body it declares, and AdminApi serves no route the
// document does not describe (it refuses to start otherwise).
TEST(AdminApiInput, EveryOperationWithParametersOrABodyHasAValidator) {
  const auto validator = AdminApiValidator();
  ASSERT_TRUE(validator);
  const json& doc = Document();
  size_t with_input = 0;
  for (const auto& [path, item] : doc["paths"].items()) {
    for (const auto& [method, op] : item.items()) {
      if (method == "parameters") continue;
      SCOPED_TRACE(Upper(method) + " " + path);
      const OperationValidator* v = validator->Find(Upper(method), path);
      ASSERT_NE(v, nullptr) << "no validator";
      std::set<std::string> path_params, query_params;
      for (const json* list : {item.contains("parameters") ? &item["parameters"] : nullptr,
                               op.contains("parameters") ? &op["parameters"] : nullptr}) {
        if (list == nullptr) continue;
        for (json p : *list) {
          if (p.contains("$ref")) p = doc.at(json::json_pointer(p["$ref"].get<std::string>().substr(1)));
          (p["in"] == "path" ? path_params : query_params).insert(p["name"].get<std::string>());
        }
      }
      const auto& checked_path = v->path_parameters();
      const auto checked_query = v->query_parameters();
      EXPECT_EQ(std::set<std::string>(checked_path.begin(), checked_path.end()), path_params);
      EXPECT_EQ(std::set<std::string>(checked_query.begin(), checked_query.end()), query_params);
      EXPECT_EQ(v->has_body(), op.contains("requestBody"));
      if (!path_params.empty() || !query_params.empty() || op.contains("requestBody")) {
        ++with_input;
      }
    }
  }
  EXPECT_GE(with_input, 10u) << "the document's routes with input";
  EXPECT_EQ(validator->operations().size(), AdminApi::Routes().size());
  for (const auto& route : AdminApi::Routes()) {
    EXPECT_NE(validator->Find(route.method, route.path), nullptr)
        << route.method << " " << route.path << " is served without a validator";
  }
}

TEST(AdminApiInput, IsCompiledOnce) {
  auto a = RequestValidator::ForAdminApi();
  auto b = RequestValidator::ForAdminApi();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->get(), b->get());
}

// ---- checking ---------------------------------------------------------------------------------

std::variant<RequestInput, InputError> Check(const OperationValidator& v,
                                             std::vector<std::string> path_values,
                                             std::string_view query, std::string_view body) {
  return v.Check(RawInput{std::move(path_values), query, body});
}

void ExpectError(const std::variant<RequestInput, InputError>& r, const std::string& field,
                 const std::string& message, const std::string& pointer = "") {
  const auto* e = std::get_if<InputError>(&r);
  ASSERT_NE(e, nullptr) << "accepted, expected an error on " << field;
  EXPECT_EQ(e->field, field) << e->message;
  EXPECT_EQ(e->message, message);
  EXPECT_EQ(e->pointer, pointer) << e->message;
}

RequestInput ExpectOk(const std::variant<RequestInput, InputError>& r) {
  const auto* e = std::get_if<InputError>(&r);
  EXPECT_EQ(e, nullptr) << (e ? e->field + ": " + e->message : "");
  return e ? RequestInput{} : std::get<RequestInput>(r);
}

TEST(AdminApiInput, ParametersAreReadAsTheirTypesThenChecked) {
  const auto validator = AdminApiValidator();
  ASSERT_TRUE(validator);
  const auto* runs = validator->Find("GET", "/api/v1/runs");
  ASSERT_NE(runs, nullptr);
  const auto ok = ExpectOk(Check(*runs, {}, "limit=2&status=failed&crawl_task_id=007", ""));
  EXPECT_EQ(ok.query, (json{{"limit", 2}, {"status", "failed"}, {"crawl_task_id", 7}}));
  ExpectError(Check(*runs, {}, "limit=0", ""), "limit", "limit must be at least 1");
  ExpectError(Check(*runs, {}, "limit=1001", ""), "limit", "limit must be at most 1000");
  ExpectError(Check(*runs, {}, "limit=", ""), "limit", R"(limit must be an integer, not "")");
  ExpectError(Check(*runs, {}, "before_id=99999999999999999999", ""), "before_id",
              R"(before_id must be an integer, not "99999999999999999999")");
  ExpectError(Check(*runs, {}, "status=done", ""), "status",
              R"(status must be one of pending, running, succeeded, failed, aborted, not "done")");
  ExpectError(Check(*runs, {}, "statuss=failed", ""), "statuss",
              "unknown query parameter 'statuss'");
  ExpectError(Check(*runs, {}, "status=failed&status=running", ""), "status",
              "query parameter 'status' is given more than once");

  const auto* letters = validator->Find("GET", "/api/v1/dead-letters");
  ASSERT_NE(letters, nullptr);
  const auto flags = ExpectOk(
      Check(*letters, {}, "include_purged=1&include_replayed=false&task=a%2Bb+c", ""));
  EXPECT_EQ(flags.query,
            (json{{"include_purged", true}, {"include_replayed", false}, {"task", "a+b c"}}));
  ExpectError(Check(*letters, {}, "include_purged=maybe", ""), "include_purged",
              R"(include_purged must be true or false, not "maybe")");
  ExpectError(Check(*letters, {}, "queue=", ""), "queue", "queue must not be empty");
  ExpectError(Check(*letters, {}, "error_class=" + std::string(1001, 'x'), ""), "error_class",
              "error_class must be at most 1000 characters");
  // format is not checked by the schema: the handler parses ISO-8601 (no offset = UTC).
  ExpectOk(Check(*letters, {}, "since=2024-06-01T00:00:00", ""));

  const auto* run = validator->Find("GET", "/api/v1/runs/{id}");
  ASSERT_NE(run, nullptr);
  EXPECT_EQ(ExpectOk(Check(*run, {"12"}, "", "")).path, (json{{"id", 12}}));
  ExpectError(Check(*run, {"x1"}, "", ""), "id", R"(id must be an integer, not "x1")");
  ExpectError(Check(*run, {"1.5"}, "", ""), "id", R"(id must be an integer, not "1.5")");
  ExpectError(Check(*run, {"-1"}, "", ""), "id", "id must be at least 1");
  ExpectError(Check(*run, {"1"}, "verbose=1", ""), "verbose",
              "unknown query parameter 'verbose'");

  const auto* health = validator->Find("GET", "/healthz");
  ASSERT_NE(health, nullptr);
  ExpectOk(Check(*health, {}, "", ""));
  ExpectError(Check(*health, {}, "x=1", ""), "x", "unknown query parameter 'x'");
}

TEST(AdminApiInput, BodiesAreCheckedNamingTheFieldAndItsPointer) {
  const auto validator = AdminApiValidator();
  ASSERT_TRUE(validator);
  const auto* site = validator->Find("POST", "/api/v1/site-analysis");
  ASSERT_NE(site, nullptr);
  const auto ok = ExpectOk(Check(*site, {}, "", R"({"data_source_id": 7, "theme_name": "t"})"));
  EXPECT_EQ(ok.body, (json{{"data_source_id", 7}, {"theme_name", "t"}}));
  ExpectError(Check(*site, {}, "", " \n"), "body", "a JSON object body is required");
  ExpectError(Check(*site, {}, "", "[1]"), "body", "body must be a JSON object");
  ExpectError(Check(*site, {}, "", R"({"data_source_id": 7})"), "theme_name",
              "theme_name is required", "/theme_name");
  ExpectError(Check(*site, {}, "", R"({"data_source_id": "7", "theme_name": "t"})"),
              "data_source_id", "data_source_id must be an integer", "/data_source_id");
  ExpectError(Check(*site, {}, "", R"({"data_source_id": 0, "theme_name": "t"})"),
              "data_source_id", "data_source_id must be at least 1", "/data_source_id");
  ExpectError(Check(*site, {}, "", json{{"data_source_id", 1}, {"theme_name", std::string(201, 'x')}}.dump()),
              "theme_name", "theme_name must be at most 200 characters", "/theme_name");
  // Characters, not bytes: 200 two-byte characters are within maxLength.
  std::string wide;
  for (int i = 0; i < 200; ++i) wide += "\xc3\xa9";
  ExpectOk(Check(*site, {}, "", json{{"data_source_id", 1}, {"theme_name", wide}}.dump()));
  ExpectError(Check(*site, {}, "", R"({"data_source_id": 1, "theme_name": "t", "x/y": 1})"),
              "x/y", "unknown field 'x~1y'", "/x~1y");
  const auto bad_json = Check(*site, {}, "", "{nope");
  const auto* e = std::get_if<InputError>(&bad_json);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->field, "body");
  EXPECT_EQ(e->message.rfind("body is not valid JSON: ", 0), 0u) << e->message;
  // Nesting is bounded before anything recurses over the body.
  const auto too_deep =
      Check(*site, {}, "", std::string(100000, '[') + std::string(100000, ']'));
  e = std::get_if<InputError>(&too_deep);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->field, "body");
  EXPECT_NE(e->message.find("nest"), std::string::npos) << e->message;

  const auto* replay = validator->Find("POST", "/api/v1/dead-letters/replay");
  ASSERT_NE(replay, nullptr);
  ExpectError(Check(*replay, {}, "", R"({"ids": [3, "a"]})"), "ids", "ids/1 must be an integer",
              "/ids/1");
  ExpectError(Check(*replay, {}, "", R"({"ids": [0]})"), "ids", "ids/0 must be at least 1",
              "/ids/0");
  ExpectError(Check(*replay, {}, "", R"({"all": null})"), "all", "all must be true or false",
              "/all");
  ExpectError(Check(*replay, {}, "", R"({"since": ""})"), "since", "since must not be empty",
              "/since");

  const auto* one = validator->Find("POST", "/api/v1/dead-letters/{id}/replay");
  ASSERT_NE(one, nullptr);
  EXPECT_EQ(ExpectOk(Check(*one, {"4"}, "", "")).body, json::object()) << "the body is optional";
  ExpectError(Check(*one, {"4"}, "", R"({"force": "yes"})"), "force",
              "force must be true or false", "/force");
}

// ---- OpenAPI 3.0 into JSON Schema -------------------------------------------------------------

json Doc(const json& paths, const json& schemas = json::object()) {
  return {{"openapi", "3.0.3"}, {"paths", paths}, {"components", {{"schemas", schemas}}}};
}

json JsonBody(const json& schema, bool required = true) {
  return {{"required", required}, {"content", {{"application/json", {{"schema", schema}}}}}};
}

TEST(AdminApiInput, RefsAreResolvedAndNullableAllowsNull) {
  const json doc = Doc(
      {{"/things", {{"post", {{"requestBody", JsonBody({{"$ref", "#/components/schemas/Thing"}})}}}}}},
      {{"Thing",
        {{"type", "object"},
         {"required", {"part"}},
         {"properties",
          {{"part", {{"$ref", "#/components/schemas/Part"}}},
           {"note", {{"type", "string"}, {"nullable", true}}},
           {"kind", {{"type", "string"}, {"enum", {"a", "b"}}, {"nullable", true}}},
           {"size", {{"type", "number"}, {"minimum", 0}, {"exclusiveMinimum", true}}}}}}},
       {"Part",
        {{"type", "object"},
         {"additionalProperties", false},
         {"properties", {{"n", {{"type", "integer"}, {"maximum", 3}}}}}}}});
  auto compiled = RequestValidator::FromOpenApi(doc);
  ASSERT_TRUE(compiled.ok()) << compiled.error().message();
  const auto* v = (*compiled)->Find("POST", "/things");
  ASSERT_NE(v, nullptr);
  ExpectOk(Check(*v, {}, "", R"({"part": {"n": 3}, "note": null, "kind": null, "size": 0.5})"));
  ExpectError(Check(*v, {}, "", R"({"part": {"n": 4}})"), "part", "part/n must be at most 3",
              "/part/n");
  ExpectError(Check(*v, {}, "", R"({"part": {"m": 1}})"), "part", "unknown field 'part/m'",
              "/part/m");
  ExpectError(Check(*v, {}, "", R"({"part": {}, "kind": "c"})"), "kind",
              "kind must be one of a, b, null", "/kind");
  ExpectError(Check(*v, {}, "", R"({"part": {}, "size": 0})"), "size",
              "size must be greater than 0", "/size");
  ExpectError(Check(*v, {}, "", R"({"part": null})"), "part", "part must be a JSON object",
              "/part");
}

TEST(AdminApiInput, WhatCannotBeCheckedIsRefusedAtStartUp) {
  const json recursive = Doc(
      {{"/t", {{"post", {{"requestBody", JsonBody({{"$ref", "#/components/schemas/Node"}})}}}}}},
      {{"Node",
        {{"type", "object"},
         {"properties", {{"next", {{"$ref", "#/components/schemas/Node"}}}}}}}});
  auto r = RequestValidator::FromOpenApi(recursive);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("POST /t"), std::string::npos) << r.error().message();
  EXPECT_NE(r.error().message().find("refers to itself"), std::string::npos);

  const json header = Doc({{"/t",
                            {{"get",
                              {{"parameters",
                                {{{"name", "X-Tenant"}, {"in", "header"},
                                  {"schema", {{"type", "string"}}}}}}}}}}});
  EXPECT_FALSE(RequestValidator::FromOpenApi(header).ok());

  const json undeclared = Doc({{"/t/{id}", {{"get", json::object()}}}});
  EXPECT_FALSE(RequestValidator::FromOpenApi(undeclared).ok());

  const json dangling = Doc(
      {{"/t", {{"post", {{"requestBody", JsonBody({{"$ref", "#/components/schemas/Nope"}})}}}}}});
  EXPECT_FALSE(RequestValidator::FromOpenApi(dangling).ok());

  const json form = Doc(
      {{"/t",
        {{"post",
          {{"requestBody",
            {{"content", {{"application/x-www-form-urlencoded", {{"schema", json::object()}}}}}}}}}}}});
  EXPECT_FALSE(RequestValidator::FromOpenApi(form).ok());
}

TEST(AdminApiInput, PathItemParametersApplyAndOperationsOverrideThem) {
  const json doc = Doc(
      {{"/t/{id}",
        {{"parameters",
          {{{"name", "id"}, {"in", "path"}, {"required", true}, {"schema", {{"type", "integer"}}}},
           {{"name", "n"}, {"in", "query"}, {"schema", {{"type", "integer"}}}}}},
         {"get",
          {{"parameters",
            {{{"name", "n"}, {"in", "query"}, {"required", true},
              {"schema", {{"type", "boolean"}}}}}}}}}}});
  auto compiled = RequestValidator::FromOpenApi(doc);
  ASSERT_TRUE(compiled.ok()) << compiled.error().message();
  const auto* v = (*compiled)->Find("GET", "/t/{id}");
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(ExpectOk(Check(*v, {"5"}, "n=true", "")).query, (json{{"n", true}}));
  ExpectError(Check(*v, {"5"}, "", ""), "n", "n is required");
  ExpectError(Check(*v, {"5"}, "n=3", ""), "n", R"(n must be true or false, not "3")");
  ExpectError(Check(*v, {"five"}, "n=true", ""), "id", R"(id must be an integer, not "five")");
}

}  // namespace
}  // namespace celeriac::orchestrator::api
