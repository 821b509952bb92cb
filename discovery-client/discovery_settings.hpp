#pragma once
// [discovery]: where the Discovery service is (discovery_client.hpp), read by the orchestrator.
//
// key                    default                  meaning
// discovery.url          http://127.0.0.1:18090   Discovery service base URL
// discovery.timeout_ms   10000                    per POST /discover

#include <cstdint>
#include <string>

#include "core/config/section.hpp"

namespace celeriac::discovery {

struct DiscoverySettings {
  std::string url = "http://127.0.0.1:18090";
  int64_t timeout_ms = 10'000;

  config::Section Keys() {
    return config::Section("discovery").Text("url", url).Int("timeout_ms", timeout_ms, 1,
                                                             3'600'000);
  }
};

}  // namespace celeriac::discovery
