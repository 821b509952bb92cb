#include "orchestrator/api/request_validator.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <utility>

#include "core/base/text.hpp"
#include "core/json/untrusted_json.hpp"
#include "orchestrator/api/openapi.hpp"

namespace celeriac::orchestrator::api {
namespace {

using Json = nlohmann::json;

constexpr std::array<std::string_view, 8> kMethods = {"get",     "put",  "post",  "delete",
                                                      "options", "head", "patch", "trace"};

// What the document asks for that cannot be checked; FromOpenApi turns it into its Error.
struct DocumentError {
  std::string message;
};

// The node a local `$ref` ("#/components/schemas/Run") names.
const Json& Follow(const Json& doc, const Json& ref) {
  const std::string text = ref.is_string() ? ref.get<std::string>() : ref.dump();
  if (text.rfind("#/", 0) != 0) throw DocumentError{"only local $refs (#/...) are read: " + text};
  try {
    const Json::json_pointer pointer(text.substr(1));
    if (doc.contains(pointer)) return doc.at(pointer);
  } catch (const Json::exception&) {
  }
  throw DocumentError{"unresolved $ref " + text};
}

// A parameter or request body, through any $refs to it.
const Json& Deref(const Json& doc, const Json& node) {
  const Json* at = &node;
  for (int hops = 0; at->is_object() && at->contains("$ref"); ++hops) {
    if (hops == 16) throw DocumentError{"a $ref chain too long at " + node.dump()};
    at = &Follow(doc, (*at)["$ref"]);
  }
  return *at;
}

// An OpenAPI 3.0 schema as draft-7 JSON Schema, $refs inlined (request_validator.hpp).
Json ToJsonSchema(const Json& doc, const Json& node, std::vector<std::string>& refs) {
  if (!node.is_object()) return node;  // true / false, or what the validator will refuse
  if (const auto ref = node.find("$ref"); ref != node.end()) {
    // Siblings of $ref are ignored in OpenAPI 3.0, as in draft 7.
    const std::string name = ref->is_string() ? ref->get<std::string>() : ref->dump();
    if (std::find(refs.begin(), refs.end(), name) != refs.end()) {
      throw DocumentError{"schema " + name + " refers to itself"};
    }
    refs.push_back(name);
    Json out = ToJsonSchema(doc, Follow(doc, *ref), refs);
    refs.pop_back();
    return out;
  }
  auto each = [&](const Json& list) {
    Json out = Json::array();
    for (const auto& item : list) out.push_back(ToJsonSchema(doc, item, refs));
    return out;
  };
  Json out = Json::object();
  for (const auto& [key, value] : node.items()) {
    if ((key == "properties" || key == "patternProperties") && value.is_object()) {
      Json map = Json::object();
      for (const auto& [name, schema] : value.items()) map[name] = ToJsonSchema(doc, schema, refs);
      out[key] = std::move(map);
    } else if (key == "items" || key == "additionalItems" || key == "additionalProperties" ||
               key == "not") {
      out[key] = value.is_array() ? each(value) : ToJsonSchema(doc, value, refs);
    } else if ((key == "allOf" || key == "anyOf" || key == "oneOf") && value.is_array()) {
      out[key] = each(value);
    } else if (key == "nullable" || key == "format") {
      // nullable: below; format: not checked (request_validator.hpp).
    } else if ((key == "exclusiveMinimum" || key == "exclusiveMaximum") && value.is_boolean()) {
      // below
    } else {
      out[key] = value;
    }
  }
  if (const auto nullable = node.find("nullable"); nullable != node.end() && *nullable == true) {
    if (out.contains("type") && out["type"].is_string()) out["type"] = {out["type"], "null"};
    if (out.contains("enum") && out["enum"].is_array()) out["enum"].push_back(nullptr);
  }
  for (const auto& [flag, bound] : {std::pair{"exclusiveMinimum", "minimum"},
                                    std::pair{"exclusiveMaximum", "maximum"}}) {
    const auto it = node.find(flag);
    if (it != node.end() && *it == true && out.contains(bound)) {
      out[flag] = out[bound];
      out.erase(bound);
    }
  }
  return out;
}

// "/api/v1/dead-letters/{id}/replay" -> {"id"}
std::vector<std::string> TemplateNames(const std::string& path) {
  std::vector<std::string> names;
  for (size_t open = path.find('{'); open != std::string::npos; open = path.find('{', open)) {
    const size_t close = path.find('}', open);
    if (close == std::string::npos) throw DocumentError{"unclosed '{' in path " + path};
    names.push_back(path.substr(open + 1, close - open - 1));
    open = close;
  }
  return names;
}

std::shared_ptr<const schema::SchemaValidator> CompileOrThrow(const Json& schema,
                                                              const std::string& name) {
  auto compiled = schema::SchemaValidator::Compile(schema, name);
  if (!compiled) throw DocumentError{compiled.error().message()};
  return *compiled;
}

// ---- coercion and messages ------------------------------------------------------------------

// The schema's type, the first one that is not "null".
std::string TypeOf(const Json& schema) {
  const auto it = schema.find("type");
  if (it == schema.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array()) {
    for (const auto& t : *it) {
      if (t.is_string() && t != "null") return t.get<std::string>();
    }
  }
  return "";
}

// A parameter's text as its schema's type; text that is not one stays a string.
Json Coerce(const std::string& text, const Json& schema) {
  const std::string type = TypeOf(schema);
  const char* begin = text.data();
  const char* end = text.data() + text.size();
  if (type == "integer" || type == "number") {
    int64_t n = 0;
    if (const auto [p, ec] = std::from_chars(begin, end, n); ec == std::errc() && p == end) {
      return n;
    }
    double d = 0;
    if (const auto [p, ec] = std::from_chars(begin, end, d);
        type == "number" && ec == std::errc() && p == end && std::isfinite(d)) {
      return d;
    }
  } else if (type == "boolean") {
    if (text == "true" || text == "1") return true;
    if (text == "false" || text == "0") return false;
  }
  return text;
}

std::string Unescape(std::string_view token) {
  std::string out;
  for (size_t i = 0; i < token.size(); ++i) {
    if (token[i] == '~' && i + 1 < token.size() && (token[i + 1] == '0' || token[i + 1] == '1')) {
      out += token[i + 1] == '0' ? '~' : '/';
      ++i;
    } else {
      out += token[i];
    }
  }
  return out;
}

std::vector<std::string> Tokens(std::string_view pointer) {
  std::vector<std::string> out;
  while (!pointer.empty()) {
    pointer.remove_prefix(1);  // the '/'
    const size_t slash = pointer.find('/');
    out.push_back(Unescape(pointer.substr(0, slash)));
    pointer = slash == std::string_view::npos ? std::string_view() : pointer.substr(slash);
  }
  return out;
}

std::string Escape(std::string_view token) {
  std::string out;
  for (char c : token) out += c == '~' ? "~0" : c == '/' ? "~1" : std::string(1, c);
  return out;
}

// The schema that rules the value at `tokens` of a document `schema` validates, or null.
const Json* SchemaAt(const Json& schema, const std::vector<std::string>& tokens) {
  const Json* at = &schema;
  for (const auto& token : tokens) {
    if (!at->is_object()) return nullptr;
    if (const auto props = at->find("properties");
        props != at->end() && props->is_object() && props->contains(token)) {
      at = &(*props)[token];
    } else if (const auto items = at->find("items"); items != at->end() && items->is_object()) {
      at = &*items;
    } else if (const auto more = at->find("additionalProperties");
               more != at->end() && more->is_object()) {
      at = &*more;
    } else {
      return nullptr;
    }
  }
  return at;
}

std::string TypeNames(const Json& schema) {
  const auto it = schema.find("type");
  if (it == schema.end()) return "of another type";
  std::vector<std::string> types;
  if (it->is_string()) types.push_back(it->get<std::string>());
  if (it->is_array()) {
    for (const auto& t : *it) {
      if (t.is_string()) types.push_back(t.get<std::string>());
    }
  }
  std::string out;
  for (const auto& t : types) {
    if (!out.empty()) out += " or ";
    out += t == "integer" ? "an integer"
           : t == "number" ? "a number"
           : t == "string" ? "a string"
           : t == "boolean" ? "true or false"
           : t == "array" ? "an array"
           : t == "object" ? "a JSON object"
           : t;  // "null"
  }
  return out.empty() ? "of another type" : out;
}

// The schema's value for `keyword` as text: 1000, "a".
std::string Bound(const Json& schema, const char* keyword) {
  const auto it = schema.find(keyword);
  return it == schema.end() ? "?" : it->dump();
}

bool StartsWith(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}

// The rule a violation broke, in words, from valijson's message and the schema's values.
std::string Rule(const std::string& message, const Json* s) {
  static const Json kNone = Json::object();
  const Json& schema = s != nullptr ? *s : kNone;
  if (StartsWith(message, "Value type not permitted")) return "must be " + TypeNames(schema);
  if (StartsWith(message, "Expected number greater than or equal to")) {
    return "must be at least " + Bound(schema, "minimum");
  }
  if (StartsWith(message, "Expected number greater than")) {
    return "must be greater than " + Bound(schema, "exclusiveMinimum");
  }
  if (StartsWith(message, "Expected number less than or equal to")) {
    return "must be at most " + Bound(schema, "maximum");
  }
  if (StartsWith(message, "Expected number less than")) {
    return "must be less than " + Bound(schema, "exclusiveMaximum");
  }
  if (StartsWith(message, "String should be no fewer than")) {
    return schema.value("minLength", 0) == 1
               ? "must not be empty"
               : "must be at least " + Bound(schema, "minLength") + " characters";
  }
  if (StartsWith(message, "String should be no more than")) {
    return "must be at most " + Bound(schema, "maxLength") + " characters";
  }
  if (StartsWith(message, "Array should contain no fewer than")) {
    return "must have at least " + Bound(schema, "minItems") + " items";
  }
  if (StartsWith(message, "Array should contain no more than")) {
    return "must have at most " + Bound(schema, "maxItems") + " items";
  }
  if (StartsWith(message, "Failed to match against any enum values") &&
      schema.contains("enum") && schema["enum"].is_array()) {
    std::string list;
    for (const auto& v : schema["enum"]) {
      list += (list.empty() ? "" : ", ") + (v.is_string() ? v.get<std::string>() : v.dump());
    }
    return "must be one of " + list;
  }
  if (StartsWith(message, "Failed to match regex")) {
    return "must match " + Bound(schema, "pattern");
  }
  return "is invalid: " + message;  // valijson's own words for the rarer rules
}

bool IsTypeOrEnumRule(const std::string& message) {
  return StartsWith(message, "Value type not permitted") ||
         StartsWith(message, "Failed to match against any enum values");
}

bool IsMissing(const schema::Violation& v) {
  return StartsWith(v.message, "Missing required property");
}

// A body's violation: the field is the top-level property it is in ("body" for the root).
InputError BodyError(const schema::Violation& v, const Json& schema) {
  InputError e;
  e.pointer = v.pointer;
  if (!v.property.empty()) e.pointer += "/" + Escape(v.property);
  const auto tokens = Tokens(e.pointer);
  e.field = tokens.empty() ? "body" : tokens.front();
  const std::string subject = e.pointer.empty() ? "body" : e.pointer.substr(1);
  if (!v.property.empty()) {
    e.message = IsMissing(v) ? subject + " is required" : "unknown field '" + subject + "'";
  } else {
    e.message = subject + " " + Rule(v.message, SchemaAt(schema, tokens));
  }
  return e;
}

}  // namespace

// ---- OperationValidator ---------------------------------------------------------------------

std::vector<std::string> OperationValidator::query_parameters() const {
  std::vector<std::string> names;
  for (const auto& [name, _] : query_rules_->schema["properties"].items()) names.push_back(name);
  return names;
}

std::optional<InputError> OperationValidator::CheckParameters(const Rules& rules,
                                                              const Json& values) const {
  const auto violations = rules.validator->Check(values);
  if (violations.empty()) return std::nullopt;
  const schema::Violation& v = violations.front();
  if (!v.property.empty()) {
    // Only the query can hold what is not declared: the router names the path's parameters.
    return InputError{v.property, "",
                      IsMissing(v) ? v.property + " is required"
                                   : "unknown query parameter '" + v.property + "'"};
  }
  const auto tokens = Tokens(v.pointer);
  if (tokens.empty()) return InputError{"", "", "parameters are invalid: " + v.message};
  const std::string& name = tokens.front();
  std::string message = name + " " + Rule(v.message, SchemaAt(rules.schema, tokens));
  const auto value = values.find(name);
  if (IsTypeOrEnumRule(v.message) && value != values.end() && value->is_string()) {
    message += ", not " + QuoteJson(nlohmann::ordered_json(value->get<std::string>()), 64);
  }
  return InputError{name, "", std::move(message)};
}

std::variant<RequestInput, InputError> OperationValidator::Check(const RawInput& raw) const {
  RequestInput in;
  const Json& path_schemas = path_rules_->schema["properties"];
  for (size_t i = 0; i < path_names_.size(); ++i) {
    const std::string text = i < raw.path_values.size() ? raw.path_values[i] : "";
    in.path[path_names_[i]] = Coerce(text, path_schemas[path_names_[i]]);
  }
  if (auto e = CheckParameters(*path_rules_, in.path)) return *e;

  // The query string as sent (httplib's params also hold a form-encoded body's fields).
  const Json& query_schemas = query_rules_->schema["properties"];
  std::string_view query = raw.query;
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty()) continue;
    const auto eq = pair.find('=');
    std::string name = PercentDecode(pair.substr(0, eq), /*plus_is_space=*/true);
    std::string text = eq == std::string_view::npos
                           ? std::string()
                           : PercentDecode(pair.substr(eq + 1), /*plus_is_space=*/true);
    if (in.query.contains(name)) {
      return InputError{name, "", "query parameter '" + name + "' is given more than once"};
    }
    const auto schema = query_schemas.find(name);
    in.query[name] = schema == query_schemas.end() ? Json(text) : Coerce(text, *schema);
  }
  if (auto e = CheckParameters(*query_rules_, in.query)) return *e;

  if (!body_) return in;
  const bool blank = std::all_of(raw.body.begin(), raw.body.end(), [](char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
  });
  if (blank) {
    if (body_required_) return InputError{"body", "", "a JSON object body is required"};
    return in;
  }
  auto parsed = ParseUntrustedJson(raw.body);
  if (!parsed) return InputError{"body", "", "body is not valid JSON: " + parsed.error().message()};
  const auto violations = body_->validator->Check(*parsed);
  if (!violations.empty()) return BodyError(violations.front(), body_->schema);
  in.body = std::move(*parsed);
  return in;
}

// ---- RequestValidator -----------------------------------------------------------------------

Result<std::shared_ptr<const RequestValidator>> RequestValidator::FromOpenApi(
    const Json& doc) {
  auto out = std::make_shared<RequestValidator>();
  std::string where = "openapi.json";
  try {
    const auto paths = doc.find("paths");
    if (paths == doc.end() || !paths->is_object()) throw DocumentError{"no paths"};
    for (const auto& [path, item_ref] : paths->items()) {
      const Json& item = Deref(doc, item_ref);
      for (const std::string_view method : kMethods) {
        const auto op = item.find(std::string(method));
        if (op == item.end()) continue;
        auto v = std::make_unique<OperationValidator>();
        for (char c : method) v->method_ += static_cast<char>(c - 'a' + 'A');
        v->path_ = path;
        where = v->method_ + " " + path;
        v->path_names_ = TemplateNames(path);

        // Parameters of the path item, then the operation's, which override them by name and
        // location.
        std::vector<const Json*> parameters;
        for (const Json* list : {item.contains("parameters") ? &item["parameters"] : nullptr,
                                 op->contains("parameters") ? &(*op)["parameters"] : nullptr}) {
          if (list == nullptr) continue;
          for (const auto& p : *list) {
            const Json* param = &Deref(doc, p);
            std::erase_if(parameters, [&](const Json* q) {
              return q->value("name", "") == param->value("name", "") &&
                     q->value("in", "") == param->value("in", "");
            });
            parameters.push_back(param);
          }
        }
        Json path_object = {{"type", "object"},
                            {"properties", Json::object()},
                            {"required", Json::array()},
                            {"additionalProperties", false}};
        Json query_object = path_object;
        for (const Json* param : parameters) {
          const std::string name = param->value("name", "");
          const std::string in = param->value("in", "");
          if (in != "path" && in != "query") {
            throw DocumentError{"parameter '" + name + "' in " + in + " cannot be checked"};
          }
          if (!param->contains("schema")) {
            throw DocumentError{"parameter '" + name + "' has no schema"};
          }
          std::vector<std::string> refs;
          Json& object = in == "path" ? path_object : query_object;
          object["properties"][name] = ToJsonSchema(doc, (*param)["schema"], refs);
          if (in == "path" || param->value("required", false)) object["required"].push_back(name);
        }
        std::vector<std::string> declared;
        for (const auto& [name, _] : path_object["properties"].items()) declared.push_back(name);
        std::vector<std::string> named = v->path_names_;
        std::sort(named.begin(), named.end());
        if (declared != named) {
          throw DocumentError{"the path's parameters and the declared path parameters differ"};
        }
        if (path_object["required"].empty()) path_object.erase("required");
        if (query_object["required"].empty()) query_object.erase("required");
        v->path_rules_ = std::make_unique<OperationValidator::Rules>(OperationValidator::Rules{
            path_object, CompileOrThrow(path_object, where + " path parameters")});
        v->query_rules_ = std::make_unique<OperationValidator::Rules>(OperationValidator::Rules{
            query_object, CompileOrThrow(query_object, where + " query parameters")});

        if (const auto body = op->find("requestBody"); body != op->end()) {
          const Json& request_body = Deref(doc, *body);
          const auto content = request_body.find("content");
          if (content == request_body.end() || !content->contains("application/json") ||
              !(*content)["application/json"].contains("schema")) {
            throw DocumentError{"a requestBody without an application/json schema cannot be "
                                "checked"};
          }
          std::vector<std::string> refs;
          Json schema = ToJsonSchema(doc, (*content)["application/json"]["schema"], refs);
          auto validator = CompileOrThrow(schema, where + " body");
          v->body_ = std::make_unique<OperationValidator::Rules>(
              OperationValidator::Rules{std::move(schema), std::move(validator)});
          v->body_required_ = request_body.value("required", false);
        }
        out->operations_.push_back(std::move(v));
      }
    }
  } catch (const DocumentError& e) {
    return Error(ErrorCode::kInvalidArgument, where + ": " + e.message);
  } catch (const Json::exception& e) {
    return Error(ErrorCode::kInvalidArgument, where + ": " + e.what());
  }
  return std::shared_ptr<const RequestValidator>(std::move(out));
}

Result<std::shared_ptr<const RequestValidator>> RequestValidator::ForAdminApi() {
  // The document is compiled in, so once per process is enough.
  static const Result<std::shared_ptr<const RequestValidator>> kCompiled =
      []() -> Result<std::shared_ptr<const RequestValidator>> {
    for (const auto& file : EmbeddedOpenApi()) {
      if (file.path != "api/openapi.json") continue;
      auto doc = ParseUntrustedJson(file.content);
      if (!doc) return Error(ErrorCode::kInternal, "openapi.json: " + doc.error().message());
      return FromOpenApi(*doc);
    }
    return Error(ErrorCode::kInternal, "openapi.json was not compiled in");
  }();
  return kCompiled;
}

const OperationValidator* RequestValidator::Find(std::string_view method,
                                                 std::string_view path) const {
  for (const auto& op : operations_) {
    if (op->method() == method && op->path() == path) return op.get();
  }
  return nullptr;
}

}  // namespace celeriac::orchestrator::api
