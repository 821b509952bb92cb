#include "core/celery/result.hpp"

#include "core/celery/py_json.hpp"

namespace celeriac::celery {

std::string_view ToString(State state) {
  switch (state) {
    case State::kPending: return "PENDING";
    case State::kReceived: return "RECEIVED";
    case State::kStarted: return "STARTED";
    case State::kSuccess: return "SUCCESS";
    case State::kFailure: return "FAILURE";
    case State::kRetry: return "RETRY";
    case State::kRevoked: return "REVOKED";
    case State::kRejected: return "REJECTED";
    case State::kIgnored: return "IGNORED";
  }
  return "PENDING";
}

std::optional<State> ParseState(std::string_view name) {
  for (State s : {State::kPending, State::kReceived, State::kStarted, State::kSuccess,
                  State::kFailure, State::kRetry, State::kRevoked, State::kRejected,
                  State::kIgnored})
    if (ToString(s) == name) return s;
  return std::nullopt;
}

bool IsReady(State state) {
  return state == State::kSuccess || state == State::kFailure || state == State::kRevoked;
}

nlohmann::ordered_json ExceptionInfo::ToJson() const {
  nlohmann::ordered_json j;
  j["exc_type"] = exc_type;
  j["exc_message"] = exc_message;
  j["exc_module"] = exc_module;
  return j;
}

ExceptionInfo ExceptionInfo::Make(std::string type, std::string module, std::string message) {
  ExceptionInfo e;
  e.exc_type = std::move(type);
  e.exc_module = std::move(module);
  e.exc_message = nlohmann::ordered_json::array({std::move(message)});
  return e;
}

std::string EncodeResultBody(const std::string& task_id, State state,
                             const nlohmann::ordered_json& result,
                             const std::optional<std::string>& traceback) {
  nlohmann::ordered_json body;
  body["task_id"] = task_id;
  body["status"] = std::string(ToString(state));
  body["result"] = result;
  body["traceback"] = traceback ? nlohmann::ordered_json(*traceback) : nlohmann::ordered_json(nullptr);
  body["children"] = nlohmann::ordered_json::array();
  return PyJsonDump(body);
}

broker::OutgoingMessage MakeResultMessage(const TaskMessage& task, State state,
                                          const nlohmann::ordered_json& result,
                                          const std::optional<std::string>& traceback) {
  broker::OutgoingMessage out;
  out.exchange = "";
  out.routing_key = task.reply_to;
  auto& p = out.properties;
  p.content_type = "application/json";
  p.content_encoding = "utf-8";
  p.delivery_mode = 1;
  p.priority = 0;
  p.correlation_id = task.correlation_id.empty() ? task.id : task.correlation_id;
  out.body = EncodeResultBody(task.id, state, result, traceback);
  return out;
}

}  // namespace celeriac::celery
