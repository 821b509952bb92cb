#include "schemas/schemas.hpp"

#include <map>
#include <mutex>

#include <fmt/format.h>

namespace celeriac::schemas {
namespace {

constexpr std::string_view kSuffix = ".schema.json";

std::string NameOf(std::string_view path) {
  return std::string(path.substr(0, path.size() - kSuffix.size()));
}

}  // namespace

std::vector<std::string> Names() {
  std::vector<std::string> out;
  for (const auto& f : EmbeddedSchemas()) out.push_back(NameOf(f.path));
  return out;
}

Result<std::shared_ptr<const schema::SchemaValidator>> Get(const std::string& name) {
  static std::mutex mutex;
  static std::map<std::string, std::shared_ptr<const schema::SchemaValidator>> cache;
  std::lock_guard lock(mutex);
  if (auto it = cache.find(name); it != cache.end()) return it->second;
  for (const auto& f : EmbeddedSchemas()) {
    if (NameOf(f.path) != name) continue;
    const auto doc = nlohmann::json::parse(f.content, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded())
      return Error(ErrorCode::kInternal, fmt::format("schema {} is not valid JSON", name));
    auto compiled = schema::SchemaValidator::Compile(doc, name);
    if (!compiled) return compiled.error();
    cache.emplace(name, compiled.value());
    return compiled.value();
  }
  return Error(ErrorCode::kNotFound, fmt::format("no schema named {}", name));
}

}  // namespace celeriac::schemas
