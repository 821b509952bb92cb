#pragma once
// [retention]: how long Celeriac keeps what it no longer needs; celery.backend_cleanup deletes
// the rest (backend_cleanup.hpp, state/retention.hpp). Read by the orchestrator (its worker runs
// the task).
//
// key                              default          meaning
// retention.task_results_hours     24 (1 day)       finished task states (task_results: SUCCESS,
//                                                   FAILURE, REVOKED) older than this; Celery's
//                                                   result_expires
// retention.crawl_requests_hours   168 (7 days)     the requests (crawl_requests) of runs that
//                                                   finished longer ago than this
// retention.crawl_hosts_hours      168 (7 days)     the hosts (crawl_hosts: robots.txt and
//                                                   politeness state) of such runs
// retention.dead_letters_hours     720 (30 days)    dead letters purged, or replayed and not
//                                                   purged, longer ago than this
// retention.batch_size             1000             rows deleted per transaction
//
// 0 keeps that kind forever. Never deleted, whatever the ages: anything of a run still pending
// or running, dead letters neither purged nor replayed (and the requests their replay needs),
// task states not finished. Runs, jobs and extracted items are kept.
//
// When: beat fires celery.backend_cleanup daily at 04:00 UTC, the built-in beat entry of
// migrations/0007 (a row of beat_entries: change its schedule or zone, or disable it, with
// SQL); a Python beat or `celery call celery.backend_cleanup` may send it as well.

#include <chrono>
#include <cstdint>

#include "core/config/section.hpp"

namespace celeriac::orchestrator {

struct RetentionSettings {
  static constexpr int64_t kMaxHours = 10 * 366 * 24;  // ten years

  int64_t task_results_hours = 24;
  int64_t crawl_requests_hours = 7 * 24;
  int64_t crawl_hosts_hours = 7 * 24;
  int64_t dead_letters_hours = 30 * 24;
  int64_t batch_size = 1000;

  config::Section Keys() {
    return config::Section("retention")
        .Int("task_results_hours", task_results_hours, 0, kMaxHours)
        .Int("crawl_requests_hours", crawl_requests_hours, 0, kMaxHours)
        .Int("crawl_hosts_hours", crawl_hosts_hours, 0, kMaxHours)
        .Int("dead_letters_hours", dead_letters_hours, 0, kMaxHours)
        .Int("batch_size", batch_size, 1, 100'000);
  }
};

}  // namespace celeriac::orchestrator
