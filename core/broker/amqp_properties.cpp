#include "core/broker/amqp_properties.hpp"

#include <amqp.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include <spdlog/spdlog.h>

#include "core/broker/amqp_bytes.hpp"
#include "core/broker/amqp_table.hpp"

namespace celeriac::broker {
namespace {

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

}  // namespace

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

}  // namespace celeriac::broker
