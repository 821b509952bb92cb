// `orchestrator beat`: fires crawl task schedules and beat entries (celery.backend_cleanup daily;
// see orchestrator/beat/beat.hpp). Run as many as you like; each due time is fired once.

#include <unistd.h>

#include <iostream>
#include <thread>

#include <spdlog/spdlog.h>

#include "core/app/startup.hpp"
#include "core/base/ids.hpp"
#include "core/base/secrets.hpp"
#include "core/broker/broker_factory.hpp"
#include "core/loop/loop.hpp"
#include "orchestrator/beat/beat.hpp"
#include "orchestrator/commands/commands.hpp"
#include "orchestrator/commands/settings.hpp"

namespace celeriac::orchestrator {
namespace {

struct BeatFlags {
  std::string queue;
  std::string name;
  double clock_scale = 1.0;
  std::string clock_origin;
};

int RunBeat(const CommonOptions& common, const BeatFlags& flags) {
  auto settings = app::Start<Settings>(common.config_path);
  if (!settings) {
    std::cerr << "orchestrator beat: " << settings.error().message() << "\n";
    return 2;
  }
  beat::BeatOptions options;
  options.queue = flags.queue.empty() ? settings->worker.queue : flags.queue;
  options.catch_up_grace = std::chrono::seconds(settings->beat.catch_up_grace_s);
  options.batch = settings->beat.batch_size;
  options.max_sleep = std::chrono::seconds(settings->beat.max_sleep_s);
  options.name = flags.name.empty() ? HostName() + ":" + std::to_string(getpid()) : flags.name;

  // A faster clock, for tests and demos only: `--clock-scale 60` runs a cron minute a second.
  std::unique_ptr<beat::ScaledClock> scaled;
  const Clock* clock = &SystemClock::Instance();
  if (flags.clock_scale != 1.0) {
    if (!(flags.clock_scale > 0) || flags.clock_origin.empty()) {
      std::cerr << "orchestrator beat: --clock-scale needs a positive value and --clock-origin\n";
      return 2;
    }
    const auto origin = ParseIso8601(flags.clock_origin);
    if (!origin) {
      std::cerr << "orchestrator beat: --clock-origin: \"" << flags.clock_origin
                << "\" is not an ISO-8601 time\n";
      return 2;
    }
    scaled = std::make_unique<beat::ScaledClock>(*origin, flags.clock_scale);
    clock = scaled.get();
    options.real_delay = [c = scaled.get()](Clock::WallTime::duration d) {
      return c->RealDelay(d);
    };
    spdlog::warn("beat: clock runs {}x real time from {} (test setting)", flags.clock_scale,
                 flags.clock_origin);
  }

  // Postgres or RabbitMQ down at start is an outage like any other: Run() retries both with
  // backoff, so a beat (re)started during one fires as soon as they are back, as a Celery worker
  // waits for its broker. (Exiting instead made a supervisor restart it in a loop, and systemd
  // gives up after five starts in ten seconds.) An error retrying cannot fix stops it here.
  pg::Pool pool(settings->database.PoolOptionsFor(3));
  if (auto st = pool.Ping(); !st) {
    if (!st.error().retryable()) {
      std::cerr << "orchestrator beat: database " << MaskSecrets(settings->database.url) << ": "
                << MaskSecrets(st.error().message(), settings->database.url) << "\n";
      return 1;
    }
    spdlog::warn("beat: database {} not reachable yet: {}; retrying",
                 MaskSecrets(settings->database.url),
                 MaskSecrets(st.error().message(), settings->database.url));
  }
  auto broker = broker::MakeBroker(settings->broker.url);
  if (!broker) {
    std::cerr << "orchestrator beat: broker.url: "
              << MaskSecrets(broker.error().message(), settings->broker.url) << "\n";
    return 2;
  }
  if (auto st = (*broker)->Connect(); !st) {
    if (!st.error().retryable()) {
      std::cerr << "orchestrator beat: broker " << MaskSecrets(settings->broker.url) << ": "
                << MaskSecrets(st.error().message(), settings->broker.url) << "\n";
      return 1;
    }
    spdlog::warn("beat: broker {} not reachable yet: {}; retrying",
                 MaskSecrets(settings->broker.url),
                 MaskSecrets(st.error().message(), settings->broker.url));
  }

  beat::Beat beat(pool, **broker, *clock, options);
  Loop loop;  // only for SIGTERM / SIGINT; beat runs on its own thread
  loop.HandleShutdownSignals([&](int) { beat.Stop(); });
  Status result = Ok();
  std::thread runner([&] {
    result = beat.Run();
    loop.Stop();
  });
  loop.Run();
  beat.Stop();
  runner.join();
  (*broker)->Close();
  const auto s = beat.stats();
  spdlog::info("beat stopped: {} fired, {} beat entries fired, {} skipped (older than the grace "
               "period), {} scheduled, {} bad rows",
               s.fired, s.entries_fired, s.skipped, s.scheduled, s.bad);
  if (!result) {
    std::cerr << "orchestrator beat: " << result.error().message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace

void RegisterBeat(CLI::App& app, const CommonOptions& common, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "beat",
      "Fire crawl task schedules and beat entries (many beats may run; each due time fires once)");
  auto flags = std::make_shared<BeatFlags>();
  cmd->add_option("-Q,--queue", flags->queue,
                  "Queue to publish execute_crawl_task and beat entries to "
                  "(default: worker.queue)");
  cmd->add_option("-n,--name", flags->name, "Name recorded with each firing (default: host:pid)");
  cmd->add_option("--clock-scale", flags->clock_scale,
                  "Tests only: run beat's clock this many times faster than real time");
  cmd->add_option("--clock-origin", flags->clock_origin,
                  "Tests only: the instant (ISO-8601) from which the scaled clock runs faster");
  cmd->callback([&common, &exit_code, flags] { exit_code = RunBeat(common, *flags); });
}

}  // namespace celeriac::orchestrator
