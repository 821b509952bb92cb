#pragma once
// ManualLoop: a Scheduler that a test steps by hand, with a ManualClock. Posted functions run
// when the test calls RunReady (or Advance / RunUntil); a timer fires when the test moves the
// clock to its time. Nothing sleeps and nothing runs on another thread, so a component on the
// loop thread (with Executor::Inline for its executors) runs deterministically.
//
// Threading: Post from any thread; everything else on the test's thread.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "core/loop/scheduler.hpp"
#include "tests/support/manual_clock.hpp"

namespace celeriac::testing {

class ManualLoop final : public Scheduler {
 public:
  explicit ManualLoop(ManualClock& clock) : clock_(clock) {}

  void Post(std::function<void()> fn) override {
    std::lock_guard lock(mutex_);
    posted_.push_back(std::move(fn));
  }

  TimerId AddTimer(std::chrono::milliseconds delay, std::function<void()> fn,
                   std::chrono::milliseconds repeat = std::chrono::milliseconds(0)) override {
    const TimerId id = next_id_++;
    timers_.emplace(std::make_pair(clock_.Monotonic() + std::max(delay, std::chrono::milliseconds(0)), id),
                    Timer{std::move(fn), repeat});
    return id;
  }

  void CancelTimer(TimerId id) override {
    for (auto it = timers_.begin(); it != timers_.end(); ++it) {
      if (it->first.second == id) {
        timers_.erase(it);
        return;
      }
    }
  }

  // Runs posted functions and the timers due now, until none is left; returns how many ran.
  size_t RunReady() {
    size_t ran = 0;
    for (;;) {
      std::vector<std::function<void()>> batch;
      {
        std::lock_guard lock(mutex_);
        batch.swap(posted_);
      }
      if (!batch.empty()) {
        for (auto& fn : batch) fn();
        ran += batch.size();
        continue;
      }
      if (!FireOneDue()) return ran;
      ++ran;
    }
  }

  // Moves time forward by `d`, stopping at each timer on the way to fire it (and what it
  // posts).
  void Advance(std::chrono::milliseconds d) {
    const auto until = clock_.Monotonic() + d;
    RunReady();
    while (!timers_.empty() && timers_.begin()->first.first <= until) {
      StepTo(timers_.begin()->first.first);
      RunReady();
    }
    StepTo(until);
    RunReady();
  }

  // Runs until `done()` holds, moving time to each next timer; false when `limit` of time
  // passed first (or nothing is left to run).
  bool RunUntil(const std::function<bool()>& done,
                std::chrono::milliseconds limit = std::chrono::minutes(10)) {
    const auto until = clock_.Monotonic() + limit;
    for (;;) {
      RunReady();
      if (done()) return true;
      if (timers_.empty() || timers_.begin()->first.first > until) return false;
      StepTo(timers_.begin()->first.first);
    }
  }

  size_t timers() const { return timers_.size(); }

 private:
  struct Timer {
    std::function<void()> fn;
    std::chrono::milliseconds repeat;
  };

  void StepTo(Clock::MonoTime t) {
    if (t > clock_.Monotonic()) clock_.Advance(t - clock_.Monotonic());
  }

  bool FireOneDue() {
    if (timers_.empty() || timers_.begin()->first.first > clock_.Monotonic()) return false;
    auto node = timers_.extract(timers_.begin());
    const TimerId id = node.key().second;
    Timer timer = std::move(node.mapped());
    if (timer.repeat.count() > 0)
      timers_.emplace(std::make_pair(clock_.Monotonic() + timer.repeat, id),
                      Timer{timer.fn, timer.repeat});
    timer.fn();
    return true;
  }

  ManualClock& clock_;
  std::mutex mutex_;
  std::vector<std::function<void()>> posted_;
  TimerId next_id_ = 1;
  std::map<std::pair<Clock::MonoTime, TimerId>, Timer> timers_;  // by due time, then age
};

}  // namespace celeriac::testing
