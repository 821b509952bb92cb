#include "extractor/pipeline/extract_tasks.hpp"

#include <spdlog/spdlog.h>

#include "core/celery/result.hpp"

namespace celeriac::extractor {
namespace {

using OJson = nlohmann::ordered_json;

std::optional<int64_t> OptionalId(const OJson& kwargs, const char* key) {
  const auto it = kwargs.find(key);
  if (it == kwargs.end() || !it->is_number_integer()) return std::nullopt;
  return it->get<int64_t>();
}

// How a job's start (or a refetch) ended, as the worker core's outcome.
worker::TaskOutcome Outcome(const Status& st, worker::TaskOutcome success) {
  if (st) return success;
  if (st.error().retryable()) return worker::TaskError::Requeue(st.error());
  worker::TaskError err;
  err.exception = celery::ExceptionInfo::Make(
      st.error().code() == ErrorCode::kNotFound ? "LookupError" : "ValueError", "builtins",
      st.error().message());
  return err;
}

}  // namespace

ExtractTasks::ExtractTasks(broker::Broker& broker, Engine& engine, CrawlStore& store)
    : broker_(broker), engine_(engine), store_(store),
      results_(std::make_unique<Executor>(1, "results")) {}

void ExtractTasks::Register(worker::TaskRegistry& registry) {
  worker::TaskOptions options;
  options.acks_late = true;  // acked once the work is durable in the frontier
  options.max_retries = 0;
  registry.RegisterAsync(
      kExtractTask,
      [this](worker::TaskContext& ctx, worker::Completion done) { Extract(ctx, std::move(done)); },
      options);
  registry.RegisterAsync(
      kRefetchTask,
      [this](worker::TaskContext& ctx, worker::Completion done) { Refetch(ctx, std::move(done)); },
      options);
}

void ExtractTasks::Extract(worker::TaskContext& ctx, worker::Completion done) {
  // The body schema (schemas/tasks/extractor.tasks.extract.body) was checked by the worker.
  const auto& m = ctx.request();
  ExtractRequest req;
  req.crawl_config_id =
      m.args.empty() ? m.kwargs["crawl_config_id"].get<int64_t>() : m.args[0].get<int64_t>();
  req.run_id = OptionalId(m.kwargs, "run_id");
  req.crawl_task_id = OptionalId(m.kwargs, "crawl_task_id");
  req.data_source_id = OptionalId(m.kwargs, "data_source_id");
  req.job_id = OptionalId(m.kwargs, "job_id");
  req.celery_task_id = m.id;
  req.reply_to = m.ignore_result ? "" : m.reply_to;
  engine_.SubmitExtract(req, [done = std::move(done)](Status st) {
    done(Outcome(st, worker::Deferred{}));
  });
}

void ExtractTasks::Refetch(worker::TaskContext& ctx, worker::Completion done) {
  const auto& args = ctx.args();
  if (args.size() != 1 || !args[0].is_number_integer())
    return done(worker::TaskError::BadArguments(std::string(kRefetchTask) +
                                                "() takes one integer request id"));
  const int64_t request_id = args[0].get<int64_t>();
  engine_.SubmitRefetch(request_id, ctx.request().id, [done = std::move(done), request_id](Status st) {
    done(Outcome(st, worker::Json{{"request_id", request_id}, {"refetch", "queued"}}));
  });
}

void ExtractTasks::PublishResult(FinishedJob job) {
  if (job.reply_to.empty()) return;
  results_->Post([this, job = std::move(job)] { Publish(job); });
}

void ExtractTasks::SweepUnpublished() {
  results_->Post([this] {
    auto pending = store_.UnpublishedResults(100);
    if (!pending) {
      spdlog::warn("checking for unsent job results failed: {}", pending.error().message());
      return;
    }
    for (const auto& job : *pending) Publish(job);
  });
}

void ExtractTasks::Publish(const FinishedJob& job) {
  if (job.reply_to.empty()) return;
  celery::TaskMessage t;
  t.id = t.correlation_id = job.celery_task_id;
  t.reply_to = job.reply_to;
  const auto result = OJson::parse(job.result.dump());
  const auto state = job.status == "failed" ? celery::State::kFailure : celery::State::kSuccess;
  auto message =
      state == celery::State::kSuccess
          ? celery::MakeResultMessage(t, state, result, std::nullopt)
          : celery::MakeResultMessage(
                t, state,
                celery::ExceptionInfo::Make("RuntimeError", "builtins",
                                            "extraction job " + std::to_string(job.job_id) +
                                                " failed: " + job.reason)
                    .ToJson(),
                std::nullopt);
  if (auto st = broker_.Publish(message); !st) {
    if (st.error().code() != ErrorCode::kNotFound) {
      spdlog::warn("job {}: result not sent ({}); the sweep retries", job.job_id,
                   st.error().message());
      return;
    }
    // The reply queue is gone (its client stopped waiting): sending again cannot help.
    spdlog::debug("job {}: nobody waits for the result any more ({})", job.job_id,
                  st.error().message());
  }
  if (auto st = store_.MarkResultPublished(job.job_id); !st)
    spdlog::warn("job {}: result sent but not marked ({}); it may be sent again",
                 job.job_id, st.error().message());
}

}  // namespace celeriac::extractor
