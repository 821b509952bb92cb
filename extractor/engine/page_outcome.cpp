#include "extractor/engine/page_outcome.hpp"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "core/base/backoff.hpp"
#include "extractor/engine/politeness.hpp"

namespace celeriac::extractor {

using std::chrono::milliseconds;

RequestResult ParseResponse(const JobRuntime& job, const RequestSpec& spec,
                            const FetchResponse& resp) {
  Page page;
  page.url = resp.final_url.empty() ? spec.url : resp.final_url;
  page.content_type = resp.content_type;
  page.body = resp.body;
  page.status = resp.status;
  page.page_type = spec.page_type;
  page.depth = spec.depth;
  page.pagination_index = spec.pagination_index;
  RequestResult r;
  r.status_code = resp.status;
  r.bytes = resp.bytes;
  r.url = page.url;
  r.parsed = true;
  Result<ParseOutcome> outcome = Error(ErrorCode::kInternal, "not parsed");
  try {
    outcome = job.module->Parse(page);
  } catch (const std::exception& e) {
    outcome = Error(ErrorCode::kInternal, std::string("parser threw: ") + e.what(), false);
  }
  if (outcome) {
    r.state = RequestResult::State::kDone;
    r.items = std::move(outcome->items);
    r.requests = std::move(outcome->requests);
    r.item_errors = outcome->item_errors.size();
    for (const auto& e : outcome->item_errors)
      spdlog::debug("job {}: {}: item dropped: {}", job.info.job_id, page.url, e);
  } else {
    r.state = RequestResult::State::kFailed;
    r.error_class = "Parse";
    r.error_message = outcome.error().message();
  }
  return r;
}

StatusClass ClassifyStatus(int status) {
  if (status == 429) return {"RateLimit", true};
  if (status == 401 || status == 403) return {"Auth", false};
  return {"HttpStatus", status == 408 || status >= 500};
}

RequestResult Failure(const Work& w, std::string error_class, std::string message,
                      bool retryable, int status, const std::optional<std::string>& retry_after,
                      Clock::WallTime now) {
  const auto& s = w.job->settings;
  RequestResult r;
  r.request_id = w.lease.id;
  r.job_id = w.lease.job_id;
  r.status_code = status;
  r.url = w.lease.spec.url;
  r.error_class = std::move(error_class);
  r.error_message = std::move(message);
  // attempts counts this one; retries made so far = attempts - 1.
  if (!retryable || w.lease.attempts > s.retry.max_retries) {
    r.state = RequestResult::State::kFailed;
    return r;
  }
  r.state = RequestResult::State::kRetry;
  const Backoff backoff({s.retry.backoff_base, s.retry.backoff_max, 2.0, s.retry.jitter});
  auto delay = backoff.Delay(std::max(0, w.lease.attempts - 1));
  if (retry_after)
    if (auto ra = ParseRetryAfter(*retry_after, now))
      delay = std::max(delay, std::min(*ra, s.politeness.max_retry_after));
  r.retry_delay = delay;
  return r;
}

bool Leads(const RequestResult& r) {
  for (const auto& next : r.requests)
    if (next.is_pagination) return true;
  return false;
}

RequestResult Skipped(const Work& w, std::string why) {
  RequestResult r;
  r.request_id = w.lease.id;
  r.job_id = w.lease.job_id;
  r.url = w.lease.spec.url;
  r.state = RequestResult::State::kSkipped;
  r.error_message = std::move(why);
  return r;
}

}  // namespace celeriac::extractor
