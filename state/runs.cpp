#include "state/runs.hpp"

#include <set>

#include <fmt/format.h>

#include "core/base/ids.hpp"
#include "state/run_rows.hpp"
#include "state/sql_util.hpp"

namespace celeriac::state {
namespace {

using namespace sql;

const std::string& RunColumns() {
  static const std::string cols =
      "id, crawl_task_id, celery_task_id, trigger, status, status_reason, configs_dispatched, "
      "sources_skipped::text, pages, items_new, items_updated, items_unchanged, errors, bytes, " +
      Micros("created_at") + ", " + Micros("started_at") + ", " + Micros("finished_at") +
      ", error_counts::text";
  return cols;
}

// An error_counts column: a JSON object of class -> count. Anything else (never expected) shows
// as an empty object rather than failing the listing.
Json ErrorCounts(const pqxx::field& f) {
  Json j = ParseColumn(f, Json::object());
  return j.is_object() ? j : Json::object();
}

RunRow RunFrom(const pqxx::row& r) {
  RunRow run;
  run.id = r[0].as<int64_t>();
  if (!r[1].is_null()) run.crawl_task_id = r[1].as<int64_t>();
  run.celery_task_id = r[2].as<std::string>();
  run.trigger = r[3].as<std::string>();
  run.status = r[4].as<std::string>();
  run.status_reason = OptText(r[5]);
  run.configs_dispatched = r[6].as<int64_t>();
  // jsonb sorts keys; the task result's order (data_source_id, reason) reads better.
  for (const auto& s : ParseColumn(r[7], Json::array())) {
    if (!s.is_object() || !s.contains("data_source_id")) {
      run.sources_skipped.push_back(s);
      continue;
    }
    Json ordered{{"data_source_id", s["data_source_id"]}};
    for (const auto& [k, v] : s.items())
      if (k != "data_source_id") ordered[k] = v;
    run.sources_skipped.push_back(std::move(ordered));
  }
  run.pages = r[8].as<int64_t>();
  run.items_new = r[9].as<int64_t>();
  run.items_updated = r[10].as<int64_t>();
  run.items_unchanged = r[11].as<int64_t>();
  run.errors = r[12].as<int64_t>();
  run.bytes = r[13].as<int64_t>();
  run.created_at = FromMicros(r[14].as<int64_t>());
  run.started_at = OptTime(r[15]);
  run.finished_at = OptTime(r[16]);
  run.error_counts = ErrorCounts(r[17]);
  return run;
}

const std::string& JobColumns() {
  static const std::string cols =
      "id, crawl_config_id, config_version, data_source_id, celery_task_id, status, "
      "status_reason, pages, items_new, items_updated, items_unchanged, errors, bytes, "
      "published_at IS NOT NULL, item_errors, requests_open, requests_total, requests_failed, "
      "error_counts::text, " +
      Micros("created_at") + ", " + Micros("started_at") + ", " + Micros("finished_at");
  return cols;
}

JobRow JobFrom(const pqxx::row& r) {
  JobRow job;
  job.id = r[0].as<int64_t>();
  job.crawl_config_id = r[1].as<int64_t>();
  job.config_version = r[2].as<int64_t>();
  job.data_source_id = r[3].as<int64_t>();
  job.celery_task_id = r[4].as<std::string>();
  job.status = r[5].as<std::string>();
  job.status_reason = OptText(r[6]);
  job.pages = r[7].as<int64_t>();
  job.items_new = r[8].as<int64_t>();
  job.items_updated = r[9].as<int64_t>();
  job.items_unchanged = r[10].as<int64_t>();
  job.errors = r[11].as<int64_t>();
  job.bytes = r[12].as<int64_t>();
  job.published = r[13].as<bool>();
  job.item_errors = r[14].as<int64_t>();
  job.requests_open = r[15].as<int64_t>();
  job.requests_total = r[16].as<int64_t>();
  job.requests_failed = r[17].as<int64_t>();
  job.error_counts = ErrorCounts(r[18]);
  job.created_at = FromMicros(r[19].as<int64_t>());
  job.started_at = OptTime(r[20]);
  job.finished_at = OptTime(r[21]);
  return job;
}

const std::string& HostColumns() {
  static const std::string cols =
      "host, robots_status, octet_length(robots_txt), " + Micros("robots_fetched_at") +
      ", crawl_delay_ms, state, delay_ms, " + Micros("next_slot_at") + ", " +
      Micros("backoff_until") + ", requests, errors, rate_limited, " + Micros("updated_at");
  return cols;
}

HostRow HostFrom(const pqxx::row& r) {
  HostRow h;
  h.host = r[0].as<std::string>();
  h.robots_status = OptInt64(r[1]);
  h.robots_txt_bytes = OptInt64(r[2]);
  h.robots_fetched_at = OptTime(r[3]);
  h.crawl_delay_ms = OptInt64(r[4]);
  h.state = r[5].as<std::string>();
  h.delay_ms = r[6].as<int64_t>();
  h.next_slot_at = FromMicros(r[7].as<int64_t>());
  h.backoff_until = OptTime(r[8]);
  h.requests = r[9].as<int64_t>();
  h.errors = r[10].as<int64_t>();
  h.rate_limited = r[11].as<int64_t>();
  h.updated_at = FromMicros(r[12].as<int64_t>());
  return h;
}

// A Postgres array literal of the given values ({1,2,3} or {"a","b"}).
template <typename T>
std::string ArrayLiteral(const std::vector<T>& values) {
  std::string out = "{";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += ',';
    if constexpr (std::is_same_v<T, std::string>) {
      out += '"' + values[i] + '"';  // uuids: nothing to escape
    } else {
      out += std::to_string(values[i]);
    }
  }
  return out + "}";
}

// The crawl task, locked against a concurrent disable; NotFound / InvalidArgument.
Status CheckCrawlTask(pqxx::transaction_base& tx, int64_t crawl_task_id, bool lock) {
  const auto task = tx.exec_params(
      std::string("SELECT enabled FROM crawl_tasks WHERE id = $1") + (lock ? " FOR SHARE" : ""),
      crawl_task_id);
  if (task.empty())
    return Error(ErrorCode::kNotFound, fmt::format("crawl task {} does not exist", crawl_task_id),
                 false);
  if (!task[0][0].as<bool>())
    return Error(ErrorCode::kInvalidArgument,
                 fmt::format("crawl task {} is disabled", crawl_task_id), false);
  return Ok();
}

// First time: which config each data source dispatches; jobs created for them.
void DecidePlan(pqxx::transaction_base& tx, int64_t crawl_task_id, RunPlan& out) {
  const auto rows = tx.exec_params(
      "SELECT s.ds, ds.id IS NOT NULL, c.id, c.version "
      "FROM crawl_tasks t, unnest(t.data_source_ids) WITH ORDINALITY AS s(ds, ord) "
      "LEFT JOIN data_sources ds ON ds.id = s.ds "
      "LEFT JOIN LATERAL (SELECT id, version FROM crawl_configs "
      "                    WHERE data_source_id = s.ds AND status = 'active' "
      "                    ORDER BY version DESC LIMIT 1) c ON true "
      "WHERE t.id = $1 ORDER BY s.ord",
      crawl_task_id);
  std::set<int64_t> seen;
  std::vector<NewJob> jobs;
  for (const auto& r : rows) {
    const int64_t ds = r[0].as<int64_t>();
    if (!seen.insert(ds).second) continue;  // listed twice: dispatched once
    if (!r[1].as<bool>()) {
      out.skipped.push_back({{"data_source_id", ds}, {"reason", "data_source_not_found"}});
      continue;
    }
    if (r[2].is_null()) {
      out.skipped.push_back({{"data_source_id", ds}, {"reason", "no_active_config"}});
      continue;
    }
    NewJob job;
    job.run_id = out.run_id;
    job.crawl_config_id = r[2].as<int64_t>();
    job.config_version = r[3].as<int64_t>();
    job.data_source_id = ds;
    job.celery_task_id = NewUuid4();
    jobs.push_back(std::move(job));
  }
  EnsureJobs(tx, jobs);
  tx.exec_params(
      "UPDATE crawl_runs SET status = CASE WHEN $2 = 0 THEN 'succeeded' ELSE 'running' END, "
      " status_reason = CASE WHEN $2 = 0 THEN 'no active config for any data source' END, "
      " configs_dispatched = $2, sources_skipped = $3::jsonb, started_at = now(), "
      " finished_at = CASE WHEN $2 = 0 THEN now() END "
      "WHERE id = $1",
      out.run_id, static_cast<int64_t>(jobs.size()), out.skipped.dump());
}

}  // namespace

int64_t EnsureRun(pqxx::transaction_base& tx, const NewRun& run) {
  tx.exec_params(
      "INSERT INTO crawl_runs (crawl_task_id, celery_task_id, trigger, status, scheduled_for, "
      " configs_dispatched, started_at, status_reason) "
      "VALUES ($1, $2, $3, $4, $5::timestamptz, $6, CASE WHEN $7 THEN now() END, $8) "
      "ON CONFLICT (celery_task_id) DO NOTHING",
      OptInt(run.crawl_task_id), run.celery_task_id, run.trigger, run.status, run.scheduled_for,
      run.configs_dispatched, run.started, run.status_reason);
  return tx.exec_params1("SELECT id FROM crawl_runs WHERE celery_task_id = $1",
                         run.celery_task_id)[0]
      .as<int64_t>();
}

std::optional<int64_t> EnsureJob(pqxx::transaction_base& tx, const NewJob& job) {
  const auto inserted = tx.exec_params(
      "INSERT INTO extraction_jobs (run_id, crawl_config_id, config_version, data_source_id, "
      " celery_task_id, published_at, status, started_at, last_progress_at, watchdog_ms) "
      "VALUES ($1, $2, $3, $4, $5, CASE WHEN $6 THEN now() END, "
      " CASE WHEN $7 THEN 'running' ELSE 'pending' END, CASE WHEN $7 THEN now() END, "
      " CASE WHEN $7 THEN now() END, $8::int) "
      "ON CONFLICT DO NOTHING",
      job.run_id, job.crawl_config_id, job.config_version, job.data_source_id,
      job.celery_task_id, job.published, job.running, OptInt(job.watchdog_ms));
  // A job added to a run whose requests or hosts retention deleted (an extract message naming
  // an old run): the run is looked at again once it ends (state/retention.hpp). Retention holds
  // the run row locked while it marks it, so this waits for its commit and then clears the mark.
  if (inserted.affected_rows() > 0)
    tx.exec_params(
        "UPDATE crawl_runs SET requests_pruned_at = NULL, hosts_pruned_at = NULL "
        "WHERE id = $1 AND (requests_pruned_at IS NOT NULL OR hosts_pruned_at IS NOT NULL)",
        job.run_id);
  const auto row = tx.exec_params(
      "SELECT id FROM extraction_jobs WHERE run_id = $1 AND crawl_config_id = $2", job.run_id,
      job.crawl_config_id);
  if (row.empty()) return std::nullopt;
  return row[0][0].as<int64_t>();
}

void EnsureJobs(pqxx::transaction_base& tx, const std::vector<NewJob>& jobs) {
  if (jobs.empty()) return;
  std::vector<int64_t> runs, configs, versions, sources;
  std::vector<std::string> task_ids;
  for (const auto& j : jobs) {
    runs.push_back(j.run_id);
    configs.push_back(j.crawl_config_id);
    versions.push_back(j.config_version);
    sources.push_back(j.data_source_id);
    task_ids.push_back(j.celery_task_id);
  }
  tx.exec_params(
      "INSERT INTO extraction_jobs (run_id, crawl_config_id, config_version, "
      " data_source_id, celery_task_id) "
      "SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::int[], $4::bigint[], $5::text[]) "
      "ON CONFLICT (run_id, crawl_config_id) DO NOTHING",
      ArrayLiteral(runs), ArrayLiteral(configs), ArrayLiteral(versions), ArrayLiteral(sources),
      ArrayLiteral(task_ids));
}

Result<int64_t> CreatePendingRun(pg::Pool& pool, int64_t crawl_task_id,
                                 const std::string& celery_task_id) {
  return pool.Transact<int64_t>([&](pqxx::transaction_base& tx) -> Result<int64_t> {
    if (auto st = CheckCrawlTask(tx, crawl_task_id, /*lock=*/false); !st) return st.error();
    NewRun run;
    run.crawl_task_id = crawl_task_id;
    run.celery_task_id = celery_task_id;
    run.trigger = "run-now";
    return EnsureRun(tx, run);
  });
}

Status DropPendingRun(pg::Pool& pool, int64_t run_id) {
  return pool.Execute([&](pqxx::transaction_base& tx) -> Status {
    tx.exec_params("DELETE FROM crawl_runs WHERE id = $1 AND status = 'pending'", run_id);
    return Ok();
  });
}

Result<RunPlan> PlanRun(pg::Pool& pool, int64_t crawl_task_id, const std::string& celery_task_id,
                        const std::string& trigger,
                        const std::optional<std::string>& scheduled_for) {
  return pool.Transact<RunPlan>([&](pqxx::transaction_base& tx) -> Result<RunPlan> {
    if (auto st = CheckCrawlTask(tx, crawl_task_id, /*lock=*/true); !st) return st.error();
    NewRun fresh;
    fresh.crawl_task_id = crawl_task_id;
    fresh.celery_task_id = celery_task_id;
    fresh.trigger = trigger;
    fresh.scheduled_for = scheduled_for;
    EnsureRun(tx, fresh);
    const auto run = tx.exec_params1(
        "SELECT id, status, trigger, sources_skipped::text FROM crawl_runs "
        "WHERE celery_task_id = $1 FOR UPDATE",
        celery_task_id);
    RunPlan out;
    out.run_id = run[0].as<int64_t>();
    out.trigger = run[2].as<std::string>();
    if (run[1].as<std::string>() == "pending") {
      DecidePlan(tx, crawl_task_id, out);
    } else {
      // Rebuilt field by field: jsonb does not keep key order.
      for (const auto& s : Json::parse(run[3].as<std::string>()))
        out.skipped.push_back({{"data_source_id", s["data_source_id"]}, {"reason", s["reason"]}});
    }
    for (const auto& r : tx.exec_params(
             "SELECT data_source_id, crawl_config_id, config_version, id, celery_task_id, "
             " published_at IS NOT NULL FROM extraction_jobs WHERE run_id = $1 ORDER BY id",
             out.run_id)) {
      out.dispatched.push_back({r[0].as<int64_t>(), r[1].as<int64_t>(), r[2].as<int64_t>(),
                                r[3].as<int64_t>(), r[4].as<std::string>(), r[5].as<bool>()});
    }
    return out;
  });
}

Status MarkJobsPublished(pg::Pool& pool, const std::vector<int64_t>& job_ids) {
  return pool.Execute([&](pqxx::transaction_base& tx) -> Status {
    tx.exec_params("UPDATE extraction_jobs SET published_at = now() WHERE id = ANY($1::bigint[])",
                   IdArray(job_ids));
    return Ok();
  });
}

Json HostRow::ToJson() const {
  Json o;
  o["host"] = host;
  o["state"] = state;
  o["delay_ms"] = delay_ms;
  o["next_slot_at"] = FormatIso8601(next_slot_at);
  o["backoff_until"] = TimeOrNull(backoff_until);
  o["requests"] = requests;
  o["errors"] = errors;
  o["rate_limited"] = rate_limited;
  o["robots_status"] = OrNull(robots_status);
  o["robots_txt_bytes"] = OrNull(robots_txt_bytes);
  o["robots_fetched_at"] = TimeOrNull(robots_fetched_at);
  o["crawl_delay_ms"] = OrNull(crawl_delay_ms);
  o["updated_at"] = FormatIso8601(updated_at);
  return o;
}

Json RunRow::ToJson() const {
  Json j;
  j["id"] = id;
  j["crawl_task_id"] = OrNull(crawl_task_id);
  j["celery_task_id"] = celery_task_id;
  j["trigger"] = trigger;
  j["status"] = status;
  j["status_reason"] = OrNull(status_reason);
  j["configs_dispatched"] = configs_dispatched;
  j["sources_skipped"] = sources_skipped;
  j["pages"] = pages;
  j["items_new"] = items_new;
  j["items_updated"] = items_updated;
  j["items_unchanged"] = items_unchanged;
  j["errors"] = errors;
  j["error_counts"] = error_counts;
  j["bytes"] = bytes;
  j["created_at"] = FormatIso8601(created_at);
  j["started_at"] = TimeOrNull(started_at);
  j["finished_at"] = TimeOrNull(finished_at);
  if (with_request_states) {
    Json counts = Json::object();
    for (const char* state : kRequestStates) {
      const auto it = requests_by_state.find(state);
      counts[state] = it == requests_by_state.end() ? 0 : it->second;
    }
    j["requests"] = std::move(counts);
  }
  if (with_jobs) {
    Json out = Json::array();
    for (const auto& job : jobs) {
      Json o;
      o["id"] = job.id;
      o["crawl_config_id"] = job.crawl_config_id;
      o["config_version"] = job.config_version;
      o["data_source_id"] = job.data_source_id;
      o["celery_task_id"] = job.celery_task_id;
      o["status"] = job.status;
      o["status_reason"] = OrNull(job.status_reason);
      o["published"] = job.published;
      o["pages"] = job.pages;
      o["items_new"] = job.items_new;
      o["items_updated"] = job.items_updated;
      o["items_unchanged"] = job.items_unchanged;
      o["item_errors"] = job.item_errors;
      o["errors"] = job.errors;
      o["error_counts"] = job.error_counts;
      o["bytes"] = job.bytes;
      o["requests_open"] = job.requests_open;
      o["requests_total"] = job.requests_total;
      o["requests_failed"] = job.requests_failed;
      o["created_at"] = FormatIso8601(job.created_at);
      o["started_at"] = TimeOrNull(job.started_at);
      o["finished_at"] = TimeOrNull(job.finished_at);
      out.push_back(std::move(o));
    }
    j["jobs"] = std::move(out);
  }
  if (with_hosts) {
    Json out = Json::array();
    for (const auto& host : hosts) out.push_back(host.ToJson());
    j["hosts"] = std::move(out);
    j["hosts_total"] = hosts_total;
  }
  return j;
}

Result<std::vector<RunRow>> ListRuns(pg::Pool& pool, const RunFilter& filter) {
  return pool.Transact<std::vector<RunRow>>(
      [&](pqxx::transaction_base& tx) -> Result<std::vector<RunRow>> {
        std::vector<RunRow> out;
        for (const auto& r : tx.exec_params(
                 "SELECT " + RunColumns() +
                     " FROM crawl_runs "
                     "WHERE ($1::bigint IS NULL OR crawl_task_id = $1) "
                     "AND ($2::text IS NULL OR status = $2) "
                     "AND ($3::text IS NULL OR trigger = $3) "
                     "AND ($4::bigint IS NULL OR id < $4) "
                     "ORDER BY id DESC LIMIT $5::bigint",
                 OptInt(filter.crawl_task_id), filter.status, filter.trigger,
                 OptInt(filter.before_id), LimitParam(filter.limit)))
          out.push_back(RunFrom(r));
        return out;
      });
}

Result<std::optional<RunRow>> ShowRun(pg::Pool& pool, int64_t run_id,
                                      const ShowRunOptions& options) {
  return pool.Transact<std::optional<RunRow>>(
      [&](pqxx::transaction_base& tx) -> Result<std::optional<RunRow>> {
        const auto rows = tx.exec_params(
            "SELECT " + RunColumns() + " FROM crawl_runs WHERE id = $1", run_id);
        if (rows.empty()) return std::optional<RunRow>();
        RunRow run = RunFrom(rows[0]);
        run.with_jobs = true;
        for (const auto& r : tx.exec_params(
                 "SELECT " + JobColumns() + " FROM extraction_jobs WHERE run_id = $1 ORDER BY id",
                 run_id))
          run.jobs.push_back(JobFrom(r));
        if (options.hosts) {
          run.with_hosts = true;
          run.hosts_total =
              tx.exec_params1("SELECT count(*) FROM crawl_hosts WHERE run_id = $1", run_id)[0]
                  .as<int64_t>();
          for (const auto& r : tx.exec_params(
                   "SELECT " + HostColumns() +
                       " FROM crawl_hosts WHERE run_id = $1 "
                       "ORDER BY requests DESC, host LIMIT $2::bigint",
                   run_id, LimitParam(options.max_hosts)))
            run.hosts.push_back(HostFrom(r));
        }
        if (options.request_states) {
          run.with_request_states = true;
          for (const auto& r : tx.exec_params(
                   "SELECT r.state, count(*) FROM crawl_requests r "
                   "JOIN extraction_jobs j ON j.id = r.job_id "
                   "WHERE j.run_id = $1 GROUP BY r.state",
                   run_id))
            run.requests_by_state[r[0].as<std::string>()] = r[1].as<int64_t>();
        }
        return std::optional<RunRow>(std::move(run));
      });
}

}  // namespace celeriac::state
