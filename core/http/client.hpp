#pragma once
// http::Client: outbound HTTP for the crawl extractor, on libcurl multi driven by the Loop.
//
// What it does: HTTP/1.1 and HTTP/2 (h2 negotiated by ALPN over TLS; cleartext stays 1.1), TLS
// with verification (system CAs or a CA file), gzip/deflate/br/zstd decoding, cookies per
// crawl (CookieJar), proxies per request (http, https, socks4/5, socks5h URLs), connection
// reuse (one connection cache per network policy, easy handles kept on a free list), and
// hundreds of requests in flight on the loop thread (socket and timer callbacks on uv_poll /
// uv_timer; no busy loop).
//
// Safety limits, each with its own FailureKind: redirects are followed by the client itself,
// hop by hop (limit, loop detection, scheme check, network policy on every hop); connect,
// first-byte, idle and total timeouts; a cap on the decompressed body that aborts the moment
// it is exceeded.
//
// Network policy: unless Request::allow_private_network, a request may only connect to public
// addresses (see address.hpp). The check runs on the address actually connected to, after DNS
// (so a name resolving to 127.0.0.1 and DNS rebinding are caught), on every redirect hop, and
// an IP-literal host is refused before anything is sent. Requests that allow the private
// network use a separate connection cache, so a public-only request never reuses a
// connection opened to a private address. With a proxy, the address checked is the proxy's
// (the proxy resolves and connects to the target; an IP-literal target is still refused
// up front). A proxy on loopback therefore needs allow_private_network.
//
// A non-2xx status is not a failure: the Response carries it with its headers (Retry-After).
//
// Threading: everything (constructor, Start, Cancel, destructor, CookieJar) on the loop
// thread. `done` runs on the loop thread exactly once per Start: never from inside Start
// (a request that fails validation completes on a later loop turn), synchronously from
// inside Cancel (with kCancelled), and from the destructor (kCancelled) for whatever is still
// in flight. An exception thrown by `done` is caught and logged; none unwinds through curl or
// libuv. `done` may call Start and Cancel; it must not destroy the Client.
//
// Shutdown order: destroy the Client before its Loop. ~Client cancels everything in flight
// (each `done` gets kCancelled), frees the curl handles and closes its uv handles; the Loop's
// destructor then runs their close callbacks. A CookieJar may outlive the Client or die first
// (requests hold it by shared_ptr while they run).

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/base/result.hpp"

namespace celeriac {
class Loop;
}

namespace celeriac::http {

// What went wrong, for the pipeline's error classes. The Error next to it carries the
// message and the retryable bit.
enum class FailureKind {
  kNone,               // success
  kInvalidUrl,         // not an absolute http(s) URL, or a redirect to one; not retryable
  kBlockedAddress,     // network policy refused the address; not retryable
  kDns,                // name did not resolve; retryable
  kConnect,            // refused, unreachable, reset while connecting; retryable
  kProxy,              // the proxy failed or refused; retryable
  kTls,                // handshake or certificate failure; retryable only for handshake errors
  kConnectTimeout,     // DNS + TCP + TLS did not finish in connect_timeout; retryable
  kFirstByteTimeout,   // no response header in first_byte_timeout; retryable
  kIdleTimeout,        // no byte for idle_timeout after the response began; retryable
  kTotalTimeout,       // the whole request (all hops) exceeded total_timeout; retryable
  kTooLarge,           // decompressed body over max_body_bytes; not retryable
  kTooManyRedirects,   // more than max_redirects hops; not retryable
  kRedirectLoop,       // a redirect chain came back to a URL it had visited; not retryable
  kConnectionLost,     // connection closed or reset mid-response; retryable
  kProtocol,           // malformed response, bad content encoding, HTTP/2 error
  kCancelled,          // Cancel() or ~Client; retryable (the request never finished)
  kInternal,           // out of memory, curl misuse; not retryable
};

std::string_view ToString(FailureKind kind);

enum class HttpVersion { kUnknown, kHttp10, kHttp11, kHttp2, kHttp3 };
std::string_view ToString(HttpVersion v);

// Response headers in arrival order; names keep their case, lookups ignore it. One string and
// one vector per response.
class Headers {
 public:
  // The first value of `name`, or nullopt.
  std::optional<std::string_view> Get(std::string_view name) const;
  // Every value of `name` (Set-Cookie, Link, ...).
  std::vector<std::string_view> GetAll(std::string_view name) const;
  bool Has(std::string_view name) const { return Get(name).has_value(); }
  size_t size() const { return entries_.size(); }
  std::string_view name(size_t i) const;
  std::string_view value(size_t i) const;

  void Add(std::string_view name, std::string_view value);
  void Clear();

 private:
  struct Entry {
    uint32_t name_offset, name_size, value_offset, value_size;
  };
  void ExtendLast(std::string_view more);  // obsolete line folding
  friend struct HeaderSink;
  std::string data_;
  std::vector<Entry> entries_;
};

struct Timings {
  // From the start of the final hop, as libcurl measures them; zero when a phase was skipped
  // (a reused connection has no DNS, connect or TLS time).
  std::chrono::microseconds dns{0};
  std::chrono::microseconds connect{0};      // TCP connected
  std::chrono::microseconds tls{0};          // TLS handshake done (0 for cleartext)
  std::chrono::microseconds first_byte{0};   // first response byte
  std::chrono::microseconds final_hop{0};    // the final hop, start to end
  std::chrono::microseconds total{0};        // Start() to completion, all hops
};

struct RedirectHop {
  std::string url;   // the URL that answered with a redirect
  int status = 0;    // 301, 302, 303, 307 or 308
};

struct Response {
  int status = 0;
  std::string url;                        // the final URL (after redirects)
  std::vector<RedirectHop> redirects;     // hops before `url`, in order
  Headers headers;                        // of the final response
  std::string body;                       // decompressed
  std::string content_type;               // Content-Type header as sent, "" if none
  HttpVersion http_version = HttpVersion::kUnknown;
  std::string primary_ip;                 // address of the final connection (the proxy's, with one)
  int64_t wire_bytes = 0;                 // header and (still encoded) body bytes, all hops
  Timings timings;
};

class CookieJar;

struct Request {
  std::string url;
  std::string method = "GET";  // GET, HEAD, POST, PUT, ...
  std::vector<std::pair<std::string, std::string>> headers;  // extra request headers
  std::string body;            // sent with POST (even empty) and with other methods but GET/HEAD

  std::shared_ptr<CookieJar> cookies;  // null: no cookies are stored or sent
  // "" for none; "http://host:port", "https://...", "socks5://...", "socks5h://..."
  // (socks5h resolves at the proxy), with optional "user:pass@".
  std::string proxy;
  bool allow_private_network = false;

  bool follow_redirects = true;
  int max_redirects = 10;

  std::chrono::milliseconds connect_timeout{10'000};      // DNS + TCP + TLS, per hop
  std::chrono::milliseconds first_byte_timeout{30'000};   // hop start (incl. connect) to status line; 0 = off
  std::chrono::milliseconds idle_timeout{30'000};         // no byte for this long after the first; 0 = off
  std::chrono::milliseconds total_timeout{60'000};        // Start to the end, all hops
  size_t max_body_bytes = 10 * 1024 * 1024;               // decompressed

  bool verify_tls = true;
  std::string ca_file;    // PEM bundle to trust instead of the system's; "" = system
  bool http2 = true;      // offer h2 by ALPN on https; false pins HTTP/1.1
  std::string user_agent; // "" = ClientOptions::user_agent
};

// Failure or Response, with the failure's kind for the pipeline to classify. It is a
// Result<Response>, so code written against Result works on it unchanged.
class Outcome : public Result<Response> {
 public:
  Outcome(Response response) : Result<Response>(std::move(response)) {}  // NOLINT
  Outcome(FailureKind kind, Error error) : Result<Response>(std::move(error)), kind_(kind) {}
  FailureKind kind() const { return kind_; }

 private:
  FailureKind kind_ = FailureKind::kNone;
};

// Settings for the Client as a whole. Key = default: meaning.
struct ClientOptions {
  std::string user_agent;             // User-Agent when a request sets none; "": "Celeriac/<version>"
  long max_total_connections = 0;     // 0: no cap (CURLMOPT_MAX_TOTAL_CONNECTIONS)
  long max_host_connections = 0;      // 0: no cap per host (politeness lives upstream)
  long connection_cache_size = 0;     // idle connections kept per policy; 0: curl's default
  size_t max_pooled_handles = 1024;   // easy handles kept for reuse after their request
  // Tests only: exact IP addresses ("127.0.0.1") the network policy treats as public, so a
  // test on loopback can exercise the policy on redirect hops. Empty in production.
  std::vector<std::string> treat_as_public;
};

class Client {
 public:
  using Id = uint64_t;
  using Done = std::function<void(Outcome)>;

  // Throws on failure to initialise libcurl (start-up code).
  Client(Loop& loop, ClientOptions options = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Starts `request`; `done` runs later, exactly once. Returns an id for Cancel (never 0).
  Id Start(Request request, Done done);
  // Ends the request now and runs its `done` with kCancelled before returning. Unknown or
  // finished ids are ignored (returns false).
  bool Cancel(Id id);
  // Requests started whose `done` has not run yet.
  size_t in_flight() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// Cookies shared by the requests of one crawl: create one per job, pass it in each Request.
// Cookies set by a response are sent on later requests to matching hosts and paths (curl's
// cookie engine, RFC 6265 rules). Loop thread only.
class CookieJar {
 public:
  CookieJar();
  ~CookieJar();
  CookieJar(const CookieJar&) = delete;
  CookieJar& operator=(const CookieJar&) = delete;

  // Adds a cookie as a server would set it, for `url`'s host: ("https://a.example/",
  // "sid=1; Path=/; Secure"). Returns false if curl refused the line or the URL.
  bool Add(std::string_view url, std::string_view set_cookie);
  // Every cookie, one Netscape cookie-file line each (for logs and tests).
  std::vector<std::string> List() const;
  void Clear();

  void* native() const { return share_; }  // the CURLSH*, for the client

 private:
  void* share_;
};

}  // namespace celeriac::http
