// MemoryBroker: routing, prefetch, ack/reject and close semantics (no network).
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "core/broker/broker_factory.hpp"
#include "core/broker/memory_broker.hpp"

namespace celeriac::broker {
namespace {

using namespace std::chrono_literals;

// Collects deliveries from the dispatch thread; waits with a deadline.
class Inbox {
 public:
  DeliveryHandler Handler() {
    return [this](Delivery&& d) {
      std::lock_guard lock(mu_);
      deliveries_.push_back(std::move(d));
      thread_ = std::this_thread::get_id();
      cv_.notify_all();
    };
  }
  // True once at least `n` deliveries arrived (within 5 s).
  bool WaitFor(size_t n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 5s, [&] { return deliveries_.size() >= n; });
  }
  size_t size() {
    std::lock_guard lock(mu_);
    return deliveries_.size();
  }
  Delivery at(size_t i) {
    std::lock_guard lock(mu_);
    return deliveries_.at(i);
  }
  std::thread::id thread() {
    std::lock_guard lock(mu_);
    return thread_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Delivery> deliveries_;
  std::thread::id thread_;
};

OutgoingMessage Message(const std::string& routing_key, const std::string& body,
                        const std::string& exchange = "") {
  OutgoingMessage m;
  m.exchange = exchange;
  m.routing_key = routing_key;
  m.body = body;
  m.properties.content_type = "application/json";
  m.properties.headers["id"] = body;
  return m;
}

QueueSpec Queue(const std::string& name) {
  QueueSpec spec;
  spec.name = name;
  return spec;
}

// A short pause for "nothing else arrives" checks; the dispatch thread runs in microseconds.
void Settle() { std::this_thread::sleep_for(20ms); }

TEST(MemoryBroker, PublishConsumeRoundTrip) {
  MemoryBroker broker;
  ASSERT_TRUE(broker.Connect().ok());
  ASSERT_TRUE(broker.Declare(Queue("celery")).ok());
  OutgoingMessage m = Message("celery", "hello");
  m.properties.correlation_id = "cid";
  m.properties.reply_to = "rq";
  m.properties.priority = 3;
  m.properties.expiration = "1000";
  ASSERT_TRUE(broker.Publish(m).ok());
  Inbox inbox;
  Result<ConsumerId> c = broker.Consume({"celery", 4, ""}, inbox.Handler());
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(inbox.WaitFor(1));
  Delivery d = inbox.at(0);
  EXPECT_EQ(d.body, "hello");
  EXPECT_EQ(d.queue, "celery");
  EXPECT_EQ(d.routing_key, "celery");
  EXPECT_EQ(d.exchange, "");
  EXPECT_FALSE(d.redelivered);
  EXPECT_EQ(d.properties.correlation_id, "cid");
  EXPECT_EQ(d.properties.reply_to, "rq");
  EXPECT_EQ(d.properties.priority, 3);
  EXPECT_EQ(d.properties.expiration, "1000");
  EXPECT_EQ(d.properties.headers["id"], "hello");
  EXPECT_NE(inbox.thread(), std::this_thread::get_id());
  EXPECT_TRUE(broker.Ack(*c, d.delivery_tag).ok());
  EXPECT_FALSE(broker.Ack(*c, d.delivery_tag).ok());  // twice: unknown tag
  EXPECT_EQ(broker.QueueDepth("celery"), 0u);
}

TEST(MemoryBroker, PrefetchOneHoldsTheSecondMessageUntilTheFirstIsAcked) {
  MemoryBroker broker;
  ASSERT_TRUE(broker.Declare(Queue("q")).ok());
  ASSERT_TRUE(broker.Publish(Message("q", "1")).ok());
  ASSERT_TRUE(broker.Publish(Message("q", "2")).ok());
  Inbox inbox;
  Result<ConsumerId> c = broker.Consume({"q", 1, ""}, inbox.Handler());
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(inbox.WaitFor(1));
  Settle();
  EXPECT_EQ(inbox.size(), 1u);
  EXPECT_EQ(broker.QueueDepth("q"), 1u);
  ASSERT_TRUE(broker.Ack(*c, inbox.at(0).delivery_tag).ok());
  ASSERT_TRUE(inbox.WaitFor(2));
  EXPECT_EQ(inbox.at(1).body, "2");
}

// The memory broker hands deliveries over one at a time: each one is a burst of its own.
TEST(MemoryBroker, EveryDeliveryIsFollowedByItsBurstEnd) {
  MemoryBroker broker;
  ASSERT_TRUE(broker.Declare(Queue("q")).ok());
  for (const char* body : {"1", "2", "3"}) ASSERT_TRUE(broker.Publish(Message("q", body)).ok());
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> events;
  ConsumeOptions options("q", 0);
  options.on_burst_end = [&] {
    std::lock_guard lock(mu);
    events.push_back("end");
    cv.notify_all();
  };
  Result<ConsumerId> c = broker.Consume(options, [&](Delivery&& d) {
    std::lock_guard lock(mu);
    events.push_back(d.body);
  });
  ASSERT_TRUE(c.ok());
  std::unique_lock lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return events.size() >= 6; }));
  EXPECT_EQ(events, (std::vector<std::string>{"1", "end", "2", "end", "3", "end"}));
}

TEST(MemoryBroker, PrefetchZeroIsUnlimitedAndSetPrefetchRaisesTheLimit) {
  MemoryBroker broker;
  ASSERT_TRUE(broker.Declare(Queue("q")).ok());
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(broker.Publish(Message("q", std::to_string(i))).ok());
  Inbox limited;
  Result<ConsumerId> c = broker.Consume({"q", 2, ""}, limited.Handler());
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(limited.WaitFor(2));
  Settle();
  EXPECT_EQ(limited.size(), 2u);
  ASSERT_TRUE(broker.SetPrefetch(*c, 5).ok());
  ASSERT_TRUE(limited.WaitFor(5));
  Settle();
  EXPECT_EQ(limited.size(), 5u);
  ASSERT_TRUE(broker.SetPrefetch(*c, 0).ok());
  ASSERT_TRUE(limited.WaitFor(10));
  for (int i = 0; i < 10; ++i) EXPECT_EQ(limited.at(i).body, std::to_string(i));
}

TEST(MemoryBroker, RejectWithRequeuePutsItBackAtTheHeadRedelivered) {
  MemoryBroker broker;
  ASSERT_TRUE(broker.Declare(Queue("q")).ok());
  ASSERT_TRUE(broker.Publish(Message("q", "first")).ok());
  ASSERT_TRUE(broker.Publish(Message("q", "second")).ok());
  Inbox inbox;
  Result<ConsumerId> c = broker.Consume({"q", 1, ""}, inbox.Handler());
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(inbox.WaitFor(1));
  ASSERT_TRUE(broker.Reject(*c, inbox.at(0).delivery_tag, /*requeue=*/true).ok());
  ASSERT_TRUE(inbox.WaitFor(2));
  EXPECT_EQ(inbox.at(1).body, "first");
  EXPECT_TRUE(inbox.at(1).redelivered);
  EXPECT_NE(inbox.at(1).delivery_tag, inbox.at(0).delivery_tag);
  EXPECT_FALSE(broker.Ack(*c, inbox.at(0).delivery_tag).ok());  // the old tag is gone
}

TEST(MemoryBroker, RejectWithoutRequeueDrops) {
  MemoryBroker broker;
  ASSERT_TRUE(broker.Declare(Queue("q")).ok());
  ASSERT_TRUE(broker.Publish(Message("q", "poison")).ok());
  ASSERT_TRUE(broker.Publish(Message("q", "next")).ok());
  Inbox inbox;
  Result<ConsumerId> c = broker.Consume({"q", 1, ""}, inbox.Handler());
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(inbox.WaitFor(1));
  ASSERT_TRUE(broker.Reject(*c, inbox.at(0).delivery_tag, /*requeue=*/false).ok());
  ASSERT_TRUE(inbox.WaitFor(2));
  EXPECT_EQ(inbox.at(1).body, "next");
  ASSERT_TRUE(broker.Ack(*c, inbox.at(1).delivery_tag).ok());
  Settle();
  EXPECT_EQ(inbox.size(), 2u);
  EXPECT_EQ(broker.QueueDepth("q"), 0u);
}

TEST(MemoryBroker, CloseRequeuesUnackedInOrder) {
  MemoryBroker broker;
  ASSERT_TRUE(broker.Declare(Queue("q")).ok());
  for (const char* b : {"a", "b", "c"}) ASSERT_TRUE(broker.Publish(Message("q", b)).ok());
  Inbox inbox;
  Result<ConsumerId> c = broker.Consume({"q", 2, ""}, inbox.Handler());
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(inbox.WaitFor(2));
  EXPECT_EQ(broker.QueueDepth("q"), 1u);
  broker.Close();
  EXPECT_EQ(broker.QueueDepth("q"), 3u);
  EXPECT_FALSE(broker.Ack(*c, inbox.at(0).delivery_tag).ok());
  EXPECT_FALSE(broker.Publish(Message("q", "late")).ok());
  broker.Close();  // twice is fine
}

TEST(MemoryBroker, CancelStopsDeliveriesButUnackedCanStillBeAcked) {
  MemoryBroker broker;
  ASSERT_TRUE(broker.Declare(Queue("q")).ok());
  ASSERT_TRUE(broker.Publish(Message("q", "1")).ok());
  Inbox inbox;
  Result<ConsumerId> c = broker.Consume({"q", 0, ""}, inbox.Handler());
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(inbox.WaitFor(1));
  ASSERT_TRUE(broker.Cancel(*c).ok());
  ASSERT_TRUE(broker.Publish(Message("q", "2")).ok());
  Settle();
  EXPECT_EQ(inbox.size(), 1u);
  EXPECT_EQ(broker.QueueDepth("q"), 1u);
  EXPECT_TRUE(broker.Ack(*c, inbox.at(0).delivery_tag).ok());
}

TEST(MemoryBroker, RoutesByDefaultExchangeAndByBoundExchange) {
  MemoryBroker broker;
  QueueSpec celery = Queue("celery");
  QueueSpec other = Queue("other");
  other.exchange = "tasks";
  other.routing_key = "work";
  ASSERT_TRUE(broker.Declare(celery).ok());
  ASSERT_TRUE(broker.Declare(other).ok());
  ASSERT_TRUE(broker.Publish(Message("celery", "default")).ok());        // "" + queue name
  ASSERT_TRUE(broker.Publish(Message("celery", "bound", "celery")).ok());  // exchange celery
  ASSERT_TRUE(broker.Publish(Message("work", "work", "tasks")).ok());
  ASSERT_TRUE(broker.Publish(Message("other", "by-name")).ok());
  // Unroutable, by the default exchange or a bound one: an error the caller sees, as AMQP's
  // mandatory publish gives.
  for (const auto& lost : {Message("nowhere", "lost"), Message("celery", "wrong key", "tasks")}) {
    Status st = broker.Publish(lost);
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().code(), ErrorCode::kNotFound);
    EXPECT_FALSE(st.error().retryable());
    EXPECT_NE(st.error().message().find("NO_ROUTE"), std::string::npos) << st.error().message();
    EXPECT_NE(st.error().message().find("'" + lost.routing_key + "'"), std::string::npos)
        << st.error().message();
  }
  EXPECT_EQ(broker.Publish(Message("x", "x", "no-such-exchange")).error().code(),
            ErrorCode::kNotFound);
  EXPECT_EQ(broker.QueueDepth("celery"), 2u);
  EXPECT_EQ(broker.QueueDepth("other"), 2u);
  Inbox inbox;
  ASSERT_TRUE(broker.Consume({"other", 0, ""}, inbox.Handler()).ok());
  ASSERT_TRUE(inbox.WaitFor(2));
  EXPECT_EQ(inbox.at(0).body, "work");
  EXPECT_EQ(inbox.at(0).exchange, "tasks");
  EXPECT_EQ(inbox.at(0).routing_key, "work");
  EXPECT_EQ(inbox.at(1).body, "by-name");
}

TEST(MemoryBroker, BatchWithAnUnroutableMessageFailsButDeliversTheOthers) {
  MemoryBroker broker;
  ASSERT_TRUE(broker.Declare(Queue("celery")).ok());
  Status st = broker.PublishBatch(
      {Message("celery", "first"), Message("nowhere", "lost"), Message("celery", "third")});
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(st.error().message().find("'nowhere'"), std::string::npos) << st.error().message();
  EXPECT_EQ(broker.QueueDepth("celery"), 2u);
  EXPECT_TRUE(broker.PublishBatch({Message("celery", "fourth")}).ok());
  EXPECT_EQ(broker.QueueDepth("celery"), 3u);
}

TEST(MemoryBroker, RedeclareWithOtherArgumentsFailsLike406) {
  MemoryBroker broker;
  ASSERT_TRUE(broker.Declare(Queue("celery")).ok());
  ASSERT_TRUE(broker.Declare(Queue("celery")).ok());
  QueueSpec priority = Queue("celery");
  priority.arguments["x-max-priority"] = 10;
  Status s = broker.Declare(priority);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("406"), std::string::npos) << s.error().message();
  EXPECT_FALSE(s.error().retryable());
  EXPECT_TRUE(broker.Declare(ReplyQueueSpec("reply", std::chrono::hours(24))).ok());
}

TEST(MemoryBroker, ConsumeOfUnknownQueueFails) {
  MemoryBroker broker;
  Inbox inbox;
  EXPECT_EQ(broker.Consume({"missing", 1, ""}, inbox.Handler()).error().code(),
            ErrorCode::kNotFound);
}

TEST(MemoryBroker, TwoConsumersShareAQueue) {
  MemoryBroker broker;
  ASSERT_TRUE(broker.Declare(Queue("q")).ok());
  Inbox a;
  Inbox b;
  ASSERT_TRUE(broker.Consume({"q", 1, ""}, a.Handler()).ok());
  ASSERT_TRUE(broker.Consume({"q", 1, ""}, b.Handler()).ok());
  ASSERT_TRUE(broker.Publish(Message("q", "1")).ok());
  ASSERT_TRUE(broker.Publish(Message("q", "2")).ok());
  ASSERT_TRUE(a.WaitFor(1));
  ASSERT_TRUE(b.WaitFor(1));
  EXPECT_NE(a.at(0).body, b.at(0).body);
}

TEST(MemoryBroker, HandlerMayAckAndPublishFromTheDispatchThread) {
  MemoryBroker broker;
  ASSERT_TRUE(broker.Declare(Queue("in")).ok());
  ASSERT_TRUE(broker.Declare(Queue("out")).ok());
  ConsumerId id = 0;
  std::mutex mu;
  Result<ConsumerId> c = broker.Consume({"in", 1, ""}, [&](Delivery&& d) {
    std::lock_guard lock(mu);
    EXPECT_TRUE(broker.Publish(Message("out", d.body + "!")).ok());
    EXPECT_TRUE(broker.Ack(id, d.delivery_tag).ok());
  });
  ASSERT_TRUE(c.ok());
  {
    std::lock_guard lock(mu);
    id = *c;
  }
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(broker.Publish(Message("in", std::to_string(i))).ok());
  Inbox out;
  ASSERT_TRUE(broker.Consume({"out", 0, ""}, out.Handler()).ok());
  ASSERT_TRUE(out.WaitFor(100));
  EXPECT_EQ(out.at(99).body, "99!");
  EXPECT_EQ(broker.QueueDepth("in"), 0u);
}

TEST(BrokerFactory, ChoosesByScheme) {
  Result<std::unique_ptr<Broker>> memory = MakeBroker("memory://");
  ASSERT_TRUE(memory.ok());
  EXPECT_NE(dynamic_cast<MemoryBroker*>(memory->get()), nullptr);
  Result<std::unique_ptr<Broker>> amqp = MakeBroker("amqp://guest:guest@127.0.0.1:1//");
  ASSERT_TRUE(amqp.ok());  // connects lazily
  Result<std::unique_ptr<Broker>> tls = MakeBroker("amqps://h//");
  ASSERT_FALSE(tls.ok());
  EXPECT_NE(tls.error().message().find("not supported yet"), std::string::npos);
  Result<std::unique_ptr<Broker>> redis = MakeBroker("redis://localhost:6379/0");
  ASSERT_FALSE(redis.ok());
  EXPECT_EQ(redis.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(redis.error().message().find("'redis'"), std::string::npos);
  EXPECT_FALSE(MakeBroker("").ok());
}

}  // namespace
}  // namespace celeriac::broker
