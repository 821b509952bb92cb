// The admin HTTP API on 127.0.0.1:<any port> against a fresh migrated schema and a memory
// broker, driven by httplib::Client: auth, probes, run-now, site analysis, runs, dead letters
// (list, show, replay, purge), metrics and the OpenAPI document.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <httplib.h>
#include <spdlog/sinks/base_sink.h>

#include "core/broker/amqp_broker.hpp"
#include "core/broker/memory_broker.hpp"
#include "core/celery/codec.hpp"
#include "core/log/log.hpp"
#include "core/pg/migrations.hpp"
#include "migrations/migrations.hpp"
#include "orchestrator/api/admin_api.hpp"
#include "orchestrator/ops/ops.hpp"
#include "state/dead_letter_store.hpp"
#include "state/task_state_store.hpp"
#include "tests/support/manual_clock.hpp"
#include "tests/support/pg_test.hpp"

namespace celeriac::orchestrator::api {
namespace {

using state::PgDeadLetterStore;
using state::PgTaskStateStore;
using worker::DeadLetter;
using worker::TaskStateRecord;
using broker::PropertiesFromJson;
using broker::PropertiesToJson;

using Json = nlohmann::ordered_json;
using std::chrono::milliseconds;

constexpr const char* kToken = "test-token-0123456789abcdef";

struct Reply {
  int status = 0;
  Json body;          // parsed when the answer is JSON, else null
  std::string text;
  httplib::Headers headers;

  std::string Header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

// An admin API server on a free port, and a client for it.
class Served {
 public:
  Served(pg::Pool& pool, broker::Broker& broker, std::string token,
         AdminApiOptions options = {}) {
    api_ = std::make_unique<AdminApi>(pool, broker, std::move(token), std::move(options));
    auto port = api_->Start("127.0.0.1:0");
    EXPECT_TRUE(port.ok()) << port.error().ToString();
    port_ = port.ok() ? *port : 0;
  }
  ~Served() { api_->Stop(); }

  // `token` nullopt = no Authorization header.
  Reply Call(const std::string& method, const std::string& path,
             const std::optional<std::string>& body = std::nullopt,
             std::optional<std::string> token = kToken,
             httplib::Headers extra = {}) const {
    httplib::Client client("127.0.0.1", port_);
    client.set_connection_timeout(std::chrono::seconds(5));
    client.set_read_timeout(std::chrono::seconds(30));
    httplib::Headers headers = std::move(extra);
    if (token) headers.emplace("Authorization", "Bearer " + *token);
    httplib::Result r = method == "POST"     ? client.Post(path, headers, body.value_or(""),
                                                               "application/json")
                        : method == "DELETE" ? client.Delete(path, headers)
                                             : client.Get(path, headers);
    Reply out;
    if (!r) {
      ADD_FAILURE() << method << " " << path << ": " << httplib::to_string(r.error());
      return out;
    }
    out.status = r->status;
    out.text = r->body;
    out.headers = r->headers;
    if (r->get_header_value("Content-Type").rfind("application/json", 0) == 0) {
      try {
        out.body = Json::parse(r->body);
      } catch (const std::exception& e) {
        ADD_FAILURE() << method << " " << path << ": JSON answer does not parse: " << e.what();
      }
    }
    return out;
  }

  int port() const { return port_; }

 private:
  std::unique_ptr<AdminApi> api_;
  int port_ = 0;
};

// Records each line with the log context of the thread that logged it (request_id, ...).
class CapturingSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  std::string Text() {
    std::lock_guard lock(mutex_);
    return text_;
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    text_.append(msg.payload.data(), msg.payload.size());
    for (const auto& [k, v] : log::CurrentContext()) text_ += " " + k + "=" + v;
    text_ += "\n";
  }
  void flush_() override {}

 private:
  std::string text_;
};

std::string Describe(const Reply& r) { return std::to_string(r.status) + " " + r.text; }

class AdminApiTest : public testing::PgTest {
 protected:
  void SetUp() override {
    PgTest::SetUp();
    if (IsSkipped() || HasFailure()) return;
    MigrateSchema();
    if (HasFatalFailure()) return;
    Exec(R"(
      INSERT INTO data_sources (id, name) VALUES (1, 'shop');
      INSERT INTO crawl_configs (id, data_source_id, version, status, config)
        VALUES (10, 1, 1, 'active', '{}');
      INSERT INTO crawl_tasks (id, name, data_source_ids, enabled) VALUES
        (1, 'on', '{1}', true), (2, 'off', '{1}', false);
    )");
    ASSERT_TRUE(broker_.Connect().ok());
    served_ = std::make_unique<Served>(pool(), broker_, kToken);
  }

  void TearDown() override {
    served_.reset();  // before the pool goes
    broker_.Close();
    PgTest::TearDown();
  }

  Reply Call(const std::string& method, const std::string& path,
             const std::optional<std::string>& body = std::nullopt,
             std::optional<std::string> token = kToken, httplib::Headers extra = {}) {
    return served_->Call(method, path, body, std::move(token), std::move(extra));
  }

  // Takes every message waiting on `queue`.
  std::vector<broker::Delivery> Drain(const std::string& queue) {
    std::vector<broker::Delivery> out;
    std::mutex mutex;
    auto consumer = broker_.Consume({queue, 0, ""}, [&](broker::Delivery&& d) {
      std::lock_guard lock(mutex);
      out.push_back(std::move(d));
    });
    EXPECT_TRUE(consumer.ok());
    if (!consumer.ok()) return out;
    for (int i = 0; i < 400 && broker_.QueueDepth(queue) > 0; ++i)
      std::this_thread::sleep_for(milliseconds(5));
    std::this_thread::sleep_for(milliseconds(20));
    EXPECT_TRUE(broker_.Cancel(*consumer).ok());
    std::lock_guard lock(mutex);
    for (const auto& d : out) EXPECT_TRUE(broker_.Ack(*consumer, d.delivery_tag).ok());
    return out;
  }

  // A dead letter as the worker writes it: a whole Celery message.
  int64_t AddDeadLetter(const std::string& queue, const std::string& task,
                        const std::string& error_class, const std::string& created_at = "") {
    auto m = celery::NewTask(task, Json::array({1}), Json::object());
    const auto wire = celery::EncodeTask(m, queue);
    DeadLetter letter;
    letter.queue = queue;
    letter.task_name = task;
    letter.task_id = m.id;
    letter.properties = wire.properties;
    letter.body = wire.body;
    letter.error_class = error_class;
    letter.error_message = error_class + " for the test";
    PgDeadLetterStore store(pool());
    auto id = store.Write(letter);
    EXPECT_TRUE(id.ok()) << id.error().ToString();
    if (!created_at.empty()) {
      Exec("UPDATE dead_letters SET created_at = '" + created_at + "' WHERE id = " +
           std::to_string(*id));
    }
    return id.ok() ? *id : 0;
  }

  int64_t Count(const std::string& sql) {
    auto n = pool().Transact<int64_t>([&](pqxx::transaction_base& tx) -> Result<int64_t> {
      return tx.exec1(sql)[0].as<int64_t>();
    });
    EXPECT_TRUE(n.ok());
    return n.ok() ? *n : -1;
  }

  // A run as the extractor leaves it mid-crawl: counters and error counts on the run and its
  // jobs, two hosts with their politeness state, requests in every state; and a run that a bare
  // extract message started (no crawl task).
  void InsertCrawlInProgress() {
    Exec(R"(
      INSERT INTO crawl_runs (id, crawl_task_id, celery_task_id, trigger, status, pages, errors,
                              error_counts, started_at)
        VALUES (5, 1, 'c-5', 'run-now', 'running', 40, 4,
                '{"Download": 3, "RateLimit": 1}', now() - interval '2 minutes');
      INSERT INTO crawl_runs (id, crawl_task_id, celery_task_id, trigger, status)
        VALUES (6, NULL, 'c-6', 'bff', 'pending');
      INSERT INTO extraction_jobs (id, run_id, crawl_config_id, config_version, data_source_id,
                                   celery_task_id, status, status_reason, pages, errors,
                                   item_errors, error_counts, requests_open, requests_total,
                                   requests_failed, started_at)
        VALUES (50, 5, 10, 1, 1, 'e-50', 'running', NULL, 40, 4, 2,
                '{"Download": 3, "RateLimit": 1}', 3, 9, 1, now() - interval '1 minute');
      INSERT INTO crawl_hosts (run_id, host, robots_status, robots_txt, robots_fetched_at,
                               crawl_delay_ms, state, delay_ms, backoff_until, requests, errors,
                               rate_limited)
        VALUES (5, 'https://shop.example', 200, 'User-agent: *' || chr(10) || 'Crawl-delay: 2',
                now(), 2000, 'backing_off', 4000, now() + interval '30 seconds', 30, 4, 1),
               (5, 'http://cdn.example:8080', NULL, NULL, NULL, NULL, 'ok', 0, NULL, 5, 0, 0);
      INSERT INTO crawl_requests (job_id, fingerprint, url, page_type, state) VALUES
        (50, 'f1', 'https://shop.example/1', 'list', 'pending'),
        (50, 'f2', 'https://shop.example/2', 'list', 'pending'),
        (50, 'f3', 'https://shop.example/3', 'item', 'leased'),
        (50, 'f4', 'https://shop.example/4', 'item', 'done'),
        (50, 'f5', 'https://shop.example/5', 'item', 'done'),
        (50, 'f6', 'https://shop.example/6', 'item', 'done'),
        (50, 'f7', 'https://shop.example/7', 'item', 'done'),
        (50, 'f8', 'https://shop.example/8', 'item', 'failed'),
        (50, 'f9', 'https://shop.example/9', 'item', 'skipped');
    )");
  }

  broker::MemoryBroker broker_;
  std::unique_ptr<Served> served_;
};

void ExpectFieldError(const Reply& r, int status, const std::string& field) {
  EXPECT_EQ(r.status, status) << Describe(r);
  ASSERT_TRUE(r.body.is_object()) << Describe(r);
  EXPECT_TRUE(r.body.contains("error") && r.body["error"].is_string()) << Describe(r);
  EXPECT_EQ(r.body.value("field", ""), field) << Describe(r);
}

std::string WithIds(std::string path) {
  const auto at = path.find("{id}");
  if (at != std::string::npos) path.replace(at, 4, "1");
  return path;
}

// ---- auth ------------------------------------------------------------------------------------

TEST_F(AdminApiTest, AdminRoutesNeedTheBearerToken) {
  const auto none = Call("GET", "/api/v1/runs", std::nullopt, std::nullopt);
  EXPECT_EQ(none.status, 401) << Describe(none);
  EXPECT_EQ(none.Header("WWW-Authenticate").rfind("Bearer", 0), 0u) << Describe(none);
  EXPECT_EQ(none.Header("Content-Type").rfind("application/json", 0), 0u);
  EXPECT_TRUE(none.body.contains("error"));

  const auto wrong = Call("GET", "/api/v1/runs", std::nullopt, std::string("not-the-token"));
  EXPECT_EQ(wrong.status, 401) << Describe(wrong);
  EXPECT_EQ(wrong.Header("WWW-Authenticate").rfind("Bearer", 0), 0u);

  const auto prefix = Call("GET", "/api/v1/runs", std::nullopt, std::string(kToken).substr(0, 5));
  EXPECT_EQ(prefix.status, 401) << "a prefix of the token is not the token";
  const auto longer = Call("GET", "/api/v1/runs", std::nullopt, std::string(kToken) + "x");
  EXPECT_EQ(longer.status, 401);

  const auto basic = Call("GET", "/api/v1/runs", std::nullopt, std::nullopt,
                          {{"Authorization", std::string("Basic ") + kToken}});
  EXPECT_EQ(basic.status, 401) << "only the Bearer scheme";

  const auto right = Call("GET", "/api/v1/runs");
  EXPECT_EQ(right.status, 200) << Describe(right);
  const auto lower = Call("GET", "/api/v1/runs", std::nullopt, std::nullopt,
                          {{"Authorization", std::string("bearer ") + kToken}});
  EXPECT_EQ(lower.status, 200) << "the scheme is case-insensitive";

  // Every admin route refuses before it looks at its input or touches anything.
  for (const auto& route : AdminApi::Routes()) {
    if (!route.admin) continue;
    const auto r = Call(route.method, WithIds(route.path), R"({"all": true})", std::nullopt);
    EXPECT_EQ(r.status, 401) << route.method << " " << route.path << ": " << Describe(r);
  }
  EXPECT_EQ(Count("SELECT count(*) FROM crawl_runs"), 0);
  EXPECT_EQ(broker_.QueueDepth("celery"), 0u);
}

TEST_F(AdminApiTest, AnEmptyConfiguredTokenRefusesEveryone) {
  Served open(pool(), broker_, "");
  for (const std::optional<std::string>& token :
       {std::optional<std::string>(), std::optional<std::string>(""),
        std::optional<std::string>(kToken)}) {
    const auto r = open.Call("GET", "/api/v1/runs", std::nullopt, token);
    EXPECT_EQ(r.status, 401) << Describe(r);
  }
  EXPECT_EQ(open.Call("GET", "/healthz", std::nullopt, std::nullopt).status, 200);
}

TEST_F(AdminApiTest, RequestsAreLoggedWithTheirIdAndNeverTheToken) {
  auto logger = log::Get("api");
  auto sink = std::make_shared<CapturingSink>();
  const auto level = logger->level();
  logger->sinks().push_back(sink);
  logger->set_level(spdlog::level::info);

  const auto r = Call("GET", "/api/v1/runs?limit=5", std::nullopt, kToken,
                      {{"X-Request-Id", "req-abc.123"}});
  const auto denied = Call("GET", "/api/v1/runs", std::nullopt, std::string("wrong-secret-xyz"));
  const auto fresh = Call("GET", "/api/v1/nothing-here");
  logger->flush();
  logger->sinks().pop_back();
  logger->set_level(level);

  EXPECT_EQ(r.Header("X-Request-Id"), "req-abc.123") << "echoed";
  EXPECT_FALSE(denied.Header("X-Request-Id").empty()) << "generated when not given";
  EXPECT_NE(denied.Header("X-Request-Id"), "req-abc.123");
  EXPECT_FALSE(fresh.Header("X-Request-Id").empty()) << "also on answers no route gave";
  const std::string logs = sink->Text();
  EXPECT_NE(logs.find("GET /api/v1/runs 200"), std::string::npos) << logs;
  EXPECT_NE(logs.find("request_id=req-abc.123"), std::string::npos) << logs;
  EXPECT_NE(logs.find("request_id=" + denied.Header("X-Request-Id")), std::string::npos) << logs;
  EXPECT_NE(logs.find("GET /api/v1/runs 401"), std::string::npos) << logs;
  EXPECT_NE(logs.find("GET /api/v1/nothing-here 404"), std::string::npos) << logs;
  EXPECT_NE(logs.find("ms"), std::string::npos) << "duration: " << logs;
  EXPECT_EQ(logs.find(kToken), std::string::npos) << "token leaked: " << logs;
  EXPECT_EQ(logs.find("wrong-secret-xyz"), std::string::npos) << "token leaked: " << logs;
  EXPECT_EQ(logs.find("limit=5"), std::string::npos) << "no query strings: " << logs;
}

// ---- probes ----------------------------------------------------------------------------------

TEST_F(AdminApiTest, HealthAndReadinessNeedNoToken) {
  const auto health = Call("GET", "/healthz", std::nullopt, std::nullopt);
  EXPECT_EQ(health.status, 200) << Describe(health);
  EXPECT_EQ(health.body, Json({{"status", "ok"}}));
  const auto ready = Call("GET", "/readyz", std::nullopt, std::nullopt);
  EXPECT_EQ(ready.status, 200) << Describe(ready);
  EXPECT_EQ(ready.body["postgres"], "ok");
  EXPECT_EQ(ready.body["broker"], "ok");
}

TEST_F(AdminApiTest, ReadinessNamesWhatIsDownAndAdminRoutesAnswer503) {
  pg::PoolOptions dead;
  dead.url = "postgresql://celeriac:celeriac@127.0.0.1:1/celeriac";
  dead.size = 1;
  dead.connect_timeout_s = 1;
  dead.max_attempts = 1;
  pg::Pool dead_pool(dead);
  broker::MemoryBroker closed_broker;
  closed_broker.Close();

  {
    Served no_pg(dead_pool, broker_, kToken);
    const auto ready = no_pg.Call("GET", "/readyz", std::nullopt, std::nullopt);
    EXPECT_EQ(ready.status, 503) << Describe(ready);
    EXPECT_NE(ready.body.value("postgres", "ok"), "ok") << Describe(ready);
    EXPECT_EQ(ready.body.value("broker", ""), "ok") << Describe(ready);
    EXPECT_EQ(no_pg.Call("GET", "/healthz", std::nullopt, std::nullopt).status, 200)
        << "alive even when Postgres is not";

    for (const auto& [method, path] : std::vector<std::pair<std::string, std::string>>{
             {"GET", "/api/v1/runs"},
             {"GET", "/api/v1/runs/1"},
             {"GET", "/api/v1/dead-letters"},
             {"POST", "/api/v1/crawl-tasks/1/run-now"}}) {
      const auto r = no_pg.Call(method, path);
      EXPECT_EQ(r.status, 503) << method << " " << path << ": " << Describe(r);
      EXPECT_TRUE(r.body.contains("error")) << Describe(r);
      EXPECT_FALSE(r.Header("Retry-After").empty());
    }
    const auto metrics = no_pg.Call("GET", "/metrics", std::nullopt, std::nullopt);
    EXPECT_EQ(metrics.status, 200) << Describe(metrics);
    EXPECT_NE(metrics.text.find("celeriac_api_database_up 0"), std::string::npos)
        << metrics.text;
  }
  {
    Served no_broker(pool(), closed_broker, kToken);
    const auto ready = no_broker.Call("GET", "/readyz", std::nullopt, std::nullopt);
    EXPECT_EQ(ready.status, 503) << Describe(ready);
    EXPECT_EQ(ready.body.value("postgres", ""), "ok") << Describe(ready);
    EXPECT_NE(ready.body.value("broker", "ok"), "ok") << Describe(ready);
    const auto site = no_broker.Call("POST", "/api/v1/site-analysis",
                                     R"({"data_source_id": 1, "theme_name": "t"})");
    EXPECT_EQ(site.status, 503) << Describe(site);
  }
}

// A TCP port on 127.0.0.1 that takes connections and never says a word: the kernel completes
// the handshake (the listen backlog), nobody reads or writes. What a hung or blackholed
// Postgres or RabbitMQ looks like to a client.
class SilentListener {
 public:
  SilentListener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(fd_, 64) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ADD_FAILURE() << "cannot open a listener: " << std::strerror(errno);
      return;
    }
    port_ = ntohs(addr.sin_port);
  }
  ~SilentListener() {
    if (fd_ >= 0) ::close(fd_);
  }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// A port nobody listens on (bound, then closed): connections to it are refused.
int ClosedPort() {
  SilentListener l;
  return l.port();
}

TEST_F(AdminApiTest, ReadinessAnswersWithinTwoSecondsInAnyOutageWithAGenericReason) {
  SilentListener silent_pg;
  SilentListener silent_mq;
  const int closed = ClosedPort();
  ASSERT_GT(silent_pg.port(), 0);
  ASSERT_GT(closed, 0);
  const std::string pg_ok = pool().options().url;
  auto pg_url = [](int port) {
    return "postgresql://celeriac:s3cret@127.0.0.1:" + std::to_string(port) + "/celeriac";
  };
  auto mq_url = [](int port) {
    return "amqp://guest:s3cret@127.0.0.1:" + std::to_string(port) + "//";
  };
  struct Case {
    std::string what;
    std::string pg;
    std::string mq;  // "" = an in-memory broker, always there
  };
  const std::vector<Case> cases = {
      {"postgres refuses", pg_url(closed), ""},
      {"postgres accepts and never answers", pg_url(silent_pg.port()), ""},
      {"broker refuses", pg_ok, mq_url(closed)},
      {"broker accepts and never answers", pg_ok, mq_url(silent_mq.port())},
      {"both never answer", pg_url(silent_pg.port()), mq_url(silent_mq.port())},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    pg::PoolOptions options;
    options.url = c.pg;
    options.size = 1;
    options.connect_timeout_s = 30;  // the pool's patience must not be what bounds /readyz
    options.max_attempts = 5;
    pg::Pool dependency_pool(options);
    broker::MemoryBroker memory;
    std::unique_ptr<broker::AmqpBroker> amqp;
    if (!c.mq.empty()) {
      broker::AmqpBrokerOptions mq;
      mq.url = c.mq;
      mq.connect_timeout = std::chrono::seconds(3);
      mq.rpc_timeout = std::chrono::seconds(3);
      auto made = broker::AmqpBroker::Create(mq);
      ASSERT_TRUE(made.ok()) << made.error().ToString();
      amqp = std::move(*made);
    }
    broker::Broker& dependency_broker = amqp ? static_cast<broker::Broker&>(*amqp) : memory;
    Json expected = {{"status", "unavailable"},
                     {"postgres", c.pg == pg_ok ? "ok" : "unreachable"},
                     {"broker", c.mq.empty() ? "ok" : "unreachable"}};
    {
      Served api(dependency_pool, dependency_broker, kToken);
      for (int i = 0; i < 3; ++i) {
        const auto start = std::chrono::steady_clock::now();
        const auto ready = api.Call("GET", "/readyz", std::nullopt, std::nullopt);
        const auto took = std::chrono::steady_clock::now() - start;
        // The bound is the requirement itself: 1.5 s inside, 2 s promised.
        EXPECT_LT(took, std::chrono::seconds(2))
            << "probe " << i << " took "
            << std::chrono::duration_cast<milliseconds>(took).count() << " ms";
        EXPECT_EQ(ready.status, 503) << Describe(ready);
        EXPECT_EQ(ready.body, expected) << Describe(ready);
        EXPECT_FALSE(ready.Header("Retry-After").empty());
      }
      if (amqp) amqp->Close();  // ends a broker check still waiting for a connection
    }
  }
}

// ---- the server's own limits ------------------------------------------------------------------

// A raw client connection to 127.0.0.1:port (no HTTP library: it must be able to say nothing).
class RawClient {
 public:
  explicit RawClient(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
      ADD_FAILURE() << "connect: " << std::strerror(errno);
    // A bound on every read, so that a test fails instead of hanging if the server queued us.
    timeval tv{15, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  ~RawClient() { Close(); }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  bool Send(std::string_view text) {
    return ::send(fd_, text.data(), text.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(text.size());
  }
  // Everything until the server closes; `closed` is false if the read bound passed first.
  std::string ReadToEnd(bool* closed) {
    std::string out;
    char buffer[4096];
    for (;;) {
      const ssize_t n = ::recv(fd_, buffer, sizeof(buffer), 0);
      if (n > 0) {
        out.append(buffer, static_cast<size_t>(n));
        continue;
      }
      *closed = n == 0 || errno == ECONNRESET;
      return out;
    }
  }

 private:
  int fd_ = -1;
};

TEST_F(AdminApiTest, SlowClientsDoNotHoldUpOthersAndAreCutOff) {
  AdminApiOptions options;
  options.limits.threads = 4;
  options.limits.max_queued = 4;
  options.limits.read_timeout = std::chrono::seconds(1);
  options.limits.keep_alive_timeout = std::chrono::seconds(30);
  Served api(pool(), broker_, kToken, options);

  RawClient silent(api.port());  // connects, says nothing
  RawClient trickle(api.port());  // starts a request, then sends a byte every 100 ms
  ASSERT_TRUE(trickle.Send("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "));
  std::atomic<bool> stop{false};
  std::thread dripper([&] {
    for (int i = 0; i < 100 && !stop && trickle.Send("a"); ++i)
      std::this_thread::sleep_for(milliseconds(100));
  });

  for (int i = 0; i < 5; ++i) {
    const auto r = api.Call("GET", "/healthz", std::nullopt, std::nullopt);
    EXPECT_EQ(r.status, 200) << Describe(r);
  }
  // Its request never completes within read_timeout_s: answered 408 and closed, not served
  // by the byte for as long as it likes.
  bool closed = false;
  const std::string answer = trickle.ReadToEnd(&closed);
  stop = true;
  dripper.join();
  EXPECT_TRUE(closed) << "the server kept the connection open: " << answer;
  EXPECT_EQ(answer.rfind("HTTP/1.1 408", 0), 0u) << answer;
  const auto after = api.Call("GET", "/healthz", std::nullopt, std::nullopt);
  EXPECT_EQ(after.status, 200) << Describe(after);
}

TEST_F(AdminApiTest, ConnectionsBeyondThreadsAndQueueAreRefusedNotQueued) {
  AdminApiOptions options;
  options.limits.threads = 2;
  options.limits.max_queued = 2;
  options.limits.read_timeout = std::chrono::seconds(60);
  options.limits.keep_alive_timeout = std::chrono::seconds(60);
  Served api(pool(), broker_, kToken, options);

  // Two connections take the threads and two the queue, for as long as they like (60 s).
  std::vector<std::unique_ptr<RawClient>> held;
  for (int i = 0; i < 4; ++i) held.push_back(std::make_unique<RawClient>(api.port()));
  // Every further one is turned away at once with 503, never parked behind them.
  for (int i = 0; i < 3; ++i) {
    RawClient extra(api.port());
    bool closed = false;
    const std::string answer = extra.ReadToEnd(&closed);
    EXPECT_TRUE(closed) << "connection " << i << " was queued, not refused";
    EXPECT_EQ(answer.rfind("HTTP/1.1 503", 0), 0u) << answer;
    EXPECT_NE(answer.find("Retry-After: 5"), std::string::npos) << answer;
  }
  held.clear();  // their threads see the close and take new connections again

  bool served = false;
  for (int i = 0; i < 50 && !served; ++i) {
    httplib::Client client("127.0.0.1", api.port());
    auto r = client.Get("/healthz");
    served = r && r->status == 200;
    if (!served) std::this_thread::sleep_for(milliseconds(100));
  }
  EXPECT_TRUE(served) << "the server did not recover once the connections closed";
  const auto metrics = api.Call("GET", "/metrics", std::nullopt, std::nullopt);
  // The three above, and any of the retries that came before the threads were free again.
  const std::string name = "\nceleriac_api_connections_refused_total ";
  const auto at = metrics.text.find(name);
  ASSERT_NE(at, std::string::npos) << metrics.text;
  EXPECT_GE(std::stod(metrics.text.substr(at + name.size())), 3.0) << metrics.text;
}

// ---- run-now, site analysis ------------------------------------------------------------------

TEST_F(AdminApiTest, RunNowPublishesExecuteCrawlTaskAndCreatesTheRun) {
  const auto r = Call("POST", "/api/v1/crawl-tasks/1/run-now");
  ASSERT_EQ(r.status, 202) << Describe(r);
  const std::string task_id = r.body.value("task_id", "");
  const int64_t run_id = r.body.value("run_id", int64_t{0});
  EXPECT_FALSE(task_id.empty());
  EXPECT_GT(run_id, 0);
  EXPECT_EQ(Count("SELECT count(*) FROM crawl_runs WHERE id = " + std::to_string(run_id) +
                  " AND celery_task_id = '" + task_id + "' AND trigger = 'run-now'"),
            1);

  const auto messages = Drain("celery");
  ASSERT_EQ(messages.size(), 1u);
  auto decoded = celery::DecodeTask(messages[0].properties, messages[0].body);
  ASSERT_TRUE(decoded.ok()) << decoded.failure().message;
  EXPECT_EQ(decoded.message().task, "orchestrator.tasks.execute_crawl_task");
  EXPECT_EQ(decoded.message().id, task_id);
  EXPECT_EQ(decoded.message().args, Json::array({1}));

  const auto run = Call("GET", "/api/v1/runs/" + std::to_string(run_id));
  EXPECT_EQ(run.status, 200) << Describe(run);
  EXPECT_EQ(run.body.value("trigger", ""), "run-now");

  const auto unknown = Call("POST", "/api/v1/crawl-tasks/99/run-now");
  EXPECT_EQ(unknown.status, 404) << Describe(unknown);
  const auto disabled = Call("POST", "/api/v1/crawl-tasks/2/run-now");
  EXPECT_EQ(disabled.status, 409) << Describe(disabled);
  ExpectFieldError(Call("POST", "/api/v1/crawl-tasks/abc/run-now"), 400, "id");
  ExpectFieldError(Call("POST", "/api/v1/crawl-tasks/-1/run-now"), 400, "id");
  ExpectFieldError(Call("POST", "/api/v1/crawl-tasks/1/run-now", R"({"wait": true})"), 400,
                   "wait");
  EXPECT_EQ(broker_.QueueDepth("celery"), 0u) << "refused requests publish nothing";
  EXPECT_EQ(Count("SELECT count(*) FROM crawl_runs"), 1);
}

TEST_F(AdminApiTest, SiteAnalysisChecksItsBodyNamingTheField) {
  const std::string path = "/api/v1/site-analysis";
  ExpectFieldError(Call("POST", path), 400, "body");
  ExpectFieldError(Call("POST", path, "{not json"), 400, "body");
  ExpectFieldError(Call("POST", path, "[1, 2]"), 400, "body");
  ExpectFieldError(Call("POST", path, R"({"data_source_id": 7, "theme_name": 5})"), 400,
                   "theme_name");
  ExpectFieldError(Call("POST", path, R"({"data_source_id": 7, "theme_name": ""})"), 400,
                   "theme_name");
  ExpectFieldError(Call("POST", path, R"({"data_source_id": 7})"), 400, "theme_name");
  ExpectFieldError(Call("POST", path, R"({"data_source_id": "7", "theme_name": "t"})"), 400,
                   "data_source_id");
  ExpectFieldError(Call("POST", path, R"({"data_source_id": 1.5, "theme_name": "t"})"), 400,
                   "data_source_id");
  ExpectFieldError(Call("POST", path, R"({"data_source_id": 0, "theme_name": "t"})"), 400,
                   "data_source_id");
  ExpectFieldError(Call("POST", path, R"({"theme_name": "t"})"), 400, "data_source_id");
  ExpectFieldError(
      Call("POST", path, R"({"data_source_id": 7, "theme_name": "t", "priority": 1})"), 400,
      "priority");
  ExpectFieldError(
      Call("POST", path, Json{{"data_source_id", 7}, {"theme_name", std::string(201, 'x')}}.dump()),
      400, "theme_name");
  EXPECT_EQ(broker_.QueueDepth("celery"), 0u);

  const auto ok = Call("POST", path, R"({"data_source_id": 7, "theme_name": "pricing"})");
  ASSERT_EQ(ok.status, 202) << Describe(ok);
  const auto messages = Drain("celery");
  ASSERT_EQ(messages.size(), 1u);
  auto decoded = celery::DecodeTask(messages[0].properties, messages[0].body);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded.message().task, "orchestrator.tasks.trigger_site_analysis");
  EXPECT_EQ(decoded.message().id, ok.body.value("task_id", ""));
  EXPECT_EQ(decoded.message().args, Json::array({7, "pricing"}));

  // curl -d sends JSON as a form; the body is read as JSON whatever its Content-Type.
  httplib::Client client("127.0.0.1", served_->port());
  auto form = client.Post(path, {{"Authorization", std::string("Bearer ") + kToken}},
                          R"({"data_source_id": 8, "theme_name": "news"})",
                          "application/x-www-form-urlencoded");
  ASSERT_TRUE(form);
  EXPECT_EQ(form->status, 202) << form->body;
  EXPECT_EQ(Drain("celery").size(), 1u);
}

// ---- runs ------------------------------------------------------------------------------------

TEST_F(AdminApiTest, RunsListFiltersPagesAndShowsJobs) {
  Exec(R"(
    INSERT INTO crawl_runs (id, crawl_task_id, celery_task_id, trigger, status) VALUES
      (1, 1, 'c-1', 'beat', 'succeeded'), (2, 1, 'c-2', 'bff', 'failed'),
      (3, 2, 'c-3', 'run-now', 'running'), (4, 1, 'c-4', 'beat', 'pending');
    INSERT INTO extraction_jobs (run_id, crawl_config_id, config_version, data_source_id,
                                 celery_task_id, status, pages)
      VALUES (3, 10, 1, 1, 'e-1', 'running', 12);
  )");
  auto ids = [](const Reply& r) {
    std::vector<int64_t> out;
    for (const auto& run : r.body["runs"]) out.push_back(run["id"].get<int64_t>());
    return out;
  };
  const auto all = Call("GET", "/api/v1/runs");
  ASSERT_EQ(all.status, 200) << Describe(all);
  EXPECT_EQ(ids(all), (std::vector<int64_t>{4, 3, 2, 1})) << "newest first";
  EXPECT_TRUE(all.body["next_before_id"].is_null());
  EXPECT_EQ(ids(Call("GET", "/api/v1/runs?crawl_task_id=1")), (std::vector<int64_t>{4, 2, 1}));
  EXPECT_EQ(ids(Call("GET", "/api/v1/runs?status=failed")), (std::vector<int64_t>{2}));
  EXPECT_EQ(ids(Call("GET", "/api/v1/runs?trigger=beat&status=succeeded")),
            (std::vector<int64_t>{1}));
  const auto page = Call("GET", "/api/v1/runs?limit=2");
  EXPECT_EQ(ids(page), (std::vector<int64_t>{4, 3}));
  EXPECT_EQ(page.body["next_before_id"], 3);
  EXPECT_EQ(ids(Call("GET", "/api/v1/runs?limit=2&before_id=3")), (std::vector<int64_t>{2, 1}));

  const auto show = Call("GET", "/api/v1/runs/3");
  ASSERT_EQ(show.status, 200) << Describe(show);
  EXPECT_EQ(show.body["status"], "running");
  ASSERT_EQ(show.body["jobs"].size(), 1u) << Describe(show);
  EXPECT_EQ(show.body["jobs"][0]["pages"], 12);
  EXPECT_EQ(Call("GET", "/api/v1/runs/1").body["jobs"], Json::array()) << "jobs even when none";
  EXPECT_EQ(Call("GET", "/api/v1/runs/999").status, 404);

  ExpectFieldError(Call("GET", "/api/v1/runs/x1"), 400, "id");
  ExpectFieldError(Call("GET", "/api/v1/runs?status=done"), 400, "status");
  ExpectFieldError(Call("GET", "/api/v1/runs?trigger=cron"), 400, "trigger");
  ExpectFieldError(Call("GET", "/api/v1/runs?limit=0"), 400, "limit");
  ExpectFieldError(Call("GET", "/api/v1/runs?limit=100000"), 400, "limit");
  ExpectFieldError(Call("GET", "/api/v1/runs?crawl_task_id=one"), 400, "crawl_task_id");
  ExpectFieldError(Call("GET", "/api/v1/runs?statuss=failed"), 400, "statuss");
  ExpectFieldError(Call("GET", "/api/v1/runs?status=failed&status=running"), 400, "status");
}

// Every key of `object` is a property of the OpenAPI schema `name`.
void ExpectDocumented(const Json& doc, const std::string& name, const Json& object) {
  const Json& props = doc["components"]["schemas"][name]["properties"];
  ASSERT_TRUE(props.is_object()) << name;
  for (const auto& [key, value] : object.items()) {
    EXPECT_TRUE(props.contains(key)) << name << "." << key << " is served but not documented";
  }
}

TEST_F(AdminApiTest, RunsShowErrorCountsJobsHostsAndRequestsByState) {
  InsertCrawlInProgress();
  const auto list = Call("GET", "/api/v1/runs");
  ASSERT_EQ(list.status, 200) << Describe(list);
  ASSERT_EQ(list.body["runs"].size(), 2u) << Describe(list);
  const Json& bare = list.body["runs"][0];
  EXPECT_EQ(bare["id"], 6);
  EXPECT_TRUE(bare["crawl_task_id"].is_null()) << "a run no crawl task started is listed";
  EXPECT_EQ(bare["error_counts"], Json::object());
  const Json& listed = list.body["runs"][1];
  EXPECT_EQ(listed["error_counts"], (Json{{"Download", 3}, {"RateLimit", 1}}));
  EXPECT_FALSE(listed.contains("jobs")) << "the list carries no jobs, hosts or request counts";
  EXPECT_FALSE(listed.contains("hosts"));
  EXPECT_FALSE(listed.contains("requests"));

  const auto show = Call("GET", "/api/v1/runs/5");
  ASSERT_EQ(show.status, 200) << Describe(show);
  const Json& run = show.body;
  EXPECT_EQ(run["error_counts"], (Json{{"Download", 3}, {"RateLimit", 1}}));
  EXPECT_EQ(run["requests"],
            (Json{{"pending", 2}, {"leased", 1}, {"done", 4}, {"failed", 1}, {"skipped", 1}}));

  ASSERT_EQ(run["jobs"].size(), 1u) << Describe(show);
  const Json& job = run["jobs"][0];
  EXPECT_EQ(job["id"], 50);
  EXPECT_EQ(job["crawl_config_id"], 10);
  EXPECT_EQ(job["status"], "running");
  EXPECT_TRUE(job["status_reason"].is_null());
  EXPECT_EQ(job["pages"], 40);
  EXPECT_EQ(job["errors"], 4);
  EXPECT_EQ(job["item_errors"], 2);
  EXPECT_EQ(job["error_counts"], (Json{{"Download", 3}, {"RateLimit", 1}}));
  EXPECT_EQ(job["requests_open"], 3);
  EXPECT_EQ(job["requests_total"], 9);
  EXPECT_EQ(job["requests_failed"], 1);
  EXPECT_TRUE(job["started_at"].is_string()) << Describe(show);
  EXPECT_TRUE(job["finished_at"].is_null());

  EXPECT_EQ(run["hosts_total"], 2);
  ASSERT_EQ(run["hosts"].size(), 2u) << Describe(show);
  const Json& shop = run["hosts"][0];  // the most active first
  EXPECT_EQ(shop["host"], "https://shop.example");
  EXPECT_EQ(shop["state"], "backing_off");
  EXPECT_EQ(shop["delay_ms"], 4000);
  EXPECT_TRUE(shop["backoff_until"].is_string());
  EXPECT_TRUE(shop["next_slot_at"].is_string());
  EXPECT_EQ(shop["requests"], 30);
  EXPECT_EQ(shop["errors"], 4);
  EXPECT_EQ(shop["rate_limited"], 1);
  EXPECT_EQ(shop["robots_status"], 200);
  EXPECT_EQ(shop["robots_txt_bytes"], 28) << "its length, not its text";
  EXPECT_FALSE(shop.contains("robots_txt"));
  EXPECT_EQ(shop["crawl_delay_ms"], 2000);
  const Json& cdn = run["hosts"][1];
  EXPECT_EQ(cdn["host"], "http://cdn.example:8080");
  EXPECT_EQ(cdn["state"], "ok");
  EXPECT_TRUE(cdn["robots_status"].is_null());
  EXPECT_TRUE(cdn["robots_txt_bytes"].is_null());
  EXPECT_TRUE(cdn["backoff_until"].is_null());

  // A run without jobs, hosts or requests shows each, empty.
  const auto empty = Call("GET", "/api/v1/runs/6");
  ASSERT_EQ(empty.status, 200) << Describe(empty);
  EXPECT_EQ(empty.body["hosts"], Json::array());
  EXPECT_EQ(empty.body["hosts_total"], 0);
  EXPECT_EQ(empty.body["requests"]["done"], 0);

  // What is served is what the document describes.
  const auto doc = Call("GET", "/openapi.json", std::nullopt, std::nullopt);
  ASSERT_EQ(doc.status, 200);
  ExpectDocumented(doc.body, "Run", run);
  ExpectDocumented(doc.body, "Job", job);
  ExpectDocumented(doc.body, "Host", shop);
  ExpectDocumented(doc.body, "RequestStates", run["requests"]);
}

// ---- dead letters ----------------------------------------------------------------------------

TEST_F(AdminApiTest, DeadLettersListFilterAndShow) {
  const auto a = AddDeadLetter("celery", "orchestrator.tasks.nope", "NotRegistered",
                               "2024-01-10T00:00:00Z");
  const auto b = AddDeadLetter("celery", "orchestrator.tasks.execute_crawl_task", "TypeError");
  const auto c = AddDeadLetter("other", "orchestrator.tasks.nope", "NotRegistered");
  auto ids = [](const Reply& r) {
    std::vector<int64_t> out;
    for (const auto& d : r.body["dead_letters"]) out.push_back(d["id"].get<int64_t>());
    std::sort(out.begin(), out.end());
    return out;
  };
  const auto all = Call("GET", "/api/v1/dead-letters");
  ASSERT_EQ(all.status, 200) << Describe(all);
  EXPECT_EQ(ids(all), (std::vector<int64_t>{a, b, c}));
  for (const auto& d : all.body["dead_letters"]) {
    EXPECT_FALSE(d.contains("body") || d.contains("body_base64")) << "no bodies in lists";
    EXPECT_FALSE(d.contains("headers"));
  }
  EXPECT_EQ(ids(Call("GET", "/api/v1/dead-letters?queue=other")), (std::vector<int64_t>{c}));
  EXPECT_EQ(ids(Call("GET", "/api/v1/dead-letters?error_class=NotRegistered")),
            (std::vector<int64_t>{a, c}));
  EXPECT_EQ(ids(Call("GET", "/api/v1/dead-letters?task=orchestrator.tasks.execute_crawl_task")),
            (std::vector<int64_t>{b}));
  EXPECT_EQ(ids(Call("GET", "/api/v1/dead-letters?since=2024-06-01T00:00:00Z")),
            (std::vector<int64_t>{b, c}));
  EXPECT_EQ(ids(Call("GET", "/api/v1/dead-letters?until=2024-06-01T00:00:00%2B00:00")),
            (std::vector<int64_t>{a}));
  EXPECT_EQ(Call("GET", "/api/v1/dead-letters?limit=1").body["dead_letters"].size(), 1u);

  ExpectFieldError(Call("GET", "/api/v1/dead-letters?since=yesterday"), 400, "since");
  ExpectFieldError(Call("GET", "/api/v1/dead-letters?until=2024-13-01"), 400, "until");
  ExpectFieldError(Call("GET", "/api/v1/dead-letters?include_purged=maybe"), 400,
                   "include_purged");
  ExpectFieldError(Call("GET", "/api/v1/dead-letters?queues=celery"), 400, "queues");

  const auto show = Call("GET", "/api/v1/dead-letters/" + std::to_string(b));
  ASSERT_EQ(show.status, 200) << Describe(show);
  EXPECT_EQ(show.body["error_class"], "TypeError");
  EXPECT_EQ(show.body["headers"]["task"], "orchestrator.tasks.execute_crawl_task");
  EXPECT_EQ(show.body["properties"]["content_type"], "application/json");
  ASSERT_TRUE(show.body.contains("body")) << Describe(show);
  EXPECT_EQ(Json::parse(show.body["body"].get<std::string>())[0], Json::array({1}));
  EXPECT_EQ(Call("GET", "/api/v1/dead-letters/999999").status, 404);
  ExpectFieldError(Call("GET", "/api/v1/dead-letters/1.5"), 400, "id");
}

TEST_F(AdminApiTest, ReplayOneThenRefuseTheSecondUnlessForced) {
  const auto id = AddDeadLetter("celery", "orchestrator.tasks.execute_crawl_task", "TypeError");
  const std::string path = "/api/v1/dead-letters/" + std::to_string(id) + "/replay";

  const auto dry = Call("POST", path, R"({"dry_run": true})");
  ASSERT_EQ(dry.status, 200) << Describe(dry);
  EXPECT_EQ(dry.body["status"], "would_replay");
  EXPECT_EQ(broker_.QueueDepth("celery"), 0u) << "a dry run publishes nothing";

  const auto first = Call("POST", path);
  ASSERT_EQ(first.status, 200) << Describe(first);
  EXPECT_EQ(first.body["status"], "replayed");
  EXPECT_EQ(first.body["dead_letter_id"], id);
  auto messages = Drain("celery");
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0].properties.headers.value(ops::kDeadLetterHeader, int64_t{0}), id);
  EXPECT_EQ(Count("SELECT replay_count FROM dead_letters WHERE id = " + std::to_string(id)), 1);

  const auto second = Call("POST", path, "{}");
  EXPECT_EQ(second.status, 409) << Describe(second);
  EXPECT_EQ(second.body["outcome"]["status"], "already_replayed") << Describe(second);
  EXPECT_EQ(second.body.value("field", ""), "force");
  EXPECT_EQ(broker_.QueueDepth("celery"), 0u);

  const auto forced = Call("POST", path, R"({"force": true})");
  EXPECT_EQ(forced.status, 200) << Describe(forced);
  EXPECT_EQ(forced.body["status"], "replayed");
  EXPECT_EQ(Drain("celery").size(), 1u);
  EXPECT_EQ(Count("SELECT replay_count FROM dead_letters WHERE id = " + std::to_string(id)), 2);

  EXPECT_EQ(Call("POST", "/api/v1/dead-letters/999999/replay").status, 404);
  ExpectFieldError(Call("POST", path, R"({"force": "yes"})"), 400, "force");
  ExpectFieldError(Call("POST", path, "nope"), 400, "body");
  ExpectFieldError(Call("POST", "/api/v1/dead-letters/abc/replay"), 400, "id");
}

TEST_F(AdminApiTest, ReplayBySelectionWithDryRun) {
  const auto a = AddDeadLetter("celery", "orchestrator.tasks.nope", "NotRegistered");
  const auto b = AddDeadLetter("celery", "orchestrator.tasks.nope", "NotRegistered");
  const auto c = AddDeadLetter("celery", "orchestrator.tasks.x", "TypeError");
  const std::string path = "/api/v1/dead-letters/replay";

  ExpectFieldError(Call("POST", path, "{}"), 400, "ids");
  ExpectFieldError(Call("POST", path, R"({"ids": [], "dry_run": true})"), 400, "ids");
  ExpectFieldError(Call("POST", path, R"({"all": false})"), 400, "ids");
  ExpectFieldError(Call("POST", path, R"({"all": true, "queue": "celery"})"), 400, "all");
  ExpectFieldError(Call("POST", path, R"({"ids": ["a"]})"), 400, "ids");
  ExpectFieldError(Call("POST", path, R"({"error_class": "NotRegistered", "since": "x"})"), 400,
                   "since");
  ExpectFieldError(Call("POST", path, R"({"errorclass": "NotRegistered"})"), 400, "errorclass");

  const auto dry = Call("POST", path, R"({"error_class": "NotRegistered", "dry_run": true})");
  ASSERT_EQ(dry.status, 200) << Describe(dry);
  EXPECT_EQ(dry.body["dry_run"], true);
  ASSERT_EQ(dry.body["results"].size(), 2u) << Describe(dry);
  for (const auto& o : dry.body["results"]) {
    EXPECT_EQ(o["status"], "would_replay");
    EXPECT_TRUE(o["dead_letter_id"] == a || o["dead_letter_id"] == b) << o.dump();
  }
  EXPECT_EQ(broker_.QueueDepth("celery"), 0u);
  EXPECT_EQ(Count("SELECT count(*) FROM dead_letters WHERE replay_count > 0"), 0);

  const auto done = Call("POST", path, R"({"error_class": "NotRegistered"})");
  ASSERT_EQ(done.status, 200) << Describe(done);
  ASSERT_EQ(done.body["results"].size(), 2u) << Describe(done);
  EXPECT_EQ(done.body["results"][0]["status"], "replayed");
  EXPECT_EQ(broker_.QueueDepth("celery"), 2u);
  EXPECT_EQ(Drain("celery").size(), 2u);

  // Named rows are reported whatever their state.
  const auto named = Call("POST", path,
                          Json{{"ids", {a, c, 999999}}}.dump());
  ASSERT_EQ(named.status, 200) << Describe(named);
  std::map<int64_t, std::string> by_id;
  for (const auto& o : named.body["results"]) {
    by_id[o["dead_letter_id"].get<int64_t>()] = o["status"].get<std::string>();
  }
  EXPECT_EQ(by_id[a], "already_replayed") << Describe(named);
  EXPECT_EQ(by_id[c], "replayed") << Describe(named);
  EXPECT_EQ(by_id[999999], "not_found") << Describe(named);
  EXPECT_EQ(Drain("celery").size(), 1u);
}

TEST_F(AdminApiTest, PurgeBySelectionAndById) {
  const auto a = AddDeadLetter("celery", "orchestrator.tasks.nope", "NotRegistered");
  const auto b = AddDeadLetter("celery", "orchestrator.tasks.x", "DecodeError");
  const auto c = AddDeadLetter("other", "orchestrator.tasks.x", "DecodeError");
  const std::string path = "/api/v1/dead-letters/purge";

  ExpectFieldError(Call("POST", path, "{}"), 400, "ids");
  ExpectFieldError(Call("POST", path, R"({"force": true, "all": true})"), 400, "force");

  const auto dry = Call("POST", path, R"({"error_class": "DecodeError", "dry_run": true})");
  ASSERT_EQ(dry.status, 200) << Describe(dry);
  EXPECT_EQ(dry.body["count"], 2);
  EXPECT_EQ(dry.body["ids"], Json::array({b, c}));
  EXPECT_EQ(dry.body["dry_run"], true);
  EXPECT_EQ(Count("SELECT count(*) FROM dead_letters WHERE purged_at IS NOT NULL"), 0);

  const auto done = Call("POST", path, R"({"error_class": "DecodeError", "queue": "celery"})");
  ASSERT_EQ(done.status, 200) << Describe(done);
  EXPECT_EQ(done.body["count"], 1);
  EXPECT_EQ(done.body["ids"], Json::array({b}));
  EXPECT_EQ(Call("GET", "/api/v1/dead-letters").body["dead_letters"].size(), 2u)
      << "purged rows leave the list";
  EXPECT_EQ(Call("GET", "/api/v1/dead-letters?include_purged=true").body["dead_letters"].size(),
            3u);

  const auto replay_purged =
      Call("POST", "/api/v1/dead-letters/" + std::to_string(b) + "/replay");
  EXPECT_EQ(replay_purged.status, 409) << Describe(replay_purged);
  EXPECT_EQ(replay_purged.body["outcome"]["status"], "purged");

  const std::string one = "/api/v1/dead-letters/" + std::to_string(a);
  const auto dry_one = Call("DELETE", one + "?dry_run=true");
  EXPECT_EQ(dry_one.status, 200) << Describe(dry_one);
  EXPECT_EQ(dry_one.body["count"], 1);
  const auto del = Call("DELETE", one);
  EXPECT_EQ(del.status, 200) << Describe(del);
  EXPECT_EQ(del.body, Json({{"count", 1}, {"ids", {a}}, {"dry_run", false}}));
  EXPECT_EQ(Call("DELETE", one).body["count"], 0) << "purging again changes nothing";
  EXPECT_EQ(Call("DELETE", "/api/v1/dead-letters/999999").status, 404);
  ExpectFieldError(Call("DELETE", "/api/v1/dead-letters/zero"), 400, "id");

  const auto everything = Call("POST", path, R"({"all": true})");
  EXPECT_EQ(everything.body["ids"], Json::array({c}));
}

// ---- metrics, document, odds and ends --------------------------------------------------------

TEST_F(AdminApiTest, MetricsCountRequestsRunsAndPendingDeadLetters) {
  AddDeadLetter("celery", "orchestrator.tasks.nope", "NotRegistered");
  ASSERT_EQ(Call("POST", "/api/v1/crawl-tasks/1/run-now").status, 202);
  ASSERT_EQ(Call("GET", "/healthz").status, 200);
  ASSERT_EQ(Call("GET", "/api/v1/runs", std::nullopt, std::nullopt).status, 401);

  const auto r = Call("GET", "/metrics", std::nullopt, std::nullopt);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.Header("Content-Type").rfind("text/plain", 0), 0u) << r.Header("Content-Type");
  for (const std::string expected : {
           "# TYPE celeriac_api_http_requests_total counter",
           R"(celeriac_api_http_requests_total{code="200",method="GET",route="/healthz"} 1)",
           R"(celeriac_api_http_requests_total{code="401",method="GET",route="/api/v1/runs"} 1)",
           R"(route="/api/v1/crawl-tasks/{id}/run-now")",
           "celeriac_api_http_request_duration_seconds_bucket",
           R"(celeriac_crawl_runs{status="pending"} 1)",
           R"(celeriac_crawl_runs{status="succeeded"} 0)",
           R"(celeriac_dead_letters_pending{error_class="NotRegistered",queue="celery"} 1)",
           "celeriac_api_database_up 1",
           "# TYPE process_start_time_seconds gauge",
       }) {
    EXPECT_NE(r.text.find(expected), std::string::npos) << expected << " in\n" << r.text;
  }
}

TEST_F(AdminApiTest, MetricsShowRecentRunsTheirHostsAndRequests) {
  InsertCrawlInProgress();
  Exec(R"(
    INSERT INTO crawl_runs (id, crawl_task_id, celery_task_id, trigger, status, pages,
                            error_counts, finished_at)
      VALUES (7, 1, 'c-7', 'beat', 'failed', 12, '{"Parse": 2, "Custom": 1}',
              now() - interval '10 minutes'),
             (8, 1, 'c-8', 'beat', 'succeeded', 99, '{"Download": 1}',
              now() - interval '2 hours');
    -- hosts and requests of runs that are not running are not reported
    INSERT INTO crawl_hosts (run_id, host, state, delay_ms) VALUES
      (7, 'https://old.example', 'slowed', 500);
    INSERT INTO extraction_jobs (id, run_id, crawl_config_id, config_version, data_source_id,
                                 celery_task_id, status, requests_open, requests_failed)
      VALUES (70, 7, 10, 1, 1, 'e-70', 'failed', 1, 1);
    INSERT INTO crawl_requests (job_id, fingerprint, url, page_type, state)
      VALUES (70, 'g1', 'https://old.example/', 'list', 'failed'),
             (70, 'g2', 'https://old.example/2', 'list', 'leased');
  )");
  const auto r = Call("GET", "/metrics", std::nullopt, std::nullopt);
  ASSERT_EQ(r.status, 200);
  for (const std::string expected : {
           R"(celeriac_crawl_runs{status="running"} 1)",
           R"(celeriac_crawl_runs{status="pending"} 1)",
           "# TYPE celeriac_crawl_run_pages_total counter",
           R"(celeriac_crawl_run_pages_total{run_id="5"} 40)",
           R"(celeriac_crawl_run_pages_total{run_id="7"} 12)",
           "# TYPE celeriac_crawl_run_errors_total counter",
           R"(celeriac_crawl_run_errors_total{error_class="Download",run_id="5"} 3)",
           R"(celeriac_crawl_run_errors_total{error_class="RateLimit",run_id="5"} 1)",
           R"(celeriac_crawl_run_errors_total{error_class="Parse",run_id="5"} 0)",
           R"(celeriac_crawl_run_errors_total{error_class="Parse",run_id="7"} 2)",
           R"(celeriac_crawl_run_errors_total{error_class="Custom",run_id="7"} 1)",
           "# TYPE celeriac_crawl_host_state gauge",
           R"(celeriac_crawl_host_state{host="https://shop.example",run_id="5",state="backing_off"} 1)",
           R"(celeriac_crawl_host_state{host="http://cdn.example:8080",run_id="5",state="ok"} 1)",
           R"(celeriac_crawl_host_delay_seconds{host="https://shop.example",run_id="5"} 4)",
           R"(celeriac_crawl_host_delay_seconds{host="http://cdn.example:8080",run_id="5"} 0)",
           // from job 50's counters (3 open, 1 failed) and its one leased request
           R"(celeriac_crawl_requests{state="pending"} 2)",
           R"(celeriac_crawl_requests{state="leased"} 1)",
           R"(celeriac_crawl_requests{state="failed"} 1)",
           "celeriac_api_database_up 1",
       }) {
    EXPECT_NE(r.text.find(expected), std::string::npos) << expected << " in\n" << r.text;
  }
  for (const std::string absent : {
           R"(run_id="8")",        // finished two hours ago
           R"(run_id="6")",        // pending, never started
           "https://old.example",  // a host of a run that is not running
       }) {
    EXPECT_EQ(r.text.find(absent), std::string::npos) << absent << " in\n" << r.text;
  }
}

TEST_F(AdminApiTest, MetricsReadPostgresAtMostOncePerTtlAndBoundTheirSeries) {
  InsertCrawlInProgress();
  Exec(R"(
    INSERT INTO crawl_runs (id, crawl_task_id, celery_task_id, trigger, status, pages)
      VALUES (9, 1, 'c-9', 'beat', 'running', 1);
  )");
  testing::ManualClock clock(std::chrono::system_clock::now());
  ApiMetricsOptions options;
  options.cache_ttl = std::chrono::seconds(5);
  options.max_runs = 1;   // the newest recent run only
  options.max_hosts = 1;  // the host that is not ok first
  ApiMetrics metrics(pool(), clock, options);
  const std::string first = metrics.Render();
  EXPECT_NE(first.find(R"(celeriac_crawl_run_pages_total{run_id="9"} 1)"), std::string::npos)
      << first;
  EXPECT_EQ(first.find(R"(celeriac_crawl_run_pages_total{run_id="5"})"), std::string::npos)
      << first;
  EXPECT_NE(first.find(R"(host="https://shop.example",run_id="5",state="backing_off"} 1)"),
            std::string::npos)
      << first;
  EXPECT_EQ(first.find("cdn.example"), std::string::npos) << first;
  EXPECT_NE(first.find(R"(celeriac_crawl_runs{status="running"} 2)"), std::string::npos) << first;

  Exec("UPDATE crawl_runs SET pages = 2 WHERE id = 9");
  Exec("INSERT INTO crawl_runs (id, celery_task_id, trigger, status) VALUES (10, 'c-10', 'bff', "
       "'running')");
  clock.Advance(std::chrono::seconds(4));
  const std::string cached = metrics.Render();
  EXPECT_NE(cached.find(R"(celeriac_crawl_runs{status="running"} 2)"), std::string::npos)
      << "read again before the TTL:\n" << cached;
  EXPECT_NE(cached.find(R"(celeriac_crawl_run_pages_total{run_id="9"} 1)"), std::string::npos)
      << cached;

  clock.Advance(std::chrono::seconds(1));
  const std::string fresh = metrics.Render();
  EXPECT_NE(fresh.find(R"(celeriac_crawl_runs{status="running"} 3)"), std::string::npos) << fresh;
  EXPECT_NE(fresh.find(R"(celeriac_crawl_run_pages_total{run_id="10"} 0)"), std::string::npos)
      << fresh;
  EXPECT_EQ(fresh.find(R"(run_id="9")"), std::string::npos) << "max_runs 1:\n" << fresh;

  // A finished run leaves the per-run series once it is older than the window.
  Exec("UPDATE crawl_runs SET status = 'succeeded', finished_at = now() WHERE id IN (9, 10)");
  Exec("UPDATE crawl_runs SET status = 'succeeded', finished_at = now() - interval '3 hours' "
       "WHERE id = 5");
  clock.Advance(std::chrono::seconds(5));
  const std::string after = metrics.Render();
  EXPECT_NE(after.find(R"(celeriac_crawl_run_pages_total{run_id="10"} 0)"), std::string::npos)
      << after;
  EXPECT_EQ(after.find("celeriac_crawl_host_state{"), std::string::npos)
      << "no running run, no host series:\n" << after;
  clock.Advance(std::chrono::hours(2));
  const std::string later = metrics.Render();
  EXPECT_EQ(later.find("celeriac_crawl_run_pages_total{"), std::string::npos) << later;
  EXPECT_NE(later.find(R"(celeriac_crawl_requests{state="pending"} 0)"), std::string::npos)
      << "no running run, no requests:\n" << later;
}

// Every operation of openapi.json that takes input (parameters or a body) refuses input its
// schemas do not allow with 400 naming the field (and, in a body, its JSON Pointer) before
// anything runs, and takes input they allow. The table must cover the document: an operation
// added with input fails here until it has its cases.
TEST_F(AdminApiTest, EveryOperationWithInputRefusesWhatItsSchemasDoNotAllow) {
  const auto a = AddDeadLetter("celery", "orchestrator.tasks.nope", "NotRegistered");
  const auto b = AddDeadLetter("celery", "orchestrator.tasks.nope", "NotRegistered");
  const std::string dl = "/api/v1/dead-letters/";
  struct Bad {
    std::string url;
    std::optional<std::string> body;
    std::string field;
    std::string pointer;  // "" for a parameter
  };
  struct Case {
    std::string method;
    std::string path;  // as the document names it
    std::vector<Bad> bad;
    std::string good_url;
    std::optional<std::string> good_body;
    int good_status;
  };
  std::vector<Case> cases = {
      {"POST", "/api/v1/crawl-tasks/{id}/run-now",
       {{"/api/v1/crawl-tasks/0/run-now", std::nullopt, "id", ""},
        {"/api/v1/crawl-tasks/1/run-now?wait=1", std::nullopt, "wait", ""},
        {"/api/v1/crawl-tasks/1/run-now", R"({"wait": true})", "wait", "/wait"}},
       "/api/v1/crawl-tasks/1/run-now", "{}", 202},
      {"POST", "/api/v1/site-analysis",
       {{"/api/v1/site-analysis", R"({"data_source_id": 1, "theme_name": ""})", "theme_name",
         "/theme_name"},
        {"/api/v1/site-analysis", R"({"data_source_id": 1.0, "theme_name": "t"})",
         "data_source_id", "/data_source_id"}},
       "/api/v1/site-analysis", R"({"data_source_id": 1, "theme_name": "pricing"})", 202},
      {"GET", "/api/v1/runs",
       {{"/api/v1/runs?trigger=cron", std::nullopt, "trigger", ""},
        {"/api/v1/runs?before_id=0", std::nullopt, "before_id", ""}},
       "/api/v1/runs?crawl_task_id=1&status=pending&trigger=run-now&limit=1000&before_id=99",
       std::nullopt, 200},
      {"GET", "/api/v1/runs/{id}",
       {{"/api/v1/runs/abc", std::nullopt, "id", ""},
        {"/api/v1/runs/1?jobs=false", std::nullopt, "jobs", ""}},
       "/api/v1/runs/999999", std::nullopt, 404},  // valid, and no such run
      {"GET", "/api/v1/dead-letters",
       {{"/api/v1/dead-letters?limit=1001", std::nullopt, "limit", ""},
        {"/api/v1/dead-letters?task=", std::nullopt, "task", ""}},
       "/api/v1/dead-letters?queue=celery&task=orchestrator.tasks.nope&error_class=NotRegistered"
       "&since=2000-01-01T00:00:00Z&until=2100-01-01&limit=1000&include_purged=0"
       "&include_replayed=true",
       std::nullopt, 200},
      {"GET", "/api/v1/dead-letters/{id}",
       {{dl + "0", std::nullopt, "id", ""}},
       dl + std::to_string(a), std::nullopt, 200},
      {"DELETE", "/api/v1/dead-letters/{id}",
       {{dl + std::to_string(b) + "?dry_run=yes", std::nullopt, "dry_run", ""},
        {dl + "x?dry_run=true", std::nullopt, "id", ""}},
       dl + std::to_string(b) + "?dry_run=1", std::nullopt, 200},
      {"POST", "/api/v1/dead-letters/{id}/replay",
       {{dl + std::to_string(a) + "/replay", R"({"dry_run": 1})", "dry_run", "/dry_run"},
        {dl + "-3/replay", std::nullopt, "id", ""}},
       dl + std::to_string(a) + "/replay", R"({"dry_run": true})", 200},
      {"POST", "/api/v1/dead-letters/replay",
       {{dl + "replay", Json{{"ids", {a, -2}}}.dump(), "ids", "/ids/1"},
        {dl + "replay", R"({"limit": -1, "all": true})", "limit", "/limit"}},
       dl + "replay", Json{{"ids", {a}}, {"dry_run", true}}.dump(), 200},
      {"POST", "/api/v1/dead-letters/purge",
       {{dl + "purge", R"({"queue": ""})", "queue", "/queue"},
        {dl + "purge", R"({"until": 5})", "until", "/until"},
        {dl + "purge", "", "body", ""}},
       dl + "purge", Json{{"ids", {b}}, {"dry_run", true}}.dump(), 200},
  };

  for (const Case& c : cases) {
    for (const Bad& bad : c.bad) {
      SCOPED_TRACE(c.method + " " + bad.url + " " + bad.body.value_or(""));
      const auto r = Call(c.method, bad.url, bad.body);
      ExpectFieldError(r, 400, bad.field);
      EXPECT_NE(r.body.value("error", "").find(bad.field == "body" ? "body" : bad.field),
                std::string::npos)
          << "the message names the field: " << Describe(r);
      if (bad.pointer.empty()) {
        EXPECT_FALSE(r.body.contains("pointer")) << Describe(r);
      } else {
        EXPECT_EQ(r.body.value("pointer", ""), bad.pointer) << Describe(r);
      }
    }
  }
  EXPECT_EQ(broker_.QueueDepth("celery"), 0u) << "refused requests publish nothing";
  EXPECT_EQ(Count("SELECT count(*) FROM crawl_runs"), 0);
  EXPECT_EQ(Count("SELECT count(*) FROM dead_letters WHERE purged_at IS NOT NULL OR "
                  "replay_count > 0"),
            0);

  for (const Case& c : cases) {
    SCOPED_TRACE(c.method + " " + c.good_url);
    const auto r = Call(c.method, c.good_url, c.good_body);
    EXPECT_EQ(r.status, c.good_status) << Describe(r);
  }

  // The table covers every operation of the document that takes input.
  const auto doc = Call("GET", "/openapi.json", std::nullopt, std::nullopt);
  ASSERT_EQ(doc.status, 200);
  for (const auto& [path, item] : doc.body["paths"].items()) {
    for (const auto& [method, op] : item.items()) {
      const bool input = op.contains("parameters") || op.contains("requestBody") ||
                         item.contains("parameters");
      if (!input) continue;
      std::string upper = method;
      std::transform(upper.begin(), upper.end(), upper.begin(), ::toupper);
      EXPECT_TRUE(std::any_of(cases.begin(), cases.end(),
                              [&](const Case& c) { return c.method == upper && c.path == path; }))
          << upper << " " << path << " takes input but has no case here";
    }
  }
}

TEST_F(AdminApiTest, OpenApiDocumentParsesAndDescribesEveryRoute) {
  const auto r = Call("GET", "/openapi.json", std::nullopt, std::nullopt);
  ASSERT_EQ(r.status, 200) << Describe(r);
  ASSERT_TRUE(r.body.is_object()) << "parses as JSON";
  EXPECT_EQ(r.body["openapi"].get<std::string>().rfind("3.0", 0), 0u);
  const Json& paths = r.body["paths"];
  std::set<std::pair<std::string, std::string>> implemented;
  for (const auto& route : AdminApi::Routes()) {
    std::string method = route.method;
    std::transform(method.begin(), method.end(), method.begin(), ::tolower);
    implemented.insert({route.path, method});
    ASSERT_TRUE(paths.contains(route.path) && paths[route.path].contains(method))
        << route.method << " " << route.path << " is not in openapi.json";
    const Json& op = paths[route.path][method];
    EXPECT_TRUE(op.contains("responses")) << route.path;
    EXPECT_EQ(op["responses"].contains("401"), route.admin) << route.method << " " << route.path;
    EXPECT_EQ(op.contains("security") && op["security"].empty(), !route.admin)
        << route.method << " " << route.path << ": open routes say security: []";
  }
  for (const auto& [path, ops] : paths.items()) {
    for (const auto& [method, op] : ops.items()) {
      EXPECT_TRUE(implemented.count({path, method})) << method << " " << path
                                                       << " is documented but not served";
    }
  }
  // Every $ref points at something that exists.
  std::function<void(const Json&)> check_refs = [&](const Json& node) {
    if (node.is_object()) {
      for (const auto& [k, v] : node.items()) {
        if (k == "$ref") {
          const std::string ref = v.get<std::string>();
          ASSERT_EQ(ref.rfind("#/", 0), 0u) << ref;
          EXPECT_TRUE(r.body.contains(Json::json_pointer(ref.substr(1)))) << ref;
        } else {
          check_refs(v);
        }
      }
    } else if (node.is_array()) {
      for (const auto& v : node) check_refs(v);
    }
  };
  check_refs(r.body);
}

TEST_F(AdminApiTest, UnknownRoutesAndOversizedBodiesGetJsonErrors) {
  const auto missing = Call("GET", "/api/v2/runs");
  EXPECT_EQ(missing.status, 404);
  EXPECT_TRUE(missing.body.contains("error")) << Describe(missing);
  const auto wrong_method = Call("DELETE", "/api/v1/runs/1");
  EXPECT_EQ(wrong_method.status, 404) << Describe(wrong_method);
  EXPECT_TRUE(wrong_method.body.contains("error"));
  const auto huge = Call("POST", "/api/v1/site-analysis",
                         Json{{"data_source_id", 1}, {"theme_name", std::string(2 << 20, 'x')}}
                             .dump());
  EXPECT_EQ(huge.status, 413) << huge.status;
  EXPECT_EQ(broker_.QueueDepth("celery"), 0u);
}

TEST(AdminApiListen, ParsesHostAndPort) {
  auto v4 = ParseListenAddress("127.0.0.1:18080");
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(v4->first, "127.0.0.1");
  EXPECT_EQ(v4->second, 18080);
  auto v6 = ParseListenAddress("[::1]:0");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->first, "::1");
  EXPECT_EQ(v6->second, 0);
  EXPECT_FALSE(ParseListenAddress("127.0.0.1").ok());
  EXPECT_FALSE(ParseListenAddress("127.0.0.1:http").ok());
  EXPECT_FALSE(ParseListenAddress("127.0.0.1:70000").ok());
}

}  // namespace
}  // namespace celeriac::orchestrator::api
