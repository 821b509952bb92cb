#pragma once
// ApiMetrics: what the admin API's GET /metrics reports, in Prometheus' text format.
//
//   celeriac_api_http_requests_total{method,route,code}        counter, every answered request
//   celeriac_api_http_request_duration_seconds{method,route}   histogram
//   celeriac_api_connections_refused_total                     counter, connections turned away
//                                                              with 503 (threads and queue full)
//   celeriac_crawl_runs{status}                                gauge, runs in Postgres by status
//   celeriac_crawl_run_pages_total{run_id}                     counter, pages of a recent run
//   celeriac_crawl_run_errors_total{error_class,run_id}        counter, errors of a recent run by
//                                                              class (the six classes always, at
//                                                              0 until seen, plus any other seen)
//   celeriac_crawl_host_state{host,run_id,state}               gauge, 1 for each host of a
//                                                              running run, in its current state
//   celeriac_crawl_host_delay_seconds{host,run_id}             gauge, the host's current gap
//                                                              between request starts
//   celeriac_crawl_requests{state}                             gauge, requests of running runs
//                                                              that are pending, leased or
//                                                              failed (done and skipped are
//                                                              not counted here: see below)
//   celeriac_dead_letters_pending{queue,error_class}           gauge, not replayed, not purged
//   celeriac_api_database_up                                   gauge, 1 if the counts were read
//   process_start_time_seconds                                 gauge, Unix time
//
// `route` is the route's OpenAPI path ("/api/v1/runs/{id}"), or "unmatched", so the label's
// values stay few whatever clients send. Per-run and per-host series are bounded: a "recent"
// run is running or finished within `recent_window`, at most `max_runs` of them (newest first);
// hosts are those of running runs, at most `max_hosts` (hosts not ok first, then the busiest).
// A series goes away when its run stops being recent.
//
// The Postgres figures are read at scrape time, at most once per `cache_ttl` whatever the
// number of scrapers (concurrent scrapes wait for one read and share it), each statement
// bounded by `query_timeout`. When Postgres does not answer they are left out and
// celeriac_api_database_up is 0. No read scans crawl_requests: the request counts come from the
// jobs' counters (requests_open = pending + leased, requests_failed) and the leased rows' partial
// index; the jobs keep no count of done or skipped requests, and counting them would scan every
// request of the running runs (1.6 s per million), so only GET /api/v1/runs/{id} shows them.
//
// Threading: thread-safe.

#include <chrono>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "core/base/clock.hpp"
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

struct ApiMetricsOptions {
  std::chrono::milliseconds cache_ttl{5000};      // Postgres figures are reused this long
  std::chrono::milliseconds query_timeout{2000};  // statement_timeout of each query
  std::chrono::seconds recent_window{3600};       // runs finished this recently are reported
  size_t max_runs = 500;                          // per-run series: the newest recent runs
  size_t max_hosts = 1000;                        // per-host series
};

class ApiMetrics {
 public:
  explicit ApiMetrics(pg::Pool& pool, const Clock& clock = SystemClock::Instance(),
                      ApiMetricsOptions options = {});
  ~ApiMetrics();
  ApiMetrics(const ApiMetrics&) = delete;
  ApiMetrics& operator=(const ApiMetrics&) = delete;

  void ObserveRequest(const std::string& method, const std::string& route, int status,
                      double seconds);
  void ObserveRefusedConnection();

  // The text exposition of every metric above.
  std::string Render();

  struct StoreFigures;  // what Postgres said at one read

 private:
  std::shared_ptr<const StoreFigures> Figures();

  pg::Pool& pool_;
  const Clock& clock_;
  const ApiMetricsOptions options_;
  std::mutex cache_mutex_;  // held across a read, so a scrape storm reads once
  std::shared_ptr<const StoreFigures> cache_;
  Clock::MonoTime cache_read_at_{};
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* requests_ = nullptr;
  prometheus::Family<prometheus::Histogram>* durations_ = nullptr;
  prometheus::Counter* refused_ = nullptr;
};

// The process' start time as Unix seconds (from /proc; the current time if it cannot be read).
double ProcessStartTimeSeconds();

}  // namespace celeriac::orchestrator::api
