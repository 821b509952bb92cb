#pragma once
// The benchmark's task messages: `celeriac.noop` with no arguments and ignore_result=True,
// encoded by Celeriac's codec exactly as the worker will receive them. Ids are derived from the
// index, so every fill of a queue carries byte-identical messages and each drainer consumes the
// same 20,000 tasks.

#include <cstdio>
#include <string>
#include <vector>

#include "core/celery/codec.hpp"

namespace celeriac::bench {

inline std::string BenchTaskId(size_t index) {
  char id[40];
  std::snprintf(id, sizeof(id), "00000000-0000-4000-8000-%012zx", index);
  return id;
}

inline broker::OutgoingMessage BenchTask(size_t index, const std::string& queue) {
  celery::TaskMessage m = celery::NewTask("celeriac.noop", nlohmann::ordered_json::array(),
                                          nlohmann::ordered_json::object());
  m.id = m.root_id = m.correlation_id = BenchTaskId(index);
  m.origin = "bench@worker_throughput";
  m.ignore_result = true;
  return celery::EncodeTask(m, queue);
}

inline std::vector<broker::OutgoingMessage> BenchTasks(size_t n, const std::string& queue) {
  std::vector<broker::OutgoingMessage> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) out.push_back(BenchTask(i, queue));
  return out;
}

}  // namespace celeriac::bench
