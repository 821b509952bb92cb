#include "core/celery/codec.hpp"

#include <unistd.h>

#include <cmath>
#include <set>

#include <fmt/format.h>

#include "core/base/ids.hpp"
#include "core/base/text.hpp"
#include "core/celery/py_json.hpp"
#include "core/json/untrusted_json.hpp"

namespace celeriac::celery {
namespace {

using json = nlohmann::ordered_json;
using Headers = broker::Headers;

// Header names Celery itself writes or reads; everything else is a custom header.
const std::set<std::string>& CeleryHeaderNames() {
  static const std::set<std::string> kNames = {
      "lang",      "task",      "id",         "shadow",         "eta",
      "expires",   "group",     "group_index", "retries",       "timelimit",
      "root_id",   "parent_id", "argsrepr",   "kwargsrepr",     "origin",
      "ignore_result", "replaced_task_nesting", "stamped_headers", "stamps",
      "meth",      "compression"};
  return kNames;
}

// The task name and id come from the message: they are kept as storable text (they name the
// failure in logs, dead letters and results), whatever bytes the headers held.
DecodeFailure Fail(std::string exc_type, std::string message, const TaskMessage& partial) {
  return DecodeFailure{std::move(exc_type), EscapeToStorableText(message),
                       EscapeToStorableText(partial.task), EscapeToStorableText(partial.id)};
}

// Reads an optional string header: absent or null -> nullopt; other types -> error text.
std::optional<std::string> OptString(const Headers& h, const char* key, std::string* error) {
  auto it = h.find(key);
  if (it == h.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) {
    *error = fmt::format("header '{}' must be a string, got {}", key, it->type_name());
    return std::nullopt;
  }
  // AMQP header strings are bytes; Celery's are text (py-amqp decodes them as UTF-8).
  if (!IsValidUtf8(it->get_ref<const std::string&>())) {
    *error = fmt::format("header '{}' is not valid UTF-8: {}", key, QuoteJson(*it));
    return std::nullopt;
  }
  return it->get<std::string>();
}

std::optional<double> OptNumber(const json& v) {
  if (v.is_number()) return v.get<double>();
  return std::nullopt;
}

// Fills the header fields shared by v2 and converted v1 messages.
std::optional<std::string> ReadHeaders(const Headers& h, TaskMessage& m) {
  std::string err;
  auto need_string = [&](const char* key, std::string& out) {
    auto v = OptString(h, key, &err);
    if (v) out = *v;
  };
  need_string("task", m.task);
  need_string("id", m.id);
  if (!err.empty()) return err;
  if (m.task.empty()) return "header 'task' is missing or empty";
  if (m.id.empty()) return "header 'id' is missing or empty";
  if (auto v = OptString(h, "lang", &err)) m.lang = *v;
  m.shadow = OptString(h, "shadow", &err);
  m.eta = OptString(h, "eta", &err);
  m.expires = OptString(h, "expires", &err);
  m.group = OptString(h, "group", &err);
  m.parent_id = OptString(h, "parent_id", &err);
  if (auto v = OptString(h, "root_id", &err)) m.root_id = *v;
  if (auto v = OptString(h, "argsrepr", &err)) m.argsrepr = *v;
  if (auto v = OptString(h, "kwargsrepr", &err)) m.kwargsrepr = *v;
  if (auto v = OptString(h, "origin", &err)) m.origin = *v;
  if (!err.empty()) return err;
  if (auto it = h.find("retries"); it != h.end() && !it->is_null()) {
    if (!it->is_number_integer() || it->get<int64_t>() < 0)
      return fmt::format("header 'retries' must be a non-negative integer, got {}",
                         QuoteJson(*it));
    m.retries = it->get<int64_t>();
  }
  if (auto it = h.find("group_index"); it != h.end() && !it->is_null()) {
    if (!it->is_number_integer()) return "header 'group_index' must be an integer";
    m.group_index = it->get<int64_t>();
  }
  if (auto it = h.find("timelimit"); it != h.end() && !it->is_null()) {
    // [hard, soft]: hard first, whatever the protocol document says.
    if (!it->is_array() || it->size() != 2)
      return fmt::format("header 'timelimit' must be [hard, soft], got {}", QuoteJson(*it));
    m.time_limit = OptNumber((*it)[0]);
    m.soft_time_limit = OptNumber((*it)[1]);
  }
  if (auto it = h.find("ignore_result"); it != h.end() && !it->is_null()) {
    if (!it->is_boolean()) return "header 'ignore_result' must be a boolean";
    m.ignore_result = it->get<bool>();
  }
  if (auto it = h.find("replaced_task_nesting"); it != h.end() && it->is_number_integer())
    m.replaced_task_nesting = it->get<int64_t>();
  if (m.eta) {
    m.eta_time = ParseIso8601(*m.eta);
    if (!m.eta_time) return fmt::format("header 'eta' is not an ISO-8601 time: {}", QuoteJson(*m.eta));
  }
  if (m.expires) {
    m.expires_time = ParseIso8601(*m.expires);
    if (!m.expires_time)
      return fmt::format("header 'expires' is not an ISO-8601 time: {}",
                         QuoteJson(*m.expires));
  }
  if (m.root_id.empty()) m.root_id = m.id;
  return std::nullopt;
}

void KeepCustomHeaders(const Headers& h, TaskMessage& m) {
  for (const auto& [key, value] : h.items())
    if (!CeleryHeaderNames().count(key)) m.custom_headers[key] = value;
}

std::optional<std::string> ReadEmbed(const json& embed, TaskMessage& m) {
  if (embed.is_null()) return std::nullopt;
  if (!embed.is_object()) return "embed (the body's third element) must be an object";
  auto get = [&](const char* key) { return embed.contains(key) ? embed[key] : json(nullptr); };
  m.callbacks = get("callbacks");
  m.errbacks = get("errbacks");
  m.chain = get("chain");
  m.chord = get("chord");
  return std::nullopt;
}

// Protocol v1 (and "hybrid" messages): everything in a JSON object body.
DecodeResult DecodeV1(const Headers& headers, json body, TaskMessage m) {
  m.protocol = 1;
  Headers merged = Headers::object();
  for (const char* key : {"lang", "task", "id", "root_id", "parent_id", "group", "shadow", "eta",
                          "expires", "retries", "timelimit", "argsrepr", "kwargsrepr", "origin"}) {
    if (body.contains(key)) merged[key] = body[key];
  }
  if (!body.contains("group") && body.contains("taskset")) merged["group"] = body["taskset"];
  for (const auto& [key, value] : headers.items()) merged[key] = value;
  if (auto err = ReadHeaders(merged, m)) return Fail("InvalidTaskError", *err, m);
  KeepCustomHeaders(headers, m);
  m.args = body.contains("args") ? body["args"] : json::array();
  m.kwargs = body.contains("kwargs") ? body["kwargs"] : json::object();
  if (!m.args.is_array()) return Fail("InvalidTaskError", "Task args must be a list", m);
  if (!m.kwargs.is_object())
    return Fail("InvalidTaskError", "Task keyword arguments must be a mapping", m);
  m.callbacks = body.value("callbacks", json(nullptr));
  m.errbacks = body.value("errbacks", json(nullptr));
  m.chord = body.value("chord", json(nullptr));
  if (m.argsrepr.empty()) m.argsrepr = PyRepr(m.args);
  if (m.kwargsrepr.empty()) m.kwargsrepr = PyRepr(m.kwargs);
  return m;
}

}  // namespace

Result<json> UnwrapKombuMarkers(json value) {
  if (value.is_object()) {
    if (value.size() == 2 && value.contains("__type__") && value.contains("__value__")) {
      const auto& type = value["__type__"];
      static const std::set<std::string> kKnown = {"datetime", "date", "time", "decimal",
                                                   "uuid",     "bytes", "base64"};
      if (!type.is_string() || !kKnown.count(type.get<std::string>()))
        return Error(ErrorCode::kProtocol,
                     fmt::format("unknown kombu type marker {}", QuoteJson(type)));
      return value["__value__"];
    }
    for (auto& [key, v] : value.items()) {
      auto inner = UnwrapKombuMarkers(std::move(v));
      if (!inner) return inner.error();
      v = std::move(inner.value());
    }
  } else if (value.is_array()) {
    for (auto& v : value) {
      auto inner = UnwrapKombuMarkers(std::move(v));
      if (!inner) return inner.error();
      v = std::move(inner.value());
    }
  }
  return value;
}

DecodeResult DecodeTask(const broker::Properties& p, std::string_view body_text) {
  TaskMessage m;
  m.correlation_id = p.correlation_id;
  m.reply_to = p.reply_to;
  m.priority = p.priority;
  const Headers& headers = p.headers.is_object() ? p.headers : Headers::object();
  // Name the task early so even a failure to decode the body can say which task it was.
  if (auto it = headers.find("task"); it != headers.end() && it->is_string())
    m.task = it->get<std::string>();
  if (auto it = headers.find("id"); it != headers.end() && it->is_string())
    m.id = it->get<std::string>();

  if (p.content_type != "application/json")
    return Fail("ContentDisallowed",
                fmt::format("content type {} is not accepted (only application/json)",
                            QuoteJson(p.content_type)),
                m);
  if (!p.content_encoding.empty() && p.content_encoding != "utf-8" &&
      p.content_encoding != "utf8")
    return Fail("ContentDisallowed",
                fmt::format("content encoding {} is not accepted", QuoteJson(p.content_encoding)),
                m);
  if (headers.contains("compression"))
    return Fail("ContentDisallowed",
                fmt::format("compressed bodies ({}) are not accepted", QuoteJson(headers["compression"])),
                m);

  auto parsed = ParseUntrustedOrderedJson(body_text);
  if (!parsed)
    return Fail("DecodeError", "body is not valid UTF-8 JSON: " + parsed.error().message(), m);
  json body = std::move(parsed.value());
  auto unwrapped = UnwrapKombuMarkers(std::move(body));
  if (!unwrapped) return Fail("DecodeError", unwrapped.error().message(), m);
  body = std::move(unwrapped.value());

  if (!headers.contains("task")) {
    if (body.is_object() && body.contains("task")) return DecodeV1(headers, std::move(body), m);
    return Fail("InvalidTaskError",
                "Received and deleted unknown message. Wrong destination?! (no 'task' header and "
                "not a protocol v1 body)",
                m);
  }
  if (body.is_object()) return DecodeV1(headers, std::move(body), m);  // hybrid v1/v2

  m.protocol = 2;
  if (auto err = ReadHeaders(headers, m)) return Fail("InvalidTaskError", *err, m);
  KeepCustomHeaders(headers, m);
  if (!body.is_array() || body.size() != 3)
    return Fail("InvalidTaskError", "body must be [args, kwargs, embed]", m);
  m.args = std::move(body[0]);
  m.kwargs = std::move(body[1]);
  if (!m.args.is_array()) return Fail("InvalidTaskError", "Task args must be a list", m);
  if (!m.kwargs.is_object())
    return Fail("InvalidTaskError", "Task keyword arguments must be a mapping", m);
  if (auto err = ReadEmbed(body[2], m)) return Fail("InvalidTaskError", *err, m);
  return m;
}

std::string ProducerOrigin() {
  return "gen" + std::to_string(getpid()) + "@" + HostName();
}

TaskMessage NewTask(std::string task, json args, json kwargs) {
  TaskMessage m;
  m.task = std::move(task);
  m.id = NewUuid4();
  m.root_id = m.id;
  m.correlation_id = m.id;
  m.args = std::move(args);
  m.kwargs = std::move(kwargs);
  return m;
}

broker::OutgoingMessage EncodeTask(const TaskMessage& m, const std::string& queue,
                                   Clock::WallTime now) {
  auto opt = [](const std::optional<std::string>& v) { return v ? json(*v) : json(nullptr); };
  Headers h = Headers::object();
  // Celery 5.2's order and types (research/celery-protocol.md 1.3, 1.6).
  h["lang"] = m.lang;
  h["task"] = m.task;
  h["id"] = m.id;
  h["shadow"] = opt(m.shadow);
  h["eta"] = m.eta_time ? json(FormatIso8601(*m.eta_time)) : opt(m.eta);
  h["expires"] = m.expires_time ? json(FormatIso8601(*m.expires_time)) : opt(m.expires);
  h["group"] = opt(m.group);
  h["group_index"] = m.group_index ? json(*m.group_index) : json(nullptr);
  h["retries"] = m.retries;
  // Whole seconds go out as integers, as Python writes time_limit=30.
  auto seconds = [](const std::optional<double>& v) {
    if (!v) return json(nullptr);
    if (*v == std::floor(*v) && std::abs(*v) < 2147483647.0) return json(static_cast<int64_t>(*v));
    return json(*v);
  };
  h["timelimit"] = json::array({seconds(m.time_limit), seconds(m.soft_time_limit)});
  h["root_id"] = m.root_id.empty() ? m.id : m.root_id;
  h["parent_id"] = opt(m.parent_id);
  h["argsrepr"] = m.argsrepr.empty() ? PyRepr(m.args) : m.argsrepr;
  h["kwargsrepr"] = m.kwargsrepr.empty() ? PyRepr(m.kwargs) : m.kwargsrepr;
  h["origin"] = m.origin;
  h["ignore_result"] = m.ignore_result;
  for (const auto& [key, value] : m.custom_headers.items())
    if (!CeleryHeaderNames().count(key)) h[key] = value;

  broker::OutgoingMessage out;
  out.exchange = "";
  out.routing_key = queue;
  auto& p = out.properties;
  p.content_type = "application/json";
  p.content_encoding = "utf-8";
  p.delivery_mode = 2;
  p.priority = m.priority;
  p.correlation_id = m.correlation_id.empty() ? m.id : m.correlation_id;
  p.reply_to = m.reply_to;
  if (m.expires_time) {
    // RabbitMQ drops the message itself once expired, as with Celery >= 5.2.
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(*m.expires_time - now);
    p.expiration = std::to_string(std::max<int64_t>(ms.count(), 0));
  }
  p.headers = std::move(h);
  // Written the way Python's json.dumps writes it, so the bytes match a Python client's.
  out.body = "[" + PyJsonDump(m.args) + ", " + PyJsonDump(m.kwargs) + ", " +
             "{\"callbacks\": " + PyJsonDump(m.callbacks) + ", \"errbacks\": " +
             PyJsonDump(m.errbacks) + ", \"chain\": " + PyJsonDump(m.chain) +
             ", \"chord\": " + PyJsonDump(m.chord) + "}]";
  return out;
}

}  // namespace celeriac::celery
