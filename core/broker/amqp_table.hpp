#pragma once
// AMQP field tables <-> Headers (an ordered JSON object), typed the way py-amqp reads them.
//
// Python Celery is the peer that matters, so both directions follow py-amqp
// (research/celery-protocol.md section 1.4):
//
//   JSON             emitted as                 read back from
//   string           'S' long string            'S'; 'x' bytes also become a string
//   bool             't'                        't'
//   integer          'I' if it fits in int32,   'b' 'B' 's' 'u' 'I' 'i' (any width, rabbitmq-c's
//                    else 'l' when >= 0,        signedness), 'L' as signed 64 and 'l' as
//                    else 'L' (signed 64)       unsigned 64, exactly as py-amqp decodes them
//   double           'd'                        'd', 'f', 'D' (decimal) as a double
//   null             'V'                        'V'
//   array            'A'                        'A'
//   object           'F'                        'F' (key order kept; a repeated key keeps its
//                                               first position and its last value, like a dict)
//   binary           'x'                        -
//                                               'T' timestamp: integer seconds since the epoch
//
// Never emitted: 's' (py-amqp reads a short string), 'b'/'B' (py-amqp swaps their signedness),
// a negative 'l' (py-amqp reads it unsigned), 'u', 'i', 'f', 'T', 'D'.
//
// Threading: the functions are pure; tables built by ToAmqpTable live in the caller's pool.

#include <string>
#include <string_view>

#include "core/base/result.hpp"
#include "core/broker/message.hpp"

// rabbitmq-c's types, declared here so that <amqp.h> stays inside core/broker's sources.
struct amqp_table_t_;
struct amqp_pool_t_;

namespace celeriac::broker {

// Deepest nesting of arrays and tables accepted in either direction.
inline constexpr int kMaxTableDepth = 64;

// Builds `out` from `headers` (a JSON object). Entries and arrays are allocated from `pool`;
// strings and keys are NOT copied: `out` points into `headers`, which must stay alive and
// unmodified while `out` is used. Fails (InvalidArgument) on a non-object, a key longer than
// 255 bytes, or nesting deeper than kMaxTableDepth.
Status ToAmqpTable(const Headers& headers, amqp_pool_t_* pool, amqp_table_t_* out);

// Converts a decoded table to an ordered JSON object.
Result<Headers> FromAmqpTable(const amqp_table_t_& table);

// The field-table wire form (4-byte big-endian length, then the entries), as py-amqp's
// serialization.dumps('F', [headers]) writes it.
Result<std::string> EncodeTable(const Headers& headers);

// Parses exactly one field table in wire form; trailing bytes are an error (Protocol).
Result<Headers> DecodeTable(std::string_view bytes);

}  // namespace celeriac::broker
