#pragma once
// Executor: a fixed set of threads running posted functions; with one thread, strictly in
// order. For blocking work (Postgres, publishing with confirms) that must stay off the loop's
// thread and off the broker's I/O thread.
//
// An exception escaping a function is logged and swallowed. The destructor runs what is queued,
// then joins the threads.
//
// Executor::Inline() has no threads: Post runs the function at once, on the caller's thread.
// A unit test gives it to a component that owns executors, so that the whole component runs on
// the test's thread, deterministically.

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace celeriac {

class Executor {
 public:
  Executor(size_t threads, std::string name);
  static std::unique_ptr<Executor> Inline(std::string name);
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // `urgent` work runs before everything queued.
  void Post(std::function<void()> fn, bool urgent = false);
  // Functions posted and not yet finished.
  size_t Backlog() const;

 private:
  struct InlineTag {};
  Executor(InlineTag, std::string name);
  void RunThread();
  void RunOne(const std::function<void()>& fn);

  std::string name_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  size_t running_ = 0;
  bool stop_ = false;
  std::vector<std::thread> threads_;
  bool inline_ = false;
};

}  // namespace celeriac
