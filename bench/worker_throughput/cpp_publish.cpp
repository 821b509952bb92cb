// bench_wt_publish: publishes N `celeriac.noop` tasks (ignore_result=True) through Celeriac's
// AmqpBroker, with publisher confirms, and reports how fast.
//
//   bench_wt_publish --url URL --queue Q -n N --mode one|batch [--batch B]
//
// mode one:   Broker::Publish per message (each waits for its confirm), as a caller of
//             send_task does.
// mode batch: Broker::PublishBatch per B messages (one round of confirms per batch).
//
// Two phases are timed apart: encoding (NewTask + EncodeTask for every message, as a C++
// caller must do) and publishing the encoded messages. `rate` is N / publishing time (compared
// with the bare rabbitmq-c publisher, which also gets pre-built messages); `rate_with_encode`
// is N / (encoding + publishing) (compared with Python's send_task loop, which encodes too).
// Also used by run.py to fill a queue before each drain. One JSON line on stdout.

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "bench/worker_throughput/messages.hpp"
#include "core/broker/amqp_broker.hpp"

namespace {

using Steady = std::chrono::steady_clock;

[[noreturn]] void Die(const std::string& message) {
  std::cerr << "bench_wt_publish: " << message << "\n";
  std::exit(1);
}

double Seconds(Steady::time_point a, Steady::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::string url;
  if (const char* env = std::getenv("CELERIAC_BROKER_URL")) url = env;
  std::string queue;
  std::string mode = "batch";
  size_t n = 20000;
  size_t batch = 1000;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Die(k + " needs a value");
      return argv[++i];
    };
    if (k == "--url") url = value();
    else if (k == "--queue") queue = value();
    else if (k == "-n") n = std::stoul(value());
    else if (k == "--mode") mode = value();
    else if (k == "--batch") batch = std::max<size_t>(1, std::stoul(value()));
    else Die("unknown option " + k);
  }
  if (url.empty() || queue.empty()) Die("usage: bench_wt_publish --url URL --queue Q [-n N] "
                                        "[--mode one|batch] [--batch B]");
  if (mode != "one" && mode != "batch") Die("--mode is one or batch");
  spdlog::set_level(spdlog::level::warn);

  celeriac::broker::AmqpBrokerOptions options;
  options.url = url;
  options.connection_name = "celeriac bench_wt_publish";
  auto broker = celeriac::broker::AmqpBroker::Create(options);
  if (!broker.ok()) Die(broker.error().message());
  if (auto st = (*broker)->Connect(); !st.ok()) Die(st.error().message());
  celeriac::broker::QueueSpec spec;
  spec.name = spec.exchange = spec.routing_key = queue;
  if (auto st = (*broker)->Declare(spec); !st.ok()) Die(st.error().message());

  const auto t0 = Steady::now();
  const std::vector<celeriac::broker::OutgoingMessage> messages =
      celeriac::bench::BenchTasks(n, queue);
  const double encode = Seconds(t0, Steady::now());

  double publishing = 0;
  if (mode == "one") {
    const auto before = Steady::now();
    for (const auto& m : messages) {
      if (auto st = (*broker)->Publish(m); !st.ok()) Die(st.error().message());
    }
    publishing = Seconds(before, Steady::now());
    batch = 1;
  } else {
    std::vector<celeriac::broker::OutgoingMessage> chunk;
    chunk.reserve(batch);
    for (size_t i = 0; i < n; i += batch) {
      // Copying the batch out of the pre-built list is outside the clock.
      chunk.assign(messages.begin() + static_cast<std::ptrdiff_t>(i),
                   messages.begin() + static_cast<std::ptrdiff_t>(std::min(n, i + batch)));
      const auto before = Steady::now();
      if (auto st = (*broker)->PublishBatch(chunk); !st.ok()) Die(st.error().message());
      publishing += Seconds(before, Steady::now());
    }
  }
  (*broker)->Close();
  std::cout << nlohmann::ordered_json{
                   {"tool", "cpp_publish"}, {"mode", mode}, {"batch", batch}, {"n", n},
                   {"seconds", publishing}, {"rate", static_cast<double>(n) / publishing},
                   {"encode_seconds", encode},
                   {"rate_with_encode", static_cast<double>(n) / (publishing + encode)}}
                   .dump()
            << std::endl;
  return 0;
}
