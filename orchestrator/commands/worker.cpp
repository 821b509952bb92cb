// `orchestrator worker`: a Celery worker for the orchestrator's queue.

#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <thread>

#include <spdlog/spdlog.h>

#include "core/app/startup.hpp"
#include "core/base/ids.hpp"
#include "core/base/secrets.hpp"
#include "core/broker/broker_factory.hpp"
#include "core/loop/loop.hpp"
#include "core/worker/worker.hpp"
#include "orchestrator/commands/commands.hpp"
#include "orchestrator/commands/settings.hpp"
#include "orchestrator/tasks/backend_cleanup.hpp"
#include "orchestrator/tasks/crawl_tasks.hpp"
#include "schemas/schemas.hpp"
#include "state/dead_letter_store.hpp"
#include "state/task_state_store.hpp"

namespace celeriac::orchestrator {
namespace {

struct WorkerFlags {
  std::string queue;
  int concurrency = -1;
  int prefetch_multiplier = -1;
  std::string hostname;
};

int RunWorker(const CommonOptions& common, const WorkerFlags& flags) {
  auto settings = app::Start<Settings>(common.config_path);
  if (!settings) {
    std::cerr << "orchestrator worker: " << settings.error().message() << "\n";
    return 2;
  }
  worker::WorkerOptions options;
  options.queue = flags.queue.empty() ? settings->worker.queue : flags.queue;
  const int64_t concurrency =
      flags.concurrency >= 0 ? flags.concurrency : settings->worker.concurrency;
  options.concurrency =
      concurrency > 0 ? static_cast<int>(concurrency)
                      : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  options.prefetch_multiplier = static_cast<int>(
      flags.prefetch_multiplier >= 0 ? flags.prefetch_multiplier
                                     : settings->worker.prefetch_multiplier);
  options.hostname = flags.hostname.empty() ? "celeriac@" + HostName() : flags.hostname;
  options.max_held_eta = static_cast<int>(settings->worker.max_held_eta);
  options.max_abandoned_threads = static_cast<int>(settings->worker.max_abandoned_threads);
  options.body_schema = [](const std::string& task) -> std::shared_ptr<const schema::SchemaValidator> {
    auto v = schemas::Get("tasks/" + task + ".body");
    return v ? v.value() : nullptr;
  };

  // Started while Postgres or RabbitMQ is down (an outage, a host booting), it waits for them
  // (app::WaitForService); SIGTERM meanwhile ends it with 0.
  pg::Pool pool(settings->database.PoolOptionsFor());
  if (auto st = app::WaitForService("database", settings->database.url,
                                    [&] { return pool.Ping(); });
      !st) {
    if (app::ShutdownRequested()) return 0;
    std::cerr << "orchestrator worker: database " << MaskSecrets(settings->database.url)
              << ": " << MaskSecrets(st.error().message(), settings->database.url) << "\n";
    return 1;
  }
  state::PgDeadLetterStore dead_letters(pool);
  state::PgTaskStateStore states(pool);

  auto broker = broker::MakeBroker(settings->broker.url);
  if (!broker) {
    std::cerr << "orchestrator worker: broker.url: "
              << MaskSecrets(broker.error().message(), settings->broker.url) << "\n";
    return 2;
  }
  if (auto st = app::WaitForService("broker", settings->broker.url,
                                    [&] { return (*broker)->Connect(); });
      !st) {
    if (app::ShutdownRequested()) return 0;
    std::cerr << "orchestrator worker: broker " << MaskSecrets(settings->broker.url) << ": "
              << MaskSecrets(st.error().message(), settings->broker.url) << "\n";
    return 1;
  }

  TaskRegistry registry;
  // celery.backend_cleanup: retention with the ages of [retention] (beat fires it daily).
  worker::RegisterBuiltinTasks(
      registry, MakeBackendCleanup(settings->retention, pool, SystemClock::Instance()));
  discovery::HttpDiscoveryClient discovery(
      {settings->discovery.url, std::chrono::milliseconds(settings->discovery.timeout_ms),
       std::chrono::milliseconds(std::min<int64_t>(settings->discovery.timeout_ms, 5000))});
  CrawlTaskOptions task_options;
  task_options.extraction_queue = settings->extractor.queue;
  task_options.site_analysis_max_retries =
      static_cast<int>(settings->tasks.site_analysis_max_retries);
  task_options.site_analysis_retry_delay =
      std::chrono::seconds(settings->tasks.site_analysis_retry_delay_s);
  if (settings->tasks.site_analysis_backoff_max_s > 0)
    task_options.site_analysis_backoff_max =
        std::chrono::seconds(settings->tasks.site_analysis_backoff_max_s);
  CrawlTasks crawl_tasks(pool, **broker, discovery, task_options);
  crawl_tasks.Register(registry);

  Loop loop;
  worker::Worker worker(**broker, registry, dead_letters, &states, SystemClock::Instance(), loop, options);
  if (auto st = app::WaitForService("broker", settings->broker.url,
                                    [&] { return worker.Start(); });
      !st) {
    if (app::ShutdownRequested()) return 0;
    std::cerr << "orchestrator worker: "
              << MaskSecrets(st.error().message(), settings->broker.url) << "\n";
    return 1;
  }
  loop.HandleShutdownSignals([&](int) { worker.BeginShutdown([&] { loop.Stop(); }); });
  worker.OnNeedsRestart([&] { worker.BeginShutdown([&] { loop.Stop(); }); });
  if (app::ShutdownRequested()) worker.BeginShutdown([&] { loop.Stop(); });
  loop.Run();
  (*broker)->Close();
  const auto s = worker.stats();
  spdlog::info("worker stopped: {} received, {} succeeded, {} failed, {} retried", s.received,
               s.succeeded, s.failed, s.retried);
  if (s.abandoned_threads > 0) {
    // Threads stuck in abandoned tasks still use the registry, the pool and the broker: leave
    // without destroying them under those threads.
    spdlog::warn("{} thread(s) still stuck in tasks past their hard time limit; exiting now",
                 s.abandoned_threads);
    spdlog::shutdown();
    std::_Exit(worker.needs_restart() ? 3 : 0);
  }
  return worker.needs_restart() ? 3 : 0;
}

}  // namespace

void RegisterWorker(CLI::App& app, const CommonOptions& common, int& exit_code) {
  auto* cmd = app.add_subcommand("worker", "Run a Celery worker for the orchestrator's tasks");
  auto flags = std::make_shared<WorkerFlags>();
  cmd->add_option("-Q,--queue", flags->queue, "Queue to consume (default: worker.queue)");
  cmd->add_option("-c,--concurrency", flags->concurrency,
                  "Tasks run at once (default: worker.concurrency; 0 = CPUs)");
  cmd->add_option("--prefetch-multiplier", flags->prefetch_multiplier,
                  "Prefetch = concurrency x this (default: worker.prefetch_multiplier)");
  cmd->add_option("-n,--hostname", flags->hostname, "Node name (default: celeriac@<host>)");
  cmd->callback([&common, &exit_code, flags] { exit_code = RunWorker(common, *flags); });
}

}  // namespace celeriac::orchestrator
