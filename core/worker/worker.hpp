#pragma once
// Worker: a Celery worker for one queue, running registered C++ tasks: the one worker core of
// `orchestrator worker` (the orchestrator's tasks) and `extractor worker` (extract and refetch,
// asynchronous tasks), so whatever a Celery worker does is written once.
//
// Delivery guarantee: at least once, as Celery. A task with acks_late is acked after its outcome
// is durable (result sent, retry published or dead letter written; its state recorded, or
// queued for recording while Postgres is down, see below), so a crash before that redelivers it; a task without acks_late is acked when it starts (Celery's default), so a crash
// during the task loses that run. ("Starts": when a pool thread takes it, or, when a thread is
// waiting for work, as it is handed to that thread, as Celery acks when a pool process
// accepts the job.)
//
// Dead letters: a message that ends in FAILURE (unknown task, undecodable body, malformed
// headers, bad arguments, a non-retryable error, retries exhausted, hard time limit) is written
// to the dead-letter sink, whatever bytes it holds (the sink stores a safe form of what the
// database would refuse). For every message not acked yet (all but ack-early tasks that
// started) the letter is durable before the ack. If the sink is down, a message whose task never
// ran (undecodable, unknown, bad arguments) is handed back to the broker after a pause, never
// dropped; one whose task ran (an ack-late task that failed) is not run again: its FAILURE is
// replied and recorded, and the message stays unacked (its prefetch slot given back, a
// redelivery adopted) until the letter is written on the side thread, then acked. An ack-early task was acked when it started, as
// in Celery: its letter is written after, on the worker's side thread, retried with backoff
// until the sink takes it; only a worker that exits (or is killed) before that loses it, and
// logs so at shutdown.
//
// Task states: recorded in the TaskStateSink after the reply. A state the sink refuses for a
// reason retrying can fix (Postgres down) is written the same way, on the side thread until the
// sink takes it, and the message is acked meanwhile: holding the ack until Postgres is back
// would only let a redelivery run the task a second time.
//
// Nothing runs twice because of the worker:
//  - Connection loss: the broker puts every unacked delivery back in the queue, so the
//    messages held for their ETA and those queued for the pool but not started are dropped
//    (as Celery drops its reserved and timer-held requests); they come again, redelivered.
//    Tasks already started run on (an ack-late one's ack then fails and the server redelivers
//    it, see next).
//  - Redelivery and duplicates: a message may come twice, redelivered or published twice (a
//    publisher re-sends what was not confirmed when its connection died: a retry may reach the
//    queue twice). A copy whose task id and retries this worker is running now (an ack-late
//    task) is adopted by the running task, whose outcome settles it too. A copy, redelivered or
//    a retry, whose task already has a recorded outcome at or past this message's retries
//    (SUCCESS, FAILURE, REVOKED, or a RETRY that was published) is acked without running again
//    (Celery's worker_deduplicate_successful_tasks, for every outcome); checked on receipt and
//    again as it is about to run.
//
// ETA/countdown messages are held unacked until due. The consumer's prefetch is channel-wide
// (it counts the held messages) and is raised by one per held message, as Celery does, so they
// never starve the queue. At most `max_held_eta` are held: beyond that the latest-due one goes
// to a delay queue of this worker's queue (`celeriac.delay.<queue>.<N>s`, a queue whose
// messages expire after N seconds back into <queue>; N is a power of two no longer than the
// time left), published with confirms before it is acked, so memory stays bounded whatever the
// backlog of countdown tasks and the rest of the queue keeps flowing. `expires` is checked on
// receipt and again before the task runs (REVOKED, acked, not dead-lettered, as Celery).
//
// Time limits: the message's `timelimit` [hard, soft] or the task's. Soft asks the task to stop
// (TaskContext::cancelled()). At the hard limit the message is finished as FAILURE
// (TimeLimitExceeded); its thread cannot be killed inside this process, so it is abandoned
// (what the task returns later is dropped; tasks check cancelled() before a side effect, and
// TaskContext::deadline() bounds their outbound calls) and a fresh thread takes its place. At
// most `max_abandoned_threads` may be abandoned at once: past that the worker stops consuming
// and shuts down warmly, and `needs_restart()` says so, so that `orchestrator worker` exits
// with status 3 for its supervisor to start a fresh process (Celery's prefork pool replaces
// its child process instead).
//
// Threading: deliveries arrive on the broker's thread, which queues them for the pool
// (`concurrency` threads), a burst at a time (ConsumeOptions::on_burst_end); pool threads
// decode them (headers included) and run or hold them. A delivery that a waiting thread will
// start at once is decoded (and an ack-early task acked) on the broker's thread instead, so its
// ack does not wait for that thread to wake. Timers (ETA, time limits, shutdown deadline) run on
// the Loop's thread. Task functions run on pool threads; an asynchronous task's completion runs
// on the worker's side thread. Nothing that blocks on Postgres or on
// the broker runs on the loop's thread or on the broker's: prefetch changes, dead letters and
// results of the hard time limit, delay-queue publishing and the consumer's cancel at shutdown
// run on the worker's side thread.
//
// Shutdown (BeginShutdown, on SIGTERM): stop consuming, hand held ETA messages back, wait for
// running tasks up to `shutdown_timeout`, hand back the messages of acks_late tasks still
// running, then call `done`. The destructor waits for the side thread; threads of abandoned
// tasks own what they use and may outlive the Worker.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
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
#include "core/loop/executor.hpp"
#include "core/loop/loop.hpp"
#include "core/schema/validator.hpp"
#include "core/worker/sinks.hpp"
#include "core/worker/task_registry.hpp"

namespace celeriac::worker {

struct WorkerOptions {
  std::string queue = "celery";
  int concurrency = 2;
  int prefetch_multiplier = 4;
  std::string hostname = "celeriac@localhost";
  std::chrono::milliseconds shutdown_timeout{30'000};
  std::chrono::milliseconds dead_letter_retry_pause{5'000};  // before handing back on sink failure
  // ETA messages held in memory at most; later-due ones wait in delay queues (see above).
  int max_held_eta = 1000;
  // Threads abandoned at hard time limits at most; past it the worker shuts down to be restarted.
  int max_abandoned_threads = 4;
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
  uint64_t dropped_on_connection_loss = 0;  // held or queued when their connection died
  uint64_t deduplicated = 0;                // redeliveries adopted or already done
  uint64_t delayed = 0;                     // ETA messages sent to a delay queue
  int64_t active = 0;
  int64_t held_eta = 0;
  int64_t abandoned_threads = 0;
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
  // Called (on the loop thread) when the worker shut itself down because too many threads are
  // stuck in tasks past their hard time limit; the process should exit and be restarted.
  void OnNeedsRestart(std::function<void()> fn) { on_needs_restart_ = std::move(fn); }
  bool needs_restart() const { return needs_restart_.load(); }

  WorkerStats stats() const;

 private:
  struct Job;
  class Pool;
  struct Held {
    std::shared_ptr<Job> job;
    Clock::WallTime eta;
  };

  void OnDelivery(broker::Delivery&& delivery);
  void OnDeliveriesLost();
  // options_.body_schema, cached per task name (misses included).
  std::shared_ptr<const schema::SchemaValidator> BodySchema(const std::string& task);
  bool Prepare(const std::shared_ptr<Job>& job);
  void Decode(const std::shared_ptr<Job>& job);
  bool AlreadyDone(const std::shared_ptr<Job>& job);
  bool Hold(const std::shared_ptr<Job>& job);
  void Delay(std::shared_ptr<Job> job);
  void Dispatch(std::shared_ptr<Job> job);
  void Run(const std::shared_ptr<Job>& job);
  void RunTask(const std::shared_ptr<Job>& job);
  std::optional<TaskOutcome> CheckArguments(const Job& job);
  void StartAsync(const std::shared_ptr<Job>& job,
                  const std::shared_ptr<const RegisteredTask>& task);
  // The task's outcome, on the thread that ran it (or, for an asynchronous task, the side thread).
  void Complete(const std::shared_ptr<Job>& job, TaskOutcome outcome);
  void HandBackLater(const std::shared_ptr<Job>& job);
  void Finish(const std::shared_ptr<Job>& job, const TaskOutcome& outcome);
  void Succeed(const std::shared_ptr<Job>& job, const Json& value);
  void Fail(const std::shared_ptr<Job>& job, const celery::ExceptionInfo& exc,
            const std::string& error_class);
  void WriteDeadLetterEventually(DeadLetter letter);
  // The message of a task that ran and failed, whose letter the sink refused: kept unacked (and
  // tracked, so a redelivery is adopted) until WriteEventually has written the letter, then acked.
  void HoldUntilLettered(const std::shared_ptr<Job>& job, DeadLetter letter);
  // Calls `write` on the side thread, after a pause (100 ms doubling, at most
  // dead_letter_retry_pause), until it succeeds; warm shutdown waits for it until its deadline,
  // after which `what` is logged as lost.
  void WriteEventually(std::string what, std::function<Status()> write, int attempt = 1);
  bool Republish(const std::shared_ptr<Job>& job, std::chrono::milliseconds countdown);
  void Ack(const std::shared_ptr<Job>& job);
  void HandBack(const std::shared_ptr<Job>& job);
  void ReplyAndRecord(const std::shared_ptr<Job>& job, celery::State state, const Json& result,
                      const std::optional<std::string>& traceback);
  // The rpc:// reply, and the state in the TaskStateSink.
  void Reply(const std::shared_ptr<Job>& job, celery::State state, const Json& result,
             const std::optional<std::string>& traceback);
  void Record(const std::shared_ptr<Job>& job, celery::State state, const Json& result,
              const std::optional<std::string>& traceback);
  bool Ignored(const Job& job, celery::State state) const;
  void StartTimeLimits(const std::shared_ptr<Job>& job);
  void OnHardTimeLimit(const std::shared_ptr<Job>& job);
  // Registers a job about to run (ack-late, or redelivered or a retry: maybe a copy), unless a
  // copy of its message (same task id and retries) runs here already: then that run adopts
  // this delivery, and false is returned.
  bool TrackOrAdopt(const std::shared_ptr<Job>& job);
  // `job`'s delivery is settled with `running`'s.
  void Adopt(const std::shared_ptr<Job>& running, const std::shared_ptr<Job>& job);
  void Untrack(const std::shared_ptr<Job>& job);
  // Base prefetch plus one per held ETA message, applied on the side thread.
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
  // Blocking work that must not run on the loop's or the broker's thread.
  std::unique_ptr<Executor> side_;
  // How an asynchronous task's completion finds the Worker, or learns it is gone.
  struct Gate {
    std::mutex mutex;
    Worker* worker = nullptr;
  };
  std::shared_ptr<Gate> gate_;
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
  // Bumped when the consumer's unacked deliveries are lost (connection or channel died): a job
  // from an older epoch that is not acked yet is not run.
  std::atomic<uint64_t> epoch_{0};
  std::atomic<bool> prefetch_dirty_{false};

  // Counters are atomics so the per-task path takes no shared lock for them.
  struct Counters {
    std::atomic<uint64_t> received{0}, succeeded{0}, failed{0}, retried{0}, revoked{0},
        dead_lettered{0}, dropped{0}, deduplicated{0}, delayed{0};
    std::atomic<int64_t> active{0}, held_eta{0}, abandoned{0};
  };
  Counters stats_;
  mutable std::mutex mutex_;  // held_, by_due_, running_, running_ids_, shutdown_done_
  std::unordered_map<uint64_t, Held> held_;         // ETA, by delivery tag
  std::multimap<Clock::WallTime, uint64_t> by_due_;  // held_ by ETA, for eviction
  // Running acks_late tasks, whose messages shutdown hands back if they outlive the deadline,
  // and by task id, for adopting a redelivery of one.
  std::unordered_map<Job*, std::shared_ptr<Job>> running_;
  std::unordered_map<std::string, std::shared_ptr<Job>> running_ids_;
  std::atomic<bool> shutting_down_{false};
  std::atomic<bool> needs_restart_{false};
  std::atomic<bool> finished_{false};       // shutdown's `done` was called
  std::atomic<int64_t> letters_held_{0};    // HoldUntilLettered: messages waiting for their letter
  std::atomic<int> pending_writes_{0};      // WriteEventually: letters, states not written yet
  std::function<void()> shutdown_done_;
  std::function<void()> on_needs_restart_;
  Loop::TimerId shutdown_timer_ = 0;
};

}  // namespace celeriac::worker
