#include "extractor/engine/work.hpp"

#include "core/url/url.hpp"

namespace celeriac::extractor {

std::string OriginOf(const std::string& url) {
  auto parts = url::Parse(url);
  return parts.ok() ? parts->Origin() : std::string();
}

std::string HostKey(int64_t run_id, const std::string& url) {
  return std::to_string(run_id) + ' ' + OriginOf(url);
}

Work MakeWork(LeasedRequest lease, std::shared_ptr<const JobRuntime> job) {
  Work w;
  w.host = HostKey(job->info.run_id, lease.spec.url);
  w.lease = std::move(lease);
  w.job = std::move(job);
  return w;
}

JobLimits LimitsOf(const parse::CrawlSettings& s) {
  JobLimits lim;
  lim.max_pages = s.limits.max_pages;
  if (s.limits.max_depth) lim.max_depth = static_cast<int>(*s.limits.max_depth);
  lim.max_requests = s.limits.max_requests;
  lim.abort_after_errors = s.errors.run_abort_after;
  lim.abort_error_rate = s.errors.run_abort_error_rate;
  return lim;
}

FetchRequest MakeFetch(const JobRuntime& job, const RequestSpec& spec,
                       const std::string& default_user_agent) {
  const auto& s = job.settings;
  FetchRequest req;
  req.url = spec.url;
  req.method = spec.method;
  req.body = spec.body;
  for (const auto& [k, v] : s.request.headers) req.headers.emplace_back(k, v);
  if (s.request.body_is_json && !s.request.headers.contains("Content-Type"))
    req.headers.emplace_back("Content-Type", "application/json");
  req.user_agent = s.request.user_agent.value_or(s.user_agent.value_or(default_user_agent));
  req.timeout = s.request.timeout;
  req.connect_timeout = s.request.connect_timeout;
  req.max_bytes = static_cast<size_t>(s.request.max_bytes);
  req.max_redirects = s.request.max_redirects;
  req.proxy = s.request.proxy;
  req.allow_private_network = s.allow_private_network;
  req.cookies = s.request.cookies;
  req.cookie_scope = job.info.job_id;
  return req;
}

}  // namespace celeriac::extractor
