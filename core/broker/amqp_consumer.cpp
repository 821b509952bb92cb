#include "core/broker/amqp_consumer.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <future>
#include <utility>

#include <spdlog/spdlog.h>

#include "core/broker/amqp_bytes.hpp"
#include "core/broker/amqp_properties.hpp"
#include "core/broker/amqp_table.hpp"

namespace celeriac::broker {
namespace {

using std::chrono::milliseconds;

constexpr amqp_channel_t kControlChannel = 1;
constexpr int kFramesPerRound = 256;  // frames read before acks and commands get a turn
constexpr uint64_t kMaxBodySize = uint64_t{1} << 30;

// A string kept for reuse, unless it grew large.
void ClearKeepingSmall(std::string& s) {
  if (s.capacity() > 64 * 1024) {
    std::string().swap(s);
  } else {
    s.clear();
  }
}

// Empties a Delivery for the next message, keeping its (small) buffers.
void ResetDelivery(Delivery& d) {
  d.delivery_tag = 0;
  d.redelivered = false;
  d.exchange.clear();
  d.routing_key.clear();
  d.queue.clear();
  ClearKeepingSmall(d.body);
  ClearKeepingSmall(d.raw_headers);
  Properties& p = d.properties;
  p.content_type.clear();
  p.content_encoding.clear();
  if (p.headers.is_object()) {
    p.headers.clear();
  } else {
    p.headers = Headers::object();
  }
  p.delivery_mode = 2;
  p.priority = 0;
  p.correlation_id.clear();
  p.reply_to.clear();
  p.expiration.reset();
  p.message_id.reset();
  p.timestamp.reset();
  p.type.reset();
  p.app_id.reset();
}

}  // namespace

struct AmqpConsumer::Consumer {
  explicit Consumer(const std::string& queue_name) : queue(queue_name), acks(queue_name) {}

  ConsumerId id = 0;
  const std::string queue;
  std::string requested_tag;
  std::shared_ptr<DeliveryHandler> handler;
  std::shared_ptr<std::function<void()>> on_burst_end;  // null if none
  std::shared_ptr<std::function<void()>> on_deliveries_lost;  // null if none
  bool raw_headers = false;

  // Guarded by AmqpConsumer::mu_.
  uint16_t prefetch = 0;
  bool dirty = false;  // in dirty_: has requests for FlushAcks
  AckTracker acks;

  // I/O thread only.
  bool cancelled = false;
  amqp_channel_t channel = 0;
  bool channel_open = false;
  bool subscribed = false;
  bool ever_subscribed = false;  // Consume() succeeded: later failures are worth a warning
  std::string server_tag;
  uint16_t applied_prefetch = 0;
  SteadyClock::time_point retry_at{};
  int retry_attempt = 0;
  bool assembling = false;
  uint64_t body_size = 0;
  Delivery partial;
  bool in_burst = false;  // delivered to since the last on_burst_end
};

struct AmqpConsumer::Command {
  enum class Kind { kDeclare, kConsume, kCancel, kSetPrefetch, kDeleteQueue };
  Kind kind = Kind::kDeclare;
  QueueSpec spec;
  std::string name;
  std::shared_ptr<Consumer> consumer;
  ConsumerId consumer_id = 0;
  uint16_t prefetch = 0;
  SteadyClock::time_point deadline;
  std::atomic<int> state{0};  // 0 queued, 1 taken by the I/O thread, 2 given up by the caller
  std::promise<Status> done;

  bool NeedsConnection() const { return kind != Kind::kCancel && kind != Kind::kSetPrefetch; }
  std::string What() const {
    switch (kind) {
      case Kind::kDeclare: return "declare " + spec.name;
      case Kind::kConsume: return "basic.consume " + (consumer ? consumer->queue : "");
      case Kind::kCancel: return "basic.cancel";
      case Kind::kSetPrefetch: return "basic.qos";
      case Kind::kDeleteQueue: return "queue.delete " + name;
    }
    return "command";
  }
};

AmqpConsumer::AmqpConsumer(AmqpConnectionSettings connection, BackoffPolicy reconnect_backoff,
                           std::shared_ptr<spdlog::logger> log, std::function<void()> service)
    : connection_(std::move(connection)),
      log_(std::move(log)),
      backoff_(reconnect_backoff),
      service_(std::move(service)) {}

AmqpConsumer::~AmqpConsumer() {
  Close();
  if (event_fd_ >= 0) ::close(event_fd_);
}

Status AmqpConsumer::Connect() {
  Status s = Start();
  if (!s.ok()) return s;
  const auto deadline = SteadyClock::now() + connection_.connect_timeout + connection_.rpc_timeout;
  std::unique_lock lock(mu_);
  const uint64_t before = attempts_;
  state_cv_.wait_until(lock, deadline,
                       [&] { return connected_ || attempts_ > before || stopping_; });
  if (connected_) return Ok();
  if (last_error_) return *last_error_;
  return Error(ErrorCode::kUnavailable, "cannot connect to RabbitMQ at " + connection_.Where());
}

Status AmqpConsumer::Declare(const QueueSpec& spec) {
  auto cmd = std::make_shared<Command>();
  cmd->kind = Command::Kind::kDeclare;
  cmd->spec = spec;
  cmd->deadline = SteadyClock::now() + connection_.rpc_timeout;
  return Submit(cmd);
}

Status AmqpConsumer::DeleteQueue(const std::string& name) {
  auto cmd = std::make_shared<Command>();
  cmd->kind = Command::Kind::kDeleteQueue;
  cmd->name = name;
  cmd->deadline = SteadyClock::now() + connection_.rpc_timeout;
  return Submit(cmd);
}

Result<ConsumerId> AmqpConsumer::Consume(const ConsumeOptions& options, DeliveryHandler handler) {
  if (!handler) return Error(ErrorCode::kInvalidArgument, "basic.consume: no handler");
  auto c = std::make_shared<Consumer>(options.queue);
  c->requested_tag = options.consumer_tag;
  c->prefetch = options.prefetch;
  c->handler = std::make_shared<DeliveryHandler>(std::move(handler));
  if (options.on_deliveries_lost) {
    c->on_deliveries_lost = std::make_shared<std::function<void()>>(options.on_deliveries_lost);
  }
  if (options.on_burst_end) {
    c->on_burst_end = std::make_shared<std::function<void()>>(options.on_burst_end);
  }
  c->raw_headers = options.raw_headers;
  {
    std::lock_guard lock(mu_);
    c->id = next_consumer_id_++;
  }
  auto cmd = std::make_shared<Command>();
  cmd->kind = Command::Kind::kConsume;
  cmd->consumer = c;
  cmd->deadline = SteadyClock::now() + connection_.rpc_timeout;
  Status s = Submit(cmd);
  if (!s.ok()) return s.error();
  return c->id;
}

Status AmqpConsumer::Cancel(ConsumerId consumer) {
  auto cmd = std::make_shared<Command>();
  cmd->kind = Command::Kind::kCancel;
  cmd->consumer_id = consumer;
  cmd->deadline = SteadyClock::now() + connection_.rpc_timeout;
  return Submit(cmd);
}

Status AmqpConsumer::SetPrefetch(ConsumerId consumer, uint16_t prefetch) {
  auto cmd = std::make_shared<Command>();
  cmd->kind = Command::Kind::kSetPrefetch;
  cmd->consumer_id = consumer;
  cmd->prefetch = prefetch;
  cmd->deadline = SteadyClock::now() + connection_.rpc_timeout;
  return Submit(cmd);
}

Status AmqpConsumer::Ack(ConsumerId consumer, uint64_t delivery_tag) {
  return SettleRequest(consumer, delivery_tag, /*ack=*/true, /*requeue=*/false);
}

Status AmqpConsumer::Reject(ConsumerId consumer, uint64_t delivery_tag, bool requeue) {
  return SettleRequest(consumer, delivery_tag, /*ack=*/false, requeue);
}

uint64_t AmqpConsumer::generation() const {
  std::lock_guard lock(mu_);
  return generation_;
}

// --- any thread ------------------------------------------------------------------------------

void AmqpConsumer::Wake() {
  if (wake_pending_ || event_fd_ < 0) return;
  wake_pending_ = true;
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(event_fd_, &one, sizeof(one));
}

Status AmqpConsumer::Start() {
  std::lock_guard lock(mu_);
  if (stopping_) return Error(ErrorCode::kUnavailable, "broker is closed", false);
  if (started_) return Ok();
  event_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (event_fd_ < 0) {
    return Error(ErrorCode::kInternal, std::string("eventfd: ") + std::strerror(errno));
  }
  started_ = true;
  io_ = std::thread([this] { IoMain(); });
  return Ok();
}

Status AmqpConsumer::Submit(const std::shared_ptr<Command>& cmd) {
  if (OnIoThread()) {
    // From a handler: run it now (queuing it would wait for ourselves).
    cmd->state = 1;
    if (conn_ == nullptr || conn_failed_) {
      if (!cmd->NeedsConnection()) return Execute(*cmd);
      return Error(ErrorCode::kUnavailable, cmd->What() + ": not connected to RabbitMQ");
    }
    return Execute(*cmd);
  }
  Status started_ok = Start();
  if (!started_ok.ok()) return started_ok;
  std::future<Status> result = cmd->done.get_future();
  {
    std::lock_guard lock(mu_);
    if (stopping_) return Error(ErrorCode::kUnavailable, "broker is closed", false);
    commands_.push_back(cmd);
    Wake();
  }
  if (result.wait_until(cmd->deadline) == std::future_status::ready) return result.get();
  int expected = 0;
  if (cmd->state.compare_exchange_strong(expected, 2)) {
    std::lock_guard lock(mu_);
    if (!connected_) {
      return Error(ErrorCode::kUnavailable,
                   cmd->What() + ": not connected to RabbitMQ at " + connection_.Where() +
                       (last_error_ ? ": " + last_error_->message() : std::string()));
    }
    return Error(ErrorCode::kTimeout, cmd->What() + ": no answer from the broker in time");
  }
  return result.get();  // taken by the I/O thread: its RPC timeout bounds the wait
}

Status AmqpConsumer::SettleRequest(ConsumerId id, uint64_t tag, bool ack, bool requeue) {
  std::lock_guard lock(mu_);
  if (stopping_) {
    return Error(ErrorCode::kUnavailable,
                 "broker is closed; the server requeues unacked deliveries", false);
  }
  auto it = consumers_.find(id);
  if (it == consumers_.end()) {
    return Error(ErrorCode::kNotFound, "unknown consumer " + std::to_string(id), false);
  }
  Consumer& c = *it->second;
  Status requested = ack ? c.acks.Ack(tag) : c.acks.Reject(tag, requeue);
  if (!requested.ok()) return requested;
  if (!c.dirty) {
    c.dirty = true;
    dirty_.push_back(id);
  }
  if (!OnIoThread()) Wake();
  return Ok();
}

// --- I/O thread ------------------------------------------------------------------------------

void AmqpConsumer::IoMain() {
  io_id_ = std::this_thread::get_id();
  int attempt = 0;
  for (;;) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) break;
    }
    if (conn_ == nullptr) {
      Status s = ConnectConsumer();
      {
        std::lock_guard lock(mu_);
        ++attempts_;
        if (s.ok()) {
          connected_ = true;
          ++generation_;
          last_error_.reset();
        } else {
          last_error_ = s.error();
        }
        state_cv_.notify_all();
      }
      if (!s.ok()) {
        const milliseconds delay = backoff_.Delay(attempt++);
        log_->warn("RabbitMQ consumer connection failed: {}; next attempt in {} ms",
                   s.error().message(), delay.count());
        IdleWait(delay);
        continue;
      }
      if (attempt > 0 || generation_ > 1) {
        log_->info("RabbitMQ consumer connection to {} re-established", connection_.Where());
      }
      attempt = 0;
    }
    RunConnected();
    if (conn_ != nullptr && conn_failed_) Teardown();
  }
  Shutdown();
}

Status AmqpConsumer::ConnectConsumer() {
  Result<amqp_connection_state_t> opened = OpenConnection(connection_);
  if (!opened.ok()) return opened.error();
  conn_ = *opened;
  conn_failed_ = false;
  conn_failure_.clear();
  control_open_ = false;
  by_channel_.clear();
  free_channels_.clear();
  next_channel_ = 2;
  Status s = EnsureControl();
  if (!s.ok()) {
    amqp_destroy_connection(conn_);
    conn_ = nullptr;
    return s;
  }
  std::vector<QueueSpec> specs;
  {
    std::lock_guard lock(mu_);
    specs = declared_;
  }
  for (const QueueSpec& spec : specs) {
    Status d = DoDeclare(spec, /*record=*/false);
    if (d.ok()) continue;
    if (conn_failed_) {
      amqp_destroy_connection(conn_);
      conn_ = nullptr;
      return d;
    }
    log_->error("re-declaring queue {} after reconnecting failed: {}", spec.name,
                d.error().message());
  }
  for (auto& [id, c] : consumers_) {
    c->retry_at = SteadyClock::time_point{};
    c->retry_attempt = 0;
  }
  next_retry_due_ = SteadyClock::time_point{};
  return Ok();
}

void AmqpConsumer::Fail(const std::string& why) {
  if (conn_failed_) return;
  conn_failed_ = true;
  conn_failure_ = why;
}

Status AmqpConsumer::Check(amqp_channel_t channel, const std::string& what,
                               const std::shared_ptr<Consumer>& consumer) {
  ReplyOutcome o = CheckReply(conn_, channel, amqp_get_rpc_reply(conn_), what);
  if (o.connection_dead) Fail(o.status.error().message());
  if (o.channel_dead) {
    if (channel == kControlChannel) {
      control_open_ = false;
    } else if (consumer != nullptr) {
      ChannelFailed(consumer, o.status.error().message());
    }
  }
  return o.status;
}

Status AmqpConsumer::EnsureControl() {
  if (conn_failed_) return Error(ErrorCode::kUnavailable, "connection lost: " + conn_failure_);
  if (control_open_) return Ok();
  amqp_channel_open(conn_, kControlChannel);
  Status s = Check(kControlChannel, "channel.open");
  if (s.ok()) control_open_ = true;
  return s;
}

amqp_channel_t AmqpConsumer::AllocateChannel() {
  int max = amqp_get_channel_max(conn_);
  if (max <= 0) max = 65535;
  // Fresh numbers first: frames still queued for a closed channel must not reach a new owner.
  if (next_channel_ <= max) return static_cast<amqp_channel_t>(next_channel_++);
  if (!free_channels_.empty()) {
    const amqp_channel_t ch = free_channels_.front();
    free_channels_.pop_front();
    return ch;
  }
  return 0;
}

void AmqpConsumer::ReleaseChannel(amqp_channel_t ch) {
  if (ch != 0) free_channels_.push_back(ch);
}

std::shared_ptr<AmqpConsumer::Consumer> AmqpConsumer::FindConsumer(ConsumerId id) {
  std::lock_guard lock(mu_);
  auto it = consumers_.find(id);
  return it == consumers_.end() ? nullptr : it->second;
}

void AmqpConsumer::DrainEventFd() {
  // One read takes the whole counter (not EFD_SEMAPHORE); a second would only see EAGAIN.
  uint64_t value;
  [[maybe_unused]] ssize_t n = ::read(event_fd_, &value, sizeof(value));
  std::lock_guard lock(mu_);
  wake_pending_ = false;
}

void AmqpConsumer::ProcessCommands(bool connected_now) {
  std::deque<std::shared_ptr<Command>> batch;
  {
    std::lock_guard lock(mu_);
    batch.swap(commands_);
  }
  std::deque<std::shared_ptr<Command>> keep;
  while (!batch.empty()) {
    std::shared_ptr<Command> cmd = std::move(batch.front());
    batch.pop_front();
    if (cmd->state.load() == 2) continue;  // the caller gave up
    if ((!connected_now || conn_failed_) && cmd->NeedsConnection()) {
      keep.push_back(std::move(cmd));
      continue;
    }
    int expected = 0;
    if (!cmd->state.compare_exchange_strong(expected, 1)) continue;
    cmd->done.set_value(Execute(*cmd));
  }
  if (!keep.empty()) {
    std::lock_guard lock(mu_);
    for (auto it = keep.rbegin(); it != keep.rend(); ++it) commands_.push_front(std::move(*it));
  }
}

Status AmqpConsumer::Execute(Command& cmd) {
  switch (cmd.kind) {
    case Command::Kind::kDeclare: return DoDeclare(cmd.spec, /*record=*/true);
    case Command::Kind::kDeleteQueue: return DoDeleteQueue(cmd.name);
    case Command::Kind::kConsume: return DoConsume(cmd.consumer);
    case Command::Kind::kCancel: return DoCancel(cmd.consumer_id);
    case Command::Kind::kSetPrefetch: return DoSetPrefetch(cmd.consumer_id, cmd.prefetch);
  }
  return Error(ErrorCode::kInternal, "unknown command");
}

Status AmqpConsumer::DoDeclare(const QueueSpec& spec, bool record) {
  if (spec.name.empty()) {
    return Error(ErrorCode::kInvalidArgument, "queue.declare: server-named queues are not supported");
  }
  const Headers no_arguments = Headers::object();
  const Headers& arguments = spec.arguments.is_null() ? no_arguments : spec.arguments;
  amqp_pool_t pool;
  init_amqp_pool(&pool, 1024);
  amqp_table_t args;
  Status converted = ToAmqpTable(arguments, &pool, &args);
  if (!converted.ok()) {
    empty_amqp_pool(&pool);
    return Error(ErrorCode::kInvalidArgument,
                 "queue.declare " + spec.name + ": " + converted.error().message());
  }
  const std::string& exchange = spec.exchange.empty() ? spec.name : spec.exchange;
  const std::string& routing_key = spec.routing_key.empty() ? spec.name : spec.routing_key;
  Status s = EnsureControl();
  if (s.ok() && spec.bind) {
    amqp_exchange_declare(conn_, kControlChannel, Bytes(exchange), amqp_cstring_bytes("direct"),
                          /*passive=*/0, /*durable=*/1, /*auto_delete=*/0, /*internal=*/0,
                          amqp_empty_table);
    s = Check(kControlChannel, "exchange.declare " + exchange);
  }
  if (s.ok()) s = EnsureControl();
  if (s.ok()) {
    amqp_queue_declare(conn_, kControlChannel, Bytes(spec.name), /*passive=*/0, spec.durable,
                       spec.exclusive, spec.auto_delete, args);
    s = Check(kControlChannel, "queue.declare " + spec.name);
  }
  empty_amqp_pool(&pool);
  if (s.ok() && spec.bind) {
    amqp_queue_bind(conn_, kControlChannel, Bytes(spec.name), Bytes(exchange), Bytes(routing_key),
                    amqp_empty_table);
    s = Check(kControlChannel, "queue.bind " + spec.name);
  }
  if (!s.ok() || !record) return s;
  std::lock_guard lock(mu_);
  auto it = std::find_if(declared_.begin(), declared_.end(),
                         [&](const QueueSpec& q) { return q.name == spec.name; });
  if (it != declared_.end()) {
    *it = spec;
  } else {
    declared_.push_back(spec);
  }
  return s;
}

Status AmqpConsumer::DoDeleteQueue(const std::string& name) {
  Status s = EnsureControl();
  if (!s.ok()) return s;
  amqp_queue_delete(conn_, kControlChannel, Bytes(name), /*if_unused=*/0, /*if_empty=*/0);
  s = Check(kControlChannel, "queue.delete " + name);
  if (s.ok()) {
    std::lock_guard lock(mu_);
    declared_.erase(std::remove_if(declared_.begin(), declared_.end(),
                                  [&](const QueueSpec& q) { return q.name == name; }),
                   declared_.end());
  }
  return s;
}

Status AmqpConsumer::Subscribe(const std::shared_ptr<Consumer>& c) {
  uint16_t prefetch;
  {
    std::lock_guard lock(mu_);
    prefetch = c->prefetch;
  }
  amqp_basic_qos(conn_, c->channel, 0, prefetch, /*global=*/1);
  Status s = Check(c->channel, "basic.qos", c);
  if (!s.ok()) return s;
  amqp_basic_consume_ok_t* ok = amqp_basic_consume(
      conn_, c->channel, Bytes(c->queue),
      c->requested_tag.empty() ? amqp_empty_bytes : Bytes(c->requested_tag), /*no_local=*/0,
      /*no_ack=*/0, /*exclusive=*/0, amqp_empty_table);
  s = Check(c->channel, "basic.consume " + c->queue, c);
  if (!s.ok()) return s;
  c->server_tag = ok != nullptr ? Str(ok->consumer_tag) : c->requested_tag;
  c->subscribed = true;
  c->ever_subscribed = true;
  c->applied_prefetch = prefetch;
  return Ok();
}

Status AmqpConsumer::OpenConsumer(const std::shared_ptr<Consumer>& c) {
  if (conn_failed_) return Error(ErrorCode::kUnavailable, "connection lost: " + conn_failure_);
  if (!c->channel_open) {
    if (c->channel == 0) c->channel = AllocateChannel();
    if (c->channel == 0) return Error(ErrorCode::kUnavailable, "no free AMQP channel");
    amqp_channel_open(conn_, c->channel);
    ReplyOutcome o = CheckReply(conn_, c->channel, amqp_get_rpc_reply(conn_), "channel.open");
    if (o.connection_dead) Fail(o.status.error().message());
    if (!o.status.ok()) return o.status;
    c->channel_open = true;
    by_channel_[c->channel] = c;
  }
  return Subscribe(c);
}

Status AmqpConsumer::DoConsume(const std::shared_ptr<Consumer>& c) {
  {
    std::lock_guard lock(mu_);
    consumers_[c->id] = c;
  }
  Status s = OpenConsumer(c);
  if (s.ok()) return s;
  // Not consuming: forget it (its channel, if it opened, is closed or closing).
  if (c->channel_open && !conn_failed_) {
    amqp_channel_close(conn_, c->channel, AMQP_REPLY_SUCCESS);
    (void)Check(c->channel, "channel.close");
  }
  by_channel_.erase(c->channel);
  ReleaseChannel(c->channel);
  std::lock_guard lock(mu_);
  consumers_.erase(c->id);
  return s;
}

void AmqpConsumer::ChannelFailed(const std::shared_ptr<Consumer>& c,
                                     const std::string& why) {
  if (c->ever_subscribed) log_->warn("consumer of queue {} lost its channel: {}", c->queue, why);
  by_channel_.erase(c->channel);
  ReleaseChannel(c->channel);
  c->channel = 0;
  c->channel_open = false;
  c->subscribed = false;
  c->assembling = false;
  c->retry_at = SteadyClock::now() + backoff_.Delay(c->retry_attempt++);
  next_retry_due_ = std::min(next_retry_due_, c->retry_at);
  {
    std::lock_guard lock(mu_);
    c->acks.ChannelLost();  // its unacked deliveries went back to the queue
    if (c->cancelled) consumers_.erase(c->id);
  }
  NotifyLost(c);
}

void AmqpConsumer::NotifyLost(const std::shared_ptr<Consumer>& c) {
  if (c->on_deliveries_lost == nullptr || !c->ever_subscribed) return;
  try {
    (*c->on_deliveries_lost)();
  } catch (const std::exception& e) {
    log_->error("on_deliveries_lost of queue {} threw: {}", c->queue, e.what());
  }
}

void AmqpConsumer::RemoveConsumer(const std::shared_ptr<Consumer>& c) {
  if (c->channel_open && conn_ != nullptr && !conn_failed_) {
    amqp_channel_close(conn_, c->channel, AMQP_REPLY_SUCCESS);
    ReplyOutcome o = CheckReply(conn_, c->channel, amqp_get_rpc_reply(conn_), "channel.close");
    if (o.connection_dead) Fail(o.status.error().message());
  }
  by_channel_.erase(c->channel);
  ReleaseChannel(c->channel);
  c->channel = 0;
  c->channel_open = false;
  std::lock_guard lock(mu_);
  consumers_.erase(c->id);
}

Status AmqpConsumer::DoCancel(ConsumerId id) {
  std::shared_ptr<Consumer> c = FindConsumer(id);
  if (c == nullptr || c->cancelled) {
    return Error(ErrorCode::kNotFound, "unknown consumer " + std::to_string(id), false);
  }
  c->cancelled = true;
  if (c->subscribed && conn_ != nullptr && !conn_failed_) {
    amqp_basic_cancel(conn_, c->channel, Bytes(c->server_tag));
    Status s = Check(c->channel, "basic.cancel", c);
    if (!s.ok() && conn_failed_) return Ok();  // gone with the connection anyway
  }
  c->subscribed = false;
  bool idle;
  {
    std::lock_guard lock(mu_);
    idle = c->acks.empty();
  }
  // Its unacked deliveries stay valid: the channel closes once they are settled.
  if (idle) RemoveConsumer(c);
  return Ok();
}

Status AmqpConsumer::DoSetPrefetch(ConsumerId id, uint16_t prefetch) {
  std::shared_ptr<Consumer> c = FindConsumer(id);
  if (c == nullptr || c->cancelled) {
    return Error(ErrorCode::kNotFound, "unknown consumer " + std::to_string(id), false);
  }
  {
    std::lock_guard lock(mu_);
    c->prefetch = prefetch;
  }
  if (!c->subscribed || conn_ == nullptr || conn_failed_ || c->applied_prefetch == prefetch) {
    return Ok();  // applied when it (re)subscribes
  }
  // Channel-wide QoS applies at once, to what is unacked already too.
  amqp_basic_qos(conn_, c->channel, 0, prefetch, /*global=*/1);
  Status s = Check(c->channel, "basic.qos", c);
  if (s.ok()) c->applied_prefetch = prefetch;
  return s;
}

void AmqpConsumer::ReopenConsumers() {
  const auto now = SteadyClock::now();
  if (now < next_retry_due_) return;
  std::vector<std::shared_ptr<Consumer>> due;
  SteadyClock::time_point next = SteadyClock::time_point::max();
  for (auto& [id, c] : consumers_) {
    if (c->cancelled || c->subscribed) continue;
    if (c->retry_at <= now) {
      due.push_back(c);
    } else {
      next = std::min(next, c->retry_at);
    }
  }
  next_retry_due_ = next;
  for (const auto& c : due) {
    if (conn_failed_) return;
    if (c->retry_attempt > 0) {
      // It failed on its own (queue deleted, channel error): declare its queue again if we did.
      std::optional<QueueSpec> spec;
      {
        std::lock_guard lock(mu_);
        for (const QueueSpec& q : declared_) {
          if (q.name == c->queue) spec = q;
        }
      }
      if (spec) {
        Status d = DoDeclare(*spec, /*record=*/false);
        if (!d.ok()) log_->warn("re-declaring queue {} failed: {}", c->queue, d.error().message());
        if (conn_failed_) return;
      }
    }
    Status s = OpenConsumer(c);
    if (s.ok()) {
      if (c->retry_attempt > 0) log_->info("consumer of queue {} resumed", c->queue);
      c->retry_attempt = 0;
      continue;
    }
    if (conn_failed_) return;
    if (c->retry_at <= now) {  // ChannelFailed did not schedule it
      c->retry_at = SteadyClock::now() + backoff_.Delay(c->retry_attempt++);
    }
    next_retry_due_ = std::min(next_retry_due_, c->retry_at);
    log_->warn("cannot resume the consumer of queue {}: {}; retrying in {} ms", c->queue,
               s.error().message(), std::max<long long>(MillisUntil(c->retry_at), 0));
  }
}

void AmqpConsumer::FlushAcks() {
  {
    std::lock_guard lock(mu_);
    if (dirty_.empty()) return;
    for (ConsumerId id : dirty_) {
      auto it = consumers_.find(id);
      if (it == consumers_.end()) continue;
      Consumer& c = *it->second;
      c.dirty = false;
      // No channel: ChannelFailed or Teardown has dropped its requests with its deliveries.
      if (!c.channel_open) continue;
      c.acks.TakeFrames(&frames_);
      if (frames_.size() > (frame_runs_.empty() ? 0 : frame_runs_.back().end)) {
        frame_runs_.push_back(FrameRun{c.channel, frames_.size()});
      }
      if (c.cancelled && c.acks.empty()) finished_.push_back(it->second);
    }
    dirty_.clear();
  }
  // Sent outside the lock: Ack/Reject from other threads do not wait for the socket.
  size_t i = 0;
  for (const FrameRun& run : frame_runs_) {
    for (; i < run.end && !conn_failed_; ++i) {
      const AckTracker::Frame& f = frames_[i];
      const int rc =
          f.kind == AckTracker::Frame::kReject
              ? amqp_basic_reject(conn_, run.channel, f.tag, f.requeue ? 1 : 0)
              : amqp_basic_ack(conn_, run.channel, f.tag, f.kind == AckTracker::Frame::kAckMultiple);
      if (rc != AMQP_STATUS_OK) Fail(std::string("sending basic.ack: ") + amqp_error_string2(rc));
    }
  }
  frames_.clear();
  frame_runs_.clear();
  for (const auto& c : finished_) RemoveConsumer(c);
  finished_.clear();
}

void AmqpConsumer::Dispatch(const std::shared_ptr<Consumer>& c) {
  c->assembling = false;
  // Handed over in place: the handler may move from it or swap a spent Delivery in, which the
  // next message then reuses (ResetDelivery).
  Delivery& delivery = c->partial;
  const uint64_t amqp_tag = delivery.delivery_tag;
  if (c->cancelled) {
    // Sent before the server saw our basic.cancel: give it back.
    if (amqp_basic_reject(conn_, c->channel, amqp_tag, 1) != AMQP_STATUS_OK) {
      Fail("sending basic.reject failed");
    }
    return;
  }
  {
    std::lock_guard lock(mu_);
    delivery.delivery_tag = c->acks.Record(amqp_tag);
  }
  if (delivery.delivery_tag == 0) {
    Fail("delivery tag overflow on channel " + std::to_string(c->channel));
    return;
  }
  std::shared_ptr<DeliveryHandler> handler = c->handler;  // survives a Cancel from the handler
  if (c->on_burst_end != nullptr && !c->in_burst) {
    c->in_burst = true;
    bursting_.push_back(c);
  }
  try {
    (*handler)(std::move(delivery));
  } catch (const std::exception& e) {
    log_->error("delivery handler of queue {} threw: {}; the delivery stays unacked", c->queue,
                e.what());
  } catch (...) {
    log_->error("delivery handler of queue {} threw; the delivery stays unacked", c->queue);
  }
}

void AmqpConsumer::EndBursts() {
  // Swapped out first: a callback may cause another delivery only in a later round.
  std::vector<std::shared_ptr<Consumer>> ended;
  ended.swap(bursting_);
  for (const auto& c : ended) {
    c->in_burst = false;
    std::shared_ptr<std::function<void()>> end = c->on_burst_end;
    try {
      (*end)();
    } catch (const std::exception& e) {
      log_->error("burst-end callback of queue {} threw: {}", c->queue, e.what());
    } catch (...) {
      log_->error("burst-end callback of queue {} threw", c->queue);
    }
  }
  ended.clear();
  if (bursting_.empty()) bursting_.swap(ended);  // keep the capacity
}

void AmqpConsumer::HandleFrame(const amqp_frame_t& frame) {
  if (frame.frame_type == AMQP_FRAME_METHOD) {
    HandleMethod(frame.channel, frame.payload.method);
  } else {
    HandleContent(frame);
  }
}

std::shared_ptr<AmqpConsumer::Consumer> AmqpConsumer::OnChannel(amqp_channel_t channel) const {
  auto it = by_channel_.find(channel);
  return it == by_channel_.end() ? nullptr : it->second;
}

void AmqpConsumer::HandleMethod(amqp_channel_t channel, const amqp_method_t& method) {
  switch (method.id) {
    case AMQP_BASIC_DELIVER_METHOD: {
      std::shared_ptr<Consumer> c = OnChannel(channel);
      if (c == nullptr) return;  // for a channel we closed; the server requeues it
      const auto* m = static_cast<const amqp_basic_deliver_t*>(method.decoded);
      Delivery& d = c->partial;
      ResetDelivery(d);
      d.delivery_tag = m->delivery_tag;
      d.redelivered = m->redelivered != 0;
      Assign(d.exchange, m->exchange);
      Assign(d.routing_key, m->routing_key);
      d.queue = c->queue;
      c->assembling = true;
      c->body_size = 0;
      return;
    }
    case AMQP_BASIC_CANCEL_METHOD: {
      std::shared_ptr<Consumer> c = OnChannel(channel);
      const auto* m = static_cast<const amqp_basic_cancel_t*>(method.decoded);
      if (!m->nowait) {
        amqp_basic_cancel_ok_t ok{m->consumer_tag};
        amqp_send_method(conn_, channel, AMQP_BASIC_CANCEL_OK_METHOD, &ok);
      }
      if (c == nullptr || c->cancelled) return;
      c->subscribed = false;
      c->retry_at = SteadyClock::now() + backoff_.Delay(c->retry_attempt++);
      next_retry_due_ = std::min(next_retry_due_, c->retry_at);
      log_->warn("RabbitMQ cancelled the consumer of queue {} (queue deleted?); re-subscribing",
                 c->queue);
      return;
    }
    case AMQP_CHANNEL_CLOSE_METHOD: {
      ReplyOutcome o = FromCloseMethod(conn_, channel, method, "channel closed by the server");
      if (o.connection_dead) Fail(o.status.error().message());
      if (channel == kControlChannel) {
        control_open_ = false;
        log_->warn("{}", o.status.error().message());
      } else if (std::shared_ptr<Consumer> c = OnChannel(channel)) {
        ChannelFailed(c, o.status.error().message());
      }
      return;
    }
    case AMQP_CONNECTION_CLOSE_METHOD: {
      ReplyOutcome o = FromCloseMethod(conn_, 0, method, "RabbitMQ");
      Fail(o.status.error().message());
      return;
    }
    case AMQP_CONNECTION_BLOCKED_METHOD:
      log_->warn("RabbitMQ blocked the consumer connection (resource alarm)");
      return;
    case AMQP_CONNECTION_UNBLOCKED_METHOD:
      log_->info("RabbitMQ unblocked the consumer connection");
      return;
    default:
      log_->debug("ignoring {} on channel {}", amqp_method_name(method.id), channel);
      return;
  }
}

// A content header or body frame: the rest of a basic.deliver.
void AmqpConsumer::HandleContent(const amqp_frame_t& frame) {
  std::shared_ptr<Consumer> c = OnChannel(frame.channel);
  if (c == nullptr || !c->assembling) return;
  if (frame.frame_type == AMQP_FRAME_HEADER) {
    const auto* props = static_cast<const amqp_basic_properties_t*>(frame.payload.properties.decoded);
    ReadProperties(*props, &c->partial.properties, c->raw_headers, &c->partial.raw_headers, *log_);
    c->body_size = frame.payload.properties.body_size;
    if (c->body_size > kMaxBodySize) {
      Fail("message body of " + std::to_string(c->body_size) + " bytes is too large");
      return;
    }
    c->partial.body.reserve(static_cast<size_t>(c->body_size));
    if (c->body_size == 0) Dispatch(c);
  } else if (frame.frame_type == AMQP_FRAME_BODY) {
    const amqp_bytes_t& part = frame.payload.body_fragment;
    c->partial.body.append(static_cast<const char*>(part.bytes), part.len);
    if (c->partial.body.size() > c->body_size) {
      Fail("message body longer than announced");
    } else if (c->partial.body.size() == c->body_size) {
      Dispatch(c);
    }
  }
}

void AmqpConsumer::RunConnected() {
  const int heartbeat_s = connection_.heartbeat_s;
  const int poll_ms = heartbeat_s > 0 ? std::min(1000, heartbeat_s * 1000 / 2) : 1000;
  timeval zero{0, 0};
  for (;;) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
    }
    if (conn_failed_) return;
    ProcessCommands(true);
    if (conn_failed_) return;
    ReopenConsumers();
    if (conn_failed_) return;
    FlushAcks();
    if (conn_failed_) return;
    const auto now = SteadyClock::now();
    if (now >= next_service_) {
      service_();
      next_service_ = now + milliseconds(poll_ms);
    }

    bool idle = false;
    for (int i = 0; i < kFramesPerRound; ++i) {
      amqp_frame_t frame;
      const int rc = amqp_simple_wait_frame_noblock(conn_, &frame, &zero);
      if (rc == AMQP_STATUS_TIMEOUT) {
        idle = true;
        break;
      }
      if (rc != AMQP_STATUS_OK) {
        Fail(std::string("reading from RabbitMQ: ") + amqp_error_string2(rc));
        break;
      }
      HandleFrame(frame);
      if (conn_failed_) break;
    }
    // Every round ends every burst, before acks are flushed and before any wait.
    if (!bursting_.empty()) EndBursts();
    if (conn_failed_) return;
    if (!amqp_frames_enqueued(conn_) && !amqp_data_in_buffer(conn_)) {
      amqp_maybe_release_buffers(conn_);
    }
    if (!idle) continue;
    FlushAcks();  // acks the handlers made during this round
    if (conn_failed_) return;
    if (amqp_frames_enqueued(conn_) || amqp_data_in_buffer(conn_)) continue;

    int timeout_ms = poll_ms;
    if (next_retry_due_ != SteadyClock::time_point::max()) {
      timeout_ms =
          static_cast<int>(std::clamp<long long>(MillisUntil(next_retry_due_), 0, timeout_ms));
    }
    pollfd fds[2] = {{amqp_get_sockfd(conn_), POLLIN, 0}, {event_fd_, POLLIN, 0}};
    const int n = ::poll(fds, 2, timeout_ms);
    if (n < 0 && errno != EINTR) {
      Fail(std::string("poll: ") + std::strerror(errno));
      return;
    }
    if (n > 0 && (fds[1].revents & POLLIN)) DrainEventFd();
  }
}

void AmqpConsumer::IdleWait(milliseconds delay) {
  const auto until = SteadyClock::now() + delay;
  for (;;) {
    ProcessCommands(false);
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
    }
    service_();
    const long long left = MillisUntil(until);
    if (left <= 0) return;
    pollfd fd{event_fd_, POLLIN, 0};
    const int n = ::poll(&fd, 1, static_cast<int>(std::min<long long>(left, 1000)));
    if (n > 0) DrainEventFd();
  }
}

void AmqpConsumer::Teardown() {
  log_->warn("RabbitMQ consumer connection to {} lost: {}; reconnecting", connection_.Where(),
             conn_failure_);
  amqp_destroy_connection(conn_);
  conn_ = nullptr;
  control_open_ = false;
  by_channel_.clear();
  free_channels_.clear();
  next_channel_ = 2;
  std::vector<std::shared_ptr<Consumer>> lost;
  {
    std::lock_guard lock(mu_);
    connected_ = false;
    last_error_ = Error(ErrorCode::kUnavailable, conn_failure_);
    for (auto it = consumers_.begin(); it != consumers_.end();) {
      lost.push_back(it->second);
      Consumer& c = *it->second;
      c.channel = 0;
      c.channel_open = false;
      c.subscribed = false;
      c.assembling = false;
      c.partial = Delivery{};
      c.acks.ChannelLost();  // the server requeues what was unacked
      c.dirty = false;
      it = c.cancelled ? consumers_.erase(it) : std::next(it);
    }
    dirty_.clear();
    conn_failed_ = false;
  }
  for (const auto& c : lost) NotifyLost(c);
}

void AmqpConsumer::Shutdown() {
  if (conn_ != nullptr) {
    if (!conn_failed_) {
      FlushAcks();  // acks requested before Close() still count
    }
    CloseConnection(conn_, /*graceful=*/!conn_failed_);
    conn_ = nullptr;
  }
  std::deque<std::shared_ptr<Command>> rest;
  {
    std::lock_guard lock(mu_);
    rest.swap(commands_);
    connected_ = false;
    consumers_.clear();
    dirty_.clear();
    state_cv_.notify_all();
  }
  for (auto& cmd : rest) {
    int expected = 0;
    if (cmd->state.compare_exchange_strong(expected, 1)) {
      cmd->done.set_value(Error(ErrorCode::kUnavailable, "broker is closed", false));
    }
  }
}

void AmqpConsumer::Close() {
  std::lock_guard close_lock(close_mu_);
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    Wake();
    state_cv_.notify_all();
  }
  if (io_.joinable()) {
    if (io_.get_id() == std::this_thread::get_id()) {
      io_.detach();  // Close() from a handler: the thread ends after the handler returns
    } else {
      io_.join();
    }
  }
}

}  // namespace celeriac::broker
