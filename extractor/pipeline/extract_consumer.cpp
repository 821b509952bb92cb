#include "extractor/pipeline/extract_consumer.hpp"

#include <spdlog/spdlog.h>

#include "core/celery/codec.hpp"
#include "core/celery/result.hpp"
#include "schemas/schemas.hpp"

namespace celeriac::extractor {
namespace {

using OJson = nlohmann::ordered_json;

std::optional<int64_t> OptionalId(const OJson& kwargs, const char* key) {
  const auto it = kwargs.find(key);
  if (it == kwargs.end() || it->is_null()) return std::nullopt;
  return it->get<int64_t>();
}

}  // namespace

ExtractConsumer::ExtractConsumer(broker::Broker& broker, Engine& engine, CrawlStore& store,
                                 std::string queue, uint16_t prefetch)
    : broker_(broker), engine_(engine), store_(store), queue_(std::move(queue)),
      prefetch_(prefetch) {}

Status ExtractConsumer::Start() {
  broker::QueueSpec spec;
  spec.name = spec.exchange = spec.routing_key = queue_;
  if (auto st = broker_.Declare(spec); !st) return st;
  broker::ConsumeOptions options;
  options.queue = queue_;
  options.prefetch = prefetch_;
  auto id = broker_.Consume(options, [this](broker::Delivery&& d) { OnDelivery(std::move(d)); });
  if (!id) return id.error();
  consumer_ = *id;
  return Ok();
}

void ExtractConsumer::Stop() {
  if (const auto id = consumer_.exchange(0); id != 0) (void)broker_.Cancel(id);
}

void ExtractConsumer::DeadLetter(const broker::Delivery& d, const std::string& task,
                                 const std::string& id, const std::string& exc_type,
                                 const std::string& message) {
  spdlog::warn("extract message {} dead-lettered: {}: {}", id.empty() ? "(no id)" : id, exc_type,
               message);
  celery::DeadLetter r;
  r.queue = d.queue.empty() ? queue_ : d.queue;
  if (!task.empty()) r.task_name = task;
  if (!id.empty()) r.task_id = id;
  r.properties = d.properties;
  r.body = d.body;
  r.error_class = exc_type;
  r.error_message = message;
  if (auto st = store_.WriteDeadLetter(r); !st) {
    // Not recorded: hand it back rather than lose it.
    spdlog::error("cannot write dead letter ({}); message goes back to the queue",
                  st.error().message());
    (void)broker_.Reject(consumer_.load(), d.delivery_tag, true);
    return;
  }
  if (!d.properties.reply_to.empty() && !id.empty()) {
    celery::TaskMessage t;
    t.id = t.correlation_id = id;
    t.reply_to = d.properties.reply_to;
    const auto exc = celery::ExceptionInfo::Make(exc_type, exc_type == "NotRegistered"
                                                               ? "celery.exceptions"
                                                               : "builtins",
                                                 message);
    (void)broker_.Publish(
        celery::MakeResultMessage(t, celery::State::kFailure, exc.ToJson(), exc.traceback));
  }
  (void)broker_.Ack(consumer_.load(), d.delivery_tag);
}

void ExtractConsumer::OnDelivery(broker::Delivery&& delivery) {
  auto d = std::make_shared<broker::Delivery>(std::move(delivery));
  auto decoded = celery::DecodeTask(d->properties, d->body);
  if (!decoded.ok()) {
    const auto& f = decoded.failure();
    return DeadLetter(*d, f.task, f.id, f.exc_type, f.message);
  }
  auto& m = decoded.message();
  if (m.task == kRefetchTask) {
    // A replayed dead letter of a failed request: fetch that page again.
    if (m.args.size() != 1 || !m.args[0].is_number_integer())
      return DeadLetter(*d, m.task, m.id, "TypeError",
                        std::string(kRefetchTask) + "() takes one integer request id");
    const std::string task = m.task, id = m.id;
    engine_.SubmitRefetch(m.args[0].get<int64_t>(), m.id, [this, d, task, id](Status st) {
      if (st) return (void)broker_.Ack(consumer_.load(), d->delivery_tag);
      if (st.error().retryable()) return (void)broker_.Reject(consumer_.load(), d->delivery_tag, true);
      DeadLetter(*d, task, id, "LookupError", st.error().message());
    });
    return;
  }
  if (m.task != kExtractTask)
    return DeadLetter(*d, m.task, m.id, "NotRegistered",
                      "'" + m.task + "': the extractor runs " + kExtractTask + " and " +
                          kRefetchTask);
  static const auto schema = schemas::Get(std::string("tasks/") + kExtractTask + ".body");
  const OJson body = OJson::array({m.args, m.kwargs, OJson::object()});
  if (schema) {
    if (auto st = (*schema)->Validate(nlohmann::json::parse(body.dump())); !st)
      return DeadLetter(*d, m.task, m.id, "TypeError",
                        std::string(kExtractTask) + "() arguments: " + st.error().message());
  }
  ExtractRequest req;
  req.crawl_config_id =
      m.args.empty() ? m.kwargs["crawl_config_id"].get<int64_t>() : m.args[0].get<int64_t>();
  req.run_id = OptionalId(m.kwargs, "run_id");
  req.crawl_task_id = OptionalId(m.kwargs, "crawl_task_id");
  req.data_source_id = OptionalId(m.kwargs, "data_source_id");
  req.job_id = OptionalId(m.kwargs, "job_id");
  req.celery_task_id = m.id;
  req.reply_to = m.ignore_result ? "" : d->properties.reply_to;
  const std::string task = m.task, id = m.id;
  engine_.SubmitExtract(req, [this, d, task, id](Status st) {
    if (st) {
      (void)broker_.Ack(consumer_.load(), d->delivery_tag);
    } else if (st.error().retryable()) {
      spdlog::warn("extract {}: {}; handing the message back", id, st.error().message());
      (void)broker_.Reject(consumer_.load(), d->delivery_tag, true);
    } else {
      DeadLetter(*d, task, id,
                 st.error().code() == ErrorCode::kNotFound ? "LookupError" : "ValueError",
                 st.error().message());
    }
  });
}

void ExtractConsumer::PublishResult(const FinishedJob& job) {
  if (job.reply_to.empty()) return;
  celery::TaskMessage t;
  t.id = t.correlation_id = job.celery_task_id;
  t.reply_to = job.reply_to;
  const auto result = nlohmann::ordered_json::parse(job.result.dump());
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
  (void)store_.MarkResultPublished(job.job_id);
}

}  // namespace celeriac::extractor
