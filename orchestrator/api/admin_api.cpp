#include "orchestrator/api/admin_api.hpp"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <initializer_list>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <utility>
#include <variant>

#include <httplib.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "core/admin/readiness.hpp"
#include "core/base/clock.hpp"
#include "core/base/ids.hpp"
#include "core/log/log.hpp"
#include "core/pg/probe.hpp"
#include "orchestrator/api/api_metrics.hpp"
#include "orchestrator/api/auth.hpp"
#include "orchestrator/api/openapi.hpp"
#include "orchestrator/api/request_validator.hpp"
#include "orchestrator/ops/ops.hpp"

namespace celeriac::orchestrator::api {
namespace {

using Json = nlohmann::ordered_json;
using std::chrono::steady_clock;

constexpr const char* kRetryAfterSeconds = "5";

// A 4xx/5xx answer. Handlers throw it from their checks; Dispatch turns it into
// {"error": message, "field": field, ...extra}.
struct HttpError {
  int status = 500;
  std::string message;
  std::string field;
  Json extra = Json::object();
};

[[noreturn]] void Fail(int status, std::string message, std::string field = "") {
  throw HttpError{status, std::move(message), std::move(field), Json::object()};
}

int StatusFor(const Error& e) {
  switch (e.code()) {
    case ErrorCode::kInvalidArgument: return 400;
    case ErrorCode::kNotFound: return 404;
    case ErrorCode::kAlreadyExists: return 409;
    case ErrorCode::kPermissionDenied: return 403;
    case ErrorCode::kUnavailable:
    case ErrorCode::kTimeout:
    case ErrorCode::kConflict: return 503;
    case ErrorCode::kProtocol:
    case ErrorCode::kInternal: break;
  }
  return e.retryable() ? 503 : 500;
}

[[noreturn]] void FailWith(const Error& e) { Fail(StatusFor(e), e.message()); }

std::string Dump(const Json& j) {
  // Stored messages may hold bytes that are not UTF-8; never let that throw.
  return j.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
}

void SendJson(httplib::Response& res, int status, const Json& body) {
  res.status = status;
  res.set_content(Dump(body), "application/json");
}

bool Contains(std::initializer_list<std::string_view> names, std::string_view name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

// ---- checked input ------------------------------------------------------------------------

// A handler's input has been checked against openapi.json (request_validator.hpp) before the
// handler runs: types and ranges hold, so reading only fetches. Absent (or null) is nullopt.
template <typename T>
std::optional<T> Get(const nlohmann::json& object, const char* name) {
  const auto it = object.find(name);
  if (it == object.end() || it->is_null()) return std::nullopt;
  return it->get<T>();
}

// The schemas leave `format` unchecked (request_validator.hpp): an ISO-8601 time that does not
// parse is refused here.
std::optional<Clock::WallTime> GetTime(const nlohmann::json& object, const char* name) {
  const auto text = Get<std::string>(object, name);
  if (!text) return std::nullopt;
  auto t = ParseIso8601(*text);
  if (!t) {
    Fail(400, std::string(name) + " must be an ISO-8601 time, e.g. 2026-01-31T12:00:00Z", name);
  }
  return t;
}

void CheckTimeRange(const std::optional<Clock::WallTime>& since,
                    const std::optional<Clock::WallTime>& until) {
  if (since && until && *until < *since) Fail(400, "until must not be before since", "until");
}

// The rows a batch replay or purge touches: explicit ids, filters, or everything, never none.
ops::DeadLetterFilter Selection(const nlohmann::json& body) {
  ops::DeadLetterFilter f;
  f.ids = Get<std::vector<int64_t>>(body, "ids").value_or(std::vector<int64_t>{});
  std::sort(f.ids.begin(), f.ids.end());
  f.ids.erase(std::unique(f.ids.begin(), f.ids.end()), f.ids.end());
  f.queue = Get<std::string>(body, "queue");
  f.task_name = Get<std::string>(body, "task");
  f.error_class = Get<std::string>(body, "error_class");
  f.since = GetTime(body, "since");
  f.until = GetTime(body, "until");
  CheckTimeRange(f.since, f.until);
  f.limit = Get<int64_t>(body, "limit").value_or(0);
  const bool all = Get<bool>(body, "all").value_or(false);
  const bool selective = !f.ids.empty() || f.queue || f.task_name || f.error_class || f.since ||
                         f.until;
  if (all && selective) Fail(400, "all cannot be combined with ids or filters", "all");
  if (!all && !selective) {
    Fail(400,
         "no dead letters selected: give ids, a filter (queue, task, error_class, since, "
         "until) or \"all\": true",
         "ids");
  }
  return f;
}

// The Request-Id of a request: the client's X-Request-Id when it is a sane token, else new.
std::string RequestIdFor(const httplib::Request& req) {
  const std::string given = req.get_header_value("X-Request-Id");
  const bool sane = !given.empty() && given.size() <= 128 &&
                    std::all_of(given.begin(), given.end(), [](char c) {
                      return std::isalnum(static_cast<unsigned char>(c)) || c == '-' ||
                             c == '_' || c == '.' || c == ':';
                    });
  return sane ? given : NewUuid4();
}

// What one server thread knows about the request it is serving (httplib serves a request
// from pre-routing to logger on one thread).
struct RequestState {
  bool active = false;
  bool finished = false;  // logged and counted already
  steady_clock::time_point start;
  std::string id;
  std::string route = "unmatched";
};
thread_local RequestState t_request;

// A client's text for a log line: control characters (a decoded %0A) cannot forge lines.
std::string Printable(std::string text) {
  if (text.size() > 512) text = text.substr(0, 512) + "...";
  for (char& c : text) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  }
  return text;
}

const char* ReasonFor(int status) {
  switch (status) {
    case 400: return "malformed request";
    case 404: return "no such route";
    case 405: return "method not allowed";
    case 408: return "request not received in time";
    case 413: return "request body too large";
    case 414: return "request URI too long";
    case 416: return "range not satisfiable";
    default: return status >= 500 ? "internal error" : "request refused";
  }
}

}  // namespace

// ---- the server ---------------------------------------------------------------------------

struct AdminApi::Impl {
  // Handlers see the request's input only once checked (request_validator.hpp), never the raw
  // request: what the document does not allow cannot reach them.
  using Handler = void (Impl::*)(const RequestInput&, httplib::Response&);
  struct Route {
    const char* method;
    const char* path;     // as openapi.json names it
    const char* pattern;  // httplib's regex
    bool admin;
    Handler handler;
  };
  static const std::vector<Route>& Table();

  Impl(pg::Pool& pool, broker::Broker& broker, std::string token, AdminApiOptions options)
      : pool(pool), broker(broker), token(std::move(token)), options(std::move(options)),
        metrics(pool, SystemClock::Instance(), this->options.metrics), log(log::Get("api")),
        validator(CompiledValidator()),
        server(this->options.limits),
        readiness(admin::ReadinessOptions{this->options.readiness_deadline,
                                          this->options.readiness_fresh_for}) {
    // Neither goes through the pool (its retries, its queue for a free connection) nor waits
    // longer than the probe does.
    readiness.Add("postgres", [this] {
      return pg::ProbeDatabase(this->pool.options().url, this->options.readiness_deadline);
    });
    // An established connection answers at once; a broken one blocks its check thread while
    // the broker reconnects, which the probe's deadline cuts short.
    readiness.Add("broker", [this] { return this->broker.Connect(); });
  }

  // The admin API's request validator; throws if openapi.json cannot be compiled (a build
  // with a broken document must not serve).
  static std::shared_ptr<const RequestValidator> CompiledValidator();

  void Install();
  void Dispatch(const Route& route, const OperationValidator& input,
                const httplib::Request& req, httplib::Response& res);
  void Finish(const httplib::Request& req, const httplib::Response& res);
  void Authorize(const httplib::Request& req) const;

  void Healthz(const RequestInput& in, httplib::Response& res);
  void Readyz(const RequestInput& in, httplib::Response& res);
  void Metrics(const RequestInput& in, httplib::Response& res);
  void OpenApi(const RequestInput& in, httplib::Response& res);
  void RunNow(const RequestInput& in, httplib::Response& res);
  void SiteAnalysis(const RequestInput& in, httplib::Response& res);
  void ListRuns(const RequestInput& in, httplib::Response& res);
  void ShowRun(const RequestInput& in, httplib::Response& res);
  void ListDeadLetters(const RequestInput& in, httplib::Response& res);
  void ShowDeadLetter(const RequestInput& in, httplib::Response& res);
  void ReplayOne(const RequestInput& in, httplib::Response& res);
  void ReplayMany(const RequestInput& in, httplib::Response& res);
  void PurgeMany(const RequestInput& in, httplib::Response& res);
  void PurgeOne(const RequestInput& in, httplib::Response& res);

  // The row, or 404.
  ops::DeadLetterRow FindDeadLetter(int64_t id);

  pg::Pool& pool;
  broker::Broker& broker;
  const std::string token;
  const AdminApiOptions options;
  ApiMetrics metrics;
  std::shared_ptr<spdlog::logger> log;
  const std::shared_ptr<const RequestValidator> validator;  // compiled once, at start-up
  HttpServer server;
  std::thread thread;
  steady_clock::time_point last_refusal_logged{};  // the accept thread's only
  // Last: destroyed first, its check threads end before what they use goes.
  admin::Readiness readiness;
};

const std::vector<AdminApi::Impl::Route>& AdminApi::Impl::Table() {
  // A path id is matched loosely ([^/]+) so that a bad one gets a 400 naming it, not a 404.
  static const std::vector<Route> kRoutes = {
      {"GET", "/healthz", "/healthz", false, &Impl::Healthz},
      {"GET", "/readyz", "/readyz", false, &Impl::Readyz},
      {"GET", "/metrics", "/metrics", false, &Impl::Metrics},
      {"GET", "/openapi.json", "/openapi.json", false, &Impl::OpenApi},
      {"POST", "/api/v1/crawl-tasks/{id}/run-now", R"(/api/v1/crawl-tasks/([^/]+)/run-now)", true,
       &Impl::RunNow},
      {"POST", "/api/v1/site-analysis", "/api/v1/site-analysis", true, &Impl::SiteAnalysis},
      {"GET", "/api/v1/runs", "/api/v1/runs", true, &Impl::ListRuns},
      {"GET", "/api/v1/runs/{id}", R"(/api/v1/runs/([^/]+))", true, &Impl::ShowRun},
      {"GET", "/api/v1/dead-letters", "/api/v1/dead-letters", true, &Impl::ListDeadLetters},
      {"POST", "/api/v1/dead-letters/replay", "/api/v1/dead-letters/replay", true,
       &Impl::ReplayMany},
      {"POST", "/api/v1/dead-letters/purge", "/api/v1/dead-letters/purge", true,
       &Impl::PurgeMany},
      {"GET", "/api/v1/dead-letters/{id}", R"(/api/v1/dead-letters/([^/]+))", true,
       &Impl::ShowDeadLetter},
      {"POST", "/api/v1/dead-letters/{id}/replay", R"(/api/v1/dead-letters/([^/]+)/replay)", true,
       &Impl::ReplayOne},
      {"DELETE", "/api/v1/dead-letters/{id}", R"(/api/v1/dead-letters/([^/]+))", true,
       &Impl::PurgeOne},
  };
  return kRoutes;
}

void AdminApi::Impl::Install() {
  server.set_tcp_nodelay(true);
  server.OnRefused([this] {
    metrics.ObserveRefusedConnection();
    // One line per burst, not per connection: a flood must not flood the log too.
    const auto now = steady_clock::now();
    if (now - last_refusal_logged >= std::chrono::seconds(10)) {
      last_refusal_logged = now;
      log->warn("admin API busy: refusing connections with 503 ({} threads, {} queued at most; "
                "{} refused so far)",
                options.limits.threads, options.limits.max_queued,
                server.refused_connections());
    }
  });

  // httplib calls these outside any handler: nothing may escape them.
  server.set_pre_routing_handler([](const httplib::Request& req, httplib::Response& res) {
    try {
      t_request = RequestState{true, false, steady_clock::now(), RequestIdFor(req), "unmatched"};
      res.set_header("X-Request-Id", t_request.id);
    } catch (...) {
      t_request.active = false;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });

  for (const Route& route : Table()) {
    // Every route is an operation of the document, so every route's input is checked.
    const OperationValidator* input = validator->Find(route.method, route.path);
    if (input == nullptr) {
      throw std::logic_error(std::string("admin API: ") + route.method + " " + route.path +
                             " is not in openapi.json");
    }
    auto handler = [this, &route, input](const httplib::Request& req, httplib::Response& res) {
      Dispatch(route, *input, req, res);
    };
    const std::string method = route.method;
    if (method == "GET") server.Get(route.pattern, handler);
    if (method == "POST") server.Post(route.pattern, handler);
    if (method == "DELETE") server.Delete(route.pattern, handler);
  }

  // Answers httplib produced itself (no route, a body too large, an unparsable request) get a
  // JSON body too, and are logged and counted here, before the answer is written (the logger
  // below runs after it). Answers from our handlers already have a body and a log line.
  server.set_error_handler(httplib::Server::HandlerWithResponse(
      [this](const httplib::Request& req, httplib::Response& res) {
        try {
          // A request that did not arrive in time reads as malformed to httplib.
          if (res.status == 400 && HttpServer::RequestTimedOut()) res.status = 408;
          if (!t_request.active || !t_request.finished) {
            if (!t_request.active) {
              t_request = RequestState{true, false, steady_clock::now(), "-", "unmatched"};
            }
            log::ScopedLogContext ctx({{"request_id", t_request.id}});
            Finish(req, res);
          }
          if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
          std::string message = ReasonFor(res.status);
          if (res.status == 404) message += ": " + req.method + " " + req.path;
          res.set_content(Dump(Json{{"error", message}}), "application/json");
          return httplib::Server::HandlerResponse::Handled;
        } catch (...) {
          return httplib::Server::HandlerResponse::Unhandled;
        }
      }));

  // Dispatch catches everything; this is the net under the net.
  server.set_exception_handler(
      [this](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
        log->error("admin API: exception escaped a handler");
        SendJson(res, 500, Json{{"error", "internal error"}});
      });

  // Anything not logged and counted yet (an answer below 400 that no route gave) is, here.
  server.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    try {
      if (!t_request.active) {
        t_request = RequestState{true, false, steady_clock::now(), "-", "unmatched"};
      }
      if (!t_request.finished) {
        log::ScopedLogContext ctx({{"request_id", t_request.id}});
        Finish(req, res);
      }
    } catch (...) {
    }
    t_request.active = false;
  });
}

void AdminApi::Impl::Finish(const httplib::Request& req, const httplib::Response& res) {
  RequestState& st = t_request;
  st.finished = true;
  const double seconds =
      std::chrono::duration<double>(steady_clock::now() - st.start).count();
  // Methods are a label: only the few HTTP has, so a client cannot make up new series.
  const bool known_method =
      Contains({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"}, req.method);
  metrics.ObserveRequest(known_method ? req.method : "other", st.route, res.status, seconds);
  const bool probe = st.route == "/healthz" || st.route == "/readyz" || st.route == "/metrics";
  const auto level = res.status >= 500             ? spdlog::level::warn
                     : probe && res.status < 400   ? spdlog::level::debug
                                                   : spdlog::level::info;
  log->log(level, "{} {} {} {:.1f}ms", Printable(req.method), Printable(req.path), res.status,
           seconds * 1000.0);
}

std::shared_ptr<const RequestValidator> AdminApi::Impl::CompiledValidator() {
  auto compiled = RequestValidator::ForAdminApi();
  if (!compiled) throw std::runtime_error("admin API: " + compiled.error().message());
  return *compiled;
}

void AdminApi::Impl::Dispatch(const Route& route, const OperationValidator& input,
                              const httplib::Request& req, httplib::Response& res) {
  RequestState& st = t_request;
  if (!st.active) st = RequestState{true, false, steady_clock::now(), RequestIdFor(req), ""};
  st.route = route.path;
  log::ScopedLogContext ctx({{"request_id", st.id}});
  try {
    try {
      if (route.admin) Authorize(req);
      RawInput raw;
      for (size_t i = 1; i < req.matches.size(); ++i) raw.path_values.push_back(req.matches[i].str());
      if (const auto question = req.target.find('?'); question != std::string::npos) {
        raw.query = std::string_view(req.target).substr(question + 1);
      }
      raw.body = req.body;
      auto checked = input.Check(raw);
      if (const auto* e = std::get_if<InputError>(&checked)) {
        HttpError error{400, e->message, e->field, Json::object()};
        if (!e->pointer.empty()) error.extra["pointer"] = e->pointer;
        throw error;
      }
      (this->*route.handler)(std::get<RequestInput>(checked), res);
    } catch (const HttpError& e) {
      Json body = {{"error", e.message}};
      if (!e.field.empty()) body["field"] = e.field;
      for (const auto& [k, v] : e.extra.items()) body[k] = v;
      if (e.status == 401) res.set_header("WWW-Authenticate", R"(Bearer realm="celeriac")");
      if (e.status == 503) res.set_header("Retry-After", kRetryAfterSeconds);
      SendJson(res, e.status, body);
    } catch (const std::exception& e) {
      log->error("{} {}: {}", req.method, req.path, e.what());
      SendJson(res, 500, Json{{"error", "internal error (request id " + st.id + ")"}});
    } catch (...) {
      log->error("{} {}: non-standard exception", req.method, req.path);
      SendJson(res, 500, Json{{"error", "internal error (request id " + st.id + ")"}});
    }
    Finish(req, res);
  } catch (...) {
    // Only allocation or logging can fail here; leave the answer as it stands.
    res.status = 500;
  }
}

void AdminApi::Impl::Authorize(const httplib::Request& req) const {
  const std::string authorization = req.get_header_value("Authorization");
  const auto presented = BearerToken(authorization);  // a view into `authorization`
  if (token.empty()) Fail(401, "admin routes are disabled: no api.token is configured");
  if (!presented) Fail(401, "missing bearer token: send Authorization: Bearer <api.token>");
  if (!TokenMatches(*presented, token)) Fail(401, "invalid bearer token");
}

// ---- probes, metrics, document ---------------------------------------------------------------

void AdminApi::Impl::Healthz(const RequestInput&, httplib::Response& res) {
  SendJson(res, 200, Json{{"status", "ok"}});
}

void AdminApi::Impl::Readyz(const RequestInput&, httplib::Response& res) {
  bool ready = true;
  Json body = {{"status", "ready"}};
  for (const auto& dependency : readiness.Check()) {
    ready = ready && dependency.ok;
    body[dependency.name] = dependency.reason;
  }
  if (!ready) {
    body["status"] = "unavailable";
    res.set_header("Retry-After", kRetryAfterSeconds);
  }
  SendJson(res, ready ? 200 : 503, body);
}

void AdminApi::Impl::Metrics(const RequestInput&, httplib::Response& res) {
  res.status = 200;
  res.set_content(metrics.Render(), "text/plain; version=0.0.4; charset=utf-8");
}

void AdminApi::Impl::OpenApi(const RequestInput&, httplib::Response& res) {
  for (const auto& file : EmbeddedOpenApi()) {
    if (file.path == "api/openapi.json") {
      res.status = 200;
      res.set_content(std::string(file.content), "application/json");
      return;
    }
  }
  Fail(500, "the OpenAPI document was not compiled in");
}

// ---- run-now, site analysis ---------------------------------------------------------------

void AdminApi::Impl::RunNow(const RequestInput& in, httplib::Response& res) {
  const int64_t id = in.path["id"].get<int64_t>();
  auto r = ops::RunNow(pool, broker, id, ops::RunNowOptions{options.worker_queue});
  if (!r) {
    if (r.error().code() == ErrorCode::kNotFound) Fail(404, r.error().message());
    // ops says InvalidArgument for a disabled crawl task: a conflict with its state, not with
    // anything in this request.
    if (r.error().code() == ErrorCode::kInvalidArgument) Fail(409, r.error().message());
    FailWith(r.error());
  }
  log->info("run-now: crawl task {} -> run {} task {}", id, r->run_id, r->task_id);
  SendJson(res, 202, Json{{"task_id", r->task_id}, {"run_id", r->run_id}});
}

void AdminApi::Impl::SiteAnalysis(const RequestInput& in, httplib::Response& res) {
  // Both required by SiteAnalysisRequest.
  const auto data_source_id = in.body["data_source_id"].get<int64_t>();
  const auto theme_name = in.body["theme_name"].get<std::string>();
  auto r = ops::TriggerSiteAnalysis(broker, data_source_id, theme_name,
                                    ops::RunNowOptions{options.worker_queue});
  if (!r) FailWith(r.error());
  log->info("site analysis: data source {} -> task {}", data_source_id, *r);
  SendJson(res, 202, Json{{"task_id", *r}});
}

// ---- runs ----------------------------------------------------------------------------------

void AdminApi::Impl::ListRuns(const RequestInput& in, httplib::Response& res) {
  ops::RunFilter f;
  f.crawl_task_id = Get<int64_t>(in.query, "crawl_task_id");
  f.status = Get<std::string>(in.query, "status");
  f.trigger = Get<std::string>(in.query, "trigger");
  f.limit = Get<int64_t>(in.query, "limit").value_or(50);
  f.before_id = Get<int64_t>(in.query, "before_id");
  auto runs = ops::ListRuns(pool, f);
  if (!runs) FailWith(runs.error());
  Json out = Json::array();
  for (const auto& run : *runs) out.push_back(run.ToJson());
  Json body = {{"runs", std::move(out)}};
  // The next page: runs older than the last one shown.
  body["next_before_id"] = static_cast<int64_t>(runs->size()) == f.limit && !runs->empty()
                               ? Json(runs->back().id)
                               : Json(nullptr);
  SendJson(res, 200, body);
}

void AdminApi::Impl::ShowRun(const RequestInput& in, httplib::Response& res) {
  const int64_t id = in.path["id"].get<int64_t>();
  auto run = ops::ShowRun(pool, id);
  if (!run) FailWith(run.error());
  if (!run->has_value()) Fail(404, "no run " + std::to_string(id));
  SendJson(res, 200, (*run)->ToJson());
}

// ---- dead letters --------------------------------------------------------------------------

ops::DeadLetterRow AdminApi::Impl::FindDeadLetter(int64_t id) {
  auto row = ops::ShowDeadLetter(pool, id);
  if (!row) FailWith(row.error());
  if (!row->has_value()) Fail(404, "no dead letter " + std::to_string(id));
  return std::move(**row);
}

void AdminApi::Impl::ListDeadLetters(const RequestInput& in, httplib::Response& res) {
  ops::DeadLetterFilter f;
  f.queue = Get<std::string>(in.query, "queue");
  f.task_name = Get<std::string>(in.query, "task");
  f.error_class = Get<std::string>(in.query, "error_class");
  f.since = GetTime(in.query, "since");
  f.until = GetTime(in.query, "until");
  CheckTimeRange(f.since, f.until);
  f.limit = Get<int64_t>(in.query, "limit").value_or(100);
  f.include_purged = Get<bool>(in.query, "include_purged").value_or(false);
  f.include_replayed = Get<bool>(in.query, "include_replayed").value_or(true);
  auto rows = ops::ListDeadLetters(pool, f);
  if (!rows) FailWith(rows.error());
  Json out = Json::array();
  for (const auto& row : *rows) out.push_back(row.ToJson(/*with_message=*/false));
  SendJson(res, 200, Json{{"dead_letters", std::move(out)}});
}

void AdminApi::Impl::ShowDeadLetter(const RequestInput& in, httplib::Response& res) {
  const int64_t id = in.path["id"].get<int64_t>();
  SendJson(res, 200, FindDeadLetter(id).ToJson(/*with_message=*/true));
}

void AdminApi::Impl::ReplayOne(const RequestInput& in, httplib::Response& res) {
  const int64_t id = in.path["id"].get<int64_t>();
  ops::ReplayOptions options;
  options.force = Get<bool>(in.body, "force").value_or(false);
  options.dry_run = Get<bool>(in.body, "dry_run").value_or(false);
  // ops reports a row named by id whatever its state: replayed, refused, purged or unknown.
  ops::DeadLetterFilter f;
  f.ids = {id};
  f.limit = 0;
  auto outcomes = ops::ReplayDeadLetters(pool, broker, f, options);
  if (!outcomes) FailWith(outcomes.error());
  const auto it = std::find_if(outcomes->begin(), outcomes->end(),
                               [id](const ops::ReplayOutcome& x) { return x.dead_letter_id == id; });
  if (it == outcomes->end()) Fail(500, "replay reported nothing for dead letter " + std::to_string(id));
  const ops::ReplayOutcome& outcome = *it;
  if (outcome.status == "not_found") Fail(404, "no dead letter " + std::to_string(id));
  if (outcome.status == "replayed" || outcome.status == "would_replay") {
    log->info("dead letter {}: {} as task {}", id, outcome.status, outcome.task_id.value_or("-"));
    SendJson(res, 200, outcome.ToJson());
    return;
  }
  HttpError error{outcome.status == "failed" ? 503 : 409,
                  outcome.message.empty() ? outcome.status : outcome.message,
                  outcome.status == "already_replayed" ? "force" : "", Json::object()};
  error.extra["outcome"] = outcome.ToJson();
  throw error;
}

void AdminApi::Impl::ReplayMany(const RequestInput& in, httplib::Response& res) {
  ops::DeadLetterFilter f = Selection(in.body);
  ops::ReplayOptions options;
  options.force = Get<bool>(in.body, "force").value_or(false);
  options.dry_run = Get<bool>(in.body, "dry_run").value_or(false);
  auto outcomes = ops::ReplayDeadLetters(pool, broker, f, options);
  if (!outcomes) FailWith(outcomes.error());
  Json results = Json::array();
  int64_t replayed = 0;
  for (const auto& o : *outcomes) {
    results.push_back(o.ToJson());
    if (o.status == "replayed") ++replayed;
  }
  log->info("dead letters replay: {} selected, {} replayed{}", outcomes->size(), replayed,
            options.dry_run ? " (dry run)" : "");
  SendJson(res, 200, Json{{"results", std::move(results)}, {"dry_run", options.dry_run}});
}

namespace {
Json PurgeJson(const ops::PurgeResult& r) {
  return Json{{"count", r.count}, {"ids", r.ids}, {"dry_run", r.dry_run}};
}
}  // namespace

void AdminApi::Impl::PurgeMany(const RequestInput& in, httplib::Response& res) {
  const ops::DeadLetterFilter f = Selection(in.body);
  const bool dry_run = Get<bool>(in.body, "dry_run").value_or(false);
  auto r = ops::PurgeDeadLetters(pool, f, dry_run);
  if (!r) FailWith(r.error());
  log->info("dead letters purge: {} rows{}", r->count, dry_run ? " (dry run)" : "");
  SendJson(res, 200, PurgeJson(*r));
}

void AdminApi::Impl::PurgeOne(const RequestInput& in, httplib::Response& res) {
  const int64_t id = in.path["id"].get<int64_t>();
  const bool dry_run = Get<bool>(in.query, "dry_run").value_or(false);
  FindDeadLetter(id);
  ops::DeadLetterFilter f;
  f.ids = {id};
  f.limit = 0;
  auto r = ops::PurgeDeadLetters(pool, f, dry_run);
  if (!r) FailWith(r.error());
  log->info("dead letter {} purge: {} rows{}", id, r->count, dry_run ? " (dry run)" : "");
  SendJson(res, 200, PurgeJson(*r));
}

// ---- AdminApi ------------------------------------------------------------------------------

Result<std::pair<std::string, int>> ParseListenAddress(const std::string& listen) {
  const auto colon = listen.rfind(':');
  if (colon == std::string::npos || colon + 1 == listen.size()) {
    return Error(ErrorCode::kInvalidArgument,
                 "listen address '" + listen + "' must be host:port, e.g. 127.0.0.1:18080");
  }
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty()) host = "0.0.0.0";
  int port = -1;
  const std::string_view text(listen.data() + colon + 1, listen.size() - colon - 1);
  const auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), port);
  if (ec != std::errc() || p != text.data() + text.size() || port < 0 || port > 65535) {
    return Error(ErrorCode::kInvalidArgument,
                 "listen address '" + listen + "': port must be 0-65535");
  }
  return std::make_pair(host, port);
}

AdminApi::AdminApi(pg::Pool& pool, broker::Broker& broker, std::string token,
                   AdminApiOptions options)
    : impl_(std::make_unique<Impl>(pool, broker, std::move(token), std::move(options))) {
  impl_->Install();
}

AdminApi::~AdminApi() { Stop(); }

Result<int> AdminApi::Start(const std::string& listen) {
  auto address = ParseListenAddress(listen);
  if (!address) return address.error();
  if (impl_->thread.joinable()) return Error(ErrorCode::kInternal, "admin API already started");
  const auto& [host, wanted] = *address;
  int port = wanted;
  if (wanted == 0) {
    port = impl_->server.bind_to_any_port(host);
  } else if (!impl_->server.bind_to_port(host, wanted)) {
    port = -1;
  }
  if (port <= 0) {
    return Error(ErrorCode::kUnavailable, "cannot listen on " + listen +
                                              " (address in use or not local?)");
  }
  impl_->readiness.Start();
  impl_->thread = std::thread([this] { impl_->server.listen_after_bind(); });
  // Wait for the accept loop, so that a Stop() right after Start() cannot miss it.
  while (!impl_->server.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  if (impl_->token.empty()) {
    impl_->log->warn(
        "admin API: api.token is empty (CELERIAC_API_TOKEN): every admin route answers 401");
  }
  impl_->log->info("admin API listening on {}:{}", host, port);
  return port;
}

void AdminApi::Stop() {
  if (!impl_ || !impl_->thread.joinable()) return;
  impl_->readiness.Stop();
  impl_->server.stop();
  impl_->thread.join();
  impl_->log->info("admin API stopped");
}

const std::vector<RouteInfo>& AdminApi::Routes() {
  static const std::vector<RouteInfo> kRoutes = [] {
    std::vector<RouteInfo> out;
    for (const auto& r : Impl::Table()) out.push_back({r.method, r.path, r.admin});
    return out;
  }();
  return kRoutes;
}

}  // namespace celeriac::orchestrator::api
