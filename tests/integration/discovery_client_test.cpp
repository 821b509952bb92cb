// The Discovery client against an in-process HTTP server that accepts, refuses, fails, stalls
// and answers garbage: each outcome's error says whether a retry can help.

#include <atomic>
#include <thread>

#include <gtest/gtest.h>
#include <httplib.h>

#include "discovery-client/discovery_client.hpp"

namespace celeriac::discovery {
namespace {

using std::chrono::milliseconds;

class DiscoveryServer {
 public:
  explicit DiscoveryServer(httplib::Server::Handler handler) {
    server_.Post("/api/discover", std::move(handler));
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    // bind_to_any_port already listens; wait for the accept loop so stop() cannot miss it.
    while (!server_.is_running()) std::this_thread::sleep_for(milliseconds(1));
  }
  ~DiscoveryServer() {
    server_.stop();
    thread_.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/api"; }

 private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
};

HttpDiscoveryClient Client(const std::string& url, milliseconds timeout = milliseconds(2000)) {
  return HttpDiscoveryClient({url, timeout, milliseconds(1000)});
}

TEST(DiscoveryClient, PostsTheRequestAndMapsTheAnswer) {
  std::string seen_body, seen_type;
  DiscoveryServer server([&](const httplib::Request& req, httplib::Response& res) {
    seen_body = req.body;
    seen_type = req.get_header_value("Content-Type");
    res.status = 202;
    res.set_content(R"({"analysis_id": "an-17", "status": "queued"})", "application/json");
  });
  auto r = Client(server.url()).Discover({7, "pricing", {}, {}});
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(r->status, 202);
  EXPECT_EQ(r->analysis_id, "an-17");
  EXPECT_EQ(r->body["status"], "queued");
  EXPECT_EQ(nlohmann::json::parse(seen_body),
            (nlohmann::json{{"data_source_id", 7}, {"theme_name", "pricing"}}));
  EXPECT_EQ(seen_type, "application/json");
}

TEST(DiscoveryClient, EmptyAcceptedAnswerIsSuccess) {
  DiscoveryServer server([](const httplib::Request&, httplib::Response& res) { res.status = 204; });
  auto r = Client(server.url()).Discover({1, "t", {}, {}});
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_FALSE(r->analysis_id.has_value());
}

TEST(DiscoveryClient, ServerErrorsAndThrottlingAreRetryable) {
  for (int status : {500, 502, 503, 429}) {
    DiscoveryServer server([status](const httplib::Request&, httplib::Response& res) {
      res.status = status;
      res.set_content("busy", "text/plain");
    });
    auto r = Client(server.url()).Discover({1, "t", {}, {}});
    ASSERT_FALSE(r.ok()) << status;
    EXPECT_TRUE(r.error().retryable()) << status << ": " << r.error().ToString();
    EXPECT_NE(r.error().message().find(std::to_string(status)), std::string::npos);
  }
}

TEST(DiscoveryClient, ClientErrorsAreNotRetryable) {
  for (int status : {400, 401, 404, 422}) {
    DiscoveryServer server([status](const httplib::Request&, httplib::Response& res) {
      res.status = status;
      res.set_content(R"({"error": "unknown theme"})", "application/json");
    });
    auto r = Client(server.url()).Discover({1, "t", {}, {}});
    ASSERT_FALSE(r.ok()) << status;
    EXPECT_FALSE(r.error().retryable()) << status << ": " << r.error().ToString();
    EXPECT_NE(r.error().message().find("unknown theme"), std::string::npos)
        << "the server's reason should reach the operator";
  }
}

TEST(DiscoveryClient, GarbageAnswerIsAProtocolError) {
  DiscoveryServer server([](const httplib::Request&, httplib::Response& res) {
    res.status = 200;
    res.set_content("<html>\x01 oops", "text/html");
  });
  auto r = Client(server.url()).Discover({1, "t", {}, {}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kProtocol);
}

TEST(DiscoveryClient, StalledServerTimesOutRetryably) {
  std::atomic<bool> release{false};
  DiscoveryServer server([&](const httplib::Request&, httplib::Response& res) {
    for (int i = 0; i < 200 && !release; ++i) std::this_thread::sleep_for(milliseconds(10));
    res.status = 200;
  });
  const auto start = std::chrono::steady_clock::now();
  auto r = Client(server.url(), milliseconds(200)).Discover({1, "t", {}, {}});
  const auto took = std::chrono::steady_clock::now() - start;
  release = true;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kTimeout) << r.error().ToString();
  EXPECT_TRUE(r.error().retryable());
  EXPECT_LT(took, std::chrono::seconds(2)) << "the timeout must bound the call";
}

TEST(DiscoveryClient, NobodyListeningIsRetryableUnavailable) {
  auto r = Client("http://127.0.0.1:1").Discover({1, "t", {}, {}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kUnavailable) << r.error().ToString();
  EXPECT_TRUE(r.error().retryable());
}

}  // namespace
}  // namespace celeriac::discovery
