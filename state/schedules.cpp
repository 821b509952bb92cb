#include "state/schedules.hpp"

#include <set>

#include "state/sql_util.hpp"

namespace celeriac::state {
namespace {

using std::chrono::duration_cast;
using std::chrono::microseconds;

int64_t Micros(Clock::WallTime t) {
  return duration_cast<microseconds>(t.time_since_epoch()).count();
}
std::string Ts(const std::string& param) {
  return "('epoch'::timestamptz + (" + param + ")::bigint * interval '1 microsecond')";
}
std::string MicrosOf(const std::string& column) {
  return "(extract(epoch from " + column + ") * 1000000)::bigint";
}

// Postgres array literals; NULL entries for nullopt.
std::string IntArray(const std::vector<std::optional<int64_t>>& v) {
  std::string out = "{";
  for (size_t i = 0; i < v.size(); ++i) {
    if (i > 0) out += ',';
    out += v[i] ? std::to_string(*v[i]) : "NULL";
  }
  return out + "}";
}
std::string TextArray(const std::vector<std::string>& v) {  // uuids: nothing to escape
  std::string out = "{";
  for (size_t i = 0; i < v.size(); ++i) {
    if (i > 0) out += ',';
    out += '"' + v[i] + '"';
  }
  return out + "}";
}

void MarkBeat(pqxx::transaction_base& tx) { tx.exec("SET LOCAL celeriac.beat = 'on'"); }

std::optional<int64_t> OptMicros(const std::optional<Clock::WallTime>& t) {
  return t ? std::optional<int64_t>(Micros(*t)) : std::nullopt;
}

// The firings whose due time is not in beat_fires yet; the others go to `already`.
std::vector<Firing> NotFiredYet(pqxx::transaction_base& tx, std::vector<Firing> fire,
                                std::vector<Firing>& already) {
  if (fire.empty()) return fire;
  std::vector<std::string> tids;
  for (const auto& f : fire) tids.push_back(f.celery_task_id);
  std::set<std::string> done;
  for (const auto& r : tx.exec_params(
           "SELECT celery_task_id FROM beat_fires WHERE celery_task_id = ANY($1::text[])",
           TextArray(tids)))
    done.insert(r[0].as<std::string>());
  std::vector<Firing> out;
  for (auto& f : fire) (done.count(f.celery_task_id) ? already : out).push_back(std::move(f));
  return out;
}

void RecordFires(pqxx::transaction_base& tx, const std::vector<Firing>& fired,
                 Clock::WallTime now, Clock::WallTime confirmed, const std::string& beat) {
  std::vector<std::optional<int64_t>> ids, dues, missed;
  std::vector<std::string> tids;
  for (const auto& f : fired) {
    ids.push_back(f.crawl_task_id);
    dues.push_back(Micros(f.due_at));
    missed.push_back(OptMicros(f.missed_since));
    tids.push_back(f.celery_task_id);
  }
  tx.exec_params(
      "INSERT INTO beat_fires (crawl_task_id, due_at, celery_task_id, missed_since, "
      " fired_at, published_at, beat) "
      "SELECT v.id, " + Ts("v.due") + ", v.tid, " + Ts("v.missed") + ", " + Ts("$5") + ", " +
          Ts("$6") + ", $7 "
          "FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[]) "
          "v(id, due, tid, missed)",
      IntArray(ids), IntArray(dues), TextArray(tids), IntArray(missed), Micros(now),
      Micros(confirmed), beat);
}

void AdvanceRows(pqxx::transaction_base& tx, const std::vector<Advance>& advance,
                 Clock::WallTime now) {
  std::vector<std::optional<int64_t>> ids, next, fired;
  for (const auto& a : advance) {
    ids.push_back(a.crawl_task_id);
    next.push_back(OptMicros(a.next_run_at));
    fired.push_back(a.fired ? 1 : 0);
  }
  tx.exec_params(
      "UPDATE crawl_tasks t SET next_run_at = " + Ts("v.next") +
          ", last_run_at = CASE WHEN v.fired = 1 THEN " + Ts("$4") +
          " ELSE t.last_run_at END "
          "FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) v(id, next, fired) "
          "WHERE t.id = v.id",
      IntArray(ids), IntArray(next), IntArray(fired), Micros(now));
}

}  // namespace

Result<std::vector<UnscheduledTask>> ListUnscheduled(pg::Pool& pool, int64_t after_id,
                                                     const std::vector<int64_t>& excluded,
                                                     int64_t limit) {
  return pool.Transact<std::vector<UnscheduledTask>>(
      [&](pqxx::transaction_base& tx) -> Result<std::vector<UnscheduledTask>> {
        std::vector<UnscheduledTask> out;
        for (const auto& r : tx.exec_params(
                 "SELECT id, schedule, timezone, " + MicrosOf("updated_at") +
                     " FROM crawl_tasks WHERE enabled AND schedule IS NOT NULL "
                     "AND next_run_at IS NULL AND id > $1 AND NOT (id = ANY($2::bigint[])) "
                     "ORDER BY id LIMIT $3",
                 after_id, sql::IdArray(excluded), limit))
          out.push_back({r[0].as<int64_t>(), r[1].as<std::string>(), r[2].as<std::string>(),
                         sql::FromMicros(r[3].as<int64_t>())});
        return out;
      });
}

Result<int64_t> SetFirstDue(pg::Pool& pool, const std::vector<FirstDue>& rows) {
  if (rows.empty()) return int64_t{0};
  std::vector<std::optional<int64_t>> ids, nexts, updated;
  for (const auto& r : rows) {
    ids.push_back(r.id);
    nexts.push_back(Micros(r.next_run_at));
    updated.push_back(Micros(r.updated_at));
  }
  return pool.Transact<int64_t>([&](pqxx::transaction_base& tx) -> Result<int64_t> {
    MarkBeat(tx);
    // Only rows unchanged since they were read: a newer change is announced and read again.
    const auto r = tx.exec_params(
        "UPDATE crawl_tasks t SET next_run_at = " + Ts("v.next") +
            " FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) v(id, next, updated) "
            "WHERE t.id = v.id AND t.next_run_at IS NULL AND " + MicrosOf("t.updated_at") +
            " = v.updated",
        IntArray(ids), IntArray(nexts), IntArray(updated));
    return static_cast<int64_t>(r.affected_rows());
  });
}

Result<std::optional<Clock::WallTime>> EarliestDue(pg::Pool& pool) {
  return pool.Transact<std::optional<Clock::WallTime>>(
      [&](pqxx::transaction_base& tx) -> Result<std::optional<Clock::WallTime>> {
        // least() ignores NULLs.
        const auto r = tx.exec(
            "SELECT " +
            MicrosOf("least((SELECT min(next_run_at) FROM crawl_tasks "
                     "WHERE enabled AND schedule IS NOT NULL), "
                     "(SELECT min(next_run_at) FROM beat_entries WHERE enabled))"));
        if (r.empty() || r[0][0].is_null()) return std::optional<Clock::WallTime>();
        return std::optional<Clock::WallTime>(sql::FromMicros(r[0][0].as<int64_t>()));
      });
}

Result<int64_t> DeleteFiresBefore(pg::Pool& pool, Clock::WallTime before) {
  return pool.Transact<int64_t>([&](pqxx::transaction_base& tx) -> Result<int64_t> {
    int64_t n = 0;
    for (const char* table : {"beat_fires", "beat_entry_fires"}) {
      const auto r = tx.exec_params(
          std::string("DELETE FROM ") + table + " WHERE ctid = ANY(ARRAY(SELECT ctid FROM " +
              table + " WHERE due_at < " + Ts("$1") + " LIMIT 10000))",
          Micros(before));
      n += static_cast<int64_t>(r.affected_rows());
    }
    return n;
  });
}

Result<FiringResult> FireDue(pg::Pool& pool, Clock::WallTime now, int64_t batch,
                             const std::string& beat_name,
                             const std::function<FiringPlan(const std::vector<DueTask>&)>& plan,
                             const std::function<Status(const std::vector<Firing>&)>& publish,
                             const std::function<Clock::WallTime()>& confirmed) {
  return pool.Transact<FiringResult>([&](pqxx::transaction_base& tx) -> Result<FiringResult> {
    FiringResult out;
    MarkBeat(tx);
    // A beat stopped (not killed) mid-firing must not hold its rows forever.
    tx.exec("SET LOCAL idle_in_transaction_session_timeout = '60s'");
    std::vector<DueTask> due;
    for (const auto& r : tx.exec_params(
             "SELECT id, name, schedule, timezone, " + MicrosOf("next_run_at") +
                 " FROM crawl_tasks WHERE enabled AND schedule IS NOT NULL AND next_run_at <= " +
                 Ts("$1") + " ORDER BY next_run_at LIMIT $2 FOR UPDATE SKIP LOCKED",
             Micros(now), batch))
      due.push_back({r[0].as<int64_t>(), r[1].as<std::string>(), r[2].as<std::string>(),
                     r[3].as<std::string>(), sql::FromMicros(r[4].as<int64_t>())});
    out.claimed = static_cast<int64_t>(due.size());
    if (due.empty()) return out;
    FiringPlan p = plan(due);
    // Due times already fired (next_run_at set back by hand) are not fired again.
    out.fired = NotFiredYet(tx, std::move(p.fire), out.already_fired);
    if (!out.fired.empty()) {
      if (auto st = publish(out.fired); !st) return st.error();
      RecordFires(tx, out.fired, now, confirmed(), beat_name);
    }
    AdvanceRows(tx, p.advance, now);
    return out;
  });
}

// ---- beat entries ----------------------------------------------------------------------------

Result<std::vector<UnscheduledEntry>> ListUnscheduledEntries(
    pg::Pool& pool, const std::vector<std::string>& excluded) {
  return pool.Transact<std::vector<UnscheduledEntry>>(
      [&](pqxx::transaction_base& tx) -> Result<std::vector<UnscheduledEntry>> {
        const std::set<std::string> bad(excluded.begin(), excluded.end());
        std::vector<UnscheduledEntry> out;
        for (const auto& r : tx.exec("SELECT name, schedule, timezone, " +
                                     MicrosOf("updated_at") +
                                     " FROM beat_entries WHERE enabled AND next_run_at IS NULL "
                                     "ORDER BY name")) {
          auto name = r[0].as<std::string>();
          if (bad.count(name)) continue;
          out.push_back({std::move(name), r[1].as<std::string>(), r[2].as<std::string>(),
                         sql::FromMicros(r[3].as<int64_t>())});
        }
        return out;
      });
}

Result<int64_t> SetEntriesFirstDue(pg::Pool& pool, const std::vector<EntryFirstDue>& rows) {
  if (rows.empty()) return int64_t{0};
  return pool.Transact<int64_t>([&](pqxx::transaction_base& tx) -> Result<int64_t> {
    MarkBeat(tx);
    int64_t n = 0;
    for (const auto& row : rows)
      n += static_cast<int64_t>(
          tx.exec_params("UPDATE beat_entries SET next_run_at = " + Ts("$2") +
                             " WHERE name = $1 AND next_run_at IS NULL AND " +
                             MicrosOf("updated_at") + " = $3",
                         row.name, Micros(row.next_run_at), Micros(row.updated_at))
              .affected_rows());
    return n;
  });
}

Result<EntryFiringResult> FireDueEntries(
    pg::Pool& pool, Clock::WallTime now, const std::string& beat_name,
    const std::function<EntryFiringPlan(const std::vector<DueEntry>&)>& plan,
    const std::function<Status(const std::vector<EntryFiring>&)>& publish,
    const std::function<Clock::WallTime()>& confirmed) {
  return pool.Transact<EntryFiringResult>(
      [&](pqxx::transaction_base& tx) -> Result<EntryFiringResult> {
        EntryFiringResult out;
        MarkBeat(tx);
        tx.exec("SET LOCAL idle_in_transaction_session_timeout = '60s'");
        std::vector<DueEntry> due;
        for (const auto& r : tx.exec_params(
                 "SELECT name, task, args::text, kwargs::text, schedule, timezone, " +
                     MicrosOf("next_run_at") +
                     " FROM beat_entries WHERE enabled AND next_run_at <= " + Ts("$1") +
                     " ORDER BY next_run_at LIMIT 100 FOR UPDATE SKIP LOCKED",
                 Micros(now)))
          due.push_back({r[0].as<std::string>(), r[1].as<std::string>(), r[2].as<std::string>(),
                         r[3].as<std::string>(), r[4].as<std::string>(), r[5].as<std::string>(),
                         sql::FromMicros(r[6].as<int64_t>())});
        out.claimed = static_cast<int64_t>(due.size());
        if (due.empty()) return out;
        EntryFiringPlan p = plan(due);
        // Due times already fired (next_run_at set back by hand) are not fired again.
        for (auto& f : p.fire) {
          const bool done =
              !tx.exec_params("SELECT 1 FROM beat_entry_fires WHERE celery_task_id = $1",
                              f.celery_task_id)
                   .empty();
          (done ? out.already_fired : out.fired).push_back(std::move(f));
        }
        if (!out.fired.empty()) {
          if (auto st = publish(out.fired); !st) return st.error();
          const auto at = confirmed();
          for (const auto& f : out.fired)
            tx.exec_params(
                "INSERT INTO beat_entry_fires (entry, due_at, celery_task_id, missed_since, "
                " fired_at, published_at, beat) VALUES ($1, " + Ts("$2") + ", $3, " + Ts("$4") +
                    ", " + Ts("$5") + ", " + Ts("$6") + ", $7)",
                f.entry.name, Micros(f.due_at), f.celery_task_id,
                sql::OptInt(OptMicros(f.missed_since)), Micros(now), Micros(at), beat_name);
        }
        for (const auto& a : p.advance)
          tx.exec_params("UPDATE beat_entries SET next_run_at = " + Ts("$2") +
                             ", last_run_at = CASE WHEN $3 THEN " + Ts("$4") +
                             " ELSE last_run_at END WHERE name = $1",
                         a.name, sql::OptInt(OptMicros(a.next_run_at)), a.fired, Micros(now));
        return out;
      });
}

}  // namespace celeriac::state
