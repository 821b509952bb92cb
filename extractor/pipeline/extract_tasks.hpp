#pragma once
// ExtractTasks: the extractor's two Celery tasks, run by the worker core (core/worker) on
// extraction_queue, as asynchronous tasks; and the Celery results of the jobs they start.
//
//   extractor.tasks.extract(crawl_config_id, run_id=, crawl_task_id=, data_source_id=, job_id=)
//     Claims the job the message names (or a new run and job for a bare message) and puts its
//     start requests in the frontier. Acked late: once they are committed the job's work is
//     durable (any extractor finishes it) and the message is acked (Deferred); the Celery
//     result goes to the message's reply_to when the job ends, sent by whichever extractor
//     ended it (PublishResult), or by the periodic sweep when that one died first.
//   extractor.tasks.refetch(request_id)
//     A dead letter's replay of a request that failed for good: fetched again in its job, or in
//     a new run of its config when the run has ended. SUCCESS once it is back in the frontier.
//
// Everything a Celery worker does with these messages (decoding, unknown tasks, bad arguments,
// dead letters, FAILURE results, acks, ETA, connection loss, shutdown) is the worker core's. An
// unknown config or job is a FAILURE (LookupError); a database that cannot be reached hands
// the message back after a pause, counting no retry.
//
// Threading: the tasks start on the worker's pool threads and complete on the engine's store
// thread. Results are published on a thread of this object's own, never on the engine's.

#include <memory>

#include "core/broker/broker.hpp"
#include "core/loop/executor.hpp"
#include "core/worker/task_registry.hpp"
#include "extractor/engine/engine.hpp"
#include "state/crawl_store.hpp"

namespace celeriac::extractor {

using state::CrawlStore;
using state::kRefetchTask;

inline constexpr const char* kExtractTask = "extractor.tasks.extract";

class ExtractTasks {
 public:
  ExtractTasks(broker::Broker& broker, Engine& engine, CrawlStore& store);

  void Register(worker::TaskRegistry& registry);

  // Sends the job's result to its reply_to (if any) and records that it was sent (queued to
  // this object's thread).
  void PublishResult(FinishedJob job);
  // Results of jobs whose publisher died before sending them (queued to the same thread).
  void SweepUnpublished();

 private:
  void Extract(worker::TaskContext& ctx, worker::Completion done);
  void Refetch(worker::TaskContext& ctx, worker::Completion done);
  void Publish(const FinishedJob& job);

  broker::Broker& broker_;
  Engine& engine_;
  CrawlStore& store_;
  std::unique_ptr<Executor> results_;
};

}  // namespace celeriac::extractor
