#pragma once
// [extractor]: the extractor binary's worker and engine (engine/engine.hpp), read and checked by
// the extractor. The orchestrator reads `queue` too, where it sends the extractor's work
// (orchestrator/tasks/task_settings.hpp), and leaves the other keys to the extractor.
//
// key                      default                meaning
// extractor.queue          extraction_queue       queue the extractor consumes
// extractor.concurrency    256                    requests in flight, all hosts
// extractor.parse_threads  0 (= number of CPUs)   threads parsing pages
// extractor.prefetch       4                      extract messages taken ahead
// extractor.lease_ms       60000                  how long a leased request is ours without
//                                                 renewal
// extractor.user_agent     Celeriac/<version> (+https://celeriac.dev/bot)
//                                                 when a config sets none

#include <cstdint>
#include <string>

#include "core/config/section.hpp"

namespace celeriac::extractor {

struct ExtractorSettings {
  std::string queue = "extraction_queue";
  int64_t concurrency = 256;
  int64_t parse_threads = 0;
  int64_t prefetch = 4;
  int64_t lease_ms = 60'000;
  std::string user_agent = "Celeriac/" CELERIAC_VERSION " (+https://celeriac.dev/bot)";

  config::Section Keys() {
    return config::Section("extractor")
        .Text("queue", queue)
        .Int("concurrency", concurrency, 1, 65'536)
        .Int("parse_threads", parse_threads, 0, 256)
        .Int("prefetch", prefetch, 1, 65'535)
        .Int("lease_ms", lease_ms, 1'000, 86'400'000)
        .Text("user_agent", user_agent);
  }
};

}  // namespace celeriac::extractor
