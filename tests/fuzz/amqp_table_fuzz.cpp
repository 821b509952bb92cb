// amqp_table: the AMQP field-table codec (core/broker/amqp_table.hpp) in both directions.
//
// Input: a field table in wire form (4-byte big-endian length, then entries), as it arrives in a
// message's content header; or, when it starts with '{', a JSON object, as a dead-letter replay
// or a C++ caller hands headers to Publish.
//
// Invariants: nothing throws; broker::DecodeRawHeaders agrees with DecodeTable; what decodes
// encodes again, and decoding that gives the same headers (decode -> encode -> decode), whose
// encoding is byte for byte the first one (the codec has a fixed point); JSON headers that encode
// decode to the same JSON, integers and strings keeping their values.

#include <cmath>
#include <string>

#include <nlohmann/json.hpp>

#include "core/broker/amqp_table.hpp"
#include "core/broker/broker.hpp"
#include "tests/fuzz/fuzz_support.hpp"

namespace {

using celeriac::fuzz::AsText;
using Headers = celeriac::broker::Headers;
namespace broker = celeriac::broker;

// JSON equality where NaN equals NaN ('d' and 'f' carry NaNs; JSON's == says NaN != NaN) and
// numbers compare by value whatever their JSON kind (a 'T' timestamp is unsigned, 'I' signed).
bool SameValue(const Headers& a, const Headers& b) {
  if (a.is_number_float() && b.is_number_float()) {
    const double x = a.get<double>(), y = b.get<double>();
    return (std::isnan(x) && std::isnan(y)) || x == y;
  }
  if (a.is_object() && b.is_object()) {
    if (a.size() != b.size()) return false;
    auto i = a.begin();
    auto j = b.begin();
    for (; i != a.end(); ++i, ++j)
      if (i.key() != j.key() || !SameValue(i.value(), j.value())) return false;
    return true;
  }
  if (a.is_array() && b.is_array()) {
    if (a.size() != b.size()) return false;
    for (size_t k = 0; k < a.size(); ++k)
      if (!SameValue(a[k], b[k])) return false;
    return true;
  }
  return a == b;
}

void FromWire(std::string_view bytes) {
  auto decoded = broker::DecodeTable(bytes);

  broker::Delivery d;
  d.raw_headers = std::string(bytes);
  const auto st = broker::DecodeRawHeaders(d);
  // No raw headers at all means a message without headers (not an empty table): fine.
  FUZZ_CHECK(bytes.empty() ? st.ok() : st.ok() == decoded.ok(),
             "DecodeRawHeaders and DecodeTable disagree");
  // A failed decode keeps the bytes for the dead letter; a good one moves them into headers.
  FUZZ_CHECK(d.raw_headers.empty() == st.ok(),
             "raw headers kept after a decode, or dropped after a failed one");
  if (!decoded.ok()) {
    FUZZ_CHECK(d.properties.headers.is_object() && d.properties.headers.empty(),
               "a failed decode left headers");
    return;
  }
  FUZZ_CHECK(decoded->is_object(), "decoded headers are not an object");
  FUZZ_CHECK(SameValue(d.properties.headers, *decoded), "DecodeRawHeaders decoded differently");

  auto encoded = broker::EncodeTable(*decoded);
  FUZZ_CHECK(encoded.ok(), "decoded headers do not encode: " + encoded.error().message());
  auto again = broker::DecodeTable(*encoded);
  FUZZ_CHECK(again.ok(), "encoded headers do not decode: " + again.error().message());
  FUZZ_CHECK(SameValue(*again, *decoded), "decode -> encode -> decode changed the headers");
  auto encoded_again = broker::EncodeTable(*again);
  FUZZ_CHECK(encoded_again.ok() && *encoded_again == *encoded, "encoding is not stable");
}

void FromJson(std::string_view text) {
  const Headers headers = Headers::parse(text, nullptr, false);
  if (headers.is_discarded() || !headers.is_object()) return;
  auto encoded = broker::EncodeTable(headers);
  if (!encoded.ok()) return;  // a key over 255 bytes, too deep: refused with a message
  auto decoded = broker::DecodeTable(*encoded);
  FUZZ_CHECK(decoded.ok(), "encoded JSON headers do not decode: " + decoded.error().message());
  FUZZ_CHECK(SameValue(*decoded, headers), "JSON -> table -> JSON changed the headers");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes = AsText(data, size);
  if (!bytes.empty() && bytes[0] == '{') {
    FromJson(bytes);
  } else {
    FromWire(bytes);
  }
  return 0;
}
