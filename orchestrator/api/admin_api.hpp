#pragma once
// AdminApi: the admin HTTP API (`orchestrator api`), JSON over HTTP/1.1 on cpp-httplib.
//
//   GET  /healthz  /readyz  /metrics  /openapi.json               no auth
//   POST /api/v1/crawl-tasks/{id}/run-now                          bearer token
//   POST /api/v1/site-analysis
//   GET  /api/v1/runs   /api/v1/runs/{id}    (a run: with its jobs, hosts, requests by state)
//   GET  /api/v1/dead-letters   /api/v1/dead-letters/{id}
//   POST /api/v1/dead-letters/{id}/replay   /api/v1/dead-letters/replay
//   POST /api/v1/dead-letters/purge   DELETE /api/v1/dead-letters/{id}
//
// The routes, their parameters and answers are described in openapi.json next to this file;
// Routes() lists what is implemented so a test holds the two together. What each admin route
// does is orchestrator/ops' job; this layer authenticates, checks, and maps errors:
//
//   - Admin routes need `Authorization: Bearer <token>`, compared in constant time; a missing
//     or wrong token gets 401 with `WWW-Authenticate: Bearer`. An empty token refuses everyone.
//   - Then every route's input (path and query parameters, body) is checked against
//     openapi.json's own schemas (request_validator.hpp, compiled once when the AdminApi is
//     made; a route the document lacks, or a document that cannot be compiled, throws there)
//     before its handler runs, which sees only the checked input. Bad input gets 400
//     {"error": "...", "field": "<name>"} (and "pointer": the JSON Pointer of a body's value);
//     unknown query parameters and body fields are rejected rather than ignored, so a misspelt
//     filter never widens a replay or a purge. What a schema cannot say (times that parse,
//     since <= until, a replay's or purge's selection) the handlers check, in the same shape.
//     Bodies are read as JSON whatever their Content-Type (curl -d sends a form type).
//   - Postgres or broker outages get 503 {"error": ...}; nothing a handler throws escapes it.
//   - GET /readyz answers within AdminApiOptions::readiness_deadline (1.5 s) in any outage:
//     200 {"status":"ready","postgres":"ok","broker":"ok"} or 503 {"status":"unavailable",
//     "postgres":"unreachable","broker":"ok"}; never a driver's text or a host name (those go
//     to the log, masked). Postgres is checked on a connection of its own with a hard deadline
//     (pg::ProbeDatabase), the broker through Broker::Connect on a thread of its own; at most
//     one check of each is in flight however many probes arrive.
//   - Every request is logged (method, path, status, duration, request id; never headers or
//     bodies) and counted in /metrics; X-Request-Id is echoed, or generated and returned.
//
//   - Connections are served by a fixed number of threads with a bounded wait queue; beyond it
//     a connection gets 503 at once and is closed (counted in
//     celeriac_api_connections_refused_total). A request must arrive whole within
//     limits.read_timeout (else 408), bodies above limits.max_body_bytes get 413.
//
// Threading: requests are served on HttpServer's threads; the pool and broker are thread-safe.
// Start() and Stop() are called from one thread. Stop() stops accepting, lets requests in
// flight finish, and returns; the destructor stops too.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/base/result.hpp"
#include "core/broker/broker.hpp"
#include "core/pg/pool.hpp"
#include "orchestrator/api/api_metrics.hpp"
#include "orchestrator/api/http_server.hpp"

namespace celeriac::orchestrator::api {

struct AdminApiOptions {
  std::string worker_queue = "celery";  // where run-now and site analysis publish (worker.queue)
  // Threads, wait queue, timeouts and body size of the HTTP server (http_server.hpp; the
  // [api] settings).
  HttpServerLimits limits;
  // GET /readyz answers within readiness_deadline whatever Postgres and the broker do
  // (core/admin/readiness.hpp); a check younger than readiness_fresh_for is reused.
  std::chrono::milliseconds readiness_deadline{1500};
  std::chrono::milliseconds readiness_fresh_for{1000};
  ApiMetricsOptions metrics;        // what GET /metrics reads from Postgres, and how often
};

// One implemented route, as the OpenAPI document names it.
struct RouteInfo {
  std::string method;  // "GET", "POST", "DELETE"
  std::string path;    // OpenAPI path template, e.g. "/api/v1/runs/{id}"
  bool admin = false;  // needs the bearer token
};

class AdminApi {
 public:
  AdminApi(pg::Pool& pool, broker::Broker& broker, std::string token,
           AdminApiOptions options = {});
  ~AdminApi();
  AdminApi(const AdminApi&) = delete;
  AdminApi& operator=(const AdminApi&) = delete;

  // Binds `listen` ("host:port", "[v6]:port"; port 0 = any free port) and serves on a thread of
  // its own. Returns the bound port; Unavailable if the address cannot be bound.
  Result<int> Start(const std::string& listen);
  void Stop();

  static const std::vector<RouteInfo>& Routes();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Splits "host:port" / "[v6]:port"; InvalidArgument naming the problem.
Result<std::pair<std::string, int>> ParseListenAddress(const std::string& listen);

}  // namespace celeriac::orchestrator::api
