// The worker against the in-memory broker and fake sinks: results, retries, dead letters, ETA,
// expiry, bad arguments, time limits and warm shutdown, as a Celery user relies on them.

#include <atomic>
#include <condition_variable>
#include <future>
#include <limits>
#include <map>
#include <thread>

#include <gtest/gtest.h>

#include "core/broker/memory_broker.hpp"
#include "core/celery/codec.hpp"
#include "core/worker/worker.hpp"
#include "schemas/schemas.hpp"
#include "tests/support/fake_sinks.hpp"

namespace celeriac::worker {
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

// An ack-late task that ran and failed while the dead-letter store is down: its message is kept
// unacked until the letter is written, and the task is not run again (the message used to be
// handed back, and every redelivery ran the task again: the outage test saw a call Discovery
// refused made 22 times during a two-minute Postgres outage).
TEST_F(WorkerTest, DeadLetterStoreDownKeepsTheMessageUntilTheLetterIsWrittenAndRunsTheTaskOnce) {
  TaskOptions late;
  late.acks_late = true;
  std::atomic<int> runs{0};
  registry_.Register("test.fail_late", [&](TaskContext&) -> TaskOutcome {
    ++runs;
    return TaskError::FromError(Error(ErrorCode::kInvalidArgument, "bad"));
  }, late);
  dead_letters_.FailNext(3);
  StartWorker();
  auto m = Task("test.fail_late");
  Send(m);
  ASSERT_FALSE(WaitReply(m.id, "FAILURE").is_null());
  EXPECT_EQ(broker_.Unacked(kQueue), 1u) << "acked before its dead letter was written";
  ASSERT_TRUE(Eventually([&] { return dead_letters_.letters().size() == 1; }, 5s));
  EXPECT_TRUE(Eventually([&] {
    return broker_.QueueDepth(kQueue) == 0 && broker_.Unacked(kQueue) == 0;
  })) << "acked once the letter is written";
  EXPECT_EQ(runs.load(), 1) << "the task ran again while its letter could not be written";
  EXPECT_EQ(Statuses(m.id), std::vector<std::string>{"FAILURE"}) << "one final outcome only";
  EXPECT_EQ(worker_->stats().failed, 1u);
}

// A message whose task never ran (here, an unknown task) still goes back to the broker while
// its letter cannot be written, and is dead-lettered once the store takes it.
TEST_F(WorkerTest, DeadLetterStoreDownHandsBackAMessageWhoseTaskNeverRan) {
  dead_letters_.FailNext(2);
  StartWorker();
  auto m = Task("test.no_such_task");
  Send(m);
  ASSERT_TRUE(Eventually([&] { return dead_letters_.letters().size() == 1; }, 5s));
  EXPECT_EQ(dead_letters_.letters()[0].error_class, "NotRegistered");
  EXPECT_TRUE(Eventually([&] {
    return broker_.QueueDepth(kQueue) == 0 && broker_.Unacked(kQueue) == 0;
  }));
  EXPECT_FALSE(WaitReply(m.id, "FAILURE").is_null());
}

// Postgres down when a task ends (the chaos suite stopped it): the outcome is replied and
// acked, and its state is recorded once the store takes it again, not dropped with a warning
// (task_results then lacked a task that had run, and a redelivery could not see it had).
TEST_F(WorkerTest, AStateTheStoreRefusesIsRecordedOnceItIsBack) {
  TaskOptions late;
  late.acks_late = true;
  registry_.Register("test.ok_late", [](TaskContext&) -> TaskOutcome { return Json("done"); },
                     late);
  states_.FailNext(3);
  StartWorker();
  auto early = Task("celeriac.echo", json::array({1}));
  auto m = Task("test.ok_late");
  Send(early);
  Send(m);
  ASSERT_FALSE(WaitReply(early.id, "SUCCESS").is_null());
  ASSERT_FALSE(WaitReply(m.id, "SUCCESS").is_null());
  EXPECT_TRUE(Eventually([&] {
    return broker_.QueueDepth(kQueue) == 0 && broker_.Unacked(kQueue) == 0;
  })) << "acked without waiting for the store";
  ASSERT_TRUE(Eventually([&] { return states_.records().size() == 2; }, 5s))
      << states_.records().size() << " states recorded";
  EXPECT_EQ(states_.failed(), 3);
  for (const auto& id : {early.id, m.id}) {
    auto stored = states_.Lookup(id);
    ASSERT_TRUE(stored.ok() && stored->has_value()) << id;
    EXPECT_EQ((*stored)->state, celery::State::kSuccess) << id;
  }
  EXPECT_EQ(Statuses(m.id), std::vector<std::string>{"SUCCESS"}) << "run once";
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


// A task whose side effect is counted per task id: "exactly once" is checked by counting what
// ran, not by looking at result rows.
class SideEffects {
 public:
  void Register(TaskRegistry& registry, const std::string& name, TaskOptions options = {},
                std::chrono::milliseconds work = 0ms) {
    registry.Register(name, [this, work](TaskContext& ctx) -> TaskOutcome {
      if (work > 0ms) std::this_thread::sleep_for(work);
      std::lock_guard lock(mutex_);
      ++counts_[ctx.request().id];
      return Json("done");
    }, options);
  }
  int Count(const std::string& id) {
    std::lock_guard lock(mutex_);
    return counts_[id];
  }
  int Total() {
    std::lock_guard lock(mutex_);
    int n = 0;
    for (const auto& [id, c] : counts_) n += c;
    return n;
  }

 private:
  std::mutex mutex_;
  std::map<std::string, int> counts_;
};

TEST_F(WorkerTest, ConnectionLossDropsHeldAndUnstartedJobsSoNothingRunsTwice) {
  SideEffects effects;
  effects.Register(registry_, "test.count", {}, 30ms);
  options_.concurrency = 1;
  options_.prefetch_multiplier = 8;
  StartWorker();
  std::vector<std::string> ids;
  auto held = Task("test.count");
  held.eta_time = std::chrono::system_clock::now() + 400ms;
  Send(held);
  ids.push_back(held.id);
  for (int i = 0; i < 6; ++i) {
    auto m = Task("test.count");
    Send(m);
    ids.push_back(m.id);
  }
  // One runs, the others wait in the pool; the ETA one is held.
  ASSERT_TRUE(Eventually([&] { return worker_->stats().held_eta == 1; }));
  broker_.SimulateConnectionLoss();
  for (const auto& id : ids)
    ASSERT_FALSE(WaitReply(id, "SUCCESS", 5s).is_null()) << id;
  ASSERT_TRUE(Eventually([&] { return broker_.QueueDepth(kQueue) == 0 && broker_.Unacked(kQueue) == 0; }));
  std::this_thread::sleep_for(500ms);  // anything dropped late would have run by now
  for (const auto& id : ids) EXPECT_EQ(effects.Count(id), 1) << id;
  EXPECT_GE(worker_->stats().dropped_on_connection_loss, 1u);
}

TEST_F(WorkerTest, HeldEtaMessagesAreBoundedAndTheLatestGoToADelayQueue) {
  options_.max_held_eta = 3;
  StartWorker();
  std::vector<std::string> later;
  for (int i = 0; i < 8; ++i) {
    auto m = Task("celeriac.ping");
    m.eta_time = std::chrono::system_clock::now() + std::chrono::hours(24) + std::chrono::seconds(i);
    Send(m);
    later.push_back(m.id);
  }
  ASSERT_TRUE(Eventually([&] { return worker_->stats().delayed == 5; }))
      << worker_->stats().delayed;
  EXPECT_EQ(worker_->stats().held_eta, 3);
  // One due soon pushes the latest-due held message out and runs on time.
  auto soon = Task("celeriac.ping");
  soon.eta_time = std::chrono::system_clock::now() + 300ms;
  Send(soon);
  auto now = Task("celeriac.ping");
  Send(now);
  ASSERT_FALSE(WaitReply(now.id, "SUCCESS").is_null()) << "the queue keeps flowing";
  ASSERT_FALSE(WaitReply(soon.id, "SUCCESS", 3s).is_null());
  EXPECT_EQ(worker_->stats().delayed, 6u);
  EXPECT_LE(worker_->stats().held_eta, 3);
  // A day is 2^16 s and more: the delay queue of the longest bucket no longer than the wait.
  EXPECT_EQ(broker_.QueueDepth("celeriac.delay.celery.65536s"), 6u);
  for (const auto& id : later) EXPECT_TRUE(Statuses(id).empty());
}

TEST_F(WorkerTest, ARedeliveryOfARunningAckLateTaskIsAdoptedNotRunAgain) {
  std::mutex gate_mutex;
  std::condition_variable gate_cv;
  bool open = false;
  std::atomic<int> runs{0};
  TaskOptions late;
  late.acks_late = true;
  registry_.Register("test.gated", [&](TaskContext&) -> TaskOutcome {
    ++runs;
    std::unique_lock lock(gate_mutex);
    gate_cv.wait_for(lock, 5s, [&] { return open; });
    return Json("done");
  }, late);
  StartWorker();
  auto m = Task("test.gated");
  Send(m);
  ASSERT_TRUE(Eventually([&] { return runs.load() == 1; }));
  broker_.SimulateConnectionLoss();  // its delivery goes back to the queue and comes again
  ASSERT_TRUE(Eventually([&] { return worker_->stats().deduplicated == 1; }));
  {
    std::lock_guard lock(gate_mutex);
    open = true;
  }
  gate_cv.notify_all();
  ASSERT_FALSE(WaitReply(m.id, "SUCCESS").is_null());
  EXPECT_TRUE(Eventually([&] { return broker_.QueueDepth(kQueue) == 0 && broker_.Unacked(kQueue) == 0; }))
      << "the running task acks the redelivery it adopted";
  EXPECT_EQ(runs.load(), 1);
  EXPECT_EQ(Statuses(m.id), std::vector<std::string>{"SUCCESS"});
}

// A retry published twice (the worker's publisher re-sends a message whose confirm was lost
// when RabbitMQ restarted, and the first send had reached the queue): the two copies, neither
// of them redelivered, arrive together. One runs; the other is settled by it. (Both ran, and
// the outage test counted two calls to Discovery and two SUCCESS replies for one task.)
TEST_F(WorkerTest, TwoCopiesOfARetryArrivingTogetherRunOnce) {
  struct Gate {
    std::mutex mutex;
    std::condition_variable cv;
    bool open = false;
    std::atomic<int> runs{0};
  };
  std::map<bool, Gate> gates;  // by acks_late
  for (const bool late : {true, false}) {
    TaskOptions options;
    options.acks_late = late;
    Gate& gate = gates[late];
    registry_.Register(late ? "test.gated_late" : "test.gated_early",
                       [&gate](TaskContext&) -> TaskOutcome {
                         ++gate.runs;
                         std::unique_lock lock(gate.mutex);
                         gate.cv.wait_for(lock, 5s, [&] { return gate.open; });
                         return Json("done");
                       },
                       options);
  }
  StartWorker();
  for (const bool late : {true, false}) {
    SCOPED_TRACE(late ? "acks_late" : "ack early");
    Gate& gate = gates[late];
    auto m = Task(late ? "test.gated_late" : "test.gated_early");
    m.retries = 1;
    Send(m);
    Send(m);
    ASSERT_TRUE(Eventually([&] { return broker_.QueueDepth(kQueue) == 0; }));
    ASSERT_TRUE(Eventually([&] { return gate.runs.load() == 1; }));
    std::this_thread::sleep_for(50ms);  // the other copy, if it ran, would have started by now
    {
      std::lock_guard lock(gate.mutex);
      gate.open = true;
    }
    gate.cv.notify_all();
    ASSERT_FALSE(WaitReply(m.id, "SUCCESS").is_null());
    EXPECT_TRUE(Eventually([&] { return broker_.Unacked(kQueue) == 0; }))
        << "both copies are acked";
    EXPECT_EQ(gate.runs.load(), 1);
    EXPECT_EQ(Statuses(m.id), std::vector<std::string>{"SUCCESS"});
  }
}

// The same, one copy after the other: the second finds the outcome of the first recorded.
TEST_F(WorkerTest, ASecondCopyOfARetryAfterTheFirstRanIsNotRunAgain) {
  SideEffects effects;
  TaskOptions late;
  late.acks_late = true;
  effects.Register(registry_, "test.count", late);
  StartWorker();
  auto m = Task("test.count");
  m.retries = 2;
  Send(m);
  ASSERT_FALSE(WaitReply(m.id, "SUCCESS").is_null());
  ASSERT_TRUE(Eventually([&] { return states_.records().size() == 1; }));
  Send(m);
  ASSERT_TRUE(Eventually([&] { return worker_->stats().deduplicated == 1; }));
  EXPECT_TRUE(Eventually([&] { return broker_.QueueDepth(kQueue) == 0 && broker_.Unacked(kQueue) == 0; }));
  EXPECT_EQ(effects.Count(m.id), 1);
  EXPECT_EQ(Statuses(m.id), std::vector<std::string>{"SUCCESS"});
}

TEST_F(WorkerTest, ARedeliveredMessageWhoseOutcomeIsRecordedIsNotRunAgain) {
  SideEffects effects;
  TaskOptions late;
  late.acks_late = true;
  effects.Register(registry_, "test.count", late);
  broker::QueueSpec spec;
  spec.name = spec.exchange = spec.routing_key = kQueue;
  ASSERT_TRUE(broker_.Declare(spec).ok());
  // Ran and recorded, but its ack was lost: the broker delivers it again, redelivered.
  auto done = Task("test.count");
  TaskStateRecord record;
  record.task_id = done.id;
  record.task_name = "test.count";
  record.state = celery::State::kSuccess;
  ASSERT_TRUE(states_.Record(record).ok());
  // Retried (RETRY recorded for retries 0): the original comes again after its retry went out.
  auto retried = Task("test.count");
  record.task_id = retried.id;
  record.state = celery::State::kRetry;
  ASSERT_TRUE(states_.Record(record).ok());
  // Its retry (retries 1) has not run yet: it must run.
  auto retry_copy = retried;
  retry_copy.retries = 1;
  auto fresh = Task("test.count");
  for (const auto* m : {&done, &retried, &retry_copy, &fresh}) Send(*m);
  // Deliver all four once and hand them back, so they come again marked redelivered.
  std::mutex grab_mutex;
  std::vector<uint64_t> tags;
  auto grab = broker_.Consume({kQueue, 4, ""}, [&](broker::Delivery&& d) {
    std::lock_guard lock(grab_mutex);
    tags.push_back(d.delivery_tag);
  });
  ASSERT_TRUE(grab.ok());
  ASSERT_TRUE(Eventually([&] {
    std::lock_guard lock(grab_mutex);
    return tags.size() == 4;
  }));
  ASSERT_TRUE(broker_.Cancel(*grab).ok());
  for (uint64_t tag : tags) ASSERT_TRUE(broker_.Reject(*grab, tag, /*requeue=*/true).ok());
  StartWorker();
  ASSERT_FALSE(WaitReply(fresh.id, "SUCCESS").is_null());
  ASSERT_TRUE(Eventually([&] { return effects.Count(retried.id) == 1; }));
  ASSERT_TRUE(Eventually([&] { return broker_.QueueDepth(kQueue) == 0 && broker_.Unacked(kQueue) == 0; }));
  EXPECT_EQ(effects.Count(done.id), 0) << "its outcome was recorded: not run again";
  EXPECT_EQ(effects.Count(retried.id), 1) << "only the retry copy ran";
  EXPECT_EQ(effects.Count(fresh.id), 1);
  EXPECT_EQ(worker_->stats().deduplicated, 2u);
}

TEST_F(WorkerTest, HostileMessagesFailWithADeadLetterAndTheWorkerGoesOn) {
  StartWorker();
  std::vector<broker::OutgoingMessage> hostile;
  auto base = [&](const std::string& id) {
    broker::OutgoingMessage m;
    m.routing_key = kQueue;
    m.properties.content_type = "application/json";
    m.properties.reply_to = kReplyQueue;
    m.properties.correlation_id = id;
    m.properties.headers = {{"task", "celeriac.ping"}, {"id", id}};
    m.body = "[[], {}, {}]";
    return m;
  };
  // A body nested 300,000 levels deep.
  auto deep = base("deep");
  deep.body = std::string(300'000, '[') + std::string(300'000, ']');
  hostile.push_back(deep);
  // Header strings that are not UTF-8, where Celery wants text and where it does not.
  auto bad_retries = base("bad-retries");
  bad_retries.properties.headers["retries"] = std::string("\xff\xfe\x00", 3);
  hostile.push_back(bad_retries);
  auto bad_task = base("bad-task");
  bad_task.properties.headers["task"] = std::string("celeriac.\xc0\xaf", 11);
  hostile.push_back(bad_task);
  // retries at the top of its range: attempts must not wrap around.
  auto huge_retries = base("huge-retries");
  huge_retries.properties.headers["task"] = "no.such.task";
  huge_retries.properties.headers["retries"] = std::numeric_limits<int64_t>::max();
  hostile.push_back(huge_retries);
  // A body with U+0000 and a kombu marker nested deep (below the limit).
  auto nul = base("nul");
  nul.properties.headers["task"] = "no.such.task";
  nul.body = R"([["a\u0000b"], {}, {}])";
  hostile.push_back(nul);
  for (const auto& m : hostile) ASSERT_TRUE(broker_.Publish(m).ok());
  auto ok = Task("celeriac.ping");
  Send(ok);
  ASSERT_FALSE(WaitReply(ok.id, "SUCCESS").is_null()) << "the worker must keep running";
  for (const char* id : {"deep", "bad-retries", "bad-task", "huge-retries", "nul"})
    EXPECT_FALSE(WaitReply(id, "FAILURE").is_null()) << id;
  ASSERT_TRUE(Eventually([&] { return dead_letters_.letters().size() == hostile.size(); }));
  ASSERT_TRUE(Eventually([&] { return broker_.QueueDepth(kQueue) == 0 && broker_.Unacked(kQueue) == 0; }))
      << "every hostile message is acked";
  std::map<std::string, celery::DeadLetter> by_id;
  for (const auto& l : dead_letters_.letters()) by_id[l.properties.correlation_id] = l;
  EXPECT_EQ(by_id["deep"].error_class, "DecodeError");
  EXPECT_NE(by_id["deep"].error_message.find("nested deeper"), std::string::npos);
  EXPECT_EQ(by_id["deep"].body.size(), 600'000u) << "the original bytes, whole";
  EXPECT_EQ(by_id["bad-retries"].error_class, "InvalidTaskError");
  EXPECT_EQ(by_id["bad-task"].error_class, "InvalidTaskError");
  EXPECT_NE(by_id["bad-task"].error_message.find("not valid UTF-8"), std::string::npos)
      << by_id["bad-task"].error_message;
  EXPECT_EQ(by_id["huge-retries"].error_class, "NotRegistered");
  EXPECT_EQ(by_id["huge-retries"].attempts, std::numeric_limits<int64_t>::max());
  EXPECT_EQ(by_id["nul"].error_class, "NotRegistered");
}

TEST_F(WorkerTest, AnAckEarlyTasksDeadLetterIsWrittenEvenWhenTheStoreIsDownAtFirst) {
  StartWorker();
  dead_letters_.FailNext(3);
  auto m = Task("celeriac.fail", json::array({"boom"}));
  Send(m);
  ASSERT_FALSE(WaitReply(m.id, "FAILURE").is_null());
  ASSERT_TRUE(Eventually([&] { return dead_letters_.letters().size() == 1; }, 10s))
      << "the letter of an acked message is retried until the store takes it";
  EXPECT_EQ(dead_letters_.letters()[0].error_class, "InternalError");
  EXPECT_EQ(Statuses(m.id), std::vector<std::string>{"FAILURE"});
  EXPECT_EQ(broker_.QueueDepth(kQueue), 0u) << "acked when it started, as in Celery";
}

TEST_F(WorkerTest, AnAbandonedTaskIsCancelledAndTooManyMakeTheWorkerStop) {
  options_.concurrency = 1;
  options_.max_abandoned_threads = 1;
  std::atomic<int> side_effects{0};
  registry_.Register("test.stuck", [&](TaskContext& ctx) -> TaskOutcome {
    const auto until = std::chrono::steady_clock::now() + 1500ms;
    while (std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(5ms);
    // A task checks cancelled() before its side effect: abandoned, it must not do it.
    if (!ctx.cancelled()) ++side_effects;
    return Json("late");
  });
  StartWorker();
  std::atomic<bool> restart{false};
  worker_->OnNeedsRestart([&] { restart = true; });
  for (int i = 0; i < 2; ++i) {
    auto m = Task("test.stuck");
    m.time_limit = 0.1;
    Send(m);
    ASSERT_EQ(WaitReply(m.id, "FAILURE", 3s)["result"]["exc_type"], "TimeLimitExceeded");
  }
  EXPECT_TRUE(Eventually([&] { return restart.load(); }))
      << "two stuck threads are more than max_abandoned_threads = 1";
  EXPECT_TRUE(worker_->needs_restart());
  std::this_thread::sleep_for(1700ms);
  EXPECT_EQ(side_effects.load(), 0);
  EXPECT_EQ(dead_letters_.letters().size(), 2u);
}

TEST_F(WorkerTest, AsynchronousTasksCompleteLaterFromAnotherThread) {
  options_.dead_letter_retry_pause = 20ms;
  std::vector<std::thread> threads;
  std::mutex threads_mutex;
  std::atomic<int> starts{0};
  TaskOptions late;
  late.acks_late = true;
  // Completes from a thread of its own: a value, Deferred (it sends its result itself), or
  // "could not start" twice before it can.
  registry_.RegisterAsync("test.async", [&](TaskContext& ctx, Completion done) {
    ++starts;
    const std::string mode = ctx.args()[0].get<std::string>();
    std::lock_guard lock(threads_mutex);
    threads.emplace_back([mode, &starts, done = std::move(done)] {
      std::this_thread::sleep_for(30ms);
      if (mode == "value") return done(Json("later"));
      if (mode == "deferred") return done(Deferred{});
      if (starts.load() < 3)
        return done(TaskError::Requeue(Error(ErrorCode::kUnavailable, "database down")));
      done(Json("started at last"));
    });
  }, late);
  StartWorker();
  auto value = Task("test.async", json::array({"value"}));
  Send(value);
  EXPECT_EQ(WaitReply(value.id, "SUCCESS")["result"], "later");
  auto deferred = Task("test.async", json::array({"deferred"}));
  Send(deferred);
  ASSERT_TRUE(Eventually([&] { return worker_->stats().succeeded == 2; }));
  EXPECT_TRUE(Statuses(deferred.id).empty()) << "a deferred task sends its result itself";
  auto requeued = Task("test.async", json::array({"requeue"}));
  Send(requeued);
  EXPECT_EQ(WaitReply(requeued.id, "SUCCESS")["result"], "started at last");
  EXPECT_EQ(Statuses(requeued.id), std::vector<std::string>{"SUCCESS"})
      << "handed back, not retried: no RETRY, no dead letter";
  EXPECT_TRUE(dead_letters_.letters().empty());
  EXPECT_TRUE(Eventually([&] { return broker_.QueueDepth(kQueue) == 0 && broker_.Unacked(kQueue) == 0; }));
  std::lock_guard lock(threads_mutex);
  for (auto& t : threads) t.join();
}

TEST_F(WorkerTest, AnAsynchronousTaskThatCompletesAfterTheWorkerIsGoneIsIgnored) {
  std::promise<Completion> pending;
  TaskOptions late;
  late.acks_late = true;
  registry_.RegisterAsync("test.never_yet", [&](TaskContext&, Completion done) {
    pending.set_value(std::move(done));
  }, late);
  options_.shutdown_timeout = 100ms;
  StartWorker();
  Send(Task("test.never_yet"));
  auto done = pending.get_future().get();
  loop_.Post([this] { worker_->BeginShutdown([this] { loop_.Stop(); }); });
  loop_thread_.join();
  worker_.reset();
  done(Json("too late"));  // must not touch the destroyed worker
  EXPECT_EQ(broker_.QueueDepth(kQueue), 1u) << "handed back at the shutdown deadline";
}

}  // namespace
}  // namespace celeriac::worker
