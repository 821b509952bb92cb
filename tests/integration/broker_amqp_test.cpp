// AmqpBroker against the real RabbitMQ of ./dev up. Every wait is bounded; every queue is
// unique to its test and deleted afterwards (AmqpTest).
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "core/broker/amqp_broker.hpp"
#include "tests/support/amqp_test.hpp"

namespace celeriac::broker {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Collects deliveries (on the broker's I/O thread); optionally acks them there.
class Collector {
 public:
  // on_delivery runs on the I/O thread before the delivery is stored.
  explicit Collector(std::function<void(const Delivery&)> on_delivery = nullptr)
      : on_delivery_(std::move(on_delivery)) {}

  DeliveryHandler Handler() {
    return [this](Delivery&& d) {
      if (on_delivery_) on_delivery_(d);
      std::lock_guard lock(mu_);
      deliveries_.push_back(std::move(d));
      cv_.notify_all();
    };
  }
  bool WaitFor(size_t n, std::chrono::milliseconds timeout = 30s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return deliveries_.size() >= n; });
  }
  size_t size() {
    std::lock_guard lock(mu_);
    return deliveries_.size();
  }
  Delivery at(size_t i) {
    std::lock_guard lock(mu_);
    return deliveries_.at(i);
  }
  std::vector<Delivery> all() {
    std::lock_guard lock(mu_);
    return deliveries_;
  }

 private:
  std::function<void(const Delivery&)> on_delivery_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Delivery> deliveries_;
};

OutgoingMessage Message(const std::string& queue, const std::string& body) {
  OutgoingMessage m;
  m.routing_key = queue;
  m.body = body;
  m.properties.content_type = "application/json";
  m.properties.content_encoding = "utf-8";
  m.properties.headers["id"] = body;
  return m;
}

QueueSpec Spec(const std::string& name) {
  QueueSpec spec;
  spec.name = name;
  return spec;
}

// Polls `cond` until it holds or `timeout` passes.
bool Eventually(const std::function<bool()>& cond, std::chrono::milliseconds timeout = 20s) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return cond();
}

class AmqpBrokerTest : public testing::AmqpTest {};

TEST_F(AmqpBrokerTest, ConnectAndDeclareTwice) {
  auto broker = MakeBroker();
  ASSERT_TRUE(broker->Connect().ok());
  EXPECT_EQ(broker->connection_generation(), 1u);
  const std::string q = QueueName();
  ASSERT_TRUE(broker->Declare(Spec(q)).ok());
  Status again = broker->Declare(Spec(q));
  EXPECT_TRUE(again.ok()) << again.error().ToString();
  const std::string reply = QueueName("reply");
  EXPECT_TRUE(broker->Declare(ReplyQueueSpec(reply, 24h)).ok());
  EXPECT_TRUE(broker->Declare(ReplyQueueSpec(reply, 24h)).ok());
  EXPECT_EQ(raw().MessageCount(q), 0);
}

TEST_F(AmqpBrokerTest, DeclareOverDifferentArgumentsNames406AndTheBrokerCarriesOn) {
  const std::string q = QueueName();
  nlohmann::ordered_json args = nlohmann::ordered_json::object();
  args["x-max-priority"] = 10;
  ASSERT_EQ(raw().DeclareQueue(q, args), "");
  auto broker = MakeBroker();
  Status s = broker->Declare(Spec(q));
  ASSERT_FALSE(s.ok());
  const std::string& msg = s.error().message();
  EXPECT_NE(msg.find("queue.declare " + q), std::string::npos) << msg;
  EXPECT_NE(msg.find("406 PRECONDITION_FAILED"), std::string::npos) << msg;
  EXPECT_NE(msg.find("x-max-priority"), std::string::npos) << msg;
  EXPECT_FALSE(s.error().retryable());
  // Only the declaring channel died; the broker goes on.
  const std::string other = QueueName("other");
  EXPECT_TRUE(broker->Declare(Spec(other)).ok());
  QueueSpec same = Spec(q);
  same.arguments = args;
  EXPECT_TRUE(broker->Declare(same).ok());
  EXPECT_TRUE(broker->Publish(Message(other, "x")).ok());
}

TEST_F(AmqpBrokerTest, RoundTripPreservesEveryPropertyAndHeaderKind) {
  const std::string q = QueueName();
  auto broker = MakeBroker();
  ASSERT_TRUE(broker->Declare(Spec(q)).ok());

  OutgoingMessage m;
  m.routing_key = q;
  m.body = std::string("{\"args\": [1], \"bin\": \"\x01\x02\"}") + std::string(1, '\0') + "end";
  Properties& p = m.properties;
  p.content_type = "application/json";
  p.content_encoding = "utf-8";
  p.delivery_mode = 2;
  p.priority = 7;
  p.correlation_id = "9d5b7a8e-1f6a-4d62-9a55-3f1f1c3f6b21";
  p.reply_to = "reply-oid";
  p.expiration = "60000";
  p.message_id = "mid-1";
  p.timestamp = 1767225600;
  p.type = "task";
  p.app_id = "celeriac-test";
  Headers& h = p.headers;
  h["lang"] = "py";
  h["task"] = "orchestrator.tasks.execute_crawl_task";
  h["id"] = "9d5b7a8e-1f6a-4d62-9a55-3f1f1c3f6b21";
  h["shadow"] = nullptr;
  h["retries"] = 0;
  h["timelimit"] = Headers::array({nullptr, 300});
  h["big"] = int64_t{1} << 40;
  h["huge"] = std::numeric_limits<int64_t>::max();
  h["neg"] = -5;
  h["negbig"] = -(int64_t{1} << 40);
  h["int32min"] = std::numeric_limits<int32_t>::min();
  h["ignore_result"] = false;
  h["flag"] = true;
  h["ratio"] = 0.25;
  h["stamps"] = Headers::object();
  h["nested"] = Headers::parse(R"({"a":[1,{"b":[null,"c",{"d":-1.5}]}],"e":{}})");
  h["utf8"] = "h\u00e9llo \u65e5\u672c";
  ASSERT_TRUE(broker->Publish(m).ok());

  Collector inbox;
  Result<ConsumerId> c = broker->Consume({q, 4, ""}, inbox.Handler());
  ASSERT_TRUE(c.ok()) << c.error().ToString();
  ASSERT_TRUE(inbox.WaitFor(1));
  Delivery d = inbox.at(0);
  EXPECT_EQ(d.body, m.body);
  EXPECT_EQ(d.queue, q);
  EXPECT_EQ(d.exchange, "");
  EXPECT_EQ(d.routing_key, q);
  EXPECT_FALSE(d.redelivered);
  EXPECT_EQ(d.properties.content_type, p.content_type);
  EXPECT_EQ(d.properties.content_encoding, p.content_encoding);
  EXPECT_EQ(d.properties.delivery_mode, 2);
  EXPECT_EQ(d.properties.priority, 7);
  EXPECT_EQ(d.properties.correlation_id, p.correlation_id);
  EXPECT_EQ(d.properties.reply_to, p.reply_to);
  EXPECT_EQ(d.properties.expiration, p.expiration);
  EXPECT_EQ(d.properties.message_id, p.message_id);
  EXPECT_EQ(d.properties.timestamp, p.timestamp);
  EXPECT_EQ(d.properties.type, p.type);
  EXPECT_EQ(d.properties.app_id, p.app_id);
  // Same order, same kinds, same values.
  EXPECT_EQ(d.properties.headers.dump(), h.dump());
  EXPECT_TRUE(d.properties.headers["ratio"].is_number_float());
  EXPECT_TRUE(d.properties.headers["neg"].is_number_integer());
  EXPECT_TRUE(broker->Ack(*c, d.delivery_tag).ok());

  // Through the bound exchange too, with no optional properties and no headers.
  OutgoingMessage plain;
  plain.exchange = q;
  plain.routing_key = q;
  plain.body = "plain";
  plain.properties.headers = Headers::object();
  plain.properties.delivery_mode = 1;
  ASSERT_TRUE(broker->Publish(plain).ok());
  ASSERT_TRUE(inbox.WaitFor(2));
  Delivery d2 = inbox.at(1);
  EXPECT_EQ(d2.body, "plain");
  EXPECT_EQ(d2.exchange, q);
  EXPECT_EQ(d2.properties.delivery_mode, 1);
  EXPECT_EQ(d2.properties.headers.dump(), "{}");
  EXPECT_FALSE(d2.properties.message_id.has_value());
  EXPECT_FALSE(d2.properties.expiration.has_value());
  EXPECT_TRUE(broker->Ack(*c, d2.delivery_tag).ok());
  EXPECT_FALSE(broker->Ack(*c, d2.delivery_tag).ok());  // twice
}

// ConsumeOptions::raw_headers and on_burst_end, and a handler that swaps a spent Delivery in
// (the Worker's way of recycling buffers): headers arrive in wire form and decode to what was
// sent, every delivery is followed by a burst end before the broker waits again, and nothing
// of the swapped-in Delivery leaks into the next one.
TEST_F(AmqpBrokerTest, RawHeadersBurstEndsAndSwappedDeliveries) {
  constexpr int kCount = 200;
  const std::string q = QueueName();
  auto broker = MakeBroker();
  ASSERT_TRUE(broker->Declare(Spec(q)).ok());
  Headers h = Headers::object();
  h["task"] = "celeriac.noop";
  h["id"] = "9d5b7a8e-1f6a-4d62-9a55-3f1f1c3f6b21";
  h["eta"] = nullptr;
  h["retries"] = 3;
  h["timelimit"] = Headers::array({nullptr, 300});
  h["ratio"] = 0.5;
  std::vector<OutgoingMessage> batch;
  for (int i = 0; i < kCount; ++i) {
    OutgoingMessage m = Message(q, "body-" + std::to_string(i));
    m.properties.headers = h;
    m.properties.headers["n"] = i;
    batch.push_back(std::move(m));
  }
  ASSERT_TRUE(broker->PublishBatch(batch).ok());

  std::mutex mu;
  std::condition_variable cv;
  std::vector<Delivery> got;
  int since_burst_end = 0;
  int bursts = 0;
  bool leaked = false;
  Delivery spent;  // I/O thread only
  ConsumeOptions options(q, 0);  // unlimited: everything is acked at the end
  options.raw_headers = true;
  options.on_burst_end = [&] {
    std::lock_guard lock(mu);
    if (since_burst_end > 0) ++bursts;
    since_burst_end = 0;
    cv.notify_all();
  };
  Result<ConsumerId> c = broker->Consume(options, [&](Delivery&& d) {
    if (d.properties.message_id || !d.properties.headers.empty() || d.body.find("junk") == 0) {
      leaked = true;
    }
    Delivery mine;
    std::swap(mine, d);
    // What the broker gets back to reuse: a spent delivery full of stale values.
    spent.body = "junk, long enough not to fit in a small string buffer";
    spent.properties.message_id = "junk";
    spent.properties.headers = Headers::object({{"junk", 1}});
    spent.raw_headers = "junk";
    std::swap(d, spent);
    std::lock_guard lock(mu);
    got.push_back(std::move(mine));
    ++since_burst_end;
  });
  ASSERT_TRUE(c.ok()) << c.error().ToString();
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(20), [&] {
      return static_cast<int>(got.size()) == kCount && since_burst_end == 0;
    })) << got.size() << " of " << kCount << " delivered, " << since_burst_end
        << " not followed by a burst end";
  }
  std::lock_guard lock(mu);
  EXPECT_FALSE(leaked);
  EXPECT_GE(bursts, 1);
  EXPECT_LE(bursts, kCount);
  for (int i = 0; i < kCount; ++i) {
    Delivery& d = got[static_cast<size_t>(i)];
    EXPECT_EQ(d.body, "body-" + std::to_string(i));
    EXPECT_TRUE(d.properties.headers.empty());
    ASSERT_FALSE(d.raw_headers.empty());
    ASSERT_TRUE(DecodeRawHeaders(d).ok());
    EXPECT_TRUE(d.raw_headers.empty());
    EXPECT_EQ(d.properties.headers.dump(), batch[static_cast<size_t>(i)].properties.headers.dump());
    EXPECT_TRUE(broker->Ack(*c, d.delivery_tag).ok());
  }
}

// celery#7718: with prefetch 1 a consumer must drain the queue, acking each as it goes.
void DrainWithPrefetchOne(testing::RawAmqp& raw, AmqpBroker& broker, const std::string& q,
                          bool ack_on_other_thread) {
  constexpr int kCount = 2000;
  ASSERT_TRUE(broker.Declare(Spec(q)).ok());
  std::vector<OutgoingMessage> batch;
  for (int i = 0; i < kCount; ++i) batch.push_back(Message(q, std::to_string(i)));
  ASSERT_TRUE(broker.PublishBatch(batch).ok());

  std::atomic<ConsumerId> id{0};
  std::atomic<int> in_flight{0};
  std::atomic<int> max_in_flight{0};
  std::mutex mu;
  std::condition_variable cv;
  std::deque<uint64_t> to_ack;
  bool stop = false;
  Collector inbox([&](const Delivery& d) {
    const int now = ++in_flight;
    int seen = max_in_flight.load();
    while (now > seen && !max_in_flight.compare_exchange_weak(seen, now)) {
    }
    if (ack_on_other_thread) {
      std::lock_guard lock(mu);
      to_ack.push_back(d.delivery_tag);
      cv.notify_all();
    } else {
      --in_flight;
      EXPECT_TRUE(broker.Ack(id.load(), d.delivery_tag).ok());
    }
  });
  std::thread acker([&] {
    std::unique_lock lock(mu);
    for (;;) {
      cv.wait(lock, [&] { return stop || !to_ack.empty(); });
      if (to_ack.empty()) return;
      const uint64_t tag = to_ack.front();
      to_ack.pop_front();
      lock.unlock();
      --in_flight;
      EXPECT_TRUE(broker.Ack(id.load(), tag).ok());
      lock.lock();
    }
  });
  Result<ConsumerId> c = broker.Consume({q, 1, ""}, [&, h = inbox.Handler()](Delivery&& d) mutable {
    while (id.load() == 0) std::this_thread::yield();  // Consume() returns right after consume-ok
    h(std::move(d));
  });
  if (c.ok()) id = *c;
  const bool drained = c.ok() && inbox.WaitFor(kCount, 60s);
  {
    std::lock_guard lock(mu);
    stop = true;
    cv.notify_all();
  }
  acker.join();
  ASSERT_TRUE(c.ok()) << c.error().ToString();
  ASSERT_TRUE(drained) << "stalled after " << inbox.size() << " of " << kCount;
  EXPECT_LE(max_in_flight.load(), 1);
  std::set<std::string> bodies;
  for (const Delivery& d : inbox.all()) bodies.insert(d.body);
  EXPECT_EQ(bodies.size(), static_cast<size_t>(kCount));
  EXPECT_TRUE(Eventually([&] { return raw.MessageCount(q) == 0; }));
}

TEST_F(AmqpBrokerTest, PrefetchOneDrains2000MessagesAckedInTheHandler) {
  auto broker = MakeBroker();
  DrainWithPrefetchOne(raw(), *broker, QueueName(), /*ack_on_other_thread=*/false);
}

TEST_F(AmqpBrokerTest, PrefetchOneDrains2000MessagesAckedFromAnotherThread) {
  auto broker = MakeBroker();
  DrainWithPrefetchOne(raw(), *broker, QueueName(), /*ack_on_other_thread=*/true);
}

TEST_F(AmqpBrokerTest, UnackedDeliveriesAreRedeliveredAfterClose) {
  const std::string q = QueueName();
  auto first = MakeBroker();
  ASSERT_TRUE(first->Declare(Spec(q)).ok());
  for (const char* b : {"a", "b", "c"}) ASSERT_TRUE(first->Publish(Message(q, b)).ok());
  Collector held;
  ASSERT_TRUE(first->Consume({q, 5, ""}, held.Handler()).ok());
  ASSERT_TRUE(held.WaitFor(3));
  for (const Delivery& d : held.all()) EXPECT_FALSE(d.redelivered);
  first->Close();
  first->Close();  // twice is fine

  auto second = MakeBroker();
  Collector again;
  Result<ConsumerId> c = second->Consume({q, 5, ""}, again.Handler());
  ASSERT_TRUE(c.ok()) << c.error().ToString();
  ASSERT_TRUE(again.WaitFor(3));
  std::set<std::string> bodies;
  for (const Delivery& d : again.all()) {
    EXPECT_TRUE(d.redelivered) << d.body;
    bodies.insert(d.body);
    EXPECT_TRUE(second->Ack(*c, d.delivery_tag).ok());
  }
  EXPECT_EQ(bodies, (std::set<std::string>{"a", "b", "c"}));
}

TEST_F(AmqpBrokerTest, RejectWithoutRequeueDropsAndWithRequeueRedelivers) {
  const std::string q = QueueName();
  auto broker = MakeBroker();
  ASSERT_TRUE(broker->Declare(Spec(q)).ok());
  ASSERT_TRUE(broker->Publish(Message(q, "drop-me")).ok());
  ASSERT_TRUE(broker->Publish(Message(q, "requeue-me")).ok());
  Collector inbox;
  Result<ConsumerId> c = broker->Consume({q, 1, ""}, inbox.Handler());
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(inbox.WaitFor(1));
  EXPECT_EQ(inbox.at(0).body, "drop-me");
  ASSERT_TRUE(broker->Reject(*c, inbox.at(0).delivery_tag, /*requeue=*/false).ok());
  ASSERT_TRUE(inbox.WaitFor(2));
  EXPECT_EQ(inbox.at(1).body, "requeue-me");
  ASSERT_TRUE(broker->Reject(*c, inbox.at(1).delivery_tag, /*requeue=*/true).ok());
  ASSERT_TRUE(inbox.WaitFor(3));
  EXPECT_EQ(inbox.at(2).body, "requeue-me");
  EXPECT_TRUE(inbox.at(2).redelivered);
  EXPECT_FALSE(broker->Ack(*c, inbox.at(1).delivery_tag).ok());  // already rejected
  ASSERT_TRUE(broker->Ack(*c, inbox.at(2).delivery_tag).ok());
  ASSERT_TRUE(broker->Cancel(*c).ok());
  EXPECT_TRUE(Eventually([&] { return raw().MessageCount(q) == 0; }));
  EXPECT_EQ(inbox.size(), 3u);
}

TEST_F(AmqpBrokerTest, ReconnectsResumesAndRejectsAcksFromTheDeadConnection) {
  const std::string q = QueueName();
  auto broker = MakeBroker();
  ASSERT_TRUE(broker->Declare(Spec(q)).ok());
  std::atomic<ConsumerId> id{0};
  std::mutex acked_mu;
  std::set<std::string> acked;
  // Acks everything but the message called "hold", which stays unacked across the reconnect.
  Collector inbox([&](const Delivery& d) {
    if (d.body == "hold") return;
    if (broker->Ack(id.load(), d.delivery_tag).ok()) {
      std::lock_guard lock(acked_mu);
      acked.insert(d.body);
    }
  });
  Result<ConsumerId> c = broker->Consume({q, 10, ""}, inbox.Handler());
  ASSERT_TRUE(c.ok()) << c.error().ToString();
  id = *c;
  ASSERT_TRUE(broker->Publish(Message(q, "hold")).ok());
  std::vector<OutgoingMessage> before;
  for (int i = 0; i < 50; ++i) before.push_back(Message(q, "before-" + std::to_string(i)));
  ASSERT_TRUE(broker->PublishBatch(before).ok());
  ASSERT_TRUE(inbox.WaitFor(51));
  const uint64_t old_tag = inbox.at(0).delivery_tag;
  ASSERT_EQ(inbox.at(0).body, "hold");
  // Every ack has reached the server: only "hold" is left, unacked.
  ASSERT_TRUE(Eventually([&] {
    testing::CommandResult r = Rabbitmqctl("-q list_queues --no-table-headers name messages");
    return r.output.find(q + "\t1\n") != std::string::npos;
  }));
  const uint64_t generation = broker->connection_generation();

  ASSERT_EQ(CloseConnectionsNamed(broker->consumer_connection_name()), 1);
  ASSERT_TRUE(Eventually([&] { return broker->connection_generation() > generation; }));
  // "hold" comes back (redelivered) on the new connection.
  ASSERT_TRUE(inbox.WaitFor(52));
  const Delivery back = inbox.at(51);
  EXPECT_EQ(back.body, "hold");
  EXPECT_TRUE(back.redelivered);
  Status stale = broker->Ack(*c, old_tag);
  ASSERT_FALSE(stale.ok());
  EXPECT_FALSE(stale.error().retryable());
  EXPECT_TRUE(broker->Ack(*c, back.delivery_tag).ok());

  std::vector<OutgoingMessage> after;
  for (int i = 0; i < 50; ++i) after.push_back(Message(q, "after-" + std::to_string(i)));
  ASSERT_TRUE(broker->PublishBatch(after).ok());
  ASSERT_TRUE(inbox.WaitFor(102)) << inbox.size();
  std::this_thread::sleep_for(200ms);  // nothing else may arrive
  std::multiset<std::string> seen;
  for (const Delivery& d : inbox.all()) seen.insert(d.body);
  EXPECT_EQ(inbox.size(), 102u);
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(seen.count("before-" + std::to_string(i)), 1u);
    EXPECT_EQ(seen.count("after-" + std::to_string(i)), 1u);
  }
  EXPECT_TRUE(Eventually([&] { return raw().MessageCount(q) == 0; }));
}

// Acks from several threads at once, some while the I/O thread waits in poll() (the acking
// thread then sends basic.ack itself), some while it reads, across two server-side closes of the
// consumer connection: every message ends acked, none is acked twice (a second basic.ack of a
// tag would close the channel and redeliver its unacked messages), and only what was unacked at
// a close comes back.
TEST_F(AmqpBrokerTest, AcksFromManyThreadsAcrossReconnectsLoseNothingAndDuplicateNothing) {
  constexpr int kCount = 2000;
  constexpr int kAckers = 4;
  constexpr uint16_t kPrefetch = 8;
  const std::string q = QueueName();
  auto broker = MakeBroker();
  ASSERT_TRUE(broker->Declare(Spec(q)).ok());
  std::vector<OutgoingMessage> batch;
  for (int i = 0; i < kCount; ++i) batch.push_back(Message(q, std::to_string(i)));
  ASSERT_TRUE(broker->PublishBatch(batch).ok());

  struct Seen {
    std::string body;
    uint64_t tag;
    bool redelivered;
  };
  std::atomic<ConsumerId> id{0};
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Seen> to_ack;
  std::vector<Seen> seen;
  bool gate_open = true;  // ackers hold what they have while closed
  bool stop = false;
  int slow_us = 0;
  int acked = 0;
  int stale = 0;
  int other_errors = 0;
  std::vector<std::thread> ackers;
  for (int t = 0; t < kAckers; ++t) {
    ackers.emplace_back([&] {
      std::unique_lock lock(mu);
      for (;;) {
        cv.wait(lock, [&] { return stop || (gate_open && !to_ack.empty()); });
        if (stop) return;
        const Seen d = to_ack.front();
        to_ack.pop_front();
        const int pause = slow_us;
        lock.unlock();
        if (pause > 0) std::this_thread::sleep_for(std::chrono::microseconds(pause));
        Status s = broker->Ack(id.load(), d.tag);
        lock.lock();
        if (s.ok()) {
          ++acked;
        } else if (!s.error().retryable() && s.error().code() == ErrorCode::kNotFound) {
          ++stale;
        } else {
          ++other_errors;
        }
        cv.notify_all();
      }
    });
  }
  Result<ConsumerId> c = broker->Consume({q, kPrefetch, ""}, [&](Delivery&& d) {
    while (id.load() == 0) std::this_thread::yield();  // Consume() returns right after consume-ok
    std::lock_guard lock(mu);
    seen.push_back({d.body, d.delivery_tag, d.redelivered});
    to_ack.push_back(seen.back());
    cv.notify_all();
  });
  auto wait_until = [&](const std::function<bool()>& pred) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, 30s, pred);
  };
  auto reconnect = [&] {
    const uint64_t generation = broker->connection_generation();
    EXPECT_EQ(CloseConnectionsNamed(broker->consumer_connection_name()), 1);
    EXPECT_TRUE(Eventually([&] { return broker->connection_generation() > generation; }));
  };
  bool drained = false;
  if (c.ok()) {
    id = *c;
    // First close with the whole prefetch window held unacked; the held acks then go stale.
    EXPECT_TRUE(wait_until([&] { return acked >= kCount / 3; }));
    {
      std::lock_guard lock(mu);
      gate_open = false;
    }
    EXPECT_TRUE(wait_until([&] { return seen.size() - static_cast<size_t>(acked) >= kPrefetch; }));
    reconnect();
    {
      std::lock_guard lock(mu);
      gate_open = true;
      slow_us = 2000;  // so that the second close lands while acks are in flight
      cv.notify_all();
    }
    reconnect();
    {
      std::lock_guard lock(mu);
      slow_us = 0;
      cv.notify_all();
    }
    drained = Eventually(
        [&] {
          testing::CommandResult r = Rabbitmqctl("-q list_queues --no-table-headers name messages");
          return r.output.find(q + "\t0\n") != std::string::npos;
        },
        60s);
    EXPECT_TRUE(wait_until([&] { return static_cast<size_t>(acked + stale + other_errors) == seen.size(); }));
  }
  {
    std::lock_guard lock(mu);
    stop = true;
    cv.notify_all();
  }
  for (std::thread& t : ackers) t.join();
  ASSERT_TRUE(c.ok()) << c.error().ToString();
  ASSERT_TRUE(drained) << "messages left (ready or unacked) after " << acked << " acks";

  std::map<std::string, int> first_deliveries;
  std::set<std::string> bodies;
  size_t redelivered = 0;
  for (const Seen& d : seen) {
    bodies.insert(d.body);
    if (d.redelivered) {
      ++redelivered;
    } else {
      ++first_deliveries[d.body];
    }
  }
  EXPECT_EQ(bodies.size(), static_cast<size_t>(kCount));
  for (const auto& [body, n] : first_deliveries) EXPECT_EQ(n, 1) << body;
  // Only the window unacked at each close comes back.
  EXPECT_GE(redelivered, static_cast<size_t>(kPrefetch));
  EXPECT_LE(redelivered, 2u * kPrefetch);
  EXPECT_EQ(static_cast<size_t>(acked + stale), seen.size());
  EXPECT_GE(stale, static_cast<int>(kPrefetch));
  EXPECT_LE(stale, 2 * static_cast<int>(kPrefetch));
  EXPECT_EQ(other_errors, 0);
}

TEST_F(AmqpBrokerTest, ConsumerComesBackWhenItsQueueIsDeletedUnderIt) {
  const std::string q = QueueName();
  auto broker = MakeBroker();
  ASSERT_TRUE(broker->Declare(Spec(q)).ok());
  std::atomic<ConsumerId> id{0};
  Collector inbox([&](const Delivery& d) { EXPECT_TRUE(broker->Ack(id.load(), d.delivery_tag).ok()); });
  Result<ConsumerId> c = broker->Consume({q, 4, ""}, inbox.Handler());
  ASSERT_TRUE(c.ok());
  id = *c;
  ASSERT_TRUE(broker->Publish(Message(q, "before")).ok());
  ASSERT_TRUE(inbox.WaitFor(1));
  raw().DeleteQueue(q);  // the server cancels our consumer (consumer_cancel_notify)
  // The broker declares the queue again and re-subscribes; a message published then arrives.
  ASSERT_TRUE(Eventually([&] { return raw().MessageCount(q) >= 0; }));
  ASSERT_TRUE(Eventually([&] {
    if (!broker->Publish(Message(q, "after")).ok()) return false;
    return inbox.WaitFor(2, 300ms);
  }));
  EXPECT_EQ(inbox.at(1).body, "after");
  EXPECT_EQ(broker->connection_generation(), 1u);  // the connection itself stayed up
}

TEST_F(AmqpBrokerTest, HeartbeatsKeepIdleConnectionsAlive) {
  const std::string q = QueueName();
  AmqpBrokerOptions options = Options();
  options.heartbeat = 1s;  // the server drops a peer silent for two intervals
  auto broker = MakeBroker(options);
  ASSERT_TRUE(broker->Declare(Spec(q)).ok());
  ASSERT_TRUE(broker->Publish(Message(q, "1")).ok());
  Collector inbox;
  Result<ConsumerId> c = broker->Consume({q, 4, ""}, inbox.Handler());
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(inbox.WaitFor(1));
  const std::vector<std::string> publisher = ConnectionPids(broker->publisher_connection_name());
  ASSERT_EQ(publisher.size(), 1u);
  std::this_thread::sleep_for(3500ms);  // idle on both connections
  EXPECT_EQ(ConnectionPids(broker->publisher_connection_name()), publisher);
  ASSERT_TRUE(broker->Publish(Message(q, "2")).ok());
  ASSERT_TRUE(inbox.WaitFor(2));
  EXPECT_EQ(broker->connection_generation(), 1u);
  EXPECT_EQ(ConnectionPids(broker->publisher_connection_name()), publisher);
  EXPECT_TRUE(broker->Ack(*c, inbox.at(0).delivery_tag).ok());
  EXPECT_TRUE(broker->Ack(*c, inbox.at(1).delivery_tag).ok());
}

TEST_F(AmqpBrokerTest, PublisherReconnectsAfterItsConnectionIsClosed) {
  const std::string q = QueueName();
  auto broker = MakeBroker();
  ASSERT_TRUE(broker->Connect().ok());
  ASSERT_TRUE(broker->Declare(Spec(q)).ok());
  ASSERT_TRUE(broker->Publish(Message(q, "1")).ok());
  ASSERT_EQ(CloseConnectionsNamed(broker->publisher_connection_name()), 1);
  Status s = broker->Publish(Message(q, "2"));
  EXPECT_TRUE(s.ok()) << s.error().ToString();
  ASSERT_TRUE(broker->Publish(Message(q, "3")).ok());
  EXPECT_TRUE(Eventually([&] { return raw().MessageCount(q) >= 3; }));
}

TEST_F(AmqpBrokerTest, PublishBatchOf1000IsConfirmedAndConsumed) {
  const std::string q = QueueName();
  auto broker = MakeBroker();
  ASSERT_TRUE(broker->Declare(Spec(q)).ok());
  std::vector<OutgoingMessage> batch;
  for (int i = 0; i < 1000; ++i) batch.push_back(Message(q, "extract-" + std::to_string(i)));
  ASSERT_TRUE(broker->PublishBatch(batch).ok());
  EXPECT_EQ(raw().MessageCount(q), 1000);  // confirmed means enqueued
  std::atomic<ConsumerId> id{0};
  Collector inbox([&](const Delivery& d) { EXPECT_TRUE(broker->Ack(id.load(), d.delivery_tag).ok()); });
  Result<ConsumerId> c = broker->Consume({q, 100, ""}, [&, h = inbox.Handler()](Delivery&& d) mutable {
    while (id.load() == 0) std::this_thread::yield();  // Consume() returns right after consume-ok
    h(std::move(d));
  });
  ASSERT_TRUE(c.ok());
  id = *c;
  ASSERT_TRUE(inbox.WaitFor(1000));
  std::set<std::string> bodies;
  for (const Delivery& d : inbox.all()) bodies.insert(d.body);
  EXPECT_EQ(bodies.size(), 1000u);
  EXPECT_EQ(inbox.at(0).body, "extract-0");
  EXPECT_EQ(inbox.at(999).body, "extract-999");
  EXPECT_TRUE(Eventually([&] { return raw().MessageCount(q) == 0; }));
}

TEST_F(AmqpBrokerTest, SetPrefetchAppliesAtOnceAndCountsWhatIsUnacked) {
  const std::string q = QueueName();
  auto broker = MakeBroker();
  ASSERT_TRUE(broker->Declare(Spec(q)).ok());
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(broker->Publish(Message(q, std::to_string(i))).ok());
  Collector inbox;
  Result<ConsumerId> c = broker->Consume({q, 1, ""}, inbox.Handler());
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(inbox.WaitFor(1));
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(inbox.size(), 1u);
  ASSERT_TRUE(broker->SetPrefetch(*c, 3).ok());
  ASSERT_TRUE(inbox.WaitFor(3));
  std::this_thread::sleep_for(100ms);
  // Channel-wide: the one still unacked counts against the new limit, so holding messages
  // (ETA tasks) can never make the consumer take more than its prefetch.
  EXPECT_EQ(inbox.size(), 3u);
  ASSERT_TRUE(broker->SetPrefetch(*c, 1).ok());
  EXPECT_TRUE(broker->Ack(*c, inbox.at(0).delivery_tag).ok());
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(inbox.size(), 3u) << "lowered to 1 with 2 unacked: nothing more";
  for (size_t i = 1; i < 3; ++i) EXPECT_TRUE(broker->Ack(*c, inbox.at(i).delivery_tag).ok());
  ASSERT_TRUE(inbox.WaitFor(4));
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(inbox.size(), 4u);
  ASSERT_TRUE(broker->SetPrefetch(*c, 10).ok());
  ASSERT_TRUE(inbox.WaitFor(6));
  for (size_t i = 3; i < 6; ++i) EXPECT_TRUE(broker->Ack(*c, inbox.at(i).delivery_tag).ok());
  EXPECT_TRUE(Eventually([&] { return raw().MessageCount(q) == 0; }));
}

TEST_F(AmqpBrokerTest, LostDeliveriesAreAnnouncedBeforeTheyComeAgain) {
  const std::string q = QueueName();
  auto broker = MakeBroker();
  ASSERT_TRUE(broker->Declare(Spec(q)).ok());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(broker->Publish(Message(q, std::to_string(i))).ok());
  std::mutex mutex;
  std::vector<std::string> events;  // "lost", or "<body> <redelivered>"
  ConsumeOptions consume(q, 10);
  consume.on_deliveries_lost = [&] {
    std::lock_guard lock(mutex);
    events.push_back("lost");
  };
  Result<ConsumerId> c = broker->Consume(consume, [&](Delivery&& d) {
    std::lock_guard lock(mutex);
    events.push_back(d.body + (d.redelivered ? " redelivered" : ""));
  });
  ASSERT_TRUE(c.ok());
  auto count = [&] {
    std::lock_guard lock(mutex);
    return events.size();
  };
  ASSERT_TRUE(Eventually([&] { return count() == 3; }));
  ASSERT_EQ(CloseConnectionsNamed(broker->consumer_connection_name()), 1);
  ASSERT_TRUE(Eventually([&] { return count() == 7; }, 20s));
  std::lock_guard lock(mutex);
  EXPECT_EQ(events[3], "lost");
  for (size_t i = 4; i < 7; ++i)
    EXPECT_NE(events[i].find(" redelivered"), std::string::npos) << events[i];
}

TEST_F(AmqpBrokerTest, CancelStopsDeliveriesAndUnackedOnesCanStillBeAcked) {
  const std::string q = QueueName();
  auto broker = MakeBroker();
  ASSERT_TRUE(broker->Declare(Spec(q)).ok());
  ASSERT_TRUE(broker->Publish(Message(q, "1")).ok());
  Collector inbox;
  Result<ConsumerId> c = broker->Consume({q, 1, ""}, inbox.Handler());
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(inbox.WaitFor(1));
  ASSERT_TRUE(broker->Cancel(*c).ok());
  ASSERT_TRUE(broker->Publish(Message(q, "2")).ok());
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(inbox.size(), 1u);
  EXPECT_TRUE(broker->Ack(*c, inbox.at(0).delivery_tag).ok());
  EXPECT_TRUE(Eventually([&] { return raw().MessageCount(q) == 1; }));
  EXPECT_FALSE(broker->Cancel(*c).ok());
}

TEST_F(AmqpBrokerTest, ConsumeOfAMissingQueueAndPublishToAMissingExchangeFailClearly) {
  auto broker = MakeBroker();
  const std::string missing = QueueName("missing");
  Collector inbox;
  Result<ConsumerId> c = broker->Consume({missing, 1, ""}, inbox.Handler());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(c.error().message().find("404"), std::string::npos) << c.error().message();

  OutgoingMessage m = Message("x", "x");
  m.exchange = missing;  // no such exchange
  Status s = broker->Publish(m);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(s.error().message().find("404"), std::string::npos) << s.error().message();
  // The publisher recovers.
  const std::string q = QueueName();
  ASSERT_TRUE(broker->Declare(Spec(q)).ok());
  EXPECT_TRUE(broker->Publish(Message(q, "ok")).ok());
}

TEST_F(AmqpBrokerTest, PublishToAQueueThatDoesNotExistIsAnErrorNotASilentDrop) {
  auto broker = MakeBroker();
  const std::string q = QueueName();
  const std::string missing = QueueName("missing");
  ASSERT_TRUE(broker->Declare(Spec(q)).ok());

  Status lost = broker->Publish(Message(missing, "lost"));
  ASSERT_FALSE(lost.ok());
  EXPECT_EQ(lost.error().code(), ErrorCode::kNotFound);
  EXPECT_FALSE(lost.error().retryable());
  EXPECT_NE(lost.error().message().find("routing key '" + missing + "'"), std::string::npos)
      << lost.error().message();
  EXPECT_NE(lost.error().message().find("NO_ROUTE"), std::string::npos) << lost.error().message();

  Status delivered = broker->Publish(Message(q, "kept"));
  EXPECT_TRUE(delivered.ok()) << delivered.error().ToString();

  // A batch: the whole call fails, the routable messages were delivered all the same.
  Status batch = broker->PublishBatch(
      {Message(q, "b1"), Message(missing, "b2"), Message(q, "b3"), Message(missing, "b4")});
  ASSERT_FALSE(batch.ok());
  EXPECT_EQ(batch.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(batch.error().message().find("2 of 4"), std::string::npos) << batch.error().message();
  EXPECT_EQ(raw().MessageCount(q), 3);

  // A returned body larger than a frame is read whole; the publisher carries on afterwards.
  OutgoingMessage large = Message(missing, "large");
  large.body = std::string(300'000, 'x');
  Status big = broker->Publish(large);
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.error().code(), ErrorCode::kNotFound);
  ASSERT_TRUE(broker->PublishBatch({Message(q, "after1"), Message(q, "after2")}).ok());
  EXPECT_EQ(raw().MessageCount(q), 5);
}

TEST_F(AmqpBrokerTest, ReturnedMessagesFailTheirOwnCallsWhenThreadsShareThePublisher) {
  auto broker = MakeBroker();
  const std::string q = QueueName();
  const std::string missing = QueueName("missing");
  ASSERT_TRUE(broker->Declare(Spec(q)).ok());
  constexpr int kThreads = 4;
  constexpr int kEach = 40;
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        const bool routable = (i + t) % 2 == 0;
        const std::string body = std::to_string(t) + "-" + std::to_string(i);
        Status s = broker->Publish(Message(routable ? q : missing, body));
        if (s.ok() != routable || (!s.ok() && s.error().code() != ErrorCode::kNotFound)) ++wrong;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(raw().MessageCount(q), kThreads * kEach / 2);
}

TEST_F(AmqpBrokerTest, UnreachableBrokerIsARetryableErrorInBoundedTime) {
  AmqpBrokerOptions options = Options();
  options.url = "amqp://guest:guest@127.0.0.1:1//";
  options.publish_timeout = 1s;
  options.rpc_timeout = 1s;
  auto broker = MakeBroker(options);
  const auto start = Clock::now();
  Status connect = broker->Connect();
  ASSERT_FALSE(connect.ok());
  EXPECT_EQ(connect.error().code(), ErrorCode::kUnavailable);
  EXPECT_TRUE(connect.error().retryable());
  Status publish = broker->Publish(Message("q", "x"));
  ASSERT_FALSE(publish.ok());
  EXPECT_TRUE(publish.error().retryable());
  Status declare = broker->Declare(Spec("q"));
  ASSERT_FALSE(declare.ok());
  EXPECT_TRUE(declare.error().retryable());
  EXPECT_LT(Clock::now() - start, 10s);
}

TEST_F(AmqpBrokerTest, WrongPasswordIsNotRetryable) {
  AmqpBrokerOptions options = Options();
  Result<AmqpUrl> url = ParseAmqpUrl(url_);
  ASSERT_TRUE(url.ok());
  options.url = "amqp://" + url->user + ":wrong-password@" + url->host + ":" +
                std::to_string(url->port) + "//";
  auto broker = MakeBroker(options);
  Status s = broker->Connect();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), ErrorCode::kPermissionDenied) << s.error().ToString();
  EXPECT_FALSE(s.error().retryable());
}

}  // namespace
}  // namespace celeriac::broker
