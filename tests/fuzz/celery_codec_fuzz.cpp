// celery_codec: a task message as the worker receives it, through everything the worker does with
// every message: the AMQP headers table (the real field-table decoder), celery::DecodeTask, and
// for what decodes EncodeTask (a retry republishes it), PyRepr (argsrepr in logs and events) and
// the rpc:// result bodies (echo's result, a FAILURE for a decode error).
//
// Input: one flags byte, the headers, then the body.
//   flags & 3    content type / encoding: 0 application/json utf-8, 1 application/json with no
//                encoding, 2 application/json utf8, 3 application/x-yaml (refused)
//   flags & 4    headers as JSON text up to the first NUL byte (as dead letters keep them and a
//                replay restores them); otherwise an AMQP field table in wire form, whose own
//                4-byte length says where it ends
//   flags & 8    reply_to set (the result goes out)
//
// Invariants: nothing throws; what decodes re-encodes to a table and a body that decode to the
// same task (headers, args, kwargs, eta, expires, custom headers); json.dumps-style text parses
// back to the value; repr truncation never cuts a UTF-8 sequence; result bodies are JSON.

#include <chrono>
#include <string>

#include <nlohmann/json.hpp>

#include "core/base/clock.hpp"
#include "core/broker/amqp_table.hpp"
#include "core/broker/broker.hpp"
#include "core/celery/codec.hpp"
#include "core/celery/py_json.hpp"
#include "core/celery/result.hpp"
#include "tests/fuzz/fuzz_support.hpp"

namespace {

using celeriac::fuzz::AsText;
using celeriac::fuzz::ValidUtf8;
using json = nlohmann::ordered_json;
namespace celery = celeriac::celery;
namespace broker = celeriac::broker;

// Microseconds: the resolution Celery's ISO-8601 times carry on the wire.
std::optional<int64_t> Micros(const std::optional<celeriac::Clock::WallTime>& t) {
  if (!t) return std::nullopt;
  return std::chrono::duration_cast<std::chrono::microseconds>(t->time_since_epoch()).count();
}

// Result bodies go to Python (json.loads). Header strings are bytes: py-amqp decodes them with
// 'surrogatepass', so a task id holding an encoded surrogate dumps as a lone "\udcxx" escape, in
// Python as in PyJsonDump; json.loads takes it, nlohmann does not. So escapes of surrogates are
// neutralised before the syntax check.
void CheckResultBody(const std::string& body) {
  std::string text = body;
  // Escape by escape: in the JSON text \\ud83d the backslash is escaped, and no \u follows.
  for (size_t at = text.find('\\'); at != std::string::npos && at + 1 < text.size();
       at = text.find('\\', at + 2)) {
    if (text[at + 1] == 'u' && at + 6 <= text.size() &&
        (text[at + 2] == 'd' || text[at + 2] == 'D') &&
        std::string_view("89abcdefABCDEF").find(text[at + 3]) != std::string_view::npos)
      text.replace(at + 2, 4, "fffd");
  }
  const json parsed = json::parse(text, nullptr, false);
  FUZZ_CHECK(!parsed.is_discarded() && parsed.is_object(), "result body is not JSON: " + body);
}

void CheckRepr(const json& value) {
  const std::string full = celery::PyRepr(value, std::string::npos);
  for (size_t limit : {size_t{0}, size_t{1}, size_t{7}, size_t{64}, size_t{1024}}) {
    const std::string cut = celery::PyRepr(value, limit);
    if (full.size() <= limit) {
      FUZZ_CHECK(cut == full, "repr within the limit changed");
      continue;
    }
    FUZZ_CHECK(cut.size() <= limit + 3 && cut.ends_with("..."), "truncated repr: " + cut);
    // Args come from a JSON body, so their repr is UTF-8; the cut must keep it so.
    if (ValidUtf8(full)) FUZZ_CHECK(ValidUtf8(cut), "repr cut inside a UTF-8 sequence: " + cut);
  }
}

void CheckJsonText(const json& value) {
  const std::string text = celery::PyJsonDump(value);
  const json back = json::parse(text, nullptr, false);
  FUZZ_CHECK(!back.is_discarded(), "PyJsonDump wrote invalid JSON: " + text);
  FUZZ_CHECK(back == value, "PyJsonDump changed the value: " + text);
}

void AfterDecode(celery::TaskMessage& m, bool headers_from_wire) {
  CheckRepr(m.args);
  CheckRepr(m.kwargs);
  CheckJsonText(m.args);
  CheckJsonText(m.kwargs);

  // A retry: the same message republished with retries + 1.
  const auto now = celeriac::Clock::WallTime(std::chrono::seconds(1'700'000'000));
  celery::TaskMessage retry = m;
  retry.retries = m.retries + 1;
  const broker::OutgoingMessage out = celery::EncodeTask(retry, "celery", now);
  auto table = broker::EncodeTable(out.properties.headers);
  // Headers read from a table fit in one again (keys <= 255 bytes, nesting within the limit);
  // JSON headers may not, and Publish then fails with that error.
  if (headers_from_wire) FUZZ_CHECK(table.ok(), "re-encoding headers failed: " + table.error().message());
  if (table.ok()) {
    broker::Delivery again;
    again.properties = out.properties;
    again.raw_headers = *table;
    const auto st = broker::DecodeRawHeaders(again);
    FUZZ_CHECK(st.ok(), "re-encoded headers do not decode: " + st.error().message());
    auto redecoded = celery::DecodeTask(again.properties, out.body);
    FUZZ_CHECK(redecoded.ok(), "re-encoded task does not decode: " + redecoded.failure().message);
    celery::TaskMessage& r = redecoded.message();
    FUZZ_CHECK(r.task == m.task && r.id == m.id, "task or id changed");
    FUZZ_CHECK(r.retries == retry.retries, "retries changed");
    FUZZ_CHECK(r.args == m.args && r.kwargs == m.kwargs, "args or kwargs changed");
    FUZZ_CHECK(Micros(r.eta_time) == Micros(m.eta_time), "eta changed");
    FUZZ_CHECK(Micros(r.expires_time) == Micros(m.expires_time), "expires changed");
    FUZZ_CHECK(r.root_id == m.root_id && r.parent_id == m.parent_id && r.group == m.group,
               "root_id, parent_id or group changed");
    FUZZ_CHECK(r.custom_headers.size() == m.custom_headers.size(), "custom headers lost");
  }

  // celeriac.echo's result and a NotRegistered failure, as the worker sends them.
  if (!m.reply_to.empty()) {
    CheckResultBody(celery::MakeResultMessage(m, celery::State::kSuccess,
                                              json::array({m.args, m.kwargs}), std::nullopt)
                        .body);
    const auto exc = celery::ExceptionInfo::Make("NotRegistered", "celery.exceptions",
                                                 celery::PyRepr(json(m.task)));
    CheckResultBody(celery::MakeResultMessage(m, celery::State::kFailure, exc.ToJson(),
                                              std::string("Traceback"))
                        .body);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t flags = data[0];
  std::string_view rest = AsText(data + 1, size - 1);

  broker::Delivery d;
  d.routing_key = "celery";
  switch (flags & 3) {
    case 0: d.properties.content_type = "application/json"; d.properties.content_encoding = "utf-8"; break;
    case 1: d.properties.content_type = "application/json"; break;
    case 2: d.properties.content_type = "application/json"; d.properties.content_encoding = "utf8"; break;
    case 3: d.properties.content_type = "application/x-yaml"; d.properties.content_encoding = "utf-8"; break;
  }
  if (flags & 8) d.properties.reply_to = "2d5a81eb-3a14-3cc1-8dc5-499efc9cd569";
  const bool headers_from_wire = (flags & 4) == 0;

  if (headers_from_wire) {
    size_t table_size = rest.size();
    if (rest.size() >= 4) {
      const uint64_t length = (uint64_t{static_cast<uint8_t>(rest[0])} << 24) |
                              (uint64_t{static_cast<uint8_t>(rest[1])} << 16) |
                              (uint64_t{static_cast<uint8_t>(rest[2])} << 8) |
                              uint64_t{static_cast<uint8_t>(rest[3])};
      table_size = std::min<uint64_t>(rest.size(), 4 + length);
    }
    d.raw_headers = std::string(rest.substr(0, table_size));
    d.body = std::string(rest.substr(table_size));
    // A table that does not decode leaves the headers empty and keeps its bytes (for the dead
    // letter); the worker dead-letters the message as it is, so DecodeTask still sees it.
    const bool table_ok = broker::DecodeRawHeaders(d).ok();
    FUZZ_CHECK(d.raw_headers.empty() == table_ok,
               "raw headers kept after a decode, or dropped after a failed one");
    FUZZ_CHECK(d.properties.headers.is_object(), "headers are not an object");
  } else {
    const size_t nul = rest.find('\0');
    const json headers = json::parse(rest.substr(0, nul), nullptr, false);
    if (headers.is_object()) d.properties.headers = headers;
    d.body = nul == std::string_view::npos ? std::string() : std::string(rest.substr(nul + 1));
  }
  auto decoded = celery::DecodeTask(d.properties, d.body);
  if (decoded.ok()) {
    AfterDecode(decoded.message(), headers_from_wire);
  } else {
    const auto& f = decoded.failure();
    FUZZ_CHECK(f.exc_type == "DecodeError" || f.exc_type == "InvalidTaskError" ||
                   f.exc_type == "ContentDisallowed",
               "unexpected exception class " + f.exc_type);
    // The FAILURE the worker reports for it.
    const auto exc = celery::ExceptionInfo::Make(f.exc_type, "kombu.exceptions", f.message);
    CheckResultBody(celery::EncodeResultBody(f.id, celery::State::kFailure, exc.ToJson(), f.message));
  }
  return 0;
}
