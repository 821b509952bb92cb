#pragma once
// The figures GET /metrics reports from Postgres (orchestrator/api/api_metrics.hpp says what
// they mean and why none of them scans crawl_requests), read in one transaction whose
// statements are each bounded by a timeout.
//
// Threading: thread-safe (the Pool is).

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/base/clock.hpp"
#include "core/base/result.hpp"
#include "core/pg/pool.hpp"

namespace celeriac::state {

struct RecentRun {
  int64_t id = 0;
  int64_t pages = 0;
  std::map<std::string, int64_t> errors;  // class -> count
};

struct HostFigures {
  int64_t run_id = 0;
  std::string host;
  std::string state;
  int64_t delay_ms = 0;
};

struct CrawlFigures {
  std::map<std::string, int64_t> runs_by_status;
  std::map<std::pair<std::string, std::string>, int64_t> pending_dead_letters;  // queue, class
  std::vector<RecentRun> recent_runs;  // running, or finished since `recent_since`; newest first
  std::vector<HostFigures> hosts;      // of running runs: not ok first, then the busiest
  std::map<std::string, int64_t> requests_by_state;  // pending, leased, failed
};

struct CrawlFiguresOptions {
  std::chrono::milliseconds query_timeout{2000};
  Clock::WallTime recent_since{};
  int64_t max_runs = 100;
  int64_t max_hosts = 200;
};

Result<CrawlFigures> ReadCrawlFigures(pg::Pool& pool, const CrawlFiguresOptions& options);

}  // namespace celeriac::state
