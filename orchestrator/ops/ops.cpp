#include "orchestrator/ops/ops.hpp"

#include <map>
#include <set>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "core/celery/codec.hpp"
#include "orchestrator/tasks/crawl_tasks.hpp"

namespace celeriac::orchestrator::ops {
namespace {

Status DeclareCeleryQueue(broker::Broker& broker, const std::string& queue) {
  broker::QueueSpec spec;
  spec.name = spec.exchange = spec.routing_key = queue;
  return broker.Declare(spec);
}

// Publishes a task as Python's send_task would, after declaring its queue as Celery does.
Status PublishTask(broker::Broker& broker, const celery::TaskMessage& m, const std::string& queue) {
  if (auto st = DeclareCeleryQueue(broker, queue); !st) return st;
  return broker.Publish(celery::EncodeTask(m, queue));
}

Error Prefixed(const Error& e, const std::string& what) {
  return Error(e.code(), what + ": " + e.message(), e.retryable());
}

// The message a replay publishes: the original (its headers with their exact bytes), retries
// reset (Celery v2 keeps them in a header; a v1 message has none to reset), and the dead
// letter's id in a header.
broker::OutgoingMessage ReplayMessage(const DeadLetterRow& row) {
  broker::OutgoingMessage m;
  m.exchange = "";
  m.routing_key = row.letter.queue;
  m.properties = row.letter.properties;
  auto& headers = m.properties.headers;
  if (!headers.is_object()) headers = broker::Headers::object();
  if (auto it = headers.find("retries"); it != headers.end()) *it = 0;
  headers[kDeadLetterHeader] = row.id;
  m.body = row.letter.body;
  return m;
}

std::optional<std::string> ReplayTaskId(const broker::OutgoingMessage& m) {
  if (auto it = m.properties.headers.find("id");
      it != m.properties.headers.end() && it->is_string() && !it->get<std::string>().empty())
    return it->get<std::string>();
  if (!m.properties.correlation_id.empty()) return m.properties.correlation_id;
  return std::nullopt;
}

// Why a row is not replayed, or nullopt when it may be.
std::optional<ReplayOutcome> Refusal(const DeadLetterRow& row, const ReplayOptions& options) {
  ReplayOutcome out;
  out.dead_letter_id = row.id;
  if (row.purged_at) {
    out.status = "purged";
    out.message = fmt::format("dead letter {} was purged at {}; purged rows are never replayed",
                              row.id, FormatIso8601(*row.purged_at));
    return out;
  }
  if (row.replay_count > 0 && !options.force) {
    out.status = "already_replayed";
    out.task_id = row.replayed_task_id;
    out.message = fmt::format(
        "dead letter {} was replayed {} time(s), last at {}; use force to replay it again", row.id,
        row.replay_count, row.replayed_at ? FormatIso8601(*row.replayed_at) : std::string("?"));
    return out;
  }
  return std::nullopt;
}

Result<ReplayOutcome> ReplayOne(pg::Pool& pool, broker::Broker& broker, int64_t id,
                                const ReplayOptions& options,
                                std::map<std::string, Status>& declared) {
  // The step may run again after a retryable database error; once the broker took the
  // message, a second attempt only marks the row, it never publishes twice.
  bool published = false;
  ReplayOutcome out;
  auto st = state::ReplayDeadLetter(
      pool, id, !options.dry_run,
      [&](const std::optional<DeadLetterRow>& row) -> Result<state::ReplayMark> {
        out = ReplayOutcome{};
        out.dead_letter_id = id;
        if (!row) {
          out.status = "not_found";
          out.message = fmt::format("dead letter {} does not exist", id);
          return state::ReplayMark{};
        }
        const auto message = ReplayMessage(*row);
        out.task_id = ReplayTaskId(message);
        if (!published) {
          if (auto refused = Refusal(*row, options)) {
            out = *refused;
            return state::ReplayMark{};
          }
          if (options.dry_run) {
            out.status = "would_replay";
            out.message = fmt::format("would publish to queue {}", row->letter.queue);
            return state::ReplayMark{};
          }
          auto [it, first] = declared.try_emplace(row->letter.queue);
          if (first) it->second = DeclareCeleryQueue(broker, row->letter.queue);
          if (!it->second)
            return Prefixed(it->second.error(), "declaring queue " + row->letter.queue);
          if (auto sent = broker.Publish(message); !sent)
            return Prefixed(sent.error(), "publishing to queue " + row->letter.queue);
          published = true;
        }
        out.status = "replayed";
        out.message = fmt::format("published to queue {}", row->letter.queue);
        return state::ReplayMark{true, out.task_id};
      });
  if (!st) return st.error();
  return out;
}

}  // namespace

// ---- run-now ---------------------------------------------------------------------------------

Result<RunNowResult> RunNow(pg::Pool& pool, broker::Broker& broker, int64_t crawl_task_id,
                            const RunNowOptions& options) {
  auto m = celery::NewTask(kExecuteCrawlTask, Json::array({crawl_task_id}), Json::object());
  m.origin = celery::ProducerOrigin();
  m.custom_headers[kTriggerHeader] = "run-now";

  // The run row first, so the caller has its id at once; the worker finds it by task id.
  auto run_id = state::CreatePendingRun(pool, crawl_task_id, m.id);
  if (!run_id) return run_id.error();

  if (auto st = PublishTask(broker, m, options.queue); !st) {
    // Nobody will run it: take the row back (unless a worker got the message after all and
    // already started it), so no run stays pending forever.
    if (auto undo = state::DropPendingRun(pool, *run_id); !undo)
      spdlog::warn("run-now: run {} left pending after a failed publish: {}", *run_id,
                   undo.error().message());
    return Prefixed(st.error(), "publishing execute_crawl_task to queue " + options.queue);
  }
  return RunNowResult{m.id, *run_id};
}

Result<std::string> TriggerSiteAnalysis(broker::Broker& broker, int64_t data_source_id,
                                        const std::string& theme_name,
                                        const RunNowOptions& options) {
  auto m = celery::NewTask(kTriggerSiteAnalysis, Json::array({data_source_id, theme_name}),
                           Json::object());
  m.origin = celery::ProducerOrigin();
  if (auto st = PublishTask(broker, m, options.queue); !st)
    return Prefixed(st.error(), "publishing trigger_site_analysis to queue " + options.queue);
  return m.id;
}

// ---- dead letters ----------------------------------------------------------------------------

Json ReplayOutcome::ToJson() const {
  Json j;
  j["dead_letter_id"] = dead_letter_id;
  j["status"] = status;
  j["task_id"] = task_id ? Json(*task_id) : Json(nullptr);
  j["message"] = message;
  return j;
}

Result<std::vector<ReplayOutcome>> ReplayDeadLetters(pg::Pool& pool, broker::Broker& broker,
                                                     const DeadLetterFilter& filter,
                                                     const ReplayOptions& options) {
  // 1. Which rows: see the header comment. Named rows are selected even when replayed or
  // purged, so the refusal is reported; each is checked again under its row lock below.
  const bool named = !filter.ids.empty();
  auto ids = state::SelectDeadLetterIds(pool, filter,
                                        named || (options.force && filter.include_replayed), named);
  if (!ids) return ids.error();

  std::vector<ReplayOutcome> outcomes;
  // Ids asked for that the filter did not select: unknown, or excluded by another filter.
  const std::set<int64_t> selected(ids->begin(), ids->end());
  std::set<int64_t> missing;
  for (int64_t id : filter.ids)
    if (!selected.count(id)) missing.insert(id);

  // 2. One transaction per row, so one failure stops nothing else.
  std::map<std::string, Status> declared;
  for (int64_t id : *ids) {
    auto outcome = ReplayOne(pool, broker, id, options, declared);
    if (outcome) {
      outcomes.push_back(std::move(*outcome));
      continue;
    }
    ReplayOutcome failed;
    failed.dead_letter_id = id;
    failed.status = "failed";
    failed.message = outcome.error().ToString();
    outcomes.push_back(std::move(failed));
  }
  for (int64_t id : missing) {
    ReplayOutcome out;
    out.dead_letter_id = id;
    out.status = "not_found";
    out.message = fmt::format("dead letter {} does not exist or does not match the filters", id);
    outcomes.push_back(std::move(out));
  }
  return outcomes;
}

}  // namespace celeriac::orchestrator::ops
