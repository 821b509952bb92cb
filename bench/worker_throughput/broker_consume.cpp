// bench_wt_broker_consume: drains a queue through Celeriac's AmqpBroker with progressively more
// of what the worker does per message, to show where the worker's time goes between the bare
// rabbitmq-c consumer and `orchestrator worker`.
//
//   bench_wt_broker_consume --url URL --queue Q -n N --prefetch P --mode MODE [--threads 2]
//
//   inline         the handler acks on the broker's I/O thread (AmqpBroker alone)
//   decode         the handler runs celery::DecodeTask, then acks, on the I/O thread
//   handoff        as the Worker today: decode on the I/O thread, then hand the job to a pool of
//                  `threads` threads (mutex + condition_variable, notify_one per job, as
//                  Worker::Pool), which acks it (early ack) and runs the no-op
//   handoff-raw    as handoff, but the pool threads decode (the I/O thread only enqueues)
//   spin           as handoff-raw, but an idle pool thread polls the queue for up to
//                  --spin-us microseconds before sleeping on the condition variable
//   lazy           as handoff, but Submit wakes a sleeping thread only when no wake-up is
//                  already in flight, and a woken thread wakes the next one if work remains
//                  (fewer futex wake-ups and sleeps per task)
//   lazy-raw       lazy, with decoding on the pool threads
//
// Prints one JSON line: the rate from the first delivery to the last Ack() call (the acks
// themselves are sent asynchronously by the broker's I/O thread; run.py's watcher measures to
// the queue being empty as for the workers), CPU time of the process, and context switches.

#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "core/broker/amqp_broker.hpp"
#include "core/celery/codec.hpp"

namespace {

using Steady = std::chrono::steady_clock;
using celeriac::broker::Delivery;

[[noreturn]] void Die(const std::string& message) {
  std::cerr << "bench_wt_broker_consume: " << message << "\n";
  std::exit(1);
}

struct Job {
  Delivery delivery;
  bool decoded = false;
};

class Pool {
 public:
  Pool(int threads, std::chrono::microseconds spin, bool lazy, std::function<void(Job&)> run)
      : spin_(spin), lazy_(lazy), run_(std::move(run)) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Loop(); });
  }
  ~Pool() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  void Submit(Job&& job) {
    bool wake = true;
    {
      std::lock_guard lock(mu_);
      queue_.push_back(std::move(job));
      size_.store(queue_.size(), std::memory_order_relaxed);
      if (lazy_) {
        // At most one wake-up in flight: the thread it wakes wakes the next if work remains.
        wake = sleeping_ > 0 && signaled_ == 0;
        if (wake) ++signaled_;
      }
    }
    if (wake) cv_.notify_one();
  }

 private:
  void Loop() {
    std::unique_lock lock(mu_);
    for (;;) {
      if (queue_.empty() && spin_.count() > 0 && !stop_) {
        lock.unlock();
        const auto until = Steady::now() + spin_;
        while (size_.load(std::memory_order_relaxed) == 0 && Steady::now() < until) {
          __builtin_ia32_pause();
        }
        lock.lock();
      }
      if (!stop_ && queue_.empty()) {
        ++sleeping_;
        while (!stop_) {
          cv_.wait(lock);
          // Any wake-up consumes the one in flight, even one that finds nothing to do (another
          // thread took the job): otherwise Submit would wait forever for it to be taken.
          if (signaled_ > 0) --signaled_;
          if (!queue_.empty()) break;
        }
        --sleeping_;
      }
      if (queue_.empty()) return;
      Job job = std::move(queue_.front());
      queue_.pop_front();
      size_.store(queue_.size(), std::memory_order_relaxed);
      const bool chain = lazy_ && !queue_.empty() && sleeping_ > 0 && signaled_ == 0;
      if (chain) ++signaled_;
      lock.unlock();
      if (chain) cv_.notify_one();
      run_(job);
      lock.lock();
    }
  }

  std::chrono::microseconds spin_;
  const bool lazy_;
  int sleeping_ = 0;   // threads waiting on cv_
  int signaled_ = 0;   // notify_one()s not yet taken by a waking thread (lazy only)
  std::function<void(Job&)> run_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  std::atomic<size_t> size_{0};
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

double CpuSeconds(const rusage& r) {
  return static_cast<double>(r.ru_utime.tv_sec + r.ru_stime.tv_sec) +
         static_cast<double>(r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
  std::string url;
  if (const char* env = std::getenv("CELERIAC_BROKER_URL")) url = env;
  std::string queue;
  std::string mode = "inline";
  size_t n = 20000;
  int prefetch = 8;
  int threads = 2;
  int spin_us = 50;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Die(k + " needs a value");
      return argv[++i];
    };
    if (k == "--url") url = value();
    else if (k == "--queue") queue = value();
    else if (k == "-n") n = std::stoul(value());
    else if (k == "--prefetch") prefetch = std::stoi(value());
    else if (k == "--mode") mode = value();
    else if (k == "--threads") threads = std::stoi(value());
    else if (k == "--spin-us") spin_us = std::stoi(value());
    else Die("unknown option " + k);
  }
  if (url.empty() || queue.empty()) Die("--url and --queue are required");
  const bool pooled = mode == "handoff" || mode == "handoff-raw" || mode == "spin" ||
                      mode == "lazy" || mode == "lazy-raw";
  if (!pooled && mode != "inline" && mode != "decode") Die("unknown --mode " + mode);
  spdlog::set_level(spdlog::level::warn);

  celeriac::broker::AmqpBrokerOptions options;
  options.url = url;
  options.connection_name = "celeriac bench_wt_broker_consume";
  auto created = celeriac::broker::AmqpBroker::Create(options);
  if (!created.ok()) Die(created.error().message());
  celeriac::broker::AmqpBroker& broker = **created;
  if (auto st = broker.Connect(); !st.ok()) Die(st.error().message());

  std::atomic<celeriac::broker::ConsumerId> consumer{0};
  std::atomic<size_t> acked{0};
  std::atomic<size_t> failed{0};
  std::mutex done_mu;
  std::condition_variable done_cv;
  Steady::time_point t0;
  Steady::time_point t_last;
  rusage r0{};

  auto ack = [&](const Delivery& d) {
    if (!broker.Ack(consumer.load(), d.delivery_tag).ok()) failed.fetch_add(1);
    if (acked.fetch_add(1) + 1 == n) {
      std::lock_guard lock(done_mu);
      t_last = Steady::now();
      done_cv.notify_all();
    }
  };
  auto decode = [&](const Delivery& d) {
    auto r = celeriac::celery::DecodeTask(d.properties, d.body);
    if (!r.ok() || r.message().task != "celeriac.noop") failed.fetch_add(1);
  };
  std::unique_ptr<Pool> pool;
  if (pooled) {
    const bool raw = mode != "handoff" && mode != "lazy";
    const bool lazy = mode == "lazy" || mode == "lazy-raw";
    pool = std::make_unique<Pool>(threads, std::chrono::microseconds(mode == "spin" ? spin_us : 0),
                                  lazy, [&, raw](Job& job) {
                                    if (raw) decode(job.delivery);
                                    ack(job.delivery);  // early ack, as a task without acks_late
                                  });
  }
  std::atomic<bool> first{true};
  auto handler = [&](Delivery&& d) {
    if (first.exchange(false)) {
      t0 = Steady::now();
      getrusage(RUSAGE_SELF, &r0);
    }
    if (mode == "inline") return ack(d);
    if (mode == "decode") {
      decode(d);
      return ack(d);
    }
    const bool decode_here = mode == "handoff" || mode == "lazy";
    if (decode_here) decode(d);
    pool->Submit(Job{std::move(d), decode_here});
  };

  // The first deliveries can reach the handler before Consume() has returned the consumer id
  // that Ack() needs: they wait for it.
  auto id = broker.Consume({queue, static_cast<uint16_t>(prefetch), ""}, [&](Delivery&& d) {
    while (consumer.load() == 0) std::this_thread::yield();
    handler(std::move(d));
  });
  if (!id.ok()) Die(id.error().message());
  consumer = *id;

  {
    std::unique_lock lock(done_mu);
    if (!done_cv.wait_for(lock, std::chrono::seconds(300), [&] { return acked.load() >= n; })) {
      Die("timeout after " + std::to_string(acked.load()) + " acks");
    }
  }
  rusage r1{};
  getrusage(RUSAGE_SELF, &r1);
  pool.reset();
  broker.Close();
  const double s = std::chrono::duration<double>(t_last - t0).count();
  std::cout << nlohmann::ordered_json{
                   {"tool", "broker_consume"}, {"mode", mode}, {"prefetch", prefetch},
                   {"threads", pooled ? threads : 0}, {"n", n}, {"seconds", s},
                   {"rate", static_cast<double>(n) / s}, {"failed", failed.load()},
                   {"cpu_seconds", CpuSeconds(r1) - CpuSeconds(r0)},
                   {"cpu_us_per_message", (CpuSeconds(r1) - CpuSeconds(r0)) * 1e6 / n},
                   {"voluntary_switches", r1.ru_nvcsw - r0.ru_nvcsw},
                   {"involuntary_switches", r1.ru_nivcsw - r0.ru_nivcsw}}
                   .dump()
            << std::endl;
  return failed.load() == 0 ? 0 : 1;
}
