#pragma once
// Where the worker writes what ops and the admin API read: dead letters and task states.
// Postgres implementations live in orchestrator/store/; tests use fakes.

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "core/base/result.hpp"
#include "core/broker/message.hpp"
#include "core/celery/result.hpp"

namespace celeriac::orchestrator {

// A message that ended in FAILURE, whole, with why.
struct DeadLetter {
  std::string queue;
  std::optional<std::string> task_name;
  std::optional<std::string> task_id;
  broker::Properties properties;  // headers included
  std::string body;               // the original bytes
  std::string error_class;        // "NotRegistered", "DecodeError", "MaxRetriesExceededError", ...
  std::string error_message;
  nlohmann::ordered_json context = nlohmann::ordered_json::object();  // worker, retries, traceback...
  int attempts = 1;
};

class DeadLetterSink {
 public:
  virtual ~DeadLetterSink() = default;
  // Durable when it returns Ok: the worker acks the message only after that.
  virtual Result<int64_t> Write(const DeadLetter& letter) = 0;
};

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

class TaskStateSink {
 public:
  virtual ~TaskStateSink() = default;
  // Upsert by task id; a SUCCESS is never overwritten by a later state (as Celery's backends).
  virtual Status Record(const TaskStateRecord& record) = 0;
};

}  // namespace celeriac::orchestrator
