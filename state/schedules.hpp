#pragma once
// Schedules: what beat reads and writes (crawl_tasks.next_run_at and last_run_at, beat_fires;
// migrations 0001 and 0003; beat_entries and beat_entry_fires, migration 0007). Beat decides
// (cron, zones, catch-up, messages); this file holds the SQL and the transaction that makes each
// due time fire exactly once (orchestrator/beat/beat.hpp states the guarantee).
//
// Every write here is marked as beat's own (SET LOCAL celeriac.beat), so the trigger that
// announces changes to every beat (LISTEN celeriac_beat) does not announce them.
//
// Threading: thread-safe (the Pool is).

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/base/clock.hpp"
#include "core/base/result.hpp"
#include "core/pg/pool.hpp"

namespace celeriac::state {

// An enabled scheduled crawl task without a next due time (new, or its schedule changed).
struct UnscheduledTask {
  int64_t id = 0;
  std::string schedule;
  std::string timezone;
  Clock::WallTime updated_at{};
};

// Up to `limit` of them with id > after_id, by id, leaving out `excluded` (rows known bad).
Result<std::vector<UnscheduledTask>> ListUnscheduled(pg::Pool& pool, int64_t after_id,
                                                     const std::vector<int64_t>& excluded,
                                                     int64_t limit);

struct FirstDue {
  int64_t id = 0;
  Clock::WallTime next_run_at{};
  Clock::WallTime updated_at{};  // as read: a row changed since is left for the next read
};
// Sets next_run_at where it is still unset and the row unchanged; returns rows updated.
Result<int64_t> SetFirstDue(pg::Pool& pool, const std::vector<FirstDue>& rows);

// The earliest next_run_at of an enabled scheduled crawl task or beat entry (nullopt: none).
Result<std::optional<Clock::WallTime>> EarliestDue(pg::Pool& pool);

// Deletes up to 10,000 beat_fires rows (and up to as many beat_entry_fires rows) due before
// `before`; returns how many.
Result<int64_t> DeleteFiresBefore(pg::Pool& pool, Clock::WallTime before);

// ---- firing ----------------------------------------------------------------------------------

struct DueTask {
  int64_t id = 0;
  std::string name;
  std::string schedule;
  std::string timezone;
  Clock::WallTime next_run_at{};
};

struct Firing {
  int64_t crawl_task_id = 0;
  Clock::WallTime due_at{};
  std::optional<Clock::WallTime> missed_since;  // earlier due times folded into this one
  std::string celery_task_id;                   // the same in every beat for (task, due time)
};

struct Advance {
  int64_t crawl_task_id = 0;
  std::optional<Clock::WallTime> next_run_at;  // nullopt: left unscheduled (a bad row)
  bool fired = false;                          // last_run_at becomes `now`
};

struct FiringPlan {
  std::vector<Firing> fire;
  std::vector<Advance> advance;  // every claimed row
};

struct FiringResult {
  int64_t claimed = 0;                 // due rows locked
  std::vector<Firing> fired;           // published and recorded
  std::vector<Firing> already_fired;   // found in beat_fires already (not published again)
};

// One firing transaction: claims up to `batch` due rows (next_run_at <= now) FOR UPDATE SKIP
// LOCKED; `plan` says what to fire and where each row goes next; firings whose due time is in
// beat_fires already are dropped; `publish` sends the rest (it returns once the broker
// confirmed them); they are recorded in beat_fires (published at `confirmed()`), the rows
// advanced, and the transaction commits. An error from `publish` rolls everything back. The
// transaction may run again after a retryable database error (publishing again: the same task
// ids).
Result<FiringResult> FireDue(
    pg::Pool& pool, Clock::WallTime now, int64_t batch, const std::string& beat_name,
    const std::function<FiringPlan(const std::vector<DueTask>&)>& plan,
    const std::function<Status(const std::vector<Firing>&)>& publish,
    const std::function<Clock::WallTime()>& confirmed);

// ---- beat entries ----------------------------------------------------------------------------
// Celery tasks beat fires on a schedule besides crawl tasks (beat_entries, migrations/0007: the
// built-in celery.backend_cleanup, and any an admin adds). Few rows: no batching. The same
// transaction shapes as above, keyed by entry name, recorded in beat_entry_fires.

struct UnscheduledEntry {
  std::string name;
  std::string schedule;
  std::string timezone;
  Clock::WallTime updated_at{};
};

// Enabled entries without a next due time, by name, leaving out `excluded` (rows known bad).
Result<std::vector<UnscheduledEntry>> ListUnscheduledEntries(
    pg::Pool& pool, const std::vector<std::string>& excluded);

struct EntryFirstDue {
  std::string name;
  Clock::WallTime next_run_at{};
  Clock::WallTime updated_at{};  // as read: a row changed since is left for the next read
};
// Sets next_run_at where it is still unset and the row unchanged; returns rows updated.
Result<int64_t> SetEntriesFirstDue(pg::Pool& pool, const std::vector<EntryFirstDue>& rows);

struct DueEntry {
  std::string name;
  std::string task;
  std::string args;    // JSON array text
  std::string kwargs;  // JSON object text
  std::string schedule;
  std::string timezone;
  Clock::WallTime next_run_at{};
};

struct EntryFiring {
  DueEntry entry;
  Clock::WallTime due_at{};
  std::optional<Clock::WallTime> missed_since;
  std::string celery_task_id;  // the same in every beat for (entry, due time)
};

struct EntryAdvance {
  std::string name;
  std::optional<Clock::WallTime> next_run_at;  // nullopt: left unscheduled (a bad row)
  bool fired = false;                          // last_run_at becomes `now`
};

struct EntryFiringPlan {
  std::vector<EntryFiring> fire;
  std::vector<EntryAdvance> advance;  // every claimed row
};

struct EntryFiringResult {
  int64_t claimed = 0;
  std::vector<EntryFiring> fired;
  std::vector<EntryFiring> already_fired;  // in beat_entry_fires already (not published again)
};

// FireDue for beat entries: claims the due entries (up to 100) FOR UPDATE SKIP LOCKED, drops
// firings already in beat_entry_fires, publishes the rest (`publish` returns once the broker
// confirmed), records them, advances the rows and commits; an error from `publish` rolls back.
Result<EntryFiringResult> FireDueEntries(
    pg::Pool& pool, Clock::WallTime now, const std::string& beat_name,
    const std::function<EntryFiringPlan(const std::vector<DueEntry>&)>& plan,
    const std::function<Status(const std::vector<EntryFiring>&)>& publish,
    const std::function<Clock::WallTime()>& confirmed);

}  // namespace celeriac::state
