// extractor: consumes extractor.tasks.extract from extraction_queue and runs the crawl pipeline
// (extractor/engine/engine.hpp), or runs one crawl of a config file to its end (`crawl`).

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <thread>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "core/app/config_show.hpp"
#include "core/app/startup.hpp"
#include "core/base/ids.hpp"
#include "core/base/secrets.hpp"
#include "core/broker/broker_factory.hpp"
#include "core/loop/loop.hpp"
#include "core/pg/pool.hpp"
#include "core/worker/worker.hpp"
#include "extractor/parse/config_module.hpp"
#include "extractor/engine/engine.hpp"
#include "extractor/pipeline/extract_tasks.hpp"
#include "extractor/pipeline/http_fetcher.hpp"
#include "extractor/pipeline/settings.hpp"
#include "schemas/schemas.hpp"
#include "state/configs.hpp"
#include "state/dead_letter_store.hpp"
#include "state/task_state_store.hpp"

namespace celeriac::extractor {
namespace {

using Json = nlohmann::json;

ModuleFactory ConfigModules() {
  return [](const Json& config) -> Result<std::shared_ptr<const Module>> {
    auto compiled = parse::CompileConfig(config);
    if (!compiled) return compiled.error();
    return std::shared_ptr<const Module>(std::move(*compiled));
  };
}

std::string Owner() {
  return fmt::format("{}:{}:{}", HostName(), getpid(), NewUuid4().substr(0, 8));
}

EngineOptions EngineOptionsFrom(const Settings& s) {
  EngineOptions o;
  o.concurrency = static_cast<size_t>(s.extractor.concurrency);
  o.parse_threads = s.extractor.parse_threads > 0
                        ? static_cast<size_t>(s.extractor.parse_threads)
                        : std::max(1u, std::thread::hardware_concurrency());
  o.lease = std::chrono::milliseconds(s.extractor.lease_ms);
  o.default_user_agent = s.extractor.user_agent;
  return o;
}

// The worker core on extraction_queue: the start of a job is quick (its start requests go in
// the frontier), so two pool threads are plenty; prefetch is extractor.prefetch.
worker::WorkerOptions WorkerOptionsFrom(const Settings& s, const std::string& owner) {
  worker::WorkerOptions o;
  o.queue = s.extractor.queue;
  o.concurrency = 1;
  o.prefetch_multiplier = static_cast<int>(s.extractor.prefetch);
  o.hostname = "extractor@" + owner;
  o.max_held_eta = static_cast<int>(s.worker.max_held_eta);
  o.body_schema = [](const std::string& task) -> std::shared_ptr<const schema::SchemaValidator> {
    auto v = schemas::Get("tasks/" + task + ".body");
    return v ? v.value() : nullptr;
  };
  return o;
}

http::ClientOptions HttpOptionsFrom(const Settings& s) {
  http::ClientOptions o;
  o.user_agent = s.extractor.user_agent;
  return o;
}

int RunWorker(const std::optional<std::string>& config_path) {
  auto settings = app::Start<Settings>(config_path);
  if (!settings) {
    std::cerr << "extractor: " << settings.error().message() << "\n";
    return 2;
  }
  // Started while Postgres or RabbitMQ is down (an outage, a host booting), it waits for them
  // (app::WaitForService); SIGTERM meanwhile ends it with 0.
  pg::Pool pool(settings->database.PoolOptionsFor(2));
  if (auto st = app::WaitForService("database", settings->database.url,
                                    [&] { return pool.Ping(); });
      !st) {
    if (app::ShutdownRequested()) return 0;
    std::cerr << "extractor: database: "
              << MaskSecrets(st.error().message(), settings->database.url) << "\n";
    return 1;
  }
  auto broker = broker::MakeBroker(settings->broker.url);
  if (!broker) {
    std::cerr << "extractor: broker: "
              << MaskSecrets(broker.error().message(), settings->broker.url) << "\n";
    return 2;
  }
  if (auto st = app::WaitForService("broker", settings->broker.url,
                                    [&] { return (*broker)->Connect(); });
      !st) {
    if (app::ShutdownRequested()) return 0;
    std::cerr << "extractor: broker: " << MaskSecrets(st.error().message(), settings->broker.url)
              << "\n";
    return 1;
  }
  Loop loop;
  HttpFetcher fetcher(loop, HttpOptionsFrom(*settings));
  CrawlStore store(pool, Owner(), settings->extractor.queue);
  Engine engine(loop, fetcher, store, store, ConfigModules(), EngineOptionsFrom(*settings));
  ExtractTasks tasks(**broker, engine, store);
  engine.OnJobFinished([&](const FinishedJob& job) { tasks.PublishResult(job); });
  worker::TaskRegistry registry;
  tasks.Register(registry);
  state::PgDeadLetterStore dead_letters(pool);
  state::PgTaskStateStore states(pool);
  worker::Worker worker(**broker, registry, dead_letters, &states, SystemClock::Instance(), loop,
                        WorkerOptionsFrom(*settings, store.owner()));
  if (auto st = app::WaitForService("broker", settings->broker.url,
                                    [&] { return worker.Start(); });
      !st) {
    if (app::ShutdownRequested()) return 0;
    std::cerr << "extractor: consuming " << settings->extractor.queue << ": "
              << MaskSecrets(st.error().message(), settings->broker.url) << "\n";
    return 1;
  }
  engine.Start();
  // Results whose publisher died before sending them.
  loop.AddTimer(std::chrono::seconds(30), [&] { tasks.SweepUnpublished(); },
                std::chrono::seconds(30));
  auto stop = [&] {
    spdlog::info("extractor {}: stopping: finishing requests in flight", store.owner());
    worker.BeginShutdown([&] { engine.Drain([&] { loop.Stop(); }); });
  };
  loop.HandleShutdownSignals([&](int) { stop(); });
  worker.OnNeedsRestart(stop);
  if (app::ShutdownRequested()) stop();
  spdlog::info("extractor {} consuming {} ({} requests in flight at most)", store.owner(),
               settings->extractor.queue, settings->extractor.concurrency);
  loop.Run();
  (*broker)->Close();
  const auto stats = engine.Stats();
  spdlog::info("extractor {} stopped: {} fetched, {} parsed, {} failed, {} retried",
               store.owner(), stats.fetched, stats.parsed, stats.failed, stats.retried);
  return 0;
}

struct CrawlArgs {
  std::string config_file;
  std::optional<int64_t> crawl_config_id;
  int64_t data_source_id = 0;
  std::string output;
  bool quiet = false;
};

int RunCrawl(const std::optional<std::string>& config_path, const CrawlArgs& args) {
  auto settings = app::Start<Settings>(config_path);
  if (!settings) {
    std::cerr << "extractor: " << settings.error().message() << "\n";
    return 2;
  }
  pg::Pool pool(settings->database.PoolOptionsFor(2));
  int64_t config_id = args.crawl_config_id.value_or(0);
  if (!args.config_file.empty()) {
    std::ifstream in(args.config_file);
    if (!in) {
      std::cerr << "extractor: cannot read " << args.config_file << "\n";
      return 2;
    }
    const Json config = Json::parse(in, nullptr, false);
    if (config.is_discarded()) {
      std::cerr << "extractor: " << args.config_file << " is not JSON\n";
      return 2;
    }
    if (auto compiled = parse::CompileConfig(config); !compiled) {
      std::cerr << "extractor: " << args.config_file << ": " << compiled.error().message()
                << "\n";
      return 2;
    }
    // A draft version of the data source's config: it never becomes the active one.
    auto id = state::AddDraftConfig(pool, args.data_source_id, config);
    if (!id) {
      std::cerr << "extractor: database: " << id.error().message() << "\n";
      return 1;
    }
    config_id = *id;
  }
  Loop loop;
  HttpFetcher fetcher(loop, HttpOptionsFrom(*settings));
  CrawlStore store(pool, Owner());
  ExtractRequest req;
  req.crawl_config_id = config_id;
  req.celery_task_id = "crawl-" + NewUuid4();
  auto job = store.ClaimJob(req);
  if (!job) {
    std::cerr << "extractor: " << job.error().message() << "\n";
    return 1;
  }
  auto options = EngineOptionsFrom(*settings);
  options.only_job = job->job_id;
  Engine engine(loop, fetcher, store, store, ConfigModules(), options);
  std::optional<FinishedJob> finished;
  engine.OnJobFinished([&](const FinishedJob& f) {
    if (f.job_id == job->job_id) loop.Post([&, f] {
      finished = f;
      engine.Drain([&] { loop.Stop(); });
    });
  });
  engine.SubmitExtract(req, [&](Status st) {
    if (!st) loop.Post([&, st] {
      std::cerr << "extractor: " << st.error().message() << "\n";
      loop.Stop();
    });
  });
  engine.Start();
  const auto started = std::chrono::steady_clock::now();
  if (!args.quiet)
    loop.AddTimer(std::chrono::seconds(1), [&] {
      const auto s = engine.Stats();
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                                        started).count();
      std::cerr << fmt::format("\r{:6.1f}s  pages {:>7}  failed {:>5}  retried {:>5}  "
                               "in flight {:>4}  {:>7.0f} pages/s",
                               secs, s.parsed, s.failed, s.retried, s.in_flight,
                               s.parsed / std::max(secs, 0.001));
    }, std::chrono::seconds(1));
  loop.HandleShutdownSignals([&](int) { engine.Drain([&] { loop.Stop(); }); });
  loop.Run();
  if (!args.quiet) std::cerr << "\n";
  if (!finished) {
    std::cerr << "extractor: crawl stopped before its job ended (job " << job->job_id
              << " stays running; an extractor worker can finish it)\n";
    return 1;
  }
  const auto stats = engine.Stats();
  spdlog::info("crawl: {} fetched, {} parsed, {} failed, {} retried; {} commits took {:.2f} s",
               stats.fetched, stats.parsed, stats.failed, stats.retried, stats.commits,
               stats.commit_seconds);
  std::cout << finished->result.dump() << "\n";
  if (!args.output.empty()) {
    std::ofstream out(args.output);
    auto rows = store.RunItems(config_id, finished->run_id);
    if (!rows) {
      std::cerr << "extractor: reading items: " << rows.error().message() << "\n";
      return 1;
    }
    for (const auto& line : *rows) out << line << "\n";
  }
  return finished->status == "succeeded" ? 0 : 1;
}

}  // namespace
}  // namespace celeriac::extractor

int main(int argc, char** argv) {
  using namespace celeriac;
  CLI::App app{"Celeriac extractor: the crawl pipeline behind extraction_queue"};
  app.require_subcommand(1);
  std::optional<std::string> config_path;
  app.add_option("-c,--config", config_path,
                 "TOML settings file (default: $CELERIAC_CONFIG); every key can be overridden "
                 "by CELERIAC_<SECTION>_<KEY>");
  app.set_version_flag("--version", "extractor " CELERIAC_VERSION);
  int exit_code = 0;

  auto* config = app.add_subcommand("config", "Show settings");
  config->require_subcommand(1);
  app::AddConfigShow<extractor::Settings>(*config, config_path, exit_code);

  auto* worker = app.add_subcommand(
      "worker", "Consume extractor.tasks.extract from extraction_queue and crawl");
  worker->callback([&] { exit_code = extractor::RunWorker(config_path); });

  extractor::CrawlArgs crawl_args;
  auto* crawl = app.add_subcommand(
      "crawl", "Run one crawl of a config to its end, without the broker, and print its result");
  auto* file_opt = crawl->add_option("--config-file", crawl_args.config_file,
                                     "crawl config JSON (stored as a draft version)");
  crawl->add_option("--crawl-config-id", crawl_args.crawl_config_id,
                    "an existing crawl_configs row instead of a file")
      ->excludes(file_opt);
  crawl->add_option("--data-source-id", crawl_args.data_source_id,
                    "data source the config file belongs to (created if missing)")
      ->default_val(1);
  crawl->add_option("--output", crawl_args.output, "write this run's items as JSON lines");
  crawl->add_flag("-q,--quiet", crawl_args.quiet, "no progress line");
  crawl->callback([&] {
    if (crawl_args.config_file.empty() && !crawl_args.crawl_config_id) {
      std::cerr << "extractor crawl: give --config-file or --crawl-config-id\n";
      exit_code = 2;
      return;
    }
    exit_code = extractor::RunCrawl(config_path, crawl_args);
  });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::cerr << "extractor: " << e.what() << "\n";
    return 1;
  }
  return exit_code;
}
