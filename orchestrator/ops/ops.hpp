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
#include "state/dead_letter_store.hpp"
#include "state/runs.hpp"

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

// ---- runs and dead letters (their rows live in state/) -----------------------------------------

using state::DeadLetterFilter;
using state::DeadLetterRow;
using state::HostRow;
using state::JobRow;
using state::kRequestStates;
using state::ListDeadLetters;
using state::ListRuns;
using state::PurgeDeadLetters;
using state::PurgeResult;
using state::RunFilter;
using state::RunRow;
using state::ShowDeadLetter;
using state::ShowRun;
using state::ShowRunOptions;

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

}  // namespace celeriac::orchestrator::ops
