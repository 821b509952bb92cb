#pragma once
// Loop: the libuv event loop that each Celeriac process runs on one thread; the real Scheduler
// (core/loop/scheduler.hpp).
//
// Threading: Run() is called on one thread, the loop thread. Post() and Stop() may be called
// from any thread; everything else (timers, signals) only from the loop thread, usually from
// inside a callback. Callbacks run on the loop thread. An exception escaping a callback is
// caught at the libuv boundary and logged, never unwound through C.
//
// Shutdown order: Stop() makes Run() return after the current callback; the destructor closes
// every handle the loop still owns (timers, signals, the post queue) and drains their closes.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/loop/scheduler.hpp"

struct uv_loop_s;
struct uv_async_s;
struct uv_timer_s;
struct uv_signal_s;

namespace celeriac {

class Loop final : public Scheduler {
 public:
  using TimerId = Scheduler::TimerId;

  Loop();
  ~Loop();
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  // Runs callbacks until Stop(). Returns immediately if Stop() was already called.
  void Run();
  // Thread-safe. Run() returns once the loop thread sees it.
  void Stop();
  // Thread-safe. `fn` runs on the loop thread, in posting order.
  void Post(std::function<void()> fn) override;

  // Loop thread only. `fn` runs once after `delay`, then every `repeat` if non-zero.
  TimerId AddTimer(std::chrono::milliseconds delay, std::function<void()> fn,
                   std::chrono::milliseconds repeat = std::chrono::milliseconds(0)) override;
  // Loop thread only. Unknown or already-fired one-shot ids are ignored.
  void CancelTimer(TimerId id) override;

  // Loop thread only (or before Run). Calls `fn(signum)` on the loop thread for each delivery.
  void OnSignal(int signum, std::function<void(int)> fn);

  // SIGTERM and SIGINT: the first calls `graceful` (stop consuming, finish in-flight work, then
  // Stop()); a second one calls `immediate`, by default Stop().
  void HandleShutdownSignals(std::function<void(int)> graceful,
                             std::function<void(int)> immediate = nullptr);

  bool InLoopThread() const { return std::this_thread::get_id() == loop_thread_; }

  // For the wrappers in core/ that drive a C library from this loop (libcurl multi).
  uv_loop_s* raw() { return loop_.get(); }

 private:
  struct Timer;
  struct Signal;
  void DrainPosted();
  void CloseAll();

  std::unique_ptr<uv_loop_s> loop_;
  std::unique_ptr<uv_async_s> async_;
  std::mutex mutex_;
  std::vector<std::function<void()>> posted_;
  bool stop_requested_ = false;
  std::thread::id loop_thread_;
  TimerId next_timer_id_ = 1;
  std::unordered_map<TimerId, Timer*> timers_;
  std::vector<Signal*> signals_;
  int shutdown_signals_seen_ = 0;

  friend void LoopAsyncCallback(uv_async_s*);
  friend void LoopTimerCallback(uv_timer_s*);
};

}  // namespace celeriac
