#include "core/worker/task_registry.hpp"

#include <algorithm>
#include <thread>

namespace celeriac::worker {

TaskError TaskError::FromError(const Error& error) {
  TaskError e;
  // Celery clients rebuild the class from module + name; ours live in one module of their own.
  e.exception = celery::ExceptionInfo::Make(std::string(ToString(error.code())) + "Error",
                                            "celeriac.errors", error.message());
  e.retryable = error.retryable();
  return e;
}

TaskError TaskError::Requeue(const Error& error) {
  TaskError e = FromError(error);
  e.retryable = false;
  e.requeue = true;
  return e;
}

TaskError TaskError::BadArguments(std::string message) {
  TaskError e;
  e.exception = celery::ExceptionInfo::Make("TypeError", "builtins", std::move(message));
  e.retryable = false;
  return e;
}

TaskOutcome TaskContext::Retry(const Error& error, std::chrono::milliseconds countdown) const {
  TaskError e = TaskError::FromError(error);
  e.retryable = true;
  e.countdown = countdown;
  return e;
}

std::optional<std::chrono::milliseconds> TaskContext::TimeLeft() const {
  if (!deadline_) return std::nullopt;
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      *deadline_ - std::chrono::steady_clock::now());
  return std::max(left, std::chrono::milliseconds(0));
}

void TaskRegistry::Register(std::string name, TaskFunction fn, TaskOptions options) {
  auto task = std::make_shared<RegisteredTask>(RegisteredTask{name, std::move(fn), {}, options});
  tasks_[std::move(name)] = std::move(task);
}

void TaskRegistry::RegisterAsync(std::string name, AsyncTaskFunction fn, TaskOptions options) {
  auto task = std::make_shared<RegisteredTask>(RegisteredTask{name, {}, std::move(fn), options});
  tasks_[std::move(name)] = std::move(task);
}

std::shared_ptr<const RegisteredTask> TaskRegistry::Find(const std::string& name) const {
  auto it = tasks_.find(name);
  return it == tasks_.end() ? nullptr : it->second;
}

std::vector<std::string> TaskRegistry::Names() const {
  std::vector<std::string> out;
  for (const auto& [name, _] : tasks_) out.push_back(name);
  return out;
}

void RegisterBuiltinTasks(TaskRegistry& registry, TaskFunction backend_cleanup) {
  registry.Register("celeriac.ping", [](TaskContext&) -> TaskOutcome { return Json("pong"); });
  registry.Register("celeriac.echo", [](TaskContext& ctx) -> TaskOutcome {
    return Json::array({ctx.args(), ctx.kwargs()});
  });
  registry.Register("celeriac.noop", [](TaskContext&) -> TaskOutcome { return Json(nullptr); });
  // Diagnostics for health checks and interop tests.
  registry.Register("celeriac.fail", [](TaskContext& ctx) -> TaskOutcome {
    const auto& a = ctx.args();
    return TaskError::FromError(Error(ErrorCode::kInternal,
                                      a.size() > 0 && a[0].is_string() ? a[0].get<std::string>()
                                                                       : "celeriac.fail",
                                      /*retryable=*/false));
  });
  registry.Register(
      "celeriac.flaky",
      [](TaskContext& ctx) -> TaskOutcome {
        // Fails (retryably) until it has been retried args[0] times, then returns the count.
        const auto& a = ctx.args();
        const int64_t failures = a.size() > 0 && a[0].is_number_integer() ? a[0].get<int64_t>() : 1;
        if (ctx.request().retries < failures)
          return ctx.Retry(Error(ErrorCode::kUnavailable,
                                 "flaky failure " + std::to_string(ctx.request().retries + 1)),
                           std::chrono::milliseconds(100));
        return Json(ctx.request().retries);
      },
      [] {
        TaskOptions o;
        o.max_retries = 10;
        return o;
      }());
  registry.Register("celeriac.sleep", [](TaskContext& ctx) -> TaskOutcome {
    // Sleeps args[0] seconds in small steps, stopping early when asked to (soft time limit).
    const auto& a = ctx.args();
    const double seconds = a.size() > 0 && a[0].is_number() ? a[0].get<double>() : 1.0;
    const auto until = std::chrono::steady_clock::now() +
                       std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
    while (std::chrono::steady_clock::now() < until) {
      if (ctx.cancelled())
        return TaskError::FromError(Error(ErrorCode::kTimeout, "SoftTimeLimitExceeded", false));
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return Json(seconds);
  });
  if (!backend_cleanup)
    backend_cleanup = [](TaskContext&) -> TaskOutcome { return Json(nullptr); };
  registry.Register(
      kBackendCleanupTask, std::move(backend_cleanup),
      [] {
        TaskOptions o;
        o.max_retries = 0;
        return o;
      }());
}

}  // namespace celeriac::worker
