#pragma once
// TaskRegistry: C++ functions registered under Celery task names, with Celery's task options.
//
// A task function receives a TaskContext and returns a TaskOutcome:
//   - a value: SUCCESS, the value is the result (JSON);
//   - an Error that is retryable: RETRY with the task's backoff, until max_retries, then FAILURE;
//   - an Error that is not retryable: FAILURE at once;
//   - ctx.Retry(error, countdown): RETRY after exactly that countdown (Celery's self.retry()).
//   - Deferred: the message is done (acked) and the task sends its Celery result itself,
//     later, when the work it started ends (the extractor's jobs);
//   - a TaskError with `requeue`: the message goes back to the broker after a pause, no retry
//     counted (the work could not start, e.g. the database is down; nothing happened).
// Every FAILURE also becomes a dead letter. Tasks run on the worker's pool threads; they should
// check ctx.cancelled() in long loops (set at the soft time limit and at shutdown deadlines).
//
// An asynchronous task (RegisterAsync) starts its work and returns at once; the work completes
// later, on any thread, by calling `done` exactly once with the outcome. The TaskContext is
// valid only while the function runs (copy what the work needs). Time limits do not apply.

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/backoff.hpp"
#include "core/base/error.hpp"
#include "core/base/result.hpp"
#include "core/celery/result.hpp"
#include "core/celery/task_message.hpp"

namespace celeriac::worker {

using Json = nlohmann::ordered_json;

// A failure as the Python side will see it: exception class, module and message.
struct TaskError {
  celery::ExceptionInfo exception;
  bool retryable = false;
  std::optional<std::chrono::milliseconds> countdown;  // explicit retry delay (ctx.Retry)
  bool requeue = false;  // hand the message back after a pause instead (nothing happened)

  static TaskError FromError(const Error& error);
  // TypeError / ValueError style failures for bad arguments; never retried.
  static TaskError BadArguments(std::string message);

  // The work could not start and nothing happened: the message goes back to the broker.
  static TaskError Requeue(const Error& error);
};

// The message is done; the task sends its result itself when its work ends.
struct Deferred {};

using TaskOutcome = std::variant<Json, TaskError, Deferred>;

class TaskContext {
 public:
  using Deadline = std::chrono::steady_clock::time_point;
  TaskContext(const celery::TaskMessage& request, const std::atomic<bool>& cancelled,
              std::optional<Deadline> deadline = std::nullopt)
      : request_(request), cancelled_(cancelled), deadline_(deadline) {}
  const celery::TaskMessage& request() const { return request_; }
  const Json& args() const { return request_.args; }
  const Json& kwargs() const { return request_.kwargs; }
  // Set at the soft time limit, at the hard time limit (the task was abandoned: its outcome is
  // dropped, so it must not start a side effect) and at shutdown deadlines.
  bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }
  // When the hard time limit falls, if the task has one: outbound calls should end before it.
  std::optional<Deadline> deadline() const { return deadline_; }
  // Time left before the hard time limit (zero once past it); nullopt without one.
  std::optional<std::chrono::milliseconds> TimeLeft() const;

  // Celery's self.retry(exc=..., countdown=...).
  TaskOutcome Retry(const Error& error, std::chrono::milliseconds countdown) const;

 private:
  const celery::TaskMessage& request_;
  const std::atomic<bool>& cancelled_;
  std::optional<Deadline> deadline_;
};

using TaskFunction = std::function<TaskOutcome(TaskContext&)>;
using Completion = std::function<void(TaskOutcome)>;
using AsyncTaskFunction = std::function<void(TaskContext&, Completion done)>;

struct TaskOptions {
  int max_retries = 3;                                    // Celery's default
  std::chrono::milliseconds default_retry_delay{180'000};  // Celery's default, 3 minutes
  // Exponential backoff with jitter instead of the fixed delay (Celery's retry_backoff).
  std::optional<BackoffPolicy> retry_backoff;
  bool acks_late = false;                                 // Celery's default: ack when started
  bool ignore_result = false;
  std::optional<std::chrono::milliseconds> soft_time_limit;
  std::optional<std::chrono::milliseconds> time_limit;    // hard
};

struct RegisteredTask {
  std::string name;
  TaskFunction fn;             // a task that returns its outcome
  AsyncTaskFunction async_fn;  // or one that completes later
  TaskOptions options;
};

class TaskRegistry {
 public:
  void Register(std::string name, TaskFunction fn, TaskOptions options = {});
  void RegisterAsync(std::string name, AsyncTaskFunction fn, TaskOptions options = {});
  // Shared, so that a thread abandoned in a task keeps that task's function alive.
  std::shared_ptr<const RegisteredTask> Find(const std::string& name) const;
  std::vector<std::string> Names() const;

 private:
  std::map<std::string, std::shared_ptr<RegisteredTask>> tasks_;
};

inline constexpr const char* kBackendCleanupTask = "celery.backend_cleanup";

// celeriac.ping -> "pong", celeriac.echo -> [args, kwargs], celeriac.noop -> null (health
// checks, benchmarks); celeriac.fail(message) fails, celeriac.flaky(n) retries n times then
// succeeds, celeriac.sleep(seconds) sleeps (diagnostics of failure, retry and time limits); and
// Celery's celery.backend_cleanup (Celery beat's default entry, daily at 04:00), which runs
// `backend_cleanup` (the binary's retention; none: it returns null). It is never retried: the
// next day's run does what a failed one left.
void RegisterBuiltinTasks(TaskRegistry& registry, TaskFunction backend_cleanup);

}  // namespace celeriac::worker
