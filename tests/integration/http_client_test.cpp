// http::Client against in-process servers on loopback that behave and misbehave: redirects
// and loops, stalls, endless and huge bodies, encodings, cookies, statuses with Retry-After,
// the network policy, TLS, cancellation, many requests at once, and HTTP/2 through nginx.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <optional>

#include <gtest/gtest.h>
#include <httplib.h>

#include "core/http/client.hpp"
#include "core/loop/loop.hpp"
#include "tests/support/http_test_server.hpp"
#include "tests/support/process.hpp"

namespace celeriac::http {
namespace {

using celeriac::testing::HttpTestServer;
using std::chrono::milliseconds;

// Runs one request on a fresh loop and client; fails the test if `done` never runs.
Outcome Fetch(Request request, ClientOptions options = {}) {
  Loop loop;
  std::optional<Outcome> out;
  {
    Client client(loop, options);
    client.Start(std::move(request), [&](Outcome o) {
      out.emplace(std::move(o));
      loop.Stop();
    });
    loop.AddTimer(milliseconds(30'000), [&] { loop.Stop(); });
    loop.Run();
  }
  if (!out) {
    ADD_FAILURE() << "done never ran";
    return Outcome(FailureKind::kInternal, Error(ErrorCode::kInternal, "done never ran"));
  }
  return std::move(*out);
}

Request Local(const std::string& url) {
  Request r;
  r.url = url;
  r.allow_private_network = true;  // everything here is on loopback
  return r;
}

#define EXPECT_KIND(outcome, k)                                                       \
  do {                                                                                \
    ASSERT_FALSE((outcome).ok()) << "expected " << ToString(k) << ", got status "    \
                                 << (outcome)->status;                                \
    EXPECT_EQ((outcome).kind(), k) << (outcome).error().ToString();                   \
  } while (0)

TEST(HttpClient, FetchesAPage) {
  HttpTestServer server;
  auto r = Fetch(Local(server.Url("/ok")));
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(r.kind(), FailureKind::kNone);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "hello");
  EXPECT_EQ(r->url, server.Url("/ok"));
  EXPECT_EQ(r->content_type, "text/plain");
  // httplib compresses text with brotli when asked; the body above came out of the decoder.
  EXPECT_EQ(r->headers.Get("content-encoding").value_or(""), "br");
  EXPECT_EQ(r->http_version, HttpVersion::kHttp11);
  EXPECT_EQ(r->primary_ip, "127.0.0.1");
  EXPECT_GT(r->wire_bytes, 5);
  EXPECT_GT(r->timings.total.count(), 0);
  EXPECT_GE(r->timings.final_hop, r->timings.first_byte);
  EXPECT_TRUE(r->redirects.empty());
}

TEST(HttpClient, NonSuccessStatusesAreResponsesWithTheirHeaders) {
  HttpTestServer server;
  for (int status : {404, 429, 503, 500, 401}) {
    auto r = Fetch(Local(server.Url("/status/" + std::to_string(status))));
    ASSERT_TRUE(r.ok()) << r.error().ToString();
    EXPECT_EQ(r->status, status);
    EXPECT_EQ(r->body, "status " + std::to_string(status));
    if (status == 429 || status == 503) {
      EXPECT_EQ(r->headers.Get("retry-after").value_or(""), "7");
    }
  }
}

TEST(HttpClient, DuplicateHeadersAreAllKept) {
  HttpTestServer server;
  auto r = Fetch(Local(server.Url("/headers")));
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(r->headers.GetAll("X-MULTI").size(), 2u);
  EXPECT_EQ(r->headers.Get("x-mixed-case").value_or(""), "value");
}

TEST(HttpClient, FollowsRedirectsAndRecordsTheChain) {
  HttpTestServer server;
  auto r = Fetch(Local(server.Url("/redirect/3")));
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "hello");
  EXPECT_EQ(r->url, server.Url("/ok"));
  ASSERT_EQ(r->redirects.size(), 3u);
  EXPECT_EQ(r->redirects[0].url, server.Url("/redirect/3"));
  EXPECT_EQ(r->redirects[0].status, 302);
  EXPECT_EQ(r->redirects[2].url, server.Url("/redirect/1"));
}

TEST(HttpClient, RedirectsNotFollowedWhenTurnedOff) {
  HttpTestServer server;
  auto req = Local(server.Url("/redirect/2"));
  req.follow_redirects = false;
  auto r = Fetch(req);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(r->status, 302);
  EXPECT_EQ(r->headers.Get("Location").value_or(""), "/redirect/1");
  EXPECT_EQ(server.hits("/ok"), 0);
}

TEST(HttpClient, TooManyRedirects) {
  HttpTestServer server;
  auto req = Local(server.Url("/redirect/5"));
  req.max_redirects = 3;
  auto r = Fetch(req);
  EXPECT_KIND(r, FailureKind::kTooManyRedirects);
  EXPECT_FALSE(r.error().retryable());
  EXPECT_EQ(server.hits("/redirect"), 4);  // the limit's worth of hops and the one refused
}

TEST(HttpClient, RedirectLoopIsDetectedOnTheFirstRepeat) {
  HttpTestServer server;
  auto r = Fetch(Local(server.Url("/loop/a")));
  EXPECT_KIND(r, FailureKind::kRedirectLoop);
  EXPECT_FALSE(r.error().retryable());
  EXPECT_EQ(server.hits("/loop/a"), 1);
  EXPECT_EQ(server.hits("/loop/b"), 1);
}

TEST(HttpClient, RedirectToAnotherSchemeIsRefused) {
  HttpTestServer server;
  auto r = Fetch(Local(server.Url("/redirect-to?url=file:///etc/passwd")));
  EXPECT_KIND(r, FailureKind::kInvalidUrl);
}

TEST(HttpClient, PostBecomesGetOn303AndStaysPostOn307) {
  HttpTestServer server;
  {
    auto req = Local(server.Url("/redirect-to?code=303&url=/echo"));
    req.method = "POST";
    req.body = "payload";
    auto r = Fetch(req);
    ASSERT_TRUE(r.ok()) << r.error().ToString();
    EXPECT_EQ(r->body, "GET ");
  }
  {
    auto req = Local(server.Url("/redirect-to?code=307&url=/echo"));
    req.method = "POST";
    req.body = "payload";
    auto r = Fetch(req);
    ASSERT_TRUE(r.ok()) << r.error().ToString();
    EXPECT_EQ(r->body, "POST payload");
  }
}

TEST(HttpClient, SendsMethodBodyAndHeaders) {
  HttpTestServer server;
  auto req = Local(server.Url("/echo"));
  req.method = "put";
  req.body = "data";
  req.headers = {{"X-Test", "yes"}, {"X-Bad\r\nInjected", "no"}};
  auto r = Fetch(req);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(r->body, "PUT data");
  EXPECT_EQ(r->headers.Get("X-Test").value_or(""), "yes");
}

TEST(HttpClient, AuthorizationIsNotCarriedToAnotherHost) {
  HttpTestServer server;
  // 127.0.0.1 -> localhost: another host name, same server.
  auto req = Local(server.Url("/redirect-to?url=" + server.UrlWithHost("localhost", "/echo")));
  req.headers = {{"Authorization", "Bearer t0ken"}, {"X-Test", "kept"}};
  auto r = Fetch(req);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(r->headers.Get("X-Authorization").value_or("?"), "");
  EXPECT_EQ(r->headers.Get("X-Test").value_or(""), "kept");
}

TEST(HttpClient, FirstByteTimeoutOnAServerThatNeverAnswers) {
  HttpTestServer server;
  auto req = Local(server.Url("/stall"));
  req.first_byte_timeout = milliseconds(300);
  const auto start = std::chrono::steady_clock::now();
  auto r = Fetch(req);
  EXPECT_KIND(r, FailureKind::kFirstByteTimeout);
  EXPECT_TRUE(r.error().retryable());
  EXPECT_EQ(r.error().code(), ErrorCode::kTimeout);
  EXPECT_LT(std::chrono::steady_clock::now() - start, milliseconds(3000));
}

TEST(HttpClient, IdleTimeoutWhenTheBodyStops) {
  HttpTestServer server;
  auto req = Local(server.Url("/stall-body"));
  req.idle_timeout = milliseconds(1000);
  auto r = Fetch(req);
  EXPECT_KIND(r, FailureKind::kIdleTimeout);
  EXPECT_TRUE(r.error().retryable());
}

TEST(HttpClient, TotalTimeoutOnATricklingServer) {
  HttpTestServer server;
  auto req = Local(server.Url("/trickle"));
  req.total_timeout = milliseconds(500);
  const auto start = std::chrono::steady_clock::now();
  auto r = Fetch(req);
  EXPECT_KIND(r, FailureKind::kTotalTimeout);
  EXPECT_LT(std::chrono::steady_clock::now() - start, milliseconds(3000));
}

TEST(HttpClient, ConnectTimeoutWhenTheListenQueueIsFull) {
  // A listener that never accepts, its backlog filled: further SYNs are dropped.
  int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(listener, 0), 0);
  ASSERT_EQ(::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  std::vector<int> fillers;
  for (int i = 0; i < 4; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    fillers.push_back(fd);
  }
  auto req = Local("http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)) + "/");
  req.connect_timeout = milliseconds(400);
  auto r = Fetch(req);
  for (int fd : fillers) ::close(fd);
  ::close(listener);
  EXPECT_KIND(r, FailureKind::kConnectTimeout);
}

TEST(HttpClient, ConnectionRefused) {
  const int port = celeriac::testing::FreeLoopbackPort();
  auto r = Fetch(Local("http://127.0.0.1:" + std::to_string(port) + "/"));
  EXPECT_KIND(r, FailureKind::kConnect);
  EXPECT_TRUE(r.error().retryable());
}

TEST(HttpClient, EndlessResponseIsCutAtTheCap) {
  HttpTestServer server;
  auto req = Local(server.Url("/endless"));
  req.max_body_bytes = 1024 * 1024;
  auto r = Fetch(req);
  EXPECT_KIND(r, FailureKind::kTooLarge);
  EXPECT_FALSE(r.error().retryable());
}

TEST(HttpClient, TenMegabyteBodyFitsUnderItsCapAndNotUnderASmallerOne) {
  HttpTestServer server;
  const size_t ten_mb = 10 * 1024 * 1024;
  auto req = Local(server.Url("/size/" + std::to_string(ten_mb)));
  req.max_body_bytes = ten_mb;
  auto r = Fetch(req);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(r->body.size(), ten_mb);
  req.max_body_bytes = ten_mb - 1;
  auto small = Fetch(req);
  EXPECT_KIND(small, FailureKind::kTooLarge);
}

TEST(HttpClient, DecodesGzipAndBrotliAndCapsTheDecodedSize) {
  HttpTestServer server;
  for (const char* path : {"/gzip", "/br"}) {
    auto r = Fetch(Local(server.Url(path)));
    ASSERT_TRUE(r.ok()) << path << ": " << r.error().ToString();
    EXPECT_EQ(r->body, HttpTestServer::plain_text()) << path;
    EXPECT_LT(r->wire_bytes, static_cast<int64_t>(HttpTestServer::plain_text().size() / 2)) << path;
    // The cap applies to what comes out of the decoder, not to the bytes on the wire.
    auto req = Local(server.Url(path));
    req.max_body_bytes = 10'000;
    auto capped = Fetch(req);
    EXPECT_KIND(capped, FailureKind::kTooLarge);
  }
}

TEST(HttpClient, CookiesSetByOneResponseAreSentOnTheNextRequest) {
  HttpTestServer server;
  Loop loop;
  auto jar = std::make_shared<CookieJar>();
  std::optional<Outcome> second;
  {
    Client client(loop);
    auto first = Local(server.Url("/set-cookie"));
    first.cookies = jar;
    client.Start(first, [&](Outcome o) {
      ASSERT_TRUE(o.ok()) << o.error().ToString();
      auto next = Local(server.Url("/echo-cookie"));
      next.cookies = jar;
      client.Start(next, [&](Outcome o2) {
        second.emplace(std::move(o2));
        loop.Stop();
      });
    });
    loop.AddTimer(milliseconds(10'000), [&] { loop.Stop(); });
    loop.Run();
  }
  ASSERT_TRUE(second.has_value());
  ASSERT_TRUE(second->ok()) << second->error().ToString();
  EXPECT_EQ((*second)->body, "session=s3cr3t");
  auto list = jar->List();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_NE(list[0].find("s3cr3t"), std::string::npos);

  // A request without the jar sends nothing; a fresh jar is empty.
  auto bare = Fetch(Local(server.Url("/echo-cookie")));
  ASSERT_TRUE(bare.ok());
  EXPECT_EQ(bare->body, "");
  auto other = Local(server.Url("/echo-cookie"));
  other.cookies = std::make_shared<CookieJar>();
  auto fresh = Fetch(other);
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ(fresh->body, "");

  // Cookies can be preset.
  auto preset = std::make_shared<CookieJar>();
  ASSERT_TRUE(preset->Add(server.Url("/"), "lang=en; Path=/"));
  auto with_preset = Local(server.Url("/echo-cookie"));
  with_preset.cookies = preset;
  auto p = Fetch(with_preset);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->body, "lang=en");
}

// ----- network policy

TEST(HttpClient, LoopbackLiteralIsBlockedWithoutAllowPrivateNetwork) {
  HttpTestServer server;
  Request req;
  req.url = server.Url("/ok");
  auto r = Fetch(req);
  EXPECT_KIND(r, FailureKind::kBlockedAddress);
  EXPECT_FALSE(r.error().retryable());
  EXPECT_EQ(r.error().code(), ErrorCode::kPermissionDenied);
  EXPECT_EQ(server.hits("/ok"), 0);
}

TEST(HttpClient, HostNameResolvingToLoopbackIsBlockedAfterDns) {
  HttpTestServer server;
  Request req;
  req.url = server.UrlWithHost("localhost", "/ok");
  auto r = Fetch(req);
  EXPECT_KIND(r, FailureKind::kBlockedAddress);
  EXPECT_NE(r.error().message().find("127.0.0.1"), std::string::npos) << r.error().message();
  EXPECT_EQ(server.hits("/ok"), 0);
}

TEST(HttpClient, OtherNonPublicLiteralsAreBlockedBeforeAnyConnection) {
  for (const char* url : {"http://10.1.2.3/", "http://169.254.169.254/latest/meta-data/",
                          "http://[::1]/", "http://[::ffff:127.0.0.1]/", "http://0.0.0.0/",
                          "http://100.64.0.1/", "http://224.0.0.1/", "http://2130706433/",
                          "http://[fd00::1]/"}) {
    Request req;
    req.url = url;
    auto r = Fetch(req);
    EXPECT_KIND(r, FailureKind::kBlockedAddress);
  }
}

TEST(HttpClient, RedirectToANonPublicAddressIsBlockedOnThatHop) {
  HttpTestServer server;
  // Only this server's address counts as public here (a test-only override), so the first
  // hop runs under the real policy and the redirect hop is refused by it.
  ClientOptions options;
  options.treat_as_public = {"127.0.0.1"};
  {
    Request req;
    req.url = server.Url("/ok");
    auto r = Fetch(req, options);
    ASSERT_TRUE(r.ok()) << r.error().ToString();  // the override works
  }
  for (const std::string& target :
       {"http://127.0.0.2:" + std::to_string(server.port()) + "/ok", std::string("http://10.0.0.1/"),
        std::string("http://169.254.169.254/"), std::string("http://[::1]/"),
        std::string("http://0.0.0.0/")}) {
    Request req;
    req.url = server.Url("/redirect-to?url=" + target);
    auto r = Fetch(req, options);
    EXPECT_KIND(r, FailureKind::kBlockedAddress);
  }
  EXPECT_EQ(server.hits("/redirect-to"), 5);
  EXPECT_EQ(server.hits("/ok"), 1);
}

// A forward proxy's view of a request: httplib sees the absolute-form target as the path.
void AddProxyRoute(httplib::Server& s) {
  s.Get(R"(http://([^/]+)(/.*))", [](const httplib::Request& req, httplib::Response& res) {
    res.set_content("proxied " + std::string(req.matches[1]) + " " + std::string(req.matches[2]),
                    "text/plain");
  });
}

TEST(HttpClient, SendsThroughTheRequestsProxyWithoutResolvingTheTarget) {
  HttpTestServer proxy(nullptr, AddProxyRoute);
  // .invalid never resolves: only the proxy's address is connected to.
  auto req = Local("http://target.invalid/page?q=1");
  req.proxy = proxy.Url("");
  auto r = Fetch(req);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(r->body, "proxied target.invalid /page");
  EXPECT_EQ(r->primary_ip, "127.0.0.1");
}

TEST(HttpClient, WithAProxyThePolicyChecksTheProxyAndLiteralTargets) {
  HttpTestServer proxy(nullptr, AddProxyRoute);
  {
    // The proxy is on loopback: refused without allow_private_network.
    Request req;
    req.url = "http://target.invalid/";
    req.proxy = proxy.Url("");
    auto r = Fetch(req);
    EXPECT_KIND(r, FailureKind::kBlockedAddress);
    EXPECT_NE(r.error().message().find("proxy"), std::string::npos) << r.error().message();
  }
  ClientOptions options;
  options.treat_as_public = {"127.0.0.1"};
  {
    Request req;
    req.url = "http://target.invalid/";
    req.proxy = proxy.Url("");
    auto r = Fetch(req, options);
    ASSERT_TRUE(r.ok()) << r.error().ToString();
  }
  {
    // An IP-literal private target is refused before the proxy is asked.
    Request req;
    req.url = "http://10.0.0.1/admin";
    req.proxy = proxy.Url("");
    auto r = Fetch(req, options);
    EXPECT_KIND(r, FailureKind::kBlockedAddress);
  }
  {
    auto req = Local("http://target.invalid/");
    req.proxy = "ftp://127.0.0.1:1/";
    auto r = Fetch(req);
    EXPECT_KIND(r, FailureKind::kInvalidUrl);
  }
}

TEST(HttpClient, InvalidUrlsFailLaterNotInsideStart) {
  Loop loop;
  bool inside_start = true, called = false;
  std::optional<Outcome> out;
  {
    Client client(loop);
    Request req;
    req.url = "ftp://example.com/";
    client.Start(req, [&](Outcome o) {
      called = true;
      EXPECT_FALSE(inside_start);
      out.emplace(std::move(o));
      loop.Stop();
    });
    inside_start = false;
    EXPECT_FALSE(called);
    EXPECT_EQ(client.in_flight(), 1u);
    loop.AddTimer(milliseconds(5000), [&] { loop.Stop(); });
    loop.Run();
    EXPECT_EQ(client.in_flight(), 0u);
  }
  ASSERT_TRUE(out.has_value());
  EXPECT_KIND(*out, FailureKind::kInvalidUrl);
}

TEST(HttpClient, CancelRunsDoneOnceWithCancelled) {
  HttpTestServer server;
  Loop loop;
  int calls = 0;
  std::optional<Outcome> out;
  {
    Client client(loop);
    auto id = client.Start(Local(server.Url("/stall")), [&](Outcome o) {
      ++calls;
      out.emplace(std::move(o));
    });
    loop.AddTimer(milliseconds(100), [&] {
      EXPECT_TRUE(client.Cancel(id));
      EXPECT_EQ(calls, 1);
      EXPECT_FALSE(client.Cancel(id));  // already finished
      loop.Stop();
    });
    loop.Run();
  }
  EXPECT_EQ(calls, 1);
  ASSERT_TRUE(out.has_value());
  EXPECT_KIND(*out, FailureKind::kCancelled);
  EXPECT_TRUE(out->error().retryable());
}

TEST(HttpClient, DestroyingTheClientCancelsWhatIsInFlight) {
  HttpTestServer server;
  Loop loop;
  int cancelled = 0;
  {
    Client client(loop);
    for (int i = 0; i < 5; ++i)
      client.Start(Local(server.Url("/stall")), [&](Outcome o) {
        if (!o.ok() && o.kind() == FailureKind::kCancelled) ++cancelled;
      });
    loop.AddTimer(milliseconds(100), [&] { loop.Stop(); });
    loop.Run();
    EXPECT_EQ(client.in_flight(), 5u);
  }
  EXPECT_EQ(cancelled, 5);
}

TEST(HttpClient, HundredsInFlightOnOneThreadReuseConnections) {
  HttpTestServer server;
  Loop loop;
  ClientOptions options;
  options.max_host_connections = 8;  // httplib's pool is 32 threads; keep-alive holds one each
  int ok = 0, failed = 0;
  const int kRequests = 400;
  std::string first_error;
  {
    Client client(loop, options);
    for (int i = 0; i < kRequests; ++i) {
      client.Start(Local(server.Url("/size/15000")), [&](Outcome o) {
        if (o.ok() && o->status == 200 && o->body.size() == 15000) {
          ++ok;
        } else {
          ++failed;
          if (first_error.empty()) first_error = o.ok() ? "status" : o.error().ToString();
        }
        if (ok + failed == kRequests) loop.Stop();
      });
    }
    EXPECT_EQ(client.in_flight(), static_cast<size_t>(kRequests));
    loop.AddTimer(milliseconds(30'000), [&] { loop.Stop(); });
    loop.Run();
  }
  EXPECT_EQ(ok, kRequests) << first_error;
  EXPECT_EQ(failed, 0);
}

// ----- TLS and HTTP/2

TEST(HttpClient, TlsWithTheGeneratedCaAndWithoutIt) {
  auto tls = celeriac::testing::MakeSelfSignedCert();
  HttpTestServer server(&tls);
  auto req = Local(server.Url("/ok"));
  req.ca_file = tls.cert;
  auto r = Fetch(req);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(r->body, "hello");
  EXPECT_GT(r->timings.tls.count(), 0);

  auto untrusted = Fetch(Local(server.Url("/ok")));
  EXPECT_KIND(untrusted, FailureKind::kTls);
  EXPECT_FALSE(untrusted.error().retryable());

  auto unverified = Local(server.Url("/ok"));
  unverified.verify_tls = false;
  auto u = Fetch(unverified);
  ASSERT_TRUE(u.ok()) << u.error().ToString();
  EXPECT_EQ(u->body, "hello");
}

TEST(HttpClient, Http2OverTlsWithNginx) {
  auto tls = celeriac::testing::MakeSelfSignedCert();
  const int port = celeriac::testing::FreeLoopbackPort();
  const std::string conf = tls.dir + "/nginx.conf";
  {
    std::ofstream f(conf);
    f << "daemon off;\nmaster_process off;\nworker_processes 1;\npid " << tls.dir
      << "/nginx.pid;\nerror_log " << tls.dir << "/error.log;\nevents {}\nhttp {\n"
      << "  access_log off;\n  client_body_temp_path " << tls.dir << ";\n"
      << "  server {\n    listen 127.0.0.1:" << port << " ssl http2;\n"
      << "    ssl_certificate " << tls.cert << ";\n    ssl_certificate_key " << tls.key << ";\n"
      << "    location / { default_type text/plain; return 200 \"over h2\\n\"; }\n  }\n}\n";
  }
  celeriac::testing::ChildProcess nginx(
      {"nginx", "-p", tls.dir, "-e", tls.dir + "/error.log", "-c", conf});
  ASSERT_TRUE(celeriac::testing::WaitForPort(port, milliseconds(5000)))
      << "nginx did not start; see " << tls.dir << "/error.log";

  Loop loop;
  int done = 0;
  std::vector<Outcome> outcomes;
  {
    Client client(loop);
    for (int i = 0; i < 20; ++i) {
      auto req = Local("https://localhost:" + std::to_string(port) + "/x" + std::to_string(i));
      req.ca_file = tls.cert;
      client.Start(req, [&](Outcome o) {
        outcomes.push_back(std::move(o));
        if (++done == 20) loop.Stop();
      });
    }
    loop.AddTimer(milliseconds(10'000), [&] { loop.Stop(); });
    loop.Run();
  }
  ASSERT_EQ(outcomes.size(), 20u);
  for (auto& o : outcomes) {
    ASSERT_TRUE(o.ok()) << o.error().ToString();
    EXPECT_EQ(o->status, 200);
    EXPECT_EQ(o->body, "over h2\n");
    EXPECT_EQ(o->http_version, HttpVersion::kHttp2);
  }

  auto pinned = Local("https://localhost:" + std::to_string(port) + "/");
  pinned.ca_file = tls.cert;
  pinned.http2 = false;
  auto h1 = Fetch(pinned);
  ASSERT_TRUE(h1.ok()) << h1.error().ToString();
  EXPECT_EQ(h1->http_version, HttpVersion::kHttp11);
}

}  // namespace
}  // namespace celeriac::http
