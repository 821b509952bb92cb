#pragma once
// MakeBroker: the Broker for a `broker.url` setting.
//   amqp://...   AmqpBroker (RabbitMQ); not connected yet, call Connect()
//   memory://    MemoryBroker (in-process; for single-process runs and tests)
// amqps:// is recognised but not supported yet; any other scheme is an InvalidArgument error
// naming it.

#include <memory>
#include <string>

#include "core/base/result.hpp"
#include "core/broker/broker.hpp"

namespace celeriac::broker {

Result<std::unique_ptr<Broker>> MakeBroker(const std::string& url);

}  // namespace celeriac::broker
