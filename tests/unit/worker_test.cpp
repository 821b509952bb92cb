// The worker against the in-memory broker and fake sinks: results, retries, dead letters, ETA,
// expiry, bad arguments, time limits and warm shutdown, as a Celery user relies on them.

#include <condition_variable>
#include <thread>

#include <gtest/gtest.h>

#include "core/broker/memory_broker.hpp"
#include "core/celery/codec.hpp"
#include "orchestrator/worker/worker.hpp"
#include "schemas/schemas.hpp"
#include "tests/support/fake_sinks.hpp"

namespace celeriac::orchestrator {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::ordered_json;

constexpr const char* kQueue = "celery";
constexpr const char* kReplyQueue = "reply-oid";

class WorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(broker_.Connect().ok());
    ASSERT_TRUE(broker_.Declare(broker::ReplyQueueSpec(kReplyQueue, 60s)).ok());
    auto id = broker_.Consume({kReplyQueue, 0, ""}, [this](broker::Delivery&& d) {
      {
        std::lock_guard lock(mutex_);
        replies_.push_back(json::parse(d.body));
      }
      (void)broker_.Ack(reply_consumer_, d.delivery_tag);
      cv_.notify_all();
    });
    ASSERT_TRUE(id.ok());
    reply_consumer_ = *id;
    RegisterBuiltinTasks(registry_, nullptr);
    options_.queue = kQueue;
    options_.concurrency = 2;
    options_.prefetch_multiplier = 2;
    options_.dead_letter_retry_pause = 20ms;
    options_.shutdown_timeout = 2s;
  }

  void StartWorker() {
    worker_ = std::make_unique<Worker>(broker_, registry_, dead_letters_, &states_,
                                       SystemClock::Instance(), loop_, options_);
    ASSERT_TRUE(worker_->Start().ok());
    loop_thread_ = std::thread([this] { loop_.Run(); });
  }

  void TearDown() override {
    if (worker_) {
      loop_.Post([this] { worker_->BeginShutdown([this] { loop_.Stop(); }); });
      loop_thread_.join();
    }
    broker_.Close();
  }

  celery::TaskMessage Task(const std::string& name, json args = json::array()) {
    auto m = celery::NewTask(name, std::move(args), json::object());
    m.reply_to = kReplyQueue;
    return m;
  }

  void Send(const celery::TaskMessage& m) {
    ASSERT_TRUE(broker_.Publish(celery::EncodeTask(m, kQueue)).ok());
  }

  // Waits for the n-th reply for `id` whose status is final or equal to `status`.
  json WaitReply(const std::string& id, const std::string& status,
                 std::chrono::milliseconds timeout = 5s) {
    std::unique_lock lock(mutex_);
    json found;
    cv_.wait_for(lock, timeout, [&] {
      for (const auto& r : replies_)
        if (r["task_id"] == id && r["status"] == status) {
          found = r;
          return true;
        }
      return false;
    });
    return found;
  }

  std::vector<std::string> Statuses(const std::string& id) {
    std::lock_guard lock(mutex_);
    std::vector<std::string> out;
    for (const auto& r : replies_)
      if (r["task_id"] == id) out.push_back(r["status"]);
    return out;
  }

  template <typename Pred>
  bool Eventually(Pred pred, std::chrono::milliseconds timeout = 5s) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < until) {
      if (pred()) return true;
      std::this_thread::sleep_for(2ms);
    }
    return pred();
  }

  broker::MemoryBroker broker_;
  broker::ConsumerId reply_consumer_ = 0;
  TaskRegistry registry_;
  testing::FakeDeadLetterSink dead_letters_;
  testing::FakeTaskStateSink states_;
  WorkerOptions options_;
  Loop loop_;
  std::unique_ptr<Worker> worker_;
  std::thread loop_thread_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<json> replies_;
};

TEST_F(WorkerTest, RunsATaskAndRepliesWithItsResult) {
  StartWorker();
  auto m = Task("celeriac.echo", json::array({1, "a"}));
  m.kwargs = {{"k", true}};
  Send(m);
  const auto reply = WaitReply(m.id, "SUCCESS");
  ASSERT_FALSE(reply.is_null()) << "no SUCCESS reply";
  EXPECT_EQ(reply["result"], json::array({json::array({1, "a"}), json{{"k", true}}}));
  EXPECT_TRUE(Eventually([&] { return broker_.QueueDepth(kQueue) == 0; }));
  EXPECT_TRUE(dead_letters_.letters().empty());
  EXPECT_TRUE(Eventually([&] { return worker_->stats().succeeded == 1; }));
  // The state is recorded after the reply is sent: wait for it.
  ASSERT_TRUE(Eventually([&] { return states_.records().size() == 1; }));
  const auto records = states_.records();
  EXPECT_EQ(records[0].state, celery::State::kSuccess);
}

TEST_F(WorkerTest, UnknownTaskFailsWithNotRegisteredAndIsDeadLettered) {
  StartWorker();
  auto m = Task("no.such.task");
  Send(m);
  const auto reply = WaitReply(m.id, "FAILURE");
  ASSERT_FALSE(reply.is_null());
  EXPECT_EQ(reply["result"]["exc_type"], "NotRegistered");
  EXPECT_EQ(reply["result"]["exc_module"], "celery.exceptions");
  ASSERT_TRUE(Eventually([&] { return dead_letters_.letters().size() == 1; }));
  const auto letter = dead_letters_.letters()[0];
  EXPECT_EQ(letter.error_class, "NotRegistered");
  EXPECT_EQ(letter.task_id, m.id);
  EXPECT_EQ(letter.queue, kQueue);
  EXPECT_EQ(letter.properties.headers["task"], "no.such.task");
  EXPECT_EQ(letter.body, celery::EncodeTask(m, kQueue).body) << "the original message, whole";
}

TEST_F(WorkerTest, UndecodableBodyIsDeadLetteredAndTheWorkerGoesOn) {
  StartWorker();
  broker::OutgoingMessage bad;
  bad.routing_key = kQueue;
  bad.properties.content_type = "application/json";
  bad.properties.headers = {{"task", "celeriac.ping"}, {"id", "bad-1"}};
  bad.body = "[[1], {";
  ASSERT_TRUE(broker_.Publish(bad).ok());
  auto ok = Task("celeriac.ping");
  Send(ok);
  ASSERT_FALSE(WaitReply(ok.id, "SUCCESS").is_null()) << "the worker must keep running";
  ASSERT_TRUE(Eventually([&] { return dead_letters_.letters().size() == 1; }));
  EXPECT_EQ(dead_letters_.letters()[0].error_class, "DecodeError");
  EXPECT_EQ(dead_letters_.letters()[0].body, "[[1], {");
  EXPECT_TRUE(Eventually([&] { return broker_.QueueDepth(kQueue) == 0; }));
}

TEST_F(WorkerTest, NonRetryableErrorFailsAtOnceWithTheCppMessage) {
  StartWorker();
  auto m = Task("celeriac.fail", json::array({"disk on fire"}));
  Send(m);
  const auto reply = WaitReply(m.id, "FAILURE");
  ASSERT_FALSE(reply.is_null());
  EXPECT_EQ(reply["result"]["exc_message"], json::array({"disk on fire"}));
  ASSERT_TRUE(Eventually([&] { return dead_letters_.letters().size() == 1; }));
  EXPECT_EQ(dead_letters_.letters()[0].attempts, 1);
  EXPECT_EQ(Statuses(m.id), std::vector<std::string>{"FAILURE"});
}

TEST_F(WorkerTest, RetriesRepublishTheSameIdUntilSuccess) {
  StartWorker();
  auto m = Task("celeriac.flaky", json::array({2}));
  Send(m);
  const auto reply = WaitReply(m.id, "SUCCESS");
  ASSERT_FALSE(reply.is_null());
  EXPECT_EQ(reply["result"], 2) << "succeeded on its second retry";
  EXPECT_EQ(Statuses(m.id), (std::vector<std::string>{"RETRY", "RETRY", "SUCCESS"}));
  EXPECT_TRUE(dead_letters_.letters().empty());
  EXPECT_EQ(worker_->stats().retried, 2u);
}

TEST_F(WorkerTest, ExhaustedRetriesEndAsFailureAndDeadLetter) {
  TaskOptions opts;
  opts.max_retries = 2;
  registry_.Register("test.always_down", [](TaskContext& ctx) -> TaskOutcome {
    return ctx.Retry(Error(ErrorCode::kUnavailable, "still down"), 10ms);
  }, opts);
  StartWorker();
  auto m = Task("test.always_down");
  Send(m);
  ASSERT_FALSE(WaitReply(m.id, "FAILURE").is_null());
  EXPECT_EQ(Statuses(m.id), (std::vector<std::string>{"RETRY", "RETRY", "FAILURE"}));
  ASSERT_TRUE(Eventually([&] { return dead_letters_.letters().size() == 1; }));
  EXPECT_EQ(dead_letters_.letters()[0].attempts, 3);
  EXPECT_EQ(dead_letters_.letters()[0].properties.headers["retries"], 2);
}

TEST_F(WorkerTest, RetryableErrorsUseTheBackoffPolicy) {
  TaskOptions opts;
  opts.max_retries = 1;
  opts.retry_backoff = BackoffPolicy{10ms, 20ms, 2.0, true};
  registry_.Register("test.down_once", [](TaskContext& ctx) -> TaskOutcome {
    if (ctx.request().retries == 0) return TaskError::FromError(Error(ErrorCode::kTimeout, "slow"));
    return Json("ok");
  }, opts);
  StartWorker();
  auto m = Task("test.down_once");
  Send(m);
  ASSERT_FALSE(WaitReply(m.id, "SUCCESS", 2s).is_null()) << "backoff, not the 180 s default";
}

TEST_F(WorkerTest, EtaMessagesWaitUnackedUntilDue) {
  StartWorker();
  auto later = Task("celeriac.ping");
  later.eta_time = std::chrono::system_clock::now() + 300ms;
  Send(later);
  auto now = Task("celeriac.ping");
  Send(now);
  ASSERT_FALSE(WaitReply(now.id, "SUCCESS").is_null()) << "a held ETA task must not block others";
  EXPECT_TRUE(Statuses(later.id).empty()) << "ran before its eta";
  EXPECT_EQ(worker_->stats().held_eta, 1);
  ASSERT_FALSE(WaitReply(later.id, "SUCCESS").is_null());
  EXPECT_EQ(worker_->stats().held_eta, 0);
}

TEST_F(WorkerTest, ExpiredTasksAreRevokedNotRun) {
  StartWorker();
  auto m = Task("celeriac.fail");
  m.expires_time = std::chrono::system_clock::now() - 1s;
  Send(m);
  const auto reply = WaitReply(m.id, "REVOKED");
  ASSERT_FALSE(reply.is_null());
  EXPECT_EQ(reply["result"]["exc_type"], "TaskRevokedError");
  EXPECT_TRUE(dead_letters_.letters().empty());
}

TEST_F(WorkerTest, WrongArgumentsFailWithTypeError) {
  options_.body_schema = [](const std::string& task) -> std::shared_ptr<const schema::SchemaValidator> {
    auto v = schemas::Get("tasks/" + task + ".body");
    return v ? v.value() : nullptr;
  };
  registry_.Register("orchestrator.tasks.execute_crawl_task",
                     [](TaskContext&) -> TaskOutcome { return Json("ran"); });
  StartWorker();
  auto bad = Task("orchestrator.tasks.execute_crawl_task", json::array({"42"}));
  Send(bad);
  const auto reply = WaitReply(bad.id, "FAILURE");
  ASSERT_FALSE(reply.is_null());
  EXPECT_EQ(reply["result"]["exc_type"], "TypeError");
  EXPECT_NE(reply["result"]["exc_message"][0].get<std::string>().find("/0/0"), std::string::npos)
      << reply.dump();
  auto good = Task("orchestrator.tasks.execute_crawl_task", json::array({42}));
  Send(good);
  EXPECT_FALSE(WaitReply(good.id, "SUCCESS").is_null());
}

TEST_F(WorkerTest, DeadLetterStoreDownHandsTheMessageBackInsteadOfDroppingIt) {
  TaskOptions late;
  late.acks_late = true;
  registry_.Register("test.fail_late", [](TaskContext&) -> TaskOutcome {
    return TaskError::FromError(Error(ErrorCode::kInvalidArgument, "bad"));
  }, late);
  dead_letters_.FailNext(2);
  StartWorker();
  auto m = Task("test.fail_late");
  Send(m);
  ASSERT_TRUE(Eventually([&] { return dead_letters_.letters().size() == 1; }, 5s));
  ASSERT_FALSE(WaitReply(m.id, "FAILURE").is_null());
  EXPECT_EQ(Statuses(m.id), std::vector<std::string>{"FAILURE"}) << "one final outcome only";
  EXPECT_TRUE(Eventually([&] { return broker_.QueueDepth(kQueue) == 0; }));
}

TEST_F(WorkerTest, PrefetchOneDrainsAFullQueue) {
  options_.concurrency = 1;
  options_.prefetch_multiplier = 1;
  broker::QueueSpec spec;
  spec.name = spec.exchange = spec.routing_key = kQueue;
  ASSERT_TRUE(broker_.Declare(spec).ok());  // as a Celery client does before publishing
  for (int i = 0; i < 500; ++i) {
    auto m = celery::NewTask("celeriac.noop", json::array(), json::object());
    m.ignore_result = true;
    Send(m);
  }
  StartWorker();
  EXPECT_TRUE(Eventually([&] { return worker_->stats().succeeded == 500; }, 10s))
      << worker_->stats().succeeded;
  EXPECT_EQ(broker_.QueueDepth(kQueue), 0u);
}

TEST_F(WorkerTest, HardTimeLimitFailsTheTaskAndKeepsConcurrency) {
  options_.concurrency = 1;
  StartWorker();
  auto slow = Task("celeriac.sleep", json::array({0.6}));
  slow.time_limit = 0.1;
  Send(slow);
  const auto reply = WaitReply(slow.id, "FAILURE", 3s);
  ASSERT_FALSE(reply.is_null());
  EXPECT_EQ(reply["result"]["exc_type"], "TimeLimitExceeded");
  auto next = Task("celeriac.ping");
  Send(next);
  EXPECT_FALSE(WaitReply(next.id, "SUCCESS", 2s).is_null())
      << "a replacement thread must run the next task while the stuck one sleeps";
  EXPECT_EQ(dead_letters_.letters().size(), 1u);
}

TEST_F(WorkerTest, SoftTimeLimitAsksTheTaskToStop) {
  StartWorker();
  auto slow = Task("celeriac.sleep", json::array({5}));
  slow.soft_time_limit = 0.1;
  Send(slow);
  const auto reply = WaitReply(slow.id, "FAILURE", 3s);
  ASSERT_FALSE(reply.is_null());
  EXPECT_NE(reply["result"]["exc_message"].dump().find("SoftTimeLimitExceeded"), std::string::npos);
}

TEST_F(WorkerTest, WarmShutdownFinishesRunningTasksAndHandsBackHeldOnes) {
  StartWorker();
  auto running = Task("celeriac.sleep", json::array({0.3}));
  Send(running);
  auto held = Task("celeriac.ping");
  held.eta_time = std::chrono::system_clock::now() + 60s;
  Send(held);
  ASSERT_TRUE(Eventually([&] { return worker_->stats().active == 1 && worker_->stats().held_eta == 1; }));
  std::atomic<bool> done{false};
  loop_.Post([&] { worker_->BeginShutdown([&] { done = true; loop_.Stop(); }); });
  loop_thread_.join();
  EXPECT_TRUE(done);
  EXPECT_FALSE(WaitReply(running.id, "SUCCESS", 1s).is_null()) << "in-flight task finished";
  EXPECT_EQ(broker_.QueueDepth(kQueue), 1u) << "the held ETA message went back to the queue";
  worker_.reset();
}

}  // namespace
}  // namespace celeriac::orchestrator
