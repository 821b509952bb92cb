// Politeness, errors, limits and safety of the real crawl pipeline (issue 7): the Engine with
// the HttpFetcher and the config-driven module (CompileConfig), against in-process HTTP servers
// that misbehave on purpose, each test on a fresh Postgres schema. Every test asserts through
// what ops and users see (crawl_runs, extraction_jobs, crawl_requests, crawl_hosts,
// extracted_items, dead_letters) and, where the behaviour is about time, through the servers'
// own timestamps, with generous bounds.
//
// Configs use short timeouts and backoffs so that each test takes a second or two (a few take
// up to ~6 s: the 429 recovery, the watchdog, whose stalled page is waited for by the drain).

#include <algorithm>
#include <atomic>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <httplib.h>

#include "core/http/client.hpp"
#include "core/loop/loop.hpp"
#include "extractor/parse/config_module.hpp"
#include "extractor/engine/engine.hpp"
#include "state/crawl_store.hpp"
#include "extractor/pipeline/http_fetcher.hpp"
#include "tests/support/http_test_server.hpp"
#include "tests/support/pg_test.hpp"

namespace celeriac::extractor {
namespace {

using state::CrawlStore;
using state::kRefetchTask;

using Json = nlohmann::json;
using std::chrono::milliseconds;
using SteadyTime = std::chrono::steady_clock::time_point;
using testing::HttpTestServer;

// Server and engine timing both come from steady_clock: request arrivals at the server are
// compared with each other only, with this slack for scheduling noise on a loaded machine.
constexpr milliseconds kSlack{40};

int64_t Ms(std::chrono::steady_clock::duration d) {
  return std::chrono::duration_cast<milliseconds>(d).count();
}

// ---- a misbehaving site -------------------------------------------------------------------

// What a route answers; `sleep` holds the request (and the server thread) before answering.
struct Reply {
  int status = 200;
  std::string body;
  std::string content_type = "text/html; charset=utf-8";
  std::vector<std::pair<std::string, std::string>> headers;
  milliseconds sleep{0};
};

// A page with an <h1> (the item key) and links.
std::string Html(const std::string& id, const std::vector<std::string>& links = {}) {
  std::string s = "<html><head><title>" + id + "</title></head><body><h1>" + id + "</h1>";
  for (const auto& l : links) s += "<a href=\"" + l + "\">" + l + "</a>\n";
  return s + "</body></html>";
}

struct Hit {
  std::string path;
  std::string user_agent;
  SteadyTime start;
  SteadyTime end;
};

// An HttpTestServer (its default misbehaving routes: /stall, /endless, /loop/a, /redirect-to,
// /size/N, ...) plus /robots.txt and /t/... answered by functions the test sets, recording
// every request to them with its arrival time and the number of requests in progress.
class Site {
 public:
  using PageFn = std::function<Reply(const std::string& path, int call)>;

  Site()
      : server_(nullptr, [this](httplib::Server& s) {
          s.Get("/robots.txt", [this](const httplib::Request& q, httplib::Response& r) {
            Serve(q, r, [this](const std::string&, int) {
              std::lock_guard lock(mutex_);
              return robots_;
            });
          });
          s.Get(R"(/t/.*)", [this](const httplib::Request& q, httplib::Response& r) {
            PageFn fn;
            {
              std::lock_guard lock(mutex_);
              fn = pages_;
            }
            Serve(q, r, fn);
          });
        }) {}

  void SetPages(PageFn fn) {
    std::lock_guard lock(mutex_);
    pages_ = std::move(fn);
  }
  void SetRobots(Reply reply) {
    std::lock_guard lock(mutex_);
    robots_ = std::move(reply);
  }

  std::string Url(const std::string& path) const { return server_.Url(path); }
  std::string Origin() const { return server_.Url(""); }
  HttpTestServer& server() { return server_; }

  // Requests whose path starts with `prefix`, in arrival order.
  std::vector<Hit> Hits(const std::string& prefix = "/t/") const {
    std::lock_guard lock(mutex_);
    std::vector<Hit> out;
    for (const auto& h : hits_)
      if (h.path.starts_with(prefix)) out.push_back(h);
    return out;
  }
  int Count(const std::string& prefix) const { return static_cast<int>(Hits(prefix).size()); }
  int CountExact(const std::string& path) const {
    int n = 0;
    for (const auto& h : Hits(path)) n += h.path == path;
    return n;
  }
  int max_active() const { return max_active_.load(); }

 private:
  void Serve(const httplib::Request& q, httplib::Response& r, const PageFn& fn) {
    const auto start = std::chrono::steady_clock::now();
    const int active = ++active_;
    for (int seen = max_active_.load(); active > seen && !max_active_.compare_exchange_weak(seen, active);) {
    }
    int call;
    {
      std::lock_guard lock(mutex_);
      call = ++calls_[q.path];
    }
    Reply reply = fn ? fn(q.path, call) : Reply{404, "no such page", "text/plain", {}, {}};
    if (reply.sleep.count() > 0) std::this_thread::sleep_for(reply.sleep);
    r.status = reply.status;
    for (const auto& [k, v] : reply.headers) r.set_header(k, v);
    r.set_content(std::move(reply.body), reply.content_type);
    --active_;
    std::lock_guard lock(mutex_);
    hits_.push_back(Hit{q.path, q.get_header_value("User-Agent"), start,
                        std::chrono::steady_clock::now()});
    std::sort(hits_.begin(), hits_.end(),
              [](const Hit& a, const Hit& b) { return a.start < b.start; });
  }

  mutable std::mutex mutex_;
  PageFn pages_;
  Reply robots_{404, "not here", "text/plain", {}, {}};
  std::map<std::string, int> calls_;
  std::vector<Hit> hits_;
  std::atomic<int> active_{0};
  std::atomic<int> max_active_{0};
  HttpTestServer server_;  // last: its routes use the members above
};

// When the engines started each fetch (their clocks, not the server's): what pacing is about.
// The server's arrival times carry its threads' scheduling delays, which under load move one
// arrival late and make the next gap look short.
class FetchStarts {
 public:
  void Record(const std::string& url, int engine) {
    const auto now = std::chrono::steady_clock::now();
    std::lock_guard lock(mutex_);
    starts_.push_back({Hit{url, "", now, now}, engine});
  }
  // Fetches of URLs that start with `url_prefix` (e.g. site.Url("/t/")) by `engine` (-1: any),
  // in start order; each Hit's path is the URL's path.
  std::vector<Hit> Of(const std::string& url_prefix, const std::string& origin,
                      int engine = -1) const {
    std::lock_guard lock(mutex_);
    std::vector<Hit> out;
    for (const auto& [h, by] : starts_)
      if (h.path.starts_with(url_prefix) && (engine < 0 || by == engine))
        out.push_back(Hit{h.path.substr(origin.size()), "", h.start, h.end});
    std::stable_sort(out.begin(), out.end(),
                     [](const Hit& a, const Hit& b) { return a.start < b.start; });
    return out;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::pair<Hit, int>> starts_;  // and the engine that started it
};

// A Fetcher that forwards to the real one, records when each fetch starts, and can be cut off,
// so a test that gives up on a stuck crawl can tear the engine down without the client's
// cancellations calling into it.
class GuardedFetcher final : public Fetcher {
 public:
  GuardedFetcher(Fetcher& inner, FetchStarts& starts, int engine)
      : inner_(inner), starts_(starts), engine_(engine) {}
  void Fetch(FetchRequest request, Done done) override {
    starts_.Record(request.url, engine_);
    inner_.Fetch(std::move(request),
                 [alive = alive_, done = std::move(done)](Result<FetchResponse> r, std::string k) {
                   if (*alive) done(std::move(r), std::move(k));
                 });
  }
  void ForgetScope(int64_t scope) override { inner_.ForgetScope(scope); }
  size_t in_flight() const override { return inner_.in_flight(); }
  void CutOff() { *alive_ = false; }

 private:
  Fetcher& inner_;
  FetchStarts& starts_;
  int engine_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

ModuleFactory ConfigModules() {
  return [](const Json& config) -> Result<std::shared_ptr<const Module>> {
    auto compiled = parse::CompileConfig(config);
    if (!compiled) return compiled.error();
    return std::shared_ptr<const Module>(*compiled);
  };
}

// A config crawling `start` as page type "page": each page's <h1> is its item, every <a>
// on it is followed (same origin) as "page". Robots off, no delay, no retries, thresholds out
// of the way; tests patch what they are about.
Json Config(const std::vector<std::string>& start, Json patch = Json::object()) {
  Json item_page = {
      {"format", "html"},
      {"item", {{"key", {"id"}}, {"fields", {{"id", {{"css", "h1"}, {"required", true}}}}}}},
      {"links", Json::array({{{"css", "a"}, {"scope", "same-origin"}, {"route_to", "page"}}})}};
  Json config = {
      {"start_urls", start},
      {"start_page", "page"},
      {"allow_private_network", true},
      // cpp-httplib listens with a backlog of 5: a burst of connects can lose a SYN, which
      // the kernel resends after 1 s, so the connect timeout stays above that.
      {"request", {{"timeout_ms", 2000}, {"connect_timeout_ms", 5000}}},
      {"politeness", {{"robots_txt", false}, {"per_host_concurrency", 8}, {"min_delay_ms", 0}}},
      {"retry", {{"max_retries", 0}, {"backoff_base_ms", 10}, {"backoff_max_ms", 50}}},
      {"errors", {{"module_pause_after", 1000}, {"run_abort_after", 1000}}},
      {"pages", {{"page", item_page}}}};
  config.merge_patch(patch);
  return config;
}

struct CrawlOptions {
  int engines = 1;
  http::ClientOptions client;
  milliseconds max{20'000};
  std::string message;             // the extract message id (default: per config)
  std::function<void()> tick;      // every 20 ms on engine 0's loop while the job runs
  bool submit = true;              // false: no extract message, engines lease what is there
  std::optional<int64_t> job;      // with submit = false: the job to wait for
  // Instead of an extract message: an extractor.tasks.refetch of this request
  // (Engine::SubmitRefetch), with `message` as its task id; waits for the job of that run.
  std::optional<int64_t> refetch;
  std::optional<EngineOptions> engine;  // default: DefaultEngineOptions()
};

CrawlOptions Engines(int n) {
  CrawlOptions o;
  o.engines = n;
  return o;
}
CrawlOptions MaxTime(milliseconds max) {
  CrawlOptions o;
  o.max = max;
  return o;
}
CrawlOptions Message(std::string id) {
  CrawlOptions o;
  o.message = std::move(id);
  return o;
}
CrawlOptions Tick(std::function<void()> fn) {
  CrawlOptions o;
  o.tick = std::move(fn);
  return o;
}

struct CrawlResult {
  int64_t job = 0;
  milliseconds took{0};            // from the start of the engines to the job's end
  bool timed_out = false;
  std::vector<EngineStats> stats;  // per engine
};

class ExtractorPolitenessTest : public testing::PgTest {
 protected:
  // When the engines started the fetches of `site`'s paths under `prefix` (gaps between
  // starts are what politeness promises; the site's Hits() say what arrived).
  std::vector<Hit> Starts(const Site& site, const std::string& prefix = "/t/",
                          int engine = -1) const {
    return starts_.Of(site.Url(prefix), site.Origin(), engine);
  }
  FetchStarts starts_;

  void SetUp() override {
    PgTest::SetUp();
    if (IsSkipped() || HasFailure()) return;
    MigrateSchema();
    if (HasFatalFailure()) return;
    Exec("INSERT INTO data_sources (id, name) VALUES (1, 'site')");
  }

  void AddConfig(int64_t id, const Json& config) {
    auto lease = pool().Acquire();
    pqxx::work tx(**lease);
    tx.exec_params(
        "INSERT INTO crawl_configs (id, data_source_id, version, status, config) "
        "VALUES ($1::bigint, 1, $1::int, 'active', $2::jsonb)",
        id, config.dump());
    tx.commit();
  }

  static EngineOptions DefaultEngineOptions() {
    EngineOptions o;
    o.concurrency = 16;
    o.parse_threads = 2;
    o.lease_batch = 8;
    o.commit_batch = 8;
    o.commit_interval = milliseconds(5);
    o.idle_poll = milliseconds(20);
    o.lease = milliseconds(5000);
    return o;
  }

  // Runs `o.engines` engines (each its own loop, HttpFetcher and CrawlStore owner, as separate
  // extractor processes would) until the job of `config_id`'s extract message ends.
  CrawlResult Crawl(int64_t config_id, CrawlOptions o = {}) {
    const EngineOptions engine_options = o.engine.value_or(DefaultEngineOptions());
    const std::string msg = o.message.empty() ? "msg-" + std::to_string(config_id) : o.message;
    std::promise<int64_t> job_promise;
    std::shared_future<int64_t> job_future = job_promise.get_future().share();
    if (!o.submit) job_promise.set_value(o.job.value_or(0));
    CrawlResult result;
    result.stats.resize(static_cast<size_t>(o.engines));
    std::atomic<bool> timed_out{false};
    std::atomic<int64_t> ended_at_ms{-1};
    const auto started = std::chrono::steady_clock::now();
    auto run_engine = [&](int index) {
      Loop loop;
      HttpFetcher http(loop, o.client);
      GuardedFetcher fetcher(http, starts_, index);
      CrawlStore store(pool(), "polite-" + std::to_string(index));
      auto engine = std::make_unique<Engine>(loop, fetcher, store, store, ConfigModules(),
                                             engine_options);
      if (index == 0 && o.submit) {
        std::promise<Status> durable;
        if (o.refetch) {
          engine->SubmitRefetch(*o.refetch, msg, [&](Status st) { durable.set_value(st); });
        } else {
          ExtractRequest req;
          req.crawl_config_id = config_id;
          req.celery_task_id = msg;
          engine->SubmitExtract(req, [&](Status st) { durable.set_value(st); });
        }
        const Status st = durable.get_future().get();
        if (!st.ok()) {
          ADD_FAILURE() << "extract not durable: " << st.error().message();
          job_promise.set_value(0);
          return;
        }
        job_promise.set_value(JobOf(msg));
      }
      const int64_t job = job_future.get();
      if (job == 0) return;
      engine->Start();
      bool stopping = false;
      loop.AddTimer(milliseconds(20), [&] {
        if (stopping) return;
        if (index == 0 && o.tick) o.tick();
        const std::string status = JobStatus(job);
        if (status != "running" && status != "pending") {
          int64_t none = -1;
          ended_at_ms.compare_exchange_strong(
              none, Ms(std::chrono::steady_clock::now() - started));
          stopping = true;
          engine->Drain([&] { loop.Stop(); });
        } else if (std::chrono::steady_clock::now() - started > o.max) {
          timed_out = true;
          stopping = true;
          loop.Stop();  // not drained: a stuck fetch would hold a drain
        }
      }, milliseconds(20));
      loop.Run();
      result.stats[static_cast<size_t>(index)] = engine->Stats();
      fetcher.CutOff();
      engine.reset();
    };
    std::vector<std::thread> others;
    for (int i = 1; i < o.engines; ++i) others.emplace_back(run_engine, i);
    run_engine(0);
    for (auto& t : others) t.join();
    result.job = job_future.get();
    result.timed_out = timed_out;
    result.took = milliseconds(ended_at_ms.load() >= 0 ? ended_at_ms.load()
                                                       : Ms(std::chrono::steady_clock::now() - started));
    EXPECT_FALSE(timed_out) << "job " << result.job << " did not end within " << o.max.count()
                            << " ms (status " << (result.job ? JobStatus(result.job) : "?") << ")";
    return result;
  }

  int64_t JobOf(const std::string& message_id) {
    return Int("SELECT j.id FROM extraction_jobs j JOIN crawl_runs r ON r.id = j.run_id "
               "WHERE r.celery_task_id = '" + message_id + "'");
  }
  std::string JobStatus(int64_t job) { return Row(job)["status"]; }

  Json Row(int64_t job) {
    return Query("SELECT row_to_json(j)::text FROM extraction_jobs j WHERE id = " +
                 std::to_string(job));
  }
  Json RunRow(int64_t job) {
    return Query("SELECT row_to_json(r)::text FROM crawl_runs r JOIN extraction_jobs j "
                 "ON j.run_id = r.id WHERE j.id = " + std::to_string(job));
  }
  Json HostRow(int64_t job, const std::string& origin) {
    return Query("SELECT row_to_json(h)::text FROM crawl_hosts h JOIN extraction_jobs j "
                 "ON j.run_id = h.run_id WHERE j.id = " + std::to_string(job) +
                 " AND h.host = '" + origin + "'");
  }
  // The request of `job` whose URL ends with `suffix`.
  Json Request(int64_t job, const std::string& suffix) {
    return Query("SELECT row_to_json(r)::text FROM crawl_requests r WHERE job_id = " +
                 std::to_string(job) + " AND url LIKE '%" + suffix + "'");
  }
  // One row as JSON (null when there is none).
  Json Query(const std::string& sql) {
    auto lease = pool().Acquire();
    pqxx::work tx(**lease);
    const auto r = tx.exec(sql);
    if (r.empty() || r[0][0].is_null()) return Json();
    return Json::parse(r[0][0].as<std::string>());
  }
  int64_t Int(const std::string& sql) {
    auto lease = pool().Acquire();
    pqxx::work tx(**lease);
    return tx.exec1(sql)[0].as<int64_t>();
  }
};

// Gaps between consecutive arrivals.
std::vector<int64_t> Gaps(const std::vector<Hit>& hits) {
  std::vector<int64_t> gaps;
  for (size_t i = 1; i < hits.size(); ++i) gaps.push_back(Ms(hits[i].start - hits[i - 1].start));
  return gaps;
}

std::string Join(const std::vector<int64_t>& v) {
  std::string s;
  for (auto x : v) s += (s.empty() ? "" : ", ") + std::to_string(x);
  return "[" + s + "]";
}

std::string PercentEncode(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

// /t/root links to /t/p1 ... /t/pN.
Site::PageFn Fan(int n, milliseconds sleep = milliseconds(0)) {
  return [n, sleep](const std::string& path, int) {
    Reply r;
    r.sleep = sleep;
    if (path == "/t/root") {
      std::vector<std::string> links;
      for (int i = 1; i <= n; ++i) links.push_back("/t/p" + std::to_string(i));
      r.body = Html("root", links);
      r.sleep = milliseconds(0);
    } else {
      r.body = Html(path.substr(3));
    }
    return r;
  };
}

// ---- 1. robots.txt ------------------------------------------------------------------------

TEST_F(ExtractorPolitenessTest, RobotsTxtIsFetchedOncePerHostPerRunAndObeyed) {
  Site site;
  // A slow robots.txt: the second extractor asks for the host's rules while the first is
  // still fetching them.
  site.SetRobots({200, "User-agent: *\nDisallow: /t/private\n", "text/plain", {},
                  milliseconds(300)});
  // Many start URLs, so both extractors start on the host at once.
  std::vector<std::string> start;
  for (int i = 1; i <= 24; ++i) start.push_back(site.Url("/t/s" + std::to_string(i)));
  site.SetPages([](const std::string& path, int) {
    return Reply{200, Html(path.substr(3), {"/t/private/" + path.substr(3), "/t/shared"}), "text/html", {}, {}};
  });
  AddConfig(1, Config(start, {{"politeness", {{"robots_txt", true}}}}));
  CrawlOptions o = Engines(2);
  o.engine = DefaultEngineOptions();
  o.engine->concurrency = 2;  // each leases a few start requests at once, so both ask
  o.engine->lease_batch = 2;
  o.engine->commit_batch = 2;
  const auto r = Crawl(1, o);
  EXPECT_EQ(site.CountExact("/robots.txt"), 1) << "robots.txt must be fetched once per run";
  EXPECT_EQ(site.Count("/t/private"), 0) << "a disallowed path was requested";
  EXPECT_EQ(site.Count("/t/s"), 25);  // s1..s24 and shared
  EXPECT_EQ(site.CountExact("/t/shared"), 1);
  Json job = Row(r.job);
  EXPECT_EQ(job["status"], "succeeded");
  EXPECT_EQ(job["errors"], 0) << job.dump();
  EXPECT_EQ(job["pages"], 25);
  EXPECT_EQ(Int("SELECT count(*) FROM crawl_requests WHERE url LIKE '%/t/private/%' "
                "AND state = 'skipped' AND error_class IS NULL"),
            25);
  Json host = HostRow(r.job, site.Origin());
  ASSERT_FALSE(host.is_null());
  EXPECT_EQ(host["robots_status"], 200);
  EXPECT_GT(r.stats[0].fetched, 0u);
  EXPECT_GT(r.stats[1].fetched, 0u);
  // A second run asks again (once).
  Crawl(1, Message("second-run"));
  EXPECT_EQ(site.CountExact("/robots.txt"), 2);
}

TEST_F(ExtractorPolitenessTest, RobotsTxtGroupIsChosenByTheConfiguredUserAgent) {
  Site site;
  site.SetRobots({200,
                  "User-agent: *\nDisallow: /\n\n"
                  "User-agent: PoliteBot\nDisallow: /t/secret\n",
                  "text/plain", {}, {}});
  site.SetPages([](const std::string& path, int) {
    return Reply{200, Html(path.substr(3), {"/t/open", "/t/secret"}), "text/html", {}, {}};
  });
  AddConfig(1, Config({site.Url("/t/root")},
                      {{"user_agent", "PoliteBot/1.0 (+https://example.org/bot)"},
                       {"request", {{"user_agent", "PageAgent/2.0"}}},
                       {"politeness", {{"robots_txt", true}}}}));
  const auto r = Crawl(1);
  EXPECT_EQ(Row(r.job)["status"], "succeeded");
  EXPECT_EQ(site.CountExact("/t/root"), 1) << "the * group (disallow all) was obeyed";
  EXPECT_EQ(site.CountExact("/t/open"), 1);
  EXPECT_EQ(site.CountExact("/t/secret"), 0);
  const auto robots = site.Hits("/robots.txt");
  ASSERT_EQ(robots.size(), 1u);
  EXPECT_EQ(robots[0].user_agent, "PoliteBot/1.0 (+https://example.org/bot)");
  for (const auto& h : site.Hits("/t/")) EXPECT_EQ(h.user_agent, "PageAgent/2.0") << h.path;
  EXPECT_EQ(Request(r.job, "/t/secret")["state"], "skipped");
}

TEST_F(ExtractorPolitenessTest, CrawlDelayIsHonouredBetweenRequestStarts) {
  Site site;
  site.SetRobots({200, "User-agent: *\nCrawl-delay: 0.3\n", "text/plain", {}, {}});
  site.SetPages(Fan(5));
  AddConfig(1, Config({site.Url("/t/root")}, {{"politeness", {{"robots_txt", true}}}}));
  const auto r = Crawl(1);
  EXPECT_EQ(Row(r.job)["pages"], 6);
  ASSERT_EQ(site.Hits("/t/").size(), 6u);
  const auto starts = Starts(site);
  ASSERT_EQ(starts.size(), 6u);
  for (auto gap : Gaps(starts)) EXPECT_GE(gap, 300 - kSlack.count()) << Join(Gaps(starts));
  EXPECT_EQ(HostRow(r.job, site.Origin())["crawl_delay_ms"], 300);
}

TEST_F(ExtractorPolitenessTest, CrawlDelayIsCappedByMaxRetryAfter) {
  Site site;
  site.SetRobots({200, "User-agent: *\nCrawl-delay: 30\n", "text/plain", {}, {}});
  site.SetPages(Fan(4));
  AddConfig(1, Config({site.Url("/t/root")},
                      {{"politeness", {{"robots_txt", true}, {"max_retry_after_ms", 250}}}}));
  const auto r = Crawl(1, MaxTime(milliseconds(15'000)));
  EXPECT_EQ(Row(r.job)["pages"], 5);
  ASSERT_EQ(site.Hits("/t/").size(), 5u);
  const auto starts = Starts(site);
  ASSERT_EQ(starts.size(), 5u);
  for (auto gap : Gaps(starts)) {
    EXPECT_GE(gap, 250 - kSlack.count()) << Join(Gaps(starts));
    EXPECT_LT(gap, 3000) << "Crawl-delay 30 s not capped: " << Join(Gaps(starts));
  }
  EXPECT_EQ(HostRow(r.job, site.Origin())["crawl_delay_ms"], 250);
}

TEST_F(ExtractorPolitenessTest, RobotsOffInTheConfigIsNotFetched) {
  Site site;
  site.SetRobots({200, "User-agent: *\nDisallow: /\n", "text/plain", {}, {}});
  site.SetPages(Fan(3));
  AddConfig(1, Config({site.Url("/t/root")}, {{"politeness", {{"robots_txt", false}}}}));
  const auto r = Crawl(1);
  EXPECT_EQ(site.CountExact("/robots.txt"), 0);
  EXPECT_EQ(site.Count("/t/"), 4);
  EXPECT_EQ(Row(r.job)["pages"], 4);
}

TEST_F(ExtractorPolitenessTest, RobotsTxtServerErrorMeansNothingIsCrawledOnThatHost) {
  Site down;
  Site fine;
  down.SetRobots({503, "busy", "text/plain", {}, {}});
  down.SetPages(Fan(3));
  fine.SetPages(Fan(3));
  AddConfig(1, Config({down.Url("/t/root"), fine.Url("/t/root")},
                      {{"politeness", {{"robots_txt", true}}}}));
  const auto r = Crawl(1);
  EXPECT_EQ(down.CountExact("/robots.txt"), 1);
  EXPECT_EQ(down.Count("/t/"), 0) << "RFC 9309: an unreachable robots.txt disallows all";
  EXPECT_EQ(fine.Count("/t/"), 4) << "the other host is crawled";
  Json job = Row(r.job);
  EXPECT_EQ(job["status"], "succeeded");
  EXPECT_EQ(job["pages"], 4);
  EXPECT_EQ(Request(r.job, down.Url("/t/root").substr(7))["state"], "skipped");
  EXPECT_EQ(HostRow(r.job, down.Origin())["robots_status"], 503);
}

TEST_F(ExtractorPolitenessTest, RobotsTxtNotFoundAllowsEverything) {
  Site site;
  site.SetRobots({404, "nope", "text/plain", {}, {}});
  site.SetPages(Fan(4));
  AddConfig(1, Config({site.Url("/t/root")}, {{"politeness", {{"robots_txt", true}}}}));
  const auto r = Crawl(1);
  EXPECT_EQ(site.CountExact("/robots.txt"), 1);
  EXPECT_EQ(site.Count("/t/"), 5);
  EXPECT_EQ(Row(r.job)["pages"], 5);
  EXPECT_EQ(Int("SELECT count(*) FROM crawl_requests WHERE state = 'skipped'"), 0);
}

// ---- 2. per-host politeness ---------------------------------------------------------------

TEST_F(ExtractorPolitenessTest, PerHostConcurrencyIsRespected) {
  Site site;
  site.SetPages(Fan(20, milliseconds(120)));
  AddConfig(1, Config({site.Url("/t/root")}, {{"politeness", {{"per_host_concurrency", 3}}}}));
  const auto r = Crawl(1);
  EXPECT_EQ(Row(r.job)["pages"], 21);
  EXPECT_LE(site.max_active(), 3);
  EXPECT_GE(site.max_active(), 2) << "the host's concurrency was not used at all";
}

TEST_F(ExtractorPolitenessTest, MinDelayIsRespectedBetweenStarts) {
  Site site;
  site.SetPages(Fan(6));
  AddConfig(1, Config({site.Url("/t/root")}, {{"politeness", {{"min_delay_ms", 200}}}}));
  const auto r = Crawl(1);
  EXPECT_EQ(Row(r.job)["pages"], 7);
  ASSERT_EQ(site.Hits("/t/").size(), 7u);
  const auto starts = Starts(site);
  ASSERT_EQ(starts.size(), 7u);
  for (auto gap : Gaps(starts)) EXPECT_GE(gap, 200 - kSlack.count()) << Join(Gaps(starts));
}

TEST_F(ExtractorPolitenessTest, ASlowHostDoesNotHoldUpAnother) {
  Site slow;
  Site fast;
  slow.SetPages(Fan(4, milliseconds(600)));
  fast.SetPages(Fan(20));
  AddConfig(1, Config({slow.Url("/t/root"), fast.Url("/t/root")},
                      {{"politeness", {{"per_host_concurrency", 1}}}}));
  const auto r = Crawl(1);
  EXPECT_EQ(Row(r.job)["pages"], 26);
  const auto fast_hits = fast.Hits();
  const auto slow_hits = slow.Hits();
  ASSERT_EQ(fast_hits.size(), 21u);
  ASSERT_EQ(slow_hits.size(), 5u);
  // The slow host needs >= 2.4 s one page at a time; the fast one is done long before.
  EXPECT_LT(fast_hits.back().end, slow_hits[3].start)
      << "fast host finished " << Ms(fast_hits.back().end - slow_hits[0].start)
      << " ms after the slow host's first request";
}

TEST_F(ExtractorPolitenessTest, RetryAfterHoldsTheHostAndIsRecorded) {
  Site site;
  SteadyTime limited_at{};
  site.SetPages([&](const std::string& path, int call) {
    if (path == "/t/root") {
      std::vector<std::string> links = {"/t/limited"};
      for (int i = 1; i <= 4; ++i) links.push_back("/t/p" + std::to_string(i));
      return Reply{200, Html("root", links), "text/html", {}, {}};
    }
    if (path == "/t/limited" && call == 1)
      return Reply{429, "slow down", "text/plain", {{"Retry-After", "1"}}, {}};
    return Reply{200, Html(path.substr(3)), "text/html", {}, {}};
  });
  AddConfig(1, Config({site.Url("/t/root")},
                      {{"politeness", {{"per_host_concurrency", 1}}},
                       {"retry", {{"max_retries", 2}}}}));
  std::set<std::string> states;
  const auto r = Crawl(1, Tick([&] {
    Json h = Query("SELECT row_to_json(h)::text FROM crawl_hosts h LIMIT 1");
    if (!h.is_null()) states.insert(h["state"].get<std::string>());
  }));
  Json job = Row(r.job);
  EXPECT_EQ(job["status"], "succeeded");
  EXPECT_EQ(job["pages"], 6) << "the 429 was retried and succeeded";
  EXPECT_EQ(job["errors"], 0);
  EXPECT_EQ(Request(r.job, "/t/limited")["attempts"], 2);
  const auto hits = site.Hits();
  auto it = std::find_if(hits.begin(), hits.end(), [](const Hit& h) { return h.path == "/t/limited"; });
  ASSERT_NE(it, hits.end());
  ASSERT_NE(it + 1, hits.end()) << "nothing was requested after the 429";
  EXPECT_GE(Ms((it + 1)->start - it->end), 1000 - kSlack.count())
      << "a request reached the host during its Retry-After";
  Json host = HostRow(r.job, site.Origin());
  ASSERT_FALSE(host.is_null());
  EXPECT_EQ(host["rate_limited"], 1);
  EXPECT_TRUE(states.contains("backing_off")) << "crawl_hosts.state never showed the backoff";
}

// Takes ~6 s: after the backoff the host's delay eases back x0.8 per request (CrawlStore::ReserveSlot).
TEST_F(ExtractorPolitenessTest, AfterA429RequestsSpeedBackUp) {
  Site site;
  site.SetPages([&](const std::string& path, int call) {
    if (path == "/t/root" && call == 1)
      return Reply{429, "slow down", "text/plain", {{"Retry-After", "1"}}, {}};
    if (path == "/t/root") {
      std::vector<std::string> links;
      for (int i = 1; i <= 30; ++i) links.push_back("/t/p" + std::to_string(i));
      return Reply{200, Html("root", links), "text/html", {}, {}};
    }
    return Reply{200, Html(path.substr(3)), "text/html", {}, {}};
  });
  AddConfig(1, Config({site.Url("/t/root")},
                      {{"politeness", {{"per_host_concurrency", 1}}},
                       {"retry", {{"max_retries", 2}}}}));
  const auto r = Crawl(1, MaxTime(milliseconds(40'000)));
  EXPECT_EQ(Row(r.job)["pages"], 31);
  ASSERT_EQ(site.Hits().size(), 32u);
  const auto starts = Starts(site);
  ASSERT_EQ(starts.size(), 32u);
  const auto after = std::vector<Hit>(starts.begin() + 1, starts.end());
  const auto gaps = Gaps(after);
  // Slowed right after the backoff, and back to full speed (min_delay_ms 0) by the end.
  EXPECT_GE(gaps.front(), 500) << Join(gaps);
  EXPECT_LT(gaps.back(), gaps.front() / 2) << "never sped back up: " << Join(gaps);
  EXPECT_LT(r.took.count(), 30'000) << Join(gaps);
  EXPECT_NE(HostRow(r.job, site.Origin())["state"], "backing_off");
}

TEST_F(ExtractorPolitenessTest, TheRateHoldsAcrossTwoExtractorsSharingAJob) {
  Site site;
  site.SetPages(Fan(16));
  AddConfig(1, Config({site.Url("/t/root")}, {{"politeness", {{"min_delay_ms", 300}}}}));
  CrawlOptions o = Engines(2);
  o.engine = DefaultEngineOptions();
  o.engine->concurrency = 2;   // each leases a few at a time, so both get work
  o.engine->lease_batch = 2;
  o.engine->commit_batch = 2;
  const auto r = Crawl(1, o);
  EXPECT_EQ(Row(r.job)["pages"], 17);
  EXPECT_GT(r.stats[0].fetched, 0u);
  EXPECT_GT(r.stats[1].fetched, 0u) << "the second extractor never fetched: not a shared test";
  ASSERT_EQ(site.Hits().size(), 17u);
  // Each extractor keeps the gap between its own starts.
  for (int engine : {0, 1})
    for (auto gap : Gaps(Starts(site, "/t/", engine)))
      EXPECT_GE(gap, 300 - kSlack.count()) << "extractor " << engine;
  // Together they keep to the slots the host ledger hands out 300 ms apart: the 17 starts
  // span 16 gaps, and no two come close. (A start happens at its slot plus its process's
  // scheduling delay, so one late start can shorten the next gap, but not by half.)
  const auto starts = Starts(site);  // both extractors' fetches, on one clock
  ASSERT_EQ(starts.size(), 17u);
  EXPECT_GE(Ms(starts.back().start - starts.front().start), 16 * 300 - 300) << Join(Gaps(starts));
  for (auto gap : Gaps(starts)) EXPECT_GE(gap, 150) << Join(Gaps(starts));
}

// ---- 3. errors ----------------------------------------------------------------------------

TEST_F(ExtractorPolitenessTest, ErrorClassesAreCountedPerJobAndRun) {
  Site site;
  Site limiter;  // a 429 slows its host down; keep that off the main site
  const int dead_port = testing::FreeLoopbackPort();
  const std::string dead = "http://127.0.0.1:" + std::to_string(dead_port) + "/t/x";
  site.SetPages([&](const std::string& path, int) {
    if (path == "/t/root")
      return Reply{200, Html("root", {"/t/gone", "/t/unauth", "/t/forbidden", "/t/noitem",
                                      "/t/ok1", "/t/ok2"}),
                   "text/html", {}, {}};
    if (path == "/t/gone") return Reply{404, "gone", "text/plain", {}, {}};
    if (path == "/t/unauth") return Reply{401, "who?", "text/plain", {}, {}};
    if (path == "/t/forbidden") return Reply{403, "no", "text/plain", {}, {}};
    if (path == "/t/noitem") return Reply{200, "<html><body>no heading</body></html>", "text/html", {}, {}};
    return Reply{200, Html(path.substr(3)), "text/html", {}, {}};
  });
  limiter.SetPages([](const std::string&, int) {
    return Reply{429, "later", "text/plain", {{"Retry-After", "0"}}, {}};
  });
  AddConfig(1, Config({site.Url("/t/root"), dead, limiter.Url("/t/limited")}));
  const auto r = Crawl(1);
  Json expected = {{"Download", 1}, {"HttpStatus", 1}, {"Auth", 2}, {"RateLimit", 1},
                         {"Parse", 1}};
  Json job = Row(r.job);
  EXPECT_EQ(job["status"], "succeeded");
  EXPECT_EQ(job["error_counts"], expected);
  EXPECT_EQ(job["errors"], 6);
  EXPECT_EQ(job["pages"], 4);  // root, noitem, ok1, ok2
  Json run = RunRow(r.job);
  EXPECT_EQ(run["error_counts"], expected);
  EXPECT_EQ(run["errors"], 6);
  EXPECT_EQ(Request(r.job, "/t/unauth")["error_class"], "Auth");
  EXPECT_EQ(Request(r.job, "/t/unauth")["status_code"], 401);
  EXPECT_EQ(Request(r.job, "/t/forbidden")["status_code"], 403);
  EXPECT_EQ(Request(r.job, "/t/gone")["error_class"], "HttpStatus");
  EXPECT_EQ(Request(r.job, "/t/limited")["error_class"], "RateLimit");
  EXPECT_EQ(Request(r.job, ":" + std::to_string(dead_port) + "/t/x")["error_class"], "Download");
  EXPECT_EQ(Int("SELECT count(*) FROM extracted_items"), 3);
}

TEST_F(ExtractorPolitenessTest, RequestsAreRetriedWithBackoffThenFail) {
  Site site;
  site.SetPages([](const std::string& path, int call) {
    if (path == "/t/root")
      return Reply{200, Html("root", {"/t/broken", "/t/flaky"}), "text/html", {}, {}};
    if (path == "/t/broken") return Reply{500, "oops", "text/plain", {}, {}};
    if (path == "/t/flaky" && call < 3) return Reply{502, "bad gateway", "text/plain", {}, {}};
    return Reply{200, Html(path.substr(3)), "text/html", {}, {}};
  });
  // Default max_retries (3); exponential backoff 150, 300, 600 ms without jitter.
  Json config = Config({site.Url("/t/root")},
                       {{"retry", {{"backoff_base_ms", 150}, {"backoff_max_ms", 5000},
                                   {"jitter", false}}}});
  config["retry"].erase("max_retries");
  AddConfig(1, config);
  const auto r = Crawl(1);
  ASSERT_EQ(site.Hits("/t/broken").size(), 4u) << "1 attempt + 3 retries";
  const auto broken = Starts(site, "/t/broken");
  ASSERT_EQ(broken.size(), 4u);
  const auto gaps = Gaps(broken);
  EXPECT_GE(gaps[0], 150 - kSlack.count()) << Join(gaps);
  EXPECT_GE(gaps[1], 300 - kSlack.count()) << Join(gaps);
  EXPECT_GE(gaps[2], 600 - kSlack.count()) << Join(gaps);
  Json b = Request(r.job, "/t/broken");
  EXPECT_EQ(b["state"], "failed");
  EXPECT_EQ(b["attempts"], 4);
  EXPECT_EQ(b["error_class"], "HttpStatus");
  EXPECT_EQ(b["status_code"], 500);
  Json f = Request(r.job, "/t/flaky");
  EXPECT_EQ(f["state"], "done");
  EXPECT_EQ(f["attempts"], 3);
  Json job = Row(r.job);
  EXPECT_EQ(job["error_counts"], Json({{"HttpStatus", 1}}));
  EXPECT_EQ(job["requests_failed"], 1);
}

TEST_F(ExtractorPolitenessTest, APageTypePausesAfterConsecutiveFailuresThenResumes) {
  Site site;
  site.SetPages([](const std::string& path, int) {
    if (path == "/t/root") {
      std::vector<std::string> links;
      for (int i = 1; i <= 4; ++i) links.push_back("/t/detail/" + std::to_string(i));
      for (int i = 1; i <= 5; ++i) links.push_back("/t/list/" + std::to_string(i));
      return Reply{200, Html("root", links), "text/html", {}, {}};
    }
    if (path.starts_with("/t/detail/")) return Reply{404, "no", "text/plain", {}, {}};
    return Reply{200, Html(path.substr(3)), "text/html", {}, milliseconds(80)};
  });
  Json config = Config({site.Url("/t/root")},
                       {{"politeness", {{"per_host_concurrency", 1}}},
                        {"errors", {{"module_pause_after", 2}, {"module_cooldown_ms", 1200}}}});
  config["pages"]["page"]["links"] = Json::array(
      {{{"css", "a"}, {"allow", {"/detail/"}}, {"route_to", "detail"}},
       {{"css", "a"}, {"allow", {"/list/"}}, {"route_to", "page"}}});
  config["pages"]["detail"] = {{"format", "html"}};
  AddConfig(1, config);
  const auto r = Crawl(1);
  ASSERT_EQ(site.Hits("/t/detail/").size(), 4u);
  ASSERT_EQ(site.Hits("/t/list/").size(), 5u);
  const auto details = Starts(site, "/t/detail/");
  const auto lists = Starts(site, "/t/list/");
  ASSERT_EQ(details.size(), 4u);
  ASSERT_EQ(lists.size(), 5u);
  // Two failures pause "detail": the next detail request waits out the cool-down...
  const auto gaps = Gaps(details);
  EXPECT_GE(gaps[1], 1200 - kSlack.count()) << Join(gaps);
  // ...while the other page type goes on meanwhile (its five pages take ~400 ms, well within
  // the cool-down, whatever the order the host's queue had them in).
  for (const auto& l : lists)
    EXPECT_LT(l.start, details[2].start) << l.path << ": page type 'page' was held up by the "
                                         << "pause of 'detail'";
  Json job = Row(r.job);
  EXPECT_EQ(job["status"], "succeeded");
  EXPECT_EQ(job["error_counts"], Json({{"HttpStatus", 4}}));
}

TEST_F(ExtractorPolitenessTest, ARunAbortsAfterTooManyErrors) {
  Site site;
  site.SetPages([](const std::string& path, int) {
    if (path == "/t/root") {
      std::vector<std::string> links;
      for (int i = 1; i <= 20; ++i) links.push_back("/t/bad" + std::to_string(i));
      return Reply{200, Html("root", links), "text/html", {}, {}};
    }
    return Reply{404, "no", "text/plain", {}, milliseconds(30)};
  });
  AddConfig(1, Config({site.Url("/t/root")},
                      {{"politeness", {{"per_host_concurrency", 1}}},
                       {"errors", {{"run_abort_after", 3}}}}));
  const auto r = Crawl(1);
  Json job = Row(r.job);
  EXPECT_EQ(job["status"], "aborted");
  EXPECT_FALSE(job["status_reason"].is_null());
  EXPECT_NE(job["status_reason"].get<std::string>().find("abort"), std::string::npos)
      << job["status_reason"];
  Json run = RunRow(r.job);
  EXPECT_EQ(run["status"], "aborted");
  EXPECT_FALSE(run["status_reason"].is_null());
  EXPECT_LT(site.Count("/t/bad"), 20) << "the run went on after it was aborted";
  EXPECT_GE(job["errors"].get<int>(), 3);
  EXPECT_EQ(Int("SELECT count(*) FROM crawl_requests WHERE state IN ('pending', 'leased')"), 0);
}

TEST_F(ExtractorPolitenessTest, ARunAbortsWhenItsErrorRateIsTooHigh) {
  Site site;
  // 30 pages, 2 of 3 fail: above a 0.5 rate, below 0.9.
  site.SetPages([](const std::string& path, int) {
    if (path == "/t/root") {
      std::vector<std::string> links;
      for (int i = 1; i <= 30; ++i) links.push_back("/t/p" + std::to_string(i));
      return Reply{200, Html("root", links), "text/html", {}, {}};
    }
    const int i = std::stoi(path.substr(4));
    if (i % 3 != 0) return Reply{404, "no", "text/plain", {}, milliseconds(20)};
    return Reply{200, Html(path.substr(3)), "text/html", {}, milliseconds(20)};
  });
  AddConfig(1, Config({site.Url("/t/root")},
                      {{"politeness", {{"per_host_concurrency", 1}}},
                       {"errors", {{"run_abort_error_rate", 0.5}}}}));
  AddConfig(2, Config({site.Url("/t/root")},
                      {{"politeness", {{"per_host_concurrency", 1}}},
                       {"errors", {{"run_abort_error_rate", 0.9}}}}));
  const auto high = Crawl(1);
  Json aborted = Row(high.job);
  EXPECT_EQ(aborted["status"], "aborted");
  EXPECT_NE(aborted["status_reason"].dump().find("rate"), std::string::npos)
      << aborted["status_reason"];
  EXPECT_EQ(RunRow(high.job)["status"], "aborted");
  EXPECT_LT(Int("SELECT count(*) FROM crawl_requests WHERE job_id = " + std::to_string(high.job) +
                " AND state IN ('done', 'failed')"),
            31);
  const auto low = Crawl(2);
  Json fine = Row(low.job);
  EXPECT_EQ(fine["status"], "succeeded") << fine["status_reason"];
  EXPECT_EQ(fine["requests_failed"], 20);
}

// ---- 4. limits ----------------------------------------------------------------------------

TEST_F(ExtractorPolitenessTest, MaxPagesIsTheNumberOfPagesParsed) {
  Site site;
  site.SetPages([](const std::string& path, int) {
    // a binary tree of 63 pages
    const int i = path == "/t/root" ? 0 : std::stoi(path.substr(4));
    std::vector<std::string> links;
    for (int c : {2 * i + 1, 2 * i + 2})
      if (c < 63) links.push_back("/t/n" + std::to_string(c));
    return Reply{200, Html(path.substr(3), links), "text/html", {}, milliseconds(10)};
  });
  AddConfig(1, Config({site.Url("/t/root")}, {{"limits", {{"max_pages", 5}}}}));
  const auto r = Crawl(1);
  Json job = Row(r.job);
  EXPECT_EQ(job["status"], "succeeded");
  EXPECT_EQ(job["pages"], 5);
  EXPECT_EQ(Int("SELECT count(*) FROM extracted_items"), 5);
  EXPECT_LT(site.Count("/t/"), 63);
}

TEST_F(ExtractorPolitenessTest, MaxDepthStopsFollowingLinks) {
  Site site;
  site.SetPages([](const std::string& path, int) {
    // a chain: root -> d1 -> d2 -> d3 -> d4
    const int d = path == "/t/root" ? 0 : std::stoi(path.substr(4));
    return Reply{200, Html(path.substr(3), {"/t/d" + std::to_string(d + 1)}), "text/html", {}, {}};
  });
  AddConfig(1, Config({site.Url("/t/root")}, {{"limits", {{"max_depth", 2}}}}));
  const auto r = Crawl(1);
  EXPECT_EQ(Row(r.job)["pages"], 3);
  EXPECT_EQ(site.CountExact("/t/d2"), 1);
  EXPECT_EQ(site.CountExact("/t/d3"), 0);
  EXPECT_EQ(Int("SELECT coalesce(max(depth), -1) FROM crawl_requests"), 2);
}

// Root links to five good pages and to `hostile` (a path on the same server); each test checks
// the hostile request's outcome, how fast the job ended, and that the good pages were fine.
class HostilePageTest : public ExtractorPolitenessTest {
 protected:
  struct Outcome {
    Json request;
    Json job;
    milliseconds took{0};
  };
  Outcome CrawlWith(Site& site, const std::string& hostile, Json patch,
                    http::ClientOptions client = {}) {
    site.SetPages([hostile, inner = site_pages_](const std::string& path, int call) {
      if (path == "/t/root")
        return Reply{200, Html("root", {hostile, "/t/g1", "/t/g2", "/t/g3", "/t/g4", "/t/g5"}),
                     "text/html", {}, {}};
      if (inner) return inner(path, call);
      return Reply{200, Html(path.substr(3)), "text/html", {}, {}};
    });
    AddConfig(1, Config({site.Url("/t/root")}, std::move(patch)));
    CrawlOptions o;
    o.client = std::move(client);
    o.max = milliseconds(30'000);
    const auto r = Crawl(1, o);
    Outcome out;
    const auto q = hostile.find('?');
    out.request = Request(r.job, q == std::string::npos ? hostile : hostile.substr(0, q) + "%");
    out.job = Row(r.job);
    out.took = r.took;
    // nothing else disturbed
    EXPECT_EQ(site.Count("/t/g"), 5);
    EXPECT_EQ(Int("SELECT count(*) FROM extracted_items WHERE item_key LIKE '%g%'"), 5);
    EXPECT_EQ(out.job["status"], "succeeded") << out.job.dump();
    return out;
  }
  Site::PageFn site_pages_;
};

TEST_F(HostilePageTest, AResponseOverTheSizeCapIsAFastDownloadError) {
  Site site;
  const auto o = CrawlWith(site, "/size/5000000",
                           {{"request", {{"max_bytes", 100000}}}, {"retry", {{"max_retries", 3}}}});
  EXPECT_EQ(o.request["state"], "failed");
  EXPECT_EQ(o.request["error_class"], "Download");
  EXPECT_NE(o.request["error_message"].dump().find("too_large"), std::string::npos)
      << o.request.dump();
  EXPECT_LT(o.took.count(), 5000);
}

TEST_F(HostilePageTest, ASlowLorisServerEndsAsADownloadTimeout) {
  Site site;
  const auto started = std::chrono::steady_clock::now();
  const auto o = CrawlWith(site, "/stall", {{"request", {{"timeout_ms", 500}}}});
  EXPECT_EQ(o.request["state"], "failed");
  EXPECT_EQ(o.request["error_class"], "Download");
  EXPECT_NE(o.request["error_message"].dump().find("timeout"), std::string::npos)
      << o.request.dump();
  EXPECT_EQ(site.server().hits("/stall"), 1);
  EXPECT_LT(o.took.count(), 4000) << "timeout_ms 500";
  EXPECT_LT(Ms(std::chrono::steady_clock::now() - started), 15'000);
}

TEST_F(HostilePageTest, AnEndlessChunkedResponseEndsAtTheSizeCap) {
  Site site;
  const auto o = CrawlWith(site, "/endless",
                           {{"request", {{"max_bytes", 1000000}, {"timeout_ms", 10000}}}});
  EXPECT_EQ(o.request["state"], "failed");
  EXPECT_EQ(o.request["error_class"], "Download");
  EXPECT_NE(o.request["error_message"].dump().find("too_large"), std::string::npos)
      << o.request.dump();
  EXPECT_LT(o.took.count(), 5000);
}

TEST_F(HostilePageTest, ARedirectLoopIsAFastDownloadError) {
  Site site;
  const auto o = CrawlWith(site, "/loop/a", {{"retry", {{"max_retries", 3}}}});
  EXPECT_EQ(o.request["state"], "failed");
  EXPECT_EQ(o.request["error_class"], "Download");
  EXPECT_NE(o.request["error_message"].dump().find("redirect_loop"), std::string::npos)
      << o.request.dump();
  EXPECT_LT(site.server().hits("/loop/a") + site.server().hits("/loop/b"), 50);
  EXPECT_LT(o.took.count(), 3000);
}

TEST_F(HostilePageTest, TenMegabytesOfNestedTagsEndParsedOrAsAParseErrorQuickly) {
  Site site;
  site_pages_ = [](const std::string& path, int) {
    if (path != "/t/nested") return Reply{200, Html(path.substr(3)), "text/html", {}, {}};
    std::string body = "<html><body><h1>nested</h1>";
    body.reserve(10 * 1024 * 1024 + 64);
    while (body.size() < 10 * 1024 * 1024) body += "<div><span><a href=\"/t/x\">";
    return Reply{200, std::move(body), "text/html", {}, {}};
  };
  const auto o = CrawlWith(site, "/t/nested",
                           {{"request", {{"max_bytes", 16 * 1024 * 1024}, {"timeout_ms", 10000}}}});
  EXPECT_EQ(site.CountExact("/t/nested"), 1);
  if (o.request["state"] == "done") {
    EXPECT_GE(o.job["bytes"].get<int64_t>(), 10 * 1024 * 1024);
  }
  EXPECT_TRUE(o.request["state"] == "done" ||
              (o.request["state"] == "failed" && o.request["error_class"] == "Parse"))
      << o.request.dump();
  EXPECT_LT(o.took.count(), 15'000);
}

TEST_F(ExtractorPolitenessTest, TheWatchdogAbortsAJobThatMakesNoProgress) {
  Site site;
  site.SetPages([](const std::string& path, int) {
    if (path == "/t/root") return Reply{200, Html("root", {"/t/hang"}), "text/html", {}, {}};
    return Reply{200, Html("hang"), "text/html", {}, milliseconds(5000)};
  });
  AddConfig(1, Config({site.Url("/t/root")},
                      {{"request", {{"timeout_ms", 60000}}}, {"limits", {{"watchdog_ms", 1000}}}}));
  const auto r = Crawl(1, MaxTime(milliseconds(7000)));
  Json job = Row(r.job);
  EXPECT_EQ(job["status"], "aborted");
  EXPECT_NE(job["status_reason"].dump().find("watchdog"), std::string::npos)
      << job["status_reason"];
  EXPECT_EQ(RunRow(r.job)["status"], "aborted");
  EXPECT_LT(r.took.count(), 4000) << "watchdog_ms 1000 (the stalled page answers after 5 s)";
}

// ---- 5. safety ----------------------------------------------------------------------------

TEST_F(ExtractorPolitenessTest, PrivateAddressesAreRefusedUnlessTheConfigAllowsThem) {
  Site site;
  site.SetPages(Fan(2));
  AddConfig(1, Config({site.Url("/t/root")},
                      {{"allow_private_network", false}, {"retry", {{"max_retries", 3}}}}));
  AddConfig(2, Config({site.Url("/t/root")}, {{"allow_private_network", true}}));
  const auto refused = Crawl(1);
  EXPECT_EQ(site.Count("/t/"), 0);
  Json req = Request(refused.job, "/t/root");
  EXPECT_EQ(req["state"], "failed");
  EXPECT_EQ(req["error_class"], "Download");
  EXPECT_NE(req["error_message"].dump().find("blocked_address"), std::string::npos) << req.dump();
  EXPECT_EQ(req["attempts"], 1) << "a blocked address is not retried";
  EXPECT_EQ(Row(refused.job)["error_counts"], Json({{"Download", 1}}));
  EXPECT_EQ(RunRow(refused.job)["error_counts"], Json({{"Download", 1}}));
  const auto allowed = Crawl(2);
  EXPECT_EQ(site.Count("/t/"), 3);
  EXPECT_EQ(Row(allowed.job)["pages"], 3);
}

TEST_F(HostilePageTest, ARedirectToAPrivateAddressIsRefused) {
  Site site;
  http::ClientOptions client;
  client.treat_as_public = {"127.0.0.1"};  // the site counts as public; 127.0.0.2 does not
  const std::string target = site.server().UrlWithHost("127.0.0.2", "/t/inside");
  const auto o = CrawlWith(site, "/redirect-to?url=" + PercentEncode(target),
                           {{"allow_private_network", false}, {"retry", {{"max_retries", 3}}}},
                           client);
  EXPECT_EQ(o.request["state"], "failed");
  EXPECT_EQ(o.request["error_class"], "Download");
  EXPECT_NE(o.request["error_message"].dump().find("blocked_address"), std::string::npos)
      << o.request.dump();
  EXPECT_EQ(o.request["attempts"], 1);
  EXPECT_EQ(site.CountExact("/t/inside"), 0);
  EXPECT_EQ(o.job["error_counts"], Json({{"Download", 1}}));
}

// ---- 6. dead letters ----------------------------------------------------------------------

TEST_F(ExtractorPolitenessTest, RequestsThatFailAfterTheirRetriesBecomeDeadLetters) {
  Site site;
  site.SetPages([](const std::string& path, int) {
    if (path == "/t/root")
      return Reply{200, Html("root", {"/t/gone", "/t/broken", "/t/ok"}), "text/html", {}, {}};
    if (path == "/t/gone") return Reply{404, "gone", "text/plain", {}, {}};
    if (path == "/t/broken") return Reply{500, "oops", "text/plain", {}, {}};
    return Reply{200, Html(path.substr(3)), "text/html", {}, {}};
  });
  AddConfig(1, Config({site.Url("/t/root")}, {{"retry", {{"max_retries", 1}}}}));
  const auto r = Crawl(1);
  const int64_t run_id = RunRow(r.job)["id"];
  EXPECT_EQ(Int("SELECT count(*) FROM dead_letters"), 2);
  for (const auto& [suffix, status, attempts] :
       std::vector<std::tuple<std::string, int, int>>{{"/t/gone", 404, 1}, {"/t/broken", 500, 2}}) {
    Json dl = Query(
        "SELECT row_to_json(d)::text FROM dead_letters d WHERE error_context->>'url' LIKE '%" +
        suffix + "'");
    ASSERT_FALSE(dl.is_null()) << "no dead letter for " << suffix;
    EXPECT_EQ(dl["queue"], "extraction_queue");
    EXPECT_EQ(dl["task_name"], "extractor.tasks.refetch");
    EXPECT_EQ(dl["error_class"], "HttpStatus");
    EXPECT_EQ(dl["attempts"], attempts) << suffix;
    Json ctx = dl["error_context"];
    EXPECT_EQ(ctx["url"], site.Url(suffix));
    EXPECT_EQ(ctx["status"], status);
    EXPECT_EQ(ctx["attempts"], attempts);
    EXPECT_EQ(ctx["job_id"], r.job);
    EXPECT_EQ(ctx["run_id"], run_id);
  }
}

// A dead letter's replay is an extractor.tasks.refetch message: CrawlStore::Refetch, as the
// extract consumer runs it through Engine::SubmitRefetch.
TEST_F(ExtractorPolitenessTest, ARefetchedDeadRequestIsFetchedAgain) {
  Site site;
  std::atomic<bool> gone_fixed{false};
  site.SetPages([&](const std::string& path, int) {
    if (path == "/t/root")
      return Reply{200, Html("root", {"/t/gone", "/t/slow"}), "text/html", {}, {}};
    if (path == "/t/gone" && !gone_fixed) return Reply{404, "gone", "text/plain", {}, {}};
    if (path == "/t/slow") return Reply{200, Html("slow"), "text/html", {}, milliseconds(1500)};
    return Reply{200, Html(path.substr(3)), "text/html", {}, {}};
  });
  AddConfig(1, Config({site.Url("/t/root")}, {{"retry", {{"max_retries", 1}}}}));
  CrawlStore store(pool(), "refetcher");
  // 1. While the job still runs (its slow page holds it open): the request goes back to
  //    pending with fresh attempts and is fetched again within the same job.
  bool refetched_running = false;
  int64_t refetch_job = 0;
  CrawlOptions o;
  o.tick = [&] {
    if (refetched_running) return;
    Json gone = Query("SELECT row_to_json(r)::text FROM crawl_requests r "
                            "WHERE url LIKE '%/t/gone' AND state = 'failed'");
    if (gone.is_null()) return;
    gone_fixed = true;
    refetched_running = true;
    auto job = store.Refetch(gone["id"].get<int64_t>(), "refetch-while-running");
    ASSERT_TRUE(job.ok()) << job.error().message();
    refetch_job = *job;
  };
  const auto first = Crawl(1, o);
  ASSERT_TRUE(refetched_running) << "the job ended before /t/gone failed";
  EXPECT_EQ(refetch_job, first.job) << "a running job takes the request back itself";
  EXPECT_EQ(Int("SELECT count(*) FROM crawl_runs"), 1);
  EXPECT_EQ(site.CountExact("/t/gone"), 2);  // a 404 is not retried; then the refetch
  Json again = Request(first.job, "/t/gone");
  EXPECT_EQ(again["state"], "done");
  EXPECT_EQ(again["attempts"], 1) << "fresh attempts";
  EXPECT_EQ(Row(first.job)["status"], "succeeded");
  EXPECT_EQ(Row(first.job)["pages"], 3);
  EXPECT_EQ(Int("SELECT count(*) FROM extracted_items WHERE item_key LIKE '%gone%'"), 1);

  // 2. After the job ended: a new run and job for the same config fetch that page again
  //    (through the engine, as the extract consumer replays it).
  CrawlOptions o2;
  o2.refetch = again["id"].get<int64_t>();
  o2.message = "refetch-after-the-end";
  const auto second = Crawl(1, o2);
  EXPECT_NE(second.job, first.job);
  EXPECT_EQ(Int("SELECT count(*) FROM crawl_runs"), 2);
  EXPECT_EQ(Int("SELECT count(*) FROM extraction_jobs"), 2);
  EXPECT_EQ(Row(second.job)["crawl_config_id"], 1);
  EXPECT_EQ(site.CountExact("/t/gone"), 3);
  EXPECT_EQ(Request(second.job, "/t/gone")["state"], "done");
  EXPECT_EQ(Row(second.job)["status"], "succeeded");
  EXPECT_EQ(site.CountExact("/t/root"), 1) << "a refetch fetches the one page, not the crawl";
  // The same refetch message again (redelivered) starts nothing new.
  Crawl(1, o2);
  EXPECT_EQ(Int("SELECT count(*) FROM crawl_runs"), 2);
  EXPECT_EQ(site.CountExact("/t/gone"), 3);
}

}  // namespace
}  // namespace celeriac::extractor
