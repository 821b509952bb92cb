#pragma once
// Task states and result messages: what the rpc:// backend sends to a client's reply queue
// (research/celery-protocol.md section 4), so Python's AsyncResult.get() returns what a C++ task
// returned, or raises its error.

#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/broker/message.hpp"
#include "core/celery/task_message.hpp"

namespace celeriac::celery {

enum class State { kPending, kReceived, kStarted, kSuccess, kFailure, kRetry, kRevoked, kRejected, kIgnored };

std::string_view ToString(State state);
// The state a name (as ToString writes it) stands for; nullopt for an unknown name.
std::optional<State> ParseState(std::string_view name);
// SUCCESS, FAILURE and REVOKED: AsyncResult.get() returns or raises on these.
bool IsReady(State state);

// An exception as Celery's backends encode it. Python clients rebuild it from exc_module and
// exc_type (synthesising a class when the module is unknown).
struct ExceptionInfo {
  std::string exc_type;                                   // "RuntimeError", "NotRegistered"
  std::string exc_module = "builtins";                    // "celery.exceptions", ...
  nlohmann::ordered_json exc_message = nlohmann::ordered_json::array();   // the exception's args
  std::string traceback;                                  // free text

  nlohmann::ordered_json ToJson() const;
  static ExceptionInfo Make(std::string type, std::string module, std::string message);
};

// {"task_id", "status", "result", "traceback", "children"} as the rpc backend sends it.
std::string EncodeResultBody(const std::string& task_id, State state, const nlohmann::ordered_json& result,
                             const std::optional<std::string>& traceback);

// The reply for `task`: to the default exchange, routing key = its reply_to, correlation id =
// its correlation id (task id), transient. Callers skip it when reply_to is empty.
broker::OutgoingMessage MakeResultMessage(const TaskMessage& task, State state,
                                          const nlohmann::ordered_json& result,
                                          const std::optional<std::string>& traceback);

}  // namespace celeriac::celery
