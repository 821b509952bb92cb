#include "core/app/startup.hpp"

#include <algorithm>

#include <cstdlib>

#include "core/log/log.hpp"

namespace celeriac::app {

Result<Settings> Start(std::optional<std::string> config_path) {
  if (!config_path) {
    if (const char* env = std::getenv("CELERIAC_CONFIG"); env != nullptr && *env != '\0')
      config_path = env;
  }
  auto settings = Settings::Load(config_path, Settings::ProcessEnv());
  if (!settings) return settings.error();
  const auto format = settings->log.format == "json" ? log::Format::kJson : log::Format::kText;
  if (auto st = log::Init(settings->log.level, format); !st) return st.error();
  return settings;
}

pg::PoolOptions PoolOptionsFrom(const Settings& settings, size_t min_size) {
  pg::PoolOptions o;
  o.url = settings.database.url;
  o.size = std::max(static_cast<size_t>(settings.database.pool_size), min_size);
  o.connect_timeout_s = static_cast<int>(settings.database.connect_timeout_s);
  o.max_attempts = static_cast<int>(settings.database.max_attempts);
  return o;
}

}  // namespace celeriac::app
