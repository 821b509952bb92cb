#pragma once
// Start-up shared by every Celeriac binary: load settings (TOML file + environment) and set up
// logging. Failures here are fatal: main() prints the message and exits non-zero.

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "core/base/result.hpp"
#include "core/config/settings.hpp"
#include "core/pg/pool.hpp"

namespace celeriac::app {

// `config_path` from --config, else the CELERIAC_CONFIG environment variable, else none.
Result<Settings> Start(std::optional<std::string> config_path);

// The [database] settings as pool options; `min_size` raises database.pool_size for a process
// that needs that many connections at once (0 = as configured).
pg::PoolOptions PoolOptionsFrom(const Settings& settings, size_t min_size = 0);

// A service the process needs at start (Postgres, RabbitMQ) may be down: the process was
// (re)started during an outage. Calls `attempt` until it succeeds, logging each failure that
// retrying can fix ("<what> <url> not reachable yet: ...; retrying in N ms", passwords of `url`
// masked) and trying again with
// backoff (0.5 s doubling up to 10 s), as Celery's worker waits for its broker at start and as
// the processes ride out any later outage; exiting instead makes a supervisor restart the
// process in a loop until it gives up (systemd: five starts in ten seconds). Returns Ok, the
// first error retrying cannot fix, or, once SIGTERM or SIGINT arrived, an error with
// ShutdownRequested() true (the caller exits 0: nothing was started).
Status WaitForService(std::string_view what, std::string_view url,
                      const std::function<Status()>& attempt);

// SIGTERM or SIGINT arrived while WaitForService waited, or after it and before the event loop
// handles them (Loop::HandleShutdownSignals replaces the handler): the caller shuts down.
bool ShutdownRequested();

}  // namespace celeriac::app
