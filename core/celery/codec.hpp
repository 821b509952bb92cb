#pragma once
// The Celery task message codec: TaskMessage <-> broker message, protocol v2 (and v1 on input),
// JSON serializer, exactly as research/celery-protocol.md sections 1.2-1.8 describe. No I/O.
//
// Decoding failures carry the Celery exception class the Python worker would raise, so the
// dead letter and the FAILURE result name it:
//   ContentDisallowed  content type other than JSON, or a compressed body
//   DecodeError        the body is not valid JSON / UTF-8, or has an unknown kombu type marker
//   InvalidTaskError   not a Celery task (no task header and not a v1 body), bad header types,
//                      a body that is not [args, kwargs, embed], unparsable eta/expires

#include <string>
#include <string_view>

#include "core/base/result.hpp"
#include "core/broker/message.hpp"
#include "core/celery/task_message.hpp"

namespace celeriac::celery {

struct DecodeFailure {
  std::string exc_type;  // "DecodeError", "InvalidTaskError", "ContentDisallowed"
  std::string message;
  // The task name and id, when the headers got far enough to say.
  std::string task;
  std::string id;
};

class DecodeResult {
 public:
  DecodeResult(TaskMessage m) : message_(std::move(m)), ok_(true) {}  // NOLINT
  DecodeResult(DecodeFailure f) : failure_(std::move(f)) {}           // NOLINT
  bool ok() const { return ok_; }
  TaskMessage& message() { return message_; }
  const DecodeFailure& failure() const { return failure_; }

 private:
  TaskMessage message_;
  DecodeFailure failure_;
  bool ok_ = false;
};

DecodeResult DecodeTask(const broker::Properties& properties, std::string_view body);

// "gen<pid>@<host>": the `origin` header Python's send_task writes.
std::string ProducerOrigin();

// A new task message for `task` with a fresh id, root_id = id, as Python's send_task builds it.
TaskMessage NewTask(std::string task, nlohmann::ordered_json args, nlohmann::ordered_json kwargs);

// Protocol v2 on the wire: headers in Celery's order and types, body [args, kwargs, embed],
// published to the default exchange with routing key `queue` (as Celery does), persistent.
broker::OutgoingMessage EncodeTask(const TaskMessage& message, const std::string& queue,
                                   Clock::WallTime now = std::chrono::system_clock::now());

// Decodes kombu >= 5.3's JSON type markers ({"__type__": "datetime", "__value__": ...}) into
// plain values (ISO strings, decimal strings); fails on an unknown marker, as kombu does.
Result<nlohmann::ordered_json> UnwrapKombuMarkers(nlohmann::ordered_json value);

}  // namespace celeriac::celery
