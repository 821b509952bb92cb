#pragma once
// Start-up shared by every Celeriac binary: load settings (TOML file + environment) and set up
// logging. Failures here are fatal: main() prints the message and exits non-zero.

#include <optional>
#include <string>

#include "core/base/result.hpp"
#include "core/config/settings.hpp"
#include "core/pg/pool.hpp"

namespace celeriac::app {

// `config_path` from --config, else the CELERIAC_CONFIG environment variable, else none.
Result<Settings> Start(std::optional<std::string> config_path);

// The [database] settings as pool options; `min_size` raises database.pool_size for a process
// that needs that many connections at once (0 = as configured).
pg::PoolOptions PoolOptionsFrom(const Settings& settings, size_t min_size = 0);

}  // namespace celeriac::app
