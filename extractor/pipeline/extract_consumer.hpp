#pragma once
// ExtractConsumer: takes extractor.tasks.extract messages off extraction_queue and starts their
// jobs in the engine; publishes each job's Celery result (rpc://) when the job ends.
//
// Ack: a message is acked only after its job's start requests are committed to the frontier
// (the job's work is durable from then on; any extractor finishes it). A message that cannot
// become a job (does not decode, unknown task, wrong arguments, unknown config or job) is
// written whole to dead_letters first, answered with a FAILURE result when it has a reply_to,
// then acked. When the database is unreachable the message is handed back to the queue.
//
// The result is sent when the job ends, by whichever extractor ended it, to the reply_to the
// message carried (kept on the job row); a result whose publisher died is sent by the periodic
// sweep (CrawlStore::UnpublishedResults).
//
// Threading: deliveries arrive on the broker's thread and go straight to the engine's store
// thread; PublishResult may be called from any thread.

#include <atomic>
#include <memory>
#include <string>

#include "core/broker/broker.hpp"
#include "extractor/pipeline/engine.hpp"

namespace celeriac::extractor {

inline constexpr const char* kExtractTask = "extractor.tasks.extract";

class ExtractConsumer {
 public:
  ExtractConsumer(broker::Broker& broker, Engine& engine, CrawlStore& store, std::string queue,
                  uint16_t prefetch);

  // Declares the queue (Celery's topology) and starts consuming.
  Status Start();
  // Stops new deliveries; unacked ones go back to the queue when the connection closes.
  void Stop();
  // Sends the job's result to its reply_to (if any) and records that it was sent.
  void PublishResult(const FinishedJob& job);

 private:
  void OnDelivery(broker::Delivery&& d);
  void DeadLetter(const broker::Delivery& d, const std::string& task, const std::string& id,
                  const std::string& exc_type, const std::string& message);

  broker::Broker& broker_;
  Engine& engine_;
  CrawlStore& store_;
  std::string queue_;
  uint16_t prefetch_;
  std::atomic<broker::ConsumerId> consumer_{0};
};

}  // namespace celeriac::extractor
