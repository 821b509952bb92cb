#include "state/crawl_store.hpp"

#include <algorithm>
#include <array>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include <fmt/format.h>
#include <openssl/evp.h>

#include "core/pg/sql.hpp"
#include "core/base/text.hpp"
#include "core/celery/codec.hpp"
#include "core/json/untrusted_json.hpp"
#include "core/url/url.hpp"
#include "state/commit_plan.hpp"
#include "state/dead_letter_rows.hpp"
#include "state/dead_letter_store.hpp"
#include "state/run_rows.hpp"
#include "state/sql_util.hpp"

namespace celeriac::state {
namespace {

using sql::JoinIds;

using Json = nlohmann::json;

constexpr const char* kJobColumns =
    "id, run_id, crawl_config_id, status, celery_task_id, coalesce(reply_to, ''), pages, "
    "items_new, items_updated, items_unchanged, errors, bytes, requests_open, requests_total, "
    "requests_failed, item_errors, error_counts::text, requests_sent";

CommitJob ReadJob(const pqxx::row& r) {
  CommitJob j;
  j.id = r[0].as<int64_t>();
  j.run_id = r[1].as<int64_t>();
  j.crawl_config_id = r[2].as<int64_t>();
  j.status = r[3].as<std::string>();
  j.celery_task_id = r[4].as<std::string>();
  j.reply_to = r[5].as<std::string>();
  j.pages = r[6].as<int64_t>();
  j.items_new = r[7].as<int64_t>();
  j.items_updated = r[8].as<int64_t>();
  j.items_unchanged = r[9].as<int64_t>();
  j.errors = r[10].as<int64_t>();
  j.bytes = r[11].as<int64_t>();
  j.requests_open = r[12].as<int64_t>();
  j.requests_total = r[13].as<int64_t>();
  j.requests_failed = r[14].as<int64_t>();
  j.item_errors = r[15].as<int64_t>();
  j.error_counts = Json::parse(r[16].as<std::string>());
  j.requests_sent = r[17].as<int64_t>();
  return j;
}

Json ExtractResult(const CommitJob& j) {
  return Json{{"job_id", j.id},
              {"run_id", j.run_id},
              {"crawl_config_id", j.crawl_config_id},
              {"status", j.status},
              {"pages", j.pages},
              {"items_new", j.items_new},
              {"items_updated", j.items_updated},
              {"items_unchanged", j.items_unchanged},
              {"errors", j.errors},
              {"bytes", j.bytes}};
}

// `sql` as a statement prepared under `name` on this connection: libpqxx prepares it on first
// use and keeps it for the connection's life, so Commit's statements are parsed and planned once
// per connection instead of once per batch.
template <typename... Args>
pqxx::result ExecPrepared(pqxx::transaction_base& tx, const std::string& name,
                          const std::string& sql, Args&&... args) {
  tx.conn().prepare(name, sql);
  return tx.exec_prepared(name, std::forward<Args>(args)...);
}

// Skips a job's pending requests (and leased ones too when it ends early: whoever holds them
// will find its lease gone); returns their ids.
std::vector<int64_t> SkipPending(pqxx::transaction_base& tx, int64_t job_id,
                                 const std::string& why, bool leased_too = false,
                                 const std::vector<int64_t>& fresh = {}) {
  // `fresh`: requests this transaction inserted already leased to us (Commit); skipped with the
  // pending ones, since nobody has fetched them yet.
  const std::string ids = "{" + JoinIds(fresh) + "}";
  const auto r = tx.exec_params(
      "UPDATE crawl_requests SET state = 'skipped', finished_at = now(), error_message = $2, "
      " lease_owner = NULL, lease_expires_at = NULL "
      "WHERE job_id = $1 AND (state = 'pending' OR ($3 AND state = 'leased') "
      "  OR (state = 'leased' AND id = ANY($4::bigint[]))) RETURNING id",
      job_id, why, leased_too, ids);
  std::vector<int64_t> skipped;
  skipped.reserve(r.size());
  for (const auto& row : r) skipped.push_back(row[0].as<int64_t>());
  return skipped;
}

// Writes the job row back (after its deltas were applied to the struct), ends it when its last
// open request closed, then updates its run; returns the FinishedJob when it ended.
std::optional<FinishedJob> WriteJob(pqxx::transaction_base& tx, CommitJob& j) {
  for (auto& [k, v] : j.d_error_counts.items()) AddCount(j.error_counts, k, v.get<int64_t>());
  bool ending = false;
  if (j.status == "running" && j.requests_open == 0) {
    j.status = "succeeded";
    ending = true;
  } else if (j.finished_now) {
    ending = true;  // failed or aborted by the caller
  }
  // The job row and its run's counters in one round trip.
  const auto run_rows = ExecPrepared(
      tx, "celeriac_write_job",
      "WITH job AS ("
      " UPDATE extraction_jobs SET status = $2, status_reason = coalesce(nullif($3, ''), "
      "  status_reason), pages = $4, items_new = $5, items_updated = $6, items_unchanged = $7, "
      "  errors = $8, bytes = $9, requests_open = $10, requests_total = $11, "
      "  requests_failed = $12, item_errors = $13, error_counts = $14::jsonb, "
      "  started_at = coalesce(started_at, now()), "
      "  finished_at = CASE WHEN $15 THEN now() ELSE finished_at END, "
      "  requests_sent = $16, "
      "  last_progress_at = CASE WHEN $17 THEN now() ELSE last_progress_at END "
      " WHERE id = $1 RETURNING run_id) "
      // The run: counters always, its end (below) when this was its last open job.
      "UPDATE crawl_runs SET pages = pages + $19, items_new = items_new + $20, "
      " items_updated = items_updated + $21, items_unchanged = items_unchanged + $22, "
      " errors = errors + $23, bytes = bytes + $24, "
      " error_counts = (SELECT coalesce(jsonb_object_agg(k, v), '{}') FROM ("
      "   SELECT k, sum(v::bigint) AS v FROM ("
      "     SELECT key AS k, value AS v FROM jsonb_each_text(error_counts) "
      "     UNION ALL SELECT key, value FROM jsonb_each_text($25::jsonb)) a GROUP BY k) b), "
      " started_at = coalesce(started_at, now()) "
      "WHERE id = $18 RETURNING status",
      j.id, j.status, j.reason, j.pages, j.items_new, j.items_updated, j.items_unchanged,
      j.errors, j.bytes, j.requests_open, j.requests_total, j.requests_failed, j.item_errors,
      j.error_counts.dump(), ending, j.requests_sent, j.progressed, j.run_id, j.d_pages, j.d_new,
      j.d_updated, j.d_unchanged, j.d_errors, j.d_bytes, j.d_error_counts.dump());
  if (run_rows.size() != 1) {
    throw pqxx::unexpected_rows("run " + std::to_string(j.run_id) + " of job " +
                                std::to_string(j.id) + " not found");
  }
  const auto run = run_rows[0];
  if (!ending) return std::nullopt;

  FinishedJob f;
  f.job_id = j.id;
  f.run_id = j.run_id;
  f.crawl_config_id = j.crawl_config_id;
  f.status = j.status;
  f.reason = j.reason;
  f.celery_task_id = j.celery_task_id;
  f.reply_to = j.reply_to;
  f.result = ExtractResult(j);
  const auto open = tx.exec_params1(
      "SELECT count(*) FILTER (WHERE status IN ('pending', 'running')), "
      " count(*) FILTER (WHERE status = 'failed'), count(*) FILTER (WHERE status = 'aborted') "
      "FROM extraction_jobs WHERE run_id = $1",
      j.run_id);
  if (open[0].as<int64_t>() == 0 && (run[0].as<std::string>() == "running" ||
                                     run[0].as<std::string>() == "pending")) {
    const int64_t failed = open[1].as<int64_t>(), aborted = open[2].as<int64_t>();
    f.run_status = aborted > 0 ? "aborted" : failed > 0 ? "failed" : "succeeded";
    const std::string reason =
        aborted + failed == 0
            ? std::string()
            : fmt::format("{} job(s) failed, {} aborted", failed, aborted);
    tx.exec_params(
        "UPDATE crawl_runs SET status = $2, status_reason = nullif($3, ''), finished_at = now() "
        "WHERE id = $1",
        j.run_id, f.run_status, reason);
    tx.exec_params("DELETE FROM crawl_run_items WHERE run_id = $1", j.run_id);
    f.run_finished = true;
  }
  return f;
}

// `prefix`: statements sent in the same round trip, before the lock (SET LOCAL ...;).
std::vector<CommitJob> LockJobs(pqxx::transaction_base& tx, std::vector<int64_t> ids,
                             const std::string& prefix = "") {
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  std::vector<CommitJob> out;
  if (ids.empty()) {
    if (!prefix.empty()) tx.exec(prefix);
    return out;
  }
  const std::string list = JoinIds(ids);
  // Ids are integers: formatted into the text, so that the prefix and the lock go in one
  // simple-protocol round trip.
  const auto rows = tx.exec(fmt::format(
      "{}SELECT {} FROM extraction_jobs WHERE id IN ({}) ORDER BY id FOR UPDATE", prefix,
      kJobColumns, list));
  for (const auto& r : rows) out.push_back(ReadJob(r));
  return out;
}

LeasedRequest ReadLeased(const pqxx::row& r) {
  LeasedRequest l;
  l.id = r[0].as<int64_t>();
  l.job_id = r[1].as<int64_t>();
  l.attempts = r[2].as<int>();
  l.spec.url = r[3].as<std::string>();
  l.spec.method = r[4].as<std::string>();
  l.spec.body = r[5].as<std::string>();
  l.spec.page_type = r[6].as<std::string>();
  l.spec.depth = r[7].as<int>();
  l.spec.pagination_index = r[8].as<int>();
  l.spec.is_pagination = r[9].as<bool>();
  return l;
}

// Inserts frontier rows; the first `lease` rows go in already leased to `owner` (attempts 1;
// one that already exists uses its slot and stays as it is), so that requests an extractor
// works on at once never pass through 'pending' (a pending row leased later leaves a dead entry
// in crawl_requests_pending that every lease scan walks until vacuum).
InsertOutcome InsertRequests(pqxx::transaction_base& tx, Json& rows, size_t lease = 0,
                        const std::string& owner = "", std::chrono::milliseconds lease_for = {}) {
  InsertOutcome out;
  if (rows.empty()) return out;
  for (size_t i = 0; i < rows.size(); ++i) rows[i]["l"] = i < lease;
  const auto r = ExecPrepared(
      tx, "celeriac_insert_requests",
      "INSERT INTO crawl_requests (job_id, fingerprint, url, method, body, page_type, depth, "
      " pagination_index, is_pagination, state, lease_owner, lease_expires_at, attempts) "
      "SELECT x.j, x.f, x.u, x.m, x.b, x.t, x.d, x.p, x.g, "
      " CASE WHEN x.l THEN 'leased' ELSE 'pending' END, CASE WHEN x.l THEN $2 END, "
      " CASE WHEN x.l THEN now() + $3 * interval '1 millisecond' END, "
      " CASE WHEN x.l THEN 1 ELSE 0 END "
      "FROM jsonb_to_recordset($1::jsonb) AS x(j bigint, f text, u text, m text, b text, t text, "
      " d int, p int, g boolean, l boolean) "
      "ORDER BY x.j, x.f "
      "ON CONFLICT (job_id, fingerprint) DO NOTHING "
      "RETURNING id, job_id, attempts, url, method, coalesce(body, ''), page_type, depth, "
      " pagination_index, is_pagination, fingerprint, state = 'leased'",
      DumpStorableJson(rows), owner, static_cast<int64_t>(lease_for.count()));
  for (const auto& row : r) {
    out.ids.emplace(std::pair(row[1].as<int64_t>(), row[10].as<std::string>()),
                    row[0].as<int64_t>());
    if (row[11].as<bool>()) out.leased.push_back({ReadLeased(row), row[10].as<std::string>()});
  }
  return out;
}

// One job, locked; kNotFound if it does not exist.
Result<CommitJob> LockJob(pqxx::transaction_base& tx, int64_t job_id) {
  auto jobs = LockJobs(tx, {job_id});
  if (jobs.empty())
    return Error(ErrorCode::kNotFound, fmt::format("extraction job {} does not exist", job_id),
                 false);
  return std::move(jobs[0]);
}

// A job and its crawl config, as ClaimJob and LoadJob return them.
Result<JobInfo> ReadJobInfo(pqxx::transaction_base& tx, int64_t job_id) {
  const auto row = tx.exec_params(
      "SELECT j.id, j.run_id, j.crawl_config_id, j.data_source_id, j.status, j.celery_task_id, "
      " c.config::text FROM extraction_jobs j JOIN crawl_configs c ON c.id = j.crawl_config_id "
      "WHERE j.id = $1",
      job_id);
  if (row.empty())
    return Error(ErrorCode::kNotFound, fmt::format("extraction job {} does not exist", job_id),
                 false);
  JobInfo info;
  info.job_id = row[0][0].as<int64_t>();
  info.run_id = row[0][1].as<int64_t>();
  info.crawl_config_id = row[0][2].as<int64_t>();
  info.data_source_id = row[0][3].as<int64_t>();
  info.status = row[0][4].as<std::string>();
  info.celery_task_id = row[0][5].as<std::string>();
  info.config = Json::parse(row[0][6].as<std::string>(), nullptr, false);
  return info;
}

// Closes (or reschedules) the requests whose lease `owner` still holds; returns their ids.
std::vector<int64_t> CloseRequests(pqxx::transaction_base& tx, const std::string& owner,
                                   const Json& marks, const std::vector<int64_t>& round_ids) {
  std::vector<int64_t> owned;
  if (marks.empty()) return owned;
  const auto rows = ExecPrepared(
      tx, "celeriac_close_requests",
      "UPDATE crawl_requests r SET state = x.s, status_code = x.c, error_class = x.e, "
      " error_message = x.m, lease_owner = NULL, lease_expires_at = NULL, "
      " not_before = CASE WHEN x.s = 'pending' THEN now() + x.d * interval '1 millisecond' "
      "              ELSE r.not_before END, "
      " finished_at = CASE WHEN x.s = 'pending' THEN NULL ELSE now() END "
      "FROM jsonb_to_recordset($1::jsonb) AS x(id bigint, s text, c int, e text, m text, "
      " d bigint) "
      "WHERE r.id = x.id AND r.id = ANY($3::bigint[]) AND r.lease_owner = $2 "
      // Not `r.state = 'leased'`: that matches the partial index crawl_requests_leased, which
      // the planner then scans whole (its statistics say few rows are leased) while during a
      // crawl it fills with dead entries; by primary key each row costs one probe.
      "  AND r.state || '' = 'leased' RETURNING r.id",
      DumpStorableJson(marks), owner, "{" + JoinIds(round_ids) + "}");
  for (const auto& row : rows) owned.push_back(row[0].as<int64_t>());
  return owned;
}

// Items of one crawl config, upserted in one statement that also says what each was: new
// (inserted), updated (its hash changed: updated_at moved to now()), or unchanged;
// crawl_run_items says whether this run saw it before (for stop_when_no_new_items).
void StoreItems(pqxx::transaction_base& tx, const ItemBatch& batch, CommitPlan& plan) {
  std::set<std::pair<std::string, int64_t>> new_in_run;  // (key, run)
  for (const auto& row : ExecPrepared(
           tx, "celeriac_run_items",
           "INSERT INTO crawl_run_items (run_id, crawl_config_id, item_key) "
           "SELECT x.r, $1, x.k FROM jsonb_to_recordset($2::jsonb) AS x(k text, r bigint) "
           "ORDER BY x.r, x.k ON CONFLICT DO NOTHING RETURNING item_key, run_id",
           batch.crawl_config_id, batch.run_rows))
    new_in_run.emplace(row[0].as<std::string>(), row[1].as<int64_t>());
  for (const auto& row : ExecPrepared(
           tx, "celeriac_upsert_items",
           "INSERT INTO extracted_items AS e (crawl_config_id, item_key, data, content_hash, "
           " url, first_run_id, last_run_id) "
           "SELECT $1, x.k, x.d, x.h, x.u, x.r, x.r "
           "FROM jsonb_to_recordset($2::jsonb) AS x(k text, d jsonb, h text, u text, r "
           "bigint) "
           "ORDER BY x.k "
           "ON CONFLICT (crawl_config_id, item_key) DO UPDATE SET "
           " last_seen_at = now(), last_run_id = EXCLUDED.last_run_id, url = EXCLUDED.url, "
           " data = CASE WHEN e.content_hash = EXCLUDED.content_hash "
           "        THEN e.data ELSE EXCLUDED.data END, "
           " updated_at = CASE WHEN e.content_hash = EXCLUDED.content_hash "
           "              THEN e.updated_at ELSE now() END, "
           " content_hash = EXCLUDED.content_hash "
           "RETURNING e.item_key, e.xmax = 0, e.updated_at = now()",
           batch.crawl_config_id, batch.rows)) {
    const std::string key = row[0].as<std::string>();
    plan.ItemStored(batch, key, new_in_run, row[1].as<bool>(), row[2].as<bool>());
  }
}

// A request that failed for good becomes a dead letter ops can replay: an
// extractor.tasks.refetch message for the request, to the extractor's queue.
void WriteRefetchLetter(pqxx::transaction_base& tx, const std::string& queue,
                        const RequestResult& r, const CommitJob& j) {
  auto m = celery::NewTask(kRefetchTask, nlohmann::ordered_json::array({r.request_id}),
                           nlohmann::ordered_json{{"job_id", j.id},
                                                  {"run_id", j.run_id},
                                                  {"crawl_config_id", j.crawl_config_id},
                                                  {"url", r.url}});
  m.origin = "celeriac-extractor";
  const auto out = celery::EncodeTask(m, queue);
  celery::DeadLetter letter;
  letter.queue = queue;
  letter.task_name = kRefetchTask;
  letter.task_id = m.id;
  letter.properties = out.properties;
  letter.error_class = r.error_class.empty() ? std::string("Download") : r.error_class;
  letter.error_message = r.error_message;
  letter.attempts =
      tx.exec_params1("SELECT attempts FROM crawl_requests WHERE id = $1", r.request_id)[0]
          .as<int64_t>();
  letter.context = {{"url", r.url},          {"status", r.status_code},
                    {"job_id", j.id},        {"run_id", j.run_id},
                    {"request_id", r.request_id},
                    {"crawl_config_id", j.crawl_config_id},
                    {"attempts", letter.attempts}};
  InsertDeadLetter(tx, ToColumns(letter), out.body);
}

}  // namespace

std::string Fingerprint(const RequestSpec& spec) {
  const std::string canonical = spec.method + ' ' + url::Canonicalize(spec.url) + '\n' + spec.body;
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int len = 0;
  EVP_Digest(canonical.data(), canonical.size(), digest.data(), &len, EVP_sha256(), nullptr);
  // The first 128 bits, in hex.
  return HexEncode(std::string_view(reinterpret_cast<const char*>(digest.data()),
                                    std::min<size_t>(16, len)));
}

Result<JobInfo> CrawlStore::ClaimJob(const ExtractRequest& req) {
  return pool_.Transact<JobInfo>([&](pqxx::transaction_base& tx) -> Result<JobInfo> {
    const auto config = tx.exec_params(
        "SELECT data_source_id, version FROM crawl_configs WHERE id = $1", req.crawl_config_id);
    if (config.empty())
      return Error(ErrorCode::kNotFound,
                   fmt::format("crawl config {} does not exist", req.crawl_config_id), false);
    const int64_t data_source_id = config[0][0].as<int64_t>();
    const int64_t version = config[0][1].as<int64_t>();
    std::optional<int64_t> job_id = req.job_id;
    if (!job_id) {
      int64_t run_id = 0;
      if (req.run_id) {
        const auto run = tx.exec_params("SELECT id FROM crawl_runs WHERE id = $1", *req.run_id);
        if (run.empty())
          return Error(ErrorCode::kNotFound, fmt::format("run {} does not exist", *req.run_id),
                       false);
        run_id = *req.run_id;
      } else {
        // A bare extract(crawl_config_id) starts its own run, once per message id.
        NewRun run;
        run.crawl_task_id = req.crawl_task_id;
        run.celery_task_id = req.celery_task_id;
        run.status = "running";
        run.configs_dispatched = 1;
        run.started = true;
        run_id = EnsureRun(tx, run);
      }
      NewJob job;
      job.run_id = run_id;
      job.crawl_config_id = req.crawl_config_id;
      job.config_version = version;
      job.data_source_id = data_source_id;
      job.celery_task_id = req.celery_task_id;
      job.published = true;
      job_id = EnsureJob(tx, job);
      if (!job_id)
        return Error(ErrorCode::kConflict, "extraction job vanished while claiming it", true);
    }
    auto info = ReadJobInfo(tx, *job_id);
    if (info && info->crawl_config_id != req.crawl_config_id)
      return Error(ErrorCode::kInvalidArgument,
                   fmt::format("extraction job {} is for crawl config {}, not {}", *job_id,
                               info->crawl_config_id, req.crawl_config_id),
                   false);
    return info;
  });
}

Result<JobInfo> CrawlStore::LoadJob(int64_t job_id) {
  return pool_.Transact<JobInfo>(
      [&](pqxx::transaction_base& tx) -> Result<JobInfo> { return ReadJobInfo(tx, job_id); });
}

Result<std::optional<FinishedJob>> CrawlStore::StartJob(int64_t job_id,
                                                        const std::vector<RequestSpec>& start,
                                                        const std::string& reply_to,
                                                        std::chrono::milliseconds watchdog) {
  using Out = std::optional<FinishedJob>;
  return pool_.Transact<Out>([&](pqxx::transaction_base& tx) -> Result<Out> {
    auto locked = LockJob(tx, job_id);
    if (!locked.ok()) return locked.error();
    CommitJob& j = *locked;
    if (j.status != "pending") return Out{};  // a redelivered message: already under way or done
    Json rows = Json::array();
    std::unordered_set<std::string> seen;
    for (const auto& s : start) {
      auto fp = Fingerprint(s);
      if (seen.insert(fp).second) rows.push_back(FrontierRow(job_id, s, fp));
    }
    const auto inserted = InsertRequests(tx, rows).ids;
    j.status = "running";
    j.reply_to = reply_to;
    j.requests_open += static_cast<int64_t>(inserted.size());
    j.requests_total += static_cast<int64_t>(inserted.size());
    tx.exec_params(
        "UPDATE extraction_jobs SET reply_to = nullif($2, ''), watchdog_ms = $3 WHERE id = $1",
        job_id, reply_to, static_cast<int64_t>(watchdog.count()));
    j.progressed = true;
    tx.exec_params(
        "UPDATE crawl_runs SET status = 'running', started_at = coalesce(started_at, now()) "
        "WHERE id = $1 AND status = 'pending'",
        j.run_id);
    return WriteJob(tx, j);
  });
}

Result<std::optional<FinishedJob>> CrawlStore::FailJob(int64_t job_id,
                                                       const std::string& error_class,
                                                       const std::string& reason,
                                                       const std::string& reply_to) {
  using Out = std::optional<FinishedJob>;
  return pool_.Transact<Out>([&](pqxx::transaction_base& tx) -> Result<Out> {
    auto locked = LockJob(tx, job_id);
    if (!locked.ok()) return locked.error();
    CommitJob& j = *locked;
    if (j.status != "pending" && j.status != "running") return Out{};
    const auto skipped =
        static_cast<int64_t>(SkipPending(tx, job_id, "job failed: " + reason, true).size());
    j.requests_open = std::max<int64_t>(0, j.requests_open - skipped);
    j.status = "failed";
    j.reason = reason;
    j.finished_now = true;
    j.errors += 1;
    j.d_errors += 1;
    AddCount(j.d_error_counts, error_class, 1);
    if (j.reply_to.empty()) j.reply_to = reply_to;
    tx.exec_params("UPDATE extraction_jobs SET reply_to = nullif($2, '') WHERE id = $1", job_id,
                   j.reply_to);
    return WriteJob(tx, j);
  });
}

Result<std::vector<LeasedRequest>> CrawlStore::Lease(size_t max, std::chrono::milliseconds lease,
                                                     std::optional<int64_t> job_id) {
  using Out = std::vector<LeasedRequest>;
  return pool_.Transact<Out>([&](pqxx::transaction_base& tx) -> Result<Out> {
    const auto rows = tx.exec_params(
        "WITH picked AS ("
        "  SELECT r.id FROM crawl_requests r "
        "  WHERE r.state = 'pending' AND r.not_before <= now() "
        "    AND ($4::bigint IS NULL OR r.job_id = $4) "
        "    AND EXISTS (SELECT 1 FROM extraction_jobs j WHERE j.id = r.job_id "
        "                AND j.status = 'running') "
        "  ORDER BY r.id LIMIT $2 FOR UPDATE OF r SKIP LOCKED) "
        "UPDATE crawl_requests r SET state = 'leased', lease_owner = $1, "
        " lease_expires_at = now() + $3 * interval '1 millisecond', attempts = r.attempts + 1 "
        "FROM picked WHERE r.id = picked.id "
        "RETURNING r.id, r.job_id, r.attempts, r.url, r.method, coalesce(r.body, ''), "
        " r.page_type, r.depth, r.pagination_index, r.is_pagination",
        owner_, static_cast<int64_t>(max), static_cast<int64_t>(lease.count()), job_id);
    Out out;
    out.reserve(rows.size());
    for (const auto& r : rows) out.push_back(ReadLeased(r));
    std::sort(out.begin(), out.end(),
              [](const LeasedRequest& a, const LeasedRequest& b) { return a.id < b.id; });
    return out;
  });
}

Result<int64_t> CrawlStore::RenewLeases(std::chrono::milliseconds lease) {
  return pool_.Transact<int64_t>([&](pqxx::transaction_base& tx) -> Result<int64_t> {
    const auto r = tx.exec_params(
        "UPDATE crawl_requests SET lease_expires_at = now() + $2 * interval '1 millisecond' "
        "WHERE state = 'leased' AND lease_owner = $1 AND lease_expires_at > now()",
        owner_, static_cast<int64_t>(lease.count()));
    return static_cast<int64_t>(r.affected_rows());
  });
}

Status CrawlStore::ExpireLeases(const std::vector<int64_t>& ids) {
  if (ids.empty()) return Ok();
  return pool_.Execute([&](pqxx::transaction_base& tx) -> Status {
    tx.exec_params(
        "UPDATE crawl_requests SET lease_expires_at = now() "
        "WHERE state = 'leased' AND lease_owner = $1 "
        "  AND id IN (SELECT value::bigint FROM jsonb_array_elements_text($2::jsonb))",
        owner_, Json(ids).dump());
    return Ok();
  });
}

Status CrawlStore::ReleaseLeases(const std::vector<int64_t>& ids) {
  if (ids.empty()) return Ok();
  return pool_.Execute([&](pqxx::transaction_base& tx) -> Status {
    tx.exec_params(
        "UPDATE crawl_requests SET state = 'pending', lease_owner = NULL, lease_expires_at = NULL, "
        " attempts = greatest(attempts - 1, 0) "
        "WHERE state = 'leased' AND lease_owner = $1 "
        "  AND id IN (SELECT value::bigint FROM jsonb_array_elements_text($2::jsonb))",
        owner_, Json(ids).dump());
    return Ok();
  });
}

Result<std::vector<LeasedRequest>> CrawlStore::ReclaimExpired(int max_attempts,
                                                             std::chrono::milliseconds lease) {
  using Out = std::vector<LeasedRequest>;
  return pool_.Transact<Out>([&](pqxx::transaction_base& tx) -> Result<Out> {
    tx.exec_params(
        "UPDATE crawl_requests SET state = 'pending', lease_owner = NULL, lease_expires_at = NULL "
        "WHERE state = 'leased' AND lease_expires_at < now() AND attempts < $1",
        max_attempts);
    // Out of attempts: taken over by this owner, so that the caller records them as failed
    // through Commit like any other failed request.
    Out out;
    for (const auto& r : tx.exec_params(
             "UPDATE crawl_requests SET lease_owner = $2, "
             " lease_expires_at = now() + $3 * interval '1 millisecond' "
             "WHERE state = 'leased' AND lease_expires_at < now() AND attempts >= $1 "
             "RETURNING id, job_id",
             max_attempts, owner_, static_cast<int64_t>(lease.count()))) {
      LeasedRequest l;
      l.id = r[0].as<int64_t>();
      l.job_id = r[1].as<int64_t>();
      l.attempts = max_attempts;
      out.push_back(std::move(l));
    }
    return out;
  });
}

Result<CommitReport> CrawlStore::Commit(const std::vector<RequestResult>& results,
                                        const std::map<int64_t, JobLimits>& limits,
                                        size_t lease_new, std::chrono::milliseconds lease) {
  return pool_.Transact<CommitReport>([&](pqxx::transaction_base& tx) -> Result<CommitReport> {
    // Without waiting for the WAL flush: a commit lost in a Postgres crash loses a consistent
    // suffix of results, whose requests are then still leased (or pending) and are simply done
    // again: nothing is lost and the upserts duplicate nothing. StartJob, which the message ack
    // depends on, stays synchronous.
    std::vector<int64_t> job_ids;
    for (const auto& r : results) job_ids.push_back(r.job_id);
    CommitPlan plan(LockJobs(tx, job_ids, "SET LOCAL synchronous_commit = off; "), results,
                    limits, lease_new);
    // Rounds: first the results of leased requests, then follow-ons whose requests an earlier
    // round inserted and leased to us (commit_plan.hpp).
    while (!plan.round().empty()) {
      plan.Owned(CloseRequests(tx, owner_, plan.CloseMarks(), plan.RoundIds()));
      for (const ItemBatch& batch : plan.ItemBatches()) StoreItems(tx, batch, plan);
      for (int pass = 0; pass < 2; ++pass) {
        RequestBatch batch = plan.NewRequests(pass);
        InsertOutcome made = InsertRequests(tx, batch.rows, batch.lease_now, owner_, lease);
        plan.Inserted(batch, std::move(made));
      }
      plan.CountRound();
      for (const auto& [result, job] : plan.FailedForGood())
        WriteRefetchLetter(tx, queue_, *result, *job);
      plan.NextRound();
    }
    // Limits and the end of each job. Requests leased to us above, to a job that stops here,
    // are skipped with its pending ones.
    for (CommitJob& j : plan.jobs()) {
      const JobEnd end = plan.EndJob(j);
      std::vector<int64_t> skipped;
      if (end.kind == JobEnd::Kind::kAborted) {
        skipped = SkipPending(tx, j.id, end.why, true);
      } else if (end.kind == JobEnd::Kind::kStopsAdding) {
        skipped = SkipPending(tx, j.id, end.why, false, plan.FreshIds(j.id));
      }
      plan.Skipped(j, end, skipped);
      if (auto finished = WriteJob(tx, j)) plan.report().finished.push_back(std::move(*finished));
    }
    return plan.TakeReport();
  });
}

Result<std::vector<FinishedJob>> CrawlStore::UnpublishedResults(size_t max) {
  using Out = std::vector<FinishedJob>;
  return pool_.Transact<Out>([&](pqxx::transaction_base& tx) -> Result<Out> {
    Out out;
    for (const auto& r : tx.exec_params(
             fmt::format("SELECT {}, coalesce(status_reason, '') FROM extraction_jobs "
                         "WHERE status IN ('succeeded', 'failed', 'aborted') "
                         "AND reply_to IS NOT NULL AND result_published_at IS NULL "
                         "AND finished_at < now() - interval '30 seconds' "
                         "ORDER BY id LIMIT $1",
                         kJobColumns),
             static_cast<int64_t>(max))) {
      CommitJob j = ReadJob(r);
      FinishedJob f;
      f.job_id = j.id;
      f.run_id = j.run_id;
      f.crawl_config_id = j.crawl_config_id;
      f.status = j.status;
      f.reason = r[17].as<std::string>();
      f.celery_task_id = j.celery_task_id;
      f.reply_to = j.reply_to;
      f.result = ExtractResult(j);
      out.push_back(std::move(f));
    }
    return out;
  });
}

Status CrawlStore::MarkResultPublished(int64_t job_id) {
  return pool_.Execute([&](pqxx::transaction_base& tx) -> Status {
    tx.exec_params("UPDATE extraction_jobs SET result_published_at = now() WHERE id = $1", job_id);
    return Ok();
  });
}

Status CrawlStore::WriteDeadLetter(const celery::DeadLetter& letter) {
  auto id = state::PgDeadLetterStore(pool_).Write(letter);
  if (!id) return id.error();
  return Ok();
}

Result<std::optional<StoredRobots>> CrawlStore::GetRobots(int64_t run_id,
                                                          const std::string& origin) {
  using Out = std::optional<StoredRobots>;
  return pool_.Transact<Out>([&](pqxx::transaction_base& tx) -> Result<Out> {
    const auto r = tx.exec_params(
        "SELECT robots_status, coalesce(robots_txt, '') FROM crawl_hosts "
        "WHERE run_id = $1 AND host = $2 AND robots_status IS NOT NULL",
        run_id, origin);
    if (r.empty()) return Out{};
    return Out{StoredRobots{r[0][0].as<int>(), r[0][1].as<std::string>()}};
  });
}

Result<bool> CrawlStore::ClaimRobots(int64_t run_id, const std::string& origin,
                                     std::chrono::milliseconds claim_for) {
  return pool_.Transact<bool>([&](pqxx::transaction_base& tx) -> Result<bool> {
    tx.exec_params(
        "INSERT INTO crawl_hosts (run_id, host) VALUES ($1, $2) ON CONFLICT DO NOTHING", run_id,
        origin);
    const auto r = tx.exec_params(
        "UPDATE crawl_hosts SET robots_claimed_at = now() "
        "WHERE run_id = $1 AND host = $2 AND robots_status IS NULL "
        "AND (robots_claimed_at IS NULL "
        "     OR robots_claimed_at < now() - $3 * interval '1 millisecond')",
        run_id, origin, static_cast<int64_t>(claim_for.count()));
    return r.affected_rows() > 0;
  });
}

Result<StoredRobots> CrawlStore::PutRobots(int64_t run_id, const std::string& origin,
                                           const StoredRobots& robots,
                                           std::optional<std::chrono::milliseconds> delay) {
  return pool_.Transact<StoredRobots>([&](pqxx::transaction_base& tx) -> Result<StoredRobots> {
    const int64_t delay_ms = delay ? static_cast<int64_t>(delay->count()) : -1;
    const auto r = tx.exec_params1(
        "INSERT INTO crawl_hosts (run_id, host, robots_status, robots_txt, robots_fetched_at, "
        " crawl_delay_ms) VALUES ($1, $2, $3, $4, now(), nullif($5, -1)) "
        "ON CONFLICT (run_id, host) DO UPDATE SET "
        " robots_status = coalesce(crawl_hosts.robots_status, EXCLUDED.robots_status), "
        " robots_txt = CASE WHEN crawl_hosts.robots_status IS NULL THEN EXCLUDED.robots_txt "
        "              ELSE crawl_hosts.robots_txt END, "
        " robots_fetched_at = coalesce(crawl_hosts.robots_fetched_at, now()), "
        " crawl_delay_ms = CASE WHEN crawl_hosts.robots_status IS NULL "
        "                  THEN EXCLUDED.crawl_delay_ms ELSE crawl_hosts.crawl_delay_ms END, "
        " updated_at = now() "
        "RETURNING robots_status, coalesce(robots_txt, '')",
        run_id, origin, robots.status, robots.body, delay_ms);
    return StoredRobots{r[0].as<int>(), r[1].as<std::string>()};
  });
}

Result<HostSlot> CrawlStore::ReserveSlot(int64_t run_id, const std::string& origin,
                                         std::chrono::milliseconds min_delay) {
  return pool_.Transact<HostSlot>([&](pqxx::transaction_base& tx) -> Result<HostSlot> {
    const int64_t min_ms = min_delay.count();
    tx.exec_params(
        "INSERT INTO crawl_hosts (run_id, host, delay_ms) VALUES ($1, $2, $3) "
        "ON CONFLICT (run_id, host) DO NOTHING",
        run_id, origin, min_ms);
    const auto r = tx.exec_params1(
        "UPDATE crawl_hosts h SET "
        " delay_ms = CASE WHEN h.backoff_until IS NULL OR h.backoff_until < now() "
        "            THEN greatest($3, (h.delay_ms * 0.8)::int) "
        "            ELSE greatest($3, h.delay_ms) END, "
        " next_slot_at = greatest(h.next_slot_at, now(), coalesce(h.backoff_until, now())) "
        "   + greatest($3, h.delay_ms) * interval '1 millisecond', "
        " updated_at = now() "
        "WHERE run_id = $1 AND host = $2 "
        "RETURNING greatest(0, extract(epoch FROM (h.next_slot_at - now())) * 1000 "
        "                     - greatest($3, h.delay_ms))::bigint, h.delay_ms, "
        " h.backoff_until > now()",
        run_id, origin, min_ms);
    HostSlot slot;
    slot.wait = std::chrono::milliseconds(r[0].as<int64_t>());
    slot.delay = std::chrono::milliseconds(r[1].as<int64_t>());
    const bool backing_off = !r[2].is_null() && r[2].as<bool>();
    slot.state = backing_off ? "backing_off" : slot.delay.count() > min_ms ? "slowed" : "ok";
    tx.exec_params("UPDATE crawl_hosts SET state = $3 WHERE run_id = $1 AND host = $2 "
                   "AND state <> $3",
                   run_id, origin, slot.state);
    return slot;
  });
}

Status CrawlStore::SlowDown(int64_t run_id, const std::string& origin,
                            std::chrono::milliseconds backoff, std::chrono::milliseconds max_delay) {
  return pool_.Execute([&](pqxx::transaction_base& tx) -> Status {
    tx.exec_params(
        "INSERT INTO crawl_hosts (run_id, host) VALUES ($1, $2) ON CONFLICT DO NOTHING", run_id,
        origin);
    tx.exec_params(
        "UPDATE crawl_hosts SET delay_ms = least($4, greatest(1000, delay_ms * 2)), "
        " backoff_until = greatest(coalesce(backoff_until, now()), "
        "                          now() + $3 * interval '1 millisecond'), "
        " state = 'backing_off', rate_limited = rate_limited + 1, updated_at = now() "
        "WHERE run_id = $1 AND host = $2",
        run_id, origin, static_cast<int64_t>(backoff.count()),
        static_cast<int64_t>(max_delay.count()));
    return Ok();
  });
}

Status CrawlStore::AddHostCounts(
    const std::vector<std::tuple<int64_t, std::string, int64_t, int64_t>>& counts) {
  if (counts.empty()) return Ok();
  Json rows = Json::array();
  for (const auto& [run, host, requests, errors] : counts)
    rows.push_back(Json{{"r", run}, {"h", host}, {"n", requests}, {"e", errors}});
  return pool_.Execute([&](pqxx::transaction_base& tx) -> Status {
    tx.exec_params(
        "INSERT INTO crawl_hosts AS c (run_id, host, requests, errors) "
        "SELECT x.r, x.h, x.n, x.e FROM jsonb_to_recordset($1::jsonb) AS x(r bigint, h text, "
        " n bigint, e bigint) ORDER BY x.r, x.h "
        "ON CONFLICT (run_id, host) DO UPDATE SET requests = c.requests + EXCLUDED.requests, "
        " errors = c.errors + EXCLUDED.errors, updated_at = now()",
        rows.dump());
    return Ok();
  });
}

Result<std::vector<FinishedJob>> CrawlStore::AbortStalled() {
  using Out = std::vector<FinishedJob>;
  return pool_.Transact<Out>([&](pqxx::transaction_base& tx) -> Result<Out> {
    Out out;
    std::vector<int64_t> ids;
    for (const auto& r : tx.exec(
             "SELECT id FROM extraction_jobs WHERE status = 'running' AND requests_open > 0 "
             "AND watchdog_ms IS NOT NULL "
             "AND coalesce(last_progress_at, started_at) < now() - watchdog_ms * interval "
             "'1 millisecond' ORDER BY id LIMIT 100"))
      ids.push_back(r[0].as<int64_t>());
    for (auto& j : LockJobs(tx, ids)) {
      if (j.status != "running") continue;
      const auto wd = tx.exec_params1(
          "SELECT coalesce(watchdog_ms, 0), coalesce(last_progress_at, started_at) < "
          " now() - watchdog_ms * interval '1 millisecond' FROM extraction_jobs WHERE id = $1",
          j.id);
      if (!wd[1].as<bool>()) continue;  // progressed while we waited for the lock
      j.requests_open -=
          static_cast<int64_t>(SkipPending(tx, j.id, "job aborted by the watchdog", true).size());
      j.requests_open = std::max<int64_t>(0, j.requests_open);
      j.status = "aborted";
      j.reason = fmt::format("watchdog: no request finished for {} ms", wd[0].as<int64_t>());
      j.finished_now = true;
      if (auto f = WriteJob(tx, j)) out.push_back(std::move(*f));
    }
    return out;
  });
}

Result<int64_t> CrawlStore::Refetch(int64_t request_id, const std::string& celery_task_id) {
  return pool_.Transact<int64_t>([&](pqxx::transaction_base& tx) -> Result<int64_t> {
    const auto req = tx.exec_params(
        "SELECT r.job_id, r.state, j.status FROM crawl_requests r "
        "JOIN extraction_jobs j ON j.id = r.job_id WHERE r.id = $1",
        request_id);
    if (req.empty())
      return Error(ErrorCode::kNotFound, fmt::format("request {} does not exist", request_id),
                   false);
    const int64_t job_id = req[0][0].as<int64_t>();
    auto jobs = LockJobs(tx, {job_id});
    CommitJob& j = jobs[0];
    if (j.status == "running") {
      const auto back = tx.exec_params(
          "UPDATE crawl_requests SET state = 'pending', attempts = 0, not_before = now(), "
          " error_class = NULL, error_message = NULL, status_code = NULL, finished_at = NULL "
          "WHERE id = $1 AND state IN ('failed', 'skipped')",
          request_id);
      if (back.affected_rows() > 0) {
        j.requests_open += 1;
        WriteJob(tx, j);
      }
      return job_id;
    }
    // The job ended: a new run and job of the same config fetch the page again.
    const auto old = tx.exec_params1(
        "SELECT r.crawl_task_id, j.crawl_config_id, j.config_version, j.data_source_id, "
        " j.watchdog_ms FROM extraction_jobs j JOIN crawl_runs r ON r.id = j.run_id "
        "WHERE j.id = $1",
        job_id);
    NewRun run;
    if (!old[0].is_null()) run.crawl_task_id = old[0].as<int64_t>();
    run.celery_task_id = celery_task_id;
    run.trigger = "run-now";
    run.status = "running";
    run.configs_dispatched = 1;
    run.started = true;
    run.status_reason = fmt::format("replay of request {} of job {}", request_id, job_id);
    NewJob job;
    job.run_id = EnsureRun(tx, run);
    job.crawl_config_id = old[1].as<int64_t>();
    job.config_version = old[2].as<int64_t>();
    job.data_source_id = old[3].as<int64_t>();
    job.celery_task_id = celery_task_id + ":job";
    job.published = true;
    job.running = true;
    if (!old[4].is_null()) job.watchdog_ms = old[4].as<int64_t>();
    const auto new_job_id = EnsureJob(tx, job);
    if (!new_job_id)
      return Error(ErrorCode::kConflict, "extraction job vanished while replaying", true);
    const int64_t new_job = *new_job_id;
    const auto inserted = tx.exec_params(
        "INSERT INTO crawl_requests (job_id, fingerprint, url, method, body, page_type, depth, "
        " pagination_index, is_pagination) "
        "SELECT $1, fingerprint, url, method, body, page_type, depth, pagination_index, "
        " is_pagination FROM crawl_requests WHERE id = $2 "
        "ON CONFLICT (job_id, fingerprint) DO NOTHING",
        new_job, request_id);
    if (inserted.affected_rows() > 0)
      tx.exec_params(
          "UPDATE extraction_jobs SET requests_open = requests_open + 1, "
          " requests_total = requests_total + 1 WHERE id = $1",
          new_job);
    return new_job;
  });
}

Result<std::vector<std::string>> CrawlStore::RunItems(int64_t crawl_config_id, int64_t run_id) {
  return pool_.Transact<std::vector<std::string>>(
      [&](pqxx::transaction_base& tx) -> Result<std::vector<std::string>> {
        std::vector<std::string> lines;
        for (const auto& r : tx.exec_params(
                 "SELECT data::text FROM extracted_items WHERE crawl_config_id = $1 "
                 "AND last_run_id = $2 ORDER BY id",
                 crawl_config_id, run_id))
          lines.push_back(r[0].as<std::string>());
        return lines;
      });
}

}  // namespace celeriac::state
