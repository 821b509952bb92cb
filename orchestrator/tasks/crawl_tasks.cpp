#include "orchestrator/tasks/crawl_tasks.hpp"



#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "core/base/ids.hpp"
#include "core/celery/codec.hpp"
#include "state/runs.hpp"

namespace celeriac::orchestrator {
namespace {

TaskOutcome Fail(const Error& error) { return TaskError::FromError(error); }

}  // namespace

std::string TriggerOf(const celery::TaskMessage& message) {
  const auto& h = message.custom_headers;
  if (h.contains(kScheduleHeader)) return "beat";
  if (auto it = h.find(kTriggerHeader); it != h.end() && *it == "run-now") return "run-now";
  return "bff";
}

std::optional<std::string> ScheduledFor(const celery::TaskMessage& message) {
  const auto& h = message.custom_headers;
  const auto it = h.find(kScheduledForHeader);
  if (it == h.end() || !it->is_string()) return std::nullopt;
  const auto t = ParseIso8601(it->get<std::string>());
  if (!t) return std::nullopt;  // a malformed header is not worth failing the run for
  return FormatIso8601(*t);
}

std::optional<Json> Argument(const TaskContext& ctx, size_t index, const char* name) {
  if (ctx.args().size() > index) return ctx.args()[index];
  if (auto it = ctx.kwargs().find(name); it != ctx.kwargs().end()) return *it;
  return std::nullopt;
}

void CrawlTasks::Register(TaskRegistry& registry) {
  TaskOptions crawl;
  crawl.acks_late = true;  // idempotent by task id, so a redelivery after a crash is safe
  crawl.max_retries = 5;
  crawl.retry_backoff = BackoffPolicy{std::chrono::milliseconds(1000),
                                      std::chrono::milliseconds(60'000), 2.0, true};
  registry.Register(kExecuteCrawlTask, [this](TaskContext& ctx) { return ExecuteCrawlTask(ctx); },
                    crawl);

  TaskOptions analysis;
  analysis.max_retries = options_.site_analysis_max_retries;
  analysis.default_retry_delay = options_.site_analysis_retry_delay;
  if (options_.site_analysis_backoff_max)
    analysis.retry_backoff = BackoffPolicy{options_.site_analysis_retry_delay,
                                           *options_.site_analysis_backoff_max, 2.0, true};
  analysis.acks_late = true;
  registry.Register(kTriggerSiteAnalysis,
                    [this](TaskContext& ctx) { return TriggerSiteAnalysis(ctx); }, analysis);
}

TaskOutcome CrawlTasks::ExecuteCrawlTask(TaskContext& ctx) {
  const auto arg = Argument(ctx, 0, "task_id");
  if (!arg || !arg->is_number_integer())
    return TaskError::BadArguments("execute_crawl_task() needs an integer task_id");
  const int64_t crawl_task_id = arg->get<int64_t>();
  const auto& request = ctx.request();
  const std::string trigger = TriggerOf(request);

  // 1. The run and its plan, decided once per Celery task id.
  auto plan = state::PlanRun(pool_, crawl_task_id, request.id, trigger, ScheduledFor(request));
  if (!plan) return Fail(plan.error());

  for (const auto& s : plan->skipped)
    spdlog::warn("crawl task {} run {}: skipping data source {}: {}", crawl_task_id, plan->run_id,
                 s["data_source_id"].get<int64_t>(), s["reason"].get<std::string>());

  // 2. Publish what was never confirmed, then record that it was.
  std::vector<broker::OutgoingMessage> messages;
  std::vector<int64_t> publishing;
  for (const auto& d : plan->dispatched) {
    if (d.published) continue;
    auto m = celery::NewTask(kExtractTask, Json::array({d.crawl_config_id}),
                             Json{{"run_id", plan->run_id},
                                  {"crawl_task_id", crawl_task_id},
                                  {"data_source_id", d.data_source_id},
                                  {"job_id", d.job_id}});
    m.id = m.correlation_id = d.extract_task_id;
    m.root_id = request.root_id.empty() ? request.id : request.root_id;
    m.parent_id = request.id;
    m.origin = "celeriac-orchestrator";
    messages.push_back(celery::EncodeTask(m, options_.extraction_queue));
    publishing.push_back(d.job_id);
  }
  if (!messages.empty()) {
    std::call_once(declared_, [&] {
      broker::QueueSpec spec;
      spec.name = spec.exchange = spec.routing_key = options_.extraction_queue;
      declare_status_ = broker_.Declare(spec);
    });
    if (!declare_status_) return Fail(declare_status_.error());
    Status published = broker_.PublishBatch(messages);
    if (!published && published.error().code() == ErrorCode::kNotFound) {
      // The queue was deleted since this process declared it: declare it again and publish
      // once more (the messages that did arrive keep their task ids: one job each still).
      spdlog::warn("run {}: {}; declaring queue {} again", plan->run_id,
                   published.error().message(), options_.extraction_queue);
      broker::QueueSpec spec;
      spec.name = spec.exchange = spec.routing_key = options_.extraction_queue;
      published = broker_.Declare(spec);
      if (published) published = broker_.PublishBatch(messages);
    }
    if (!published) return Fail(published.error());
    auto marked = state::MarkJobsPublished(pool_, publishing);
    // Not fatal: a redelivery would publish these again under the same task ids, which the
    // extractor treats as one job.
    if (!marked) spdlog::warn("run {}: cannot mark jobs published: {}", plan->run_id,
                              marked.error().message());
  }
  spdlog::info("crawl task {} run {} ({}): {} extraction jobs dispatched, {} sources skipped",
               crawl_task_id, plan->run_id, plan->trigger, plan->dispatched.size(),
               plan->skipped.size());

  Json dispatched = Json::array();
  for (const auto& d : plan->dispatched)
    dispatched.push_back({{"data_source_id", d.data_source_id},
                          {"crawl_config_id", d.crawl_config_id},
                          {"config_version", d.config_version},
                          {"job_id", d.job_id},
                          {"extract_task_id", d.extract_task_id}});
  return Json{{"run_id", plan->run_id},
              {"crawl_task_id", crawl_task_id},
              {"trigger", plan->trigger},
              {"dispatched", std::move(dispatched)},
              {"skipped", plan->skipped}};
}

TaskOutcome CrawlTasks::TriggerSiteAnalysis(TaskContext& ctx) {
  const auto source = Argument(ctx, 0, "data_source_id");
  const auto theme = Argument(ctx, 1, "theme_name");
  if (!source || !source->is_number_integer() || !theme || !theme->is_string())
    return TaskError::BadArguments(
        "trigger_site_analysis() needs data_source_id: int and theme_name: str");
  discovery::DiscoverRequest req;
  req.data_source_id = source->get<int64_t>();
  req.theme_name = theme->get<std::string>();
  req.idempotency_key = ctx.request().id;
  // A task abandoned at its hard time limit has failed already: it must not start the call,
  // and a call it starts ends before that limit.
  req.deadline = ctx.TimeLeft();
  if (ctx.cancelled() || (req.deadline && req.deadline->count() == 0))
    return TaskError::FromError(
        Error(ErrorCode::kTimeout, "cancelled before calling Discovery", /*retryable=*/false));
  auto res = discovery_.Discover(req);
  if (!res) {
    spdlog::warn("trigger_site_analysis({}, {}): {}", req.data_source_id, req.theme_name,
                 res.error().ToString());
    return Fail(res.error());
  }
  return Json{{"data_source_id", req.data_source_id},
              {"theme_name", req.theme_name},
              {"accepted", true},
              {"status_code", res->status},
              {"analysis_id", res->analysis_id ? Json(*res->analysis_id) : Json(nullptr)}};
}

}  // namespace celeriac::orchestrator
