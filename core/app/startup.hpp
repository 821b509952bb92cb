#pragma once
// Start-up shared by every Celeriac binary: load its settings (TOML file + environment) and set
// up logging. Failures here are fatal: main() prints the message and exits non-zero.

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "core/base/result.hpp"
#include "core/config/sections.hpp"
#include "core/log/log_settings.hpp"

namespace celeriac::app {

// The settings file: `config_path` (--config), else the CELERIAC_CONFIG environment variable,
// else none.
std::optional<std::string> ConfigPath(std::optional<std::string> config_path);

// Sets up logging as [log] says.
Status StartLogging(const log::LogSettings& settings);

// The binary's settings S (config::Load, core/config/sections.hpp) from the settings file and
// the environment, with logging set up from its `log` section.
template <class S>
Result<S> Start(std::optional<std::string> config_path) {
  auto settings = config::Load<S>(ConfigPath(std::move(config_path)), config::ProcessEnv());
  if (!settings) return settings.error();
  if (auto st = StartLogging(settings->log); !st) return st.error();
  return settings;
}

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
