#pragma once
// amqp_bytes_t <-> std::string: rabbitmq-c's byte views over our strings, and back.
//
// Internal to core/broker (it includes <amqp.h>): only core/broker's .cpp files include it.

#include <amqp.h>

#include <string>

namespace celeriac::broker {

// A view of `s` for rabbitmq-c, which does not write through it; valid while `s` is unchanged.
inline amqp_bytes_t Bytes(const std::string& s) {
  return {s.size(), const_cast<char*>(s.data())};
}

inline std::string Str(amqp_bytes_t b) {
  return b.len == 0 ? std::string() : std::string(static_cast<const char*>(b.bytes), b.len);
}

// Into `out`, reusing its buffer.
inline void Assign(std::string& out, amqp_bytes_t b) {
  out.assign(static_cast<const char*>(b.bytes), b.len);
}

}  // namespace celeriac::broker
