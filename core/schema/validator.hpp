#pragma once
// SchemaValidator: checks a JSON document against a JSON Schema (draft 7, via valijson).
//
// Each violation is reported with the JSON Pointer (RFC 6901) of the offending location in the
// document, e.g. "/pages/detail/item/fields/title: missing required property 'css'", so the
// person who wrote the document can find it. Compile a schema once and reuse the validator:
// Validate() is const and thread-safe.

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/result.hpp"

namespace celeriac::schema {

struct Violation {
  std::string pointer;  // "" is the document root
  std::string message;
  // When the rule is about one property of the object at `pointer`, missing (required) or not
  // allowed (additionalProperties): its name, so a caller can name the field itself.
  std::string property;
};

class SchemaValidator {
 public:
  // Fails if `schema` is not a usable JSON Schema.
  static Result<std::shared_ptr<const SchemaValidator>> Compile(const nlohmann::json& schema,
                                                                std::string name);
  ~SchemaValidator();

  // All violations, deepest first; empty if the document is valid.
  std::vector<Violation> Check(const nlohmann::json& document) const;

  // Ok, or an InvalidArgument error naming the schema and the first (deepest) violation.
  Status Validate(const nlohmann::json& document) const;

  const std::string& name() const { return name_; }

 private:
  struct Impl;
  SchemaValidator(std::unique_ptr<Impl> impl, std::string name);
  std::unique_ptr<Impl> impl_;
  std::string name_;
};

// valijson's context ("<root>", "[pages]", "[0]") turned into a JSON Pointer, reading the
// document to tell array indexes from object keys that look like numbers.
std::string ContextToPointer(const std::vector<std::string>& context,
                             const nlohmann::json& document);

}  // namespace celeriac::schema
