#include "core/broker/amqp_publisher.hpp"

#include <poll.h>

#include <algorithm>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

#include "core/broker/amqp_bytes.hpp"
#include "core/broker/amqp_properties.hpp"

namespace celeriac::broker {
namespace {

using std::chrono::milliseconds;

constexpr amqp_channel_t kPublishChannel = 1;
constexpr size_t kDrainEveryPublishes = 256;  // publishes between reads of pending confirms

}  // namespace

AmqpPublisher::AmqpPublisher(AmqpConnectionSettings connection,
                             milliseconds publish_timeout,
                             BackoffPolicy reconnect_backoff, std::shared_ptr<spdlog::logger> log)
    : connection_(std::move(connection)), publish_timeout_(publish_timeout), log_(std::move(log)),
      backoff_(reconnect_backoff) {
  init_amqp_pool(&pool_, 4096);
}

AmqpPublisher::~AmqpPublisher() {
  Close();
  empty_amqp_pool(&pool_);
}

Status AmqpPublisher::Connect(SteadyClock::time_point deadline) {
  std::unique_lock lock(mu_);
  return EnsureConnected(lock, deadline);
}

void AmqpPublisher::Service() {
  std::unique_lock lock(mu_, std::try_to_lock);
  if (!lock.owns_lock() || conn_ == nullptr || reader_) return;
  Drain();
}

void AmqpPublisher::Close() {
  std::lock_guard lock(mu_);
  closed_ = true;
  if (conn_ != nullptr) {
    CloseConnection(conn_, /*graceful=*/true);
    conn_ = nullptr;
  }
  cv_.notify_all();
}

Status AmqpPublisher::EnsureConnected(std::unique_lock<std::mutex>& lock,
                                      SteadyClock::time_point deadline) {
  while (conn_ == nullptr) {
    if (closed_) return Error(ErrorCode::kUnavailable, "broker is closed", false);
    const auto now = SteadyClock::now();
    if (now < next_connect_) {
      if (next_connect_ >= deadline) {
        return Error(ErrorCode::kUnavailable, "cannot publish: " + last_error_);
      }
      cv_.wait_until(lock, next_connect_);
      continue;
    }
    Result<amqp_connection_state_t> opened = OpenConnection(connection_);
    Status status = Ok();
    if (opened.ok()) {
      amqp_connection_state_t conn = *opened;
      amqp_channel_open(conn, kPublishChannel);
      ReplyOutcome o = CheckReply(conn, kPublishChannel, amqp_get_rpc_reply(conn), "channel.open");
      if (o.status.ok()) {
        amqp_confirm_select(conn, kPublishChannel);
        o = CheckReply(conn, kPublishChannel, amqp_get_rpc_reply(conn), "confirm.select");
      }
      if (o.status.ok()) {
        conn_ = conn;
        ++gen_;
        base_seq_ = next_seq_ = 1;
        status_.clear();
        nacked_.clear();
        if (connect_failures_ > 0) log_->info("RabbitMQ publisher connection re-established");
        connect_failures_ = 0;
        return Ok();
      }
      amqp_destroy_connection(conn);
      status = o.status;
    } else {
      status = opened.error();
    }
    last_error_ = status.error().message();
    const milliseconds delay = backoff_.Delay(connect_failures_++);
    next_connect_ = SteadyClock::now() + delay;
    log_->warn("RabbitMQ publisher connection failed: {}; next attempt in {} ms", last_error_,
               delay.count());
    if (!status.error().retryable()) return status;
  }
  return Ok();
}

Status AmqpPublisher::SendOne(const OutgoingMessage& message, uint64_t* seq) {
  amqp_basic_properties_t props;
  Status s = WriteProperties(message.properties, &pool_, &props);
  if (!s.ok()) {
    recycle_amqp_pool(&pool_);
    return s;
  }
  // mandatory: a message no queue takes comes back (basic.return) instead of vanishing.
  const int rc = amqp_basic_publish(conn_, kPublishChannel, Bytes(message.exchange),
                                    Bytes(message.routing_key), /*mandatory=*/1, 0, &props,
                                    Bytes(message.body));
  recycle_amqp_pool(&pool_);
  if (rc != AMQP_STATUS_OK) {
    MarkBroken(Error(ErrorCode::kUnavailable, std::string("basic.publish: ") + amqp_error_string2(rc)),
               false);
    return Error(ErrorCode::kUnavailable, "connection lost");
  }
  *seq = next_seq_++;
  status_.push_back(kPending);
  sent_.push_back(&message);
  return Ok();
}

void AmqpPublisher::MarkBroken(Error error, bool refused) {
  if (conn_ == nullptr) return;
  log_->warn("RabbitMQ publisher connection dropped: {}", error.message());
  failed_gen_ = gen_;
  failure_ = std::move(error);
  failure_refused_ = refused;
  amqp_destroy_connection(conn_);
  conn_ = nullptr;
  status_.clear();
  sent_.clear();
  nacked_.clear();
  returned_.clear();
  returning_ = Returning{};
  cv_.notify_all();
}

uint8_t AmqpPublisher::StatusOf(uint64_t seq) {
  if (seq >= base_seq_) return status_[seq - base_seq_];
  if (returned_.count(seq) != 0) return kReturned;
  auto it = nacked_.find(seq);
  if (it == nacked_.end()) return kAcked;
  nacked_.erase(it);
  return kNacked;
}

void AmqpPublisher::Resolve(uint64_t tag, bool multiple, uint8_t state) {
  if (tag >= next_seq_) {
    log_->warn("publisher confirm for unknown delivery tag {}", tag);
    return;
  }
  if (multiple) {
    for (uint64_t s = base_seq_; s <= tag; ++s) {
      uint8_t& st = status_[s - base_seq_];
      if (st == kPending) st = state;
    }
  } else if (tag >= base_seq_) {
    uint8_t& st = status_[tag - base_seq_];
    if (st == kPending) st = state;
  }
  while (!status_.empty() && status_.front() != kPending) {
    if (status_.front() == kNacked) nacked_.insert(base_seq_);
    status_.pop_front();
    sent_.pop_front();
    ++base_seq_;
  }
}

void AmqpPublisher::FinishReturn() {
  Returning r = std::move(returning_);
  returning_ = Returning{};
  // RabbitMQ sends basic.return before the basic.ack of the same message, but the return names
  // no delivery tag: it is the oldest unconfirmed message with the same destination and body.
  auto matches = [&](size_t i, bool by_body) {
    const OutgoingMessage* m = sent_[i];
    return status_[i] == kPending && m != nullptr && m->exchange == r.exchange &&
           m->routing_key == r.routing_key && (!by_body || m->body == r.body);
  };
  for (bool by_body : {true, false}) {
    for (size_t i = 0; i < status_.size(); ++i) {
      if (!matches(i, by_body)) continue;
      status_[i] = kReturned;
      returned_[base_seq_ + i] = std::move(r.why);
      cv_.notify_all();
      return;
    }
  }
  log_->debug("RabbitMQ returned a message nobody waits for any more ({})", r.why);
}

void AmqpPublisher::Forget(uint64_t gen, const uint64_t* seqs, size_t n) {
  // A lost connection (MarkBroken) or a new one cleared everything of that connection already.
  if (gen != gen_ || conn_ == nullptr) return;
  for (size_t i = 0; i < n; ++i) {
    if (seqs[i] == 0) continue;
    if (seqs[i] >= base_seq_ && seqs[i] - base_seq_ < sent_.size())
      sent_[seqs[i] - base_seq_] = nullptr;
    returned_.erase(seqs[i]);
  }
}

void AmqpPublisher::HandleFrame(const amqp_frame_t& frame) {
  if (frame.frame_type == AMQP_FRAME_HEADER && returning_.active && !returning_.have_header) {
    returning_.have_header = true;
    returning_.body_size = frame.payload.properties.body_size;
    if (returning_.body_size == 0) FinishReturn();
    return;
  }
  if (frame.frame_type == AMQP_FRAME_BODY && returning_.active && returning_.have_header) {
    returning_.body.append(static_cast<const char*>(frame.payload.body_fragment.bytes),
                           frame.payload.body_fragment.len);
    if (returning_.body.size() >= returning_.body_size) FinishReturn();
    return;
  }
  if (frame.frame_type != AMQP_FRAME_METHOD) return;
  const amqp_method_t& method = frame.payload.method;
  switch (method.id) {
    case AMQP_BASIC_RETURN_METHOD: {
      const auto* m = static_cast<const amqp_basic_return_t*>(method.decoded);
      returning_ = Returning{};
      returning_.active = true;
      returning_.exchange = Str(m->exchange);
      returning_.routing_key = Str(m->routing_key);
      returning_.why = "exchange '" + returning_.exchange + "' routing key '" +
                       returning_.routing_key + "': " + ReplyText(m->reply_code, m->reply_text);
      return;
    }
    case AMQP_BASIC_ACK_METHOD: {
      const auto* m = static_cast<const amqp_basic_ack_t*>(method.decoded);
      Resolve(m->delivery_tag, m->multiple != 0, kAcked);
      return;
    }
    case AMQP_BASIC_NACK_METHOD: {
      const auto* m = static_cast<const amqp_basic_nack_t*>(method.decoded);
      Resolve(m->delivery_tag, m->multiple != 0, kNacked);
      return;
    }
    case AMQP_CONNECTION_BLOCKED_METHOD:
      log_->warn("RabbitMQ blocked the publisher connection (resource alarm): publishes wait");
      return;
    case AMQP_CONNECTION_UNBLOCKED_METHOD:
      log_->info("RabbitMQ unblocked the publisher connection");
      return;
    case AMQP_CONNECTION_CLOSE_METHOD:
    case AMQP_CHANNEL_CLOSE_METHOD: {
      ReplyOutcome o = FromCloseMethod(conn_, frame.channel, method, "basic.publish");
      // A channel error means the server refused something we sent (e.g. 404 no exchange);
      // the connection is dropped with it, and the waiters re-publish once (see Publish).
      MarkBroken(o.status.error(), method.id == AMQP_CHANNEL_CLOSE_METHOD);
      return;
    }
    default:
      return;
  }
}

size_t AmqpPublisher::Drain() {
  size_t frames = 0;
  timeval zero{0, 0};
  while (conn_ != nullptr) {
    amqp_frame_t frame;
    const int rc = amqp_simple_wait_frame_noblock(conn_, &frame, &zero);
    if (rc == AMQP_STATUS_TIMEOUT) break;
    if (rc != AMQP_STATUS_OK) {
      MarkBroken(Error(ErrorCode::kUnavailable,
                       std::string("reading from RabbitMQ: ") + amqp_error_string2(rc)),
                 false);
      break;
    }
    ++frames;
    HandleFrame(frame);
  }
  if (conn_ != nullptr && !amqp_frames_enqueued(conn_)) amqp_maybe_release_buffers(conn_);
  if (frames > 0) cv_.notify_all();
  return frames;
}

void AmqpPublisher::ReadSome(std::unique_lock<std::mutex>& lock,
                             SteadyClock::time_point deadline) {
  const uint64_t gen = gen_;
  if (Drain() > 0 || conn_ == nullptr) return;
  const int fd = amqp_get_sockfd(conn_);
  const long long wait = std::clamp<long long>(MillisUntil(deadline), 0, 200);
  lock.unlock();
  pollfd p{fd, POLLIN, 0};
  poll(&p, 1, static_cast<int>(wait));
  lock.lock();
  if (gen_ != gen || conn_ == nullptr) return;
  Drain();
}

AmqpPublisher::Wait AmqpPublisher::WaitConfirms(std::unique_lock<std::mutex>& lock, uint64_t gen,
                                                const uint64_t* seqs, uint8_t* states, size_t n,
                                                SteadyClock::time_point deadline) {
  size_t first_open = 0;
  for (;;) {
    if (gen_ != gen || conn_ == nullptr) return Wait::kLost;
    while (first_open < n) {
      if (states[first_open] == kPending) {
        const uint8_t st = StatusOf(seqs[first_open]);
        if (st == kPending) break;
        states[first_open] = st;
      }
      ++first_open;
    }
    if (first_open == n) return Wait::kDone;
    if (SteadyClock::now() >= deadline) return Wait::kTimeout;
    if (!reader_) {
      reader_ = true;
      ReadSome(lock, deadline);
      reader_ = false;
      cv_.notify_all();
    } else {
      cv_.wait_until(lock, std::min(deadline, SteadyClock::now() + milliseconds(50)));
    }
  }
}

// Settled messages: reads why the returned ones came back, and lets go of them all.
void AmqpPublisher::CollectSettled(uint64_t gen, uint64_t* seqs, const uint8_t* states, size_t n,
                                   std::set<std::string>* returned_why) {
  for (size_t i = 0; i < n; ++i) {
    if (states[i] == kPending || seqs[i] == 0) continue;
    if (states[i] == kReturned && gen_ == gen && conn_ != nullptr) {
      if (auto it = returned_.find(seqs[i]); it != returned_.end())
        returned_why->insert(it->second);
    }
    Forget(gen, &seqs[i], 1);
    seqs[i] = 0;
  }
}

// The outcome of a call whose every message is settled.
Status AmqpPublisher::Verdict(const uint8_t* states, size_t n,
                              const std::set<std::string>& returned_why) {
  const size_t nacked = static_cast<size_t>(std::count(states, states + n, kNacked));
  const size_t returned = static_cast<size_t>(std::count(states, states + n, kReturned));
  if (returned > 0) {
    // Publishing it again cannot help: no queue is bound for it. The others were delivered.
    std::string reasons;
    for (const auto& reason : returned_why) reasons += (reasons.empty() ? "" : "; ") + reason;
    return Error(ErrorCode::kNotFound,
                 "RabbitMQ returned " + std::to_string(returned) + " of " + std::to_string(n) +
                     " message(s) as unroutable (" +
                     (reasons.empty() ? "no queue took them" : reasons) + ")" +
                     (nacked > 0 ? " and refused " + std::to_string(nacked) : ""),
                 /*retryable=*/false);
  }
  if (nacked == 0) return Ok();
  return Error(ErrorCode::kUnavailable, "RabbitMQ refused (basic.nack) " +
                                            std::to_string(nacked) + " of " + std::to_string(n) +
                                            " messages");
}

Status AmqpPublisher::Publish(const OutgoingMessage* messages, size_t n) {
  if (n == 0) return Ok();
  const SteadyClock::time_point deadline = SteadyClock::now() + publish_timeout_;
  // One message needs no heap: the common Publish() case.
  uint64_t one_seq = 0;
  uint8_t one_state = kPending;
  std::vector<uint64_t> many_seqs;
  std::vector<uint8_t> many_states;
  uint64_t* seqs = &one_seq;
  uint8_t* states = &one_state;
  if (n > 1) {
    many_seqs.assign(n, 0);
    many_states.assign(n, kPending);
    seqs = many_seqs.data();
    states = many_states.data();
  }

  std::unique_lock lock(mu_);
  // seqs[i] is the seq of message i on connection `sent_gen`, 0 once its outcome is read (or
  // before it is sent on that connection). However this call ends, none of its messages stays
  // behind for a basic.return to point at (runs before `lock` is released).
  uint64_t sent_gen = 0;
  struct ForgetOnExit {
    AmqpPublisher* self;
    const uint64_t& gen;
    const uint64_t* seqs;
    size_t n;
    ~ForgetOnExit() { self->Forget(gen, seqs, n); }
  } forget{this, sent_gen, seqs, n};
  std::set<std::string> returned_why;  // of the messages returned, for the error
  for (int round = 0;; ++round) {
    Status connected = EnsureConnected(lock, deadline);
    if (!connected.ok()) return connected;
    const uint64_t gen = gen_;
    sent_gen = gen;
    for (size_t i = 0; i < n; ++i)
      if (states[i] == kPending) seqs[i] = 0;  // any earlier seq was another connection's
    size_t since_drain = 0;
    for (size_t i = 0; i < n && gen_ == gen; ++i) {
      if (states[i] != kPending) continue;
      Status s = SendOne(messages[i], &seqs[i]);
      if (!s.ok()) {
        if (gen_ != gen) break;  // the connection died: re-publish below
        return s;                // the message itself is wrong
      }
      // Keep reading confirms during a long batch so that neither side's buffers fill up.
      if (++since_drain >= kDrainEveryPublishes && !reader_) {
        since_drain = 0;
        Drain();
      }
    }
    const Wait w = gen_ == gen ? WaitConfirms(lock, gen, seqs, states, n, deadline) : Wait::kLost;
    CollectSettled(gen, seqs, states, n, &returned_why);
    if (w == Wait::kDone) return Verdict(states, n, returned_why);
    const size_t open = static_cast<size_t>(std::count(states, states + n, kPending));
    if (w == Wait::kTimeout) {
      return Error(ErrorCode::kTimeout,
                   "no publisher confirm from RabbitMQ within " +
                       std::to_string(publish_timeout_.count()) + " ms for " +
                       std::to_string(open) + " of " + std::to_string(n) + " messages");
    }
    // The server refusing one message (channel error) drops every unconfirmed one with it, and
    // which message it was is unknown: re-publish once; the culprit is refused again.
    const bool refused = failed_gen_ == gen && failure_ && failure_refused_;
    const std::string why = failure_ ? failure_->message() : "connection lost";
    if (round >= 1) {
      if (refused) return *failure_;
      return Error(ErrorCode::kUnavailable, "publish failed after re-publishing once: " + why);
    }
    log_->info("re-publishing {} unconfirmed message(s) after: {}", open, why);
  }
}

}  // namespace celeriac::broker
