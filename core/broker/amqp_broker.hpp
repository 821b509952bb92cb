#pragma once
// AmqpBroker: the Broker over AMQP 0-9-1 (RabbitMQ) through rabbitmq-c. A facade over two
// connections, because a rabbitmq-c connection is not thread-safe and publishing must not wait
// behind deliveries:
//  * the publisher connection (amqp_publisher.hpp): one channel in confirm mode, shared by the
//    publishing threads. Publish() waits for the broker's basic.ack (basic.nack -> error);
//    PublishBatch() sends a whole batch, then waits once. Every message is published
//    mandatory: one that no queue takes comes back (basic.return) and fails its call with
//    NotFound, not retryable (see Broker::Publish). On a connection error the publisher
//    reconnects (backoff, bounded by publish_timeout) and re-publishes the unconfirmed
//    messages once.
//  * the consumer connection (amqp_consumer.hpp), owned by one I/O thread: channel 1 for
//    declarations, one channel per consumer. Declare / Consume / Cancel / SetPrefetch are
//    queued to that thread and wait for its answer; Ack / Reject are checked and recorded at
//    once, then sent by the I/O thread, coalesced into one basic.ack(multiple) where the acked
//    tags are contiguous (ack_tracker.hpp).
//
// Delivery guarantee: at least once (see broker.hpp). A delivery tag handed to a handler is
// opaque: the AMQP tag plus the generation of the channel that delivered it, so an Ack of a
// delivery from a channel or connection that has since died fails (NotFound, not retryable)
// instead of acking an unrelated message on the new channel.
//
// Threading: every public method is thread-safe. Handlers run on the I/O thread, one delivery
// at a time; they may call any method but Close(). Heartbeats of both connections are served
// by the I/O thread.
//
// Reconnection: when the consumer connection fails (socket error, heartbeat timeout,
// connection.close, broker restart) the I/O thread logs it, backs off (reconnect_backoff),
// reconnects, re-declares every QueueSpec declared so far in order, and re-opens every
// consumer with its current prefetch. A consumer whose channel alone fails (server-side
// cancel, channel error) is re-opened the same way without touching the others.
//
// Prefetch: channel-wide (basic.qos global=true, as kombu sets it on RabbitMQ 3.x), on the
// consumer's own channel, so SetPrefetch takes effect at once and counts the deliveries already
// unacked (why: amqp_consumer.hpp).
//
// Lost deliveries: when a consumer's channel or the connection dies, its
// ConsumeOptions::on_deliveries_lost runs on the I/O thread before the consumer is re-opened.
//
// Shutdown: Close() flushes the acks already requested, closes the consumer connection (the
// server requeues every unacked delivery), joins the I/O thread, then closes the publisher
// connection; the destructor calls it.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/base/backoff.hpp"
#include "core/broker/amqp_url.hpp"  // AmqpUrl, ParseAmqpUrl (part of this interface)
#include "core/broker/broker.hpp"

namespace celeriac::broker {

// Settings of one AmqpBroker.
struct AmqpBrokerOptions {
  // amqp://user:password@host:port/vhost. Celery's "//" path means vhost "/"; so do "/" and
  // no path at all (kombu's reading). Query parameter heartbeat=<seconds> overrides heartbeat.
  std::string url = "amqp://guest:guest@127.0.0.1:5672//";
  std::chrono::seconds heartbeat{30};  // 0 disables heartbeats
  // Client property connection_name, as rabbitmqctl list_connections and the management UI
  // show it; the two connections get " publisher" and " consumer" appended.
  std::string connection_name = "celeriac";
  std::chrono::milliseconds connect_timeout{5000};    // TCP connect plus the AMQP handshake
  std::chrono::milliseconds rpc_timeout{10000};       // each declare/consume/qos/cancel, and how
                                                      // long a call waits for a reconnect
  std::chrono::milliseconds publish_timeout{30000};   // a whole Publish/PublishBatch, reconnect
                                                      // and re-publish included
  BackoffPolicy reconnect_backoff{std::chrono::milliseconds(100), std::chrono::milliseconds(5000),
                                  2.0, true};
};

class AmqpBroker final : public Broker {
 public:
  // Validates the options; connects lazily (Connect() or the first call that needs it).
  static Result<std::unique_ptr<AmqpBroker>> Create(AmqpBrokerOptions options);
  ~AmqpBroker() override;
  AmqpBroker(const AmqpBroker&) = delete;
  AmqpBroker& operator=(const AmqpBroker&) = delete;

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

  // queue.delete (even if in use or not empty), and forgets its QueueSpec. For tests and ops.
  Status DeleteQueue(const std::string& name);

  // Counts consumer connections established so far: 0 before the first, +1 per reconnect.
  uint64_t connection_generation() const;
  // connection_name of the consumer connection, as the server sees it.
  std::string consumer_connection_name() const;
  std::string publisher_connection_name() const;

 private:
  struct Impl;
  explicit AmqpBroker(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace celeriac::broker
