#pragma once
// HostLedger: what every extractor of a run shares about one host (origin): its robots.txt,
// fetched once per run, and its pace, so that a politeness delay or a backoff holds across
// processes. CrawlStore keeps it in crawl_hosts; tests/support/fake_frontier.hpp in memory.
//
// Threading: called from one thread (the engine's host thread).

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "core/base/result.hpp"

namespace celeriac::state {

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

class HostLedger {
 public:
  virtual ~HostLedger() = default;

  virtual Result<std::optional<StoredRobots>> GetRobots(int64_t run_id,
                                                        const std::string& origin) = 0;
  // True when this extractor should fetch the run's robots.txt of `origin`: nobody stored it
  // and nobody claimed it in the last `claim_for` (a claimer that died is replaced).
  virtual Result<bool> ClaimRobots(int64_t run_id, const std::string& origin,
                                   std::chrono::milliseconds claim_for) = 0;
  // Stores robots.txt unless another extractor stored it first; returns what is stored.
  virtual Result<StoredRobots> PutRobots(
      int64_t run_id, const std::string& origin, const StoredRobots& robots,
      std::optional<std::chrono::milliseconds> crawl_delay) = 0;
  // Reserves the next request start on the host: after the previous reservation plus the
  // host's delay (at least `min_delay`), and after any backoff. Once the backoff is over the
  // delay eases back towards `min_delay` (x0.8 per request).
  virtual Result<HostSlot> ReserveSlot(int64_t run_id, const std::string& origin,
                                       std::chrono::milliseconds min_delay) = 0;
  // A 429/503: the host's delay doubles (at least 1 s, at most `max_delay`) and nobody starts a
  // request on it before `backoff`.
  virtual Status SlowDown(int64_t run_id, const std::string& origin,
                          std::chrono::milliseconds backoff,
                          std::chrono::milliseconds max_delay) = 0;
  // Adds requests and errors to hosts' counters (batched by the engine).
  virtual Status AddHostCounts(
      const std::vector<std::tuple<int64_t, std::string, int64_t, int64_t>>&
          run_host_requests_errors) = 0;
};

}  // namespace celeriac::state
