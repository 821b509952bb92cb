// Byte-level golden messages that Debian's Celery 5.2.6 / kombu 5.2.4 / py-amqp produced
// (tests/data/celery_golden, made by its generate.py): our decoder reads exactly what a Python
// client writes, and what we write for the same task is byte for byte what it writes.

#include <filesystem>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/broker/amqp_table.hpp"
#include "core/broker/broker.hpp"
#include "core/celery/codec.hpp"
#include "core/celery/result.hpp"
#include "tests/support/paths.hpp"

namespace celeriac::celery {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

fs::path GoldenDir() { return testing::SourceDir() / "tests" / "data" / "celery_golden"; }

json Golden(const std::string& name) {
  return json::parse(testing::ReadFile(GoldenDir() / (name + ".json")));
}

std::string Unhex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

std::string Hex(const std::string& bytes) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 0xF]);
  }
  return out;
}

broker::Properties PropertiesOf(const json& g, broker::Headers headers) {
  const auto& p = g["properties"];
  broker::Properties out;
  out.content_type = p.value("content_type", "");
  out.content_encoding = p.value("content_encoding", "");
  out.delivery_mode = p.value("delivery_mode", 2);
  out.priority = p.value("priority", 0);
  out.correlation_id = p.value("correlation_id", "");
  out.reply_to = p.value("reply_to", "");
  if (p.contains("expiration")) out.expiration = p["expiration"].get<std::string>();
  out.headers = std::move(headers);
  return out;
}

// Every client-side task message the generator recorded; protocol_v1 stays last (GoldenV2Task
// takes all but the last).
const char* const kTaskCases[] = {
    "send_task_execute_crawl_task",      "send_task_trigger_site_analysis",
    "send_task_trigger_site_analysis_utf8", "kwargs_countdown_expires_priority",
    "custom_headers",                    "time_limits",
    "shadow_and_ignore_result",          "link_and_link_error",
    "chain_first_message",               "retry_original",
    "retry_republish",                   "retry_republish_with_exc",
    "extract_task",                      "protocol_v1",
};

class GoldenTask : public ::testing::TestWithParam<const char*> {};
class GoldenV2Task : public ::testing::TestWithParam<const char*> {};

TEST_P(GoldenTask, DecodesWhatPythonCeleryWrote) {
  const json g = Golden(GetParam());
  auto headers = broker::DecodeTable(Unhex(g["headers_table_hex"]));
  ASSERT_TRUE(headers.ok()) << headers.error().message();
  EXPECT_EQ(headers->dump(), g["headers"].dump()) << "header values, kinds and order";
  const auto props = PropertiesOf(g, *headers);
  auto decoded = DecodeTask(props, g["body_text"].get<std::string>());
  ASSERT_TRUE(decoded.ok()) << decoded.failure().exc_type << ": " << decoded.failure().message;
  const auto& m = decoded.message();
  const json& body = g["body_json"];
  if (std::string(GetParam()) == "protocol_v1") {
    EXPECT_EQ(m.protocol, 1);
    EXPECT_EQ(m.task, body["task"]);
    EXPECT_EQ(m.id, body["id"]);
    EXPECT_EQ(m.args, body["args"]);
    EXPECT_EQ(m.kwargs, body["kwargs"]);
    return;
  }
  EXPECT_EQ(m.protocol, 2);
  EXPECT_EQ(m.task, g["headers"]["task"]);
  EXPECT_EQ(m.id, g["headers"]["id"]);
  EXPECT_EQ(m.args, body[0]);
  EXPECT_EQ(m.kwargs.dump(), body[1].dump());
  EXPECT_EQ(m.retries, g["headers"]["retries"]);
  EXPECT_EQ(m.correlation_id, m.id);
  EXPECT_EQ(m.reply_to, g["properties"]["reply_to"]);
  if (g["headers"]["eta"].is_string()) {
    ASSERT_TRUE(m.eta_time.has_value());
    EXPECT_EQ(FormatIso8601(*m.eta_time), g["headers"]["eta"]);
  }
  const auto& tl = g["headers"]["timelimit"];
  if (tl[0].is_number()) {
    EXPECT_EQ(m.time_limit, tl[0].get<double>()) << "timelimit is [hard, soft]";
  }
  if (tl[1].is_number()) {
    EXPECT_EQ(m.soft_time_limit, tl[1].get<double>());
  }
}

// We write protocol v2 only, so every case but protocol_v1.
TEST_P(GoldenV2Task, ReencodesToTheSameBytes) {
  const json g = Golden(GetParam());
  auto headers = broker::DecodeTable(Unhex(g["headers_table_hex"]));
  ASSERT_TRUE(headers.ok());
  auto decoded = DecodeTask(PropertiesOf(g, *headers), g["body_text"].get<std::string>());
  ASSERT_TRUE(decoded.ok());
  const auto out = EncodeTask(decoded.message(), g["routing_key"]);
  EXPECT_EQ(out.exchange, g["exchange"]);
  EXPECT_EQ(out.routing_key, g["routing_key"]);
  EXPECT_EQ(out.body, g["body_text"]) << "body bytes";
  auto table = broker::EncodeTable(out.properties.headers);
  ASSERT_TRUE(table.ok()) << table.error().message();
  if (std::string(GetParam()) == "custom_headers") {
    // The one known difference: py-amqp writes integers beyond int32 as 'L', we write AMQP's
    // standard signed 64-bit 'l'. Same width; py-amqp and RabbitMQ read both as the same value.
    const std::string golden = Unhex(g["headers_table_hex"]);
    EXPECT_EQ(table->size(), golden.size());
    auto ours = broker::DecodeTable(*table);
    auto theirs = broker::DecodeTable(golden);
    ASSERT_TRUE(ours.ok() && theirs.ok());
    EXPECT_EQ(ours->dump(), theirs->dump());
  } else {
    EXPECT_EQ(Hex(*table), g["headers_table_hex"]) << "header table bytes";
  }
  EXPECT_EQ(out.properties.content_type, g["properties"]["content_type"]);
  EXPECT_EQ(out.properties.content_encoding, g["properties"]["content_encoding"]);
  EXPECT_EQ(out.properties.delivery_mode, g["properties"]["delivery_mode"]);
  EXPECT_EQ(out.properties.priority, g["properties"]["priority"]);
  EXPECT_EQ(out.properties.correlation_id, g["properties"]["correlation_id"]);
  EXPECT_EQ(out.properties.reply_to, g["properties"]["reply_to"]);
}

INSTANTIATE_TEST_SUITE_P(Celery526, GoldenTask, ::testing::ValuesIn(kTaskCases),
                         [](const auto& info) { return std::string(info.param); });
INSTANTIATE_TEST_SUITE_P(Celery526, GoldenV2Task,
                         ::testing::ValuesIn(kTaskCases, kTaskCases + std::size(kTaskCases) - 1),
                         [](const auto& info) { return std::string(info.param); });

TEST(GoldenRetry, OurRetryCopyMatchesCelerysInEverythingThatMatters) {
  // What a Python worker republishes on self.retry(countdown=30): same id, retries+1, an eta.
  const json original = Golden("retry_original");
  const json republished = Golden("retry_republish");
  auto headers = broker::DecodeTable(Unhex(original["headers_table_hex"]));
  ASSERT_TRUE(headers.ok());
  auto decoded = DecodeTask(PropertiesOf(original, *headers), original["body_text"].get<std::string>());
  ASSERT_TRUE(decoded.ok());
  TaskMessage copy = decoded.message();
  copy.retries += 1;
  copy.eta_time = ParseIso8601(republished["headers"]["eta"].get<std::string>());
  copy.priority = republished["properties"]["priority"];
  const auto out = EncodeTask(copy, "celery");
  const auto& want = republished["headers"];
  EXPECT_EQ(out.properties.headers["id"], want["id"]);
  EXPECT_EQ(out.properties.headers["retries"], want["retries"]);
  EXPECT_EQ(out.properties.headers["eta"], want["eta"]);
  EXPECT_EQ(out.properties.headers["root_id"], want["root_id"]);
  EXPECT_EQ(out.properties.correlation_id, republished["properties"]["correlation_id"]);
  EXPECT_EQ(out.properties.reply_to, republished["properties"]["reply_to"]);
  EXPECT_EQ(out.body, republished["body_text"]);
}

TEST(GoldenResults, RpcBodiesAreByteIdentical) {
  for (const char* name : {"rpc_success", "rpc_failure", "rpc_not_registered"}) {
    const json g = Golden(name);
    const json& b = g["body_json"];
    TaskMessage t;
    t.id = t.correlation_id = b["task_id"];
    t.reply_to = g["routing_key"];
    State state = b["status"] == "SUCCESS" ? State::kSuccess : State::kFailure;
    std::optional<std::string> traceback;
    if (b["traceback"].is_string()) traceback = b["traceback"].get<std::string>();
    const auto out = MakeResultMessage(t, state, b["result"], traceback);
    EXPECT_EQ(out.body, g["body_text"]) << name;
    EXPECT_EQ(out.exchange, g["exchange"]) << name;
    EXPECT_EQ(out.routing_key, g["routing_key"]) << name;
    EXPECT_EQ(out.properties.delivery_mode, g["properties"]["delivery_mode"]) << name;
    EXPECT_EQ(out.properties.correlation_id, g["properties"]["correlation_id"]) << name;
  }
}

TEST(GoldenTopology, ReplyQueueArgumentsMatchTheClients) {
  const json g = Golden("reply_queue_declare");
  const auto spec = broker::ReplyQueueSpec(g["params"]["queue"], std::chrono::hours(24));
  EXPECT_EQ(spec.durable, g["params"]["durable"]);
  EXPECT_EQ(spec.auto_delete, g["params"]["auto_delete"]);
  EXPECT_EQ(spec.exclusive, g["params"]["exclusive"]);
  EXPECT_FALSE(spec.bind);
  auto table = broker::EncodeTable(spec.arguments);
  ASSERT_TRUE(table.ok());
  EXPECT_EQ(Hex(*table), g["arguments_table_hex"]);
}

}  // namespace
}  // namespace celeriac::celery
