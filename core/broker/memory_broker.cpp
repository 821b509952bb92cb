#include "core/broker/memory_broker.hpp"

#include <exception>
#include <optional>
#include <vector>
#include <utility>

#include "core/log/log.hpp"

namespace celeriac::broker {
namespace {

Error ClosedError() {
  return Error(ErrorCode::kUnavailable, "memory broker is closed", /*retryable=*/false);
}

std::string ExchangeOf(const QueueSpec& spec) {
  return spec.exchange.empty() ? spec.name : spec.exchange;
}

std::string RoutingKeyOf(const QueueSpec& spec) {
  return spec.routing_key.empty() ? spec.name : spec.routing_key;
}

}  // namespace

MemoryBroker::MemoryBroker() : dispatcher_([this] { DispatchLoop(); }) {}

MemoryBroker::~MemoryBroker() { Close(); }

Status MemoryBroker::Connect() {
  std::lock_guard lock(mutex_);
  if (closed_) return ClosedError();
  return Ok();
}

Status MemoryBroker::Declare(const QueueSpec& spec) {
  if (spec.name.empty()) {
    return Error(ErrorCode::kInvalidArgument, "queue.declare: server-named queues are not supported");
  }
  std::lock_guard lock(mutex_);
  if (closed_) return ClosedError();
  auto it = queues_.find(spec.name);
  if (it != queues_.end()) {
    const QueueSpec& have = it->second.spec;
    const char* differs = nullptr;
    if (have.durable != spec.durable) differs = "durable";
    else if (have.auto_delete != spec.auto_delete) differs = "auto_delete";
    else if (have.exclusive != spec.exclusive) differs = "exclusive";
    else if (have.arguments != spec.arguments) differs = "arguments";
    if (differs != nullptr) {
      return Error(ErrorCode::kInvalidArgument,
                   "queue.declare " + spec.name + ": 406 PRECONDITION_FAILED - inequivalent " +
                       differs + " for queue '" + spec.name + "' (declared with " +
                       have.arguments.dump() + ")");
    }
  } else {
    queues_[spec.name].spec = spec;
  }
  if (spec.bind) exchanges_[ExchangeOf(spec)].emplace(RoutingKeyOf(spec), spec.name);
  return Ok();
}

Status MemoryBroker::Publish(const OutgoingMessage& message) {
  std::lock_guard lock(mutex_);
  if (closed_) return ClosedError();
  std::vector<Queue*> targets;
  if (message.exchange.empty()) {
    auto it = queues_.find(message.routing_key);
    if (it != queues_.end()) targets.push_back(&it->second);
  } else {
    auto ex = exchanges_.find(message.exchange);
    if (ex == exchanges_.end()) {
      return Error(ErrorCode::kNotFound, "basic.publish: 404 NOT_FOUND - no exchange '" +
                                             message.exchange + "'");
    }
    for (const auto& [key, queue] : ex->second) {
      if (key == message.routing_key) targets.push_back(&queues_.at(queue));
    }
  }
  if (targets.empty()) {
    return Error(ErrorCode::kNotFound,
                 "message returned unroutable (exchange '" + message.exchange +
                     "' routing key '" + message.routing_key + "': 312 NO_ROUTE)",
                 /*retryable=*/false);
  }
  for (Queue* q : targets) {
    q->ready.push_back(Stored{message.exchange, message.routing_key, message.properties,
                              message.body, false});
  }
  wake_.notify_all();
  return Ok();
}

Status MemoryBroker::PublishBatch(const std::vector<OutgoingMessage>& messages) {
  // As AmqpBroker: an unroutable message does not stop the others.
  std::optional<Error> unroutable;
  for (const OutgoingMessage& message : messages) {
    Status s = Publish(message);
    if (s.ok()) continue;
    if (s.error().code() != ErrorCode::kNotFound) return s;
    if (!unroutable) unroutable = s.error();
  }
  if (unroutable) return *unroutable;
  return Ok();
}

Result<ConsumerId> MemoryBroker::Consume(const ConsumeOptions& options, DeliveryHandler handler) {
  if (!handler) return Error(ErrorCode::kInvalidArgument, "basic.consume: no handler");
  std::lock_guard lock(mutex_);
  if (closed_) return ClosedError();
  if (queues_.find(options.queue) == queues_.end()) {
    return Error(ErrorCode::kNotFound,
                 "basic.consume " + options.queue + ": 404 NOT_FOUND - no queue '" +
                     options.queue + "'");
  }
  const ConsumerId id = next_consumer_++;
  Consumer& c = consumers_[id];
  c.queue = options.queue;
  c.prefetch = options.prefetch;
  if (options.on_burst_end) {
    // Deliveries come one at a time here: every one is a burst of its own.
    handler = [inner = std::move(handler), end = options.on_burst_end](Delivery&& d) {
      try {
        inner(std::move(d));
      } catch (...) {
        end();
        throw;
      }
      end();
    };
  }
  c.handler = std::make_shared<DeliveryHandler>(std::move(handler));
  if (options.on_deliveries_lost)
    c.on_lost = std::make_shared<std::function<void()>>(options.on_deliveries_lost);
  wake_.notify_all();
  return id;
}

Status MemoryBroker::Cancel(ConsumerId consumer) {
  std::lock_guard lock(mutex_);
  if (closed_) return ClosedError();
  auto it = consumers_.find(consumer);
  if (it == consumers_.end()) {
    return Error(ErrorCode::kNotFound, "unknown consumer " + std::to_string(consumer), false);
  }
  it->second.cancelled = true;
  if (it->second.unacked.empty()) consumers_.erase(it);
  return Ok();
}

Status MemoryBroker::SetPrefetch(ConsumerId consumer, uint16_t prefetch) {
  std::lock_guard lock(mutex_);
  if (closed_) return ClosedError();
  auto it = consumers_.find(consumer);
  if (it == consumers_.end() || it->second.cancelled) {
    return Error(ErrorCode::kNotFound, "unknown consumer " + std::to_string(consumer), false);
  }
  it->second.prefetch = prefetch;
  wake_.notify_all();
  return Ok();
}

Status MemoryBroker::Ack(ConsumerId consumer, uint64_t delivery_tag) {
  return Settle(consumer, delivery_tag, /*ack=*/true, /*requeue=*/false);
}

Status MemoryBroker::Reject(ConsumerId consumer, uint64_t delivery_tag, bool requeue) {
  return Settle(consumer, delivery_tag, /*ack=*/false, requeue);
}

Status MemoryBroker::Settle(ConsumerId consumer, uint64_t delivery_tag, bool ack, bool requeue) {
  std::lock_guard lock(mutex_);
  if (closed_) {
    return Error(ErrorCode::kNotFound,
                 "delivery " + std::to_string(delivery_tag) +
                     " was requeued when the broker closed",
                 false);
  }
  auto it = consumers_.find(consumer);
  if (it == consumers_.end()) {
    return Error(ErrorCode::kNotFound, "unknown consumer " + std::to_string(consumer), false);
  }
  Consumer& c = it->second;
  auto msg = c.unacked.find(delivery_tag);
  if (msg == c.unacked.end()) {
    return Error(ErrorCode::kNotFound,
                 "unknown delivery tag " + std::to_string(delivery_tag) +
                     " (already acked or rejected?)",
                 false);
  }
  if (!ack && requeue) {
    msg->second.redelivered = true;
    queues_.at(c.queue).ready.push_front(std::move(msg->second));
  }
  c.unacked.erase(msg);
  if (c.cancelled && c.unacked.empty()) consumers_.erase(it);
  wake_.notify_all();
  return Ok();
}

void MemoryBroker::RequeueUnacked(Consumer& consumer) {
  auto& ready = queues_.at(consumer.queue).ready;
  // Newest first, so that the oldest ends up at the head, as RabbitMQ requeues them.
  for (auto it = consumer.unacked.rbegin(); it != consumer.unacked.rend(); ++it) {
    it->second.redelivered = true;
    ready.push_front(std::move(it->second));
  }
  consumer.unacked.clear();
}

void MemoryBroker::Close() {
  {
    std::lock_guard lock(mutex_);
    if (!closed_) {
      closed_ = true;
      for (auto& [id, consumer] : consumers_) RequeueUnacked(consumer);
      consumers_.clear();
    }
    wake_.notify_all();
  }
  if (dispatcher_.joinable() && dispatcher_.get_id() != std::this_thread::get_id()) {
    dispatcher_.join();
  }
}

size_t MemoryBroker::Unacked(const std::string& queue) const {
  std::lock_guard lock(mutex_);
  size_t n = 0;
  for (const auto& [id, c] : consumers_)
    if (c.queue == queue) n += c.unacked.size();
  return n;
}

void MemoryBroker::SimulateConnectionLoss() {
  std::lock_guard lock(mutex_);
  for (auto it = consumers_.begin(); it != consumers_.end();) {
    RequeueUnacked(it->second);
    if (it->second.cancelled) {
      it = consumers_.erase(it);
      continue;
    }
    it->second.lost = it->second.on_lost != nullptr;
    ++it;
  }
  wake_.notify_all();
}

size_t MemoryBroker::QueueDepth(const std::string& queue) const {
  std::lock_guard lock(mutex_);
  auto it = queues_.find(queue);
  return it == queues_.end() ? 0 : it->second.ready.size();
}

ConsumerId MemoryBroker::PickConsumer() {
  if (consumers_.empty()) return 0;
  // Round robin: start after the consumer served last.
  auto start = consumers_.upper_bound(last_served_);
  for (int pass = 0; pass < 2; ++pass) {
    auto begin = pass == 0 ? start : consumers_.begin();
    auto end = pass == 0 ? consumers_.end() : start;
    for (auto it = begin; it != end; ++it) {
      const Consumer& c = it->second;
      if (c.cancelled) continue;
      if (c.prefetch != 0 && c.unacked.size() >= c.prefetch) continue;
      if (queues_.at(c.queue).ready.empty()) continue;
      return it->first;
    }
  }
  return 0;
}

void MemoryBroker::DispatchLoop() {
  std::unique_lock lock(mutex_);
  while (!closed_) {
    // Lost deliveries are announced before anything else is delivered.
    std::vector<std::shared_ptr<std::function<void()>>> lost;
    for (auto& [cid, c] : consumers_) {
      if (!c.lost) continue;
      c.lost = false;
      lost.push_back(c.on_lost);
    }
    if (!lost.empty()) {
      lock.unlock();
      for (const auto& fn : lost) (*fn)();
      lock.lock();
      continue;
    }
    const ConsumerId id = PickConsumer();
    if (id == 0) {
      wake_.wait(lock);
      continue;
    }
    last_served_ = id;
    Consumer& c = consumers_.at(id);
    Queue& q = queues_.at(c.queue);
    Stored stored = std::move(q.ready.front());
    q.ready.pop_front();
    const uint64_t tag = next_tag_++;
    Delivery delivery;
    delivery.delivery_tag = tag;
    delivery.redelivered = stored.redelivered;
    delivery.exchange = stored.exchange;
    delivery.routing_key = stored.routing_key;
    delivery.queue = c.queue;
    delivery.properties = stored.properties;
    delivery.body = stored.body;
    std::shared_ptr<DeliveryHandler> handler = c.handler;
    c.unacked.emplace(tag, std::move(stored));
    lock.unlock();
    try {
      (*handler)(std::move(delivery));
    } catch (const std::exception& e) {
      log::Get("broker")->error("memory broker: delivery handler threw: {}", e.what());
    } catch (...) {
      log::Get("broker")->error("memory broker: delivery handler threw a non-exception");
    }
    lock.lock();
  }
}

}  // namespace celeriac::broker
