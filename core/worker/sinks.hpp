#pragma once
// Where the worker writes what ops and the admin API read: dead letters and task states.
// Postgres implementations live in orchestrator/store/; tests use fakes.

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "core/base/result.hpp"
#include "core/broker/message.hpp"
#include "core/celery/dead_letter.hpp"
#include "core/celery/result.hpp"

namespace celeriac::worker {

// Dead letters: one type for every binary (core/celery/dead_letter.hpp).
using DeadLetter = celery::DeadLetter;
using DeadLetterSink = celery::DeadLetterSink;

struct TaskStateRecord {
  std::string task_id;
  std::string task_name;
  celery::State state = celery::State::kPending;
  nlohmann::ordered_json result;  // value, or the exception's JSON
  std::optional<std::string> traceback;
  int64_t retries = 0;
  std::string queue;
  std::string worker;
};

// What is recorded of a task id: its latest state and the retries of the message that
// reached it.
struct StoredTaskState {
  celery::State state = celery::State::kPending;
  int64_t retries = 0;
};

class TaskStateSink {
 public:
  virtual ~TaskStateSink() = default;
  // Upsert by task id; a SUCCESS is never overwritten by a later state (as Celery's backends),
  // nor the state of a later message of the task (higher retries) by an earlier one's RETRY.
  virtual Status Record(const TaskStateRecord& record) = 0;
  // The state recorded for `task_id`, if any. A redelivered message asks, so that a task whose
  // outcome is already recorded is not run again (Celery's worker_deduplicate_successful_tasks).
  virtual Result<std::optional<StoredTaskState>> Lookup(const std::string& task_id) = 0;
};

}  // namespace celeriac::worker
