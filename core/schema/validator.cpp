#include "core/schema/validator.hpp"

#include <algorithm>
#include <initializer_list>
#include <string_view>

#include <fmt/format.h>
#include <valijson/adapters/nlohmann_json_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validation_results.hpp>
#include <valijson/validator.hpp>

namespace celeriac::schema {

struct SchemaValidator::Impl {
  nlohmann::json source;  // keeps the adapter's referents alive
  valijson::Schema schema;
};

SchemaValidator::SchemaValidator(std::unique_ptr<Impl> impl, std::string name)
    : impl_(std::move(impl)), name_(std::move(name)) {}

SchemaValidator::~SchemaValidator() = default;

Result<std::shared_ptr<const SchemaValidator>> SchemaValidator::Compile(
    const nlohmann::json& schema, std::string name) {
  auto impl = std::make_unique<Impl>();
  impl->source = schema;
  try {
    valijson::SchemaParser parser(valijson::SchemaParser::kDraft7);
    valijson::adapters::NlohmannJsonAdapter adapter(impl->source);
    parser.populateSchema(adapter, impl->schema);
  } catch (const std::exception& e) {
    return Error(ErrorCode::kInvalidArgument,
                 fmt::format("schema {} cannot be compiled: {}", name, e.what()));
  }
  return std::shared_ptr<const SchemaValidator>(
      new SchemaValidator(std::move(impl), std::move(name)));
}

namespace {

// RFC 6901 escaping of one reference token.
std::string EscapeToken(std::string_view token) {
  std::string out;
  for (char c : token) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out += c;
    }
  }
  return out;
}

// The property valijson's messages for `required` and `additionalProperties` name, quoted at
// their end: "Missing required property 'css'.", "Object contains a property that could not be
// validated using 'properties' or 'additionalProperties' constraints: 'colour'.".
std::string NamedProperty(std::string_view message) {
  for (const std::string_view prefix :
       {std::string_view("Missing required property '"),
        std::string_view("Object contains a property that could not be validated using "
                         "'properties' or 'additionalProperties' constraints: '")}) {
    if (message.size() >= prefix.size() + 2 && message.substr(0, prefix.size()) == prefix &&
        message.substr(message.size() - 2) == "'.") {
      return std::string(message.substr(prefix.size(), message.size() - prefix.size() - 2));
    }
  }
  return "";
}

}  // namespace

std::string ContextToPointer(const std::vector<std::string>& context,
                             const nlohmann::json& document) {
  std::string pointer;
  const nlohmann::json* node = &document;
  for (const auto& part : context) {
    if (part.size() < 2 || part.front() != '[' || part.back() != ']') continue;  // "<root>"
    const std::string token = part.substr(1, part.size() - 2);
    pointer += "/" + EscapeToken(token);
    if (node == nullptr) continue;
    if (node->is_object()) {
      auto it = node->find(token);
      node = it == node->end() ? nullptr : &*it;
    } else if (node->is_array()) {
      size_t index = 0;
      const bool numeric = !token.empty() && std::all_of(token.begin(), token.end(), ::isdigit);
      if (numeric) index = std::stoul(token);
      node = numeric && index < node->size() ? &(*node)[index] : nullptr;
    } else {
      node = nullptr;
    }
  }
  return pointer;
}

std::vector<Violation> SchemaValidator::Check(const nlohmann::json& document) const {
  valijson::Validator validator(valijson::Validator::kStrongTypes);
  valijson::ValidationResults results;
  valijson::adapters::NlohmannJsonAdapter adapter(document);
  std::vector<Violation> out;
  try {
    if (validator.validate(impl_->schema, adapter, &results)) return out;
  } catch (const std::exception& e) {
    // valijson throws for what it cannot evaluate (a pattern std::regex refuses, say).
    out.push_back({"", std::string("cannot be checked: ") + e.what(), ""});
    return out;
  }
  std::vector<std::pair<size_t, Violation>> ranked;
  for (const auto& e : results) {
    ranked.push_back({e.context.size(), {ContextToPointer(e.context, document), e.description,
                                         NamedProperty(e.description)}});
  }
  // Deepest first: a failure inside a property is more useful than "object is invalid".
  std::stable_sort(ranked.begin(), ranked.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  for (auto& [depth, v] : ranked) out.push_back(std::move(v));
  return out;
}

Status SchemaValidator::Validate(const nlohmann::json& document) const {
  const auto violations = Check(document);
  if (violations.empty()) return Ok();
  const auto& first = violations.front();
  return Error(ErrorCode::kInvalidArgument,
               fmt::format("{} is invalid at {}: {}", name_,
                           first.pointer.empty() ? "/" : first.pointer, first.message),
               /*retryable=*/false);
}

}  // namespace celeriac::schema
