#pragma once
// HttpTestServer: an in-process cpp-httplib server on 127.0.0.1, port 0, that behaves well and
// badly on purpose, for tests of HTTP clients (core/http) and of what crawls through them.
//
// Routes installed by default (all GET unless said):
//   /ok                      200 "hello"
//   /size/N                  200 with N bytes of 'a' (Content-Length set)
//   /status/N                status N, body "status N"; 429 and 503 carry "Retry-After: 7"
//   /redirect/N              302 chain: /redirect/N -> /redirect/N-1 -> ... -> /ok
//   /redirect-to?url=U&code=C redirect with status C (default 302) to U
//   /loop/a, /loop/b         302 to each other, forever
//   /stall                   never sends a byte of its answer (until the server stops)
//   /stall-body              headers and 10 of 1000 announced bytes, then nothing
//   /trickle                 chunked, one byte every 50 ms for up to 30 s
//   /endless                 chunked, 64 KiB chunks forever (until the client goes away)
//   /gzip, /br               a text body sent gzip- or brotli-encoded (X-Plain-Length: its size)
//   /set-cookie              Set-Cookie: session=s3cr3t; Path=/
//   /echo-cookie             body = the Cookie header received
//   /echo                    any method: "<METHOD> <body>", echoes the X-Test header
//   /headers                 duplicate and mixed-case headers
// `plain_text()` is the text /gzip and /br encode. `hits(path)` counts requests per path.
//
// Threading: handlers run on the server's pool (32 threads). The destructor releases stalled
// handlers, stops the server and joins its thread.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace httplib {
class Server;
}

namespace celeriac::testing {

// A throwaway self-signed certificate (CN=localhost, SAN localhost and 127.0.0.1) made with
// the openssl CLI in a fresh temp directory; the certificate doubles as its own CA file.
// The directory is removed with the object.
struct TlsFiles {
  TlsFiles(std::string d, std::string c, std::string k)
      : dir(std::move(d)), cert(std::move(c)), key(std::move(k)) {}
  TlsFiles(TlsFiles&& other) noexcept
      : dir(std::exchange(other.dir, {})), cert(std::move(other.cert)), key(std::move(other.key)) {}
  TlsFiles(const TlsFiles&) = delete;
  TlsFiles& operator=(const TlsFiles&) = delete;
  TlsFiles& operator=(TlsFiles&&) = delete;
  ~TlsFiles();

  std::string dir;
  std::string cert;
  std::string key;
};
TlsFiles MakeSelfSignedCert();

class HttpTestServer {
 public:
  using Setup = std::function<void(httplib::Server&)>;
  // With `tls`, serves HTTPS. `extra` adds routes before the server starts.
  explicit HttpTestServer(const TlsFiles* tls = nullptr, Setup extra = nullptr);
  ~HttpTestServer();
  HttpTestServer(const HttpTestServer&) = delete;
  HttpTestServer& operator=(const HttpTestServer&) = delete;

  int port() const { return port_; }
  // "http://127.0.0.1:PORT" + path (https with TLS).
  std::string Url(const std::string& path) const;
  // Same, with a host name in place of the address ("localhost", "127.0.0.2", ...).
  std::string UrlWithHost(const std::string& host, const std::string& path) const;
  int hits(const std::string& path) const;
  static const std::string& plain_text();

 private:
  void Install();
  void Count(const std::string& path);
  bool WaitUntilStopped(std::chrono::milliseconds max);

  std::unique_ptr<httplib::Server> server_;
  bool tls_ = false;
  int port_ = 0;
  std::thread thread_;
  mutable std::mutex mutex_;
  std::condition_variable stopped_cv_;
  bool stopping_ = false;
  std::map<std::string, int> hits_;
};

// Runs `argv` as a child process (no shell), to stop with Kill(); for nginx in tests and
// benchmarks. Throws if it cannot start.
class ChildProcess {
 public:
  explicit ChildProcess(const std::vector<std::string>& argv);
  ~ChildProcess();
  int pid() const { return pid_; }
  void Kill();

 private:
  int pid_ = -1;
};

// A free TCP port on 127.0.0.1 (bound and released; good enough for a test).
int FreeLoopbackPort();
// Polls until something accepts on 127.0.0.1:port or `max` passes.
bool WaitForPort(int port, std::chrono::milliseconds max);

}  // namespace celeriac::testing
