#include "state/crawl_figures.hpp"

#include <algorithm>

#include "core/pg/sql.hpp"

namespace celeriac::state {
namespace {

void SetStatementTimeout(pqxx::transaction_base& tx, std::chrono::milliseconds timeout) {
  tx.exec("SET LOCAL statement_timeout = " + std::to_string(timeout.count()));
}

}  // namespace

Result<CrawlFigures> ReadCrawlFigures(pg::Pool& pool, const CrawlFiguresOptions& options) {
  return pool.Transact<CrawlFigures>([&](pqxx::transaction_base& tx) -> Result<CrawlFigures> {
    CrawlFigures f;
    SetStatementTimeout(tx, options.query_timeout);
    for (const auto& row : tx.exec("SELECT status, count(*) FROM crawl_runs GROUP BY status")) {
      f.runs_by_status[row[0].as<std::string>()] = row[1].as<int64_t>();
    }
    for (const auto& row : tx.exec(
             "SELECT queue, error_class, count(*) FROM dead_letters "
             "WHERE replayed_at IS NULL AND purged_at IS NULL GROUP BY queue, error_class")) {
      f.pending_dead_letters[{row[0].as<std::string>(), row[1].as<std::string>()}] =
          row[2].as<int64_t>();
    }
    // error_counts is a jsonb object; a value that is not a whole number (never expected) is
    // left out rather than failing the scrape.
    for (const auto& row : tx.exec_params(
             "SELECT r.id, r.pages, e.key, "
             "  CASE WHEN jsonb_typeof(e.value) = 'number' "
             "        AND e.value::text::numeric BETWEEN -9e18 AND 9e18 "
             "       THEN e.value::text::numeric::bigint END "
             "FROM (SELECT id, pages, error_counts FROM crawl_runs "
             "      WHERE status = 'running' OR finished_at >= $1::timestamptz "
             "      ORDER BY id DESC LIMIT $2::bigint) r "
             "LEFT JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(r.error_counts) = 'object' "
             "                                  THEN r.error_counts END) e ON true "
             "ORDER BY r.id DESC",
             FormatIso8601(options.recent_since), options.max_runs)) {
      const auto id = row[0].as<int64_t>();
      if (f.recent_runs.empty() || f.recent_runs.back().id != id) {
        f.recent_runs.push_back(RecentRun{id, row[1].as<int64_t>(), {}});
      }
      if (!row[2].is_null() && !row[3].is_null()) {
        f.recent_runs.back().errors[row[2].as<std::string>()] = row[3].as<int64_t>();
      }
    }
    for (const auto& row : tx.exec_params(
             "SELECT h.run_id, h.host, h.state, h.delay_ms FROM crawl_hosts h "
             "JOIN crawl_runs r ON r.id = h.run_id WHERE r.status = 'running' "
             "ORDER BY h.state = 'ok', h.requests DESC, h.run_id, h.host LIMIT $1::bigint",
             options.max_hosts)) {
      f.hosts.push_back(HostFigures{row[0].as<int64_t>(), row[1].as<std::string>(),
                                    row[2].as<std::string>(), row[3].as<int64_t>()});
    }
    // Requests of running runs by state, from the jobs' exact counters (open = pending +
    // leased) and the leased ones (few: those in flight) through their partial index, never a
    // scan of the requests: ms where a GROUP BY over 1M requests takes seconds.
    const auto requests = tx.exec1(
        "WITH running AS MATERIALIZED ("
        "  SELECT j.id, j.requests_open, j.requests_failed FROM extraction_jobs j "
        "  JOIN crawl_runs r ON r.id = j.run_id WHERE r.status = 'running'), "
        "leased AS MATERIALIZED (SELECT job_id FROM crawl_requests WHERE state = 'leased') "
        "SELECT (SELECT coalesce(sum(requests_open), 0)::bigint FROM running), "
        "       (SELECT coalesce(sum(requests_failed), 0)::bigint FROM running), "
        "       (SELECT count(*) FROM leased l JOIN running ON running.id = l.job_id)");
    const auto open = requests[0].as<int64_t>();
    const auto leased = requests[2].as<int64_t>();
    f.requests_by_state = {{"pending", std::max<int64_t>(0, open - leased)},
                           {"leased", leased},
                           {"failed", requests[1].as<int64_t>()}};
    return f;
  });
}

}  // namespace celeriac::state
