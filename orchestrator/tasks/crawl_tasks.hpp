#pragma once
// The orchestrator's two Celery tasks (seeds/003: the Task Orchestrator Service).
//
// orchestrator.tasks.execute_crawl_task(task_id)
//   Reads the crawl task; for each of its data sources finds the latest active config (the
//   active row with the highest version) and dispatches one extractor.tasks.extract message per
//   config to extraction_queue; a source without one is skipped with a warning. Records a crawl
//   run (trigger, Celery task id, jobs dispatched, sources skipped and why).
//   Idempotent per Celery task id: a redelivered message finds its run and its jobs and only
//   publishes the extract messages whose publication was never confirmed, so it creates neither
//   a second run nor a second set of messages. Acked late. An unknown or disabled crawl task is
//   a non-retryable failure; database and broker outages are retried.
//
// orchestrator.tasks.trigger_site_analysis(data_source_id, theme_name)
//   Calls the Discovery service (POST /discover) and completes once the call is accepted; it
//   does not wait for the analysis. Network errors, timeouts, 429 and 5xx are retried
//   (max_retries=3, default_retry_delay=60 s as in the seed, or exponential backoff with jitter
//   when configured); other 4xx fail at once. Either way, a final failure is a dead letter.

#include <chrono>
#include <mutex>
#include <optional>
#include <string>

#include "core/broker/broker.hpp"
#include "core/pg/pool.hpp"
#include "discovery-client/discovery_client.hpp"
#include "core/worker/task_registry.hpp"

namespace celeriac::orchestrator {

using worker::Json;
using worker::TaskContext;
using worker::TaskError;
using worker::TaskOptions;
using worker::TaskOutcome;
using worker::TaskRegistry;

inline constexpr const char* kExecuteCrawlTask = "orchestrator.tasks.execute_crawl_task";
inline constexpr const char* kTriggerSiteAnalysis = "orchestrator.tasks.trigger_site_analysis";
inline constexpr const char* kExtractTask = "extractor.tasks.extract";

// Custom headers that say who started a run (they survive retries and replays).
inline constexpr const char* kTriggerHeader = "x_celeriac_trigger";    // "run-now"
inline constexpr const char* kScheduleHeader = "x_celeriac_schedule";  // beat: the crawl task id
// beat: the due time it fired (ISO-8601), recorded as crawl_runs.scheduled_for
inline constexpr const char* kScheduledForHeader = "x_celeriac_scheduled_for";

struct CrawlTaskOptions {
  std::string extraction_queue = "extraction_queue";
  int site_analysis_max_retries = 3;
  std::chrono::milliseconds site_analysis_retry_delay{60'000};
  // Exponential backoff with jitter from site_analysis_retry_delay up to this cap; unset = the
  // fixed delay, as the seed's Celery task.
  std::optional<std::chrono::milliseconds> site_analysis_backoff_max;
};

class CrawlTasks {
 public:
  CrawlTasks(pg::Pool& pool, broker::Broker& broker, discovery::DiscoveryClient& discovery,
             CrawlTaskOptions options)
      : pool_(pool), broker_(broker), discovery_(discovery), options_(std::move(options)) {}

  void Register(TaskRegistry& registry);

  TaskOutcome ExecuteCrawlTask(TaskContext& ctx);
  TaskOutcome TriggerSiteAnalysis(TaskContext& ctx);

 private:
  pg::Pool& pool_;
  broker::Broker& broker_;
  discovery::DiscoveryClient& discovery_;
  CrawlTaskOptions options_;
  std::once_flag declared_;
  Status declare_status_;
};

// "beat", "run-now" or "bff", from the message's custom headers.
std::string TriggerOf(const celery::TaskMessage& message);

// The due time beat fired the message for (header x_celeriac_scheduled_for), as ISO-8601 UTC;
// nullopt when absent or malformed.
std::optional<std::string> ScheduledFor(const celery::TaskMessage& message);

// Reads argument `name` at position `index` or from kwargs (the body schema checked its type).
std::optional<Json> Argument(const TaskContext& ctx, size_t index, const char* name);

}  // namespace celeriac::orchestrator
