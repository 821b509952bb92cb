#pragma once
// [tasks]: the orchestrator's Celery tasks (crawl_tasks.hpp), and the one key of [extractor]
// they read.
//
// key                                default             meaning
// tasks.site_analysis_max_retries    3                   trigger_site_analysis retries
// tasks.site_analysis_retry_delay_s  60                  delay before each retry
// tasks.site_analysis_backoff_max_s  0 (= fixed delay)   > 0: exponential backoff with
//                                                        jitter from the delay up to this
// extractor.queue                    extraction_queue    where execute_crawl_task sends
//                                                        extractor.tasks.extract
//
// [extractor] is the extractor's section (extractor/pipeline/extractor_settings.hpp), which
// declares and checks all its keys; the orchestrator reads only `queue` from it, so that both
// binaries name the same queue. Its default is repeated here: neither binary includes the other.

#include <cstdint>
#include <string>

#include "core/config/section.hpp"

namespace celeriac::orchestrator {

struct TaskSettings {
  int64_t site_analysis_max_retries = 3;
  int64_t site_analysis_retry_delay_s = 60;
  int64_t site_analysis_backoff_max_s = 0;

  config::Section Keys() {
    return config::Section("tasks")
        .Int("site_analysis_max_retries", site_analysis_max_retries, 0, 1000)
        .Int("site_analysis_retry_delay_s", site_analysis_retry_delay_s, 0, 86'400)
        .Int("site_analysis_backoff_max_s", site_analysis_backoff_max_s, 0, 86'400);
  }
};

// extractor.queue as the orchestrator reads it.
struct ExtractionQueueSettings {
  std::string queue = "extraction_queue";

  config::Section Keys() { return config::Section("extractor").Text("queue", queue).ReadInPart(); }
};

}  // namespace celeriac::orchestrator
