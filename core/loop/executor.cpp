#include "core/loop/executor.hpp"

#include <algorithm>

#include <spdlog/spdlog.h>

namespace celeriac {

Executor::Executor(size_t threads, std::string name) : name_(std::move(name)) {
  for (size_t i = 0; i < std::max<size_t>(1, threads); ++i)
    threads_.emplace_back([this] { RunThread(); });
}

Executor::Executor(InlineTag, std::string name) : name_(std::move(name)), inline_(true) {}

std::unique_ptr<Executor> Executor::Inline(std::string name) {
  return std::unique_ptr<Executor>(new Executor(InlineTag{}, std::move(name)));
}

Executor::~Executor() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void Executor::Post(std::function<void()> fn, bool urgent) {
  if (inline_) return RunOne(fn);
  {
    std::lock_guard lock(mutex_);
    if (urgent) {
      queue_.push_front(std::move(fn));
    } else {
      queue_.push_back(std::move(fn));
    }
  }
  cv_.notify_one();
}

size_t Executor::Backlog() const {
  std::lock_guard lock(mutex_);
  return queue_.size() + running_;
}

void Executor::RunThread() {
  for (;;) {
    std::function<void()> fn;
    {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      fn = std::move(queue_.front());
      queue_.pop_front();
      ++running_;
    }
    RunOne(fn);
    std::lock_guard lock(mutex_);
    --running_;
  }
}

void Executor::RunOne(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    spdlog::error("{} thread: unexpected exception: {}", name_, e.what());
  } catch (...) {
    spdlog::error("{} thread: unexpected exception", name_);
  }
}

}  // namespace celeriac
