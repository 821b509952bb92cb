#include "extractor/pipeline/job_settings.hpp"

namespace celeriac::extractor {
namespace {

using Json = nlohmann::json;
using std::chrono::milliseconds;

const Json& Section(const Json& config, const char* name) {
  static const Json kEmpty = Json::object();
  const auto it = config.find(name);
  return it != config.end() && it->is_object() ? *it : kEmpty;
}

template <typename T>
void Read(const Json& section, const char* key, T& out) {
  const auto it = section.find(key);
  if (it != section.end() && !it->is_null()) out = it->get<T>();
}

void ReadMs(const Json& section, const char* key, milliseconds& out) {
  const auto it = section.find(key);
  if (it != section.end() && it->is_number_integer()) out = milliseconds(it->get<int64_t>());
}

}  // namespace

JobSettings JobSettings::FromConfig(const Json& config) {
  JobSettings s;
  Read(config, "user_agent", s.user_agent);
  Read(config, "allow_private_network", s.allow_private_network);

  const Json& request = Section(config, "request");
  Read(request, "method", s.method);
  if (const auto h = request.find("headers"); h != request.end() && h->is_object())
    for (const auto& [k, v] : h->items()) s.headers.emplace_back(k, v.get<std::string>());
  if (const auto ua = request.find("user_agent"); ua != request.end() && ua->is_string())
    s.user_agent = ua->get<std::string>();
  ReadMs(request, "timeout_ms", s.timeout);
  ReadMs(request, "connect_timeout_ms", s.connect_timeout);
  Read(request, "max_bytes", s.max_bytes);
  Read(request, "max_redirects", s.max_redirects);
  if (const auto p = request.find("proxy"); p != request.end() && p->is_string())
    s.proxy = p->get<std::string>();
  Read(request, "cookies", s.cookies);

  const Json& politeness = Section(config, "politeness");
  Read(politeness, "robots_txt", s.robots_txt);
  Read(politeness, "per_host_concurrency", s.per_host_concurrency);
  ReadMs(politeness, "min_delay_ms", s.min_delay);
  ReadMs(politeness, "max_retry_after_ms", s.max_retry_after);

  const Json& retry = Section(config, "retry");
  Read(retry, "max_retries", s.max_retries);
  ReadMs(retry, "backoff_base_ms", s.backoff_base);
  ReadMs(retry, "backoff_max_ms", s.backoff_max);
  Read(retry, "jitter", s.jitter);

  const Json& errors = Section(config, "errors");
  Read(errors, "module_pause_after", s.module_pause_after);
  ReadMs(errors, "module_cooldown_ms", s.module_cooldown);
  Read(errors, "run_abort_after", s.run_abort_after);
  if (const auto r = errors.find("run_abort_error_rate"); r != errors.end() && r->is_number())
    s.run_abort_error_rate = r->get<double>();

  const Json& limits = Section(config, "limits");
  if (const auto v = limits.find("max_pages"); v != limits.end() && v->is_number_integer())
    s.max_pages = v->get<int64_t>();
  if (const auto v = limits.find("max_depth"); v != limits.end() && v->is_number_integer())
    s.max_depth = v->get<int>();
  if (const auto v = limits.find("max_requests"); v != limits.end() && v->is_number_integer())
    s.max_requests = v->get<int64_t>();
  ReadMs(limits, "watchdog_ms", s.watchdog);
  return s;
}

}  // namespace celeriac::extractor
