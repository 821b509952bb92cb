#pragma once
// CrawlStore: the extractor's durable state in Postgres: jobs, their frontier of requests
// (crawl_requests, migrations/0004), extracted items and run counters.
//
// Guarantees:
// - A job's work is durable once StartJob has committed: its start requests are in the frontier,
//   so the extract message can be acked. Every later request is inserted in the same transaction
//   that records the page it was found on.
// - A request is leased to one extractor at a time (SKIP LOCKED). A lease that is not renewed
//   expires and the request goes back to pending, so a killed extractor loses nothing.
// - Commit() records a batch of finished requests in one transaction: items upserted by
//   (crawl_config_id, item_key) with a content hash (unchanged data is not rewritten), new
//   requests deduplicated by fingerprint within the job, counters of the job and run updated.
//   Results for a request whose lease this extractor no longer holds are dropped whole, so a
//   page processed twice is counted once.
// - A job ends exactly when its count of open (pending + leased) requests reaches zero, inside
//   the transaction that closes its last request; the run ends when its last job ends. Job rows
//   are locked before the run row in every transaction, so concurrent extractors never deadlock
//   on them.
//
// Threading: one CrawlStore per process, called from one thread (the engine's store thread);
// the Pool underneath is thread-safe.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/result.hpp"
#include "core/broker/message.hpp"
#include "core/celery/dead_letter.hpp"
#include "core/pg/pool.hpp"
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

// A run's robots.txt for one origin, as the first extractor to fetch it stored it.
struct StoredRobots {
  int status = 0;        // HTTP status; 0 = unreachable
  std::string body;
};

// The shared politeness state of one host of a run after a slot reservation.
struct HostSlot {
  std::chrono::milliseconds wait{0};   // until the reserved start
  std::chrono::milliseconds delay{0};  // the host's current gap between starts
  std::string state;                   // ok | slowed | backing_off
};

class CrawlStore {
 public:
  // `queue`: where dead letters of failed requests are replayed to (the extractor's queue).
  CrawlStore(pg::Pool& pool, std::string owner, std::string queue = "extraction_queue")
      : pool_(pool), owner_(std::move(owner)), queue_(std::move(queue)) {}

  // Finds or creates the job an extract message names (and its run, for a bare message).
  Result<JobInfo> ClaimJob(const ExtractRequest& request);
  // Loads a job and its config.
  Result<JobInfo> LoadJob(int64_t job_id);
  // Puts the start requests in the frontier and marks the job running; a no-op unless pending.
  // A job with no start requests ends at once.
  Result<std::optional<FinishedJob>> StartJob(int64_t job_id, const std::vector<RequestSpec>& start,
                                              const std::string& reply_to,
                                              std::chrono::milliseconds watchdog =
                                                  std::chrono::milliseconds(300'000));
  // Ends a pending or running job as failed (e.g. its config does not compile).
  Result<std::optional<FinishedJob>> FailJob(int64_t job_id, const std::string& error_class,
                                             const std::string& reason,
                                             const std::string& reply_to);

  // Leases up to `max` pending requests of running jobs (only of `job_id` when given).
  Result<std::vector<LeasedRequest>> Lease(size_t max, std::chrono::milliseconds lease,
                                           std::optional<int64_t> job_id = std::nullopt);
  // Extends the leases this owner holds that have not expired; returns how many. (An expired
  // lease is not revived: its request may be another extractor's already, or its result was
  // dropped here and it must be redone.)
  Result<int64_t> RenewLeases(std::chrono::milliseconds lease);
  // Ends leases of this owner now, so that ReclaimExpired puts their requests back to pending
  // with their attempts counted (results this extractor could not record).
  Status ExpireLeases(const std::vector<int64_t>& request_ids);
  // Puts requests this owner leased but never started back to pending (shutdown).
  Status ReleaseLeases(const std::vector<int64_t>& request_ids);
  // Expired leases of any owner go back to pending. A request whose leases expired after
  // `max_attempts` attempts is taken over by this owner instead and returned: the caller
  // records it as failed (a page that kills extractors does not loop forever).
  Result<std::vector<LeasedRequest>> ReclaimExpired(int max_attempts,
                                                    std::chrono::milliseconds lease);

  // The requests the batch discovers are inserted already leased to this owner, up to
  // `lease_new` of them, pagination first (returned in the report; the rest go in pending).
  // Follow-ons in `results` (RequestResult::speculated) are recorded in further rounds of the
  // same transaction when it inserted their requests and leased them to us, so a pagination
  // chain fetched ahead is recorded several pages per commit; the others are dropped (their
  // indexes are not in follow_ons_recorded).
  Result<CommitReport> Commit(const std::vector<RequestResult>& results,
                              const std::map<int64_t, JobLimits>& limits, size_t lease_new = 0,
                              std::chrono::milliseconds lease = std::chrono::milliseconds(60'000));

  // The watchdog: running jobs with open requests whose last recorded result is older than
  // their watchdog_ms are aborted.
  Result<std::vector<FinishedJob>> AbortStalled();

  // Replays a request that failed for good (a dead letter's extractor.tasks.refetch): back to
  // pending with fresh attempts when its job still runs, else into a new run and job of the
  // same config (once per `celery_task_id`). Returns the job that will fetch it.
  Result<int64_t> Refetch(int64_t request_id, const std::string& celery_task_id);

  // Jobs that ended but whose result was never published (the publisher died).
  Result<std::vector<FinishedJob>> UnpublishedResults(size_t max);
  Status MarkResultPublished(int64_t job_id);

  Status WriteDeadLetter(const celery::DeadLetter& letter);

  // ---- hosts (crawl_hosts): robots.txt once per run and origin, politeness shared by every
  //      extractor of the run
  Result<std::optional<StoredRobots>> GetRobots(int64_t run_id, const std::string& origin);
  // True when this extractor should fetch the run's robots.txt of `origin`: nobody stored it
  // and nobody claimed it in the last `claim_for` (a claimer that died is replaced).
  Result<bool> ClaimRobots(int64_t run_id, const std::string& origin,
                           std::chrono::milliseconds claim_for);
  // Stores robots.txt unless another extractor stored it first; returns what is stored.
  Result<StoredRobots> PutRobots(int64_t run_id, const std::string& origin,
                                 const StoredRobots& robots,
                                 std::optional<std::chrono::milliseconds> crawl_delay);
  // Reserves the next request start on the host: after the previous reservation plus the
  // host's delay (at least `min_delay`), and after any backoff. Once the backoff is over the
  // delay eases back towards `min_delay` (x0.8 per request).
  Result<HostSlot> ReserveSlot(int64_t run_id, const std::string& origin,
                               std::chrono::milliseconds min_delay);
  // A 429/503: the host's delay doubles (at least 1 s, at most `max_delay`) and nobody starts a
  // request on it before `backoff`.
  Status SlowDown(int64_t run_id, const std::string& origin, std::chrono::milliseconds backoff,
                  std::chrono::milliseconds max_delay);
  // Adds requests and errors to hosts' counters (batched by the engine).
  Status AddHostCounts(const std::vector<std::tuple<int64_t, std::string, int64_t, int64_t>>&
                           run_host_requests_errors);

  // The items of config `crawl_config_id` that run `run_id` saw last, as JSON text, by id.
  Result<std::vector<std::string>> RunItems(int64_t crawl_config_id, int64_t run_id);

  const std::string& owner() const { return owner_; }

 private:
  pg::Pool& pool_;
  std::string owner_;
  std::string queue_;
};

inline constexpr const char* kRefetchTask = "extractor.tasks.refetch";

// Canonical URL + method + body, hashed: one request per fingerprint per job.
std::string CanonicalUrl(const std::string& url);
std::string Fingerprint(const RequestSpec& spec);

}  // namespace celeriac::state
