#pragma once
// Readiness: whether a process's dependencies (Postgres, the broker, ...) answer, for a
// readiness probe that must itself answer promptly whatever they do.
//
// Each dependency has a check, a function that may block for as long as its driver likes
// (a blackholed host, a broker reconnecting with backoff). Checks never run on the caller's
// thread: each has a thread of its own that runs it when asked, one run at a time. Check()
// asks every dependency whose last result is older than `fresh_for` for a new one and waits
// for them together, at most `deadline` in all: a dependency that has not answered by then is
// "unreachable", and a check still running is not started twice (later callers wait for that
// same run, again at most `deadline`). So a probe costs at most `deadline` and at most one
// check per dependency is ever in flight, however many probes arrive.
//
// Answers are generic on purpose ("ok" or "unreachable"): a probe is unauthenticated, so the
// driver's error (host names, addresses, versions) goes to the log instead, masked
// (core/base/secrets.hpp), once when a dependency goes down and once when it is back.
//
// Threading: Add() before Start(); Check() from any thread, concurrently. Stop() or the
// destructor asks the threads to end; the destructor waits for checks in flight to return
// (close the broker first to cut its check short).

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/base/result.hpp"

namespace celeriac::admin {

struct ReadinessOptions {
  std::chrono::milliseconds deadline{1500};   // longest a Check() waits
  std::chrono::milliseconds fresh_for{1000};  // a result this recent is answered as it is
};

class Readiness {
 public:
  using CheckFn = std::function<Status()>;

  struct Dependency {
    std::string name;
    bool ok = false;
    std::string reason;  // "ok" | "unreachable"
  };

  explicit Readiness(ReadinessOptions options = {});
  ~Readiness();
  Readiness(const Readiness&) = delete;
  Readiness& operator=(const Readiness&) = delete;

  void Add(std::string name, CheckFn check);
  // Starts the threads and a first run of every check.
  void Start();
  void Stop();

  // Every dependency in the order added, within options.deadline.
  std::vector<Dependency> Check();

 private:
  struct State;
  void Run(State& state);

  const ReadinessOptions options_;
  std::vector<std::unique_ptr<State>> states_;
  std::vector<std::thread> threads_;
};

}  // namespace celeriac::admin
