#pragma once
// DiscoveryClient: asks the Discovery service to analyse a data source for a theme.
//
//   POST {discovery.url}/discover  {"data_source_id": 7, "theme_name": "pricing"}
//   Idempotency-Key: <the Celery task id>
//
// The service answers 2xx when it has accepted the analysis (it runs on its own and writes
// raw_analysis_results; callers do not wait). The error of a failed call says whether a retry
// can help: connection failures, timeouts, 429 and 5xx can; other 4xx and a 2xx that is not a
// JSON object cannot help by retrying the same request.
//
// Threading: HttpDiscoveryClient is thread-safe; each call opens its own connection (calls are
// rare: one per trigger_site_analysis).

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "core/base/result.hpp"

namespace celeriac::discovery {

struct DiscoverRequest {
  int64_t data_source_id = 0;
  std::string theme_name;
  // Sent as the Idempotency-Key header when set (trigger_site_analysis sends its Celery task
  // id): a call repeated for the same task (a redelivery after a crash) can be recognised by
  // the service as the same request.
  std::string idempotency_key;
  // Bounds the whole call when set (the caller's deadline, e.g. a task's hard time limit).
  std::optional<std::chrono::milliseconds> deadline;
};

struct DiscoverResponse {
  int status = 0;                          // HTTP status, 2xx
  std::optional<std::string> analysis_id;  // "analysis_id" or "id" in the answer, if given
  nlohmann::json body;                     // the answer as the service sent it
};

class DiscoveryClient {
 public:
  virtual ~DiscoveryClient() = default;
  virtual Result<DiscoverResponse> Discover(const DiscoverRequest& request) = 0;
};

struct HttpDiscoveryOptions {
  std::string base_url;  // "http://host:port" with an optional path prefix
  std::chrono::milliseconds timeout{10'000};          // read and write, each
  std::chrono::milliseconds connect_timeout{3'000};
};

class HttpDiscoveryClient final : public DiscoveryClient {
 public:
  explicit HttpDiscoveryClient(HttpDiscoveryOptions options);
  Result<DiscoverResponse> Discover(const DiscoverRequest& request) override;

 private:
  HttpDiscoveryOptions options_;
  std::string scheme_host_port_;
  std::string path_prefix_;
};

}  // namespace celeriac::discovery
