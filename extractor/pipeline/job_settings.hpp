#pragma once
// JobSettings: how the pipeline fetches, retries and limits one job, read once from its
// crawl_configs.config with the schema's defaults (schemas/crawl_config.schema.json is the
// contract for every key and default).

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace celeriac::extractor {

struct JobSettings {
  // request
  std::string method = "GET";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string user_agent;            // empty: the extractor's default
  std::chrono::milliseconds timeout{30'000};
  std::chrono::milliseconds connect_timeout{10'000};
  size_t max_bytes = 10 * 1024 * 1024;
  int max_redirects = 10;
  std::optional<std::string> proxy;
  bool cookies = true;
  bool allow_private_network = false;
  // politeness
  bool robots_txt = true;
  int per_host_concurrency = 2;
  std::chrono::milliseconds min_delay{250};
  std::chrono::milliseconds max_retry_after{120'000};
  // retry
  int max_retries = 3;
  std::chrono::milliseconds backoff_base{1'000};
  std::chrono::milliseconds backoff_max{60'000};
  bool jitter = true;
  // errors
  int module_pause_after = 3;
  std::chrono::milliseconds module_cooldown{60'000};
  int64_t run_abort_after = 10;
  std::optional<double> run_abort_error_rate;
  // limits
  std::optional<int64_t> max_pages;
  std::optional<int> max_depth;
  std::optional<int64_t> max_requests;
  std::chrono::milliseconds watchdog{300'000};

  // Reads a config that already passed schema validation; absent keys take their defaults.
  static JobSettings FromConfig(const nlohmann::json& config);
};

}  // namespace celeriac::extractor
