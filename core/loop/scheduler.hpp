#pragma once
// Scheduler: what a component living on a loop thread needs of its loop: run a function there,
// and timers. Loop is the real one; a unit test steps tests/support/manual_loop.hpp with a
// ManualClock instead, so timers fire when the test moves time, not when time passes.
//
// Threading: Post() from any thread; AddTimer and CancelTimer on the loop thread only.

#include <chrono>
#include <cstdint>
#include <functional>

namespace celeriac {

class Scheduler {
 public:
  using TimerId = uint64_t;

  virtual ~Scheduler() = default;
  // `fn` runs on the loop thread, in posting order.
  virtual void Post(std::function<void()> fn) = 0;
  // `fn` runs once after `delay`, then every `repeat` if non-zero. Ids are never reused.
  virtual TimerId AddTimer(std::chrono::milliseconds delay, std::function<void()> fn,
                           std::chrono::milliseconds repeat = std::chrono::milliseconds(0)) = 0;
  // Unknown or already-fired one-shot ids are ignored.
  virtual void CancelTimer(TimerId id) = 0;
};

}  // namespace celeriac
