#pragma once
// AMQP basic properties <-> broker::Properties, for the publisher (outgoing messages) and the
// consumer (deliveries).
//
// Outgoing: Celery always sends delivery_mode and priority, so they are always set; every other
// property is set only when it has a value (a non-empty string, an engaged optional, a non-empty
// headers object). The headers table is typed as py-amqp reads it (amqp_table.hpp).
// Incoming: a missing delivery_mode means transient (1), a missing priority 0. With raw headers
// (ConsumeOptions::raw_headers) a non-empty headers table is kept in its wire form for
// DecodeRawHeaders(), so the consumer thread does not build JSON; a table that cannot be read is
// dropped with an error in the log, never the delivery.
//
// Threading: the functions are pure; what WriteProperties builds lives in the caller's pool.

#include <string>

#include <spdlog/fwd.h>

#include "core/base/result.hpp"
#include "core/broker/message.hpp"

// rabbitmq-c's types, declared here so that <amqp.h> stays inside core/broker's sources.
struct amqp_basic_properties_t_;
struct amqp_pool_t_;

namespace celeriac::broker {

// Properties of a received message into `out`, whose strings are reused (the consumer
// empties it first). With `raw_headers`, a non-empty headers table goes to `raw` in wire form instead of
// into out->headers.
void ReadProperties(const amqp_basic_properties_t_& in, Properties* out, bool raw_headers,
                    std::string* raw, spdlog::logger& log);

// Properties to send into `out`. Its strings point into `in`, and its headers table is
// allocated from `pool`: both must outlive the basic.publish. Fails (InvalidArgument) when the
// headers cannot be a field table.
Status WriteProperties(const Properties& in, amqp_pool_t_* pool, amqp_basic_properties_t_* out);

}  // namespace celeriac::broker
