#pragma once
// Ops: what admins and ops do, in one place, for the admin HTTP API and the CLI alike.
//
//   RunNow          publish execute_crawl_task for a crawl task exactly as a BFF would, plus the
//                   header x_celeriac_trigger=run-now; the run row is created first so the caller
//                   gets its id at once (the worker finds it by Celery task id).
//   Runs            list and show crawl runs with their progress and jobs.
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
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/clock.hpp"
#include "core/base/result.hpp"
#include "core/broker/broker.hpp"
#include "core/pg/pool.hpp"

namespace celeriac::orchestrator::ops {

using Json = nlohmann::ordered_json;

inline constexpr const char* kDeadLetterHeader = "x_celeriac_dead_letter_id";

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
  bool published = false;
};

struct RunRow {
  int64_t id = 0;
  int64_t crawl_task_id = 0;
  std::string celery_task_id;
  std::string trigger;
  std::string status;  // pending | running | succeeded | failed | aborted
  std::optional<std::string> status_reason;
  int64_t configs_dispatched = 0;
  Json sources_skipped = Json::array();
  int64_t pages = 0, items_new = 0, items_updated = 0, items_unchanged = 0, errors = 0, bytes = 0;
  Clock::WallTime created_at{};
  std::optional<Clock::WallTime> started_at;
  std::optional<Clock::WallTime> finished_at;
  std::vector<JobRow> jobs;  // filled by ShowRun only
  bool with_jobs = false;    // set by ShowRun: ToJson() includes "jobs", even when empty

  Json ToJson() const;  // ISO-8601 times (null when unset), "jobs" when with_jobs
};

struct RunFilter {
  std::optional<int64_t> crawl_task_id;
  std::optional<std::string> status;
  std::optional<std::string> trigger;
  int64_t limit = 50;           // newest first
  std::optional<int64_t> before_id;  // paging: runs with id < before_id
};

Result<std::vector<RunRow>> ListRuns(pg::Pool& pool, const RunFilter& filter);
Result<std::optional<RunRow>> ShowRun(pg::Pool& pool, int64_t run_id);  // nullopt = no such run

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
