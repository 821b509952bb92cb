#pragma once
// Message: what travels through a broker, independent of the transport.
//
// AMQP 0-9-1 basic properties and the application headers table. Headers are an ordered JSON
// object so that a message re-published (a Celery retry, a dead-letter replay) keeps its header
// order and value types; the AMQP broker maps JSON kinds to the field-table kinds py-amqp reads
// (string S, bool t, int I or l/L, double d, null V, array A, object F; see
// research/celery-protocol.md section 1.4) and back.

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace celeriac::broker {

using Headers = nlohmann::ordered_json;  // always an object

struct Properties {
  std::string content_type;       // "application/json" for Celery tasks
  std::string content_encoding;   // "utf-8"
  Headers headers = Headers::object();
  uint8_t delivery_mode = 2;      // 2 = persistent (tasks), 1 = transient (results, events)
  uint8_t priority = 0;
  std::string correlation_id;     // Celery: the task id
  std::string reply_to;           // Celery: the client's rpc:// reply queue
  std::optional<std::string> expiration;  // milliseconds, as text
  std::optional<std::string> message_id;
  std::optional<uint64_t> timestamp;      // seconds since the epoch
  std::optional<std::string> type;
  std::optional<std::string> app_id;
};

// A message to publish.
struct OutgoingMessage {
  std::string exchange;     // "" = the default exchange, routing by queue name
  std::string routing_key;
  Properties properties;
  std::string body;
};

// A message received from a queue; ack or reject it by `delivery_tag` on the broker that
// delivered it.
struct Delivery {
  uint64_t delivery_tag = 0;  // opaque: AmqpBroker adds the generation of the delivering channel
  bool redelivered = false;
  std::string exchange;
  std::string routing_key;
  std::string queue;        // the queue it was consumed from
  Properties properties;
  std::string body;
  // ConsumeOptions::raw_headers: the AMQP headers table in wire form, not yet converted into
  // properties.headers (broker::DecodeRawHeaders does that). Empty otherwise.
  std::string raw_headers;
};

// Properties without the headers as JSON (dead letters keep them so a replay restores them),
// and back, with the headers given separately.
nlohmann::ordered_json PropertiesToJson(const Properties& p);
Properties PropertiesFromJson(const nlohmann::ordered_json& properties,
                              const nlohmann::ordered_json& headers);

}  // namespace celeriac::broker
