#include "core/app/startup.hpp"

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

}  // namespace celeriac::app
