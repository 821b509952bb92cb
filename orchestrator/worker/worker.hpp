#pragma once
// Worker: a Celery worker for one queue, running registered C++ tasks.
//
// Delivery guarantee: at least once, as Celery. A task with acks_late is acked after its outcome
// is durable (result stored, retry published or dead letter written), so a crash at any point
// redelivers it; a task without acks_late is acked when it starts (Celery's default), so a crash
// during the task loses that run. ("Starts": when a pool thread takes it, or, when a thread is
// waiting for work, as it is handed to that thread, as Celery acks when a pool process
// accepts the job.) A message that ends in FAILURE (unknown task, undecodable
// body, bad arguments, a non-retryable error, retries exhausted, hard time limit) is written to
// the dead-letter sink before it is acked; if that write fails the message is handed back to the
// broker after a pause, never dropped.
//
// ETA/countdown messages are held unacked until due, raising the consumer's prefetch by one per
// held message (as Celery) so they do not starve the queue; `expires` is checked on receipt and
// again before the task runs (REVOKED, acked, not dead-lettered, as Celery).
//
// Threading: deliveries arrive on the broker's thread, which queues them for the pool
// (`concurrency` threads), a burst at a time (ConsumeOptions::on_burst_end); pool threads
// decode them (headers included) and run or hold them. A delivery that a waiting thread will
// start at once is decoded (and an ack-early task acked) on the broker's thread instead, so its
// ack does not wait for that thread to wake. Timers (ETA, time limits, shutdown deadline) run on
// the Loop's thread. Task functions run on pool threads. A task past its hard time limit cannot be
// killed inside this process: its message is finished as FAILURE (TimeLimitExceeded), its thread
// is abandoned (its eventual result is dropped) and a fresh thread takes its place.
//
// Shutdown (BeginShutdown, on SIGTERM): stop consuming, hand held ETA messages back, wait for
// running tasks up to `shutdown_timeout`, hand back the messages of acks_late tasks still
// running, then call `done`.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/base/clock.hpp"
#include "core/broker/broker.hpp"
#include "core/loop/loop.hpp"
#include "core/schema/validator.hpp"
#include "orchestrator/worker/sinks.hpp"
#include "orchestrator/worker/task_registry.hpp"

namespace celeriac::orchestrator {

struct WorkerOptions {
  std::string queue = "celery";
  int concurrency = 2;
  int prefetch_multiplier = 4;
  std::string hostname = "celeriac@localhost";
  std::chrono::milliseconds shutdown_timeout{30'000};
  std::chrono::milliseconds dead_letter_retry_pause{5'000};  // before handing back on sink failure
  // Task body schemas by task name (schemas/tasks/<name>.body); a body that fails its schema is
  // a FAILURE with TypeError, like calling a Python task with the wrong arguments.
  std::function<std::shared_ptr<const schema::SchemaValidator>(const std::string&)> body_schema;
};

struct WorkerStats {
  uint64_t received = 0;
  uint64_t succeeded = 0;
  uint64_t failed = 0;
  uint64_t retried = 0;
  uint64_t revoked = 0;
  uint64_t dead_lettered = 0;
  int64_t active = 0;
  int64_t held_eta = 0;
};

class Worker {
 public:
  Worker(broker::Broker& broker, const TaskRegistry& registry, DeadLetterSink& dead_letters,
         TaskStateSink* states, const Clock& clock, Loop& loop, WorkerOptions options);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Declares the queue with Celery's parameters and starts consuming.
  Status Start();
  // Warm shutdown; `done` runs on the loop thread once everything is finished or handed back.
  void BeginShutdown(std::function<void()> done);

  WorkerStats stats() const;

 private:
  struct Job;
  class Pool;

  void OnDelivery(broker::Delivery&& delivery);
  // options_.body_schema, cached per task name (misses included).
  std::shared_ptr<const schema::SchemaValidator> BodySchema(const std::string& task);
  bool Prepare(const std::shared_ptr<Job>& job);
  void Dispatch(std::shared_ptr<Job> job);
  void Run(const std::shared_ptr<Job>& job);
  void Finish(const std::shared_ptr<Job>& job, const TaskOutcome& outcome);
  void Succeed(const std::shared_ptr<Job>& job, const Json& value);
  void Fail(const std::shared_ptr<Job>& job, const celery::ExceptionInfo& exc,
            const std::string& error_class);
  bool Republish(const std::shared_ptr<Job>& job, std::chrono::milliseconds countdown);
  void DeadLetterAndAck(const std::shared_ptr<Job>& job, const DeadLetter& letter);
  void Ack(const std::shared_ptr<Job>& job);
  void HandBack(const std::shared_ptr<Job>& job);
  void ReplyAndRecord(const std::shared_ptr<Job>& job, celery::State state, const Json& result,
                      const std::optional<std::string>& traceback);
  void StartTimeLimits(const std::shared_ptr<Job>& job);
  void OnHardTimeLimit(const std::shared_ptr<Job>& job);
  // Base prefetch plus one per held ETA message.
  void AdjustPrefetch();
  void MaybeFinishShutdown();
  DeadLetter MakeDeadLetter(const Job& job, const std::string& error_class,
                            const std::string& message) const;

  broker::Broker& broker_;
  const TaskRegistry& registry_;
  DeadLetterSink& dead_letters_;
  TaskStateSink* states_;
  const Clock& clock_;
  Loop& loop_;
  WorkerOptions options_;
  std::unique_ptr<Pool> pool_;
  // Deliveries can arrive (and be acked) before Consume() has returned the consumer's id, so
  // everyone who needs it waits for it here.
  broker::ConsumerId Consumer();
  std::mutex consumer_mutex_;
  std::condition_variable consumer_ready_;
  std::optional<broker::ConsumerId> consumer_;
  std::atomic<broker::ConsumerId> consumer_id_{0};  // set once with consumer_; 0 = not yet
  std::shared_mutex schema_mutex_;
  std::unordered_map<std::string, std::shared_ptr<const schema::SchemaValidator>> schema_cache_;
  uint16_t base_prefetch_ = 0;

  // Counters are atomics so the per-task path takes no shared lock for them.
  struct Counters {
    std::atomic<uint64_t> received{0}, succeeded{0}, failed{0}, retried{0}, revoked{0},
        dead_lettered{0};
    std::atomic<int64_t> active{0}, held_eta{0};
  };
  Counters stats_;
  mutable std::mutex mutex_;  // held_, running_, shutdown_done_
  std::unordered_map<uint64_t, std::shared_ptr<Job>> held_;     // ETA, by delivery tag
  // Running acks_late tasks, whose messages shutdown hands back if they outlive the deadline.
  std::unordered_map<Job*, std::shared_ptr<Job>> running_;
  std::atomic<bool> shutting_down_{false};
  std::function<void()> shutdown_done_;
  Loop::TimerId shutdown_timer_ = 0;
};

}  // namespace celeriac::orchestrator
