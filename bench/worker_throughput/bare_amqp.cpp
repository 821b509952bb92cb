// bench_wt_bare: the broker's own limit, with nothing but rabbitmq-c in the timed loops.
//
//   bench_wt_bare probe   --url URL                       connect and log in, or fail clearly
//   bench_wt_bare publish --url URL --queue Q -n N --mode one|batch [--batch B]
//   bench_wt_bare consume --url URL --queue Q -n N [--prefetch P]
//   bench_wt_bare watch   --url URL --queue Q -n N [--interval-ms 10] [--timeout-s 300]
//   bench_wt_bare delete  --url URL --queue Q...          queue.delete and exchange.delete
//
// publish: declares Celery's topology for Q, pre-builds the same Celery messages the C++
// publisher sends (messages.hpp; headers converted to field tables before the clock starts),
// puts the channel in confirm mode, then times basic.publish plus waiting for basic.ack: one
// message at a time (mode one) or B messages then all their confirms (mode batch).
// consume: basic.qos(P) + basic.consume with manual ack; acks every delivery on its own
// (multiple=false); times from the first delivery to the last ack having been processed (a
// passive queue.declare after the last ack returns once the server has handled the acks before
// it on the channel, and must report 0 ready messages).
// watch: polls the depth (passive queue.declare, message_count = ready messages, unacked not
// included) every interval; prints {"event":"ready",...} after its first poll (which must see
// N), then the time the depth first fell below N, the depth then, and when it reached 0.
//
// Each command prints one JSON object per line on stdout; errors go to stderr with exit code 1.

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/worker_throughput/messages.hpp"
#include "core/broker/amqp_broker.hpp"
#include "core/broker/amqp_table.hpp"

namespace {

using Steady = std::chrono::steady_clock;
using json = nlohmann::ordered_json;
constexpr amqp_channel_t kChannel = 1;

[[noreturn]] void Die(const std::string& message) {
  std::cerr << "bench_wt_bare: " << message << "\n";
  std::exit(1);
}

double Seconds(Steady::time_point a, Steady::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double Now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

double CpuSeconds(const rusage& r) {
  return static_cast<double>(r.ru_utime.tv_sec + r.ru_stime.tv_sec) +
         static_cast<double>(r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6;
}

amqp_bytes_t Bytes(const std::string& s) { return {s.size(), const_cast<char*>(s.data())}; }

void CheckRpc(amqp_rpc_reply_t r, const std::string& what) {
  switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
      return;
    case AMQP_RESPONSE_NONE:
      Die(what + ": missing RPC reply");
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
      Die(what + ": " + amqp_error_string2(r.library_error));
    case AMQP_RESPONSE_SERVER_EXCEPTION:
      if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        const auto* m = static_cast<const amqp_connection_close_t*>(r.reply.decoded);
        Die(what + ": connection closed: " + std::to_string(m->reply_code) + " " +
            std::string(static_cast<const char*>(m->reply_text.bytes), m->reply_text.len));
      }
      if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        const auto* m = static_cast<const amqp_channel_close_t*>(r.reply.decoded);
        Die(what + ": channel closed: " + std::to_string(m->reply_code) + " " +
            std::string(static_cast<const char*>(m->reply_text.bytes), m->reply_text.len));
      }
      Die(what + ": server exception");
  }
  Die(what + ": unknown reply");
}

struct Args {
  std::string command;
  std::string url;
  std::vector<std::string> queues;
  size_t n = 20000;
  std::string mode = "batch";
  size_t batch = 1000;
  uint16_t prefetch = 8;
  int interval_ms = 10;
  int timeout_s = 300;
};

Args Parse(int argc, char** argv) {
  if (argc < 2) Die("usage: bench_wt_bare probe|publish|consume|watch|delete --url URL ...");
  Args a;
  a.command = argv[1];
  if (const char* env = std::getenv("CELERIAC_BROKER_URL")) a.url = env;
  for (int i = 2; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Die(k + " needs a value");
      return argv[++i];
    };
    if (k == "--url") a.url = value();
    else if (k == "--queue") a.queues.push_back(value());
    else if (k == "-n") a.n = std::stoul(value());
    else if (k == "--mode") a.mode = value();
    else if (k == "--batch") a.batch = std::stoul(value());
    else if (k == "--prefetch") a.prefetch = static_cast<uint16_t>(std::stoul(value()));
    else if (k == "--interval-ms") a.interval_ms = std::stoi(value());
    else if (k == "--timeout-s") a.timeout_s = std::stoi(value());
    else Die("unknown option " + k);
  }
  if (a.url.empty()) Die("no --url and no CELERIAC_BROKER_URL");
  if (a.command != "probe" && a.queues.empty()) Die("--queue is required");
  if (a.batch == 0) a.batch = 1;
  return a;
}

amqp_connection_state_t Open(const std::string& url_text) {
  auto url = celeriac::broker::ParseAmqpUrl(url_text);
  if (!url.ok()) Die(url.error().message());
  amqp_connection_state_t conn = amqp_new_connection();
  amqp_socket_t* socket = amqp_tcp_socket_new(conn);
  if (socket == nullptr) Die("amqp_tcp_socket_new failed");
  timeval tv{5, 0};
  const int rc = amqp_socket_open_noblock(socket, url->host.c_str(), url->port, &tv);
  if (rc != AMQP_STATUS_OK) {
    Die("cannot connect to RabbitMQ at " + url->host + ":" + std::to_string(url->port) + ": " +
        amqp_error_string2(rc) + " (is the dev stack up? ./dev up)");
  }
  CheckRpc(amqp_login(conn, url->vhost.c_str(), 0, 131072, 0, AMQP_SASL_METHOD_PLAIN,
                      url->user.c_str(), url->password.c_str()),
           "login");
  amqp_channel_open(conn, kChannel);
  CheckRpc(amqp_get_rpc_reply(conn), "channel.open");
  return conn;
}

void Close(amqp_connection_state_t conn) {
  amqp_channel_close(conn, kChannel, AMQP_REPLY_SUCCESS);
  amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
  amqp_destroy_connection(conn);
}

// Celery's topology for a queue: durable direct exchange and durable queue of the same name.
void DeclareCelery(amqp_connection_state_t conn, const std::string& q) {
  amqp_exchange_declare(conn, kChannel, Bytes(q), amqp_cstring_bytes("direct"), 0, 1, 0, 0,
                        amqp_empty_table);
  CheckRpc(amqp_get_rpc_reply(conn), "exchange.declare " + q);
  amqp_queue_declare(conn, kChannel, Bytes(q), 0, 1, 0, 0, amqp_empty_table);
  CheckRpc(amqp_get_rpc_reply(conn), "queue.declare " + q);
  amqp_queue_bind(conn, kChannel, Bytes(q), Bytes(q), Bytes(q), amqp_empty_table);
  CheckRpc(amqp_get_rpc_reply(conn), "queue.bind " + q);
}

// Ready messages and consumers of a queue (passive declare).
std::pair<uint32_t, uint32_t> Depth(amqp_connection_state_t conn, const std::string& q) {
  amqp_queue_declare_ok_t* ok =
      amqp_queue_declare(conn, kChannel, Bytes(q), 1, 0, 0, 0, amqp_empty_table);
  CheckRpc(amqp_get_rpc_reply(conn), "queue.declare(passive) " + q);
  return {ok->message_count, ok->consumer_count};
}

// The same properties AmqpBroker sends for a message (strings borrowed from `in`).
amqp_basic_properties_t Props(const celeriac::broker::Properties& in, amqp_pool_t* pool) {
  amqp_basic_properties_t p;
  std::memset(&p, 0, sizeof(p));
  p._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_PRIORITY_FLAG |
             AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_CONTENT_ENCODING_FLAG |
             AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_CORRELATION_ID_FLAG;
  p.delivery_mode = in.delivery_mode;
  p.priority = in.priority;
  p.content_type = Bytes(in.content_type);
  p.content_encoding = Bytes(in.content_encoding);
  p.correlation_id = Bytes(in.correlation_id);
  if (!celeriac::broker::ToAmqpTable(in.headers, pool, &p.headers).ok()) Die("headers");
  return p;
}

// Reads frames until every publish up to `last` is confirmed; fails on basic.nack.
void WaitConfirms(amqp_connection_state_t conn, uint64_t last, uint64_t* confirmed) {
  while (*confirmed < last) {
    amqp_frame_t frame;
    const int rc = amqp_simple_wait_frame(conn, &frame);
    if (rc != AMQP_STATUS_OK) Die(std::string("waiting for confirms: ") + amqp_error_string2(rc));
    if (frame.frame_type != AMQP_FRAME_METHOD) continue;
    const amqp_method_t& m = frame.payload.method;
    if (m.id == AMQP_BASIC_ACK_METHOD) {
      const auto* ack = static_cast<const amqp_basic_ack_t*>(m.decoded);
      if (ack->multiple) {
        *confirmed = std::max<uint64_t>(*confirmed, ack->delivery_tag);
      } else if (ack->delivery_tag == *confirmed + 1) {
        *confirmed = ack->delivery_tag;  // RabbitMQ confirms in order
      } else {
        *confirmed = std::max<uint64_t>(*confirmed, ack->delivery_tag);
      }
    } else if (m.id == AMQP_BASIC_NACK_METHOD) {
      Die("basic.nack from RabbitMQ");
    } else if (m.id == AMQP_CHANNEL_CLOSE_METHOD || m.id == AMQP_CONNECTION_CLOSE_METHOD) {
      Die(std::string("closed by RabbitMQ: ") + amqp_method_name(m.id));
    }
  }
}

int Publish(const Args& a) {
  const std::string& q = a.queues.front();
  amqp_connection_state_t conn = Open(a.url);
  DeclareCelery(conn, q);
  amqp_confirm_select(conn, kChannel);
  CheckRpc(amqp_get_rpc_reply(conn), "confirm.select");

  // Everything the wire needs is built before the clock starts.
  const auto messages = celeriac::bench::BenchTasks(a.n, q);
  amqp_pool_t pool;
  init_amqp_pool(&pool, 1 << 20);
  std::vector<amqp_basic_properties_t> props;
  props.reserve(a.n);
  for (const auto& m : messages) props.push_back(Props(m.properties, &pool));

  const auto t0 = Steady::now();
  uint64_t seq = 0;
  uint64_t confirmed = 0;
  const size_t group = a.mode == "one" ? 1 : a.batch;
  for (size_t i = 0; i < a.n;) {
    const size_t end = std::min(a.n, i + group);
    for (; i < end; ++i) {
      const int rc = amqp_basic_publish(conn, kChannel, amqp_empty_bytes, Bytes(q), 0, 0,
                                        &props[i], Bytes(messages[i].body));
      if (rc != AMQP_STATUS_OK) Die(std::string("basic.publish: ") + amqp_error_string2(rc));
      ++seq;
    }
    WaitConfirms(conn, seq, &confirmed);
  }
  const double s = Seconds(t0, Steady::now());
  empty_amqp_pool(&pool);
  Close(conn);
  std::cout << json{{"tool", "bare_publish"}, {"mode", a.mode}, {"batch", group},
                    {"n", a.n}, {"seconds", s}, {"rate", static_cast<double>(a.n) / s},
                    {"body_bytes", messages.empty() ? 0 : messages[0].body.size()}}
                   .dump()
            << std::endl;
  return 0;
}

int Consume(const Args& a) {
  const std::string& q = a.queues.front();
  amqp_connection_state_t conn = Open(a.url);
  amqp_basic_qos(conn, kChannel, 0, a.prefetch, 0);
  CheckRpc(amqp_get_rpc_reply(conn), "basic.qos");
  amqp_basic_consume(conn, kChannel, Bytes(q), amqp_empty_bytes, 0, /*no_ack=*/0, 0,
                     amqp_empty_table);
  CheckRpc(amqp_get_rpc_reply(conn), "basic.consume");

  Steady::time_point t0;
  double wall0 = 0;
  rusage r0{};
  size_t got = 0;
  uint64_t bytes = 0;
  while (got < a.n) {
    amqp_envelope_t env;
    amqp_maybe_release_buffers(conn);
    timeval tv{60, 0};
    amqp_rpc_reply_t r = amqp_consume_message(conn, &env, &tv, 0);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
      if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
          r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
        amqp_frame_t frame;  // not a delivery (nothing else is expected): skip it
        if (amqp_simple_wait_frame(conn, &frame) != AMQP_STATUS_OK) Die("reading a frame");
        continue;
      }
      CheckRpc(r, "consuming (got " + std::to_string(got) + " of " + std::to_string(a.n) + ")");
    }
    if (got == 0) {
      t0 = Steady::now();
      wall0 = Now();
      getrusage(RUSAGE_SELF, &r0);
    }
    ++got;
    bytes += env.message.body.len;
    if (amqp_basic_ack(conn, kChannel, env.delivery_tag, 0) != AMQP_STATUS_OK) Die("basic.ack");
    amqp_destroy_envelope(&env);
  }
  const auto t_last = Steady::now();
  // Acks are processed in order on the channel: once this RPC answers, they all are.
  const uint32_t left = Depth(conn, q).first;
  const auto t1 = Steady::now();
  rusage r1{};
  getrusage(RUSAGE_SELF, &r1);
  Close(conn);
  const double cpu = CpuSeconds(r1) - CpuSeconds(r0);
  std::cout << json{{"tool", "bare_consume"}, {"prefetch", a.prefetch}, {"n", got},
                    {"seconds", Seconds(t0, t1)}, {"rate", static_cast<double>(got) / Seconds(t0, t1)},
                    {"seconds_to_last_delivery", Seconds(t0, t_last)}, {"left_in_queue", left},
                    {"wall_start", wall0}, {"body_bytes_total", bytes}, {"cpu_seconds", cpu},
                    {"cpu_us_per_message", cpu * 1e6 / static_cast<double>(got)},
                    {"voluntary_switches", r1.ru_nvcsw - r0.ru_nvcsw},
                    {"involuntary_switches", r1.ru_nivcsw - r0.ru_nivcsw}}
                   .dump()
            << std::endl;
  return left == 0 ? 0 : 1;
}

int Watch(const Args& a) {
  const std::string& q = a.queues.front();
  amqp_connection_state_t conn = Open(a.url);
  const auto interval = std::chrono::milliseconds(a.interval_ms);
  const auto deadline = Steady::now() + std::chrono::seconds(a.timeout_s);
  const uint32_t first = Depth(conn, q).first;
  if (first != a.n) {
    Die("queue " + q + " holds " + std::to_string(first) + " messages, expected " +
        std::to_string(a.n));
  }
  std::cout << json{{"event", "ready"}, {"count", first}}.dump() << std::endl;
  const auto t_start = Steady::now();
  Steady::time_point t_last_full = t_start;
  Steady::time_point t_below;
  uint32_t below_count = 0;
  size_t polls = 1;
  auto next = Steady::now() + interval;
  for (;;) {
    std::this_thread::sleep_until(next);
    next += interval;
    const auto now = Steady::now();
    if (now > next) next = now + interval;  // never poll in bursts after a stall
    if (now > deadline) Die("timeout: queue " + q + " did not drain");
    const auto [count, consumers] = Depth(conn, q);
    ++polls;
    const auto t = Steady::now();
    if (below_count == 0) {
      if (count >= a.n) {
        t_last_full = t;
        continue;
      }
      t_below = t;
      below_count = count;
      if (count == 0) Die("the queue drained within one poll interval; use more messages");
      continue;
    }
    if (count == 0) {
      const double s = Seconds(t_below, t);
      Close(conn);
      std::cout << json{{"tool", "watch"}, {"n", a.n}, {"first_below", below_count},
                        {"seconds", s}, {"rate", static_cast<double>(below_count) / s},
                        {"seconds_full_to_zero", Seconds(t_last_full, t)},
                        {"startup_seconds", Seconds(t_start, t_below)}, {"polls", polls},
                        {"interval_ms", a.interval_ms}, {"consumers", consumers}}
                       .dump()
                << std::endl;
      return 0;
    }
  }
}

int Delete(const Args& a) {
  amqp_connection_state_t conn = Open(a.url);
  for (const auto& q : a.queues) {
    amqp_queue_delete_ok_t* ok = amqp_queue_delete(conn, kChannel, Bytes(q), 0, 0);
    CheckRpc(amqp_get_rpc_reply(conn), "queue.delete " + q);
    amqp_exchange_delete(conn, kChannel, Bytes(q), 0);
    CheckRpc(amqp_get_rpc_reply(conn), "exchange.delete " + q);
    std::cout << json{{"deleted", q}, {"messages", ok != nullptr ? ok->message_count : 0}}.dump()
              << std::endl;
  }
  Close(conn);
  return 0;
}

int Probe(const Args& a) {
  amqp_connection_state_t conn = Open(a.url);
  const amqp_table_t* props = amqp_get_server_properties(conn);
  std::string version;
  for (int i = 0; props != nullptr && i < props->num_entries; ++i) {
    const auto& e = props->entries[i];
    if (std::string(static_cast<const char*>(e.key.bytes), e.key.len) == "version" &&
        e.value.kind == AMQP_FIELD_KIND_UTF8) {
      version.assign(static_cast<const char*>(e.value.value.bytes.bytes), e.value.value.bytes.len);
    }
  }
  Close(conn);
  std::cout << json{{"rabbitmq", version}, {"rabbitmq_c", amqp_version()}}.dump() << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = Parse(argc, argv);
  if (a.command == "probe") return Probe(a);
  if (a.command == "publish") return Publish(a);
  if (a.command == "consume") return Consume(a);
  if (a.command == "watch") return Watch(a);
  if (a.command == "delete") return Delete(a);
  Die("unknown command " + a.command);
}
