#pragma once
// Listener: Postgres LISTEN on one channel, on a connection of its own (leased from a Pool for
// the Listener's lifetime, and closed, not returned, when it goes).
//
// Wait() blocks until a notification arrives, Wake() is called, or the timeout passes, and
// returns the payloads received (empty for a wake-up or a timeout). A notification sent while
// the connection was down is lost: after Wait() returned an error the caller reconnects with
// Listen() and then rescans whatever it watches, since it cannot know what it missed.
//
// Threading: Listen() and Wait() from one thread; Wake() from any thread.

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/base/result.hpp"
#include "core/pg/pool.hpp"

namespace celeriac::pg {

class Listener {
 public:
  explicit Listener(Pool& pool);
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  // (Re)connects and listens on `channel`; retryable error when Postgres is unreachable.
  Status Listen(const std::string& channel);

  // Payloads of the notifications that arrived (in order); Unavailable when the connection
  // broke (call Listen() again).
  Result<std::vector<std::string>> Wait(std::chrono::milliseconds timeout);

  // Makes the current or next Wait() return at once. Thread-safe.
  void Wake();

 private:
  class Receiver;
  void Drop();

  Pool& pool_;
  std::optional<Pool::Lease> lease_;
  std::unique_ptr<Receiver> receiver_;
  std::vector<std::string> received_;
  int wake_pipe_[2] = {-1, -1};
};

}  // namespace celeriac::pg
