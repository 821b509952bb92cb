#pragma once
// Retention: deletes what has aged out of Celeriac's tables (celery.backend_cleanup runs it;
// orchestrator/tasks/backend_cleanup.hpp). Each kind has its own age; 0 keeps it forever.
//
//   crawl_requests   the frontier rows of runs finished (succeeded, failed, aborted) more than
//                    the age ago; the run, its jobs, counters and items stay
//   crawl_hosts      the hosts (robots.txt, politeness state) of such runs
//   task_results     finished task states (date_done: SUCCESS, FAILURE, REVOKED) older than
//                    the age, as Celery's backend_cleanup deletes results older than
//                    result_expires
//   dead_letters     letters purged more than the age ago, and letters replayed more than the
//                    age ago (last replay) and not purged
//
// Never deleted: anything of a run that is pending or running, or that has a job pending or
// running; a request that a refetch dead letter still names while that letter can be replayed
// (not purged: a replayed one can be replayed again with --force), since its replay reads the
// request; task states not finished (PENDING, STARTED, RETRY); dead letters neither purged nor
// replayed. Each condition is checked again by the statement that deletes, so a row that came
// back to life meanwhile (a replay, a redelivered task) stays.
//
// Bounded batches: every transaction deletes at most `batch` rows of one table (requests and
// hosts: of one run, whose row it locks FOR UPDATE SKIP LOCKED, so no job can be added to it
// meanwhile and two cleanups running at once share the work instead of waiting). A huge table
// is worked through in many short transactions; `stop` is asked between them. A run whose
// requests (hosts) are all gone is marked (crawl_runs.requests_pruned_at, hosts_pruned_at:
// migrations/0006) and not looked at again, unless a job is added to it later.
//
// Threading: thread-safe (the Pool is); runs on the caller's thread until done or stopped.

#include <chrono>
#include <cstdint>
#include <functional>

#include <nlohmann/json.hpp>

#include "core/base/clock.hpp"
#include "core/base/result.hpp"
#include "core/pg/pool.hpp"

namespace celeriac::state {

// How long each kind is kept; zero = forever.
struct RetentionAges {
  std::chrono::seconds crawl_requests{0};
  std::chrono::seconds crawl_hosts{0};
  std::chrono::seconds task_results{0};
  std::chrono::seconds dead_letters{0};
};

struct RetentionOptions {
  RetentionAges ages;
  int64_t batch = 1000;          // rows deleted per transaction (at least 1)
  std::function<bool()> stop;    // asked between transactions; true ends the run early
};

// Rows deleted, by table.
struct RetentionCounts {
  int64_t crawl_requests = 0;
  int64_t crawl_hosts = 0;
  int64_t task_results = 0;
  int64_t dead_letters = 0;
  bool complete = true;  // false: stopped before everything aged out was deleted

  int64_t total() const { return crawl_requests + crawl_hosts + task_results + dead_letters; }
  // {"deleted": {"crawl_requests": n, "crawl_hosts": n, "task_results": n, "dead_letters": n},
  //  "complete": bool}
  nlohmann::ordered_json ToJson() const;
};

// Deletes every kind whose age is set, as of `now`, in batches. On a database error the rows
// deleted so far stay deleted; the error says what failed, and `so_far` (when given) what was
// deleted before it.
Result<RetentionCounts> DeleteExpired(pg::Pool& pool, Clock::WallTime now,
                                      const RetentionOptions& options,
                                      RetentionCounts* so_far = nullptr);

}  // namespace celeriac::state
