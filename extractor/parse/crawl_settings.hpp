#pragma once
// CrawlSettings: the fetch-side settings of a crawl_configs.config document, typed, with the
// schema's defaults filled in, so the pipeline never reads raw JSON. Built by CompileConfig
// (config_module.hpp) after schema validation; FromConfig assumes a schema-valid document.
//
// key (JSON path)                       default      meaning
// user_agent                            nullopt      identity for robots.txt and requests;
//                                                    nullopt = the extractor's configured one
// request.method                        "GET"        GET | POST, for every page request
// request.headers                       {}           extra headers (win over user agents)
// request.body                          ""           POST body as sent (an object is dumped
//                                                    as JSON and body_is_json set)
// request.timeout_ms                    30000
// request.connect_timeout_ms            10000
// request.max_bytes                     10485760     body cap after decompression
// request.max_redirects                 10
// request.user_agent                    nullopt      page requests only (not robots.txt)
// request.proxy                         nullopt      proxy URL; nullopt = direct
// request.cookies                       true         a cookie jar per job
// allow_private_network                 false
// politeness.robots_txt                 true
// politeness.per_host_concurrency       2
// politeness.min_delay_ms               250
// politeness.max_retry_after_ms         120000
// retry.max_retries                     3
// retry.backoff_base_ms                 1000
// retry.backoff_max_ms                  60000
// retry.jitter                          true
// errors.module_pause_after             3
// errors.module_cooldown_ms             60000
// errors.run_abort_after                10
// errors.run_abort_error_rate           nullopt      off unless set
// limits.max_pages/max_depth/max_requests nullopt    unlimited unless set
// limits.watchdog_ms                    300000

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace celeriac::extractor::parse {

struct RequestSettings {
  std::string method = "GET";
  std::map<std::string, std::string> headers;
  std::string body;
  bool body_is_json = false;  // body came from a JSON object: send Content-Type application/json
  std::chrono::milliseconds timeout{30000};
  std::chrono::milliseconds connect_timeout{10000};
  int64_t max_bytes = 10485760;
  int max_redirects = 10;
  std::optional<std::string> user_agent;
  std::optional<std::string> proxy;
  bool cookies = true;
};

struct PolitenessSettings {
  bool robots_txt = true;
  int per_host_concurrency = 2;
  std::chrono::milliseconds min_delay{250};
  std::chrono::milliseconds max_retry_after{120000};
};

struct RetrySettings {
  int max_retries = 3;
  std::chrono::milliseconds backoff_base{1000};
  std::chrono::milliseconds backoff_max{60000};
  bool jitter = true;
};

struct ErrorSettings {
  int module_pause_after = 3;
  std::chrono::milliseconds module_cooldown{60000};
  int64_t run_abort_after = 10;
  std::optional<double> run_abort_error_rate;
};

struct LimitSettings {
  std::optional<int64_t> max_pages;
  std::optional<int64_t> max_depth;
  std::optional<int64_t> max_requests;
  std::chrono::milliseconds watchdog{300000};
};

struct CrawlSettings {
  std::optional<std::string> user_agent;
  bool allow_private_network = false;
  RequestSettings request;
  PolitenessSettings politeness;
  RetrySettings retry;
  ErrorSettings errors;
  LimitSettings limits;

  // From a schema-valid config document (absent keys take the defaults above).
  static CrawlSettings FromConfig(const nlohmann::json& config);
};

}  // namespace celeriac::extractor::parse
