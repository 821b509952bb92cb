#pragma once
// CommitRecorder: records one batch of results in the frontier, whatever the database does.
//
// A commit that cannot reach the database is retried until it can (with backoff; while the
// engine stops, 20 times at most): the results are the only record of the work, and their
// leases stay this extractor's while it keeps renewing them. A commit the database refuses for
// what it holds is tried result by result, so one bad result cannot take the others with it; a
// result still refused is recorded as failed (error class Store) without its items and links,
// and one that cannot even be recorded has its lease expired at once, so another attempt redoes
// it (bounded by max_lease_attempts). Nothing leased is ever left held by nobody.
//
// Threading: the store thread, but Stop from any thread.

#include <atomic>
#include <chrono>
#include <map>
#include <vector>

#include "extractor/engine/admission.hpp"
#include "extractor/engine/engine_stats.hpp"
#include "extractor/engine/work.hpp"

namespace celeriac::extractor {

class CommitRecorder {
 public:
  struct Recorded {
    std::vector<Work> discovered;   // requests the commit found and leased to us
    size_t left_pending = 1;        // found and left for later; 1 when unknown (it failed)
    std::vector<bool> follow_ons;   // per follow-on of the batch: recorded or not
  };

  CommitRecorder(Frontier& frontier, Admission& admission, StatsBook& stats,
                 std::chrono::milliseconds lease);

  // `batch`: `leased_results` results of leased requests, then follow-ons. `lease_new`: how many
  // new requests the commit may lease to us.
  Recorded Record(const std::vector<RequestResult>& batch, size_t leased_results,
                  size_t lease_new);
  // The engine stops: stop retrying an unreachable database forever.
  void Stop() { stopping_ = true; }

 private:
  Result<CommitReport> CommitDurably(const std::vector<RequestResult>& batch,
                                     const std::map<int64_t, JobLimits>& limits,
                                     size_t lease_new, size_t leased_results);
  Result<CommitReport> CommitUntilAnswered(const std::vector<RequestResult>& batch,
                                           const std::map<int64_t, JobLimits>& limits,
                                           size_t lease_new);
  CommitReport CommitOneByOne(const std::vector<RequestResult>& batch,
                              const std::map<int64_t, JobLimits>& limits, size_t lease_new,
                              size_t leased_results);

  Frontier& frontier_;
  Admission& admission_;
  StatsBook& stats_;
  std::chrono::milliseconds lease_;
  std::atomic<bool> stopping_{false};
};

}  // namespace celeriac::extractor
