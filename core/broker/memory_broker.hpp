#pragma once
// MemoryBroker: an in-process Broker (`broker.url = "memory://"`) for single-process use and
// unit tests. Nothing survives the process.
//
// Topology follows AMQP's: Declare creates the queue and, when spec.bind, a direct exchange and
// the binding; publishing to exchange "" routes by queue name, to a named exchange through its
// bindings; a message that matches no queue fails its Publish with NotFound, as AmqpBroker's
// mandatory publish does (PublishBatch delivers the others and then fails). Declaring
// an existing queue with different parameters fails like RabbitMQ's 406 PRECONDITION_FAILED.
//
// Delivery: each consumer gets at most `prefetch` unacked deliveries (0 = unlimited), in queue
// order, round-robin between the consumers of a queue. Ack removes the message; Reject with
// requeue puts it back at the head of its queue with redelivered = true; without, drops it.
// Cancel stops deliveries, its unacked ones can still be acked. Close() puts every unacked
// delivery back at the head of its queue (redelivered) and stops the dispatch thread.
//
// Threading: every method is thread-safe. Handlers run on the broker's own dispatch thread
// (never the publisher's), one delivery at a time; they may call Ack/Reject/Publish/Cancel/
// SetPrefetch, but not Close. An exception escaping a handler is logged and swallowed.

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "core/broker/broker.hpp"

namespace celeriac::broker {

class MemoryBroker final : public Broker {
 public:
  MemoryBroker();
  ~MemoryBroker() override;
  MemoryBroker(const MemoryBroker&) = delete;
  MemoryBroker& operator=(const MemoryBroker&) = delete;

  Status Connect() override;
  Status Declare(const QueueSpec& spec) override;
  Status Publish(const OutgoingMessage& message) override;
  Status PublishBatch(const std::vector<OutgoingMessage>& messages) override;
  Result<ConsumerId> Consume(const ConsumeOptions& options, DeliveryHandler handler) override;
  Status Cancel(ConsumerId consumer) override;
  Status SetPrefetch(ConsumerId consumer, uint16_t prefetch) override;
  Status Ack(ConsumerId consumer, uint64_t delivery_tag) override;
  Status Reject(ConsumerId consumer, uint64_t delivery_tag, bool requeue) override;
  void Close() override;

  // Ready (not unacked) messages in `queue`; 0 for an unknown queue. For tests and ops.
  size_t QueueDepth(const std::string& queue) const;
  // Unacked deliveries of every consumer of `queue`. For tests.
  size_t Unacked(const std::string& queue) const;

  // What a lost AMQP connection does, for tests: every consumer's unacked deliveries go back to
  // the head of their queues (redelivered), acks of them fail from now on, and each consumer's
  // on_deliveries_lost runs on the dispatch thread before it gets another delivery.
  void SimulateConnectionLoss();

 private:
  struct Stored {
    std::string exchange;
    std::string routing_key;
    Properties properties;
    std::string body;
    bool redelivered = false;
  };
  struct Queue {
    QueueSpec spec;
    std::deque<Stored> ready;
  };
  struct Consumer {
    std::string queue;
    uint16_t prefetch = 0;
    std::shared_ptr<DeliveryHandler> handler;
    std::shared_ptr<std::function<void()>> on_lost;  // null if none
    bool lost = false;                               // on_lost still to be called
    bool cancelled = false;
    std::map<uint64_t, Stored> unacked;  // by delivery tag
  };

  void DispatchLoop();
  // Under mutex_: the next consumer with a message and room for it, or 0.
  ConsumerId PickConsumer();
  Status Settle(ConsumerId consumer, uint64_t delivery_tag, bool ack, bool requeue);
  void RequeueUnacked(Consumer& consumer);

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool closed_ = false;
  std::map<std::string, Queue> queues_;
  // exchange -> (routing key, queue) bindings
  std::map<std::string, std::set<std::pair<std::string, std::string>>> exchanges_;
  std::map<ConsumerId, Consumer> consumers_;
  ConsumerId next_consumer_ = 1;
  ConsumerId last_served_ = 0;
  uint64_t next_tag_ = 1;
  std::thread dispatcher_;
};

}  // namespace celeriac::broker
