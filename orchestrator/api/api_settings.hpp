#pragma once
// [api]: the admin HTTP API (admin_api.hpp), read by the orchestrator.
//
// key                       default                                meaning
// api.listen                127.0.0.1:18080                        admin API bind address
// api.token                 (empty: admin routes refuse everyone)  bearer token for admin routes
// api.threads               8                                      connections served at once
// api.max_queued            64                                     connections waiting for a
//                                                                  thread; beyond threads +
//                                                                  this, a connection gets 503
//                                                                  at once and is closed
// api.read_timeout_s        10                                     a request (line, headers,
//                                                                  body) must arrive whole within
//                                                                  this of its first byte (408)
// api.write_timeout_s       10                                     an answer must be written
//                                                                  within this
// api.keep_alive_timeout_s  5                                      idle time allowed before a
//                                                                  connection's (next) request
// api.max_body_bytes        1048576                                larger request bodies get 413

#include <cstdint>
#include <string>

#include "core/config/section.hpp"

namespace celeriac::orchestrator::api {

struct ApiSettings {
  std::string listen = "127.0.0.1:18080";
  std::string token;
  int64_t threads = 8;
  int64_t max_queued = 64;
  int64_t read_timeout_s = 10;
  int64_t write_timeout_s = 10;
  int64_t keep_alive_timeout_s = 5;
  int64_t max_body_bytes = 1 << 20;

  config::Section Keys() {
    return config::Section("api")
        .Text("listen", listen)
        .Secret("token", token)
        .Int("threads", threads, 1, 256)
        .Int("max_queued", max_queued, 0, 100'000)
        .Int("read_timeout_s", read_timeout_s, 1, 3600)
        .Int("write_timeout_s", write_timeout_s, 1, 3600)
        .Int("keep_alive_timeout_s", keep_alive_timeout_s, 1, 3600)
        .Int("max_body_bytes", max_body_bytes, 1024, int64_t{1} << 30);
  }
};

}  // namespace celeriac::orchestrator::api
