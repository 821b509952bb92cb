#pragma once
// Fakes for the worker's sinks: they keep what was written, and a test can make them fail.

#include <mutex>
#include <vector>

#include "core/worker/sinks.hpp"

namespace celeriac::testing {

class FakeDeadLetterSink final : public worker::DeadLetterSink {
 public:
  Result<int64_t> Write(const worker::DeadLetter& letter) override {
    std::lock_guard lock(mutex_);
    if (fail_next_ > 0) {
      --fail_next_;
      return Error(ErrorCode::kUnavailable, "fake dead-letter store is down");
    }
    letters_.push_back(letter);
    return static_cast<int64_t>(letters_.size());
  }
  void FailNext(int n) {
    std::lock_guard lock(mutex_);
    fail_next_ = n;
  }
  std::vector<worker::DeadLetter> letters() const {
    std::lock_guard lock(mutex_);
    return letters_;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<worker::DeadLetter> letters_;
  int fail_next_ = 0;
};

class FakeTaskStateSink final : public worker::TaskStateSink {
 public:
  Status Record(const worker::TaskStateRecord& record) override {
    std::lock_guard lock(mutex_);
    if (fail_next_ > 0) {
      --fail_next_;
      ++failed_;
      return Error(ErrorCode::kUnavailable, "fake task-state store is down");
    }
    records_.push_back(record);
    return Ok();
  }
  void FailNext(int n) {
    std::lock_guard lock(mutex_);
    fail_next_ = n;
  }
  int failed() const {
    std::lock_guard lock(mutex_);
    return failed_;
  }
  Result<std::optional<worker::StoredTaskState>> Lookup(const std::string& id) override {
    std::lock_guard lock(mutex_);
    ++lookups_;
    std::optional<worker::StoredTaskState> out;
    for (const auto& r : records_) {
      if (r.task_id != id) continue;
      // As the Postgres store: SUCCESS stays, and so does a later message's state.
      if (out && (out->state == celery::State::kSuccess ||
                  (r.state == celery::State::kRetry && out->retries > r.retries)))
        continue;
      out = worker::StoredTaskState{r.state, r.retries};
    }
    return out;
  }
  int lookups() const {
    std::lock_guard lock(mutex_);
    return lookups_;
  }
  std::vector<worker::TaskStateRecord> records() const {
    std::lock_guard lock(mutex_);
    return records_;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<worker::TaskStateRecord> records_;
  int lookups_ = 0;
  int fail_next_ = 0;
  int failed_ = 0;
};

}  // namespace celeriac::testing
