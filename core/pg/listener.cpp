#include "core/pg/listener.hpp"
#include "core/pg/sql.hpp"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>

#include <fmt/format.h>

namespace celeriac::pg {

class Listener::Receiver final : public pqxx::notification_receiver {
 public:
  Receiver(pqxx::connection_base& conn, const std::string& channel,
           std::vector<std::string>& out)
      : pqxx::notification_receiver(conn, channel), out_(out) {}
  void operator()(const std::string& payload, int) override { out_.push_back(payload); }

 private:
  std::vector<std::string>& out_;
};

Listener::Listener(Pool& pool) : pool_(pool) {
  if (pipe2(wake_pipe_, O_NONBLOCK | O_CLOEXEC) != 0)
    throw std::runtime_error(fmt::format("pipe2: errno {}", errno));
}

Listener::~Listener() {
  Drop();
  close(wake_pipe_[0]);
  close(wake_pipe_[1]);
}

void Listener::Drop() {
  receiver_.reset();  // before its connection
  if (lease_) {
    lease_->Discard();  // a listening connection never goes back to the pool
    lease_.reset();
  }
}

Status Listener::Listen(const std::string& channel) {
  Drop();
  auto lease = pool_.Acquire();
  if (!lease) return lease.error();
  lease_.emplace(std::move(*lease));
  try {
    receiver_ = std::make_unique<Receiver>(**lease_, channel, received_);
    (*lease_)->get_notifs();  // issues the LISTEN now rather than on the first wait
  } catch (const std::exception& e) {
    receiver_.reset();
    lease_->Discard();
    lease_.reset();
    return ClassifyPgError(e);
  }
  return Ok();
}

Result<std::vector<std::string>> Listener::Wait(std::chrono::milliseconds timeout) {
  if (!lease_) return Error(ErrorCode::kUnavailable, "not listening (call Listen first)");
  try {
    (*lease_)->get_notifs();  // anything already buffered
    if (received_.empty()) {
      pollfd fds[2] = {{(*lease_)->sock(), POLLIN, 0}, {wake_pipe_[0], POLLIN, 0}};
      const int n = poll(fds, 2, static_cast<int>(std::max<int64_t>(0, timeout.count())));
      if (n < 0 && errno != EINTR)
        return Error(ErrorCode::kInternal, fmt::format("poll: errno {}", errno));
      if (n > 0 && (fds[1].revents & POLLIN)) {
        char buf[64];
        while (read(wake_pipe_[0], buf, sizeof buf) > 0) {
        }
      }
      if (n > 0 && (fds[0].revents & (POLLIN | POLLERR | POLLHUP))) (*lease_)->get_notifs();
      if ((*lease_)->sock() < 0 || !(*lease_)->is_open())
        return Error(ErrorCode::kUnavailable, "the LISTEN connection to postgres closed");
    }
  } catch (const std::exception& e) {
    Drop();
    return ClassifyPgError(e);
  }
  std::vector<std::string> out;
  out.swap(received_);
  return out;
}

void Listener::Wake() {
  const char c = 1;
  [[maybe_unused]] auto n = write(wake_pipe_[1], &c, 1);  // a full pipe is already a wake-up
}

}  // namespace celeriac::pg
