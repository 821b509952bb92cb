#pragma once
// What the publisher and the consumer connections share: opening a connection and logging in,
// reading an RPC reply or a close frame, and mapping AMQP reply codes to our error codes.
//
// Errors say what to do next (core/base/error.hpp): a refused login or a missing vhost is
// PermissionDenied, a missing queue or exchange NotFound, an exclusive queue in use Conflict,
// a declaration that differs from the existing one InvalidArgument, a frame we got wrong
// Protocol; everything else (the server closing the connection, 320 CONNECTION_FORCED, a
// network error) is Unavailable and retryable, and an RPC timeout is Timeout.
//
// Threading: a rabbitmq-c connection is not thread-safe; these functions act on the connection
// they are given, and its owner serialises them.
//
// Internal to core/broker (it includes <amqp.h>): only core/broker's .cpp files include it.

#include <amqp.h>
#include <sys/time.h>

#include <chrono>
#include <string>

#include "core/base/result.hpp"
#include "core/broker/amqp_url.hpp"

namespace celeriac::broker {

using SteadyClock = std::chrono::steady_clock;

// How to reach the server, for one connection.
struct AmqpConnectionSettings {
  AmqpUrl url;
  int heartbeat_s = 30;                             // 0 disables heartbeats
  std::string name;                                 // client property connection_name
  std::chrono::milliseconds connect_timeout{5000};  // TCP connect plus the AMQP handshake
  std::chrono::milliseconds rpc_timeout{10000};     // each synchronous method (rabbitmq-c's)

  // host:port, for messages.
  std::string Where() const { return url.host + ":" + std::to_string(url.port); }
};

// Opens a TCP connection and logs in, announcing the capabilities we use (publisher confirms,
// basic.nack, consumer cancel notifications, connection.blocked). The caller owns the result
// (amqp_destroy_connection).
Result<amqp_connection_state_t> OpenConnection(const AmqpConnectionSettings& settings);

// connection.close with a short timeout, then amqp_destroy_connection. `graceful` = false (the
// connection failed already) only destroys it.
void CloseConnection(amqp_connection_state_t conn, bool graceful);

// AMQP reply codes (connection.close / channel.close) to our error codes.
ErrorCode CodeForReply(int reply_code);

// What an RPC reply (or a close frame) means for the connection and the channel.
struct ReplyOutcome {
  Status status;
  bool connection_dead = false;
  bool channel_dead = false;
};

// "<code> <text>" of a close or return method.
std::string ReplyText(int code, amqp_bytes_t text);

// Turns a close method into an outcome, answering it with close-ok as the protocol requires.
// Any other method is a protocol error that kills the connection.
ReplyOutcome FromCloseMethod(amqp_connection_state_t conn, amqp_channel_t channel,
                             const amqp_method_t& method, const std::string& what);

// The outcome of the synchronous method just called on `channel` (amqp_get_rpc_reply's `r`).
// rabbitmq-c closes the socket on an RPC timeout, so a library error kills the connection.
ReplyOutcome CheckReply(amqp_connection_state_t conn, amqp_channel_t channel,
                        const amqp_rpc_reply_t& r, const std::string& what);

timeval ToTimeval(std::chrono::milliseconds ms);

// Milliseconds from now until `t` (negative once it has passed).
long long MillisUntil(SteadyClock::time_point t);

}  // namespace celeriac::broker
