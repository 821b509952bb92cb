#include "core/broker/amqp_broker.hpp"

#include <utility>

#include "core/broker/amqp_connection.hpp"
#include "core/broker/amqp_consumer.hpp"
#include "core/broker/amqp_publisher.hpp"
#include "core/log/log.hpp"

namespace celeriac::broker {
namespace {

AmqpConnectionSettings ConnectionSettings(const AmqpBrokerOptions& options, const AmqpUrl& url,
                                          const std::string& name) {
  AmqpConnectionSettings settings;
  settings.url = url;
  // ?heartbeat= in the URL wins over the option.
  settings.heartbeat_s = static_cast<int>(url.heartbeat.count() >= 0 ? url.heartbeat.count()
                                                                     : options.heartbeat.count());
  settings.name = name;
  settings.connect_timeout = options.connect_timeout;
  settings.rpc_timeout = options.rpc_timeout;
  return settings;
}

}  // namespace

// Members in shutdown order, reversed: the consumer's I/O thread serves the publisher's
// heartbeats, so it stops (and is destroyed) first.
struct AmqpBroker::Impl {
  Impl(const AmqpBrokerOptions& options, const AmqpUrl& url)
      : consumer_name(options.connection_name + " consumer"),
        publisher_name(options.connection_name + " publisher"),
        connect_timeout(options.connect_timeout),
        log(log::Get("broker")),
        publisher(ConnectionSettings(options, url, publisher_name), options.publish_timeout,
                  options.reconnect_backoff, log),
        consumer(ConnectionSettings(options, url, consumer_name), options.reconnect_backoff, log,
                 [this] { publisher.Service(); }) {}

  const std::string consumer_name;
  const std::string publisher_name;
  const std::chrono::milliseconds connect_timeout;
  std::shared_ptr<spdlog::logger> log;
  AmqpPublisher publisher;
  AmqpConsumer consumer;
};

Result<std::unique_ptr<AmqpBroker>> AmqpBroker::Create(AmqpBrokerOptions options) {
  Result<AmqpUrl> url = ParseAmqpUrl(options.url);
  if (!url.ok()) return url.error();
  if (url->tls) {
    return Error(ErrorCode::kInvalidArgument, "amqps:// (TLS) is not supported yet");
  }
  if (options.heartbeat.count() < 0 || options.heartbeat.count() > 65535) {
    return Error(ErrorCode::kInvalidArgument, "AMQP heartbeat must be 0..65535 seconds");
  }
  auto impl = std::make_unique<Impl>(options, *url);
  return std::unique_ptr<AmqpBroker>(new AmqpBroker(std::move(impl)));
}

AmqpBroker::AmqpBroker(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

AmqpBroker::~AmqpBroker() { Close(); }

Status AmqpBroker::Connect() {
  Status s = impl_->consumer.Connect();
  if (!s.ok()) return s;
  return impl_->publisher.Connect(SteadyClock::now() + impl_->connect_timeout);
}

Status AmqpBroker::Declare(const QueueSpec& spec) { return impl_->consumer.Declare(spec); }

Status AmqpBroker::DeleteQueue(const std::string& name) {
  return impl_->consumer.DeleteQueue(name);
}

Status AmqpBroker::Publish(const OutgoingMessage& message) {
  Status s = impl_->consumer.Start();  // its I/O thread serves the publisher's heartbeats
  if (!s.ok()) return s;
  return impl_->publisher.Publish(&message, 1);
}

Status AmqpBroker::PublishBatch(const std::vector<OutgoingMessage>& messages) {
  Status s = impl_->consumer.Start();
  if (!s.ok()) return s;
  return impl_->publisher.Publish(messages.data(), messages.size());
}

Result<ConsumerId> AmqpBroker::Consume(const ConsumeOptions& options, DeliveryHandler handler) {
  return impl_->consumer.Consume(options, std::move(handler));
}

Status AmqpBroker::Cancel(ConsumerId consumer) { return impl_->consumer.Cancel(consumer); }

Status AmqpBroker::SetPrefetch(ConsumerId consumer, uint16_t prefetch) {
  return impl_->consumer.SetPrefetch(consumer, prefetch);
}

Status AmqpBroker::Ack(ConsumerId consumer, uint64_t delivery_tag) {
  return impl_->consumer.Ack(consumer, delivery_tag);
}

Status AmqpBroker::Reject(ConsumerId consumer, uint64_t delivery_tag, bool requeue) {
  return impl_->consumer.Reject(consumer, delivery_tag, requeue);
}

void AmqpBroker::Close() {
  impl_->consumer.Close();   // flushes requested acks, closes its connection, joins the thread
  impl_->publisher.Close();
}

uint64_t AmqpBroker::connection_generation() const { return impl_->consumer.generation(); }

std::string AmqpBroker::consumer_connection_name() const { return impl_->consumer_name; }
std::string AmqpBroker::publisher_connection_name() const { return impl_->publisher_name; }

}  // namespace celeriac::broker
