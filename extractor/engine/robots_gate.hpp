#pragma once
// RobotsGate: a run's robots.txt of one origin, fetched once per run and shared through the
// HostLedger. The first extractor to claim it fetches and stores it; the others look again
// every 100 ms until it is stored (a claimer that died is replaced when its claim runs out).
// If the ledger is away, this process fetches it itself rather than stall. An unreachable
// robots.txt disallows the whole host (RFC 9309). HostScheduler sends nothing to a host before
// its rules are known.
//
// Threading: the loop thread; the ledger is called on the host thread.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "core/loop/executor.hpp"
#include "core/loop/scheduler.hpp"
#include "extractor/engine/work.hpp"
#include "extractor/engine/robots.hpp"

namespace celeriac::extractor {

class RobotsGate {
 public:
  using Ready = std::function<void(std::shared_ptr<const RobotsRules>)>;

  RobotsGate(Scheduler& loop, Executor& host_thread, HostLedger& ledger, Fetcher& fetcher,
             std::string default_user_agent);

  // The rules of `origin` in run `run_id` for `job`'s user agent; `ready` runs on the loop
  // thread once they are known (never while stopped and still waiting for another's fetch).
  void Acquire(int64_t run_id, const std::string& origin, std::shared_ptr<const JobRuntime> job,
               Ready ready);
  // Drain: stop waiting for robots.txt that others fetch.
  void Stop() { stopped_ = true; }
  // robots.txt fetches under way (Drain waits for them).
  size_t in_flight() const { return in_flight_; }

 private:
  struct Ask {
    int64_t run_id;
    std::string origin;
    std::shared_ptr<const JobRuntime> job;
    std::string agent;
    std::function<void(StoredRobots)> ready;
  };
  void Look(std::shared_ptr<const Ask> ask);
  void Fetch(std::shared_ptr<const Ask> ask);
  void Store(std::shared_ptr<const Ask> ask, Result<FetchResponse> response,
             const std::string& failure_kind);

  Scheduler& loop_;
  Executor& host_thread_;
  HostLedger& ledger_;
  Fetcher& fetcher_;
  std::string default_user_agent_;
  bool stopped_ = false;
  size_t in_flight_ = 0;
  // Fetch callbacks hold a weak reference: one that fires after the gate is gone is ignored.
  std::shared_ptr<int> life_ = std::make_shared<int>(0);
};

}  // namespace celeriac::extractor
