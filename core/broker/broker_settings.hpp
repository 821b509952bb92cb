#pragma once
// [broker]: the broker every process uses (broker_factory.hpp: MakeBroker).
//
// key          default                                meaning
// broker.url   amqp://guest:guest@127.0.0.1:16672//   AMQP 0-9-1 URL, or memory://

#include <string>

#include "core/config/section.hpp"

namespace celeriac::broker {

struct BrokerSettings {
  std::string url = "amqp://guest:guest@127.0.0.1:16672//";

  config::Section Keys() { return config::Section("broker").Text("url", url); }
};

}  // namespace celeriac::broker
