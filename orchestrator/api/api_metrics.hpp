#pragma once
// ApiMetrics: what the admin API's GET /metrics reports, in Prometheus' text format.
//
//   celeriac_api_http_requests_total{method,route,code}        counter, every answered request
//   celeriac_api_http_request_duration_seconds{method,route}   histogram
//   celeriac_crawl_runs{status}                                gauge, runs in Postgres by status
//   celeriac_dead_letters_pending{queue,error_class}           gauge, not replayed, not purged
//   celeriac_api_database_up                                   gauge, 1 if the counts were read
//   process_start_time_seconds                                 gauge, Unix time
//
// `route` is the route's OpenAPI path ("/api/v1/runs/{id}"), or "unmatched", so the label's
// values stay few whatever clients send. The Postgres gauges are counted at each scrape; when
// Postgres does not answer they are left out and celeriac_api_database_up is 0.
//
// Threading: thread-safe.

#include <memory>
#include <string>
#include <string_view>

#include "core/pg/pool.hpp"

namespace prometheus {
class Registry;
class Gauge;
template <typename T>
class Family;
class Counter;
class Histogram;
}  // namespace prometheus

namespace celeriac::orchestrator::api {

class ApiMetrics {
 public:
  explicit ApiMetrics(pg::Pool& pool);
  ~ApiMetrics();
  ApiMetrics(const ApiMetrics&) = delete;
  ApiMetrics& operator=(const ApiMetrics&) = delete;

  void ObserveRequest(const std::string& method, const std::string& route, int status,
                      double seconds);

  // The text exposition of every metric above.
  std::string Render();

 private:
  pg::Pool& pool_;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* requests_ = nullptr;
  prometheus::Family<prometheus::Histogram>* durations_ = nullptr;
};

// The process' start time as Unix seconds (from /proc; the current time if it cannot be read).
double ProcessStartTimeSeconds();

}  // namespace celeriac::orchestrator::api
