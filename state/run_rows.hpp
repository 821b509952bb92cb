#pragma once
// Creating run and job rows inside a caller's transaction: the one place crawl_runs and
// extraction_jobs rows are inserted (for state/'s .cpp files only).

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/pg/sql.hpp"

namespace celeriac::state {

struct NewRun {
  std::optional<int64_t> crawl_task_id;  // none for a run a bare extract message starts
  std::string celery_task_id;            // one run per Celery task id
  std::string trigger = "bff";           // beat | run-now | bff
  std::string status = "pending";
  std::optional<std::string> scheduled_for;  // ISO-8601, beat's due time
  int64_t configs_dispatched = 0;
  bool started = false;                  // started_at = now()
  std::optional<std::string> status_reason;
};

// Inserts the run unless its Celery task id has one; its id either way.
int64_t EnsureRun(pqxx::transaction_base& tx, const NewRun& run);

struct NewJob {
  int64_t run_id = 0;
  int64_t crawl_config_id = 0;
  int64_t config_version = 0;
  int64_t data_source_id = 0;
  std::string celery_task_id;            // its extract message's id
  bool published = false;                // the message is already out (published_at = now())
  bool running = false;                  // starts running now (a replay's job)
  std::optional<int64_t> watchdog_ms;    // the table's default when absent
};

// Inserts the job unless its run has one for that config; its id (nullopt if it vanished).
std::optional<int64_t> EnsureJob(pqxx::transaction_base& tx, const NewJob& job);
// The same for several pending, unpublished jobs at once.
void EnsureJobs(pqxx::transaction_base& tx, const std::vector<NewJob>& jobs);

}  // namespace celeriac::state
