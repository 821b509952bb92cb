#include "core/config/sections.hpp"

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "core/base/secrets.hpp"

namespace celeriac::config {
namespace {

using Key = Section::Key;

std::string Name(const Section& s, const Key& k) { return s.name() + "." + k.name; }

std::string EnvName(const Section& s, const Key& k) {
  std::string out = "CELERIAC_" + s.name() + "_" + k.name;
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

Error BadValue(const Section& s, const Key& k, std::string_view origin, std::string_view why) {
  return Error(ErrorCode::kInvalidArgument,
               fmt::format("config key {} (from {}): {}", Name(s, k), origin, why));
}

Status CheckString(const Section& s, const Key& k, const std::string& value,
                   std::string_view origin) {
  if (k.choices.empty()) return Ok();
  for (const auto& c : k.choices)
    if (c == value) return Ok();
  std::string allowed;
  for (const auto& c : k.choices) allowed += (allowed.empty() ? "" : ", ") + c;
  return BadValue(s, k, origin, fmt::format("'{}' is not one of: {}", value, allowed));
}

Status CheckInt(const Section& s, const Key& k, int64_t value, std::string_view origin) {
  if (value < k.min || value > k.max)
    return BadValue(s, k, origin,
                    fmt::format("{} is out of range [{}, {}]", value, k.min, k.max));
  return Ok();
}

// Applies a value given as text (environment variables).
Status ApplyText(const Section& s, const Key& k, const std::string& text,
                 std::string_view origin) {
  if (auto* field = std::get_if<std::string*>(&k.field)) {
    if (auto st = CheckString(s, k, text, origin); !st) return st;
    **field = text;
    return Ok();
  }
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || errno != 0 || end == nullptr || *end != '\0')
    return BadValue(s, k, origin, fmt::format("'{}' is not an integer", text));
  if (auto st = CheckInt(s, k, v, origin); !st) return st;
  *std::get<int64_t*>(k.field) = v;
  return Ok();
}

Status ApplyToml(const Section& s, const Key& k, const toml::node& node,
                 std::string_view origin) {
  if (auto* field = std::get_if<std::string*>(&k.field)) {
    const auto* v = node.as_string();
    if (v == nullptr) return BadValue(s, k, origin, "expected a string");
    if (auto st = CheckString(s, k, v->get(), origin); !st) return st;
    **field = v->get();
    return Ok();
  }
  const auto* v = node.as_integer();
  if (v == nullptr) return BadValue(s, k, origin, "expected an integer");
  if (auto st = CheckInt(s, k, v->get(), origin); !st) return st;
  *std::get<int64_t*>(k.field) = v->get();
  return Ok();
}

}  // namespace

EnvLookup ProcessEnv() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  };
}

void Sections::Claim(const std::string& section) {
  for (const auto& s : read_)
    if (s.name() == section) throw std::logic_error("config section [" + section + "] named twice");
  for (const auto& s : ignored_)
    if (s == section) throw std::logic_error("config section [" + section + "] named twice");
}

Sections& Sections::Add(Section section) {
  Claim(section.name());
  read_.push_back(std::move(section));
  return *this;
}

Sections& Sections::Ignore(std::string section) {
  Claim(section);
  ignored_.push_back(std::move(section));
  return *this;
}

Status Sections::Parse(std::string_view toml_text, std::string_view origin,
                       const EnvLookup& env) {
  try {
    const toml::table doc = toml::parse(toml_text, origin);
    for (const auto& [section_name, section_node] : doc) {
      const std::string name(section_name.str());
      const auto* table = section_node.as_table();
      const Section* section = nullptr;
      for (const auto& s : read_)
        if (s.name() == name) section = &s;
      bool ignored = false;
      for (const auto& s : ignored_) ignored |= (s == name);
      if (table == nullptr || (section == nullptr && !ignored))
        return Error(ErrorCode::kInvalidArgument,
                     fmt::format("config {}: unknown section [{}]", origin, name));
      if (section == nullptr) continue;  // another binary's: it checks the section
      for (const auto& [key_name, node] : *table) {
        const std::string key(key_name.str());
        const Key* spec = nullptr;
        for (const auto& k : section->keys())
          if (k.name == key) spec = &k;
        if (spec == nullptr && section->read_in_part()) continue;
        if (spec == nullptr)
          return Error(ErrorCode::kInvalidArgument,
                       fmt::format("config {}: unknown key {}.{}", origin, name, key));
        if (auto st = ApplyToml(*section, *spec, node, origin); !st) return st;
      }
    }
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    return Error(ErrorCode::kInvalidArgument,
                 fmt::format("config {}:{}:{}: {}", origin, where.line, where.column,
                             e.description()));
  }
  for (const auto& s : read_) {
    for (const auto& k : s.keys()) {
      const std::string var = EnvName(s, k);
      const auto value = env(var);
      if (!value) continue;
      if (auto st = ApplyText(s, k, *value, "environment variable " + var); !st) return st;
    }
  }
  return Ok();
}

Status Sections::Load(const std::optional<std::string>& path, const EnvLookup& env) {
  if (!path) return Parse("", "defaults", env);
  std::ifstream in(*path);
  if (!in)
    return Error(ErrorCode::kNotFound, fmt::format("config file {} cannot be read", *path));
  std::stringstream text;
  text << in.rdbuf();
  return Parse(text.str(), *path, env);
}

std::vector<std::string> Sections::Describe() const {
  std::vector<std::string> lines;
  for (const auto& s : read_) {
    for (const auto& k : s.keys()) {
      std::string value;
      if (auto* field = std::get_if<std::string*>(&k.field)) {
        value = **field;
        value = k.secret && !value.empty() ? std::string(kMaskedSecret) : MaskSecrets(value);
        value = "\"" + value + "\"";
      } else {
        value = std::to_string(*std::get<int64_t*>(k.field));
      }
      lines.push_back(Name(s, k) + " = " + value);
    }
  }
  return lines;
}

}  // namespace celeriac::config
