#pragma once
// AmqpPublisher: AmqpBroker's publishing side. One connection with one channel in confirm mode,
// shared by every publishing thread.
//
// Confirms. Publish() sends basic.publish and waits for the broker's basic.ack (basic.nack ->
// Unavailable). Concurrent publishers share the wait: one of them reads the socket for
// everybody, the others sleep until their confirm is in. A batch is sent whole, then waited for
// once; during a long batch pending confirms are read every few hundred messages so that
// neither side's buffers fill up.
//
// Mandatory publishing. Every message is published mandatory: one that no queue takes comes
// back (basic.return, before its basic.ack). A basic.return names no delivery tag, so it is
// matched to the oldest unconfirmed message with the same exchange, routing key and body (or,
// failing that, the same exchange and routing key), and fails its call with NotFound, not
// retryable (see Broker::Publish); the other messages of a batch were delivered. A message
// whose caller gave up waiting is never matched.
//
// Reconnection. The connection opens on first use. On a connection error the publisher
// reconnects (backoff, bounded by the publish timeout) and re-publishes the unconfirmed
// messages once (at least once). A channel error (the server refused something, e.g. 404 no
// exchange) drops every unconfirmed message with it and which one was refused is unknown: they
// are re-published once, and the culprit is refused again and fails its call with the server's
// reason.
//
// Threading: every method is thread-safe (one mutex). Service() is for the thread that serves
// heartbeats (AmqpConsumer's I/O thread) while nobody publishes; it never blocks.
//
// Shutdown: Close() closes the connection; publishing afterwards fails (Unavailable, not
// retryable). The destructor calls it.
//
// Internal to core/broker (it includes <amqp.h>): only core/broker's .cpp files include it.

#include <amqp.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include <spdlog/fwd.h>

#include "core/base/backoff.hpp"
#include "core/base/result.hpp"
#include "core/broker/amqp_connection.hpp"
#include "core/broker/message.hpp"

namespace celeriac::broker {

class AmqpPublisher {
 public:
  AmqpPublisher(AmqpConnectionSettings connection, std::chrono::milliseconds publish_timeout,
                BackoffPolicy reconnect_backoff, std::shared_ptr<spdlog::logger> log);
  ~AmqpPublisher();
  AmqpPublisher(const AmqpPublisher&) = delete;
  AmqpPublisher& operator=(const AmqpPublisher&) = delete;

  // Connects unless connected; fails once `deadline` would pass before the next attempt, or at
  // once on a non-retryable error (bad credentials).
  Status Connect(SteadyClock::time_point deadline);

  // Publishes messages[0..n) and waits for their confirms, within the publish timeout.
  Status Publish(const OutgoingMessage* messages, size_t n);

  // Serves heartbeats and notices a dead connection while nobody publishes. Never blocks.
  void Service();

  void Close();

 private:
  // kReturned: the server sent the message back (basic.return, mandatory): no queue took it.
  enum : uint8_t { kPending = 0, kAcked = 1, kNacked = 2, kReturned = 3 };
  enum class Wait { kDone, kLost, kTimeout };

  Status EnsureConnected(std::unique_lock<std::mutex>& lock, SteadyClock::time_point deadline);
  Status SendOne(const OutgoingMessage& message, uint64_t* seq);
  Wait WaitConfirms(std::unique_lock<std::mutex>& lock, uint64_t gen, const uint64_t* seqs,
                    uint8_t* states, size_t n, SteadyClock::time_point deadline);
  void CollectSettled(uint64_t gen, uint64_t* seqs, const uint8_t* states, size_t n,
                      std::set<std::string>* returned_why);
  Status Verdict(const uint8_t* states, size_t n, const std::set<std::string>& returned_why);
  void ReadSome(std::unique_lock<std::mutex>& lock, SteadyClock::time_point deadline);
  size_t Drain();
  void HandleFrame(const amqp_frame_t& frame);
  void FinishReturn();
  void Forget(uint64_t gen, const uint64_t* seqs, size_t n);
  void Resolve(uint64_t tag, bool multiple, uint8_t state);
  uint8_t StatusOf(uint64_t seq);
  void MarkBroken(Error error, bool refused);

  const AmqpConnectionSettings connection_;
  const std::chrono::milliseconds publish_timeout_;
  std::shared_ptr<spdlog::logger> log_;
  Backoff backoff_;

  std::mutex mu_;
  std::condition_variable cv_;
  amqp_connection_state_t conn_ = nullptr;
  bool closed_ = false;
  uint64_t gen_ = 0;
  uint64_t base_seq_ = 1;        // seq of status_[0]
  uint64_t next_seq_ = 1;        // seq of the next basic.publish on this channel
  std::deque<uint8_t> status_;   // seqs [base_seq_, next_seq_)
  // The message of each seq in status_, while its publisher waits for it (null once it gave
  // up): what a basic.return is matched against.
  std::deque<const OutgoingMessage*> sent_;
  std::set<uint64_t> nacked_;    // nacked seqs already dropped from status_
  std::map<uint64_t, std::string> returned_;  // returned seqs -> why, until their waiter reads it
  // A basic.return being read: its method, then a content header and body frames.
  struct Returning {
    bool active = false;
    std::string why;  // "exchange '' routing key 'q': 312 NO_ROUTE"
    std::string exchange;
    std::string routing_key;
    uint64_t body_size = 0;
    bool have_header = false;
    std::string body;
  } returning_;
  bool reader_ = false;          // a thread is reading confirms for everybody
  uint64_t failed_gen_ = 0;      // the generation whose connection failed last
  std::optional<Error> failure_;
  bool failure_refused_ = false;  // the server refused something (channel error), not a network error
  int connect_failures_ = 0;
  SteadyClock::time_point next_connect_{};
  std::string last_error_;
  amqp_pool_t pool_;             // header tables of the message being sent, recycled per message
};

}  // namespace celeriac::broker
