#include "core/broker/broker_factory.hpp"

#include "core/base/secrets.hpp"
#include "core/broker/amqp_broker.hpp"
#include "core/broker/memory_broker.hpp"

namespace celeriac::broker {

Result<std::unique_ptr<Broker>> MakeBroker(const std::string& url) {
  const size_t colon = url.find("://");
  const std::string scheme = colon == std::string::npos ? "" : url.substr(0, colon);
  if (scheme == "memory") return std::unique_ptr<Broker>(std::make_unique<MemoryBroker>());
  if (scheme == "amqps") {
    return Error(ErrorCode::kInvalidArgument,
                 "broker URL scheme amqps:// (AMQP over TLS) is not supported yet");
  }
  if (scheme == "amqp") {
    AmqpBrokerOptions options;
    options.url = url;
    Result<std::unique_ptr<AmqpBroker>> broker = AmqpBroker::Create(std::move(options));
    if (!broker.ok()) return broker.error();
    return std::unique_ptr<Broker>(std::move(broker).value());
  }
  // The scheme only, and only when it is one: the URL may hold a password.
  return Error(ErrorCode::kInvalidArgument, "unsupported broker URL (" + DescribeUrlScheme(url) +
                                                "): expected amqp:// or memory://");
}

}  // namespace celeriac::broker
