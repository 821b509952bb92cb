#pragma once
// Settings: every configuration key of every Celeriac process, in one TOML file.
//
// Each key `[section] key` can be overridden by the environment variable
// CELERIAC_<SECTION>_<KEY> (upper case), e.g. CELERIAC_BROKER_URL, CELERIAC_DATABASE_URL.
// Precedence: built-in default < TOML file < environment. Defaults work against the local
// stack that `./dev up` starts on loopback.
//
// Loading fails, with a message naming the key and where its value came from, for an unknown
// key in the file, a value of the wrong type, or a value out of range. Processes load settings
// once at start-up and treat a failure as fatal.
//
// key                          default                                          meaning
// database.url                 postgresql://celeriac:celeriac@127.0.0.1:16432/celeriac
//                                                                               libpq URL
// database.pool_size           4                                                connections kept open
// database.connect_timeout_s   5                                                per connection attempt
// database.max_attempts        5                                                tries of a transaction whose error is retryable
// broker.url                   amqp://guest:guest@127.0.0.1:16672//             AMQP 0-9-1 URL, or memory://
// log.level                    info                                             trace|debug|info|warn|error|critical|off
// log.format                   text                                             text | json (one JSON object a line)
// api.listen                   127.0.0.1:18080                                  admin API bind address
// api.token                    (empty: admin routes refuse everyone)            bearer token for admin routes
// api.threads                  8                                                connections served at once
// api.max_queued               64                                               connections waiting for a
//                                                                               thread; beyond threads +
//                                                                               this, a connection gets 503
//                                                                               at once and is closed
// api.read_timeout_s           10                                               a request (line, headers,
//                                                                               body) must arrive whole within
//                                                                               this of its first byte (408)
// api.write_timeout_s          10                                               an answer must be written
//                                                                               within this
// api.keep_alive_timeout_s     5                                                idle time allowed before a
//                                                                               connection's (next) request
// api.max_body_bytes           1048576                                          larger request bodies get 413
// discovery.url                http://127.0.0.1:18090                           Discovery service base URL
// discovery.timeout_ms         10000                                            per POST /discover
// worker.queue                 celery                                           queue the orchestrator worker consumes
// worker.concurrency           0 (= number of CPUs)                             tasks run at once
// worker.prefetch_multiplier   4                                                prefetch = concurrency * this
// extractor.queue              extraction_queue                                 queue the extractor consumes
// extractor.concurrency        256                                              requests in flight, all hosts
// extractor.parse_threads      0 (= number of CPUs)                             threads parsing pages
// extractor.prefetch           4                                                extract messages taken ahead
// extractor.lease_ms           60000                                            how long a leased request is
//                                                                               ours without renewal
// extractor.user_agent         Celeriac/<version> (+https://celeriac.dev/bot)   when a config sets none
// tasks.site_analysis_max_retries    3                                          trigger_site_analysis retries
// tasks.site_analysis_retry_delay_s  60                                         delay before each retry
// tasks.site_analysis_backoff_max_s  0 (= fixed delay)                          > 0: exponential backoff with
//                                                                               jitter from the delay up to this
// beat.catch_up_grace_s        0 (= no limit)                                   a run missed while no beat ran
//                                                                               fires late unless older than this
// beat.batch_size              1000                                             due tasks fired per transaction
// beat.max_sleep_s             60                                               longest sleep without a notification

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/base/result.hpp"

namespace celeriac {

struct DatabaseSettings {
  std::string url = "postgresql://celeriac:celeriac@127.0.0.1:16432/celeriac";
  int64_t pool_size = 4;
  int64_t connect_timeout_s = 5;
  int64_t max_attempts = 5;
};

struct BrokerSettings {
  std::string url = "amqp://guest:guest@127.0.0.1:16672//";
};

struct LogSettings {
  std::string level = "info";
  std::string format = "text";
};

struct ApiSettings {
  std::string listen = "127.0.0.1:18080";
  std::string token;
  int64_t threads = 8;
  int64_t max_queued = 64;
  int64_t read_timeout_s = 10;
  int64_t write_timeout_s = 10;
  int64_t keep_alive_timeout_s = 5;
  int64_t max_body_bytes = 1 << 20;
};

struct DiscoverySettings {
  std::string url = "http://127.0.0.1:18090";
  int64_t timeout_ms = 10'000;
};

struct WorkerSettings {
  std::string queue = "celery";
  int64_t concurrency = 0;
  int64_t prefetch_multiplier = 4;
  // ETA/countdown messages held in memory at most; later-due ones wait in delay queues.
  int64_t max_held_eta = 1000;
  // Threads stuck in tasks past their hard time limit at most; past it the worker shuts down
  // and exits with status 3, for its supervisor to restart it.
  int64_t max_abandoned_threads = 4;
};

struct ExtractorSettings {
  std::string queue = "extraction_queue";
  int64_t concurrency = 256;
  int64_t parse_threads = 0;
  int64_t prefetch = 4;
  int64_t lease_ms = 60'000;
  std::string user_agent = "Celeriac/" CELERIAC_VERSION " (+https://celeriac.dev/bot)";
};

struct TaskSettings {
  int64_t site_analysis_max_retries = 3;
  int64_t site_analysis_retry_delay_s = 60;
  int64_t site_analysis_backoff_max_s = 0;
};

struct BeatSettings {
  int64_t catch_up_grace_s = 0;
  int64_t batch_size = 1000;
  int64_t max_sleep_s = 60;
};

struct Settings {
  DatabaseSettings database;
  BrokerSettings broker;
  LogSettings log;
  ApiSettings api;
  DiscoverySettings discovery;
  WorkerSettings worker;
  ExtractorSettings extractor;
  TaskSettings tasks;
  BeatSettings beat;

  // Reads environment variables; tests pass their own.
  using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;
  static EnvLookup ProcessEnv();

  // Defaults, then the TOML file at `path` (if given), then the environment.
  static Result<Settings> Load(const std::optional<std::string>& path, const EnvLookup& env);
  // Same, with the TOML document given as text (`origin` names it in errors).
  static Result<Settings> Parse(std::string_view toml_text, std::string_view origin,
                                const EnvLookup& env);

  // "section.key = value" lines of the effective settings, for `config show`: secret keys
  // (api.token) as "***", and every other string through MaskSecrets (core/base/secrets.hpp),
  // which hides passwords in URLs, key=value strings and query parameters.
  std::vector<std::string> Describe() const;
};

}  // namespace celeriac
