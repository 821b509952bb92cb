#pragma once
// celery.backend_cleanup: Celery's own periodic task, which deletes expired results; here it
// runs retention (state/retention.hpp) with the ages of [retention] (retention_settings.hpp).
// Beat fires it daily at 04:00 UTC (its built-in entry, migrations/0007), exactly once across
// beats; a Python beat or `celery call celery.backend_cleanup` may send it too (arguments are
// ignored, as Celery's task takes none).
//
// Result (schemas/tasks/celery.backend_cleanup.result.schema.json): rows deleted per table,
// whether everything aged out was deleted, and the ages applied (0 = kept forever):
//   {"deleted": {"crawl_requests": 3400, "crawl_hosts": 7, "task_results": 12,
//                "dead_letters": 2},
//    "complete": true,
//    "max_age_s": {"crawl_requests": 604800, "crawl_hosts": 604800, "task_results": 86400,
//                  "dead_letters": 2592000}}
// The counts are logged. A task cancelled (soft time limit, worker shutdown) stops between two
// batches and returns what it deleted, complete = false. A database error fails it (FAILURE,
// never retried: tomorrow's run does the rest), after logging what it deleted before the error.
// Acked early, as Celery's: a worker killed meanwhile loses only the rest of today's run.

#include <functional>

#include "core/base/clock.hpp"
#include "core/pg/pool.hpp"
#include "core/worker/task_registry.hpp"
#include "orchestrator/tasks/retention_settings.hpp"
#include "state/retention.hpp"

namespace celeriac::orchestrator {

// The ages of `settings` (hours; 0 stays 0 = forever).
state::RetentionAges RetentionAgesOf(const RetentionSettings& settings);

// Deletes with the given options; `so_far` receives the counts before an error.
using RetentionRun = std::function<Result<state::RetentionCounts>(
    const state::RetentionOptions& options, state::RetentionCounts* so_far)>;

// The task function, deleting through `run` (tests pass their own).
worker::TaskFunction MakeBackendCleanup(const RetentionSettings& settings, RetentionRun run);
// The same on `pool`, as of `clock`'s now at each run.
worker::TaskFunction MakeBackendCleanup(const RetentionSettings& settings, pg::Pool& pool,
                                        const Clock& clock);

}  // namespace celeriac::orchestrator
