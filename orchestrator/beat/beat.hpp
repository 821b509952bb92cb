#pragma once
// Beat: fires each crawl task's schedule (crawl_tasks.schedule in crawl_tasks.timezone) by
// publishing orchestrator.tasks.execute_crawl_task, with any number of beats running at once.
// It fires beat entries too (beat_entries, migrations/0007): Celery tasks on a cron schedule,
// as Celery beat's beat_schedule, with the same guarantee, recorded in beat_entry_fires. The
// built-in one is Celery beat's own default, celery.backend_cleanup daily at 04:00 UTC.
//
// Postgres is the coordinator; beats never talk to each other.
//   - Due times live in crawl_tasks.next_run_at. Beat computes it (schedule.hpp) for rows that
//     have none: new rows, and rows whose schedule, timezone or enabled flag changed (a trigger
//     clears next_run_at then, migrations/0003). It counts from updated_at, the time of the
//     change, but from no earlier than 2 x max_sleep (at least 2 minutes) before the beat that
//     first reads it, so a row written while no beat ran does not catch up on older times.
//     The write is conditional on the row being unchanged and still without a next_run_at, so
//     when several beats compute it the first one's value stands.
//   - Changes made with plain SQL reach every beat through LISTEN celeriac_beat (a trigger
//     NOTIFYs on insert, delete, and changes of schedule, timezone, enabled or next_run_at).
//     Nothing polls the rows: between firings a beat sleeps until the earliest next_run_at (one
//     indexed min()) or a notification, and wakes at least every `max_sleep` as a safety net.
//   - Firing, in one transaction: claim due rows (next_run_at <= now) FOR UPDATE SKIP LOCKED,
//     insert one beat_fires row per (task, due time) (primary key), advance next_run_at and
//     last_run_at, publish the messages and wait for the broker's confirms, then commit.
//
// Guarantee. Each due time of each task is fired by exactly one committed transaction: two
// beats never hold the same row, and beat_fires' primary key refuses a second firing of a due
// time even if next_run_at is set back by hand. Its message is published at least once, and
// more than once only if a beat dies (or loses Postgres) after the broker confirmed and before
// the commit: the due row is then still due, another beat claims it, and publishes a message
// with the same Celery task id, a name-based UUID of (task, due time). The worker records runs
// by Celery task id (crawl_runs.celery_task_id is unique), so such a duplicate delivery finds
// the run it already has: one crawl run per due time. (The same holds when Postgres fails the
// transaction after the publish and the pool runs it again.) Nothing counts as fired before its
// commit, so a kill at any moment loses no due time while another beat runs: it is fired, late
// by at most the time the others take to notice (the row lock goes when the dead beat's
// connection closes; a beat that saw due rows locked by another looks again every
// `busy_retry`).
//
// Missed due times. When due times passed while no beat ran (or the broker was down), the
// latest one fires once and the earlier ones are folded into it (beat_fires.missed_since), as
// Celery beat does; if that latest one is older than `catch_up_grace` (0 = no limit, Celery's
// default), nothing fires and next_run_at moves past now (beat_cron_starting_deadline).
//
// Bad rows. A schedule or zone this process cannot use (refused by triggers for rows written
// since migration 0003, but a row may predate it, or a zone may be missing from this host's
// tz database) is logged once and left alone until the row changes; beat never crashes on one.
//
// Threading: Run() on one thread; Stop() from any thread (signal handlers post it). Shutdown:
// Stop() wakes the wait; Run() finishes the firing in progress (its transaction commits or rolls
// back as a whole) and returns.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "core/base/clock.hpp"
#include "core/base/result.hpp"
#include "core/broker/broker.hpp"
#include "core/pg/listener.hpp"
#include "core/pg/pool.hpp"
#include "state/schedules.hpp"

namespace celeriac::orchestrator::beat {

inline constexpr const char* kChannel = "celeriac_beat";
// Beat's messages are execute_crawl_task as a BFF sends it, plus headers x_celeriac_trigger=beat,
// x_celeriac_schedule=<crawl task id>, x_celeriac_scheduled_for=<due time, ISO-8601> (the worker
// records them as crawl_runs.trigger and scheduled_for; orchestrator/tasks/crawl_tasks.hpp) and
// periodic_task_name=<crawl task name>, as django-celery-beat sends.

// The Celery task id of the message for (crawl task, due time): the same in every beat.
std::string FireTaskId(int64_t crawl_task_id, Clock::WallTime due_at);
// The same for (beat entry, due time). A beat entry's message is its task with its args and
// kwargs, plus header periodic_task_name=<entry name>, as django-celery-beat sends.
std::string EntryTaskId(const std::string& entry, Clock::WallTime due_at);

// What becomes of one claimed due row at `now` (pure; the same for crawl tasks and entries).
struct DuePlan {
  enum class Kind { kFire, kSkip, kBad };
  Kind kind = Kind::kFire;
  Clock::WallTime due_at{};                     // the due time that fires (or was skipped): the
                                                // latest one missed
  std::optional<Clock::WallTime> missed_since;  // earlier due times folded into it
  std::optional<Clock::WallTime> next;          // where the row goes next (kBad: unscheduled)
  std::string why;                              // kBad: what is wrong with schedule or zone
};
// A row due at `next_run_at`: due times missed up to `now` fold into the latest one, which
// fires unless older than `catch_up_grace` (0 = no limit: kSkip then); a schedule or zone this
// process cannot use is kBad.
DuePlan PlanDue(const std::string& schedule, const std::string& timezone,
                Clock::WallTime next_run_at, Clock::WallTime now,
                std::chrono::seconds catch_up_grace);

struct BeatOptions {
  std::string queue = "celery";                 // the orchestrator worker's queue
  std::chrono::seconds catch_up_grace{0};       // 0 = always run one catch-up
  int64_t batch = 1000;                         // due rows claimed per transaction
  std::chrono::milliseconds max_sleep{60'000};  // longest wait without a notification
  std::chrono::milliseconds busy_retry{200};    // due rows locked by another beat: look again
  std::string name;                             // "host:pid", recorded in beat_fires.beat
  // beat_fires rows are deleted (hourly, 10,000 at a time) once their due time is this old.
  std::chrono::hours fires_retention{24 * 30};
  // Real time to wait for a span of the clock's time (identity; a test's ScaledClock divides).
  std::function<std::chrono::milliseconds(Clock::WallTime::duration)> real_delay;
};

struct BeatStats {
  int64_t fired = 0;        // messages published and committed
  int64_t skipped = 0;      // catch-ups older than the grace period
  int64_t already = 0;      // due times found already fired (next_run_at set back by hand)
  int64_t scheduled = 0;    // next_run_at computed for new or changed rows
  int64_t bad = 0;          // rows left alone for a schedule or zone this beat cannot use
  int64_t wakeups = 0;
  int64_t notifications = 0;
  int64_t entries_fired = 0;      // beat entries' messages published and committed
  int64_t entries_scheduled = 0;  // their next_run_at computed
};

struct FireReport {
  int64_t claimed = 0;   // due rows this beat locked
  int64_t fired = 0;
};

class Beat {
 public:
  Beat(pg::Pool& pool, broker::Broker& broker, const Clock& clock, BeatOptions options);

  // Computes next_run_at for every enabled scheduled row that has none. Returns rows updated.
  Result<int64_t> ScheduleUnscheduled();
  // Fires every row due at the clock's now, in transactions of `batch` rows.
  Result<FireReport> FireDue();
  // The earliest next_run_at of an enabled scheduled row (nullopt: none).
  Result<std::optional<Clock::WallTime>> EarliestDue();

  // The same for beat entries: next_run_at of enabled entries without one; fire those due.
  Result<int64_t> ScheduleEntries();
  Result<FireReport> FireDueEntries();

  // Deletes beat_fires and beat_entry_fires rows older than fires_retention (up to 10,000 each
  // a call).
  Result<int64_t> DeleteOldFires();

  // LISTEN, then schedule, fire and sleep until Stop(). Outages of Postgres or the broker are
  // logged and retried with backoff, never fatal; returns OK once stopped.
  Status Run();
  void Stop();

  BeatStats stats() const;

 private:
  Result<FireReport> FireBatch(Clock::WallTime now);
  // What to fire of the claimed rows, and where each goes next (pure: no I/O).
  state::FiringPlan PlanFirings(const std::vector<state::DueTask>& due, Clock::WallTime now,
                                int64_t& skipped,
                                std::vector<std::pair<int64_t, std::string>>& bad) const;
  // Publishes the firings' messages and waits for the broker's confirms.
  Status Publish(const std::vector<state::Firing>& fired,
                 const std::map<int64_t, std::string>& names, Clock::WallTime now);
  Status PublishEntries(const std::vector<state::EntryFiring>& fired, Clock::WallTime now);
  Status PublishAll(const std::vector<broker::OutgoingMessage>& messages, const char* what);
  Status DeclareQueue();
  std::chrono::milliseconds RealDelay(Clock::WallTime::duration d) const;
  Clock::WallTime::duration FirstSightLookback() const;

  pg::Pool& pool_;
  broker::Broker& broker_;
  const Clock& clock_;
  BeatOptions options_;
  pg::Listener listener_;
  std::atomic<bool> stop_{false};
  bool declared_ = false;
  // Rows with a schedule or zone this process cannot use, by id, with what was bad (logged once).
  std::map<int64_t, std::string> bad_;
  std::map<std::string, std::string> bad_entries_;  // the same for beat entries, by name
  mutable std::mutex stats_mutex_;
  BeatStats stats_;
};

// A clock that runs `scale` times faster than the system clock from `origin` on, the same in
// every process given the same origin and scale: tests run beats through many cron minutes.
class ScaledClock final : public Clock {
 public:
  ScaledClock(WallTime origin, double scale) : origin_(origin), scale_(scale) {}
  WallTime Now() const override;
  MonoTime Monotonic() const override { return std::chrono::steady_clock::now(); }
  std::chrono::milliseconds RealDelay(WallTime::duration d) const;

 private:
  WallTime origin_;
  double scale_;
};

}  // namespace celeriac::orchestrator::beat
