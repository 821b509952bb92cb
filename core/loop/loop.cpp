#include "core/loop/loop.hpp"

#include <csignal>
#include <cstring>
#include <stdexcept>

#include <spdlog/spdlog.h>
#include <uv.h>

namespace celeriac {

struct Loop::Timer {
  uv_timer_t handle;
  Loop* owner;
  TimerId id;
  bool repeating;
  std::function<void()> fn;
};

struct Loop::Signal {
  uv_signal_t handle;
  std::function<void(int)> fn;
};

namespace {

// Every C callback funnels user code through here: nothing may unwind into libuv.
template <typename F>
void Guarded(const char* where, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    spdlog::error("uncaught exception in {} callback: {}", where, e.what());
  } catch (...) {
    spdlog::error("uncaught non-standard exception in {} callback", where);
  }
}

void CheckUv(int rc, const char* what) {
  if (rc != 0) throw std::runtime_error(std::string(what) + ": " + uv_strerror(rc));
}

}  // namespace

void LoopAsyncCallback(uv_async_t* handle) {
  static_cast<Loop*>(handle->data)->DrainPosted();
}

void LoopTimerCallback(uv_timer_t* handle) {
  auto* timer = static_cast<Loop::Timer*>(handle->data);
  Loop* owner = timer->owner;
  const Loop::TimerId id = timer->id;
  // Copy: the callback may cancel its own timer, which frees `timer`.
  auto fn = timer->fn;
  if (!timer->repeating) owner->CancelTimer(id);
  Guarded("timer", fn);
}

Loop::Loop() : loop_(std::make_unique<uv_loop_t>()), async_(std::make_unique<uv_async_t>()) {
  CheckUv(uv_loop_init(loop_.get()), "uv_loop_init");
  CheckUv(uv_async_init(loop_.get(), async_.get(), &LoopAsyncCallback), "uv_async_init");
  async_->data = this;
  loop_thread_ = std::this_thread::get_id();
}

Loop::~Loop() {
  CloseAll();
  // Run until every close callback has fired, then release the loop.
  uv_run(loop_.get(), UV_RUN_DEFAULT);
  uv_loop_close(loop_.get());
}

void Loop::CloseAll() {
  for (auto& [id, timer] : timers_) {
    uv_close(reinterpret_cast<uv_handle_t*>(&timer->handle),
             [](uv_handle_t* h) { delete static_cast<Timer*>(h->data); });
  }
  timers_.clear();
  for (Signal* s : signals_) {
    uv_close(reinterpret_cast<uv_handle_t*>(&s->handle),
             [](uv_handle_t* h) { delete static_cast<Signal*>(h->data); });
  }
  signals_.clear();
  if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(async_.get())))
    uv_close(reinterpret_cast<uv_handle_t*>(async_.get()), nullptr);
}

void Loop::Run() {
  loop_thread_ = std::this_thread::get_id();
  {
    std::lock_guard lock(mutex_);
    if (stop_requested_) return;
  }
  uv_run(loop_.get(), UV_RUN_DEFAULT);
}

void Loop::Stop() {
  {
    std::lock_guard lock(mutex_);
    stop_requested_ = true;
  }
  uv_async_send(async_.get());
}

void Loop::Post(std::function<void()> fn) {
  {
    std::lock_guard lock(mutex_);
    posted_.push_back(std::move(fn));
  }
  uv_async_send(async_.get());
}

void Loop::DrainPosted() {
  std::vector<std::function<void()>> batch;
  bool stop = false;
  {
    std::lock_guard lock(mutex_);
    batch.swap(posted_);
    stop = stop_requested_;
  }
  for (auto& fn : batch) Guarded("posted", fn);
  if (stop) uv_stop(loop_.get());
}

Loop::TimerId Loop::AddTimer(std::chrono::milliseconds delay, std::function<void()> fn,
                             std::chrono::milliseconds repeat) {
  auto* timer = new Timer{{}, this, next_timer_id_++, repeat.count() > 0, std::move(fn)};
  CheckUv(uv_timer_init(loop_.get(), &timer->handle), "uv_timer_init");
  timer->handle.data = timer;
  const auto clamp = [](std::chrono::milliseconds d) {
    return static_cast<uint64_t>(std::max<int64_t>(d.count(), 0));
  };
  CheckUv(uv_timer_start(&timer->handle, &LoopTimerCallback, clamp(delay), clamp(repeat)),
          "uv_timer_start");
  timers_.emplace(timer->id, timer);
  return timer->id;
}

void Loop::CancelTimer(TimerId id) {
  auto it = timers_.find(id);
  if (it == timers_.end()) return;
  Timer* timer = it->second;
  timers_.erase(it);
  uv_timer_stop(&timer->handle);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer->handle),
           [](uv_handle_t* h) { delete static_cast<Timer*>(h->data); });
}

void Loop::OnSignal(int signum, std::function<void(int)> fn) {
  auto* s = new Signal{{}, std::move(fn)};
  CheckUv(uv_signal_init(loop_.get(), &s->handle), "uv_signal_init");
  s->handle.data = s;
  CheckUv(uv_signal_start(
              &s->handle,
              [](uv_signal_t* h, int signum) {
                auto* self = static_cast<Signal*>(h->data);
                Guarded("signal", [&] { self->fn(signum); });
              },
              signum),
          "uv_signal_start");
  signals_.push_back(s);
}

void Loop::HandleShutdownSignals(std::function<void(int)> graceful,
                                 std::function<void(int)> immediate) {
  auto handler = [this, graceful = std::move(graceful),
                  immediate = std::move(immediate)](int signum) {
    if (++shutdown_signals_seen_ == 1) {
      spdlog::info("received {}: shutting down gracefully (send again to stop at once)",
                   strsignal(signum));
      graceful(signum);
    } else {
      spdlog::warn("received {} again: stopping now", strsignal(signum));
      if (immediate) {
        immediate(signum);
      } else {
        Stop();
      }
    }
  };
  OnSignal(SIGTERM, handler);
  OnSignal(SIGINT, handler);
}

}  // namespace celeriac
