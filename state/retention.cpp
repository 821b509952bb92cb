#include "state/retention.hpp"

#include <algorithm>
#include <optional>
#include <string>

#include <fmt/format.h>

#include "state/crawl_store.hpp"
#include "state/sql_util.hpp"

namespace celeriac::state {
namespace {

int64_t Micros(Clock::WallTime t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}
// A timestamptz from microseconds since the epoch in parameter `param`.
std::string Ts(const std::string& param) {
  return "('epoch'::timestamptz + (" + param + ")::bigint * interval '1 microsecond')";
}

bool Stopped(const RetentionOptions& o) { return o.stop && o.stop(); }

// What of a finished run is deleted: its requests or its hosts.
struct RunPart {
  const char* name;  // for errors
  const char* mark;  // crawl_runs column set once they are all gone
  // Deletes up to $2 rows of run $1; the rows of jobs still open are never chosen.
  std::string delete_batch;
  std::string any_left;  // whether run $1 still has rows of this kind
};

RunPart Requests() {
  // A request a refetch letter names stays while that letter can be replayed (the partial
  // index dead_letters_refetch_request of migrations/0006 answers this per request).
  return {"crawl_requests", "requests_pruned_at",
          fmt::format(
              "DELETE FROM crawl_requests WHERE id = ANY(ARRAY("
              " SELECT q.id FROM crawl_requests q JOIN extraction_jobs j ON j.id = q.job_id"
              " WHERE j.run_id = $1 AND j.status NOT IN ('pending', 'running')"
              " AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.task_name = '{}'"
              "  AND d.purged_at IS NULL AND d.error_context ->> 'request_id' = q.id::text)"
              " LIMIT $2))",
              kRefetchTask),
          "SELECT EXISTS (SELECT 1 FROM crawl_requests q JOIN extraction_jobs j "
          "ON j.id = q.job_id WHERE j.run_id = $1)"};
}

RunPart Hosts() {
  return {"crawl_hosts", "hosts_pruned_at",
          "DELETE FROM crawl_hosts WHERE run_id = $1 AND host = ANY(ARRAY("
          " SELECT host FROM crawl_hosts WHERE run_id = $1 LIMIT $2))",
          "SELECT EXISTS (SELECT 1 FROM crawl_hosts WHERE run_id = $1)"};
}

// Runs finished before `cutoff` in turn, one batch per transaction; returns rows deleted into
// `deleted`. Sets `complete` false when stopped.
Status PruneRuns(pg::Pool& pool, const RunPart& part, Clock::WallTime cutoff,
                 const RetentionOptions& o, int64_t& deleted, bool& complete) {
  // The next run to look at has an id above this one (a run left with rows that must stay is
  // passed by, and looked at again by the next cleanup).
  int64_t after = 0;
  const std::string pick = fmt::format(
      "SELECT r.id FROM crawl_runs r WHERE r.{} IS NULL AND r.id > $2 "
      "AND r.status IN ('succeeded', 'failed', 'aborted') AND r.finished_at < {} "
      "AND NOT EXISTS (SELECT 1 FROM extraction_jobs j WHERE j.run_id = r.id "
      " AND j.status IN ('pending', 'running')) "
      "ORDER BY r.id LIMIT 1 FOR UPDATE OF r SKIP LOCKED",
      part.mark, Ts("$1"));
  while (true) {
    if (Stopped(o)) {
      complete = false;
      return Ok();
    }
    struct Step {
      std::optional<int64_t> run;
      int64_t deleted = 0;
    };
    auto step = pool.Transact<Step>([&](pqxx::transaction_base& tx) -> Result<Step> {
      Step s;
      const auto run = tx.exec_params(pick, Micros(cutoff), after);
      if (run.empty()) return s;
      s.run = run[0][0].as<int64_t>();
      s.deleted = static_cast<int64_t>(
          tx.exec_params(part.delete_batch, *s.run, o.batch).affected_rows());
      if (s.deleted < o.batch && !tx.exec_params1(part.any_left, *s.run)[0].as<bool>())
        tx.exec_params(fmt::format("UPDATE crawl_runs SET {} = now() WHERE id = $1", part.mark),
                       *s.run);
      return s;
    });
    if (!step)
      return Error(step.error().code(),
                   fmt::format("deleting {} of finished runs: {}", part.name,
                               step.error().message()),
                   step.error().retryable());
    if (!step->run) return Ok();
    deleted += step->deleted;
    // A full batch: the run may have more; otherwise it is done (marked, or left with rows
    // that must stay).
    after = step->deleted >= o.batch ? *step->run - 1 : *step->run;
  }
}

// Runs `delete_batch` ($1: cutoff in microseconds, $2: batch) until it deletes less than a
// batch.
Status DeleteInBatches(pg::Pool& pool, const char* name, const std::string& delete_batch,
                       Clock::WallTime cutoff, const RetentionOptions& o, int64_t& deleted,
                       bool& complete) {
  while (true) {
    if (Stopped(o)) {
      complete = false;
      return Ok();
    }
    auto n = pool.Transact<int64_t>([&](pqxx::transaction_base& tx) -> Result<int64_t> {
      return static_cast<int64_t>(
          tx.exec_params(delete_batch, Micros(cutoff), o.batch).affected_rows());
    });
    if (!n)
      return Error(n.error().code(), fmt::format("deleting {}: {}", name, n.error().message()),
                   n.error().retryable());
    deleted += *n;
    if (*n < o.batch) return Ok();
  }
}

}  // namespace

nlohmann::ordered_json RetentionCounts::ToJson() const {
  return {{"deleted",
           {{"crawl_requests", crawl_requests},
            {"crawl_hosts", crawl_hosts},
            {"task_results", task_results},
            {"dead_letters", dead_letters}}},
          {"complete", complete}};
}

Result<RetentionCounts> DeleteExpired(pg::Pool& pool, Clock::WallTime now,
                                      const RetentionOptions& options, RetentionCounts* so_far) {
  RetentionOptions o = options;
  o.batch = std::max<int64_t>(1, o.batch);
  RetentionCounts counts;
  auto fail = [&](const Error& e) -> Result<RetentionCounts> {
    if (so_far) *so_far = counts;
    return e;
  };
  const auto& ages = o.ages;
  if (ages.task_results.count() > 0) {
    // The outer condition is checked again on a row a concurrent write changed (a redelivered
    // task recording a new state): such a row stays.
    const std::string sql =
        "DELETE FROM task_results WHERE task_id = ANY(ARRAY("
        " SELECT task_id FROM task_results WHERE date_done < " + Ts("$1") +
        " ORDER BY date_done LIMIT $2)) AND date_done < " + Ts("$1");
    if (auto st = DeleteInBatches(pool, "task_results", sql, now - ages.task_results, o,
                                  counts.task_results, counts.complete);
        !st)
      return fail(st.error());
  }
  if (ages.dead_letters.count() > 0) {
    // Purged ones by when they were purged; replayed ones by their last replay (a forced
    // replay meanwhile keeps the row: the outer condition is checked again).
    const std::string done =
        "(purged_at < " + Ts("$1") + " OR (purged_at IS NULL AND replayed_at < " + Ts("$1") +
        "))";
    const std::string sql =
        "DELETE FROM dead_letters WHERE id = ANY(ARRAY(SELECT id FROM ("
        " (SELECT id FROM dead_letters WHERE purged_at < " + Ts("$1") + " LIMIT $2)"
        " UNION ALL (SELECT id FROM dead_letters WHERE purged_at IS NULL AND replayed_at < " +
        Ts("$1") + " LIMIT $2)) s LIMIT $2)) AND " + done;
    if (auto st = DeleteInBatches(pool, "dead_letters", sql, now - ages.dead_letters, o,
                                  counts.dead_letters, counts.complete);
        !st)
      return fail(st.error());
  }
  if (ages.crawl_requests.count() > 0) {
    if (auto st = PruneRuns(pool, Requests(), now - ages.crawl_requests, o, counts.crawl_requests,
                            counts.complete);
        !st)
      return fail(st.error());
  }
  if (ages.crawl_hosts.count() > 0) {
    if (auto st = PruneRuns(pool, Hosts(), now - ages.crawl_hosts, o, counts.crawl_hosts,
                            counts.complete);
        !st)
      return fail(st.error());
  }
  return counts;
}

}  // namespace celeriac::state
