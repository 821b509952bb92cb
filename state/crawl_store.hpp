#pragma once
// CrawlStore: the extractor's durable state in Postgres: jobs, their frontier of requests
// (crawl_requests, migrations/0004), extracted items and run counters (the engine's Frontier),
// and the hosts every extractor of a run shares (crawl_hosts: its HostLedger).
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
// Threading: one CrawlStore per process. The engine calls the Frontier from its store thread
// and the HostLedger from its host thread; CrawlStore keeps no state of its own, and the Pool
// underneath is thread-safe.

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
#include "state/frontier.hpp"
#include "state/host_ledger.hpp"

namespace celeriac::state {

class CrawlStore final : public Frontier, public HostLedger {
 public:
  // `queue`: where dead letters of failed requests are replayed to (the extractor's queue).
  CrawlStore(pg::Pool& pool, std::string owner, std::string queue = "extraction_queue")
      : pool_(pool), owner_(std::move(owner)), queue_(std::move(queue)) {}

  // ---- Frontier (state/frontier.hpp says what each does)
  Result<JobInfo> ClaimJob(const ExtractRequest& request) override;
  Result<JobInfo> LoadJob(int64_t job_id) override;
  Result<std::optional<FinishedJob>> StartJob(int64_t job_id, const std::vector<RequestSpec>& start,
                                              const std::string& reply_to,
                                              std::chrono::milliseconds watchdog =
                                                  std::chrono::milliseconds(300'000)) override;
  Result<std::optional<FinishedJob>> FailJob(int64_t job_id, const std::string& error_class,
                                             const std::string& reason,
                                             const std::string& reply_to) override;
  Result<std::vector<FinishedJob>> AbortStalled() override;
  Result<int64_t> Refetch(int64_t request_id, const std::string& celery_task_id) override;
  Result<std::vector<LeasedRequest>> Lease(size_t max, std::chrono::milliseconds lease,
                                           std::optional<int64_t> job_id = std::nullopt) override;
  Result<int64_t> RenewLeases(std::chrono::milliseconds lease) override;
  Status ExpireLeases(const std::vector<int64_t>& request_ids) override;
  Status ReleaseLeases(const std::vector<int64_t>& request_ids) override;
  Result<std::vector<LeasedRequest>> ReclaimExpired(int max_attempts,
                                                    std::chrono::milliseconds lease) override;
  Result<CommitReport> Commit(const std::vector<RequestResult>& results,
                              const std::map<int64_t, JobLimits>& limits, size_t lease_new = 0,
                              std::chrono::milliseconds lease =
                                  std::chrono::milliseconds(60'000)) override;

  // ---- HostLedger (crawl_hosts; state/host_ledger.hpp says what each does)
  Result<std::optional<StoredRobots>> GetRobots(int64_t run_id, const std::string& origin) override;
  Result<bool> ClaimRobots(int64_t run_id, const std::string& origin,
                           std::chrono::milliseconds claim_for) override;
  Result<StoredRobots> PutRobots(int64_t run_id, const std::string& origin,
                                 const StoredRobots& robots,
                                 std::optional<std::chrono::milliseconds> crawl_delay) override;
  Result<HostSlot> ReserveSlot(int64_t run_id, const std::string& origin,
                               std::chrono::milliseconds min_delay) override;
  Status SlowDown(int64_t run_id, const std::string& origin, std::chrono::milliseconds backoff,
                  std::chrono::milliseconds max_delay) override;
  Status AddHostCounts(const std::vector<std::tuple<int64_t, std::string, int64_t, int64_t>>&
                           run_host_requests_errors) override;

  // ---- results, for publishing and the tests
  // Jobs that ended but whose result was never published (the publisher died).
  Result<std::vector<FinishedJob>> UnpublishedResults(size_t max);
  Status MarkResultPublished(int64_t job_id);

  Status WriteDeadLetter(const celery::DeadLetter& letter);

  // The items of config `crawl_config_id` that run `run_id` saw last, as JSON text, by id.
  Result<std::vector<std::string>> RunItems(int64_t crawl_config_id, int64_t run_id);

  const std::string& owner() const { return owner_; }

 private:
  pg::Pool& pool_;
  std::string owner_;
  std::string queue_;
};

inline constexpr const char* kRefetchTask = "extractor.tasks.refetch";

// Method + canonical URL (url::Canonicalize, core/url/url.hpp) + body, hashed: one request per
// fingerprint per job.
std::string Fingerprint(const RequestSpec& spec);

}  // namespace celeriac::state
