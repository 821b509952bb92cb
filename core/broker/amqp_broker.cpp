#include "core/broker/amqp_broker.hpp"

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "core/broker/amqp_table.hpp"
#include "core/log/log.hpp"

#ifndef CELERIAC_VERSION
#define CELERIAC_VERSION "dev"
#endif

namespace celeriac::broker {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Delivery tags handed out: high 16 bits = generation of the channel, low 48 = the AMQP tag.
constexpr int kTagBits = 48;
constexpr uint64_t kTagMask = (uint64_t{1} << kTagBits) - 1;
constexpr amqp_channel_t kControlChannel = 1;
constexpr amqp_channel_t kPublishChannel = 1;
constexpr int kFramesPerRound = 256;          // frames read before acks and commands get a turn
constexpr size_t kDrainEveryPublishes = 256;  // publishes between reads of pending confirms
constexpr uint64_t kMaxBodySize = uint64_t{1} << 30;
constexpr int kFrameMax = 131072;

amqp_bytes_t Bytes(const std::string& s) { return {s.size(), const_cast<char*>(s.data())}; }

std::string Str(amqp_bytes_t b) {
  return b.len == 0 ? std::string() : std::string(static_cast<const char*>(b.bytes), b.len);
}

timeval ToTimeval(milliseconds ms) {
  timeval tv;
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

long long MillisUntil(Clock::time_point t) {
  return std::chrono::duration_cast<milliseconds>(t - Clock::now()).count();
}

uint16_t NextGeneration(uint16_t g) {
  const uint16_t n = static_cast<uint16_t>(g + 1);
  return n == 0 ? 1 : n;
}

// AMQP reply codes (connection.close / channel.close) to our error codes.
ErrorCode CodeForReply(int reply_code) {
  switch (reply_code) {
    case 403: return ErrorCode::kPermissionDenied;  // ACCESS_REFUSED
    case 530: return ErrorCode::kPermissionDenied;  // NOT_ALLOWED (e.g. unknown vhost)
    case 404: return ErrorCode::kNotFound;
    case 405: return ErrorCode::kConflict;          // RESOURCE_LOCKED: exclusive queue in use
    case 406: return ErrorCode::kInvalidArgument;   // PRECONDITION_FAILED
    case 501: case 502: case 503: case 504: case 505: case 540:
      return ErrorCode::kProtocol;                  // we sent something wrong
    default: return ErrorCode::kUnavailable;        // 320 CONNECTION_FORCED, 541, 506, ...
  }
}

// What an RPC reply (or a close frame) means for the connection and the channel.
struct Outcome {
  Status status;
  bool connection_dead = false;
  bool channel_dead = false;
};

std::string ReplyText(int code, amqp_bytes_t text) {
  return std::to_string(code) + " " + Str(text);
}

// Turns a close method into an Outcome, answering it with close-ok as the protocol requires.
Outcome FromCloseMethod(amqp_connection_state_t conn, amqp_channel_t channel,
                        const amqp_method_t& method, const std::string& what) {
  Outcome out;
  if (method.id == AMQP_CONNECTION_CLOSE_METHOD) {
    const auto* m = static_cast<const amqp_connection_close_t*>(method.decoded);
    amqp_connection_close_ok_t ok{};
    amqp_send_method(conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
    out.status = Error(CodeForReply(m->reply_code),
                       what + ": connection closed by the server: " +
                           ReplyText(m->reply_code, m->reply_text));
    out.connection_dead = true;
  } else if (method.id == AMQP_CHANNEL_CLOSE_METHOD) {
    const auto* m = static_cast<const amqp_channel_close_t*>(method.decoded);
    amqp_channel_close_ok_t ok{};
    if (amqp_send_method(conn, channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) != AMQP_STATUS_OK) {
      out.connection_dead = true;
    }
    out.status = Error(CodeForReply(m->reply_code), what + ": " + ReplyText(m->reply_code, m->reply_text));
    out.channel_dead = true;
  } else {
    out.status = Error(ErrorCode::kProtocol, what + ": unexpected method " +
                                                 amqp_method_name(method.id));
    out.connection_dead = true;
  }
  return out;
}

Outcome CheckReply(amqp_connection_state_t conn, amqp_channel_t channel,
                   const amqp_rpc_reply_t& r, const std::string& what) {
  Outcome out;
  switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
      return out;
    case AMQP_RESPONSE_NONE:
      out.status = Error(ErrorCode::kInternal, what + ": no reply (missing RPC)");
      out.connection_dead = true;
      return out;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
      out.status = Error(r.library_error == AMQP_STATUS_TIMEOUT ? ErrorCode::kTimeout
                                                                 : ErrorCode::kUnavailable,
                         what + ": " + amqp_error_string2(r.library_error));
      out.connection_dead = true;  // rabbitmq-c closes the socket on an RPC timeout
      return out;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
      return FromCloseMethod(conn, channel, r.reply, what);
  }
  out.status = Error(ErrorCode::kInternal, what + ": unknown reply type");
  out.connection_dead = true;
  return out;
}

// Opens a TCP connection and logs in. The caller owns the result (amqp_destroy_connection).
Result<amqp_connection_state_t> OpenConnection(const AmqpUrl& url,
                                               const AmqpBrokerOptions& options,
                                               int heartbeat_s, const std::string& name) {
  const std::string where = url.host + ":" + std::to_string(url.port);
  amqp_connection_state_t conn = amqp_new_connection();
  if (conn == nullptr) return Error(ErrorCode::kInternal, "amqp_new_connection failed");
  amqp_socket_t* socket = amqp_tcp_socket_new(conn);
  if (socket == nullptr) {
    amqp_destroy_connection(conn);
    return Error(ErrorCode::kInternal, "amqp_tcp_socket_new failed");
  }
  timeval connect_tv = ToTimeval(options.connect_timeout);
  int rc = amqp_socket_open_noblock(socket, url.host.c_str(), url.port, &connect_tv);
  if (rc != AMQP_STATUS_OK) {
    amqp_destroy_connection(conn);
    return Error(ErrorCode::kUnavailable,
                 "cannot connect to RabbitMQ at " + where + ": " + amqp_error_string2(rc));
  }
  amqp_set_handshake_timeout(conn, &connect_tv);
  timeval rpc_tv = ToTimeval(options.rpc_timeout);
  amqp_set_rpc_timeout(conn, &rpc_tv);

  amqp_table_entry_t caps[4];
  const char* cap_names[4] = {"consumer_cancel_notify", "connection.blocked",
                              "publisher_confirms", "basic.nack"};
  for (int i = 0; i < 4; ++i) {
    caps[i].key = amqp_cstring_bytes(cap_names[i]);
    caps[i].value.kind = AMQP_FIELD_KIND_BOOLEAN;
    caps[i].value.value.boolean = 1;
  }
  amqp_table_entry_t props[4];
  props[0].key = amqp_cstring_bytes("connection_name");
  props[0].value.kind = AMQP_FIELD_KIND_UTF8;
  props[0].value.value.bytes = Bytes(name);
  props[1].key = amqp_cstring_bytes("product");
  props[1].value.kind = AMQP_FIELD_KIND_UTF8;
  props[1].value.value.bytes = amqp_cstring_bytes("celeriac");
  props[2].key = amqp_cstring_bytes("version");
  props[2].value.kind = AMQP_FIELD_KIND_UTF8;
  props[2].value.value.bytes = amqp_cstring_bytes(CELERIAC_VERSION);
  props[3].key = amqp_cstring_bytes("capabilities");
  props[3].value.kind = AMQP_FIELD_KIND_TABLE;
  props[3].value.value.table = amqp_table_t{4, caps};
  amqp_table_t client_properties{4, props};

  amqp_rpc_reply_t r = amqp_login_with_properties(
      conn, url.vhost.c_str(), 0, kFrameMax, heartbeat_s, &client_properties,
      AMQP_SASL_METHOD_PLAIN, url.user.c_str(), url.password.c_str());
  if (r.reply_type != AMQP_RESPONSE_NORMAL) {
    Outcome o = CheckReply(conn, 0, r,
                           "login to RabbitMQ at " + where + " vhost '" + url.vhost +
                               "' as '" + url.user + "'");
    amqp_destroy_connection(conn);
    return o.status.error();
  }
  return conn;
}

// Into `out`, reusing its buffer.
void Assign(std::string& out, amqp_bytes_t b) {
  out.assign(static_cast<const char*>(b.bytes), b.len);
}

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

// The table in wire form into `out` (reusing its buffer); false if it cannot be encoded.
bool EncodeRawTable(const amqp_table_t& table, std::string* out) {
  size_t size = std::max<size_t>(out->capacity(), 1024);
  for (int i = 0; i < 12; ++i, size *= 2) {
    out->resize(size);
    amqp_bytes_t buffer{out->size(), out->data()};
    size_t offset = 0;
    const int rc = amqp_encode_table(buffer, const_cast<amqp_table_t*>(&table), &offset);
    if (rc == AMQP_STATUS_OK) {
      out->resize(offset);
      return true;
    }
    if (rc != AMQP_STATUS_TABLE_TOO_BIG) break;
  }
  out->clear();
  return false;
}

// Properties of a received message. With `raw_headers`, the headers table goes to `raw` in
// wire form instead of being converted here.
void ReadProperties(const amqp_basic_properties_t& p, Properties* out, bool raw_headers,
                    std::string* raw, spdlog::logger& log) {
  const auto flags = p._flags;
  if (flags & AMQP_BASIC_CONTENT_TYPE_FLAG) Assign(out->content_type, p.content_type);
  if (flags & AMQP_BASIC_CONTENT_ENCODING_FLAG) Assign(out->content_encoding, p.content_encoding);
  if ((flags & AMQP_BASIC_HEADERS_FLAG) &&
      !(raw_headers && p.headers.num_entries > 0 && EncodeRawTable(p.headers, raw))) {
    Result<Headers> headers = FromAmqpTable(p.headers);
    if (headers.ok()) {
      out->headers = std::move(headers).value();
    } else {
      log.error("dropping the headers of a delivery: {}", headers.error().message());
    }
  }
  // No delivery_mode means transient.
  out->delivery_mode = (flags & AMQP_BASIC_DELIVERY_MODE_FLAG) ? p.delivery_mode : 1;
  out->priority = (flags & AMQP_BASIC_PRIORITY_FLAG) ? p.priority : 0;
  if (flags & AMQP_BASIC_CORRELATION_ID_FLAG) Assign(out->correlation_id, p.correlation_id);
  if (flags & AMQP_BASIC_REPLY_TO_FLAG) Assign(out->reply_to, p.reply_to);
  if (flags & AMQP_BASIC_EXPIRATION_FLAG) out->expiration = Str(p.expiration);
  if (flags & AMQP_BASIC_MESSAGE_ID_FLAG) out->message_id = Str(p.message_id);
  if (flags & AMQP_BASIC_TIMESTAMP_FLAG) out->timestamp = p.timestamp;
  if (flags & AMQP_BASIC_TYPE_FLAG) out->type = Str(p.type);
  if (flags & AMQP_BASIC_APP_ID_FLAG) out->app_id = Str(p.app_id);
}

// Properties to send; strings and the headers table borrow from `in` and `pool`.
Status WriteProperties(const Properties& in, amqp_pool_t* pool, amqp_basic_properties_t* p) {
  std::memset(p, 0, sizeof(*p));
  // Celery always sends delivery_mode and priority (research/celery-protocol.md 1.2).
  p->_flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_PRIORITY_FLAG;
  p->delivery_mode = in.delivery_mode;
  p->priority = in.priority;
  if (!in.content_type.empty()) {
    p->_flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
    p->content_type = Bytes(in.content_type);
  }
  if (!in.content_encoding.empty()) {
    p->_flags |= AMQP_BASIC_CONTENT_ENCODING_FLAG;
    p->content_encoding = Bytes(in.content_encoding);
  }
  if (!in.headers.is_null() && !in.headers.empty()) {
    Status s = ToAmqpTable(in.headers, pool, &p->headers);
    if (!s.ok()) return s;
    p->_flags |= AMQP_BASIC_HEADERS_FLAG;
  }
  if (!in.correlation_id.empty()) {
    p->_flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
    p->correlation_id = Bytes(in.correlation_id);
  }
  if (!in.reply_to.empty()) {
    p->_flags |= AMQP_BASIC_REPLY_TO_FLAG;
    p->reply_to = Bytes(in.reply_to);
  }
  if (in.expiration) {
    p->_flags |= AMQP_BASIC_EXPIRATION_FLAG;
    p->expiration = Bytes(*in.expiration);
  }
  if (in.message_id) {
    p->_flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
    p->message_id = Bytes(*in.message_id);
  }
  if (in.timestamp) {
    p->_flags |= AMQP_BASIC_TIMESTAMP_FLAG;
    p->timestamp = *in.timestamp;
  }
  if (in.type) {
    p->_flags |= AMQP_BASIC_TYPE_FLAG;
    p->type = Bytes(*in.type);
  }
  if (in.app_id) {
    p->_flags |= AMQP_BASIC_APP_ID_FLAG;
    p->app_id = Bytes(*in.app_id);
  }
  return Ok();
}

// ---------------------------------------------------------------------------------------------
// Publisher: one connection, one confirm channel, shared by every publishing thread.

class Publisher {
 public:
  Publisher(const AmqpUrl& url, const AmqpBrokerOptions& options, int heartbeat_s,
            std::string name, std::shared_ptr<spdlog::logger> log)
      : url_(url), options_(options), heartbeat_s_(heartbeat_s), name_(std::move(name)),
        log_(std::move(log)), backoff_(options.reconnect_backoff) {
    init_amqp_pool(&pool_, 4096);
  }
  ~Publisher() {
    Close();
    empty_amqp_pool(&pool_);
  }

  Status Connect(Clock::time_point deadline) {
    std::unique_lock lock(mu_);
    return EnsureConnected(lock, deadline);
  }

  Status Publish(const OutgoingMessage* messages, size_t n);

  // Serves heartbeats and notices a dead connection while nobody publishes. Never blocks.
  void Service() {
    std::unique_lock lock(mu_, std::try_to_lock);
    if (!lock.owns_lock() || conn_ == nullptr || reader_) return;
    Drain();
  }

  void Close() {
    std::lock_guard lock(mu_);
    closed_ = true;
    if (conn_ != nullptr) {
      timeval tv = ToTimeval(milliseconds(2000));
      amqp_set_rpc_timeout(conn_, &tv);
      amqp_connection_close(conn_, AMQP_REPLY_SUCCESS);
      amqp_destroy_connection(conn_);
      conn_ = nullptr;
    }
    cv_.notify_all();
  }

 private:
  // kReturned: the server sent the message back (basic.return, mandatory): no queue took it.
  enum : uint8_t { kPending = 0, kAcked = 1, kNacked = 2, kReturned = 3 };
  enum class Wait { kDone, kLost, kTimeout };

  Status EnsureConnected(std::unique_lock<std::mutex>& lock, Clock::time_point deadline);
  Status SendOne(const OutgoingMessage& message, uint64_t* seq);
  Wait WaitConfirms(std::unique_lock<std::mutex>& lock, uint64_t gen, const uint64_t* seqs,
                    uint8_t* states, size_t n, Clock::time_point deadline);
  void ReadSome(std::unique_lock<std::mutex>& lock, Clock::time_point deadline);
  size_t Drain();
  void HandleFrame(const amqp_frame_t& frame);
  void FinishReturn();
  void Forget(uint64_t gen, const uint64_t* seqs, size_t n);
  void Resolve(uint64_t tag, bool multiple, uint8_t state);
  uint8_t StatusOf(uint64_t seq);
  void MarkBroken(Error error, bool refused);

  const AmqpUrl& url_;
  const AmqpBrokerOptions& options_;
  const int heartbeat_s_;
  const std::string name_;
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
  Clock::time_point next_connect_{};
  std::string last_error_;
  amqp_pool_t pool_;             // header tables of the message being sent, recycled per message
};

Status Publisher::EnsureConnected(std::unique_lock<std::mutex>& lock, Clock::time_point deadline) {
  while (conn_ == nullptr) {
    if (closed_) return Error(ErrorCode::kUnavailable, "broker is closed", false);
    const auto now = Clock::now();
    if (now < next_connect_) {
      if (next_connect_ >= deadline) {
        return Error(ErrorCode::kUnavailable, "cannot publish: " + last_error_);
      }
      cv_.wait_until(lock, next_connect_);
      continue;
    }
    Result<amqp_connection_state_t> opened = OpenConnection(url_, options_, heartbeat_s_, name_);
    Status status = Ok();
    if (opened.ok()) {
      amqp_connection_state_t conn = *opened;
      amqp_channel_open(conn, kPublishChannel);
      Outcome o = CheckReply(conn, kPublishChannel, amqp_get_rpc_reply(conn), "channel.open");
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
    next_connect_ = Clock::now() + delay;
    log_->warn("RabbitMQ publisher connection failed: {}; next attempt in {} ms", last_error_,
               delay.count());
    if (!status.error().retryable()) return status;
  }
  return Ok();
}

Status Publisher::SendOne(const OutgoingMessage& message, uint64_t* seq) {
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

void Publisher::MarkBroken(Error error, bool refused) {
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

uint8_t Publisher::StatusOf(uint64_t seq) {
  if (seq >= base_seq_) return status_[seq - base_seq_];
  if (returned_.count(seq) != 0) return kReturned;
  auto it = nacked_.find(seq);
  if (it == nacked_.end()) return kAcked;
  nacked_.erase(it);
  return kNacked;
}

void Publisher::Resolve(uint64_t tag, bool multiple, uint8_t state) {
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

void Publisher::FinishReturn() {
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

void Publisher::Forget(uint64_t gen, const uint64_t* seqs, size_t n) {
  // A lost connection (MarkBroken) or a new one cleared everything of that connection already.
  if (gen != gen_ || conn_ == nullptr) return;
  for (size_t i = 0; i < n; ++i) {
    if (seqs[i] == 0) continue;
    if (seqs[i] >= base_seq_ && seqs[i] - base_seq_ < sent_.size())
      sent_[seqs[i] - base_seq_] = nullptr;
    returned_.erase(seqs[i]);
  }
}

void Publisher::HandleFrame(const amqp_frame_t& frame) {
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
      Outcome o = FromCloseMethod(conn_, frame.channel, method, "basic.publish");
      // A channel error means the server refused something we sent (e.g. 404 no exchange);
      // the connection is dropped with it, and the waiters re-publish once (see Publish).
      MarkBroken(o.status.error(), method.id == AMQP_CHANNEL_CLOSE_METHOD);
      return;
    }
    default:
      return;
  }
}

size_t Publisher::Drain() {
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

void Publisher::ReadSome(std::unique_lock<std::mutex>& lock, Clock::time_point deadline) {
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

Publisher::Wait Publisher::WaitConfirms(std::unique_lock<std::mutex>& lock, uint64_t gen,
                                        const uint64_t* seqs, uint8_t* states, size_t n,
                                        Clock::time_point deadline) {
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
    if (Clock::now() >= deadline) return Wait::kTimeout;
    if (!reader_) {
      reader_ = true;
      ReadSome(lock, deadline);
      reader_ = false;
      cv_.notify_all();
    } else {
      cv_.wait_until(lock, std::min(deadline, Clock::now() + milliseconds(50)));
    }
  }
}

Status Publisher::Publish(const OutgoingMessage* messages, size_t n) {
  if (n == 0) return Ok();
  const Clock::time_point deadline = Clock::now() + options_.publish_timeout;
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
    Publisher* self;
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
    // Settled messages: read why the returned ones came back, and let go of them all.
    for (size_t i = 0; i < n; ++i) {
      if (states[i] == kPending || seqs[i] == 0) continue;
      if (states[i] == kReturned && gen_ == gen && conn_ != nullptr) {
        if (auto it = returned_.find(seqs[i]); it != returned_.end())
          returned_why.insert(it->second);
      }
      Forget(gen, &seqs[i], 1);
      seqs[i] = 0;
    }
    if (w == Wait::kDone) {
      const size_t nacked = static_cast<size_t>(std::count(states, states + n, kNacked));
      const size_t returned = static_cast<size_t>(std::count(states, states + n, kReturned));
      if (returned > 0) {
        // Publishing it again cannot help: no queue is bound for it. The others were delivered.
        std::string reasons;
        for (const auto& reason : returned_why) reasons += (reasons.empty() ? "" : "; ") + reason;
        return Error(ErrorCode::kNotFound,
                     "RabbitMQ returned " + std::to_string(returned) + " of " +
                         std::to_string(n) + " message(s) as unroutable (" +
                         (reasons.empty() ? "no queue took them" : reasons) + ")" +
                         (nacked > 0 ? " and refused " + std::to_string(nacked) : ""),
                     /*retryable=*/false);
      }
      if (nacked == 0) return Ok();
      return Error(ErrorCode::kUnavailable, "RabbitMQ refused (basic.nack) " +
                                                std::to_string(nacked) + " of " +
                                                std::to_string(n) + " messages");
    }
    const size_t open = static_cast<size_t>(std::count(states, states + n, kPending));
    if (w == Wait::kTimeout) {
      return Error(ErrorCode::kTimeout,
                   "no publisher confirm from RabbitMQ within " +
                       std::to_string(options_.publish_timeout.count()) + " ms for " +
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

// ---------------------------------------------------------------------------------------------
// Consumer side.

enum class Settle : uint8_t { kPending, kAckRequested, kSent };

struct Outstanding {
  uint64_t tag;  // AMQP delivery tag on the channel
  Settle state;
};

struct PendingOp {
  uint64_t tag;
  bool ack;
  bool requeue;
};

struct ConsumerState {
  ConsumerId id = 0;
  std::string queue;
  std::string requested_tag;
  std::shared_ptr<DeliveryHandler> handler;
  std::shared_ptr<std::function<void()>> on_burst_end;  // null if none
  std::shared_ptr<std::function<void()>> on_deliveries_lost;  // null if none
  bool raw_headers = false;

  // Guarded by Impl::mu.
  uint16_t prefetch = 0;
  uint16_t tag_gen = 1;
  bool dirty = false;
  std::deque<Outstanding> outstanding;  // in delivery order, i.e. by tag
  size_t sent_entries = 0;              // entries of `outstanding` in state kSent
  std::vector<PendingOp> ops;

  // I/O thread only.
  bool cancelled = false;
  amqp_channel_t channel = 0;
  bool channel_open = false;
  bool subscribed = false;
  bool ever_subscribed = false;  // Consume() succeeded: later failures are worth a warning
  std::string server_tag;
  uint16_t applied_prefetch = 0;
  Clock::time_point retry_at{};
  int retry_attempt = 0;
  bool assembling = false;
  uint64_t body_size = 0;
  Delivery partial;
  bool in_burst = false;  // delivered to since the last on_burst_end
};

Outstanding* FindOutstanding(std::deque<Outstanding>& q, uint64_t tag) {
  if (q.empty() || tag < q.front().tag) return nullptr;
  const uint64_t idx = tag - q.front().tag;
  if (idx < q.size() && q[idx].tag == tag) return &q[idx];
  auto it = std::lower_bound(q.begin(), q.end(), tag,
                             [](const Outstanding& o, uint64_t t) { return o.tag < t; });
  return it != q.end() && it->tag == tag ? &*it : nullptr;
}

struct Command {
  enum class Kind { kDeclare, kConsume, kCancel, kSetPrefetch, kDeleteQueue };
  Kind kind = Kind::kDeclare;
  QueueSpec spec;
  std::string name;
  std::shared_ptr<ConsumerState> consumer;
  ConsumerId consumer_id = 0;
  uint16_t prefetch = 0;
  Clock::time_point deadline;
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

}  // namespace

// ---------------------------------------------------------------------------------------------

struct AmqpBroker::Impl {
  Impl(AmqpBrokerOptions opts, AmqpUrl parsed)
      : options(std::move(opts)),
        url(std::move(parsed)),
        heartbeat_s(static_cast<int>(url.heartbeat.count() >= 0 ? url.heartbeat.count()
                                                                 : options.heartbeat.count())),
        consumer_name(options.connection_name + " consumer"),
        publisher_name(options.connection_name + " publisher"),
        log(log::Get("broker")),
        backoff(options.reconnect_backoff),
        publisher(url, options, heartbeat_s, publisher_name, log) {}

  ~Impl() {
    if (event_fd >= 0) ::close(event_fd);
  }

  // --- called from any thread ---
  Status EnsureStarted();
  Status Submit(const std::shared_ptr<Command>& cmd);
  Status SettleRequest(ConsumerId id, uint64_t tag, bool ack, bool requeue);
  void Wake();  // under mu
  bool OnIoThread() const { return io_id.load() == std::this_thread::get_id(); }
  std::string Where() const { return url.host + ":" + std::to_string(url.port); }
  void Close();

  // --- I/O thread ---
  void IoMain();
  Status ConnectConsumer();
  void RunConnected();
  void IdleWait(milliseconds delay);
  void Teardown();
  void Shutdown();
  void DrainEventFd();
  void ProcessCommands(bool connected_now);
  Status Execute(Command& cmd);
  Status DoDeclare(const QueueSpec& spec, bool record);
  Status DoDeleteQueue(const std::string& name);
  Status DoConsume(const std::shared_ptr<ConsumerState>& c);
  Status DoCancel(ConsumerId id);
  Status DoSetPrefetch(ConsumerId id, uint16_t prefetch);
  Status OpenConsumer(const std::shared_ptr<ConsumerState>& c);
  Status Subscribe(const std::shared_ptr<ConsumerState>& c);
  void ChannelFailed(const std::shared_ptr<ConsumerState>& c, const std::string& why);
  void NotifyLost(const std::shared_ptr<ConsumerState>& c);
  void RemoveConsumer(const std::shared_ptr<ConsumerState>& c);
  void ReopenConsumers();
  void FlushAcks();
  void HandleFrame(const amqp_frame_t& frame);
  void Dispatch(const std::shared_ptr<ConsumerState>& c);
  void EndBursts();
  Status EnsureControl();
  Status Check(amqp_channel_t channel, const std::string& what,
               const std::shared_ptr<ConsumerState>& consumer = nullptr);
  void Fail(const std::string& why);
  amqp_channel_t AllocateChannel();
  void ReleaseChannel(amqp_channel_t ch);
  std::shared_ptr<ConsumerState> FindConsumer(ConsumerId id);

  const AmqpBrokerOptions options;
  const AmqpUrl url;
  const int heartbeat_s;
  const std::string consumer_name;
  const std::string publisher_name;
  std::shared_ptr<spdlog::logger> log;
  const Backoff backoff;
  Publisher publisher;

  std::mutex close_mu;  // serialises Close()

  // Shared with other threads, guarded by mu.
  mutable std::mutex mu;
  std::condition_variable state_cv;
  std::deque<std::shared_ptr<Command>> commands;
  bool wake_pending = false;
  bool started = false;
  bool stopping = false;
  bool connected = false;
  uint64_t generation = 0;
  uint64_t attempts = 0;  // finished consumer-connection attempts
  std::optional<Error> last_error;
  std::map<ConsumerId, std::shared_ptr<ConsumerState>> consumers;  // changed on the I/O thread only
  std::vector<ConsumerId> dirty;
  ConsumerId next_consumer_id = 1;
  std::vector<QueueSpec> declared;

  int event_fd = -1;
  std::thread io;
  std::atomic<std::thread::id> io_id{};

  // I/O thread only.
  amqp_connection_state_t conn = nullptr;
  bool conn_failed = false;
  std::string conn_failure;
  bool control_open = false;
  std::map<amqp_channel_t, std::shared_ptr<ConsumerState>> by_channel;
  std::deque<amqp_channel_t> free_channels;
  int next_channel = 2;
  Clock::time_point next_retry_due = Clock::time_point::max();
  Clock::time_point next_service{};
  struct Action {
    amqp_channel_t channel;
    uint64_t tag;
    enum Kind : uint8_t { kAck, kAckMultiple, kReject } kind;
    bool requeue;
  };
  std::vector<Action> actions;
  std::vector<std::shared_ptr<ConsumerState>> finished;
  std::vector<std::shared_ptr<ConsumerState>> bursting;  // in_burst, with an on_burst_end
};

void AmqpBroker::Impl::Wake() {
  if (wake_pending || event_fd < 0) return;
  wake_pending = true;
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(event_fd, &one, sizeof(one));
}

Status AmqpBroker::Impl::EnsureStarted() {
  std::lock_guard lock(mu);
  if (stopping) return Error(ErrorCode::kUnavailable, "broker is closed", false);
  if (started) return Ok();
  event_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (event_fd < 0) {
    return Error(ErrorCode::kInternal, std::string("eventfd: ") + std::strerror(errno));
  }
  started = true;
  io = std::thread([this] { IoMain(); });
  return Ok();
}

Status AmqpBroker::Impl::Submit(const std::shared_ptr<Command>& cmd) {
  if (OnIoThread()) {
    // From a handler: run it now (queuing it would wait for ourselves).
    cmd->state = 1;
    if (conn == nullptr || conn_failed) {
      if (!cmd->NeedsConnection()) return Execute(*cmd);
      return Error(ErrorCode::kUnavailable, cmd->What() + ": not connected to RabbitMQ");
    }
    return Execute(*cmd);
  }
  Status started_ok = EnsureStarted();
  if (!started_ok.ok()) return started_ok;
  std::future<Status> result = cmd->done.get_future();
  {
    std::lock_guard lock(mu);
    if (stopping) return Error(ErrorCode::kUnavailable, "broker is closed", false);
    commands.push_back(cmd);
    Wake();
  }
  if (result.wait_until(cmd->deadline) == std::future_status::ready) return result.get();
  int expected = 0;
  if (cmd->state.compare_exchange_strong(expected, 2)) {
    std::lock_guard lock(mu);
    if (!connected) {
      return Error(ErrorCode::kUnavailable,
                   cmd->What() + ": not connected to RabbitMQ at " + Where() +
                       (last_error ? ": " + last_error->message() : std::string()));
    }
    return Error(ErrorCode::kTimeout, cmd->What() + ": no answer from the broker in time");
  }
  return result.get();  // taken by the I/O thread: its RPC timeout bounds the wait
}

Status AmqpBroker::Impl::SettleRequest(ConsumerId id, uint64_t tag, bool ack, bool requeue) {
  std::lock_guard lock(mu);
  if (stopping) {
    return Error(ErrorCode::kUnavailable,
                 "broker is closed; the server requeues unacked deliveries", false);
  }
  auto it = consumers.find(id);
  if (it == consumers.end()) {
    return Error(ErrorCode::kNotFound, "unknown consumer " + std::to_string(id), false);
  }
  ConsumerState& c = *it->second;
  const uint64_t amqp_tag = tag & kTagMask;
  if ((tag >> kTagBits) != c.tag_gen) {
    return Error(ErrorCode::kNotFound,
                 "delivery " + std::to_string(amqp_tag) + " of queue " + c.queue +
                     " came from a connection or channel that has since closed; RabbitMQ has "
                     "requeued it",
                 false);
  }
  Outstanding* entry = FindOutstanding(c.outstanding, amqp_tag);
  if (entry == nullptr || entry->state != Settle::kPending) {
    return Error(ErrorCode::kNotFound,
                 "delivery " + std::to_string(amqp_tag) + " of queue " + c.queue +
                     " is unknown or already acked/rejected",
                 false);
  }
  if (ack) {
    entry->state = Settle::kAckRequested;
  } else {
    entry->state = Settle::kSent;
    ++c.sent_entries;
  }
  c.ops.push_back(PendingOp{amqp_tag, ack, requeue});
  if (!c.dirty) {
    c.dirty = true;
    dirty.push_back(id);
  }
  if (!OnIoThread()) Wake();
  return Ok();
}

// --- I/O thread ------------------------------------------------------------------------------

void AmqpBroker::Impl::IoMain() {
  io_id = std::this_thread::get_id();
  int attempt = 0;
  for (;;) {
    {
      std::lock_guard lock(mu);
      if (stopping) break;
    }
    if (conn == nullptr) {
      Status s = ConnectConsumer();
      {
        std::lock_guard lock(mu);
        ++attempts;
        if (s.ok()) {
          connected = true;
          ++generation;
          last_error.reset();
        } else {
          last_error = s.error();
        }
        state_cv.notify_all();
      }
      if (!s.ok()) {
        const milliseconds delay = backoff.Delay(attempt++);
        log->warn("RabbitMQ consumer connection failed: {}; next attempt in {} ms",
                  s.error().message(), delay.count());
        IdleWait(delay);
        continue;
      }
      if (attempt > 0 || generation > 1) {
        log->info("RabbitMQ consumer connection to {} re-established", Where());
      }
      attempt = 0;
    }
    RunConnected();
    if (conn != nullptr && conn_failed) Teardown();
  }
  Shutdown();
}

Status AmqpBroker::Impl::ConnectConsumer() {
  Result<amqp_connection_state_t> opened = OpenConnection(url, options, heartbeat_s, consumer_name);
  if (!opened.ok()) return opened.error();
  conn = *opened;
  conn_failed = false;
  conn_failure.clear();
  control_open = false;
  by_channel.clear();
  free_channels.clear();
  next_channel = 2;
  Status s = EnsureControl();
  if (!s.ok()) {
    amqp_destroy_connection(conn);
    conn = nullptr;
    return s;
  }
  std::vector<QueueSpec> specs;
  {
    std::lock_guard lock(mu);
    specs = declared;
  }
  for (const QueueSpec& spec : specs) {
    Status d = DoDeclare(spec, /*record=*/false);
    if (d.ok()) continue;
    if (conn_failed) {
      amqp_destroy_connection(conn);
      conn = nullptr;
      return d;
    }
    log->error("re-declaring queue {} after reconnecting failed: {}", spec.name, d.error().message());
  }
  for (auto& [id, c] : consumers) {
    c->retry_at = Clock::time_point{};
    c->retry_attempt = 0;
  }
  next_retry_due = Clock::time_point{};
  return Ok();
}

void AmqpBroker::Impl::Fail(const std::string& why) {
  if (conn_failed) return;
  conn_failed = true;
  conn_failure = why;
}

Status AmqpBroker::Impl::Check(amqp_channel_t channel, const std::string& what,
                               const std::shared_ptr<ConsumerState>& consumer) {
  Outcome o = CheckReply(conn, channel, amqp_get_rpc_reply(conn), what);
  if (o.connection_dead) Fail(o.status.error().message());
  if (o.channel_dead) {
    if (channel == kControlChannel) {
      control_open = false;
    } else if (consumer != nullptr) {
      ChannelFailed(consumer, o.status.error().message());
    }
  }
  return o.status;
}

Status AmqpBroker::Impl::EnsureControl() {
  if (conn_failed) return Error(ErrorCode::kUnavailable, "connection lost: " + conn_failure);
  if (control_open) return Ok();
  amqp_channel_open(conn, kControlChannel);
  Status s = Check(kControlChannel, "channel.open");
  if (s.ok()) control_open = true;
  return s;
}

amqp_channel_t AmqpBroker::Impl::AllocateChannel() {
  int max = amqp_get_channel_max(conn);
  if (max <= 0) max = 65535;
  // Fresh numbers first: frames still queued for a closed channel must not reach a new owner.
  if (next_channel <= max) return static_cast<amqp_channel_t>(next_channel++);
  if (!free_channels.empty()) {
    const amqp_channel_t ch = free_channels.front();
    free_channels.pop_front();
    return ch;
  }
  return 0;
}

void AmqpBroker::Impl::ReleaseChannel(amqp_channel_t ch) {
  if (ch != 0) free_channels.push_back(ch);
}

std::shared_ptr<ConsumerState> AmqpBroker::Impl::FindConsumer(ConsumerId id) {
  std::lock_guard lock(mu);
  auto it = consumers.find(id);
  return it == consumers.end() ? nullptr : it->second;
}

void AmqpBroker::Impl::DrainEventFd() {
  // One read takes the whole counter (not EFD_SEMAPHORE); a second would only see EAGAIN.
  uint64_t value;
  [[maybe_unused]] ssize_t n = ::read(event_fd, &value, sizeof(value));
  std::lock_guard lock(mu);
  wake_pending = false;
}

void AmqpBroker::Impl::ProcessCommands(bool connected_now) {
  std::deque<std::shared_ptr<Command>> batch;
  {
    std::lock_guard lock(mu);
    batch.swap(commands);
  }
  std::deque<std::shared_ptr<Command>> keep;
  while (!batch.empty()) {
    std::shared_ptr<Command> cmd = std::move(batch.front());
    batch.pop_front();
    if (cmd->state.load() == 2) continue;  // the caller gave up
    if ((!connected_now || conn_failed) && cmd->NeedsConnection()) {
      keep.push_back(std::move(cmd));
      continue;
    }
    int expected = 0;
    if (!cmd->state.compare_exchange_strong(expected, 1)) continue;
    cmd->done.set_value(Execute(*cmd));
  }
  if (!keep.empty()) {
    std::lock_guard lock(mu);
    for (auto it = keep.rbegin(); it != keep.rend(); ++it) commands.push_front(std::move(*it));
  }
}

Status AmqpBroker::Impl::Execute(Command& cmd) {
  switch (cmd.kind) {
    case Command::Kind::kDeclare: return DoDeclare(cmd.spec, /*record=*/true);
    case Command::Kind::kDeleteQueue: return DoDeleteQueue(cmd.name);
    case Command::Kind::kConsume: return DoConsume(cmd.consumer);
    case Command::Kind::kCancel: return DoCancel(cmd.consumer_id);
    case Command::Kind::kSetPrefetch: return DoSetPrefetch(cmd.consumer_id, cmd.prefetch);
  }
  return Error(ErrorCode::kInternal, "unknown command");
}

Status AmqpBroker::Impl::DoDeclare(const QueueSpec& spec, bool record) {
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
    amqp_exchange_declare(conn, kControlChannel, Bytes(exchange), amqp_cstring_bytes("direct"),
                          /*passive=*/0, /*durable=*/1, /*auto_delete=*/0, /*internal=*/0,
                          amqp_empty_table);
    s = Check(kControlChannel, "exchange.declare " + exchange);
  }
  if (s.ok()) s = EnsureControl();
  if (s.ok()) {
    amqp_queue_declare(conn, kControlChannel, Bytes(spec.name), /*passive=*/0, spec.durable,
                       spec.exclusive, spec.auto_delete, args);
    s = Check(kControlChannel, "queue.declare " + spec.name);
  }
  empty_amqp_pool(&pool);
  if (s.ok() && spec.bind) {
    amqp_queue_bind(conn, kControlChannel, Bytes(spec.name), Bytes(exchange), Bytes(routing_key),
                    amqp_empty_table);
    s = Check(kControlChannel, "queue.bind " + spec.name);
  }
  if (!s.ok() || !record) return s;
  std::lock_guard lock(mu);
  auto it = std::find_if(declared.begin(), declared.end(),
                         [&](const QueueSpec& q) { return q.name == spec.name; });
  if (it != declared.end()) {
    *it = spec;
  } else {
    declared.push_back(spec);
  }
  return s;
}

Status AmqpBroker::Impl::DoDeleteQueue(const std::string& name) {
  Status s = EnsureControl();
  if (!s.ok()) return s;
  amqp_queue_delete(conn, kControlChannel, Bytes(name), /*if_unused=*/0, /*if_empty=*/0);
  s = Check(kControlChannel, "queue.delete " + name);
  if (s.ok()) {
    std::lock_guard lock(mu);
    declared.erase(std::remove_if(declared.begin(), declared.end(),
                                  [&](const QueueSpec& q) { return q.name == name; }),
                   declared.end());
  }
  return s;
}

Status AmqpBroker::Impl::Subscribe(const std::shared_ptr<ConsumerState>& c) {
  uint16_t prefetch;
  {
    std::lock_guard lock(mu);
    prefetch = c->prefetch;
  }
  amqp_basic_qos(conn, c->channel, 0, prefetch, /*global=*/1);
  Status s = Check(c->channel, "basic.qos", c);
  if (!s.ok()) return s;
  amqp_basic_consume_ok_t* ok = amqp_basic_consume(
      conn, c->channel, Bytes(c->queue),
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

Status AmqpBroker::Impl::OpenConsumer(const std::shared_ptr<ConsumerState>& c) {
  if (conn_failed) return Error(ErrorCode::kUnavailable, "connection lost: " + conn_failure);
  if (!c->channel_open) {
    if (c->channel == 0) c->channel = AllocateChannel();
    if (c->channel == 0) return Error(ErrorCode::kUnavailable, "no free AMQP channel");
    amqp_channel_open(conn, c->channel);
    Outcome o = CheckReply(conn, c->channel, amqp_get_rpc_reply(conn), "channel.open");
    if (o.connection_dead) Fail(o.status.error().message());
    if (!o.status.ok()) return o.status;
    c->channel_open = true;
    by_channel[c->channel] = c;
  }
  return Subscribe(c);
}

Status AmqpBroker::Impl::DoConsume(const std::shared_ptr<ConsumerState>& c) {
  {
    std::lock_guard lock(mu);
    consumers[c->id] = c;
  }
  Status s = OpenConsumer(c);
  if (s.ok()) return s;
  // Not consuming: forget it (its channel, if it opened, is closed or closing).
  if (c->channel_open && !conn_failed) {
    amqp_channel_close(conn, c->channel, AMQP_REPLY_SUCCESS);
    (void)Check(c->channel, "channel.close");
  }
  by_channel.erase(c->channel);
  ReleaseChannel(c->channel);
  std::lock_guard lock(mu);
  consumers.erase(c->id);
  return s;
}

void AmqpBroker::Impl::ChannelFailed(const std::shared_ptr<ConsumerState>& c,
                                     const std::string& why) {
  if (c->ever_subscribed) log->warn("consumer of queue {} lost its channel: {}", c->queue, why);
  by_channel.erase(c->channel);
  ReleaseChannel(c->channel);
  c->channel = 0;
  c->channel_open = false;
  c->subscribed = false;
  c->assembling = false;
  c->retry_at = Clock::now() + backoff.Delay(c->retry_attempt++);
  next_retry_due = std::min(next_retry_due, c->retry_at);
  {
    std::lock_guard lock(mu);
    c->tag_gen = NextGeneration(c->tag_gen);  // its unacked deliveries went back to the queue
    c->outstanding.clear();
    c->sent_entries = 0;
    c->ops.clear();
    if (c->cancelled) consumers.erase(c->id);
  }
  NotifyLost(c);
}

void AmqpBroker::Impl::NotifyLost(const std::shared_ptr<ConsumerState>& c) {
  if (c->on_deliveries_lost == nullptr || !c->ever_subscribed) return;
  try {
    (*c->on_deliveries_lost)();
  } catch (const std::exception& e) {
    log->error("on_deliveries_lost of queue {} threw: {}", c->queue, e.what());
  }
}

void AmqpBroker::Impl::RemoveConsumer(const std::shared_ptr<ConsumerState>& c) {
  if (c->channel_open && conn != nullptr && !conn_failed) {
    amqp_channel_close(conn, c->channel, AMQP_REPLY_SUCCESS);
    Outcome o = CheckReply(conn, c->channel, amqp_get_rpc_reply(conn), "channel.close");
    if (o.connection_dead) Fail(o.status.error().message());
  }
  by_channel.erase(c->channel);
  ReleaseChannel(c->channel);
  c->channel = 0;
  c->channel_open = false;
  std::lock_guard lock(mu);
  consumers.erase(c->id);
}

Status AmqpBroker::Impl::DoCancel(ConsumerId id) {
  std::shared_ptr<ConsumerState> c = FindConsumer(id);
  if (c == nullptr || c->cancelled) {
    return Error(ErrorCode::kNotFound, "unknown consumer " + std::to_string(id), false);
  }
  c->cancelled = true;
  if (c->subscribed && conn != nullptr && !conn_failed) {
    amqp_basic_cancel(conn, c->channel, Bytes(c->server_tag));
    Status s = Check(c->channel, "basic.cancel", c);
    if (!s.ok() && conn_failed) return Ok();  // gone with the connection anyway
  }
  c->subscribed = false;
  bool idle;
  {
    std::lock_guard lock(mu);
    idle = c->outstanding.empty();
  }
  // Its unacked deliveries stay valid: the channel closes once they are settled.
  if (idle) RemoveConsumer(c);
  return Ok();
}

Status AmqpBroker::Impl::DoSetPrefetch(ConsumerId id, uint16_t prefetch) {
  std::shared_ptr<ConsumerState> c = FindConsumer(id);
  if (c == nullptr || c->cancelled) {
    return Error(ErrorCode::kNotFound, "unknown consumer " + std::to_string(id), false);
  }
  {
    std::lock_guard lock(mu);
    c->prefetch = prefetch;
  }
  if (!c->subscribed || conn == nullptr || conn_failed || c->applied_prefetch == prefetch) {
    return Ok();  // applied when it (re)subscribes
  }
  // Channel-wide QoS applies at once, to what is unacked already too.
  amqp_basic_qos(conn, c->channel, 0, prefetch, /*global=*/1);
  Status s = Check(c->channel, "basic.qos", c);
  if (s.ok()) c->applied_prefetch = prefetch;
  return s;
}

void AmqpBroker::Impl::ReopenConsumers() {
  const auto now = Clock::now();
  if (now < next_retry_due) return;
  std::vector<std::shared_ptr<ConsumerState>> due;
  Clock::time_point next = Clock::time_point::max();
  for (auto& [id, c] : consumers) {
    if (c->cancelled || c->subscribed) continue;
    if (c->retry_at <= now) {
      due.push_back(c);
    } else {
      next = std::min(next, c->retry_at);
    }
  }
  next_retry_due = next;
  for (const auto& c : due) {
    if (conn_failed) return;
    if (c->retry_attempt > 0) {
      // It failed on its own (queue deleted, channel error): declare its queue again if we did.
      std::optional<QueueSpec> spec;
      {
        std::lock_guard lock(mu);
        for (const QueueSpec& q : declared) {
          if (q.name == c->queue) spec = q;
        }
      }
      if (spec) {
        Status d = DoDeclare(*spec, /*record=*/false);
        if (!d.ok()) log->warn("re-declaring queue {} failed: {}", c->queue, d.error().message());
        if (conn_failed) return;
      }
    }
    Status s = OpenConsumer(c);
    if (s.ok()) {
      if (c->retry_attempt > 0) log->info("consumer of queue {} resumed", c->queue);
      c->retry_attempt = 0;
      continue;
    }
    if (conn_failed) return;
    if (c->retry_at <= now) {  // ChannelFailed did not schedule it
      c->retry_at = Clock::now() + backoff.Delay(c->retry_attempt++);
    }
    next_retry_due = std::min(next_retry_due, c->retry_at);
    log->warn("cannot resume the consumer of queue {}: {}; retrying in {} ms", c->queue,
              s.error().message(), std::max<long long>(MillisUntil(c->retry_at), 0));
  }
}

void AmqpBroker::Impl::FlushAcks() {
  {
    std::lock_guard lock(mu);
    if (dirty.empty()) return;
    for (ConsumerId id : dirty) {
      auto it = consumers.find(id);
      if (it == consumers.end()) continue;
      ConsumerState& c = *it->second;
      c.dirty = false;
      if (!c.channel_open) {
        c.ops.clear();
        continue;
      }
      auto& q = c.outstanding;
      for (const PendingOp& op : c.ops) {
        if (!op.ack) actions.push_back({c.channel, op.tag, Action::kReject, op.requeue});
      }
      // Settled prefix: one basic.ack(multiple) covers every ack requested in it.
      uint64_t multiple = 0;
      while (!q.empty() && q.front().state != Settle::kPending) {
        if (q.front().state == Settle::kAckRequested) {
          multiple = q.front().tag;
        } else {
          --c.sent_entries;
        }
        q.pop_front();
      }
      // Acks behind a pending delivery (e.g. an ETA task held unacked) go one by one.
      for (const PendingOp& op : c.ops) {
        if (!op.ack || q.empty() || op.tag < q.front().tag) continue;
        Outstanding* e = FindOutstanding(q, op.tag);
        if (e == nullptr || e->state != Settle::kAckRequested) continue;
        actions.push_back({c.channel, op.tag, Action::kAck, false});
        e->state = Settle::kSent;
        ++c.sent_entries;
      }
      if (multiple != 0) actions.push_back({c.channel, multiple, Action::kAckMultiple, false});
      c.ops.clear();
      if (c.sent_entries > 64 && c.sent_entries * 2 > q.size()) {
        q.erase(std::remove_if(q.begin(), q.end(),
                               [](const Outstanding& o) { return o.state == Settle::kSent; }),
                q.end());
        c.sent_entries = 0;
      }
      if (c.cancelled && q.empty()) finished.push_back(it->second);
    }
    dirty.clear();
  }
  for (const Action& a : actions) {
    if (conn_failed) break;
    const int rc = a.kind == Action::kReject
                       ? amqp_basic_reject(conn, a.channel, a.tag, a.requeue ? 1 : 0)
                       : amqp_basic_ack(conn, a.channel, a.tag, a.kind == Action::kAckMultiple);
    if (rc != AMQP_STATUS_OK) Fail(std::string("sending basic.ack: ") + amqp_error_string2(rc));
  }
  actions.clear();
  for (const auto& c : finished) RemoveConsumer(c);
  finished.clear();
}

void AmqpBroker::Impl::Dispatch(const std::shared_ptr<ConsumerState>& c) {
  c->assembling = false;
  // Handed over in place: the handler may move from it or swap a spent Delivery in, which the
  // next message then reuses (ResetDelivery).
  Delivery& delivery = c->partial;
  const uint64_t amqp_tag = delivery.delivery_tag;
  if (c->cancelled) {
    // Sent before the server saw our basic.cancel: give it back.
    if (amqp_basic_reject(conn, c->channel, amqp_tag, 1) != AMQP_STATUS_OK) {
      Fail("sending basic.reject failed");
    }
    return;
  }
  if (amqp_tag > kTagMask) {
    Fail("delivery tag overflow on channel " + std::to_string(c->channel));
    return;
  }
  {
    std::lock_guard lock(mu);
    c->outstanding.push_back(Outstanding{amqp_tag, Settle::kPending});
    delivery.delivery_tag = (uint64_t{c->tag_gen} << kTagBits) | amqp_tag;
  }
  std::shared_ptr<DeliveryHandler> handler = c->handler;  // survives a Cancel from the handler
  if (c->on_burst_end != nullptr && !c->in_burst) {
    c->in_burst = true;
    bursting.push_back(c);
  }
  try {
    (*handler)(std::move(delivery));
  } catch (const std::exception& e) {
    log->error("delivery handler of queue {} threw: {}; the delivery stays unacked", c->queue,
               e.what());
  } catch (...) {
    log->error("delivery handler of queue {} threw; the delivery stays unacked", c->queue);
  }
}

void AmqpBroker::Impl::EndBursts() {
  // Swapped out first: a callback may cause another delivery only in a later round.
  std::vector<std::shared_ptr<ConsumerState>> ended;
  ended.swap(bursting);
  for (const auto& c : ended) {
    c->in_burst = false;
    std::shared_ptr<std::function<void()>> end = c->on_burst_end;
    try {
      (*end)();
    } catch (const std::exception& e) {
      log->error("burst-end callback of queue {} threw: {}", c->queue, e.what());
    } catch (...) {
      log->error("burst-end callback of queue {} threw", c->queue);
    }
  }
  ended.clear();
  if (bursting.empty()) bursting.swap(ended);  // keep the capacity
}

void AmqpBroker::Impl::HandleFrame(const amqp_frame_t& frame) {
  auto find = [&]() -> std::shared_ptr<ConsumerState> {
    auto it = by_channel.find(frame.channel);
    return it == by_channel.end() ? nullptr : it->second;
  };
  if (frame.frame_type == AMQP_FRAME_METHOD) {
    const amqp_method_t& method = frame.payload.method;
    switch (method.id) {
      case AMQP_BASIC_DELIVER_METHOD: {
        std::shared_ptr<ConsumerState> c = find();
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
        std::shared_ptr<ConsumerState> c = find();
        const auto* m = static_cast<const amqp_basic_cancel_t*>(method.decoded);
        if (!m->nowait) {
          amqp_basic_cancel_ok_t ok{m->consumer_tag};
          amqp_send_method(conn, frame.channel, AMQP_BASIC_CANCEL_OK_METHOD, &ok);
        }
        if (c == nullptr || c->cancelled) return;
        c->subscribed = false;
        c->retry_at = Clock::now() + backoff.Delay(c->retry_attempt++);
        next_retry_due = std::min(next_retry_due, c->retry_at);
        log->warn("RabbitMQ cancelled the consumer of queue {} (queue deleted?); re-subscribing",
                  c->queue);
        return;
      }
      case AMQP_CHANNEL_CLOSE_METHOD: {
        Outcome o = FromCloseMethod(conn, frame.channel, method, "channel closed by the server");
        if (o.connection_dead) Fail(o.status.error().message());
        if (frame.channel == kControlChannel) {
          control_open = false;
          log->warn("{}", o.status.error().message());
        } else if (std::shared_ptr<ConsumerState> c = find()) {
          ChannelFailed(c, o.status.error().message());
        }
        return;
      }
      case AMQP_CONNECTION_CLOSE_METHOD: {
        Outcome o = FromCloseMethod(conn, 0, method, "RabbitMQ");
        Fail(o.status.error().message());
        return;
      }
      case AMQP_CONNECTION_BLOCKED_METHOD:
        log->warn("RabbitMQ blocked the consumer connection (resource alarm)");
        return;
      case AMQP_CONNECTION_UNBLOCKED_METHOD:
        log->info("RabbitMQ unblocked the consumer connection");
        return;
      default:
        log->debug("ignoring {} on channel {}", amqp_method_name(method.id), frame.channel);
        return;
    }
  }
  std::shared_ptr<ConsumerState> c = find();
  if (c == nullptr || !c->assembling) return;
  if (frame.frame_type == AMQP_FRAME_HEADER) {
    const auto* props = static_cast<const amqp_basic_properties_t*>(frame.payload.properties.decoded);
    ReadProperties(*props, &c->partial.properties, c->raw_headers, &c->partial.raw_headers, *log);
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

void AmqpBroker::Impl::RunConnected() {
  const int poll_ms = heartbeat_s > 0 ? std::min(1000, heartbeat_s * 1000 / 2) : 1000;
  timeval zero{0, 0};
  for (;;) {
    {
      std::lock_guard lock(mu);
      if (stopping) return;
    }
    if (conn_failed) return;
    ProcessCommands(true);
    if (conn_failed) return;
    ReopenConsumers();
    if (conn_failed) return;
    FlushAcks();
    if (conn_failed) return;
    const auto now = Clock::now();
    if (now >= next_service) {
      publisher.Service();
      next_service = now + milliseconds(poll_ms);
    }

    bool idle = false;
    for (int i = 0; i < kFramesPerRound; ++i) {
      amqp_frame_t frame;
      const int rc = amqp_simple_wait_frame_noblock(conn, &frame, &zero);
      if (rc == AMQP_STATUS_TIMEOUT) {
        idle = true;
        break;
      }
      if (rc != AMQP_STATUS_OK) {
        Fail(std::string("reading from RabbitMQ: ") + amqp_error_string2(rc));
        break;
      }
      HandleFrame(frame);
      if (conn_failed) break;
    }
    // Every round ends every burst, before acks are flushed and before any wait.
    if (!bursting.empty()) EndBursts();
    if (conn_failed) return;
    if (!amqp_frames_enqueued(conn) && !amqp_data_in_buffer(conn)) amqp_maybe_release_buffers(conn);
    if (!idle) continue;
    FlushAcks();  // acks the handlers made during this round
    if (conn_failed) return;
    if (amqp_frames_enqueued(conn) || amqp_data_in_buffer(conn)) continue;

    int timeout_ms = poll_ms;
    if (next_retry_due != Clock::time_point::max()) {
      timeout_ms = static_cast<int>(std::clamp<long long>(MillisUntil(next_retry_due), 0, timeout_ms));
    }
    pollfd fds[2] = {{amqp_get_sockfd(conn), POLLIN, 0}, {event_fd, POLLIN, 0}};
    const int n = ::poll(fds, 2, timeout_ms);
    if (n < 0 && errno != EINTR) {
      Fail(std::string("poll: ") + std::strerror(errno));
      return;
    }
    if (n > 0 && (fds[1].revents & POLLIN)) DrainEventFd();
  }
}

void AmqpBroker::Impl::IdleWait(milliseconds delay) {
  const auto until = Clock::now() + delay;
  for (;;) {
    ProcessCommands(false);
    {
      std::lock_guard lock(mu);
      if (stopping) return;
    }
    publisher.Service();
    const long long left = MillisUntil(until);
    if (left <= 0) return;
    pollfd fd{event_fd, POLLIN, 0};
    const int n = ::poll(&fd, 1, static_cast<int>(std::min<long long>(left, 1000)));
    if (n > 0) DrainEventFd();
  }
}

void AmqpBroker::Impl::Teardown() {
  log->warn("RabbitMQ consumer connection to {} lost: {}; reconnecting", Where(), conn_failure);
  amqp_destroy_connection(conn);
  conn = nullptr;
  control_open = false;
  by_channel.clear();
  free_channels.clear();
  next_channel = 2;
  std::vector<std::shared_ptr<ConsumerState>> lost;
  {
    std::lock_guard lock(mu);
    connected = false;
    last_error = Error(ErrorCode::kUnavailable, conn_failure);
    for (auto it = consumers.begin(); it != consumers.end();) {
      lost.push_back(it->second);
      ConsumerState& c = *it->second;
      c.channel = 0;
      c.channel_open = false;
      c.subscribed = false;
      c.assembling = false;
      c.partial = Delivery{};
      c.tag_gen = NextGeneration(c.tag_gen);  // the server requeues what was unacked
      c.outstanding.clear();
      c.sent_entries = 0;
      c.ops.clear();
      c.dirty = false;
      it = c.cancelled ? consumers.erase(it) : std::next(it);
    }
    dirty.clear();
    conn_failed = false;
  }
  for (const auto& c : lost) NotifyLost(c);
}

void AmqpBroker::Impl::Shutdown() {
  if (conn != nullptr) {
    if (!conn_failed) {
      FlushAcks();  // acks requested before Close() still count
    }
    if (!conn_failed) {
      timeval tv = ToTimeval(milliseconds(2000));
      amqp_set_rpc_timeout(conn, &tv);
      amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    }
    amqp_destroy_connection(conn);
    conn = nullptr;
  }
  std::deque<std::shared_ptr<Command>> rest;
  {
    std::lock_guard lock(mu);
    rest.swap(commands);
    connected = false;
    consumers.clear();
    dirty.clear();
    state_cv.notify_all();
  }
  for (auto& cmd : rest) {
    int expected = 0;
    if (cmd->state.compare_exchange_strong(expected, 1)) {
      cmd->done.set_value(Error(ErrorCode::kUnavailable, "broker is closed", false));
    }
  }
}

void AmqpBroker::Impl::Close() {
  std::lock_guard close_lock(close_mu);
  {
    std::lock_guard lock(mu);
    stopping = true;
    Wake();
    state_cv.notify_all();
  }
  if (io.joinable()) {
    if (io.get_id() == std::this_thread::get_id()) {
      io.detach();  // Close() from a handler: the thread ends after the handler returns
    } else {
      io.join();
    }
  }
  publisher.Close();
}

// ---------------------------------------------------------------------------------------------

Result<std::unique_ptr<AmqpBroker>> AmqpBroker::Create(AmqpBrokerOptions options) {
  Result<AmqpUrl> url = ParseAmqpUrl(options.url);
  if (!url.ok()) return url.error();
  if (url->tls) {
    return Error(ErrorCode::kInvalidArgument, "amqps:// (TLS) is not supported yet");
  }
  if (options.heartbeat.count() < 0 || options.heartbeat.count() > 65535) {
    return Error(ErrorCode::kInvalidArgument, "AMQP heartbeat must be 0..65535 seconds");
  }
  auto impl = std::make_unique<Impl>(std::move(options), std::move(url).value());
  return std::unique_ptr<AmqpBroker>(new AmqpBroker(std::move(impl)));
}

AmqpBroker::AmqpBroker(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

AmqpBroker::~AmqpBroker() { Close(); }

Status AmqpBroker::Connect() {
  Status s = impl_->EnsureStarted();
  if (!s.ok()) return s;
  const auto deadline = Clock::now() + impl_->options.connect_timeout + impl_->options.rpc_timeout;
  {
    std::unique_lock lock(impl_->mu);
    const uint64_t before = impl_->attempts;
    impl_->state_cv.wait_until(lock, deadline, [&] {
      return impl_->connected || impl_->attempts > before || impl_->stopping;
    });
    if (!impl_->connected) {
      if (impl_->last_error) return *impl_->last_error;
      return Error(ErrorCode::kUnavailable, "cannot connect to RabbitMQ at " + impl_->Where());
    }
  }
  return impl_->publisher.Connect(Clock::now() + impl_->options.connect_timeout);
}

Status AmqpBroker::Declare(const QueueSpec& spec) {
  auto cmd = std::make_shared<Command>();
  cmd->kind = Command::Kind::kDeclare;
  cmd->spec = spec;
  cmd->deadline = Clock::now() + impl_->options.rpc_timeout;
  return impl_->Submit(cmd);
}

Status AmqpBroker::DeleteQueue(const std::string& name) {
  auto cmd = std::make_shared<Command>();
  cmd->kind = Command::Kind::kDeleteQueue;
  cmd->name = name;
  cmd->deadline = Clock::now() + impl_->options.rpc_timeout;
  return impl_->Submit(cmd);
}

Status AmqpBroker::Publish(const OutgoingMessage& message) {
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->stopping) return Error(ErrorCode::kUnavailable, "broker is closed", false);
  }
  Status s = impl_->EnsureStarted();  // its I/O thread serves the publisher's heartbeats
  if (!s.ok()) return s;
  return impl_->publisher.Publish(&message, 1);
}

Status AmqpBroker::PublishBatch(const std::vector<OutgoingMessage>& messages) {
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->stopping) return Error(ErrorCode::kUnavailable, "broker is closed", false);
  }
  Status s = impl_->EnsureStarted();
  if (!s.ok()) return s;
  return impl_->publisher.Publish(messages.data(), messages.size());
}

Result<ConsumerId> AmqpBroker::Consume(const ConsumeOptions& options, DeliveryHandler handler) {
  if (!handler) return Error(ErrorCode::kInvalidArgument, "basic.consume: no handler");
  auto c = std::make_shared<ConsumerState>();
  c->queue = options.queue;
  c->requested_tag = options.consumer_tag;
  c->prefetch = options.prefetch;
  c->handler = std::make_shared<DeliveryHandler>(std::move(handler));
  if (options.on_deliveries_lost)
    c->on_deliveries_lost = std::make_shared<std::function<void()>>(options.on_deliveries_lost);
  if (options.on_burst_end) {
    c->on_burst_end = std::make_shared<std::function<void()>>(options.on_burst_end);
  }
  c->raw_headers = options.raw_headers;
  {
    std::lock_guard lock(impl_->mu);
    c->id = impl_->next_consumer_id++;
  }
  auto cmd = std::make_shared<Command>();
  cmd->kind = Command::Kind::kConsume;
  cmd->consumer = c;
  cmd->deadline = Clock::now() + impl_->options.rpc_timeout;
  Status s = impl_->Submit(cmd);
  if (!s.ok()) return s.error();
  return c->id;
}

Status AmqpBroker::Cancel(ConsumerId consumer) {
  auto cmd = std::make_shared<Command>();
  cmd->kind = Command::Kind::kCancel;
  cmd->consumer_id = consumer;
  cmd->deadline = Clock::now() + impl_->options.rpc_timeout;
  return impl_->Submit(cmd);
}

Status AmqpBroker::SetPrefetch(ConsumerId consumer, uint16_t prefetch) {
  auto cmd = std::make_shared<Command>();
  cmd->kind = Command::Kind::kSetPrefetch;
  cmd->consumer_id = consumer;
  cmd->prefetch = prefetch;
  cmd->deadline = Clock::now() + impl_->options.rpc_timeout;
  return impl_->Submit(cmd);
}

Status AmqpBroker::Ack(ConsumerId consumer, uint64_t delivery_tag) {
  return impl_->SettleRequest(consumer, delivery_tag, /*ack=*/true, /*requeue=*/false);
}

Status AmqpBroker::Reject(ConsumerId consumer, uint64_t delivery_tag, bool requeue) {
  return impl_->SettleRequest(consumer, delivery_tag, /*ack=*/false, requeue);
}

void AmqpBroker::Close() { impl_->Close(); }

uint64_t AmqpBroker::connection_generation() const {
  std::lock_guard lock(impl_->mu);
  return impl_->generation;
}

std::string AmqpBroker::consumer_connection_name() const { return impl_->consumer_name; }
std::string AmqpBroker::publisher_connection_name() const { return impl_->publisher_name; }

}  // namespace celeriac::broker
