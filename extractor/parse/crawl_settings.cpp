#include "extractor/parse/crawl_settings.hpp"

namespace celeriac::extractor::parse {
namespace {

using nlohmann::json;

const json& Section(const json& config, const char* key) {
  static const json kEmpty = json::object();
  auto it = config.find(key);
  return it != config.end() && it->is_object() ? *it : kEmpty;
}

template <typename T>
void Read(const json& section, const char* key, T* out) {
  auto it = section.find(key);
  if (it != section.end() && !it->is_null()) *out = it->get<T>();
}

void ReadMs(const json& section, const char* key, std::chrono::milliseconds* out) {
  auto it = section.find(key);
  if (it != section.end() && it->is_number()) *out = std::chrono::milliseconds(it->get<int64_t>());
}

template <typename T>
void ReadOptional(const json& section, const char* key, std::optional<T>* out) {
  auto it = section.find(key);
  if (it != section.end() && !it->is_null()) *out = it->get<T>();
}

}  // namespace

CrawlSettings CrawlSettings::FromConfig(const json& config) {
  CrawlSettings s;
  ReadOptional(config, "user_agent", &s.user_agent);
  Read(config, "allow_private_network", &s.allow_private_network);

  const json& request = Section(config, "request");
  Read(request, "method", &s.request.method);
  if (auto it = request.find("headers"); it != request.end() && it->is_object()) {
    for (const auto& [name, value] : it->items()) {
      if (value.is_string()) s.request.headers[name] = value.get<std::string>();
    }
  }
  if (auto it = request.find("body"); it != request.end()) {
    if (it->is_string()) {
      s.request.body = it->get<std::string>();
    } else if (it->is_object()) {
      s.request.body = it->dump();
      s.request.body_is_json = true;
    }
  }
  ReadMs(request, "timeout_ms", &s.request.timeout);
  ReadMs(request, "connect_timeout_ms", &s.request.connect_timeout);
  Read(request, "max_bytes", &s.request.max_bytes);
  Read(request, "max_redirects", &s.request.max_redirects);
  ReadOptional(request, "user_agent", &s.request.user_agent);
  ReadOptional(request, "proxy", &s.request.proxy);
  Read(request, "cookies", &s.request.cookies);

  const json& politeness = Section(config, "politeness");
  Read(politeness, "robots_txt", &s.politeness.robots_txt);
  Read(politeness, "per_host_concurrency", &s.politeness.per_host_concurrency);
  ReadMs(politeness, "min_delay_ms", &s.politeness.min_delay);
  ReadMs(politeness, "max_retry_after_ms", &s.politeness.max_retry_after);

  const json& retry = Section(config, "retry");
  Read(retry, "max_retries", &s.retry.max_retries);
  ReadMs(retry, "backoff_base_ms", &s.retry.backoff_base);
  ReadMs(retry, "backoff_max_ms", &s.retry.backoff_max);
  Read(retry, "jitter", &s.retry.jitter);

  const json& errors = Section(config, "errors");
  Read(errors, "module_pause_after", &s.errors.module_pause_after);
  ReadMs(errors, "module_cooldown_ms", &s.errors.module_cooldown);
  Read(errors, "run_abort_after", &s.errors.run_abort_after);
  ReadOptional(errors, "run_abort_error_rate", &s.errors.run_abort_error_rate);

  const json& limits = Section(config, "limits");
  ReadOptional(limits, "max_pages", &s.limits.max_pages);
  ReadOptional(limits, "max_depth", &s.limits.max_depth);
  ReadOptional(limits, "max_requests", &s.limits.max_requests);
  ReadMs(limits, "watchdog_ms", &s.limits.watchdog);
  return s;
}

}  // namespace celeriac::extractor::parse
