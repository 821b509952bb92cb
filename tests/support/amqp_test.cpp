#include "tests/support/amqp_test.hpp"

#include <amqp.h>
#include <amqp_tcp_socket.h>

#include <cstdlib>
#include <sstream>

#include "core/base/ids.hpp"
#include "core/broker/amqp_table.hpp"
#include "tests/support/paths.hpp"

// ServicesRequired() lives with the Postgres fixture.
#include "tests/support/pg_test.hpp"

namespace celeriac::testing {
namespace {

amqp_connection_state_t State(void* p) { return static_cast<amqp_connection_state_t>(p); }

std::string ReplyError(const amqp_rpc_reply_t& r) {
  switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
      return "";
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
      return amqp_error_string2(r.library_error);
    case AMQP_RESPONSE_SERVER_EXCEPTION:
      if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        const auto* m = static_cast<const amqp_channel_close_t*>(r.reply.decoded);
        return std::to_string(m->reply_code) + " " +
               std::string(static_cast<const char*>(m->reply_text.bytes), m->reply_text.len);
      }
      if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        const auto* m = static_cast<const amqp_connection_close_t*>(r.reply.decoded);
        return "connection closed: " + std::to_string(m->reply_code) + " " +
               std::string(static_cast<const char*>(m->reply_text.bytes), m->reply_text.len);
      }
      return "server exception";
    default:
      return "no reply";
  }
}

}  // namespace

std::string BrokerUrl() {
  const char* v = std::getenv("CELERIAC_BROKER_URL");
  return v == nullptr ? "" : v;
}

RawAmqp::RawAmqp(const std::string& url) {
  Result<broker::AmqpUrl> parsed = broker::ParseAmqpUrl(url);
  if (!parsed.ok()) {
    error_ = parsed.error().message();
    return;
  }
  amqp_connection_state_t conn = amqp_new_connection();
  amqp_socket_t* socket = amqp_tcp_socket_new(conn);
  timeval tv{5, 0};
  int rc = amqp_socket_open_noblock(socket, parsed->host.c_str(), parsed->port, &tv);
  if (rc != AMQP_STATUS_OK) {
    error_ = amqp_error_string2(rc);
    amqp_destroy_connection(conn);
    return;
  }
  amqp_set_rpc_timeout(conn, &tv);
  amqp_rpc_reply_t r = amqp_login(conn, parsed->vhost.c_str(), 0, 131072, 0, AMQP_SASL_METHOD_PLAIN,
                                  parsed->user.c_str(), parsed->password.c_str());
  if (r.reply_type != AMQP_RESPONSE_NORMAL) {
    error_ = "login: " + ReplyError(r);
    amqp_destroy_connection(conn);
    return;
  }
  conn_ = conn;
  if (!OpenChannel()) {
    amqp_destroy_connection(conn);
    conn_ = nullptr;
  }
}

RawAmqp::~RawAmqp() {
  if (conn_ == nullptr) return;
  amqp_connection_close(State(conn_), AMQP_REPLY_SUCCESS);
  amqp_destroy_connection(State(conn_));
}

bool RawAmqp::Reopen() {
  // The server closed channel 1 (e.g. 404 on a passive declare): confirm it, then reopen.
  amqp_channel_close_ok_t ok{};
  amqp_send_method(State(conn_), 1, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
  return OpenChannel();
}

bool RawAmqp::OpenChannel() {
  amqp_channel_open(State(conn_), 1);
  const std::string e = ReplyError(amqp_get_rpc_reply(State(conn_)));
  if (!e.empty()) error_ = "channel.open: " + e;
  return e.empty();
}

std::string RawAmqp::DeclareQueue(const std::string& name,
                                  const nlohmann::ordered_json& arguments) {
  if (conn_ == nullptr) return error_;
  amqp_pool_t pool;
  init_amqp_pool(&pool, 1024);
  amqp_table_t table;
  if (!broker::ToAmqpTable(arguments, &pool, &table).ok()) {
    empty_amqp_pool(&pool);
    return "bad arguments";
  }
  amqp_queue_declare(State(conn_), 1, amqp_cstring_bytes(name.c_str()), 0, 1, 0, 0, table);
  empty_amqp_pool(&pool);
  const std::string e = ReplyError(amqp_get_rpc_reply(State(conn_)));
  if (!e.empty()) Reopen();
  return e;
}

long long RawAmqp::MessageCount(const std::string& name) {
  if (conn_ == nullptr) return -1;
  amqp_queue_declare_ok_t* ok = amqp_queue_declare(
      State(conn_), 1, amqp_cstring_bytes(name.c_str()), /*passive=*/1, 0, 0, 0, amqp_empty_table);
  if (!ReplyError(amqp_get_rpc_reply(State(conn_))).empty() || ok == nullptr) {
    Reopen();
    return -1;
  }
  return ok->message_count;
}

void RawAmqp::DeleteQueue(const std::string& name) {
  if (conn_ == nullptr) return;
  amqp_queue_delete(State(conn_), 1, amqp_cstring_bytes(name.c_str()), 0, 0);
  if (!ReplyError(amqp_get_rpc_reply(State(conn_))).empty()) Reopen();
}

void RawAmqp::DeleteExchange(const std::string& name) {
  if (conn_ == nullptr) return;
  amqp_exchange_delete(State(conn_), 1, amqp_cstring_bytes(name.c_str()), 0);
  if (!ReplyError(amqp_get_rpc_reply(State(conn_))).empty()) Reopen();
}

void AmqpTest::SetUp() {
  url_ = BrokerUrl();
  if (url_.empty()) {
    if (ServicesRequired()) {
      FAIL() << "CELERIAC_BROKER_URL is not set: start RabbitMQ with ./dev up and "
                "eval \"$(./dev env)\"";
    }
    GTEST_SKIP() << "CELERIAC_BROKER_URL not set (./dev up; eval \"$(./dev env)\")";
  }
  id_ = NewUuid4();
  if (!raw().ok()) FAIL() << "cannot reach RabbitMQ at CELERIAC_BROKER_URL: " << raw().error();
}

void AmqpTest::TearDown() {
  if (url_.empty() || queues_.empty()) return;
  RawAmqp r(url_);  // a fresh connection: the test may have left raw() in a bad state
  if (!r.ok()) ADD_FAILURE() << "cannot delete the test's queues: " << r.error();
  for (const std::string& q : queues_) {
    r.DeleteQueue(q);
    r.DeleteExchange(q);
  }
}

RawAmqp& AmqpTest::raw() {
  if (!raw_) raw_ = std::make_unique<RawAmqp>(url_);
  return *raw_;
}

std::string AmqpTest::QueueName(const std::string& suffix) {
  std::string name = "t-" + id_ + "-" + suffix;
  queues_.push_back(name);
  return name;
}

broker::AmqpBrokerOptions AmqpTest::Options() {
  broker::AmqpBrokerOptions options;
  options.url = url_;
  options.connection_name = "t-" + id_ + "-" + std::to_string(++brokers_);
  options.connect_timeout = std::chrono::milliseconds(3000);
  options.rpc_timeout = std::chrono::milliseconds(5000);
  options.publish_timeout = std::chrono::milliseconds(15000);
  options.reconnect_backoff.base = std::chrono::milliseconds(50);
  options.reconnect_backoff.max = std::chrono::milliseconds(500);
  return options;
}

std::unique_ptr<broker::AmqpBroker> AmqpTest::MakeBroker(broker::AmqpBrokerOptions options) {
  Result<std::unique_ptr<broker::AmqpBroker>> b = broker::AmqpBroker::Create(std::move(options));
  EXPECT_TRUE(b.ok()) << (b.ok() ? "" : b.error().ToString());
  return b.ok() ? std::move(b).value() : nullptr;
}

CommandResult AmqpTest::Rabbitmqctl(const std::string& args) {
  // CELERIAC_DEV: the ./dev of the checkout that runs the stack (a git worktree's own ./dev
  // does not), as bench/worker_throughput/run.py takes it.
  const char* dev = std::getenv("CELERIAC_DEV");
  const std::string path = dev != nullptr && *dev != '\0' ? dev : (SourceDir() / "dev").string();
  return RunCommand(ShellQuote(path) + " rabbitmqctl " + args);
}

std::vector<std::string> AmqpTest::ConnectionPids(const std::string& name) {
  // close_connection wants the connection's Erlang pid (RabbitMQ 3.10).
  CommandResult list = Rabbitmqctl("-q list_connections --no-table-headers pid client_properties");
  EXPECT_EQ(list.exit_code, 0) << list.output;
  const std::string needle = "{\"connection_name\",\"" + name + "\"}";
  std::vector<std::string> pids;
  std::istringstream lines(list.output);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.find(needle) != std::string::npos) pids.push_back(line.substr(0, line.find('\t')));
  }
  return pids;
}

int AmqpTest::CloseConnectionsNamed(const std::string& name) {
  int closed = 0;
  for (const std::string& pid : ConnectionPids(name)) {
    CommandResult r = Rabbitmqctl("close_connection " + ShellQuote(pid) + " 'closed by the test'");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    ++closed;
  }
  return closed;
}

}  // namespace celeriac::testing
