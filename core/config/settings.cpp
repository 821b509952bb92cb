#include "core/config/settings.hpp"

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <sstream>
#include <variant>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "core/base/secrets.hpp"

namespace celeriac {
namespace {

// One configuration key: where it lives in Settings and what values it accepts.
struct KeySpec {
  std::string section;
  std::string key;
  std::variant<std::string*, int64_t*> target = static_cast<std::string*>(nullptr);
  int64_t min = std::numeric_limits<int64_t>::min();
  int64_t max = std::numeric_limits<int64_t>::max();
  std::vector<std::string> choices;  // for strings: allowed values, empty = any
  bool secret = false;               // masked whole by Describe()

  std::string Name() const { return section + "." + key; }
  std::string EnvName() const {
    std::string out = "CELERIAC_" + section + "_" + key;
    for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return out;
  }
};

std::vector<KeySpec> Keys(Settings& s) {
  auto str = [](std::string section, std::string key, std::string* target) {
    KeySpec k;
    k.section = std::move(section);
    k.key = std::move(key);
    k.target = target;
    return k;
  };
  auto num = [](std::string section, std::string key, int64_t* target, int64_t min,
                int64_t max) {
    KeySpec k;
    k.section = std::move(section);
    k.key = std::move(key);
    k.target = target;
    k.min = min;
    k.max = max;
    return k;
  };
  std::vector<KeySpec> keys;
  keys.push_back(str("database", "url", &s.database.url));
  keys.push_back(num("database", "pool_size", &s.database.pool_size, 1, 1000));
  keys.push_back(num("database", "connect_timeout_s", &s.database.connect_timeout_s, 1, 3600));
  keys.push_back(num("database", "max_attempts", &s.database.max_attempts, 1, 100));
  keys.push_back(str("broker", "url", &s.broker.url));
  keys.push_back(str("log", "level", &s.log.level));
  keys.back().choices = {"trace", "debug", "info", "warn", "error", "critical", "off"};
  keys.push_back(str("log", "format", &s.log.format));
  keys.back().choices = {"text", "json"};
  keys.push_back(str("api", "listen", &s.api.listen));
  keys.push_back(str("api", "token", &s.api.token));
  keys.back().secret = true;
  keys.push_back(num("api", "threads", &s.api.threads, 1, 256));
  keys.push_back(num("api", "max_queued", &s.api.max_queued, 0, 100'000));
  keys.push_back(num("api", "read_timeout_s", &s.api.read_timeout_s, 1, 3600));
  keys.push_back(num("api", "write_timeout_s", &s.api.write_timeout_s, 1, 3600));
  keys.push_back(num("api", "keep_alive_timeout_s", &s.api.keep_alive_timeout_s, 1, 3600));
  keys.push_back(num("api", "max_body_bytes", &s.api.max_body_bytes, 1024, int64_t{1} << 30));
  keys.push_back(str("discovery", "url", &s.discovery.url));
  keys.push_back(num("discovery", "timeout_ms", &s.discovery.timeout_ms, 1, 3'600'000));
  keys.push_back(str("worker", "queue", &s.worker.queue));
  keys.push_back(num("worker", "concurrency", &s.worker.concurrency, 0, 4096));
  keys.push_back(num("worker", "prefetch_multiplier", &s.worker.prefetch_multiplier, 1, 65535));
  keys.push_back(num("worker", "max_held_eta", &s.worker.max_held_eta, 1, 60'000));
  keys.push_back(num("worker", "max_abandoned_threads", &s.worker.max_abandoned_threads, 0, 1024));
  keys.push_back(str("extractor", "queue", &s.extractor.queue));
  keys.push_back(num("extractor", "concurrency", &s.extractor.concurrency, 1, 65'536));
  keys.push_back(num("extractor", "parse_threads", &s.extractor.parse_threads, 0, 256));
  keys.push_back(num("extractor", "prefetch", &s.extractor.prefetch, 1, 65'535));
  keys.push_back(num("extractor", "lease_ms", &s.extractor.lease_ms, 1'000, 86'400'000));
  keys.push_back(str("extractor", "user_agent", &s.extractor.user_agent));
  keys.push_back(num("tasks", "site_analysis_max_retries", &s.tasks.site_analysis_max_retries, 0,
                     1000));
  keys.push_back(num("tasks", "site_analysis_retry_delay_s", &s.tasks.site_analysis_retry_delay_s,
                     0, 86'400));
  keys.push_back(num("tasks", "site_analysis_backoff_max_s", &s.tasks.site_analysis_backoff_max_s,
                     0, 86'400));
  keys.push_back(num("beat", "catch_up_grace_s", &s.beat.catch_up_grace_s, 0, 366 * 86'400));
  keys.push_back(num("beat", "batch_size", &s.beat.batch_size, 1, 100'000));
  keys.push_back(num("beat", "max_sleep_s", &s.beat.max_sleep_s, 1, 3600));
  return keys;
}

Error BadValue(const KeySpec& k, std::string_view origin, std::string_view why) {
  return Error(ErrorCode::kInvalidArgument,
               fmt::format("config key {} (from {}): {}", k.Name(), origin, why));
}

Status CheckString(const KeySpec& k, const std::string& value, std::string_view origin) {
  if (k.choices.empty()) return Ok();
  for (const auto& c : k.choices)
    if (c == value) return Ok();
  std::string allowed;
  for (const auto& c : k.choices) allowed += (allowed.empty() ? "" : ", ") + c;
  return BadValue(k, origin, fmt::format("'{}' is not one of: {}", value, allowed));
}

Status CheckInt(const KeySpec& k, int64_t value, std::string_view origin) {
  if (value < k.min || value > k.max)
    return BadValue(k, origin, fmt::format("{} is out of range [{}, {}]", value, k.min, k.max));
  return Ok();
}

// Applies a value given as text (environment variables).
Status ApplyText(const KeySpec& k, const std::string& text, std::string_view origin) {
  if (auto* target = std::get_if<std::string*>(&k.target)) {
    if (auto st = CheckString(k, text, origin); !st) return st;
    **target = text;
    return Ok();
  }
  auto* target = std::get<int64_t*>(k.target);
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || errno != 0 || end == nullptr || *end != '\0')
    return BadValue(k, origin, fmt::format("'{}' is not an integer", text));
  if (auto st = CheckInt(k, v, origin); !st) return st;
  *target = v;
  return Ok();
}

Status ApplyToml(const KeySpec& k, const toml::node& node, std::string_view origin) {
  if (auto* target = std::get_if<std::string*>(&k.target)) {
    const auto* v = node.as_string();
    if (v == nullptr) return BadValue(k, origin, "expected a string");
    if (auto st = CheckString(k, v->get(), origin); !st) return st;
    **target = v->get();
    return Ok();
  }
  const auto* v = node.as_integer();
  if (v == nullptr) return BadValue(k, origin, "expected an integer");
  if (auto st = CheckInt(k, v->get(), origin); !st) return st;
  *std::get<int64_t*>(k.target) = v->get();
  return Ok();
}

Status ApplyDocument(Settings& s, const toml::table& doc, std::string_view origin) {
  auto keys = Keys(s);
  for (const auto& [section_name, section_node] : doc) {
    const std::string section(section_name.str());
    const auto* table = section_node.as_table();
    bool known_section = false;
    for (const auto& k : keys) known_section |= (k.section == section);
    if (!known_section || table == nullptr)
      return Error(ErrorCode::kInvalidArgument,
                   fmt::format("config {}: unknown section [{}]", origin, section));
    for (const auto& [key_name, node] : *table) {
      const std::string key(key_name.str());
      const KeySpec* spec = nullptr;
      for (const auto& k : keys)
        if (k.section == section && k.key == key) spec = &k;
      if (spec == nullptr)
        return Error(ErrorCode::kInvalidArgument,
                     fmt::format("config {}: unknown key {}.{}", origin, section, key));
      if (auto st = ApplyToml(*spec, node, origin); !st) return st;
    }
  }
  return Ok();
}

Status ApplyEnv(Settings& s, const Settings::EnvLookup& env) {
  for (const auto& k : Keys(s)) {
    const auto value = env(k.EnvName());
    if (!value) continue;
    if (auto st = ApplyText(k, *value, "environment variable " + k.EnvName()); !st) return st;
  }
  return Ok();
}

}  // namespace

Settings::EnvLookup Settings::ProcessEnv() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  };
}

Result<Settings> Settings::Parse(std::string_view toml_text, std::string_view origin,
                                 const EnvLookup& env) {
  Settings s;
  try {
    const toml::table doc = toml::parse(toml_text, origin);
    if (auto st = ApplyDocument(s, doc, origin); !st) return st.error();
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    return Error(ErrorCode::kInvalidArgument,
                 fmt::format("config {}:{}:{}: {}", origin, where.line, where.column,
                             e.description()));
  }
  if (auto st = ApplyEnv(s, env); !st) return st.error();
  return s;
}

Result<Settings> Settings::Load(const std::optional<std::string>& path, const EnvLookup& env) {
  if (!path) return Parse("", "defaults", env);
  std::ifstream in(*path);
  if (!in)
    return Error(ErrorCode::kNotFound, fmt::format("config file {} cannot be read", *path));
  std::stringstream text;
  text << in.rdbuf();
  return Parse(text.str(), *path, env);
}

std::vector<std::string> Settings::Describe() const {
  Settings copy = *this;  // Keys() binds mutable targets; read them from a copy
  std::vector<std::string> lines;
  for (const auto& k : Keys(copy)) {
    std::string value;
    if (auto* s = std::get_if<std::string*>(&k.target)) {
      value = **s;
      value = k.secret && !value.empty() ? std::string(kMaskedSecret) : MaskSecrets(value);
      value = "\"" + value + "\"";
    } else {
      value = std::to_string(*std::get<int64_t*>(k.target));
    }
    lines.push_back(k.Name() + " = " + value);
  }
  return lines;
}

}  // namespace celeriac
