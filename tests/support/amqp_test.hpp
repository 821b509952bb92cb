#pragma once
// AmqpTest: a fixture for tests against the RabbitMQ of CELERIAC_BROKER_URL (the one `./dev up`
// starts). Each test names its queues with QueueName() ("t-<uuid>-<suffix>"); TearDown deletes
// those queues and the exchanges of the same names over a separate raw connection.
//
// Without CELERIAC_BROKER_URL the test fails when services are required
// (CELERIAC_REQUIRE_SERVICES=1 or CI=true, as under ./dev test) and skips otherwise.

#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/broker/amqp_broker.hpp"
#include "tests/support/process.hpp"

namespace celeriac::testing {

// The broker URL, or "" if unset.
std::string BrokerUrl();

// A second, plain rabbitmq-c connection for setting up and cleaning up behind the broker's back.
class RawAmqp {
 public:
  explicit RawAmqp(const std::string& url);
  ~RawAmqp();
  RawAmqp(const RawAmqp&) = delete;
  RawAmqp& operator=(const RawAmqp&) = delete;

  bool ok() const { return conn_ != nullptr; }
  const std::string& error() const { return error_; }
  // queue.declare durable, with these arguments; "" on success, else the server's reply.
  std::string DeclareQueue(const std::string& name, const nlohmann::ordered_json& arguments);
  // Ready messages in the queue (passive queue.declare); -1 if it does not exist.
  long long MessageCount(const std::string& name);
  void DeleteQueue(const std::string& name);
  void DeleteExchange(const std::string& name);

 private:
  bool OpenChannel();
  bool Reopen();  // after a channel error closed the channel
  void* conn_ = nullptr;  // amqp_connection_state_t, kept out of this header
  std::string error_;
};

class AmqpTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  // A unique queue name for this test, deleted (with its exchange) in TearDown.
  std::string QueueName(const std::string& suffix = "q");
  // Options for a broker under test: the URL, a unique connection name, short timeouts.
  broker::AmqpBrokerOptions Options();
  std::unique_ptr<broker::AmqpBroker> MakeBroker(broker::AmqpBrokerOptions options);
  std::unique_ptr<broker::AmqpBroker> MakeBroker() { return MakeBroker(Options()); }
  RawAmqp& raw();

  // rabbitmqctl through ./dev (or $CELERIAC_DEV), in the dev node's environment.
  CommandResult Rabbitmqctl(const std::string& args);
  // Erlang pids of the server's connections whose connection_name is `name`.
  std::vector<std::string> ConnectionPids(const std::string& name);
  // Closes, from the server side, every connection whose connection_name is `name`; returns
  // how many it closed.
  int CloseConnectionsNamed(const std::string& name);

  std::string url_;
  std::string id_;

 private:
  std::vector<std::string> queues_;
  std::unique_ptr<RawAmqp> raw_;
  int brokers_ = 0;
};

}  // namespace celeriac::testing
