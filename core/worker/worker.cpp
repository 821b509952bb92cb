#include "core/worker/worker.hpp"

#include <algorithm>
#include <limits>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "core/base/text.hpp"
#include "core/celery/codec.hpp"
#include "core/json/untrusted_json.hpp"
#include "core/log/log.hpp"

namespace celeriac::worker {
namespace {

using namespace std::chrono;

enum Phase : int { kQueued = 0, kRunning = 1, kFinished = 2, kAbandoned = 3 };

std::optional<milliseconds> Seconds(std::optional<double> s) {
  if (!s || *s <= 0) return std::nullopt;
  return milliseconds(static_cast<int64_t>(*s * 1000));
}

}  // namespace

struct Worker::Job {
  enum class Kind { kRun, kUndecodable, kUnknownTask };
  Kind kind = Kind::kRun;
  broker::Delivery delivery;
  celery::TaskMessage msg;
  celery::DecodeFailure failure;  // kUndecodable
  std::shared_ptr<const RegisteredTask> task;
  std::atomic<bool> cancelled{false};
  std::atomic<int> phase{kQueued};
  std::atomic<bool> acked{false};
  // The task function was called (its side effect may have happened): its message is not
  // handed back to run again (Fail).
  std::atomic<bool> ran{false};
  // Failed, its message unacked until its dead letter is written (HoldUntilLettered).
  std::atomic<bool> letter_pending{false};
  bool tracked = false;  // in running_ / running_ids_ (TrackOrAdopt)
  bool prepared = false;  // decoded (and past its ETA); only the pool thread running it reads it
  uint64_t epoch = 0;     // Worker::epoch_ when it was delivered
  // Time limits were set (by the pool thread running it, which alone reads this); the timers
  // themselves are written and read on the loop thread.
  bool timed = false;
  Loop::TimerId soft_timer = 0;
  Loop::TimerId hard_timer = 0;
  Loop::TimerId eta_timer = 0;
  std::optional<TaskContext::Deadline> deadline;  // hard time limit
  // Redeliveries of this task adopted while it ran (their connection is the live one); settled
  // with it.
  std::mutex adopted_mutex;
  std::vector<uint64_t> adopted;

  bool acks_late() const { return task != nullptr && task->options.acks_late; }
  bool ignore_result() const {
    return msg.ignore_result || (task != nullptr && task->options.ignore_result);
  }
  bool expired(Clock::WallTime now) const { return msg.expires_time && *msg.expires_time <= now; }
  // For reuse by the next delivery; `delivery` keeps its buffers (the broker resets it).
  void Reset() {
    kind = Kind::kRun;
    msg = celery::TaskMessage{};
    failure = celery::DecodeFailure{};
    task = nullptr;
    cancelled = false;
    phase = kQueued;
    acked = false;
    ran = false;
    letter_pending = false;
    tracked = false;
    prepared = false;
    epoch = 0;
    timed = false;
    soft_timer = 0;
    hard_timer = 0;
    eta_timer = 0;
    deadline.reset();
    adopted.clear();
  }
};

// Fixed-size thread pool whose threads can be abandoned (a task past its hard time limit) and
// replaced. Threads are detached and share the state, so an abandoned one may outlive the pool.
//
// Deliveries reach it in bursts: the broker's thread fills Jobs (NewJob, Add) and hands a
// whole burst over under one lock (Flush). At most one wake-up is in flight: a woken thread
// that leaves work behind wakes the next, so a burst costs one notify, not one per job. Jobs
// nobody else holds when their run returns are recycled (their Delivery's buffers with them).
class Worker::Pool {
 public:
  Pool(int threads, std::function<void(const std::shared_ptr<Job>&)> run)
      : state_(std::make_shared<State>()) {
    state_->run = std::move(run);
    for (int i = 0; i < threads; ++i) Spawn();
  }

  // Broker's thread only (NewJob, Add, Flush): a Job to fill, recycled when one is free.
  std::shared_ptr<Job> NewJob() {
    if (spare_.empty()) return std::make_shared<Job>();
    auto job = std::move(spare_.back());
    spare_.pop_back();
    return job;
  }
  void Add(std::shared_ptr<Job> job) { pending_.push_back(std::move(job)); }
  // Whether a thread waits for work that nothing queued or added will take first: a job added
  // now starts at once.
  bool HasFreeThread() {
    std::lock_guard lock(state_->mutex);
    return state_->idle > static_cast<int>(state_->queue.size() + pending_.size());
  }
  // The jobs added since the last Flush go to the queue.
  void Flush() {
    if (pending_.empty()) return;
    bool wake = false;
    {
      std::lock_guard lock(state_->mutex);
      for (auto& job : pending_) state_->queue.push_back(std::move(job));
      wake = state_->WakeOne();
      if (spare_.size() < kMaxFree) {
        while (!state_->free.empty()) {
          spare_.push_back(std::move(state_->free.back()));
          state_->free.pop_back();
        }
      }
    }
    pending_.clear();
    if (wake) state_->cv.notify_one();
  }

  // Any thread: one job (an ETA task that came due).
  void Submit(std::shared_ptr<Job> job) {
    bool wake = false;
    {
      std::lock_guard lock(state_->mutex);
      state_->queue.push_back(std::move(job));
      wake = state_->WakeOne();
    }
    if (wake) state_->cv.notify_one();
  }

  // Jobs not yet started, for handing back at shutdown.
  std::deque<std::shared_ptr<Job>> TakeQueued() {
    std::lock_guard lock(state_->mutex);
    return std::exchange(state_->queue, {});
  }

  // One thread is stuck in an abandoned task: add one so concurrency stays the same, and let
  // the stuck one exit when its task finally returns.
  void ReplaceAbandoned() {
    {
      std::lock_guard lock(state_->mutex);
      ++state_->excess;
    }
    Spawn();
  }

  // Threads stuck in abandoned tasks right now.
  int Stuck() {
    std::lock_guard lock(state_->mutex);
    return state_->excess;
  }

  // Stops the threads once the queue is empty; waits for those not stuck in abandoned tasks.
  void Stop(milliseconds timeout) {
    std::unique_lock lock(state_->mutex);
    state_->stopping = true;
    state_->cv.notify_all();
    state_->exited.wait_for(lock, timeout, [&] { return state_->live <= state_->excess; });
  }

 private:
  static constexpr size_t kMaxFree = 256;

  struct State {
    std::mutex mutex;
    std::condition_variable cv;      // pool threads wait here for work
    std::condition_variable exited;  // Stop() waits here
    std::deque<std::shared_ptr<Job>> queue;
    std::vector<std::shared_ptr<Job>> free;  // recycled, for NewJob
    std::function<void(const std::shared_ptr<Job>&)> run;
    bool stopping = false;
    int live = 0;
    int excess = 0;
    int idle = 0;      // threads waiting for work
    int signaled = 0;  // notify_one()s not yet taken by a waking thread

    // Under mutex, with work queued: whether to notify_one (counted as in flight).
    bool WakeOne() {
      if (idle == 0 || signaled > 0) return false;
      ++signaled;
      return true;
    }
  };

  void Spawn() {
    {
      std::lock_guard lock(state_->mutex);
      ++state_->live;
    }
    std::thread([state = state_] {
      std::unique_lock lock(state->mutex);
      for (;;) {
        if (state->queue.empty() && !state->stopping) {
          ++state->idle;
          while (!state->stopping) {
            state->cv.wait(lock);
            // Any wake-up takes the one in flight, even one that finds no work (another thread
            // took it): otherwise nobody would ever be woken again.
            if (state->signaled > 0) --state->signaled;
            if (!state->queue.empty()) break;
          }
          --state->idle;
        }
        if (state->queue.empty()) break;  // stopping
        auto job = std::move(state->queue.front());
        state->queue.pop_front();
        const bool chain = !state->queue.empty() && state->WakeOne();
        lock.unlock();
        if (chain) state->cv.notify_one();
        state->run(job);
        const bool abandoned = job->phase.load() == kAbandoned;
        // Nobody else holds it (no timer, no held ETA, not running): reuse it.
        if (job.use_count() == 1 && !abandoned) {
          job->Reset();
        } else {
          job.reset();
        }
        lock.lock();
        if (job != nullptr && state->free.size() < kMaxFree) state->free.push_back(std::move(job));
        if (state->excess > 0 && abandoned) {
          --state->excess;
          break;
        }
        if (job != nullptr) {
          lock.unlock();
          job.reset();
          lock.lock();
        }
      }
      --state->live;
      state->exited.notify_all();
    }).detach();
  }

  std::shared_ptr<State> state_;
  // Broker's thread only.
  std::vector<std::shared_ptr<Job>> pending_;
  std::vector<std::shared_ptr<Job>> spare_;
};

namespace {

// The delay queue for messages due in `left`: the longest power-of-two seconds no longer than
// that (at least 1 s, at most 2^22 s, about 48 days; a message due later comes round again).
std::chrono::seconds DelayBucket(milliseconds left) {
  int64_t s = 1;
  while (s < (int64_t{1} << 22) && milliseconds(s * 2 * 1000) <= left) s *= 2;
  return std::chrono::seconds(s);
}

broker::QueueSpec DelayQueueSpec(const std::string& queue, std::chrono::seconds bucket) {
  broker::QueueSpec spec;
  spec.name = fmt::format("celeriac.delay.{}.{}s", queue, bucket.count());
  spec.exchange = "";
  spec.routing_key = spec.name;
  spec.bind = false;
  spec.arguments["x-message-ttl"] = static_cast<int64_t>(bucket.count() * 1000);
  spec.arguments["x-dead-letter-exchange"] = "";
  spec.arguments["x-dead-letter-routing-key"] = queue;
  return spec;
}

// A task error's message for logs and dead letters: its args joined, text from outside kept
// storable.
std::string MessageOf(const celery::ExceptionInfo& exc) {
  std::string message;
  for (const auto& part : exc.exc_message) {
    if (!message.empty()) message += ", ";
    message += part.is_string() ? EscapeToStorableText(part.get_ref<const std::string&>())
                                : QuoteJson(part, 1000);
  }
  return message;
}

}  // namespace

Worker::Worker(broker::Broker& broker, const TaskRegistry& registry, DeadLetterSink& dead_letters,
               TaskStateSink* states, const Clock& clock, Loop& loop, WorkerOptions options)
    : broker_(broker),
      registry_(registry),
      dead_letters_(dead_letters),
      states_(states),
      clock_(clock),
      loop_(loop),
      options_(std::move(options)) {
  options_.concurrency = std::max(options_.concurrency, 1);
  options_.max_held_eta = std::max(options_.max_held_eta, 1);
  pool_ = std::make_unique<Pool>(options_.concurrency,
                                 [this](const std::shared_ptr<Job>& job) { Run(job); });
  side_ = std::make_unique<Executor>(1, "worker side");
  gate_ = std::make_shared<Gate>();
  gate_->worker = this;
}

Worker::~Worker() {
  {
    // Asynchronous tasks that complete from now on find no worker.
    std::lock_guard lock(gate_->mutex);
    gate_->worker = nullptr;
  }
  pool_->Stop(options_.shutdown_timeout);
  side_.reset();  // runs what is queued (letters, prefetch changes) first
}

Status Worker::Start() {
  broker::QueueSpec spec;
  spec.name = options_.queue;
  spec.exchange = options_.queue;
  spec.routing_key = options_.queue;
  if (auto st = broker_.Declare(spec); !st) return st;
  const int64_t prefetch =
      static_cast<int64_t>(options_.concurrency) * std::max(options_.prefetch_multiplier, 1);
  base_prefetch_ = static_cast<uint16_t>(std::min<int64_t>(prefetch, 65535));
  broker::ConsumeOptions consume;
  consume.queue = options_.queue;
  consume.prefetch = base_prefetch_;
  // Deliveries are queued on the broker's thread and handed to the pool a burst at a time; the
  // headers are converted on the pool threads.
  consume.on_burst_end = [this] { pool_->Flush(); };
  consume.on_deliveries_lost = [this] { OnDeliveriesLost(); };
  consume.raw_headers = true;
  auto id = broker_.Consume(consume, [this](broker::Delivery&& d) { OnDelivery(std::move(d)); });
  if (!id) return id.error();
  {
    std::lock_guard lock(consumer_mutex_);
    consumer_ = *id;
    consumer_id_.store(*id, std::memory_order_release);
  }
  consumer_ready_.notify_all();
  spdlog::info("worker {} consuming queue '{}' with concurrency {} and prefetch {}",
               options_.hostname, options_.queue, options_.concurrency, base_prefetch_);
  return Ok();
}

broker::ConsumerId Worker::Consumer() {
  if (const auto id = consumer_id_.load(std::memory_order_acquire); id != 0) return id;
  std::unique_lock lock(consumer_mutex_);
  consumer_ready_.wait(lock, [&] { return consumer_.has_value(); });
  return *consumer_;
}

WorkerStats Worker::stats() const {
  WorkerStats out;
  out.received = stats_.received;
  out.succeeded = stats_.succeeded;
  out.failed = stats_.failed;
  out.retried = stats_.retried;
  out.revoked = stats_.revoked;
  out.dead_lettered = stats_.dead_lettered;
  out.dropped_on_connection_loss = stats_.dropped;
  out.deduplicated = stats_.deduplicated;
  out.delayed = stats_.delayed;
  out.active = stats_.active;
  out.held_eta = stats_.held_eta;
  out.abandoned_threads = pool_->Stuck();
  return out;
}

void Worker::OnDelivery(broker::Delivery&& delivery) {
  // The broker's thread queues the delivery (the pool gets the burst in on_burst_end); decoding
  // and everything else happen on the pool threads, so the I/O thread keeps reading
  // (bench/worker_throughput), except as below. Swapping gives the broker a spent Delivery's
  // buffers to reuse.
  auto job = pool_->NewJob();
  std::swap(job->delivery, delivery);
  job->epoch = epoch_.load(std::memory_order_acquire);
  // A pool thread is waiting for work, so this job starts the moment the burst is handed over:
  // it is decoded here and an ack-early task is acked now, as Celery acks a job when a pool
  // process accepts it. At a small prefetch the server sends the next message only once this
  // ack is out, and waiting for a pool thread to wake first costs tens of microseconds a
  // message. With every thread busy the burst goes over raw, and the threads decode it and ack
  // each task as they start it. A redelivered message goes over raw too: checking whether it
  // already ran may ask Postgres, which this thread never waits for.
  if (!job->delivery.redelivered && consumer_id_.load(std::memory_order_acquire) != 0 &&
      pool_->HasFreeThread()) {
    job->prepared = true;
    if (!Prepare(job)) return;  // held until its ETA
    if (job->kind == Job::Kind::kRun && !job->expired(clock_.Now()) && !job->acks_late())
      Ack(job);
  }
  pool_->Add(std::move(job));
}

void Worker::OnDeliveriesLost() {
  // On the broker's thread. The server has put every unacked delivery back in the queue: what
  // is held for its ETA and what waits in the pool unstarted must not run (it comes again).
  epoch_.fetch_add(1, std::memory_order_acq_rel);
  std::vector<std::shared_ptr<Job>> dropped;
  {
    std::lock_guard lock(mutex_);
    for (auto& [tag, held] : held_) dropped.push_back(std::move(held.job));
    held_.clear();
    by_due_.clear();
    stats_.held_eta = 0;
  }
  for (const auto& job : dropped) {
    int queued = kQueued;
    job->phase.compare_exchange_strong(queued, kAbandoned);
  }
  stats_.dropped += dropped.size();
  if (!dropped.empty()) {
    loop_.Post([this, dropped] {
      for (const auto& job : dropped) loop_.CancelTimer(job->eta_timer);
    });
  }
  spdlog::warn("worker {}: connection to the broker lost; {} held ETA message(s) and the "
               "unstarted ones in the pool are dropped (the broker redelivers them)",
               options_.hostname, dropped.size());
  AdjustPrefetch();
}

std::shared_ptr<const schema::SchemaValidator> Worker::BodySchema(const std::string& task) {
  if (!options_.body_schema) return nullptr;
  {
    std::shared_lock lock(schema_mutex_);
    if (auto it = schema_cache_.find(task); it != schema_cache_.end()) return it->second;
  }
  auto schema = options_.body_schema(task);  // misses are cached too: most tasks have none
  std::unique_lock lock(schema_mutex_);
  return schema_cache_.emplace(task, std::move(schema)).first->second;
}

void Worker::Decode(const std::shared_ptr<Job>& job) {
  auto& d = job->delivery;
  if (auto st = broker::DecodeRawHeaders(d); !st) {
    // Without headers there is no task name; the id, as Celery sends it, is also the
    // correlation id, so the failure can still reach whoever waits for it.
    job->kind = Job::Kind::kUndecodable;
    job->failure = celery::DecodeFailure{
        "InvalidTaskError",
        "the AMQP headers table cannot be decoded: " + EscapeToStorableText(st.error().message()),
        "", EscapeToStorableText(d.properties.correlation_id)};
    job->msg.id = job->failure.id;
    job->msg.reply_to = EscapeToStorableText(d.properties.reply_to);
    job->msg.correlation_id = EscapeToStorableText(d.properties.correlation_id);
    return;
  }
  auto decoded = celery::DecodeTask(d.properties, d.body);
  if (!decoded.ok()) {
    job->kind = Job::Kind::kUndecodable;
    job->failure = decoded.failure();
    job->msg.task = job->failure.task;
    job->msg.id = job->failure.id;
    job->msg.reply_to = EscapeToStorableText(d.properties.reply_to);
    job->msg.correlation_id = EscapeToStorableText(d.properties.correlation_id);
    return;
  }
  job->msg = std::move(decoded.message());
  job->task = registry_.Find(job->msg.task);
  if (job->task == nullptr) job->kind = Job::Kind::kUnknownTask;
}

// On a pool thread (or, for a delivery that is not redelivered, the broker's thread): decode,
// find the task, drop a redelivery of work already done, and hold it if its ETA is still ahead.
// Returns false when the job was settled or held (a held one comes back through Dispatch).
bool Worker::Prepare(const std::shared_ptr<Job>& job) {
  ++stats_.received;
  Decode(job);
  if (job->kind != Job::Kind::kRun) return true;
  if (job->delivery.redelivered && AlreadyDone(job)) return false;
  const auto now = clock_.Now();
  if (job->expired(now) || !job->msg.eta_time || *job->msg.eta_time <= now) return true;
  return Hold(job);
}

bool Worker::AlreadyDone(const std::shared_ptr<Job>& job) {
  if (job->acks_late()) {
    std::shared_ptr<Job> running;
    {
      std::lock_guard lock(mutex_);
      if (auto it = running_ids_.find(job->msg.id); it != running_ids_.end()) running = it->second;
    }
    if (running != nullptr && running != job && running->msg.retries == job->msg.retries) {
      // Its first delivery died with its connection while it ran: the running task settles
      // this delivery when it ends.
      Adopt(running, job);
      return true;
    }
  }
  // A dead-letter replay starts the task again at retries 0, whatever its first run recorded.
  if (states_ == nullptr || job->msg.custom_headers.contains(celery::kDeadLetterIdHeader)) return false;
  auto stored = states_->Lookup(job->msg.id);
  if (!stored) {
    spdlog::warn("task {} may have run already (redelivered, or a retry); cannot check ({}); "
                 "running it",
                 job->msg.id, stored.error().message());
    return false;
  }
  if (!stored->has_value()) return false;
  const auto& st = **stored;
  const bool done = st.retries > job->msg.retries ||
                    (st.retries == job->msg.retries &&
                     (celery::IsReady(st.state) || st.state == celery::State::kRetry));
  if (!done) return false;
  job->phase = kFinished;
  ++stats_.deduplicated;
  spdlog::info("task {} has its outcome ({}, retries {}) recorded already: this copy of its "
               "message (redelivered, or published twice) is acked without running it again",
               job->msg.id, celery::ToString(st.state), st.retries);
  Ack(job);
  return true;
}

void Worker::Adopt(const std::shared_ptr<Job>& running, const std::shared_ptr<Job>& job) {
  bool settled;
  {
    std::lock_guard lock(running->adopted_mutex);
    settled = running->acked.load();
    if (!settled) running->adopted.push_back(job->delivery.delivery_tag);
  }
  job->phase = kFinished;
  if (settled) Ack(job);  // it ended in between: its outcome is recorded
  job->acked = true;
  ++stats_.deduplicated;
  spdlog::info("task {} is running here already; that run settles this copy of its message",
               job->msg.id);
}

bool Worker::TrackOrAdopt(const std::shared_ptr<Job>& job) {
  std::shared_ptr<Job> running;
  {
    std::lock_guard lock(mutex_);
    auto it = running_ids_.find(job->msg.id);
    if (it != running_ids_.end() && it->second != job &&
        it->second->msg.retries == job->msg.retries) {
      running = it->second;
    } else {
      // (A running earlier attempt, with fewer retries, is this one's predecessor finishing:
      // both run, and its entry gives way to this one.)
      running_[job.get()] = job;
      running_ids_[job->msg.id] = job;
      job->tracked = true;
    }
  }
  if (running == nullptr) return true;
  Adopt(running, job);
  return false;
}

bool Worker::Hold(const std::shared_ptr<Job>& job) {
  const auto now = clock_.Now();
  const auto eta = *job->msg.eta_time;
  const auto delay = duration_cast<milliseconds>(eta - now);
  const uint64_t tag = job->delivery.delivery_tag;
  std::shared_ptr<Job> evicted;
  {
    std::lock_guard lock(mutex_);
    if (shutting_down_) {
      job->phase = kAbandoned;
      HandBack(job);
      return false;
    }
    // Full: the latest-due message goes to a delay queue (a held one due later than this, else
    // this one). This one is held anyway when it is due within two seconds: a delay queue
    // cannot bring it back sooner.
    if (static_cast<int>(held_.size()) >= options_.max_held_eta) {
      auto latest = by_due_.empty() ? by_due_.end() : std::prev(by_due_.end());
      if (latest != by_due_.end() && latest->first > eta) {
        auto it = held_.find(latest->second);
        evicted = std::move(it->second.job);
        held_.erase(it);
        by_due_.erase(latest);
        --stats_.held_eta;
      } else if (delay > seconds(2)) {
        evicted = job;
      }
    }
    if (evicted != job) {
      held_[tag] = Held{job, eta};
      by_due_.emplace(eta, tag);
      ++stats_.held_eta;
    }
  }
  if (evicted != nullptr) Delay(evicted);
  if (evicted == job) return false;
  loop_.Post([this, job, delay, tag] {
    if (job->phase.load() != kQueued) return;  // dropped meanwhile
    job->eta_timer = loop_.AddTimer(delay, [this, job, tag] {
      {
        std::lock_guard lock(mutex_);
        auto it = held_.find(tag);
        if (it == held_.end() || it->second.job != job) return;  // handed back or evicted
        for (auto d = by_due_.lower_bound(it->second.eta);
             d != by_due_.end() && d->first == it->second.eta; ++d) {
          if (d->second == tag) {
            by_due_.erase(d);
            break;
          }
        }
        held_.erase(it);
        --stats_.held_eta;
      }
      AdjustPrefetch();
      job->prepared = true;
      Dispatch(job);
    });
  });
  AdjustPrefetch();
  return false;
}

void Worker::Delay(std::shared_ptr<Job> job) {
  // An evicted held job's timer (set on the loop thread) goes; its callback would find nothing.
  loop_.Post([this, job] { loop_.CancelTimer(job->eta_timer); });
  side_->Post([this, job] {
    if (job->epoch != epoch_.load()) return;  // its delivery is back in the queue already
    const auto left = duration_cast<milliseconds>(*job->msg.eta_time - clock_.Now());
    const auto spec = DelayQueueSpec(options_.queue, DelayBucket(left));
    broker::OutgoingMessage out;
    out.exchange = "";
    out.routing_key = spec.name;
    out.properties = job->delivery.properties;
    out.body = job->delivery.body;
    Status st = broker_.Declare(spec);
    if (st) st = broker_.Publish(out);
    if (!st) {
      spdlog::warn("task {}: cannot move it to delay queue {} ({}); handing it back in {} ms",
                   job->msg.id, spec.name, st.error().message(),
                   options_.dead_letter_retry_pause.count());
      HandBackLater(job);
      return;
    }
    job->phase = kFinished;
    ++stats_.delayed;
    Ack(job);
  });
}

void Worker::AdjustPrefetch() {
  // Only the latest value matters: one change in flight at a time.
  if (prefetch_dirty_.exchange(true)) return;
  side_->Post([this] {
    prefetch_dirty_ = false;
    const int64_t held = stats_.held_eta + letters_held_.load();
    const auto prefetch = static_cast<uint16_t>(std::min<int64_t>(base_prefetch_ + held, 65535));
    if (auto st = broker_.SetPrefetch(Consumer(), prefetch); !st)
      spdlog::warn("cannot change prefetch to {}: {}", prefetch, st.error().message());
  });
}

void Worker::Dispatch(std::shared_ptr<Job> job) { pool_->Submit(std::move(job)); }

void Worker::Untrack(const std::shared_ptr<Job>& job) {
  std::lock_guard lock(mutex_);
  running_.erase(job.get());
  if (auto it = running_ids_.find(job->msg.id); it != running_ids_.end() && it->second == job)
    running_ids_.erase(it);
}

void Worker::Run(const std::shared_ptr<Job>& job) {
  if (job->phase.load() != kQueued) return;  // handed back, dropped or delayed
  if (!job->acked && job->epoch != epoch_.load(std::memory_order_acquire)) {
    // From a connection that died: the broker has it again.
    job->phase = kAbandoned;
    ++stats_.dropped;
    return;
  }
  if (!job->prepared) {
    job->prepared = true;
    if (!Prepare(job)) return;  // held until its ETA, or settled
  }
  int queued = kQueued;
  if (!job->phase.compare_exchange_strong(queued, kRunning)) return;  // handed back
  const bool expired = job->expired(clock_.Now());
  // Ack-early (Celery's default) as the very first thing of a task that is going to run: at a
  // small prefetch the server sends the next message only once this ack is out.
  if (job->kind == Job::Kind::kRun && !expired && !job->acks_late()) Ack(job);
  log::ScopedLogContext ctx({{"task_id", job->msg.id}, {"task", job->msg.task}});
  ++stats_.active;
  auto leave = [&] {
    --stats_.active;
    if (shutting_down_.load()) MaybeFinishShutdown();  // not on the hot path otherwise
  };
  if (job->kind == Job::Kind::kUndecodable) {
    spdlog::error("cannot decode message on '{}' ({}): {}", options_.queue, job->failure.exc_type,
                  job->failure.message);
    job->phase = kFinished;
    Fail(job, celery::ExceptionInfo::Make(job->failure.exc_type, "kombu.exceptions",
                                          job->failure.message),
         job->failure.exc_type);
    return leave();
  }
  if (job->kind == Job::Kind::kUnknownTask) {
    spdlog::error("Received unregistered task of type {}", QuoteJson(job->msg.task));
    job->phase = kFinished;
    Fail(job,
         celery::ExceptionInfo::Make("NotRegistered", "celery.exceptions",
                                     celery::PyRepr(Json(job->msg.task))),
         "NotRegistered");
    return leave();
  }
  if (expired) {
    spdlog::info("task {} expired at {}; revoked", job->msg.id, job->msg.expires.value_or(""));
    job->phase = kFinished;
    ++stats_.revoked;
    ReplyAndRecord(job, celery::State::kRevoked,
                   celery::ExceptionInfo::Make("TaskRevokedError", "celery.exceptions", "expired")
                       .ToJson(),
                   std::nullopt);
    Ack(job);
    return leave();
  }
  // A message may come twice: redelivered, or published twice (a publisher re-sends what the
  // broker had not confirmed when its connection died, so a retry can reach the queue twice).
  // Checked here, as it is about to run, not only on receipt: the other copy may have run
  // meanwhile (both held for the same ETA, say). A copy that finds its task running here is
  // adopted by that run (atomically with registering the run, so two copies never both run).
  if ((job->delivery.redelivered || job->msg.retries > 0) && AlreadyDone(job)) return leave();
  // Ack-early tasks are tracked only when a copy is possible (acked already, a copy is skipped).
  const bool may_be_copy = job->delivery.redelivered || job->msg.retries > 0;
  if ((job->acks_late() || may_be_copy) && !TrackOrAdopt(job)) return leave();
  RunTask(job);
}

namespace {

TaskError FromException(const char* what) {
  TaskError err;
  err.exception = celery::ExceptionInfo::Make("RuntimeError", "builtins",
                                              EscapeToStorableText(what));
  return err;
}

}  // namespace

std::optional<TaskOutcome> Worker::CheckArguments(const Job& job) {
  auto body_schema = BodySchema(job.msg.task);
  if (!body_schema) return std::nullopt;
  const auto body =
      nlohmann::json::parse(Json::array({job.msg.args, job.msg.kwargs, Json::object()}).dump());
  const Status ok = body_schema->Validate(body);
  if (ok) return std::nullopt;
  return TaskError::BadArguments(
      fmt::format("{}() called with bad arguments: {}", job.msg.task, ok.error().message()));
}

void Worker::RunTask(const std::shared_ptr<Job>& job) {
  // An ack-late job is tracked already (TrackOrAdopt).
  // Held here, so that a thread abandoned in this task keeps its function alive.
  const std::shared_ptr<const RegisteredTask> task = job->task;
  if (task->async_fn) return StartAsync(job, task);
  StartTimeLimits(job);

  TaskOutcome outcome = Json(nullptr);
  if (auto bad = CheckArguments(*job)) {
    outcome = std::move(*bad);
  } else {
    TaskContext context(job->msg, job->cancelled, job->deadline);
    job->ran = true;
    try {
      outcome = task->fn(context);
    } catch (const std::exception& e) {
      outcome = FromException(e.what());
    } catch (...) {
      outcome = FromException("unknown C++ exception");
    }
  }
  Complete(job, std::move(outcome));
}

void Worker::StartAsync(const std::shared_ptr<Job>& job,
                        const std::shared_ptr<const RegisteredTask>& task) {
  if (auto bad = CheckArguments(*job)) return Complete(job, std::move(*bad));
  // `done` may come from any thread, once; what it leads to (results, letters, acks) runs on
  // the side thread, and not at all once the Worker is gone.
  auto once = std::make_shared<std::atomic<bool>>(false);
  Completion done = [gate = gate_, job, once](TaskOutcome outcome) {
    if (once->exchange(true)) return;
    std::lock_guard lock(gate->mutex);
    if (gate->worker == nullptr) return;
    Worker* self = gate->worker;
    self->side_->Post([self, job, outcome = std::move(outcome)]() mutable {
      self->Complete(job, std::move(outcome));
    });
  };
  TaskContext context(job->msg, job->cancelled);
  job->ran = true;
  try {
    task->async_fn(context, done);
  } catch (const std::exception& e) {
    done(FromException(e.what()));
  } catch (...) {
    done(FromException("unknown C++ exception"));
  }
}

void Worker::Complete(const std::shared_ptr<Job>& job, TaskOutcome outcome) {
  int running = kRunning;
  if (!job->phase.compare_exchange_strong(running, kFinished)) {
    // Abandoned at its hard time limit or at the shutdown deadline: its message is finished or
    // handed back already (and that was logged), and the Worker, even the process' loggers, may
    // be gone. Touch nothing but what the job owns.
    return;
  }
  if (job->timed) {
    loop_.Post([this, job] {
      loop_.CancelTimer(job->soft_timer);
      loop_.CancelTimer(job->hard_timer);
    });
  }
  Finish(job, outcome);
  // One whose letter is pending stays tracked: a redelivery of its message is adopted by it.
  if (job->tracked && !job->letter_pending.load()) Untrack(job);
  --stats_.active;
  if (shutting_down_.load()) MaybeFinishShutdown();
}

void Worker::StartTimeLimits(const std::shared_ptr<Job>& job) {
  const auto soft = Seconds(job->msg.soft_time_limit) ? Seconds(job->msg.soft_time_limit)
                                                      : job->task->options.soft_time_limit;
  const auto hard = Seconds(job->msg.time_limit) ? Seconds(job->msg.time_limit)
                                                 : job->task->options.time_limit;
  if (!soft && !hard) return;
  job->timed = true;
  if (hard) job->deadline = steady_clock::now() + *hard;
  // Timer ids are written on the loop thread and read there when cancelling.
  loop_.Post([this, job, soft, hard] {
    if (job->phase.load() != kRunning) return;
    if (soft) {
      job->soft_timer = loop_.AddTimer(*soft, [job] {
        spdlog::warn("task {} passed its soft time limit; asking it to stop", job->msg.id);
        job->cancelled = true;
      });
    }
    if (hard) job->hard_timer = loop_.AddTimer(*hard, [this, job] { OnHardTimeLimit(job); });
  });
}

void Worker::OnHardTimeLimit(const std::shared_ptr<Job>& job) {
  // On the loop thread.
  int running = kRunning;
  if (!job->phase.compare_exchange_strong(running, kAbandoned)) return;
  job->cancelled = true;
  loop_.CancelTimer(job->soft_timer);
  const double limit = job->msg.time_limit.value_or(
      job->task->options.time_limit ? job->task->options.time_limit->count() / 1000.0 : 0);
  spdlog::error("task {} passed its hard time limit ({} s); abandoning its thread", job->msg.id,
                limit);
  pool_->ReplaceAbandoned();
  if (job->tracked) Untrack(job);
  --stats_.active;
  // The dead letter and the result are blocking work: not on this thread.
  side_->Post([this, job, limit] {
    Fail(job,
         celery::ExceptionInfo::Make("TimeLimitExceeded", "billiard.exceptions",
                                     fmt::format("TimeLimitExceeded({})", limit)),
         "TimeLimitExceeded");
    MaybeFinishShutdown();
  });
  const int stuck = pool_->Stuck();
  if (stuck > options_.max_abandoned_threads && !needs_restart_.exchange(true)) {
    spdlog::critical("worker {}: {} threads are stuck in tasks past their hard time limit (at "
                     "most {}); it stops consuming and shuts down to be restarted",
                     options_.hostname, stuck, options_.max_abandoned_threads);
    if (on_needs_restart_) {
      on_needs_restart_();
    } else {
      BeginShutdown([] {});
    }
  }
}

void Worker::Finish(const std::shared_ptr<Job>& job, const TaskOutcome& outcome) {
  if (const auto* value = std::get_if<Json>(&outcome)) return Succeed(job, *value);
  if (std::holds_alternative<Deferred>(outcome)) {
    ++stats_.succeeded;
    return Ack(job);  // its result is the task's to send
  }
  const auto& err = std::get<TaskError>(outcome);
  if (err.requeue && !job->acked) {
    spdlog::warn("task {} could not start ({}); handing it back in {} ms", job->msg.id,
                 MessageOf(err.exception), options_.dead_letter_retry_pause.count());
    return HandBackLater(job);
  }
  const auto& opts = job->task->options;
  if (err.retryable && job->msg.retries < opts.max_retries) {
    milliseconds countdown = opts.default_retry_delay;
    if (err.countdown) {
      countdown = *err.countdown;
    } else if (opts.retry_backoff) {
      countdown = Backoff(*opts.retry_backoff).Delay(static_cast<int>(job->msg.retries));
    }
    // The client hears RETRY before the retry can run (and answer first); the state is
    // recorded only once the retry is published, since a redelivery of this message that
    // finds RETRY recorded is not run again.
    const Json exc = err.exception.ToJson();
    Reply(job, celery::State::kRetry, exc, std::nullopt);
    if (Republish(job, countdown)) {
      ++stats_.retried;
      spdlog::info("task {} retry {}/{} in {} ms: {}", job->msg.id, job->msg.retries + 1,
                   opts.max_retries, countdown.count(), MessageOf(err.exception));
      Record(job, celery::State::kRetry, exc, std::nullopt);
      Ack(job);
      return;
    }
    if (!job->acked) return HandBack(job);  // the broker keeps it; nothing lost
  }
  Fail(job, err.exception, err.exception.exc_type);
}

void Worker::Succeed(const std::shared_ptr<Job>& job, const Json& value) {
  ++stats_.succeeded;
  ReplyAndRecord(job, celery::State::kSuccess, value, std::nullopt);
  Ack(job);
}

void Worker::Fail(const std::shared_ptr<Job>& job, const celery::ExceptionInfo& exc,
                  const std::string& error_class) {
  // On a pool thread or the side thread: the sink may block.
  const std::string message = MessageOf(exc);
  DeadLetter letter = MakeDeadLetter(*job, error_class, message);
  const auto traceback = exc.traceback.empty() ? std::nullopt : std::optional(exc.traceback);
  auto written = dead_letters_.Write(letter);
  if (!written && !job->acked && job->ran.load()) {
    // The task ran, so its side effect may have happened (a call Discovery refused for good):
    // handing the message back would run it again, a call per attempt to write the letter. Its
    // outcome is final: replied and recorded now; the message stays unacked until the letter
    // is written, so neither is lost.
    spdlog::error("task {} ({}) failed with {}: {}; its dead letter is not written yet ({}); "
                  "its message stays unacked until it is",
                  job->msg.id, EscapeToStorableText(job->msg.task), error_class, message,
                  written.error().message());
    ++stats_.failed;
    HoldUntilLettered(job, std::move(letter));
    ReplyAndRecord(job, celery::State::kFailure, exc.ToJson(), traceback);
    return;
  }
  if (!written && !job->acked) {
    spdlog::error("cannot write dead letter for task {} ({}); handing the message back in {} ms: "
                  "{}",
                  job->msg.id, error_class, options_.dead_letter_retry_pause.count(),
                  written.error().message());
    HandBackLater(job);
    return;
  }
  ++stats_.failed;
  if (written) {
    ++stats_.dead_lettered;
    spdlog::error("task {} ({}) failed with {}: {}; dead letter {}", job->msg.id,
                  EscapeToStorableText(job->msg.task), error_class, message, *written);
  } else {
    // Acked when it started (ack-early, as Celery): the broker no longer has the message, so
    // the letter is written later, on the side thread, until the sink takes it.
    spdlog::error("task {} ({}) failed with {}: {}; its dead letter is not written yet ({}), "
                  "retrying",
                  job->msg.id, EscapeToStorableText(job->msg.task), error_class, message,
                  written.error().message());
    WriteDeadLetterEventually(std::move(letter));
  }
  ReplyAndRecord(job, celery::State::kFailure, exc.ToJson(), traceback);
  Ack(job);
}

void Worker::WriteDeadLetterEventually(DeadLetter letter) {
  const std::string task_id = letter.task_id.value_or("");
  WriteEventually("dead letter of early-acked task " + task_id,
                  [this, letter = std::move(letter), task_id]() -> Status {
                    auto written = dead_letters_.Write(letter);
                    if (!written) return written.error();
                    ++stats_.dead_lettered;
                    spdlog::info("dead letter of task {} written: {}", task_id, *written);
                    return Ok();
                  });
}

void Worker::HoldUntilLettered(const std::shared_ptr<Job>& job, DeadLetter letter) {
  job->letter_pending = true;
  ++letters_held_;
  AdjustPrefetch();  // its prefetch slot is given back, as for a held ETA message
  const std::string task_id = job->msg.id;
  WriteEventually(
      "dead letter of task " + task_id + " (its message, unacked, goes back to the broker)",
      [this, job, letter = std::move(letter), task_id]() -> Status {
        auto written = dead_letters_.Write(letter);
        if (!written) return written.error();
        ++stats_.dead_lettered;
        spdlog::info("dead letter of task {} written: {}; its message is acked", task_id,
                     *written);
        Ack(job);
        job->letter_pending = false;
        Untrack(job);
        --letters_held_;
        AdjustPrefetch();
        return Ok();
      });
}

void Worker::WriteEventually(std::string what, std::function<Status()> write, int attempt) {
  if (attempt == 1) ++pending_writes_;
  const auto pause = std::min(options_.dead_letter_retry_pause,
                              milliseconds(int64_t{100} << std::min(attempt, 10)));
  auto retry = [this, what = std::move(what), write = std::move(write), attempt]() mutable {
    const Status st = write();
    if (st.ok()) {
      --pending_writes_;
      if (attempt > 1) spdlog::info("{} written after {} attempts", what, attempt + 1);
      return;
    }
    if (finished_.load()) {
      --pending_writes_;
      spdlog::critical("{} is lost at shutdown: {}", what, st.error().message());
      return;
    }
    WriteEventually(std::move(what), std::move(write), attempt + 1);
  };
  loop_.Post([this, pause, retry = std::move(retry)]() mutable {
    loop_.AddTimer(pause, [this, retry = std::move(retry)]() mutable {
      side_->Post(std::move(retry));
    });
  });
}

DeadLetter Worker::MakeDeadLetter(const Job& job, const std::string& error_class,
                                  const std::string& message) const {
  DeadLetter letter;
  letter.queue = job.delivery.queue.empty() ? options_.queue : job.delivery.queue;
  if (!job.msg.task.empty()) letter.task_name = job.msg.task;
  if (!job.msg.id.empty()) letter.task_id = job.msg.id;
  letter.properties = job.delivery.properties;
  letter.body = job.delivery.body;
  if (!job.delivery.raw_headers.empty()) letter.raw_headers = job.delivery.raw_headers;
  letter.error_class = error_class;
  letter.error_message = message;
  // Runs so far; a hostile `retries` near its type's limit must not wrap around.
  letter.attempts = job.msg.retries < std::numeric_limits<int64_t>::max() ? job.msg.retries + 1
                                                                          : job.msg.retries;
  letter.context = {{"worker", options_.hostname},
                    {"exchange", job.delivery.exchange},
                    {"routing_key", job.delivery.routing_key},
                    {"redelivered", job.delivery.redelivered},
                    {"retries", job.msg.retries}};
  return letter;
}

bool Worker::Republish(const std::shared_ptr<Job>& job, milliseconds countdown) {
  celery::TaskMessage copy = job->msg;
  copy.retries += 1;
  copy.eta_time = clock_.Now() + countdown;
  copy.eta.reset();
  copy.argsrepr.clear();
  copy.kwargsrepr.clear();
  copy.priority = job->delivery.properties.priority;
  // Delivered through the default exchange: back to the same queue by name; otherwise through
  // the exchange and routing key it came by (as Celery's retry does).
  auto out = celery::EncodeTask(copy, job->delivery.routing_key.empty() ? options_.queue
                                                                         : job->delivery.routing_key,
                                clock_.Now());
  out.exchange = job->delivery.exchange;
  if (auto st = broker_.Publish(out); !st) {
    spdlog::error("cannot republish task {} for retry: {}", job->msg.id, st.error().message());
    return false;
  }
  return true;
}

void Worker::ReplyAndRecord(const std::shared_ptr<Job>& job, celery::State state,
                            const Json& result, const std::optional<std::string>& traceback) {
  Reply(job, state, result, traceback);
  Record(job, state, result, traceback);
}

bool Worker::Ignored(const Job& job, celery::State state) const {
  // Celery stores a failure of an unknown task even when the client asked to ignore results.
  return job.ignore_result() && !(state == celery::State::kFailure && job.kind != Job::Kind::kRun);
}

void Worker::Reply(const std::shared_ptr<Job>& job, celery::State state, const Json& result,
                   const std::optional<std::string>& traceback) {
  if (Ignored(*job, state)) return;
  if (!job->msg.reply_to.empty() && !job->msg.id.empty()) {
    if (auto st = broker_.Publish(celery::MakeResultMessage(job->msg, state, result, traceback));
        !st) {
      // NotFound: the reply queue is gone, i.e. its client stopped waiting; nothing to tell.
      spdlog::log(st.error().code() == ErrorCode::kNotFound ? spdlog::level::debug
                                                            : spdlog::level::warn,
                  "cannot send {} result of task {} to '{}': {}", celery::ToString(state),
                  job->msg.id, job->msg.reply_to, st.error().message());
    }
  }
}

void Worker::Record(const std::shared_ptr<Job>& job, celery::State state, const Json& result,
                    const std::optional<std::string>& traceback) {
  if (Ignored(*job, state)) return;
  if (states_ != nullptr && !job->msg.id.empty()) {
    TaskStateRecord record;
    record.task_id = job->msg.id;
    record.task_name = job->msg.task;
    record.state = state;
    record.result = result;
    record.traceback = traceback;
    record.retries = job->msg.retries;
    record.queue = options_.queue;
    record.worker = options_.hostname;
    if (auto st = states_->Record(record); !st) {
      if (!st.error().retryable()) {
        spdlog::warn("cannot record state {} of task {}: {}", celery::ToString(state),
                     job->msg.id, st.error().message());
        return;
      }
      // Postgres is down: the outcome is final (replied, acked next), so its record must not be
      // lost with the outage. Written on the side thread once Postgres is back; the store keeps
      // a later state when records arrive out of order.
      spdlog::warn("cannot record state {} of task {} yet ({}); retrying in the background",
                   celery::ToString(state), job->msg.id, st.error().message());
      WriteEventually("state " + std::string(celery::ToString(state)) + " of task " + job->msg.id,
                      [this, record = std::move(record)] { return states_->Record(record); });
    }
  }
}

void Worker::Ack(const std::shared_ptr<Job>& job) {
  std::vector<uint64_t> adopted;
  {
    std::lock_guard lock(job->adopted_mutex);
    if (job->acked.exchange(true)) return;
    adopted.swap(job->adopted);
  }
  const auto consumer = Consumer();
  if (auto st = broker_.Ack(consumer, job->delivery.delivery_tag); !st)
    spdlog::warn("cannot ack task {}: {}", job->msg.id, st.error().message());
  for (uint64_t tag : adopted) {
    if (auto st = broker_.Ack(consumer, tag); !st)
      spdlog::warn("cannot ack a redelivery of task {}: {}", job->msg.id, st.error().message());
  }
}

void Worker::HandBackLater(const std::shared_ptr<Job>& job) {
  // A pause first, so that a message that cannot be taken now does not loop hot.
  loop_.Post([this, job] {
    loop_.AddTimer(options_.dead_letter_retry_pause, [this, job] { HandBack(job); });
  });
}

void Worker::HandBack(const std::shared_ptr<Job>& job) {
  std::vector<uint64_t> adopted;
  {
    std::lock_guard lock(job->adopted_mutex);
    if (job->acked.exchange(true)) return;
    adopted.swap(job->adopted);
  }
  const auto consumer = Consumer();
  if (auto st = broker_.Reject(consumer, job->delivery.delivery_tag, /*requeue=*/true); !st)
    spdlog::warn("cannot hand back task {}: {}", job->msg.id, st.error().message());
  for (uint64_t tag : adopted) (void)broker_.Reject(consumer, tag, /*requeue=*/true);
}

void Worker::BeginShutdown(std::function<void()> done) {
  std::vector<std::shared_ptr<Job>> held;
  {
    std::lock_guard lock(mutex_);
    if (shutting_down_) return;
    shutting_down_ = true;
    shutdown_done_ = std::move(done);
    for (auto& [tag, h] : held_) held.push_back(h.job);
    held_.clear();
    by_due_.clear();
    stats_.held_eta = 0;
  }
  spdlog::info("worker {}: warm shutdown: stop consuming, finish running tasks (up to {} ms)",
               options_.hostname, options_.shutdown_timeout.count());
  // basic.cancel waits for the broker: on the side thread, not the loop's.
  side_->Post([this] {
    if (auto st = broker_.Cancel(Consumer()); !st)
      spdlog::warn("cannot cancel consumer: {}", st.error().message());
  });
  for (auto& job : held) {
    loop_.Post([this, job] { loop_.CancelTimer(job->eta_timer); });
    HandBack(job);
  }
  std::vector<std::shared_ptr<Job>> accepted;
  for (auto& job : pool_->TakeQueued()) {
    // Acked as it was handed to a free thread (OnDelivery): it runs, as one already started.
    if (job->acked) {
      accepted.push_back(std::move(job));
      continue;
    }
    int queued = kQueued;
    if (job->phase.compare_exchange_strong(queued, kAbandoned)) HandBack(job);
  }
  for (auto& job : accepted) pool_->Submit(std::move(job));
  shutdown_timer_ = loop_.AddTimer(options_.shutdown_timeout, [this] {
    std::vector<std::shared_ptr<Job>> still;
    {
      std::lock_guard lock(mutex_);
      for (auto& [ptr, job] : running_) still.push_back(job);
    }
    for (auto& job : still) {
      int running = kRunning;
      if (!job->phase.compare_exchange_strong(running, kAbandoned)) continue;
      job->cancelled = true;
      spdlog::warn("task {} still running at the shutdown deadline; handing it back",
                   job->msg.id);
      HandBack(job);  // no-op if it was acked early
    }
    std::function<void()> done;
    {
      std::lock_guard lock(mutex_);
      running_.clear();
      running_ids_.clear();
      done = std::move(shutdown_done_);
    }
    finished_ = true;
    if (done) done();
  });
  MaybeFinishShutdown();
}

void Worker::MaybeFinishShutdown() {
  loop_.Post([this] {
    std::function<void()> done;
    {
      std::lock_guard lock(mutex_);
      if (!shutting_down_ || stats_.active.load() > 0 || !shutdown_done_) return;
      if (side_->Backlog() > 0 || pending_writes_.load() > 0) {
        // Letters and results still being written (until the shutdown deadline): look again.
        loop_.AddTimer(milliseconds(20), [this] { MaybeFinishShutdown(); });
        return;
      }
      done = std::move(shutdown_done_);
    }
    loop_.CancelTimer(shutdown_timer_);
    pool_->Stop(milliseconds(100));
    finished_ = true;
    done();
  });
}

}  // namespace celeriac::worker
