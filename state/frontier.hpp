#pragma once
// Frontier: a crawl's jobs and their requests, as the extractor's engine uses them. CrawlStore
// (state/crawl_store.hpp) keeps them in Postgres; tests/support/fake_frontier.hpp keeps them in
// memory, for the engine's unit tests.
//
// Guarantees (what the engine relies on; CrawlStore's header says how Postgres gives them):
// - A job's work is durable once StartJob has returned: its start requests are in the frontier.
//   Every later request is inserted by the Commit that records the page it was found on.
// - A request is leased to one owner at a time. A lease that is not renewed expires and the
//   request goes back to pending.
// - Commit records a batch of results at once: items, new requests (one per fingerprint per
//   job) and counters. A result whose lease the owner no longer holds is dropped whole.
// - A job ends exactly when its last open request is closed; the report of the commit that
//   closed it says so.
//
// Threading: called from one thread (the engine's store thread).

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/result.hpp"
#include "state/crawl_types.hpp"

namespace celeriac::state {

// What an extract message asks for (schemas/tasks/extract.body.json).
struct ExtractRequest {
  int64_t crawl_config_id = 0;
  std::optional<int64_t> run_id;
  std::optional<int64_t> crawl_task_id;
  std::optional<int64_t> data_source_id;
  std::optional<int64_t> job_id;
  std::string celery_task_id;  // the extract message's id
  std::string reply_to;        // rpc:// result queue, may be empty
};

struct JobInfo {
  int64_t job_id = 0;
  int64_t run_id = 0;
  int64_t crawl_config_id = 0;
  int64_t data_source_id = 0;
  std::string status;          // pending | running | succeeded | failed | aborted
  std::string celery_task_id;
  nlohmann::json config;       // crawl_configs.config
};

struct LeasedRequest {
  int64_t id = 0;
  int64_t job_id = 0;
  int attempts = 0;            // including this one
  RequestSpec spec;
};

// The outcome of one leased request.
struct RequestResult {
  enum class State { kDone, kRetry, kFailed, kSkipped };
  int64_t request_id = 0;
  int64_t job_id = 0;
  State state = State::kDone;
  int status_code = 0;
  uint64_t bytes = 0;
  bool parsed = false;                   // the page went through Parse (counts as a page)
  std::string url;                       // final URL, for items
  std::vector<Item> items;
  std::vector<RequestSpec> requests;
  size_t item_errors = 0;
  std::string error_class;               // Download | HttpStatus | Auth | RateLimit | Parse | Store
  std::string error_message;
  std::chrono::milliseconds retry_delay{0};
  // A follow-on (request_id 0): the result of fetching `speculated` before it was in the
  // frontier. Commit records it when the batch itself inserts that request and leases it to
  // this owner, and drops it otherwise.
  std::optional<RequestSpec> speculated;
};

// Per-job limits the store enforces when it records results.
struct JobLimits {
  std::optional<int64_t> max_pages;
  std::optional<int> max_depth;
  std::optional<int64_t> max_requests;
  int64_t abort_after_errors = 10;
  std::optional<double> abort_error_rate;  // failed / finished, once 20 requests finished
};

// A job that ended in a Commit (or in StartJob/FailJob), with what extract returns.
struct FinishedJob {
  int64_t job_id = 0;
  int64_t run_id = 0;
  int64_t crawl_config_id = 0;
  std::string status;
  std::string reason;
  std::string celery_task_id;
  std::string reply_to;
  nlohmann::json result;       // schemas/tasks/extract.result.json
  bool run_finished = false;
  std::string run_status;
};

struct CommitReport {
  size_t recorded = 0;         // results whose lease we still held
  size_t dropped = 0;          // results for leases lost to expiry
  std::vector<FinishedJob> finished;
  std::vector<LeasedRequest> leased;  // discovered by this batch and leased to us
  size_t left_pending = 0;            // discovered by this batch, not leased (over lease_new)
  std::vector<size_t> follow_ons_recorded;  // indexes of the follow-ons recorded, in results
};

class Frontier {
 public:
  virtual ~Frontier() = default;

  // ---- jobs
  // Finds or creates the job an extract message names (and its run, for a bare message).
  virtual Result<JobInfo> ClaimJob(const ExtractRequest& request) = 0;
  // Loads a job and its config.
  virtual Result<JobInfo> LoadJob(int64_t job_id) = 0;
  // Puts the start requests in the frontier and marks the job running; a no-op unless pending.
  // A job with no start requests ends at once.
  virtual Result<std::optional<FinishedJob>> StartJob(
      int64_t job_id, const std::vector<RequestSpec>& start, const std::string& reply_to,
      std::chrono::milliseconds watchdog = std::chrono::milliseconds(300'000)) = 0;
  // Ends a pending or running job as failed (e.g. its config does not compile).
  virtual Result<std::optional<FinishedJob>> FailJob(int64_t job_id,
                                                     const std::string& error_class,
                                                     const std::string& reason,
                                                     const std::string& reply_to) = 0;
  // The watchdog: running jobs with open requests whose last recorded result is older than
  // their watchdog_ms are aborted.
  virtual Result<std::vector<FinishedJob>> AbortStalled() = 0;
  // Replays a request that failed for good (a dead letter's extractor.tasks.refetch): back to
  // pending with fresh attempts when its job still runs, else into a new run and job of the
  // same config (once per `celery_task_id`). Returns the job that will fetch it.
  virtual Result<int64_t> Refetch(int64_t request_id, const std::string& celery_task_id) = 0;

  // ---- leases
  // Leases up to `max` pending requests of running jobs (only of `job_id` when given).
  virtual Result<std::vector<LeasedRequest>> Lease(
      size_t max, std::chrono::milliseconds lease,
      std::optional<int64_t> job_id = std::nullopt) = 0;
  // Extends the leases this owner holds that have not expired; returns how many. (An expired
  // lease is not revived: its request may be another extractor's already, or its result was
  // dropped here and it must be redone.)
  virtual Result<int64_t> RenewLeases(std::chrono::milliseconds lease) = 0;
  // Ends leases of this owner now, so that ReclaimExpired puts their requests back to pending
  // with their attempts counted (results this extractor could not record).
  virtual Status ExpireLeases(const std::vector<int64_t>& request_ids) = 0;
  // Puts requests this owner leased but never started back to pending (shutdown).
  virtual Status ReleaseLeases(const std::vector<int64_t>& request_ids) = 0;
  // Expired leases of any owner go back to pending. A request whose leases expired after
  // `max_attempts` attempts is taken over by this owner instead and returned: the caller
  // records it as failed (a page that kills extractors does not loop forever).
  virtual Result<std::vector<LeasedRequest>> ReclaimExpired(int max_attempts,
                                                            std::chrono::milliseconds lease) = 0;

  // ---- results
  // Records `results` at once. The requests the batch discovers are inserted already leased to
  // this owner, up to `lease_new` of them, pagination first (returned in the report; the rest
  // go in pending). Follow-ons in `results` (RequestResult::speculated) are recorded when the
  // same commit inserted their requests and leased them to us, so a pagination chain fetched
  // ahead is recorded several pages per commit; the others are dropped (their indexes are not
  // in follow_ons_recorded).
  virtual Result<CommitReport> Commit(
      const std::vector<RequestResult>& results, const std::map<int64_t, JobLimits>& limits,
      size_t lease_new = 0,
      std::chrono::milliseconds lease = std::chrono::milliseconds(60'000)) = 0;
};

}  // namespace celeriac::state
