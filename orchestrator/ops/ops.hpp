#pragma once
// Ops: what admins and ops do, in one place, for the admin HTTP API and the CLI alike.
//
//   RunNow          publish execute_crawl_task for a crawl task exactly as a BFF would, plus the
//                   header x_celeriac_trigger=run-now; the run row is created first so the caller
//                   gets its id at once (the worker finds it by Celery task id).
//   Runs            list and show crawl runs with their progress and error counts; a shown run
//                   also has its jobs, its hosts (politeness state) and its requests by state.
//   DeadLetters     list / show / replay / purge, filtered by queue, task name, error class and
//                   time range, each with a dry run.
//
// Replay republishes the original message whole (its stored headers, properties and body
// bytes) to its queue as a fresh delivery: `retries` reset to 0, a header
// x_celeriac_dead_letter_id naming the row, same task id. The row is marked (replay_count,
// replayed_at, replayed_task_id) in the same transaction that claimed it, committed only after
// the broker confirmed the publish; a row already replayed is refused unless forced. Purge
// marks rows purged_at (they leave lists unless asked for) rather than deleting them.
//
// Which rows replay and purge touch: those the filter selects, oldest first, up to `limit`.
// Rows named by id are always selected, so a refusal (already replayed, purged) or an unknown
// id is reported; a filter without ids selects replayed rows only with force, and purged rows
// never (a purged row is never replayed). Replay declares each target queue with Celery's
// parameters before publishing, so a replay never goes to a queue nobody declared.
//
// Threading: thread-safe (the pool and broker are).

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/clock.hpp"
#include "core/base/result.hpp"
#include "core/broker/broker.hpp"
#include "core/celery/dead_letter.hpp"
#include "core/pg/pool.hpp"

namespace celeriac::orchestrator::ops {

using Json = nlohmann::ordered_json;

inline constexpr const char* kDeadLetterHeader = celery::kDeadLetterIdHeader;

// ---- run-now ---------------------------------------------------------------------------------

struct RunNowResult {
  std::string task_id;  // Celery task id of the execute_crawl_task message
  int64_t run_id = 0;
};

struct RunNowOptions {
  std::string queue = "celery";  // the orchestrator worker's queue
};

// NotFound for an unknown crawl task, InvalidArgument for a disabled one (non-retryable);
// Unavailable when Postgres or the broker is down.
Result<RunNowResult> RunNow(pg::Pool& pool, broker::Broker& broker, int64_t crawl_task_id,
                            const RunNowOptions& options = {});

// Publishes trigger_site_analysis as a BFF would; returns the Celery task id.
Result<std::string> TriggerSiteAnalysis(broker::Broker& broker, int64_t data_source_id,
                                        const std::string& theme_name,
                                        const RunNowOptions& options = {});

// ---- runs ------------------------------------------------------------------------------------

struct JobRow {
  int64_t id = 0;
  int64_t crawl_config_id = 0;
  int64_t config_version = 0;
  int64_t data_source_id = 0;
  std::string celery_task_id;
  std::string status;
  std::optional<std::string> status_reason;
  int64_t pages = 0, items_new = 0, items_updated = 0, items_unchanged = 0, errors = 0, bytes = 0;
  int64_t item_errors = 0;
  int64_t requests_open = 0, requests_total = 0, requests_failed = 0;
  Json error_counts = Json::object();  // error class -> count
  bool published = false;
  Clock::WallTime created_at{};
  std::optional<Clock::WallTime> started_at;
  std::optional<Clock::WallTime> finished_at;
};

// One crawl_hosts row: a host's robots.txt and politeness state within a run. The robots.txt
// text itself is left out (its length in bytes is shown).
struct HostRow {
  std::string host;  // scheme://host[:port]
  std::optional<int64_t> robots_status;  // 0 = unreachable; nullopt = not asked
  std::optional<int64_t> robots_txt_bytes;
  std::optional<Clock::WallTime> robots_fetched_at;
  std::optional<int64_t> crawl_delay_ms;
  std::string state;  // ok | slowed | backing_off
  int64_t delay_ms = 0;
  Clock::WallTime next_slot_at{};
  std::optional<Clock::WallTime> backoff_until;
  int64_t requests = 0, errors = 0, rate_limited = 0;
  Clock::WallTime updated_at{};

  Json ToJson() const;
};

// The states of crawl_requests, in their CHECK constraint's order.
inline constexpr const char* kRequestStates[] = {"pending", "leased", "done", "failed",
                                                 "skipped"};

struct RunRow {
  int64_t id = 0;
  std::optional<int64_t> crawl_task_id;  // nullopt for a run a bare extract message started
  std::string celery_task_id;
  std::string trigger;
  std::string status;  // pending | running | succeeded | failed | aborted
  std::optional<std::string> status_reason;
  int64_t configs_dispatched = 0;
  Json sources_skipped = Json::array();
  int64_t pages = 0, items_new = 0, items_updated = 0, items_unchanged = 0, errors = 0, bytes = 0;
  Json error_counts = Json::object();  // error class (Download, HttpStatus, ...) -> count
  Clock::WallTime created_at{};
  std::optional<Clock::WallTime> started_at;
  std::optional<Clock::WallTime> finished_at;
  // Filled by ShowRun only; ToJson() includes each that was loaded, even when empty.
  std::vector<JobRow> jobs;
  bool with_jobs = false;
  std::vector<HostRow> hosts;        // the most active first, at most ShowRunOptions::max_hosts
  int64_t hosts_total = 0;           // all hosts of the run
  bool with_hosts = false;
  std::map<std::string, int64_t> requests_by_state;  // every kRequestStates, 0 when none
  bool with_request_states = false;

  // ISO-8601 times (null when unset); "jobs", "hosts" (+ "hosts_total") and "requests" (counts
  // by state, in kRequestStates order) when loaded.
  Json ToJson() const;
};

struct RunFilter {
  std::optional<int64_t> crawl_task_id;
  std::optional<std::string> status;
  std::optional<std::string> trigger;
  int64_t limit = 50;           // newest first
  std::optional<int64_t> before_id;  // paging: runs with id < before_id
};

Result<std::vector<RunRow>> ListRuns(pg::Pool& pool, const RunFilter& filter);

struct ShowRunOptions {
  bool hosts = true;           // crawl_hosts rows
  int64_t max_hosts = 1000;    // the most active first (by requests); 0 = all
  bool request_states = true;  // counts crawl_requests of the run's jobs by state (a scan of
                               // the run's requests: leave it out when polling)
};

// nullopt = no such run.
Result<std::optional<RunRow>> ShowRun(pg::Pool& pool, int64_t run_id,
                                      const ShowRunOptions& options = {});

// ---- dead letters ----------------------------------------------------------------------------

struct DeadLetterRow {
  int64_t id = 0;
  std::string queue;
  std::optional<std::string> task_name;
  std::optional<std::string> task_id;
  Json headers = Json::object();
  Json properties = Json::object();
  std::string body;  // original bytes
  std::string error_class;
  std::string error_message;
  Json error_context = Json::object();
  int64_t attempts = 0;
  Clock::WallTime first_failed_at{};
  Clock::WallTime created_at{};
  int64_t replay_count = 0;
  std::optional<Clock::WallTime> replayed_at;
  std::optional<std::string> replayed_task_id;
  std::optional<Clock::WallTime> purged_at;
  // The headers' exact bytes (an AMQP field table) when they held text Postgres refuses and
  // `headers` has them escaped.
  std::optional<std::string> raw_headers;

  // Body as text when it is valid UTF-8, else base64 ("body_base64").
  Json ToJson(bool with_message = true) const;
};

struct DeadLetterFilter {
  std::vector<int64_t> ids;  // empty = any
  std::optional<std::string> queue;
  std::optional<std::string> task_name;
  std::optional<std::string> error_class;
  std::optional<Clock::WallTime> since;  // created_at >= since
  std::optional<Clock::WallTime> until;  // created_at < until
  bool include_replayed = true;
  bool include_purged = false;
  int64_t limit = 100;  // newest first; for replay/purge: max rows touched (0 = no limit)
};

Result<std::vector<DeadLetterRow>> ListDeadLetters(pg::Pool& pool, const DeadLetterFilter& filter);
Result<std::optional<DeadLetterRow>> ShowDeadLetter(pg::Pool& pool, int64_t id);

struct ReplayOptions {
  bool dry_run = false;
  bool force = false;  // replay rows already replayed
};

struct ReplayOutcome {
  int64_t dead_letter_id = 0;
  // "replayed" | "would_replay" (dry run) | "already_replayed" (refused) | "purged" (refused)
  // | "not_found" (an id that does not exist or does not match the other filters)
  // | "failed" (message says why; the row is left as it was)
  std::string status;
  std::optional<std::string> task_id;
  std::string message;
  Json ToJson() const;
};

// Replays every row the filter selects (replayed rows included only with force).
Result<std::vector<ReplayOutcome>> ReplayDeadLetters(pg::Pool& pool, broker::Broker& broker,
                                                     const DeadLetterFilter& filter,
                                                     const ReplayOptions& options);

struct PurgeResult {
  int64_t count = 0;
  std::vector<int64_t> ids;
  bool dry_run = false;
};
Result<PurgeResult> PurgeDeadLetters(pg::Pool& pool, const DeadLetterFilter& filter, bool dry_run);

}  // namespace celeriac::orchestrator::ops
