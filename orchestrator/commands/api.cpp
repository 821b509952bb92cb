// `orchestrator api`: the admin HTTP API on api.listen (orchestrator/api/admin_api.hpp).
//
// It starts even when Postgres or the broker is down, so that /healthz answers and /readyz says
// which one is missing; both reconnect by themselves. SIGTERM or SIGINT: stop accepting, let
// the requests in flight finish, exit 0.

#include <iostream>

#include <spdlog/spdlog.h>

#include "core/app/startup.hpp"
#include "core/base/secrets.hpp"
#include "core/broker/broker_factory.hpp"
#include "core/loop/loop.hpp"
#include "orchestrator/api/admin_api.hpp"
#include "orchestrator/commands/commands.hpp"
#include "orchestrator/commands/settings.hpp"

namespace celeriac::orchestrator {
namespace {

struct ApiFlags {
  std::string listen;
};

int RunApi(const CommonOptions& common, const ApiFlags& flags) {
  const char* me = "orchestrator api";
  auto settings = app::Start<Settings>(common.config_path);
  if (!settings) {
    std::cerr << me << ": " << settings.error().message() << "\n";
    return 2;
  }
  const std::string listen = flags.listen.empty() ? settings->api.listen : flags.listen;
  if (auto address = api::ParseListenAddress(listen); !address) {
    std::cerr << me << ": " << address.error().message() << "\n";
    return 2;
  }

  pg::Pool pool(settings->database.PoolOptionsFor());
  if (auto st = pool.Ping(); !st) {
    spdlog::warn("admin API: database {} not reachable yet: {}",
                 MaskSecrets(settings->database.url),
                 MaskSecrets(st.error().message(), settings->database.url));
  }

  auto broker = broker::MakeBroker(settings->broker.url);
  if (!broker) {
    std::cerr << me << ": broker.url: "
              << MaskSecrets(broker.error().message(), settings->broker.url) << "\n";
    return 2;
  }
  if (auto st = (*broker)->Connect(); !st) {
    spdlog::warn("admin API: broker {} not reachable yet: {}", MaskSecrets(settings->broker.url),
                 MaskSecrets(st.error().message(), settings->broker.url));
  }

  api::AdminApiOptions options;
  options.worker_queue = settings->worker.queue;
  options.limits.threads = static_cast<size_t>(settings->api.threads);
  options.limits.max_queued = static_cast<size_t>(settings->api.max_queued);
  options.limits.read_timeout = std::chrono::seconds(settings->api.read_timeout_s);
  options.limits.write_timeout = std::chrono::seconds(settings->api.write_timeout_s);
  options.limits.keep_alive_timeout = std::chrono::seconds(settings->api.keep_alive_timeout_s);
  options.limits.max_body_bytes = static_cast<size_t>(settings->api.max_body_bytes);
  api::AdminApi server(pool, **broker, settings->api.token, options);
  auto port = server.Start(listen);
  if (!port) {
    std::cerr << me << ": " << port.error().message() << "\n";
    return 1;
  }

  Loop loop;
  loop.HandleShutdownSignals([&](int signum) {
    spdlog::info("admin API: signal {}, stopping", signum);
    server.Stop();
    loop.Stop();
  });
  loop.Run();
  server.Stop();
  (*broker)->Close();
  return 0;
}

}  // namespace

void RegisterApi(CLI::App& app, const CommonOptions& common, int& exit_code) {
  auto* cmd = app.add_subcommand("api", "Serve the admin HTTP API (run-now, runs, dead letters, "
                                        "health, readiness, metrics) on api.listen");
  auto flags = std::make_shared<ApiFlags>();
  cmd->add_option("-l,--listen", flags->listen,
                  "host:port to listen on (default: api.listen; port 0 = any free port)");
  cmd->callback([&common, &exit_code, flags] { exit_code = RunApi(common, *flags); });
}

}  // namespace celeriac::orchestrator
