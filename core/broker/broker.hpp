#pragma once
// Broker: the narrow interface between Celeriac and its message transport (AMQP 0-9-1 through
// rabbitmq-c in production, an in-memory broker for single-process use and unit tests).
//
// Delivery guarantee: at least once. A delivery stays unacknowledged until Ack() or Reject();
// if the connection is lost first, the broker redelivers it (with redelivered = true), so
// handlers must tolerate duplicates (Celery task ids make that possible).
//
// Threading: every method is thread-safe. The DeliveryHandler is called on the broker's own
// consumer thread, one delivery at a time per consumer; it must not block for long (hand work
// to a pool). It gets the delivery as an rvalue it may move from or swap with (the broker
// resets and reuses the object it passed, so swapping in a spent Delivery recycles its
// buffers). Ack/Reject may be called from any thread, any time after the handler saw the
// delivery.
//
// Reconnection: after the transport fails, the broker reconnects with backoff, re-declares what
// was declared and resumes every consumer by itself; deliveries not yet acked when the
// connection died are redelivered by the server, and Ack/Reject of a delivery from the dead
// connection returns a non-retryable error (the message is already back in its queue).

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "core/base/result.hpp"
#include "core/broker/message.hpp"

namespace celeriac::broker {

// Celery's topology for one queue: exchange `name` (direct, durable), queue `name` (durable,
// no arguments) bound with routing key `name`. Exactly Celery's parameters: any difference makes
// Python clients fail with 406 PRECONDITION_FAILED.
struct QueueSpec {
  std::string name;
  std::string exchange;      // default: same as name
  std::string routing_key;   // default: same as name
  bool durable = true;
  bool auto_delete = false;
  bool exclusive = false;
  nlohmann::ordered_json arguments = nlohmann::ordered_json::object();  // e.g. x-expires for rpc reply queues
  bool bind = true;          // rpc reply queues are not bound to any exchange
};

// Celery's rpc:// reply queue for a client oid.
QueueSpec ReplyQueueSpec(const std::string& name, std::chrono::milliseconds expires);

using DeliveryHandler = std::function<void(Delivery&&)>;
using ConsumerId = uint64_t;

struct ConsumeOptions {
  ConsumeOptions() = default;
  ConsumeOptions(std::string queue_name, uint16_t prefetch_count, std::string tag = "")
      : queue(std::move(queue_name)), prefetch(prefetch_count), consumer_tag(std::move(tag)) {}

  std::string queue;
  uint16_t prefetch = 4;   // unacked deliveries the server sends ahead; 0 = unlimited
  std::string consumer_tag;  // "" = server-generated
  // Called on the consumer thread after a burst of deliveries to this consumer: every broker
  // calls it after the last delivery it has at hand, before it waits for more, so a handler
  // that queues deliveries (to hand them to a pool in one go) may rely on it to flush them.
  std::function<void()> on_burst_end;
  // Leave Delivery::properties.headers empty and put the headers table, still in its wire form,
  // in Delivery::raw_headers; DecodeRawHeaders() converts it on whichever thread needs it (so
  // the consumer thread does not). Brokers that hold headers as JSON anyway ignore it.
  bool raw_headers = false;
  // Called on the consumer thread when this consumer's unacked deliveries are lost to it: its
  // channel or connection died, so the server has put them back in the queue (they come again,
  // redelivered, to this or another consumer). Acks of those deliveries now fail. It is called
  // before anything is delivered on the new channel, so a handler that holds or queues
  // deliveries can drop them there and none of them runs twice (Celery drops its reserved and
  // ETA-held requests on connection loss).
  std::function<void()> on_deliveries_lost;
};

// Moves Delivery::raw_headers (if any) into properties.headers. On a malformed table the
// headers stay empty, raw_headers keeps the bytes (for a dead letter) and the error says why.
Status DecodeRawHeaders(Delivery& delivery);

class Broker {
 public:
  virtual ~Broker() = default;

  // Connects (or checks the connection); fails if the broker cannot be reached.
  virtual Status Connect() = 0;

  virtual Status Declare(const QueueSpec& spec) = 0;

  // Publishes and waits until the broker has taken responsibility (publisher confirm for AMQP).
  // A message that reaches no queue is an error, never dropped in silence: NotFound, not
  // retryable, naming the exchange, routing key and the server's reason (AMQP: mandatory
  // publish, basic.return 312 NO_ROUTE; also 404 for an exchange that does not exist).
  // Declare the queue first; a caller for whom a vanished destination is normal (an rpc://
  // reply queue whose client has gone) treats NotFound as "nobody to tell".
  virtual Status Publish(const OutgoingMessage& message) = 0;

  // Publishes every message, then waits until the broker has taken responsibility for all of
  // them (one round of confirms instead of one per message). On error some messages may have
  // been taken and others not: retrying the whole batch is safe (at least once). When some
  // messages reach no queue, the call fails with NotFound as Publish does, and every other
  // message of the batch was delivered (AmqpBroker, MemoryBroker). The default publishes one by
  // one and stops at the first error.
  virtual Status PublishBatch(const std::vector<OutgoingMessage>& messages);

  virtual Result<ConsumerId> Consume(const ConsumeOptions& options, DeliveryHandler handler) = 0;
  // Stops new deliveries to this consumer; unacked ones stay unacked until acked or rejected.
  virtual Status Cancel(ConsumerId consumer) = 0;

  // Changes a consumer's prefetch (ETA tasks held unacked raise it, as Celery does). It takes
  // effect at once and counts the deliveries already unacked, so the consumer never has more
  // than `prefetch` unacked deliveries (channel-wide QoS, as Celery uses on RabbitMQ).
  virtual Status SetPrefetch(ConsumerId consumer, uint16_t prefetch) = 0;

  virtual Status Ack(ConsumerId consumer, uint64_t delivery_tag) = 0;
  // requeue = true puts it back in the queue; false drops it (we dead-letter in Postgres first).
  virtual Status Reject(ConsumerId consumer, uint64_t delivery_tag, bool requeue) = 0;

  // Closes everything; consumers stop, unacked deliveries go back to their queues.
  virtual void Close() = 0;
};

}  // namespace celeriac::broker
