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

Status DecodeRawHeaders(Delivery& delivery) {
  if (delivery.raw_headers.empty()) return Ok();
  Result<Headers> headers = DecodeTable(delivery.raw_headers);
  delivery.raw_headers.clear();
  if (!headers.ok()) {
    delivery.properties.headers = Headers::object();
    return headers.error();
  }
  delivery.properties.headers = std::move(headers).value();
  return Ok();
}

}  // namespace celeriac::broker
