#include "orchestrator/ops/ops.hpp"

#include <unistd.h>

#include <algorithm>
#include <map>
#include <set>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "core/pg/sql.hpp"
#include "core/base/ids.hpp"
#include "core/base/text.hpp"
#include "core/broker/amqp_table.hpp"
#include "core/celery/codec.hpp"

#include "orchestrator/tasks/crawl_tasks.hpp"

namespace celeriac::orchestrator::ops {
namespace {

// Timestamps cross the SQL boundary as microseconds since the epoch: exact, and no time zone
// or text format to agree on.
std::string Micros(const char* column) {
  return std::string("(extract(epoch from ") + column + ") * 1000000)::bigint";
}

Clock::WallTime FromMicros(int64_t micros) {
  return Clock::WallTime(std::chrono::duration_cast<Clock::WallTime::duration>(
      std::chrono::microseconds(micros)));
}

std::optional<Clock::WallTime> OptTime(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return FromMicros(f.as<int64_t>());
}

std::optional<std::string> OptText(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return f.as<std::string>();
}

std::optional<std::string> OptIso(const std::optional<Clock::WallTime>& t) {
  if (!t) return std::nullopt;
  return FormatIso8601(*t);
}

// Optional integers go to libpqxx as text: GCC's -Wmaybe-uninitialized misfires on
// std::optional<int64_t> parameters.
std::optional<std::string> OptInt(const std::optional<int64_t>& v) {
  if (!v) return std::nullopt;
  return std::to_string(*v);
}

// A limit of 0 or less is no limit (LIMIT NULL).
std::optional<std::string> LimitParam(int64_t limit) {
  return limit > 0 ? OptInt(limit) : std::nullopt;
}

template <typename T>
Json OrNull(const std::optional<T>& v) {
  return v ? Json(*v) : Json(nullptr);
}

Json TimeOrNull(const std::optional<Clock::WallTime>& t) {
  return t ? Json(FormatIso8601(*t)) : Json(nullptr);
}

// A Postgres array literal of ids: {1,2,3}.
std::string IdArray(const std::vector<int64_t>& ids) {
  std::string out = "{";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) out += ',';
    out += std::to_string(ids[i]);
  }
  return out + "}";
}

std::string Base64(std::string_view in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v = (static_cast<unsigned char>(in[i]) << 16) |
                       (static_cast<unsigned char>(in[i + 1]) << 8) |
                       static_cast<unsigned char>(in[i + 2]);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (i + 1 == in.size()) {
    const uint32_t v = static_cast<unsigned char>(in[i]) << 16;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    const uint32_t v = (static_cast<unsigned char>(in[i]) << 16) |
                       (static_cast<unsigned char>(in[i + 1]) << 8);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

// Parses a json/jsonb column's text; a value that does not parse (never expected) becomes null
// rather than failing the whole listing.
Json ParseColumn(const pqxx::field& f, Json fallback) {
  if (f.is_null()) return fallback;
  auto j = Json::parse(f.as<std::string>(), nullptr, /*allow_exceptions=*/false);
  return j.is_discarded() ? fallback : j;
}

std::string Origin() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  return "gen" + std::to_string(getpid()) + "@" + host;
}

Status DeclareCeleryQueue(broker::Broker& broker, const std::string& queue) {
  broker::QueueSpec spec;
  spec.name = spec.exchange = spec.routing_key = queue;
  return broker.Declare(spec);
}

// Publishes a task as Python's send_task would, after declaring its queue as Celery does.
Status PublishTask(broker::Broker& broker, const celery::TaskMessage& m, const std::string& queue) {
  if (auto st = DeclareCeleryQueue(broker, queue); !st) return st;
  return broker.Publish(celery::EncodeTask(m, queue));
}

// ---- runs ------------------------------------------------------------------------------------

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

std::optional<int64_t> OptInt64(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return f.as<int64_t>();
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

// ---- dead letters ----------------------------------------------------------------------------

const std::string& DeadLetterColumns() {
  static const std::string cols =
      "id, queue, task_name, task_id, headers::text, properties::text, body, error_class, "
      "error_message, error_context::text, attempts, " +
      Micros("first_failed_at") + ", " + Micros("created_at") + ", replay_count, " +
      Micros("replayed_at") + ", replayed_task_id, " + Micros("purged_at") + ", raw_headers";
  return cols;
}

DeadLetterRow DeadLetterFrom(const pqxx::row& r) {
  DeadLetterRow d;
  d.id = r[0].as<int64_t>();
  d.queue = r[1].as<std::string>();
  d.task_name = OptText(r[2]);
  d.task_id = OptText(r[3]);
  d.headers = ParseColumn(r[4], Json::object());
  d.properties = ParseColumn(r[5], Json::object());
  d.body = pqxx::binarystring(r[6]).str();
  d.error_class = r[7].as<std::string>();
  d.error_message = r[8].as<std::string>();
  d.error_context = ParseColumn(r[9], Json::object());
  d.attempts = r[10].as<int64_t>();
  d.first_failed_at = FromMicros(r[11].as<int64_t>());
  d.created_at = FromMicros(r[12].as<int64_t>());
  d.replay_count = r[13].as<int64_t>();
  d.replayed_at = OptTime(r[14]);
  d.replayed_task_id = OptText(r[15]);
  d.purged_at = OptTime(r[16]);
  if (!r[17].is_null()) d.raw_headers = pqxx::binarystring(r[17]).str();
  return d;
}

enum class Order { kNewestFirst, kOldestFirst };

// The WHERE clause of a dead-letter filter (parameters $1..$8), its ORDER BY and LIMIT ($9).
std::string DeadLetterWhere(Order order, const char* lock = "") {
  return fmt::format(
      "WHERE (cardinality($1::bigint[]) = 0 OR id = ANY($1::bigint[])) "
      "AND ($2::text IS NULL OR queue = $2) "
      "AND ($3::text IS NULL OR task_name = $3) "
      "AND ($4::text IS NULL OR error_class = $4) "
      "AND ($5::timestamptz IS NULL OR created_at >= $5) "
      "AND ($6::timestamptz IS NULL OR created_at < $6) "
      "AND ($7::bool OR replay_count = 0) "
      "AND ($8::bool OR purged_at IS NULL) "
      "ORDER BY {} LIMIT $9::bigint{}",
      order == Order::kNewestFirst ? "created_at DESC, id DESC" : "id ASC", lock);
}

// `replayed` and `purged` say whether rows already replayed / purged may be selected.
pqxx::result SelectDeadLetters(pqxx::transaction_base& tx, const std::string& select,
                               const DeadLetterFilter& f, bool replayed, bool purged,
                               Order order, const char* lock = "") {
  return tx.exec_params(select + " FROM dead_letters " + DeadLetterWhere(order, lock),
                        IdArray(f.ids), f.queue, f.task_name, f.error_class, OptIso(f.since),
                        OptIso(f.until), replayed, purged, LimitParam(f.limit));
}

// The message a replay publishes: the original, retries reset (Celery v2 keeps them in a
// header; a v1 message has none to reset), and the dead letter's id in a header.
broker::OutgoingMessage ReplayMessage(const DeadLetterRow& row) {
  broker::Headers headers = row.headers.is_object() ? row.headers : broker::Headers::object();
  // Headers that had to be escaped to be stored go out as they arrived.
  if (row.raw_headers) {
    if (auto exact = broker::DecodeTable(*row.raw_headers); exact) headers = std::move(*exact);
  }
  if (auto it = headers.find("retries"); it != headers.end()) *it = 0;
  headers[kDeadLetterHeader] = row.id;
  broker::OutgoingMessage m;
  m.exchange = "";
  m.routing_key = row.queue;
  m.properties = broker::PropertiesFromJson(row.properties, headers);
  m.body = row.body;
  return m;
}

std::optional<std::string> ReplayTaskId(const broker::OutgoingMessage& m) {
  if (auto it = m.properties.headers.find("id");
      it != m.properties.headers.end() && it->is_string() && !it->get<std::string>().empty())
    return it->get<std::string>();
  if (!m.properties.correlation_id.empty()) return m.properties.correlation_id;
  return std::nullopt;
}

Result<ReplayOutcome> ReplayOne(pg::Pool& pool, broker::Broker& broker, int64_t id,
                                const ReplayOptions& options,
                                std::map<std::string, Status>& declared) {
  // Transact may run the body again after a retryable database error; once the broker took
  // the message, a second attempt only marks the row, it never publishes twice.
  bool published = false;
  std::optional<std::string> task_id;
  return pool.Transact<ReplayOutcome>(
      [&](pqxx::transaction_base& tx) -> Result<ReplayOutcome> {
        ReplayOutcome out;
        out.dead_letter_id = id;
        const auto rows = tx.exec_params(
            "SELECT " + DeadLetterColumns() + " FROM dead_letters WHERE id = $1" +
                (options.dry_run ? "" : " FOR UPDATE"),
            id);
        if (rows.empty()) {
          out.status = "not_found";
          out.message = fmt::format("dead letter {} does not exist", id);
          return out;
        }
        const DeadLetterRow row = DeadLetterFrom(rows[0]);
        if (!published) {
          if (row.purged_at) {
            out.status = "purged";
            out.message = fmt::format("dead letter {} was purged at {}; purged rows are never "
                                      "replayed", id, FormatIso8601(*row.purged_at));
            return out;
          }
          if (row.replay_count > 0 && !options.force) {
            out.status = "already_replayed";
            out.task_id = row.replayed_task_id;
            out.message = fmt::format(
                "dead letter {} was replayed {} time(s), last at {}; use force to replay it "
                "again", id, row.replay_count,
                row.replayed_at ? FormatIso8601(*row.replayed_at) : std::string("?"));
            return out;
          }
          const auto message = ReplayMessage(row);
          task_id = ReplayTaskId(message);
          out.task_id = task_id;
          if (options.dry_run) {
            out.status = "would_replay";
            out.message = fmt::format("would publish to queue {}", row.queue);
            return out;
          }
          auto [it, first] = declared.try_emplace(row.queue);
          if (first) it->second = DeclareCeleryQueue(broker, row.queue);
          if (!it->second)
            return Error(it->second.error().code(),
                         fmt::format("declaring queue {}: {}", row.queue,
                                     it->second.error().message()),
                         it->second.error().retryable());
          if (auto st = broker.Publish(message); !st)
            return Error(st.error().code(),
                         fmt::format("publishing to queue {}: {}", row.queue,
                                     st.error().message()),
                         st.error().retryable());
          published = true;
        }
        tx.exec_params(
            "UPDATE dead_letters SET replay_count = replay_count + 1, replayed_at = now(), "
            " replayed_task_id = $2 WHERE id = $1",
            id, task_id);
        out.status = "replayed";
        out.task_id = task_id;
        out.message = fmt::format("published to queue {}", row.queue);
        return out;
      });
}

}  // namespace

// ---- run-now ---------------------------------------------------------------------------------

Result<RunNowResult> RunNow(pg::Pool& pool, broker::Broker& broker, int64_t crawl_task_id,
                            const RunNowOptions& options) {
  auto m = celery::NewTask(kExecuteCrawlTask, Json::array({crawl_task_id}), Json::object());
  m.origin = Origin();
  m.custom_headers[kTriggerHeader] = "run-now";

  // The run row first, so the caller has its id at once; the worker finds it by task id.
  auto run_id = pool.Transact<int64_t>([&](pqxx::transaction_base& tx) -> Result<int64_t> {
    const auto task =
        tx.exec_params("SELECT enabled FROM crawl_tasks WHERE id = $1", crawl_task_id);
    if (task.empty())
      return Error(ErrorCode::kNotFound,
                   fmt::format("crawl task {} does not exist", crawl_task_id), false);
    if (!task[0][0].as<bool>())
      return Error(ErrorCode::kInvalidArgument,
                   fmt::format("crawl task {} is disabled", crawl_task_id), false);
    return tx
        .exec_params1(
            "INSERT INTO crawl_runs (crawl_task_id, celery_task_id, trigger, status) "
            "VALUES ($1, $2, 'run-now', 'pending') RETURNING id",
            crawl_task_id, m.id)[0]
        .as<int64_t>();
  });
  if (!run_id) return run_id.error();

  if (auto st = PublishTask(broker, m, options.queue); !st) {
    // Nobody will run it: take the row back (unless a worker got the message after all and
    // already started it), so no run stays pending forever.
    auto undo = pool.Execute([&](pqxx::transaction_base& tx) -> Status {
      tx.exec_params("DELETE FROM crawl_runs WHERE id = $1 AND status = 'pending'", *run_id);
      return Ok();
    });
    if (!undo)
      spdlog::warn("run-now: run {} left pending after a failed publish: {}", *run_id,
                   undo.error().message());
    return Error(st.error().code(),
                 fmt::format("publishing execute_crawl_task to queue {}: {}", options.queue,
                             st.error().message()),
                 st.error().retryable());
  }
  return RunNowResult{m.id, *run_id};
}

Result<std::string> TriggerSiteAnalysis(broker::Broker& broker, int64_t data_source_id,
                                        const std::string& theme_name,
                                        const RunNowOptions& options) {
  auto m = celery::NewTask(kTriggerSiteAnalysis, Json::array({data_source_id, theme_name}),
                           Json::object());
  m.origin = Origin();
  if (auto st = PublishTask(broker, m, options.queue); !st)
    return Error(st.error().code(),
                 fmt::format("publishing trigger_site_analysis to queue {}: {}", options.queue,
                             st.error().message()),
                 st.error().retryable());
  return m.id;
}

// ---- runs ------------------------------------------------------------------------------------

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

// ---- dead letters ----------------------------------------------------------------------------

Json DeadLetterRow::ToJson(bool with_message) const {
  Json j;
  j["id"] = id;
  j["queue"] = queue;
  j["task_name"] = OrNull(task_name);
  j["task_id"] = OrNull(task_id);
  j["error_class"] = error_class;
  j["error_message"] = error_message;
  j["attempts"] = attempts;
  j["first_failed_at"] = FormatIso8601(first_failed_at);
  j["created_at"] = FormatIso8601(created_at);
  j["replay_count"] = replay_count;
  j["replayed_at"] = TimeOrNull(replayed_at);
  j["replayed_task_id"] = OrNull(replayed_task_id);
  j["purged_at"] = TimeOrNull(purged_at);
  if (with_message) {
    j["error_context"] = error_context;
    j["headers"] = headers;
    // The exact bytes of headers that could only be stored escaped (a replay sends these).
    if (raw_headers) j["raw_headers_base64"] = Base64(*raw_headers);
    j["properties"] = properties;
    if (IsValidUtf8(body)) {
      j["body"] = body;
    } else {
      j["body_base64"] = Base64(body);
    }
  }
  return j;
}

Result<std::vector<DeadLetterRow>> ListDeadLetters(pg::Pool& pool,
                                                   const DeadLetterFilter& filter) {
  return pool.Transact<std::vector<DeadLetterRow>>(
      [&](pqxx::transaction_base& tx) -> Result<std::vector<DeadLetterRow>> {
        std::vector<DeadLetterRow> out;
        for (const auto& r :
             SelectDeadLetters(tx, "SELECT " + DeadLetterColumns(), filter,
                               filter.include_replayed, filter.include_purged,
                               Order::kNewestFirst))
          out.push_back(DeadLetterFrom(r));
        return out;
      });
}

Result<std::optional<DeadLetterRow>> ShowDeadLetter(pg::Pool& pool, int64_t id) {
  return pool.Transact<std::optional<DeadLetterRow>>(
      [&](pqxx::transaction_base& tx) -> Result<std::optional<DeadLetterRow>> {
        const auto rows = tx.exec_params(
            "SELECT " + DeadLetterColumns() + " FROM dead_letters WHERE id = $1", id);
        if (rows.empty()) return std::optional<DeadLetterRow>();
        return std::optional<DeadLetterRow>(DeadLetterFrom(rows[0]));
      });
}

Json ReplayOutcome::ToJson() const {
  Json j;
  j["dead_letter_id"] = dead_letter_id;
  j["status"] = status;
  j["task_id"] = OrNull(task_id);
  j["message"] = message;
  return j;
}

Result<std::vector<ReplayOutcome>> ReplayDeadLetters(pg::Pool& pool, broker::Broker& broker,
                                                     const DeadLetterFilter& filter,
                                                     const ReplayOptions& options) {
  // 1. Which rows: see the header comment. Named rows are selected even when replayed or
  // purged, so the refusal is reported; each is checked again under its row lock below.
  const bool named = !filter.ids.empty();
  auto ids = pool.Transact<std::vector<int64_t>>(
      [&](pqxx::transaction_base& tx) -> Result<std::vector<int64_t>> {
        std::vector<int64_t> out;
        for (const auto& r : SelectDeadLetters(tx, "SELECT id", filter,
                                               named || (options.force && filter.include_replayed),
                                               named, Order::kOldestFirst))
          out.push_back(r[0].as<int64_t>());
        return out;
      });
  if (!ids) return ids.error();

  std::vector<ReplayOutcome> outcomes;
  // Ids asked for that the filter did not select: unknown, or excluded by another filter.
  const std::set<int64_t> selected(ids->begin(), ids->end());
  std::set<int64_t> missing;
  for (int64_t id : filter.ids)
    if (!selected.count(id)) missing.insert(id);

  // 2. One transaction per row, so one failure stops nothing else.
  std::map<std::string, Status> declared;
  for (int64_t id : *ids) {
    auto outcome = ReplayOne(pool, broker, id, options, declared);
    if (outcome) {
      outcomes.push_back(std::move(*outcome));
      continue;
    }
    ReplayOutcome failed;
    failed.dead_letter_id = id;
    failed.status = "failed";
    failed.message = outcome.error().ToString();
    outcomes.push_back(std::move(failed));
  }
  for (int64_t id : missing) {
    ReplayOutcome out;
    out.dead_letter_id = id;
    out.status = "not_found";
    out.message = fmt::format("dead letter {} does not exist or does not match the filters", id);
    outcomes.push_back(std::move(out));
  }
  return outcomes;
}

Result<PurgeResult> PurgeDeadLetters(pg::Pool& pool, const DeadLetterFilter& filter,
                                     bool dry_run) {
  return pool.Transact<PurgeResult>([&](pqxx::transaction_base& tx) -> Result<PurgeResult> {
    PurgeResult out;
    out.dry_run = dry_run;
    // Rows already purged keep their first purged_at and are not counted again.
    const std::string select = "SELECT id";
    const auto rows =
        dry_run ? SelectDeadLetters(tx, select, filter, filter.include_replayed, false,
                                    Order::kOldestFirst)
                : SelectDeadLetters(tx, select, filter, filter.include_replayed, false,
                                    Order::kOldestFirst, " FOR UPDATE");
    for (const auto& r : rows) out.ids.push_back(r[0].as<int64_t>());
    if (!dry_run && !out.ids.empty())
      tx.exec_params(
          "UPDATE dead_letters SET purged_at = now() "
          "WHERE id = ANY($1::bigint[]) AND purged_at IS NULL",
          IdArray(out.ids));
    out.count = static_cast<int64_t>(out.ids.size());
    return out;
  });
}

}  // namespace celeriac::orchestrator::ops
