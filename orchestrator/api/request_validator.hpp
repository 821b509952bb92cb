#pragma once
// RequestValidator: the admin API's input (path and query parameters, JSON bodies) checked
// against openapi.json's own schemas, through core/schema, before a handler runs.
//
// Compiled once, at start-up: for each operation of the document, a validator of its path
// parameters, one of its query parameters and, when it takes one, one of its requestBody's
// application/json schema. Each parameter location is checked as one object, {"id": 5}, whose
// properties are the parameters' schemas, `required` the required ones, and no others: an
// unknown query parameter is refused (so a misspelt filter never widens a replay or a purge).
// OpenAPI 3.0 schemas become JSON Schema (draft 7) on the way:
//   - `$ref` (to #/components/..., of parameters, request bodies and schemas) is inlined; a
//     schema that refers to itself is refused at start-up.
//   - `nullable: true` adds "null" to `type` (and to `enum`); boolean `exclusiveMinimum` and
//     `exclusiveMaximum` (3.0) become the numbers of draft 7.
//   - `format` is not checked: valijson's date-time is RFC 3339 (offset required) while the API
//     takes ISO-8601 with an optional offset (none = UTC), as the document says; the handlers
//     parse times and say so when one does not parse.
// A parameter in a header or cookie, one described by `content`, or a body that is not
// application/json cannot be checked here, and is refused at start-up rather than let through.
//
// Parameters arrive as text and are read as their schema's type before the check, as OpenAPI
// servers do: an integer or a number when the whole text is one, a boolean from true / false
// (or 1 / 0); anything else stays a string, for the type rule to name. A query parameter given
// twice is refused. Bodies are parsed with ParseUntrustedJson (nesting bounded) whatever their
// Content-Type; a blank body is no body, refused when the requestBody is required.
//
// A request that breaks a rule gets one InputError: the field at fault (the parameter, the
// body's top-level property, or "body"), for a body the JSON Pointer of the value, and a
// message naming both the field and the rule ("limit must be at most 1000").
//
// Threading: immutable once built; Check() may run on any number of threads at once.

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/result.hpp"
#include "core/schema/validator.hpp"

namespace celeriac::orchestrator::api {

// A request's input once checked: parameters as their schema's types, the body as sent ({}
// when the operation takes none or none was sent).
struct RequestInput {
  nlohmann::json path = nlohmann::json::object();   // {"id": 5}
  nlohmann::json query = nlohmann::json::object();  // {"limit": 10, "status": "failed"}
  nlohmann::json body = nlohmann::json::object();
};

// Why a request's input is refused (400).
struct InputError {
  std::string field;    // "limit", "id", "theme_name", "body"
  std::string pointer;  // in the body, the JSON Pointer of the value at fault ("/ids/0"); else ""
  std::string message;  // names the field and the rule: "ids/0 must be at least 1"
};

// What arrived, before any check.
struct RawInput {
  std::vector<std::string> path_values;  // the routed text of each path parameter, in path order
  std::string_view query;                // the query string after '?', still percent-encoded
  std::string_view body;
};

// One operation's rules, compiled.
class OperationValidator {
 public:
  std::variant<RequestInput, InputError> Check(const RawInput& raw) const;

  const std::string& method() const { return method_; }  // "GET"
  const std::string& path() const { return path_; }      // "/api/v1/runs/{id}"
  const std::vector<std::string>& path_parameters() const { return path_names_; }
  std::vector<std::string> query_parameters() const;
  bool has_body() const { return body_ != nullptr; }

 private:
  friend class RequestValidator;

  // One location's schema (an object of parameters, or the body), and its validator.
  struct Rules {
    nlohmann::json schema;
    std::shared_ptr<const schema::SchemaValidator> validator;
  };

  std::optional<InputError> CheckParameters(const Rules& rules,
                                            const nlohmann::json& values) const;

  std::string method_;
  std::string path_;
  std::vector<std::string> path_names_;
  std::unique_ptr<Rules> path_rules_;
  std::unique_ptr<Rules> query_rules_;
  std::unique_ptr<Rules> body_;
  bool body_required_ = false;
};

class RequestValidator {
 public:
  // A validator for every operation of `openapi` (an OpenAPI 3.0 document). InvalidArgument,
  // naming the operation, for what cannot be checked (see above) or a schema core/schema
  // refuses.
  static Result<std::shared_ptr<const RequestValidator>> FromOpenApi(
      const nlohmann::json& openapi);
  // The one for the admin API's openapi.json, as compiled into the binary.
  static Result<std::shared_ptr<const RequestValidator>> ForAdminApi();

  // The operation's validator, or null when the document has no such operation.
  const OperationValidator* Find(std::string_view method, std::string_view path) const;
  const std::vector<std::unique_ptr<OperationValidator>>& operations() const {
    return operations_;
  }

 private:
  std::vector<std::unique_ptr<OperationValidator>> operations_;
};

}  // namespace celeriac::orchestrator::api
