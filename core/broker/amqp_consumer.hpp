#pragma once
// AmqpConsumer: AmqpBroker's consuming side. One connection owned by one I/O thread: channel 1
// for declarations (so an exclusive queue belongs to the connection that consumes it), and one
// channel per consumer.
//
// Commands. Other threads' Declare / DeleteQueue / Consume / Cancel / SetPrefetch are queued to
// the I/O thread and wait for its answer, at most the RPC timeout (while disconnected, they
// wait for the reconnect that long). From a handler (on the I/O thread) they run at once.
//
// Acks. Ack / Reject are checked and recorded at once by the consumer's AckTracker, then sent by
// the I/O thread, coalesced into one basic.ack(multiple) where the acked tags are contiguous
// (ack_tracker.hpp). A delivery tag is opaque: it carries the generation of the channel that
// delivered it, so an ack of a delivery from a channel or connection that has since died fails
// (NotFound, not retryable) instead of acking an unrelated message on the new channel.
//
// Prefetch: channel-wide (basic.qos global=true, as kombu sets it on RabbitMQ 3.x), on the
// consumer's own channel. RabbitMQ applies a channel-wide limit at once and counts the
// deliveries already unacked, so SetPrefetch is one basic.qos and the limit always bounds what
// the consumer holds. (Per-consumer QoS, global=false, binds only consumers started after it:
// changing it meant re-subscribing with a fresh window, so messages held unacked stopped
// counting and an ETA backlog could be drained into memory.) RabbitMQ 4 deprecates global QoS
// for quorum queues; Celery's queues are classic queues.
//
// Reconnection: when the connection fails (socket error, heartbeat timeout, connection.close,
// broker restart) the I/O thread logs it, backs off, reconnects, re-declares every QueueSpec
// declared so far in order, and re-opens every consumer with its current prefetch. A consumer
// whose channel alone fails (server-side cancel, channel error) is re-opened the same way,
// with its own backoff, without touching the others; its queue is re-declared first if we
// declared it.
//
// Lost deliveries: when a consumer's channel or the connection dies, its
// ConsumeOptions::on_deliveries_lost runs on the I/O thread before the consumer is re-opened,
// so before anything is delivered on the new channel; acks requested for the lost deliveries
// and not yet sent are dropped (the server has requeued them).
//
// Threading: every public method is thread-safe. Handlers, on_burst_end and on_deliveries_lost
// run on the I/O thread, one at a time; handlers may call any method but Close(). The thread
// poll()s the socket and an eventfd that wakes it when work is queued, and calls `service`
// (AmqpBroker: the publisher's heartbeats) about twice per heartbeat interval.
//
// Shutdown: Close() stops the I/O thread, which sends the acks already requested, closes the
// connection (the server requeues every unacked delivery) and fails the queued commands; then
// it joins the thread. The destructor calls it.
//
// Internal to core/broker (it includes <amqp.h>): only core/broker's .cpp files include it.

#include <amqp.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/fwd.h>

#include "core/base/backoff.hpp"
#include "core/base/result.hpp"
#include "core/broker/ack_tracker.hpp"
#include "core/broker/amqp_connection.hpp"
#include "core/broker/broker.hpp"

namespace celeriac::broker {

class AmqpConsumer {
 public:
  AmqpConsumer(AmqpConnectionSettings connection, BackoffPolicy reconnect_backoff,
               std::shared_ptr<spdlog::logger> log, std::function<void()> service);
  ~AmqpConsumer();
  AmqpConsumer(const AmqpConsumer&) = delete;
  AmqpConsumer& operator=(const AmqpConsumer&) = delete;

  // Starts the I/O thread unless it runs; fails once closed.
  Status Start();
  // Starts, then waits (connect timeout + RPC timeout) for the connection or a failed attempt.
  Status Connect();

  Status Declare(const QueueSpec& spec);
  Status DeleteQueue(const std::string& name);
  Result<ConsumerId> Consume(const ConsumeOptions& options, DeliveryHandler handler);
  Status Cancel(ConsumerId consumer);
  Status SetPrefetch(ConsumerId consumer, uint16_t prefetch);
  Status Ack(ConsumerId consumer, uint64_t delivery_tag);
  Status Reject(ConsumerId consumer, uint64_t delivery_tag, bool requeue);
  void Close();

  // Connections established so far: 0 before the first, +1 per reconnect.
  uint64_t generation() const;

 private:
  struct Consumer;  // one consumer and its channel
  struct Command;   // a call queued to the I/O thread

  // --- called from any thread ---
  Status Submit(const std::shared_ptr<Command>& cmd);
  Status SettleRequest(ConsumerId id, uint64_t tag, bool ack, bool requeue);
  void Wake();  // under mu_
  bool OnIoThread() const { return io_id_.load() == std::this_thread::get_id(); }

  // --- I/O thread: the connection ---
  void IoMain();
  Status ConnectConsumer();
  void RunConnected();
  void IdleWait(std::chrono::milliseconds delay);
  void Teardown();
  void Shutdown();
  void DrainEventFd();
  void Fail(const std::string& why);
  Status Check(amqp_channel_t channel, const std::string& what,
               const std::shared_ptr<Consumer>& consumer = nullptr);
  Status EnsureControl();
  amqp_channel_t AllocateChannel();
  void ReleaseChannel(amqp_channel_t ch);
  // --- I/O thread: commands ---
  void ProcessCommands(bool connected_now);
  Status Execute(Command& cmd);
  Status DoDeclare(const QueueSpec& spec, bool record);
  Status DoDeleteQueue(const std::string& name);
  Status DoConsume(const std::shared_ptr<Consumer>& c);
  Status DoCancel(ConsumerId id);
  Status DoSetPrefetch(ConsumerId id, uint16_t prefetch);
  // --- I/O thread: consumers ---
  Status OpenConsumer(const std::shared_ptr<Consumer>& c);
  Status Subscribe(const std::shared_ptr<Consumer>& c);
  void ChannelFailed(const std::shared_ptr<Consumer>& c, const std::string& why);
  void NotifyLost(const std::shared_ptr<Consumer>& c);
  void RemoveConsumer(const std::shared_ptr<Consumer>& c);
  void ReopenConsumers();
  std::shared_ptr<Consumer> FindConsumer(ConsumerId id);
  // --- I/O thread: deliveries and acks ---
  void FlushAcks();
  void HandleFrame(const amqp_frame_t& frame);
  std::shared_ptr<Consumer> OnChannel(amqp_channel_t channel) const;
  void HandleMethod(amqp_channel_t channel, const amqp_method_t& method);
  void HandleContent(const amqp_frame_t& frame);
  void Dispatch(const std::shared_ptr<Consumer>& c);
  void EndBursts();

  const AmqpConnectionSettings connection_;
  std::shared_ptr<spdlog::logger> log_;
  const Backoff backoff_;
  const std::function<void()> service_;

  std::mutex close_mu_;  // serialises Close()

  // Shared with other threads, guarded by mu_.
  mutable std::mutex mu_;
  std::condition_variable state_cv_;
  std::deque<std::shared_ptr<Command>> commands_;
  bool wake_pending_ = false;
  bool started_ = false;
  bool stopping_ = false;
  bool connected_ = false;
  uint64_t generation_ = 0;
  uint64_t attempts_ = 0;  // finished connection attempts
  std::optional<Error> last_error_;
  std::map<ConsumerId, std::shared_ptr<Consumer>> consumers_;  // changed on the I/O thread only
  std::vector<ConsumerId> dirty_;  // consumers with ack/reject requests not yet sent
  ConsumerId next_consumer_id_ = 1;
  std::vector<QueueSpec> declared_;

  int event_fd_ = -1;
  std::thread io_;
  std::atomic<std::thread::id> io_id_{};

  // I/O thread only.
  amqp_connection_state_t conn_ = nullptr;
  bool conn_failed_ = false;
  std::string conn_failure_;
  bool control_open_ = false;
  std::map<amqp_channel_t, std::shared_ptr<Consumer>> by_channel_;
  std::deque<amqp_channel_t> free_channels_;
  int next_channel_ = 2;
  SteadyClock::time_point next_retry_due_ = SteadyClock::time_point::max();
  SteadyClock::time_point next_service_{};
  std::vector<AckTracker::Frame> frames_;  // FlushAcks: frames to send, in order
  struct FrameRun {
    amqp_channel_t channel;
    size_t end;  // frames_[previous run's end, end) go on `channel`
  };
  std::vector<FrameRun> frame_runs_;
  std::vector<std::shared_ptr<Consumer>> finished_;
  std::vector<std::shared_ptr<Consumer>> bursting_;  // in_burst, with an on_burst_end
};

}  // namespace celeriac::broker
