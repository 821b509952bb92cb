#pragma once
// [worker]: the Celery worker core (worker.hpp), read by both binaries. queue, concurrency and
// prefetch_multiplier are the orchestrator worker's (the extractor consumes extractor.queue
// with its own prefetch); max_held_eta applies to both.
//
// key                           default               meaning
// worker.queue                  celery                queue the orchestrator worker consumes
// worker.concurrency            0 (= number of CPUs)  tasks run at once
// worker.prefetch_multiplier    4                     prefetch = concurrency * this
// worker.max_held_eta           1000                  ETA/countdown messages held in memory at
//                                                     most; later-due ones wait in delay queues
// worker.max_abandoned_threads  4                     threads stuck in tasks past their hard time
//                                                     limit at most; past it the worker shuts
//                                                     down and exits with status 3, for its
//                                                     supervisor to restart it

#include <cstdint>
#include <string>

#include "core/config/section.hpp"

namespace celeriac::worker {

struct WorkerSettings {
  std::string queue = "celery";
  int64_t concurrency = 0;
  int64_t prefetch_multiplier = 4;
  int64_t max_held_eta = 1000;
  int64_t max_abandoned_threads = 4;

  config::Section Keys() {
    return config::Section("worker")
        .Text("queue", queue)
        .Int("concurrency", concurrency, 0, 4096)
        .Int("prefetch_multiplier", prefetch_multiplier, 1, 65535)
        .Int("max_held_eta", max_held_eta, 1, 60'000)
        .Int("max_abandoned_threads", max_abandoned_threads, 0, 1024);
  }
};

}  // namespace celeriac::worker
