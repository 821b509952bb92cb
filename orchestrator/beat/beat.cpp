#include "orchestrator/beat/beat.hpp"

#include <cmath>
#include <set>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "core/base/backoff.hpp"
#include "core/base/ids.hpp"
#include "core/celery/codec.hpp"
#include "orchestrator/beat/schedule.hpp"
#include "orchestrator/tasks/crawl_tasks.hpp"

namespace celeriac::orchestrator::beat {
namespace {

using Json = nlohmann::ordered_json;
using std::chrono::duration_cast;
using std::chrono::microseconds;
using std::chrono::milliseconds;

// The namespace of beat's name-based task ids (a random UUID, fixed forever).
constexpr const char* kFireNamespace = "8f0c2b6e-5a4d-4f1e-9c3b-7d2a1e6f4b90";

// Times cross the SQL boundary as microseconds since the epoch: exact, no zone to agree on.
int64_t Micros(Clock::WallTime t) {
  return duration_cast<microseconds>(t.time_since_epoch()).count();
}
Clock::WallTime FromMicros(int64_t us) {
  return Clock::WallTime(duration_cast<Clock::WallTime::duration>(microseconds(us)));
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
std::string IntArray(const std::vector<int64_t>& v) {
  std::string out = "{";
  for (size_t i = 0; i < v.size(); ++i) {
    if (i > 0) out += ',';
    out += std::to_string(v[i]);
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

void MarkBeat(pqxx::transaction_base& tx) {
  tx.exec("SET LOCAL celeriac.beat = 'on'");
}

}  // namespace

std::string FireTaskId(int64_t crawl_task_id, Clock::WallTime due_at) {
  return NameUuid5(kFireNamespace,
                   fmt::format("crawl_task:{}@{}", crawl_task_id, FormatIso8601(due_at)));
}

Clock::WallTime ScaledClock::Now() const {
  const auto real = std::chrono::system_clock::now() - origin_;
  return origin_ + duration_cast<Clock::WallTime::duration>(real * scale_);
}

milliseconds ScaledClock::RealDelay(WallTime::duration d) const {
  return milliseconds(static_cast<int64_t>(
      std::ceil(std::chrono::duration<double, std::milli>(d).count() / scale_)));
}

Beat::Beat(pg::Pool& pool, broker::Broker& broker, const Clock& clock, BeatOptions options)
    : pool_(pool), broker_(broker), clock_(clock), options_(std::move(options)), listener_(pool) {
  if (options_.batch < 1) options_.batch = 1;
}

milliseconds Beat::RealDelay(Clock::WallTime::duration d) const {
  if (options_.real_delay) return options_.real_delay(d);
  return std::chrono::ceil<milliseconds>(d);
}

Clock::WallTime::duration Beat::FirstSightLookback() const {
  return 2 * std::max<Clock::WallTime::duration>(options_.max_sleep, std::chrono::seconds(60));
}

Result<int64_t> Beat::DeleteOldFires() {
  return pool_.Transact<int64_t>([&](pqxx::transaction_base& tx) -> Result<int64_t> {
    const auto r = tx.exec_params(
        "DELETE FROM beat_fires WHERE ctid = ANY(ARRAY(SELECT ctid FROM beat_fires "
        "WHERE due_at < " + Ts("$1") + " LIMIT 10000))",
        Micros(clock_.Now() - options_.fires_retention));
    return static_cast<int64_t>(r.affected_rows());
  });
}

BeatStats Beat::stats() const {
  std::lock_guard lock(stats_mutex_);
  return stats_;
}

Result<int64_t> Beat::ScheduleUnscheduled() {
  constexpr int64_t kChunk = 5000;
  // A schedule counts from its change, but never from further back than a beat could have
  // taken to notice it: a row written while no beat ran does not catch up on runs before that.
  const auto base_floor = clock_.Now() - FirstSightLookback();
  int64_t total = 0;
  int64_t after_id = 0;
  while (true) {
    std::vector<int64_t> bad_ids;
    for (const auto& [id, why] : bad_) bad_ids.push_back(id);
    struct Row {
      int64_t id;
      std::string schedule, zone;
      int64_t updated_us;
    };
    auto rows = pool_.Transact<std::vector<Row>>(
        [&](pqxx::transaction_base& tx) -> Result<std::vector<Row>> {
          std::vector<Row> out;
          for (const auto& r : tx.exec_params(
                   "SELECT id, schedule, timezone, " + MicrosOf("updated_at") +
                       " FROM crawl_tasks WHERE enabled AND schedule IS NOT NULL "
                       "AND next_run_at IS NULL AND id > $1 AND NOT (id = ANY($2::bigint[])) "
                       "ORDER BY id LIMIT $3",
                   after_id, IntArray(bad_ids), kChunk))
            out.push_back({r[0].as<int64_t>(), r[1].as<std::string>(), r[2].as<std::string>(),
                           r[3].as<int64_t>()});
          return out;
        });
    if (!rows) return rows.error();
    if (rows->empty()) break;
    after_id = rows->back().id;
    std::vector<int64_t> ids, nexts, updated;
    for (const auto& row : *rows) {
      auto schedule = Schedule::Make(row.schedule, row.zone);
      std::optional<Clock::WallTime> next;
      std::string why;
      if (!schedule) {
        why = schedule.error().message();
      } else if (next = schedule->NextAfter(std::max(FromMicros(row.updated_us), base_floor));
                 !next) {
        why = fmt::format("schedule \"{}\" has no due time in the next {} years", row.schedule,
                          Schedule::kHorizonYears);
      }
      if (!why.empty()) {
        spdlog::error("beat: crawl task {} left unscheduled: {} (fix the row; beat notices)",
                      row.id, why);
        bad_[row.id] = why;
        std::lock_guard lock(stats_mutex_);
        ++stats_.bad;
        continue;
      }
      ids.push_back(row.id);
      nexts.push_back(Micros(*next));
      updated.push_back(row.updated_us);
    }
    if (!ids.empty()) {
      auto n = pool_.Transact<int64_t>([&](pqxx::transaction_base& tx) -> Result<int64_t> {
        MarkBeat(tx);
        // Only rows unchanged since they were read: a newer change is announced and read again.
        const auto r = tx.exec_params(
            "UPDATE crawl_tasks t SET next_run_at = " + Ts("v.next") +
                " FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) v(id, next, updated) "
                "WHERE t.id = v.id AND t.next_run_at IS NULL AND " +
                MicrosOf("t.updated_at") + " = v.updated",
            IntArray(ids), IntArray(nexts), IntArray(updated));
        return static_cast<int64_t>(r.affected_rows());
      });
      if (!n) return n.error();
      total += *n;
    }
    if (static_cast<int64_t>(rows->size()) < kChunk) break;
  }
  if (total > 0) {
    spdlog::info("beat: computed the next due time of {} new or changed crawl task(s)", total);
    std::lock_guard lock(stats_mutex_);
    stats_.scheduled += total;
  }
  return total;
}

Result<std::optional<Clock::WallTime>> Beat::EarliestDue() {
  return pool_.Transact<std::optional<Clock::WallTime>>(
      [&](pqxx::transaction_base& tx) -> Result<std::optional<Clock::WallTime>> {
        const auto r = tx.exec(
            "SELECT " + MicrosOf("min(next_run_at)") +
            " FROM crawl_tasks WHERE enabled AND schedule IS NOT NULL");
        if (r.empty() || r[0][0].is_null()) return std::optional<Clock::WallTime>();
        return std::optional<Clock::WallTime>(FromMicros(r[0][0].as<int64_t>()));
      });
}

Result<FireReport> Beat::FireDue() {
  FireReport total;
  while (true) {
    auto batch = FireBatch(clock_.Now());
    if (!batch) return batch.error();
    total.claimed += batch->claimed;
    total.fired += batch->fired;
    if (batch->claimed < options_.batch || stop_) break;
  }
  return total;
}

Result<FireReport> Beat::FireBatch(Clock::WallTime now) {
  if (!declared_) {
    broker::QueueSpec spec;
    spec.name = spec.exchange = spec.routing_key = options_.queue;
    if (auto st = broker_.Declare(spec); !st) return st.error();
    declared_ = true;
  }
  struct Outcome {
    FireReport report;
    int64_t skipped = 0, already = 0;
    std::vector<std::pair<int64_t, std::string>> bad;
    std::vector<std::string> fired_log;
    double claimed_ms = 0, built_ms = 0, confirmed_ms = 0;
  };
  const auto started = std::chrono::steady_clock::now();
  auto outcome = pool_.Transact<Outcome>([&](pqxx::transaction_base& tx) -> Result<Outcome> {
    Outcome out;
    MarkBeat(tx);
    // A beat stopped (not killed) mid-firing must not hold its rows forever.
    tx.exec("SET LOCAL idle_in_transaction_session_timeout = '60s'");
    const auto rows = tx.exec_params(
        "SELECT id, name, schedule, timezone, " + MicrosOf("next_run_at") +
            " FROM crawl_tasks WHERE enabled AND schedule IS NOT NULL AND next_run_at <= " +
            Ts("$1") + " ORDER BY next_run_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        Micros(now), options_.batch);
    out.report.claimed = static_cast<int64_t>(rows.size());
    if (rows.empty()) return out;
    out.claimed_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                               started).count();

    struct Fire {
      int64_t id;
      std::string name;
      Clock::WallTime due;
      std::optional<Clock::WallTime> missed_since;
      std::string task_id;
    };
    std::vector<Fire> fires;
    std::vector<int64_t> upd_ids;
    std::vector<std::optional<int64_t>> upd_next;
    std::vector<int64_t> upd_fired;  // 1 = fired now (last_run_at), 0 = not
    for (const auto& r : rows) {
      const int64_t id = r[0].as<int64_t>();
      const auto stored = FromMicros(r[4].as<int64_t>());
      auto schedule = Schedule::Make(r[2].as<std::string>(), r[3].as<std::string>());
      if (!schedule) {
        // Cleared, so it is not claimed again; fixing the row announces it.
        out.bad.emplace_back(id, schedule.error().message());
        upd_ids.push_back(id);
        upd_next.push_back(std::nullopt);
        upd_fired.push_back(0);
        continue;
      }
      // Due times missed while no beat ran fold into the latest one.
      const auto latest = schedule->LatestIn(stored, now);
      Fire f{id, r[1].as<std::string>(), latest.value_or(stored), std::nullopt, ""};
      if (latest) f.missed_since = stored;
      const auto next = schedule->NextAfter(now);
      upd_ids.push_back(id);
      upd_next.push_back(next ? std::optional<int64_t>(Micros(*next)) : std::nullopt);
      if (options_.catch_up_grace.count() > 0 && now - f.due > options_.catch_up_grace) {
        spdlog::warn("beat: crawl task {} missed its run due at {} (older than the catch-up "
                     "grace of {} s); next at {}",
                     id, FormatIso8601(f.due), options_.catch_up_grace.count(),
                     next ? FormatIso8601(*next) : std::string("never"));
        ++out.skipped;
        upd_fired.push_back(0);
        continue;
      }
      f.task_id = FireTaskId(id, f.due);
      fires.push_back(std::move(f));
      upd_fired.push_back(1);
    }

    // Due times already fired (next_run_at set back by hand) are not fired again.
    if (!fires.empty()) {
      std::vector<std::string> tids;
      for (const auto& f : fires) tids.push_back(f.task_id);
      std::set<std::string> done;
      for (const auto& r : tx.exec_params(
               "SELECT celery_task_id FROM beat_fires WHERE celery_task_id = ANY($1::text[])",
               TextArray(tids)))
        done.insert(r[0].as<std::string>());
      if (!done.empty()) {
        std::erase_if(fires, [&](const Fire& f) {
          if (!done.count(f.task_id)) return false;
          spdlog::info("beat: crawl task {} due at {} was already fired; not again", f.id,
                       FormatIso8601(f.due));
          ++out.already;
          return true;
        });
      }
    }

    if (!fires.empty()) {
      std::vector<broker::OutgoingMessage> messages;
      messages.reserve(fires.size());
      for (const auto& f : fires) {
        // What a BFF's send_task sends, plus who fired it and for when.
        auto m = celery::NewTask(kExecuteCrawlTask, Json::array({f.id}), Json::object());
        m.id = m.root_id = m.correlation_id = f.task_id;
        m.origin = options_.name;
        m.custom_headers["periodic_task_name"] = f.name;
        m.custom_headers[kTriggerHeader] = "beat";
        m.custom_headers[kScheduleHeader] = f.id;
        m.custom_headers[kScheduledForHeader] = FormatIso8601(f.due);
        messages.push_back(celery::EncodeTask(m, options_.queue, now));
      }
      out.built_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                               started).count();
      if (auto st = broker_.PublishBatch(messages); !st)
        return Error(st.error().code(),
                     fmt::format("publishing {} execute_crawl_task message(s) to queue {}: {}",
                                 messages.size(), options_.queue, st.error().message()),
                     st.error().retryable());
      const auto confirmed = clock_.Now();
      out.confirmed_ms = std::chrono::duration<double, std::milli>(
                             std::chrono::steady_clock::now() - started).count();
      std::vector<int64_t> ids, dues;
      std::vector<std::optional<int64_t>> missed;
      std::vector<std::string> tids;
      for (const auto& f : fires) {
        ids.push_back(f.id);
        dues.push_back(Micros(f.due));
        missed.push_back(f.missed_since ? std::optional<int64_t>(Micros(*f.missed_since))
                                        : std::nullopt);
        tids.push_back(f.task_id);
        if (out.fired_log.size() < 5)
          out.fired_log.push_back(fmt::format("{}@{}", f.id, FormatIso8601(f.due)));
      }
      tx.exec_params(
          "INSERT INTO beat_fires (crawl_task_id, due_at, celery_task_id, missed_since, "
          " fired_at, published_at, beat) "
          "SELECT v.id, " + Ts("v.due") + ", v.tid, " + Ts("v.missed") + ", " + Ts("$5") +
              ", " + Ts("$6") + ", $7 "
              "FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[]) "
              "v(id, due, tid, missed)",
          IntArray(ids), IntArray(dues), TextArray(tids), IntArray(missed), Micros(now),
          Micros(confirmed), options_.name);
      out.report.fired = static_cast<int64_t>(fires.size());
    }
    tx.exec_params(
        "UPDATE crawl_tasks t SET next_run_at = " + Ts("v.next") +
            ", last_run_at = CASE WHEN v.fired = 1 THEN " + Ts("$4") +
            " ELSE t.last_run_at END "
            "FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) v(id, next, fired) "
            "WHERE t.id = v.id",
        IntArray(upd_ids), IntArray(upd_next), IntArray(upd_fired), Micros(now));
    return out;
  });
  if (!outcome) return outcome.error();
  for (const auto& [id, why] : outcome->bad) {
    spdlog::error("beat: crawl task {} left unscheduled: {} (fix the row; beat notices)", id, why);
    bad_[id] = why;
  }
  if (outcome->report.fired > 0) {
    std::string sample;
    for (const auto& s : outcome->fired_log) sample += (sample.empty() ? "" : ", ") + s;
    spdlog::info("beat: fired {} crawl task(s) to queue {}: {}{}", outcome->report.fired,
                 options_.queue, sample, outcome->report.fired > 5 ? ", ..." : "");
    spdlog::debug("beat: firing took {:.1f} ms: claimed at {:.1f}, messages built at {:.1f}, "
                  "confirmed at {:.1f}, committed at {:.1f}",
                  std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                            started).count(),
                  outcome->claimed_ms, outcome->built_ms, outcome->confirmed_ms,
                  std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                            started).count());
  }
  std::lock_guard lock(stats_mutex_);
  stats_.fired += outcome->report.fired;
  stats_.skipped += outcome->skipped;
  stats_.already += outcome->already;
  stats_.bad += static_cast<int64_t>(outcome->bad.size());
  return outcome->report;
}

void Beat::Stop() {
  stop_ = true;
  listener_.Wake();
}

Status Beat::Run() {
  bool listening = false;
  bool rescan = true;
  const Backoff backoff(BackoffPolicy{milliseconds(200), milliseconds(10'000), 2.0, true});
  int failures = 0;
  auto next_cleanup = clock_.Monotonic() + std::chrono::minutes(5);
  spdlog::info("beat {} started: queue {}, catch-up grace {}", options_.name, options_.queue,
               options_.catch_up_grace.count() > 0
                   ? fmt::format("{} s", options_.catch_up_grace.count())
                   : std::string("unlimited"));
  // One pass: listen, schedule what is new, fire what is due, and say how long to sleep.
  auto pass = [&]() -> Result<milliseconds> {
    if (!listening) {
      if (auto st = listener_.Listen(kChannel); !st) return st.error();
      listening = true;
      rescan = true;  // what changed while nobody listened is unknown
    }
    if (rescan) {
      if (auto n = ScheduleUnscheduled(); !n) return n.error();
      rescan = false;
    }
    auto fired = FireDue();
    if (!fired) return fired.error();
    if (clock_.Monotonic() >= next_cleanup) {
      if (auto n = DeleteOldFires(); !n) {
        spdlog::warn("beat: deleting old beat_fires rows: {}", n.error().message());
      } else if (*n > 0) {
        spdlog::info("beat: deleted {} beat_fires row(s) older than {} days", *n,
                     std::chrono::duration_cast<std::chrono::hours>(options_.fires_retention)
                             .count() / 24);
      }
      next_cleanup = clock_.Monotonic() + std::chrono::hours(1);
    }
    auto earliest = EarliestDue();
    if (!earliest) return earliest.error();
    if (!*earliest) return options_.max_sleep;
    const auto now = clock_.Now();
    if (**earliest <= now) {
      // Due rows this beat could not claim: another beat is firing them (or died holding
      // them); look again shortly so that nothing waits for the next due time.
      return fired->claimed > 0 ? milliseconds(0) : options_.busy_retry;
    }
    return std::min(options_.max_sleep, RealDelay(**earliest - now));
  };
  while (!stop_) {
    milliseconds wait{0};
    if (auto r = pass(); r) {
      wait = *r;
      failures = 0;
    } else {
      wait = backoff.Delay(failures++);
      spdlog::warn("beat: {}; retrying in {} ms", r.error().message(), wait.count());
    }
    if (stop_) break;
    if (wait.count() <= 0) continue;
    if (!listening) {
      std::this_thread::sleep_for(std::min(wait, milliseconds(1000)));
      continue;
    }
    auto got = listener_.Wait(wait);
    {
      std::lock_guard lock(stats_mutex_);
      ++stats_.wakeups;
    }
    if (!got) {
      spdlog::warn("beat: lost the LISTEN connection: {}", got.error().message());
      listening = false;
      continue;
    }
    if (!got->empty()) {
      for (const auto& payload : *got) {
        try {
          bad_.erase(std::stoll(payload));  // a bad row that changed gets another look
        } catch (const std::exception&) {
        }
      }
      rescan = true;
      std::lock_guard lock(stats_mutex_);
      stats_.notifications += static_cast<int64_t>(got->size());
    }
  }
  spdlog::info("beat {} stopped", options_.name);
  return Ok();
}

}  // namespace celeriac::orchestrator::beat
