#pragma once
// HostScheduler: which leased request starts next. Requests wait in a queue per host (origin)
// of a run; a request starts when
//   - its host's robots.txt is known (RobotsGate) and allows it (else it is skipped),
//   - its page type is not paused (PageTypeBreaker; else it is parked there),
//   - its host runs fewer than per_host_concurrency requests,
//   - its host's pace allows a start now (HostPace: delay, backoff, a slot reserved in the
//     HostLedger),
//   - and fewer than `concurrency` requests run in all.
// When only time stands in the way, one timer wakes it at the earliest moment something can
// start. Per-host request and error counts go to the ledger in batches (RecordCounts).
//
// Threading: the loop thread; the ledger is called on the host thread.

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/base/clock.hpp"
#include "core/loop/executor.hpp"
#include "core/loop/scheduler.hpp"
#include "extractor/engine/page_type_breaker.hpp"
#include "extractor/engine/politeness.hpp"
#include "extractor/engine/robots_gate.hpp"
#include "extractor/engine/work.hpp"

namespace celeriac::extractor {

class HostScheduler {
 public:
  struct Hooks {
    std::function<void(Work)> start;           // `w` may go now; it counts as running
    std::function<void(RequestResult)> skip;   // robots.txt disallows `w`: its result
  };
  // How a started request's fetch ended, for its host.
  enum class Reply {
    kServed,    // a page (2xx)
    kFailed,    // a transport error or another status
    kTooFast,   // 429 or 503: the host slows down
    kFetchedAhead,  // served by a speculative fetch: nothing learnt of the host
  };

  HostScheduler(Scheduler& loop, Executor& host_thread, HostLedger& ledger, RobotsGate& robots,
                PageTypeBreaker& breaker, const Clock& clock, size_t concurrency, Hooks hooks);

  void Enqueue(Work w);
  // Starts whatever may start now, and sets the timer for what has to wait.
  void Dispatch();
  // A started request's fetch ended (its host may take another).
  void FetchEnded(const Work& w, Reply reply,
                  const std::optional<std::string>& retry_after = std::nullopt);
  // A started request is done with (recorded or handed on): it no longer counts as running.
  void Done() { --running_; }

  // Drain: takes every request that has not started, and cancels the timer.
  std::vector<int64_t> TakeUnstarted();
  void Stop();
  // The job ended: its waiting requests go; returns how many.
  size_t ForgetJob(int64_t job_id);
  // Adds the hosts' request and error counts to the ledger (host thread).
  void RecordCounts();

  size_t queued() const { return queued_; }
  size_t running() const { return running_; }

 private:
  struct Host {
    int64_t run_id = 0;
    std::string origin;  // scheme://host[:port]
    std::deque<Work> queue;
    int active = 0;
    HostPace pace;
    enum class Robots { kUnknown, kFetching, kReady } robots = Robots::kUnknown;
    std::shared_ptr<const RobotsRules> rules;
    int64_t requests = 0, errors = 0;  // not yet added to the ledger
  };
  // Dispatch for one host; returns when it would wait until `*wake` (or cannot proceed).
  void DispatchHost(Host& host, Clock::MonoTime now, std::optional<Clock::MonoTime>& wake);
  // Whether the front of `host`'s queue may start now, as far as the host is concerned.
  bool MayStart(Host& host, const Work& w, Clock::MonoTime now,
                std::optional<Clock::MonoTime>& wake);
  void WakeAt(Clock::MonoTime at, Clock::MonoTime now);
  void AskRobots(Host& host, const Work& w);
  void Reserve(Host& host, std::chrono::milliseconds min_delay);
  void SlowDown(Host& host, const parse::CrawlSettings& s,
                const std::optional<std::string>& retry_after);
  Host& HostFor(const Work& w);
  Work Pop(Host& host);

  Scheduler& loop_;
  Executor& host_thread_;
  HostLedger& ledger_;
  RobotsGate& robots_;
  PageTypeBreaker& breaker_;
  const Clock& clock_;
  size_t concurrency_;
  Hooks hooks_;
  std::unordered_map<std::string, Host> hosts_;  // by HostKey
  size_t queued_ = 0;   // waiting in a host's queue
  size_t running_ = 0;  // started and not yet Done
  std::optional<Scheduler::TimerId> timer_;
  Clock::MonoTime timer_at_{};
};

}  // namespace celeriac::extractor
