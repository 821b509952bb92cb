#pragma once
// What became of a request: its page parsed into items and links, a retry later, a failure
// for good, or a skip. Error classes: Download (no response), HttpStatus, Auth (401/403),
// RateLimit (429), Parse. A retryable failure is retried with exponential backoff and jitter
// (at least its Retry-After, capped by max_retry_after) while retries are left.
//
// Pure (ParseResponse runs the job's module, which is const): safe on any thread.

#include <optional>
#include <string>

#include "core/base/clock.hpp"
#include "extractor/engine/work.hpp"

namespace celeriac::extractor {

// A 2xx page through its job's module (on a parse thread). The result names no request yet.
RequestResult ParseResponse(const JobRuntime& job, const RequestSpec& spec,
                            const FetchResponse& response);

// The error class of a status outside 2xx, and whether a retry can help.
struct StatusClass {
  std::string error_class;
  bool retryable = false;
};
StatusClass ClassifyStatus(int status);

// `w` failed: a retry while it has retries left and `retryable`, else failed for good.
RequestResult Failure(const Work& w, std::string error_class, std::string message,
                      bool retryable, int status, const std::optional<std::string>& retry_after,
                      Clock::WallTime now);

// Whether `r` leads to more pages (it found pagination): such results are the crawl's critical
// path, recorded first.
bool Leads(const RequestResult& r);

// `w` is not fetched at all (e.g. robots.txt disallows it).
RequestResult Skipped(const Work& w, std::string why);

}  // namespace celeriac::extractor
