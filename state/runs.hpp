#pragma once
// Crawl runs and their extraction jobs (crawl_runs, extraction_jobs; their hosts' politeness
// state in crawl_hosts): created once per Celery task id, listed and shown with their progress.
//
//   CreatePendingRun / DropPendingRun   run-now: the run row exists before its message goes out
//   PlanRun / MarkJobsPublished         execute_crawl_task: the run and one job per data source's
//                                       latest active config, decided once per Celery task id
//   ListRuns / ShowRun                  runs newest first; one run with its jobs, hosts, requests
//
// Every run and job row is created here (state/run_rows.hpp, for the crawl store's own
// transactions too). Threading: thread-safe (the Pool is).

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/clock.hpp"
#include "core/base/result.hpp"
#include "core/pg/pool.hpp"

namespace celeriac::state {

using Json = nlohmann::ordered_json;

// ---- run-now ---------------------------------------------------------------------------------

// A pending run of `crawl_task_id` for the Celery task `celery_task_id`, before its message is
// published (the worker finds it by task id). NotFound for an unknown crawl task,
// InvalidArgument for a disabled one (non-retryable).
Result<int64_t> CreatePendingRun(pg::Pool& pool, int64_t crawl_task_id,
                                 const std::string& celery_task_id);
// Takes a run back when its message could not be published (unless a worker started it).
Status DropPendingRun(pg::Pool& pool, int64_t run_id);

// ---- execute_crawl_task ----------------------------------------------------------------------

struct Dispatch {
  int64_t data_source_id = 0;
  int64_t crawl_config_id = 0;
  int64_t config_version = 0;
  int64_t job_id = 0;
  std::string extract_task_id;
  bool published = false;
};

struct RunPlan {
  int64_t run_id = 0;
  std::string trigger;
  std::vector<Dispatch> dispatched;
  Json skipped = Json::array();  // {"data_source_id", "reason"} for sources without a job
};

// The run of Celery task `celery_task_id` and its jobs: on the first call, one job per data
// source of the crawl task with an active config (its latest version); on a redelivery, what
// the first call decided. NotFound / InvalidArgument as CreatePendingRun.
Result<RunPlan> PlanRun(pg::Pool& pool, int64_t crawl_task_id, const std::string& celery_task_id,
                        const std::string& trigger,
                        const std::optional<std::string>& scheduled_for);
// Records that the extract messages of these jobs were confirmed by the broker.
Status MarkJobsPublished(pg::Pool& pool, const std::vector<int64_t>& job_ids);

// ---- runs ------------------------------------------------------------------------------------

struct JobRow {
  int64_t id = 0;
  int64_t crawl_config_id = 0;
  int64_t config_version = 0;
  int64_t data_source_id = 0;
  std::string celery_task_id;
  std::string status;
  std::optional<std::string> status_reason;
  int64_t pages = 0, items_new = 0, items_updated = 0, items_unchanged = 0, errors = 0, bytes = 0;
  int64_t item_errors = 0;
  int64_t requests_open = 0, requests_total = 0, requests_failed = 0;
  Json error_counts = Json::object();  // error class -> count
  bool published = false;
  Clock::WallTime created_at{};
  std::optional<Clock::WallTime> started_at;
  std::optional<Clock::WallTime> finished_at;
};

// One crawl_hosts row: a host's robots.txt and politeness state within a run. The robots.txt
// text itself is left out (its length in bytes is shown).
struct HostRow {
  std::string host;  // scheme://host[:port]
  std::optional<int64_t> robots_status;  // 0 = unreachable; nullopt = not asked
  std::optional<int64_t> robots_txt_bytes;
  std::optional<Clock::WallTime> robots_fetched_at;
  std::optional<int64_t> crawl_delay_ms;
  std::string state;  // ok | slowed | backing_off
  int64_t delay_ms = 0;
  Clock::WallTime next_slot_at{};
  std::optional<Clock::WallTime> backoff_until;
  int64_t requests = 0, errors = 0, rate_limited = 0;
  Clock::WallTime updated_at{};

  Json ToJson() const;
};

// The states of crawl_requests, in their CHECK constraint's order.
inline constexpr const char* kRequestStates[] = {"pending", "leased", "done", "failed",
                                                 "skipped"};

struct RunRow {
  int64_t id = 0;
  std::optional<int64_t> crawl_task_id;  // nullopt for a run a bare extract message started
  std::string celery_task_id;
  std::string trigger;
  std::string status;  // pending | running | succeeded | failed | aborted
  std::optional<std::string> status_reason;
  int64_t configs_dispatched = 0;
  Json sources_skipped = Json::array();
  int64_t pages = 0, items_new = 0, items_updated = 0, items_unchanged = 0, errors = 0, bytes = 0;
  Json error_counts = Json::object();  // error class (Download, HttpStatus, ...) -> count
  Clock::WallTime created_at{};
  std::optional<Clock::WallTime> started_at;
  std::optional<Clock::WallTime> finished_at;
  // Filled by ShowRun only; ToJson() includes each that was loaded, even when empty.
  std::vector<JobRow> jobs;
  bool with_jobs = false;
  std::vector<HostRow> hosts;        // the most active first, at most ShowRunOptions::max_hosts
  int64_t hosts_total = 0;           // all hosts of the run
  bool with_hosts = false;
  std::map<std::string, int64_t> requests_by_state;  // every kRequestStates, 0 when none
  bool with_request_states = false;

  // ISO-8601 times (null when unset); "jobs", "hosts" (+ "hosts_total") and "requests" (counts
  // by state, in kRequestStates order) when loaded.
  Json ToJson() const;
};

struct RunFilter {
  std::optional<int64_t> crawl_task_id;
  std::optional<std::string> status;
  std::optional<std::string> trigger;
  int64_t limit = 50;           // newest first
  std::optional<int64_t> before_id;  // paging: runs with id < before_id
};

Result<std::vector<RunRow>> ListRuns(pg::Pool& pool, const RunFilter& filter);

struct ShowRunOptions {
  bool hosts = true;           // crawl_hosts rows
  int64_t max_hosts = 1000;    // the most active first (by requests); 0 = all
  bool request_states = true;  // counts crawl_requests of the run's jobs by state (a scan of
                               // the run's requests: leave it out when polling)
};

// nullopt = no such run.
Result<std::optional<RunRow>> ShowRun(pg::Pool& pool, int64_t run_id,
                                      const ShowRunOptions& options = {});


}  // namespace celeriac::state
