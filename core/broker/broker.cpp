#include "core/broker/broker.hpp"

#include "core/broker/amqp_table.hpp"

namespace celeriac::broker {

QueueSpec ReplyQueueSpec(const std::string& name, std::chrono::milliseconds expires) {
  // celery/backends/rpc.py: Queue(oid, durable=False, auto_delete=True, expires=result_expires);
  // kombu turns expires (seconds) into x-expires in ms, which py-amqp sends as 'I'.
  QueueSpec spec;
  spec.name = name;
  spec.exchange = "";
  spec.routing_key = name;
  spec.durable = false;
  spec.auto_delete = true;
  spec.exclusive = false;
  spec.arguments = nlohmann::ordered_json::object();
  spec.arguments["x-expires"] = static_cast<int64_t>(expires.count());
  spec.bind = false;
  return spec;
}

Status Broker::PublishBatch(const std::vector<OutgoingMessage>& messages) {
  for (const OutgoingMessage& message : messages) {
    Status s = Publish(message);
    if (!s.ok()) return s;
  }
  return Ok();
}

nlohmann::ordered_json PropertiesToJson(const Properties& p) {
  nlohmann::ordered_json j;
  j["content_type"] = p.content_type;
  j["content_encoding"] = p.content_encoding;
  j["delivery_mode"] = p.delivery_mode;
  j["priority"] = p.priority;
  j["correlation_id"] = p.correlation_id;
  j["reply_to"] = p.reply_to;
  if (p.expiration) j["expiration"] = *p.expiration;
  if (p.message_id) j["message_id"] = *p.message_id;
  if (p.timestamp) j["timestamp"] = *p.timestamp;
  if (p.type) j["type"] = *p.type;
  if (p.app_id) j["app_id"] = *p.app_id;
  return j;
}

Properties PropertiesFromJson(const nlohmann::ordered_json& j,
                                      const nlohmann::ordered_json& headers) {
  Properties p;
  p.content_type = j.value("content_type", "");
  p.content_encoding = j.value("content_encoding", "");
  p.delivery_mode = j.value("delivery_mode", uint8_t{2});
  p.priority = j.value("priority", uint8_t{0});
  p.correlation_id = j.value("correlation_id", "");
  p.reply_to = j.value("reply_to", "");
  if (j.contains("expiration")) p.expiration = j["expiration"].get<std::string>();
  if (j.contains("message_id")) p.message_id = j["message_id"].get<std::string>();
  if (j.contains("timestamp")) p.timestamp = j["timestamp"].get<uint64_t>();
  if (j.contains("type")) p.type = j["type"].get<std::string>();
  if (j.contains("app_id")) p.app_id = j["app_id"].get<std::string>();
  p.headers = headers.is_object() ? headers : Headers::object();
  return p;
}

Status DecodeRawHeaders(Delivery& delivery) {
  if (delivery.raw_headers.empty()) return Ok();
  Result<Headers> headers = DecodeTable(delivery.raw_headers);
  if (!headers.ok()) {
    delivery.properties.headers = Headers::object();
    return headers.error();
  }
  delivery.raw_headers.clear();
  delivery.properties.headers = std::move(headers).value();
  return Ok();
}

}  // namespace celeriac::broker
