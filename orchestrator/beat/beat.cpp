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
#include "state/schedules.hpp"

namespace celeriac::orchestrator::beat {
namespace {

using Json = nlohmann::ordered_json;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

// The namespace of beat's name-based task ids (a random UUID, fixed forever).
constexpr const char* kFireNamespace = "8f0c2b6e-5a4d-4f1e-9c3b-7d2a1e6f4b90";

}  // namespace

std::string FireTaskId(int64_t crawl_task_id, Clock::WallTime due_at) {
  return NameUuid5(kFireNamespace,
                   fmt::format("crawl_task:{}@{}", crawl_task_id, FormatIso8601(due_at)));
}

std::string EntryTaskId(const std::string& entry, Clock::WallTime due_at) {
  return NameUuid5(kFireNamespace, fmt::format("entry:{}@{}", entry, FormatIso8601(due_at)));
}

DuePlan PlanDue(const std::string& schedule_text, const std::string& timezone,
                Clock::WallTime next_run_at, Clock::WallTime now,
                std::chrono::seconds catch_up_grace) {
  DuePlan plan;
  auto schedule = Schedule::Make(schedule_text, timezone);
  if (!schedule) {
    plan.kind = DuePlan::Kind::kBad;
    plan.why = schedule.error().message();
    return plan;
  }
  // Due times missed while no beat ran fold into the latest one.
  const auto latest = schedule->LatestIn(next_run_at, now);
  plan.due_at = latest.value_or(next_run_at);
  if (latest) plan.missed_since = next_run_at;
  plan.next = schedule->NextAfter(now);
  if (catch_up_grace.count() > 0 && now - plan.due_at > catch_up_grace)
    plan.kind = DuePlan::Kind::kSkip;
  return plan;
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
  return state::DeleteFiresBefore(pool_, clock_.Now() - options_.fires_retention);
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
    auto rows = state::ListUnscheduled(pool_, after_id, bad_ids, kChunk);
    if (!rows) return rows.error();
    if (rows->empty()) break;
    after_id = rows->back().id;
    std::vector<state::FirstDue> first;
    for (const auto& row : *rows) {
      auto schedule = Schedule::Make(row.schedule, row.timezone);
      std::optional<Clock::WallTime> next;
      std::string why;
      if (!schedule) {
        why = schedule.error().message();
      } else if (next = schedule->NextAfter(std::max(row.updated_at, base_floor)); !next) {
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
      first.push_back({row.id, *next, row.updated_at});
    }
    auto n = state::SetFirstDue(pool_, first);
    if (!n) return n.error();
    total += *n;
    if (static_cast<int64_t>(rows->size()) < kChunk) break;
  }
  if (total > 0) {
    spdlog::info("beat: computed the next due time of {} new or changed crawl task(s)", total);
    std::lock_guard lock(stats_mutex_);
    stats_.scheduled += total;
  }
  return total;
}

Result<std::optional<Clock::WallTime>> Beat::EarliestDue() { return state::EarliestDue(pool_); }

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

state::FiringPlan Beat::PlanFirings(const std::vector<state::DueTask>& due, Clock::WallTime now,
                                     int64_t& skipped,
                                     std::vector<std::pair<int64_t, std::string>>& bad) const {
  state::FiringPlan plan;
  for (const auto& row : due) {
    const DuePlan p =
        PlanDue(row.schedule, row.timezone, row.next_run_at, now, options_.catch_up_grace);
    switch (p.kind) {
      case DuePlan::Kind::kBad:
        // Cleared, so it is not claimed again; fixing the row announces it.
        bad.emplace_back(row.id, p.why);
        plan.advance.push_back({row.id, std::nullopt, false});
        break;
      case DuePlan::Kind::kSkip:
        spdlog::warn("beat: crawl task {} missed its run due at {} (older than the catch-up "
                     "grace of {} s); next at {}",
                     row.id, FormatIso8601(p.due_at), options_.catch_up_grace.count(),
                     p.next ? FormatIso8601(*p.next) : std::string("never"));
        ++skipped;
        plan.advance.push_back({row.id, p.next, false});
        break;
      case DuePlan::Kind::kFire:
        plan.fire.push_back({row.id, p.due_at, p.missed_since, FireTaskId(row.id, p.due_at)});
        plan.advance.push_back({row.id, p.next, true});
        break;
    }
  }
  return plan;
}

Status Beat::Publish(const std::vector<state::Firing>& fired,
                     const std::map<int64_t, std::string>& names, Clock::WallTime now) {
  std::vector<broker::OutgoingMessage> messages;
  messages.reserve(fired.size());
  for (const auto& f : fired) {
    // What a BFF's send_task sends, plus who fired it and for when.
    auto m = celery::NewTask(kExecuteCrawlTask, Json::array({f.crawl_task_id}), Json::object());
    m.id = m.root_id = m.correlation_id = f.celery_task_id;
    m.origin = options_.name;
    m.custom_headers["periodic_task_name"] = names.at(f.crawl_task_id);
    m.custom_headers[kTriggerHeader] = "beat";
    m.custom_headers[kScheduleHeader] = f.crawl_task_id;
    m.custom_headers[kScheduledForHeader] = FormatIso8601(f.due_at);
    messages.push_back(celery::EncodeTask(m, options_.queue, now));
  }
  return PublishAll(messages, "execute_crawl_task");
}

Status Beat::PublishEntries(const std::vector<state::EntryFiring>& fired, Clock::WallTime now) {
  std::vector<broker::OutgoingMessage> messages;
  messages.reserve(fired.size());
  for (const auto& f : fired) {
    // The row's CHECKs make args an array and kwargs an object.
    auto args = Json::parse(f.entry.args, nullptr, false);
    auto kwargs = Json::parse(f.entry.kwargs, nullptr, false);
    if (!args.is_array()) args = Json::array();
    if (!kwargs.is_object()) kwargs = Json::object();
    auto m = celery::NewTask(f.entry.task, std::move(args), std::move(kwargs));
    m.id = m.root_id = m.correlation_id = f.celery_task_id;
    m.origin = options_.name;
    m.custom_headers["periodic_task_name"] = f.entry.name;
    messages.push_back(celery::EncodeTask(m, options_.queue, now));
  }
  return PublishAll(messages, "beat entry");
}

Status Beat::PublishAll(const std::vector<broker::OutgoingMessage>& messages, const char* what) {
  if (auto st = broker_.PublishBatch(messages); !st) {
    // The queue vanished since it was declared: declare it again on the next attempt.
    if (st.error().code() == ErrorCode::kNotFound) declared_ = false;
    return Error(st.error().code(),
                 fmt::format("publishing {} {} message(s) to queue {}: {}", messages.size(), what,
                             options_.queue, st.error().message()),
                 st.error().retryable());
  }
  return Ok();
}

Status Beat::DeclareQueue() {
  if (declared_) return Ok();
  broker::QueueSpec spec;
  spec.name = spec.exchange = spec.routing_key = options_.queue;
  if (auto st = broker_.Declare(spec); !st) return st.error();
  declared_ = true;
  return Ok();
}

Result<int64_t> Beat::ScheduleEntries() {
  const auto base_floor = clock_.Now() - FirstSightLookback();
  std::vector<std::string> bad_names;
  for (const auto& [name, why] : bad_entries_) bad_names.push_back(name);
  auto rows = state::ListUnscheduledEntries(pool_, bad_names);
  if (!rows) return rows.error();
  std::vector<state::EntryFirstDue> first;
  for (const auto& row : *rows) {
    auto schedule = Schedule::Make(row.schedule, row.timezone);
    std::optional<Clock::WallTime> next;
    std::string why;
    if (!schedule) {
      why = schedule.error().message();
    } else if (next = schedule->NextAfter(std::max(row.updated_at, base_floor)); !next) {
      why = fmt::format("schedule \"{}\" has no due time in the next {} years", row.schedule,
                        Schedule::kHorizonYears);
    }
    if (!why.empty()) {
      spdlog::error("beat: entry {} left unscheduled: {} (fix the row; beat notices)", row.name,
                    why);
      bad_entries_[row.name] = why;
      std::lock_guard lock(stats_mutex_);
      ++stats_.bad;
      continue;
    }
    first.push_back({row.name, *next, row.updated_at});
  }
  auto n = state::SetEntriesFirstDue(pool_, first);
  if (!n) return n.error();
  if (*n > 0) {
    std::lock_guard lock(stats_mutex_);
    stats_.entries_scheduled += *n;
  }
  return *n;
}

Result<FireReport> Beat::FireDueEntries() {
  if (auto st = DeclareQueue(); !st) return st.error();
  const auto now = clock_.Now();
  int64_t skipped = 0;
  std::vector<std::pair<std::string, std::string>> bad;
  auto result = state::FireDueEntries(
      pool_, now, options_.name,
      [&](const std::vector<state::DueEntry>& due) {
        skipped = 0;  // the transaction may run again: start over
        bad.clear();
        state::EntryFiringPlan plan;
        for (const auto& row : due) {
          const DuePlan p =
              PlanDue(row.schedule, row.timezone, row.next_run_at, now, options_.catch_up_grace);
          if (p.kind == DuePlan::Kind::kBad) {
            bad.emplace_back(row.name, p.why);
            plan.advance.push_back({row.name, std::nullopt, false});
          } else if (p.kind == DuePlan::Kind::kSkip) {
            spdlog::warn("beat: entry {} missed its run due at {} (older than the catch-up "
                         "grace of {} s); next at {}",
                         row.name, FormatIso8601(p.due_at), options_.catch_up_grace.count(),
                         p.next ? FormatIso8601(*p.next) : std::string("never"));
            ++skipped;
            plan.advance.push_back({row.name, p.next, false});
          } else {
            plan.fire.push_back({row, p.due_at, p.missed_since, EntryTaskId(row.name, p.due_at)});
            plan.advance.push_back({row.name, p.next, true});
          }
        }
        return plan;
      },
      [&](const std::vector<state::EntryFiring>& fired) { return PublishEntries(fired, now); },
      [&] { return clock_.Now(); });
  if (!result) return result.error();
  for (const auto& [name, why] : bad) {
    spdlog::error("beat: entry {} left unscheduled: {} (fix the row; beat notices)", name, why);
    bad_entries_[name] = why;
  }
  for (const auto& f : result->already_fired)
    spdlog::info("beat: entry {} due at {} was already fired; not again", f.entry.name,
                 FormatIso8601(f.due_at));
  for (const auto& f : result->fired)
    spdlog::info("beat: fired entry {} ({}) due at {} to queue {}", f.entry.name, f.entry.task,
                 FormatIso8601(f.due_at), options_.queue);
  FireReport report;
  report.claimed = result->claimed;
  report.fired = static_cast<int64_t>(result->fired.size());
  std::lock_guard lock(stats_mutex_);
  stats_.entries_fired += report.fired;
  stats_.skipped += skipped;
  stats_.already += static_cast<int64_t>(result->already_fired.size());
  stats_.bad += static_cast<int64_t>(bad.size());
  return report;
}

Result<FireReport> Beat::FireBatch(Clock::WallTime now) {
  if (auto st = DeclareQueue(); !st) return st.error();
  int64_t skipped = 0;
  std::vector<std::pair<int64_t, std::string>> bad;
  std::map<int64_t, std::string> names;
  const auto started = std::chrono::steady_clock::now();
  auto result = state::FireDue(
      pool_, now, options_.batch, options_.name,
      [&](const std::vector<state::DueTask>& due) {
        // The transaction may run again: start over.
        skipped = 0;
        bad.clear();
        for (const auto& row : due) names[row.id] = row.name;
        return PlanFirings(due, now, skipped, bad);
      },
      [&](const std::vector<state::Firing>& fired) { return Publish(fired, names, now); },
      [&] { return clock_.Now(); });
  if (!result) return result.error();
  for (const auto& [id, why] : bad) {
    spdlog::error("beat: crawl task {} left unscheduled: {} (fix the row; beat notices)", id, why);
    bad_[id] = why;
  }
  for (const auto& f : result->already_fired)
    spdlog::info("beat: crawl task {} due at {} was already fired; not again", f.crawl_task_id,
                 FormatIso8601(f.due_at));
  FireReport report;
  report.claimed = result->claimed;
  report.fired = static_cast<int64_t>(result->fired.size());
  if (report.fired > 0) {
    std::string sample;
    for (size_t i = 0; i < result->fired.size() && i < 5; ++i)
      sample += fmt::format("{}{}@{}", sample.empty() ? "" : ", ", result->fired[i].crawl_task_id,
                            FormatIso8601(result->fired[i].due_at));
    spdlog::info("beat: fired {} crawl task(s) to queue {}: {}{}", report.fired, options_.queue,
                 sample, report.fired > 5 ? ", ..." : "");
    spdlog::debug("beat: firing took {:.1f} ms",
                  std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                            started).count());
  }
  std::lock_guard lock(stats_mutex_);
  stats_.fired += report.fired;
  stats_.skipped += skipped;
  stats_.already += static_cast<int64_t>(result->already_fired.size());
  stats_.bad += static_cast<int64_t>(bad.size());
  return report;
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
      if (auto n = ScheduleEntries(); !n) return n.error();
      rescan = false;
    }
    auto fired = FireDue();
    if (!fired) return fired.error();
    auto entries = FireDueEntries();
    if (!entries) return entries.error();
    if (clock_.Monotonic() >= next_cleanup) {
      if (auto n = DeleteOldFires(); !n) {
        spdlog::warn("beat: deleting old fire records: {}", n.error().message());
      } else if (*n > 0) {
        spdlog::info("beat: deleted {} fire record(s) older than {} days", *n,
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
      return fired->claimed + entries->claimed > 0 ? milliseconds(0) : options_.busy_retry;
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
        // A bad row that changed gets another look: crawl tasks announce their id, beat
        // entries "entry:<name>".
        if (payload.rfind("entry:", 0) == 0) {
          bad_entries_.erase(payload.substr(6));
          continue;
        }
        try {
          bad_.erase(std::stoll(payload));
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
