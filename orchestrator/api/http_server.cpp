#include "orchestrator/api/http_server.hpp"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>
#include <vector>

namespace celeriac::orchestrator::api {
namespace {

using Clock = std::chrono::steady_clock;

// Set on the accept thread while it runs a connection it refuses (see Queue::enqueue).
thread_local bool t_refusing = false;
// Whether the current request of this server thread ran out of read time.
thread_local bool t_timed_out = false;

// Rounded up, so that a poll that times out has reached the deadline.
int MillisLeft(Clock::time_point deadline) {
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<long long>(left, 0, 1'000'000));
}

// poll() until `events` or the deadline; false once the deadline has passed (or on an error).
bool WaitUntil(socket_t sock, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd p{sock, events, 0};
    const int rc = ::poll(&p, 1, MillisLeft(deadline));
    if (rc > 0) return true;
    if (rc < 0 && errno != EINTR) return false;
    if (rc == 0 && Clock::now() >= deadline) return false;
  }
}

void Address(socket_t sock, bool peer, std::string& ip, int& port) {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  const int rc = peer ? ::getpeername(sock, reinterpret_cast<sockaddr*>(&addr), &len)
                      : ::getsockname(sock, reinterpret_cast<sockaddr*>(&addr), &len);
  if (rc != 0) return;
  std::array<char, NI_MAXHOST> host{};
  std::array<char, NI_MAXSERV> serv{};
  if (::getnameinfo(reinterpret_cast<sockaddr*>(&addr), len, host.data(), host.size(),
                    serv.data(), serv.size(), NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
    ip = host.data();
    port = std::atoi(serv.data());
  }
}

}  // namespace

// A fixed set of threads and a bounded wait list. What does not fit is run at once on the
// accept thread with t_refusing set, which makes process_and_close_socket refuse it: the only
// way to reach the socket, which httplib hands over inside the task.
class HttpServer::Queue final : public httplib::TaskQueue {
 public:
  explicit Queue(const HttpServerLimits& limits)
      : capacity_(limits.threads + limits.max_queued) {
    for (size_t i = 0; i < std::max<size_t>(1, limits.threads); ++i)
      threads_.emplace_back([this] { Work(); });
  }
  ~Queue() override { shutdown(); }

  void enqueue(std::function<void()> fn) override {
    {
      std::lock_guard lock(mu_);
      // Running and waiting together: counting only the waiting ones would let a burst in
      // before the threads have taken what is already there.
      if (admitted_ < capacity_) {
        ++admitted_;
        jobs_.push_back(std::move(fn));
        cv_.notify_one();
        return;
      }
    }
    t_refusing = true;
    fn();
    t_refusing = false;
  }

  void shutdown() override {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

 private:
  void Work() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
        if (jobs_.empty()) return;  // stopping, and what was queued has been served
        fn = std::move(jobs_.front());
        jobs_.pop_front();
      }
      fn();
      std::lock_guard lock(mu_);
      --admitted_;
    }
  }

  const size_t capacity_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  size_t admitted_ = 0;  // queued + being served
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

// One connection's stream: buffered reads against the deadline of the request being read,
// writes against the deadline of the answer being written.
class HttpServer::Connection final : public httplib::Stream {
 public:
  Connection(socket_t sock, const HttpServerLimits& limits) : sock_(sock), limits_(limits) {}

  void StartRequest() {
    read_deadline_ = Clock::now() + limits_.read_timeout;
    write_deadline_.reset();
    t_timed_out = false;
  }

  bool is_readable() const override {
    if (WaitUntil(sock_, POLLIN, read_deadline_)) return true;
    if (Clock::now() >= read_deadline_) t_timed_out = true;
    return false;
  }

  bool is_writable() const override {
    if (!write_deadline_) write_deadline_ = Clock::now() + limits_.write_timeout;
    return WaitUntil(sock_, POLLOUT, *write_deadline_);
  }

  ssize_t read(char* ptr, size_t size) override {
    if (offset_ < filled_) {
      const size_t n = std::min(size, filled_ - offset_);
      std::copy_n(buffer_.data() + offset_, n, ptr);
      offset_ += n;
      return static_cast<ssize_t>(n);
    }
    if (!is_readable()) return -1;
    ssize_t n;
    do {
      n = ::recv(sock_, buffer_.data(), buffer_.size(), 0);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) return n;
    filled_ = static_cast<size_t>(n);
    offset_ = 0;
    return read(ptr, size);
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (!is_writable()) return -1;
    ssize_t n;
    do {
      n = ::send(sock_, ptr, size, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n;
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    Address(sock_, true, ip, port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    Address(sock_, false, ip, port);
  }
  socket_t socket() const override { return sock_; }

 private:
  const socket_t sock_;
  const HttpServerLimits& limits_;
  Clock::time_point read_deadline_;
  mutable std::optional<Clock::time_point> write_deadline_;
  std::array<char, 4096> buffer_{};
  size_t offset_ = 0;
  size_t filled_ = 0;
};

HttpServer::HttpServer(HttpServerLimits limits) : limits_(limits) {
  new_task_queue = [this] { return new Queue(limits_); };
  // Our Connection enforces the timeouts; these also set SO_RCVTIMEO / SO_SNDTIMEO on each
  // accepted socket, a second line should a call ever block outside it.
  set_read_timeout(limits_.read_timeout);
  set_write_timeout(limits_.write_timeout);
  set_keep_alive_timeout(limits_.keep_alive_timeout.count());
  set_keep_alive_max_count(std::max<size_t>(1, limits_.keep_alive_max_requests));
  set_payload_max_length(limits_.max_body_bytes);
}

HttpServer::~HttpServer() = default;

bool HttpServer::RequestTimedOut() { return t_timed_out; }

bool HttpServer::AwaitRequest(socket_t sock) const {
  const auto deadline = Clock::now() + limits_.keep_alive_timeout;
  // In slices, so that stop() ends idle connections promptly.
  while (svr_sock_ != INVALID_SOCKET) {
    const auto slice = std::min(deadline, Clock::now() + std::chrono::milliseconds(100));
    if (WaitUntil(sock, POLLIN, slice)) return true;
    if (Clock::now() >= deadline) return false;
  }
  return false;
}

bool HttpServer::process_and_close_socket(socket_t sock) {
  if (t_refusing) {
    Refuse(sock);
    return false;
  }
  Connection connection(sock, limits_);
  bool ok = false;
  const size_t max_requests = std::max<size_t>(1, limits_.keep_alive_max_requests);
  for (size_t served = 0; served < max_requests && AwaitRequest(sock); ++served) {
    connection.StartRequest();
    bool closed = false;
    ok = process_request(connection, served + 1 == max_requests, closed, nullptr);
    if (!ok || closed || t_timed_out) break;  // after a 408, this client gets no more time
  }
  t_timed_out = false;
  ::shutdown(sock, SHUT_RDWR);
  ::close(sock);
  return ok;
}

void HttpServer::Refuse(socket_t sock) {
  static constexpr std::string_view kBody = "{\"error\":\"server busy, try again later\"}\n";
  static const std::string kAnswer =
      "HTTP/1.1 503 Service Unavailable\r\n"
      "Content-Type: application/json\r\n"
      "Retry-After: 5\r\n"
      "Connection: close\r\n"
      "Content-Length: " + std::to_string(kBody.size()) + "\r\n\r\n" + std::string(kBody);
  // A fresh socket's send buffer takes this whole; if not, the client gets the close alone.
  (void)::send(sock, kAnswer.data(), kAnswer.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  ::shutdown(sock, SHUT_WR);
  // Whatever the client sent already is read away, so that the close is a FIN, not a reset
  // that could discard the answer at the client.
  std::array<char, 4096> sink{};
  while (::recv(sock, sink.data(), sink.size(), MSG_DONTWAIT) > 0) {
  }
  ::close(sock);
  ++refused_;
  if (on_refused_) on_refused_();
}

}  // namespace celeriac::orchestrator::api
