#include "core/broker/amqp_connection.hpp"

#include <amqp_tcp_socket.h>

#include "core/broker/amqp_bytes.hpp"

#ifndef CELERIAC_VERSION
#define CELERIAC_VERSION "dev"
#endif

namespace celeriac::broker {
namespace {

constexpr int kFrameMax = 131072;

}  // namespace

timeval ToTimeval(std::chrono::milliseconds ms) {
  timeval tv;
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

long long MillisUntil(SteadyClock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t - SteadyClock::now()).count();
}

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

std::string ReplyText(int code, amqp_bytes_t text) {
  return std::to_string(code) + " " + Str(text);
}

ReplyOutcome FromCloseMethod(amqp_connection_state_t conn, amqp_channel_t channel,
                             const amqp_method_t& method, const std::string& what) {
  ReplyOutcome out;
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

ReplyOutcome CheckReply(amqp_connection_state_t conn, amqp_channel_t channel,
                        const amqp_rpc_reply_t& r, const std::string& what) {
  ReplyOutcome out;
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

Result<amqp_connection_state_t> OpenConnection(const AmqpConnectionSettings& settings) {
  const AmqpUrl& url = settings.url;
  const std::string& name = settings.name;
  const std::string where = settings.Where();
  amqp_connection_state_t conn = amqp_new_connection();
  if (conn == nullptr) return Error(ErrorCode::kInternal, "amqp_new_connection failed");
  amqp_socket_t* socket = amqp_tcp_socket_new(conn);
  if (socket == nullptr) {
    amqp_destroy_connection(conn);
    return Error(ErrorCode::kInternal, "amqp_tcp_socket_new failed");
  }
  timeval connect_tv = ToTimeval(settings.connect_timeout);
  int rc = amqp_socket_open_noblock(socket, url.host.c_str(), url.port, &connect_tv);
  if (rc != AMQP_STATUS_OK) {
    amqp_destroy_connection(conn);
    return Error(ErrorCode::kUnavailable,
                 "cannot connect to RabbitMQ at " + where + ": " + amqp_error_string2(rc));
  }
  amqp_set_handshake_timeout(conn, &connect_tv);
  timeval rpc_tv = ToTimeval(settings.rpc_timeout);
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
      conn, url.vhost.c_str(), 0, kFrameMax, settings.heartbeat_s, &client_properties,
      AMQP_SASL_METHOD_PLAIN, url.user.c_str(), url.password.c_str());
  if (r.reply_type != AMQP_RESPONSE_NORMAL) {
    ReplyOutcome o = CheckReply(conn, 0, r,
                           "login to RabbitMQ at " + where + " vhost '" + url.vhost +
                               "' as '" + url.user + "'");
    amqp_destroy_connection(conn);
    return o.status.error();
  }
  return conn;
}

void CloseConnection(amqp_connection_state_t conn, bool graceful) {
  if (graceful) {
    timeval tv = ToTimeval(std::chrono::milliseconds(2000));
    amqp_set_rpc_timeout(conn, &tv);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
  }
  amqp_destroy_connection(conn);
}

}  // namespace celeriac::broker
