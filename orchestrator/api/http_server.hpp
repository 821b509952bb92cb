#pragma once
// HttpServer: cpp-httplib's Server with bounded resources, for a server that faces clients it
// does not control (the admin API).
//
// httplib (Debian's 0.11) queues every accepted connection for its thread pool without limit,
// and times out each read separately, so a client that trickles a byte every few seconds holds
// a thread for as long as it likes. Here:
//   - `threads` threads serve connections; at most `max_queued` more wait for one. A connection
//     accepted beyond that is refused at once: "503 Service Unavailable" (Retry-After,
//     Connection: close) written without blocking, then closed. Nothing waits unboundedly.
//   - A request (request line, headers and body) must arrive whole within `read_timeout` of
//     its first byte, else the connection gets 408 and is closed; its answer must be written
//     within `write_timeout`. Between requests a connection may idle `keep_alive_timeout`, and
//     serves `keep_alive_max_requests` at most.
//   - Bodies above `max_body_bytes` get 413.
// So a connection holds a thread for at most keep_alive_timeout + read_timeout + handler time
// + write_timeout per request, and clients that open more connections than threads + queue
// are turned away instead of piling up.
//
// Threading: as httplib::Server. listen_after_bind() runs the accept loop on the caller's thread
// (refusals are written there, non-blocking); stop() from any thread ends the accept loop and,
// within a fraction of a second, idle keep-alive connections; requests in flight finish.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>

#include <httplib.h>

namespace celeriac::orchestrator::api {

struct HttpServerLimits {
  size_t threads = 8;
  size_t max_queued = 64;
  std::chrono::seconds read_timeout{10};
  std::chrono::seconds write_timeout{10};
  std::chrono::seconds keep_alive_timeout{5};
  size_t keep_alive_max_requests = 100;
  size_t max_body_bytes = 1 << 20;
};

class HttpServer final : public httplib::Server {
 public:
  explicit HttpServer(HttpServerLimits limits);
  ~HttpServer() override;

  const HttpServerLimits& limits() const { return limits_; }
  // Connections refused because every thread was busy and the queue full.
  uint64_t refused_connections() const { return refused_.load(); }
  // Called on the accept thread after each refusal (for a counter, a rate-limited log line).
  void OnRefused(std::function<void()> fn) { on_refused_ = std::move(fn); }

  // True on a server thread whose current request did not arrive within read_timeout: the
  // 400 httplib is about to answer is a 408 (an error handler may say so).
  static bool RequestTimedOut();

 private:
  class Queue;
  class Connection;

  bool process_and_close_socket(socket_t sock) override;
  void Refuse(socket_t sock);
  // Waits for the next request's first byte (or the peer's close); false when the connection
  // idled keep_alive_timeout or the server is stopping.
  bool AwaitRequest(socket_t sock) const;

  const HttpServerLimits limits_;
  std::atomic<uint64_t> refused_{0};
  std::function<void()> on_refused_;
};

}  // namespace celeriac::orchestrator::api
