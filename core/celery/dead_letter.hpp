#pragma once
// DeadLetter: a message that ended in FAILURE, whole, with why (SPEC 3.5): what ops list,
// inspect and replay. The Celery worker writes one for every FAILURE (unknown task, undecodable
// body, bad arguments, non-retryable error, retries exhausted, hard time limit); the extractor
// writes one for a request that failed for good, framed as an extractor.tasks.refetch message.
// Postgres keeps them (state/dead_letter_store.hpp); tests use a fake sink.

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "core/base/result.hpp"
#include "core/broker/message.hpp"

namespace celeriac::celery {

// The header a dead-letter replay adds: the id of the dead letter it replays.
inline constexpr const char* kDeadLetterIdHeader = "x_celeriac_dead_letter_id";

struct DeadLetter {
  std::string queue;
  std::optional<std::string> task_name;  // absent when the message did not decode far enough
  std::optional<std::string> task_id;
  // The message as it arrived: headers (any bytes, in their order), properties, body bytes.
  broker::Properties properties;
  std::string body;
  // The headers table's bytes as they arrived, when it could not be decoded (properties.headers
  // is then empty).
  std::optional<std::string> raw_headers;
  std::string error_class;    // "NotRegistered", "DecodeError", "MaxRetriesExceededError", ...
  std::string error_message;
  nlohmann::ordered_json context = nlohmann::ordered_json::object();  // worker, retries, url...
  int64_t attempts = 1;       // runs so far: the message's retries + 1
};

class DeadLetterSink {
 public:
  virtual ~DeadLetterSink() = default;
  // Durable when it returns its id; the message may be acked after that. A letter is stored
  // whatever bytes it holds (in a safe form where the database would refuse them as they are);
  // an error means the store itself failed, and says whether a retry can help.
  virtual Result<int64_t> Write(const DeadLetter& letter) = 0;
};

}  // namespace celeriac::celery
