#pragma once
// TaskMessage: one Celery task invocation, as protocol v2 carries it (v1 input is converted).
// Field names are Celery's wire names (research/celery-protocol.md section 1.3), so one grep
// finds both sides.

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "core/base/clock.hpp"
#include "core/broker/message.hpp"

namespace celeriac::celery {

struct TaskMessage {
  // Headers.
  std::string lang = "py";
  std::string task;                       // registered task name
  std::string id;                         // task id (uuid), also the correlation id
  std::optional<std::string> shadow;
  std::optional<std::string> eta;         // ISO-8601 as sent
  std::optional<std::string> expires;     // ISO-8601 as sent
  std::optional<std::string> group;
  std::optional<int64_t> group_index;
  int64_t retries = 0;
  std::optional<double> time_limit;       // hard, seconds (timelimit[0])
  std::optional<double> soft_time_limit;  // soft, seconds (timelimit[1])
  std::string root_id;
  std::optional<std::string> parent_id;
  std::string argsrepr;
  std::string kwargsrepr;
  std::string origin;
  bool ignore_result = false;
  int64_t replaced_task_nesting = 0;
  // Headers that are not Celery's (e.g. periodic_task_name, x_celeriac_dead_letter_id), in the
  // order received; they survive retries, as in Celery.
  broker::Headers custom_headers = broker::Headers::object();

  // Body: [args, kwargs, embed].
  nlohmann::ordered_json args = nlohmann::ordered_json::array();
  nlohmann::ordered_json kwargs = nlohmann::ordered_json::object();
  nlohmann::ordered_json callbacks;  // null or array of signatures
  nlohmann::ordered_json errbacks;
  nlohmann::ordered_json chain;
  nlohmann::ordered_json chord;

  // Properties.
  std::string correlation_id;
  std::string reply_to;
  uint8_t priority = 0;

  // Derived on decode.
  int protocol = 2;
  std::optional<Clock::WallTime> eta_time;
  std::optional<Clock::WallTime> expires_time;
};

// Python's repr of a JSON value, as Celery's saferepr shows args and kwargs in logs, events
// and Flower: [42, 'x', None, True], {'depth': 2}. Truncated to `max_chars` with "...".
std::string PyRepr(const nlohmann::ordered_json& value, size_t max_chars = 1024);

}  // namespace celeriac::celery
