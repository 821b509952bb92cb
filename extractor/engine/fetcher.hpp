#pragma once
// Fetcher: the pipeline's edge to HTTP. The real one wraps core/http's libcurl multi client
// (extractor/pipeline/http_fetcher.hpp); tests steer a fake.
//
// Threading: Fetch is called on the loop thread; `done` runs later on the loop thread, exactly
// once, never from inside Fetch.

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/base/result.hpp"

namespace celeriac::extractor {

struct FetchRequest {
  std::string url;
  std::string method = "GET";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string user_agent;
  std::chrono::milliseconds timeout{30'000};
  std::chrono::milliseconds connect_timeout{10'000};
  size_t max_bytes = 10 * 1024 * 1024;
  int max_redirects = 10;
  std::optional<std::string> proxy;
  bool allow_private_network = false;
  bool cookies = true;
  int64_t cookie_scope = 0;  // requests with the same scope share a cookie jar (the job id)
};

struct FetchResponse {
  int status = 0;
  std::string final_url;
  std::string content_type;
  std::string body;
  uint64_t bytes = 0;                       // body bytes received
  std::optional<std::string> retry_after;   // the Retry-After header, as sent
};


class Fetcher {
 public:
  // On failure, `failure_kind` is a short machine name (dns, connect, timeout, tls, too_large,
  // redirects, redirect_loop, blocked_address, protocol, ...) for error classes and metrics.
  using Done = std::function<void(Result<FetchResponse>, std::string failure_kind)>;
  virtual ~Fetcher() = default;
  virtual void Fetch(FetchRequest request, Done done) = 0;
  // The job ended: drop its cookie jar.
  virtual void ForgetScope(int64_t /*scope*/) {}
  virtual size_t in_flight() const = 0;
};

}  // namespace celeriac::extractor
