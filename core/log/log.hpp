#pragma once
// Logging through spdlog, as text or as JSON lines, to stderr.
//
// Context fields (task_id, run_id, request_id, ...) are attached per thread with a
// ScopedLogContext and appear on every line logged inside its scope:
//   text: 2026-11-22T16:31:38.123456Z info  [worker] task succeeded task_id=... run_id=7
//   json: {"ts":"2026-11-22T16:31:38.123456Z","level":"info","logger":"worker",
//          "msg":"task succeeded","task_id":"...","run_id":"7"}
// Secrets: every line (text) and every message and context field (JSON) goes through
// MaskSecrets (core/base/secrets.hpp) before it is written, so a password in a URL, a libpq
// key=value string or a query parameter never reaches the log. Do not rely on it alone: mask
// a connection string where you build a message from it (its password may also appear
// outside any recognisable form, see MaskSecrets(text, connection_string)).

#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

#include "core/base/result.hpp"

namespace celeriac::log {

enum class Format { kText, kJson };

// Sets up the default logger for the process. `level` is an spdlog level name.
Status Init(std::string_view level, Format format);

// A named logger sharing the process sink and format ("worker", "beat", "pg", ...).
std::shared_ptr<spdlog::logger> Get(const std::string& name);

// Adds fields to every line this thread logs until the object is destroyed. Nestable.
class ScopedLogContext {
 public:
  ScopedLogContext(std::initializer_list<std::pair<std::string, std::string>> fields);
  ~ScopedLogContext();
  ScopedLogContext(const ScopedLogContext&) = delete;
  ScopedLogContext& operator=(const ScopedLogContext&) = delete;

 private:
  size_t added_;
};

// The current thread's context fields, oldest first.
const std::vector<std::pair<std::string, std::string>>& CurrentContext();

// Renders one record as a JSON line; exposed for tests.
std::string FormatJsonLine(const spdlog::details::log_msg& msg);

}  // namespace celeriac::log
