#include "orchestrator/worker/worker.hpp"

#include <algorithm>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "core/celery/codec.hpp"
#include "core/log/log.hpp"

namespace celeriac::orchestrator {
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
  const RegisteredTask* task = nullptr;
  std::atomic<bool> cancelled{false};
  std::atomic<int> phase{kQueued};
  std::atomic<bool> acked{false};
  bool prepared = false;  // decoded (and past its ETA); only the pool thread running it reads it
  Loop::TimerId soft_timer = 0;
  Loop::TimerId hard_timer = 0;

  bool acks_late() const { return task != nullptr && task->options.acks_late; }
  bool ignore_result() const {
    return msg.ignore_result || (task != nullptr && task->options.ignore_result);
  }
  // For reuse by the next delivery; `delivery` keeps its buffers (the broker resets it).
  void Reset() {
    kind = Kind::kRun;
    msg = celery::TaskMessage{};
    failure = celery::DecodeFailure{};
    task = nullptr;
    cancelled = false;
    phase = kQueued;
    acked = false;
    prepared = false;
    soft_timer = 0;
    hard_timer = 0;
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
  pool_ = std::make_unique<Pool>(options_.concurrency,
                                 [this](const std::shared_ptr<Job>& job) { Run(job); });
}

Worker::~Worker() { pool_->Stop(options_.shutdown_timeout); }

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
  out.active = stats_.active;
  out.held_eta = stats_.held_eta;
  return out;
}

void Worker::OnDelivery(broker::Delivery&& delivery) {
  // The broker's thread queues the delivery (the pool gets the burst in on_burst_end); decoding
  // and everything else happen on the pool threads, so the I/O thread keeps reading
  // (bench/worker_throughput), except as below. Swapping gives the broker a spent Delivery's
  // buffers to reuse.
  auto job = pool_->NewJob();
  std::swap(job->delivery, delivery);
  // A pool thread is waiting for work, so this job starts the moment the burst is handed over:
  // it is decoded here and an ack-early task is acked now, as Celery acks a job when a pool
  // process accepts it. At a small prefetch the server sends the next message only once this
  // ack is out, and waiting for a pool thread to wake first costs tens of microseconds a
  // message. With every thread busy the burst goes over raw, and the threads decode it and ack
  // each task as they start it.
  if (consumer_id_.load(std::memory_order_acquire) != 0 && pool_->HasFreeThread()) {
    job->prepared = true;
    if (!Prepare(job)) return;  // held until its ETA
    const bool expired = job->msg.expires_time && *job->msg.expires_time <= clock_.Now();
    if (job->kind == Job::Kind::kRun && !expired && !job->acks_late()) Ack(job);
  }
  pool_->Add(std::move(job));
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

// On a pool thread: decode, find the task, and hold it if its ETA is still ahead. Returns false
// when the job was held (it comes back through Dispatch when due).
bool Worker::Prepare(const std::shared_ptr<Job>& job) {
  ++stats_.received;
  if (auto st = broker::DecodeRawHeaders(job->delivery); !st) {
    spdlog::error("dropping the headers of a delivery on '{}': {}", options_.queue,
                  st.error().message());
  }
  auto decoded = celery::DecodeTask(job->delivery.properties, job->delivery.body);
  if (!decoded.ok()) {
    job->kind = Job::Kind::kUndecodable;
    job->failure = decoded.failure();
    job->msg.task = job->failure.task;
    job->msg.id = job->failure.id;
    job->msg.reply_to = job->delivery.properties.reply_to;
    job->msg.correlation_id = job->delivery.properties.correlation_id;
    return true;
  }
  job->msg = std::move(decoded.message());
  job->task = registry_.Find(job->msg.task);
  if (job->task == nullptr) {
    job->kind = Job::Kind::kUnknownTask;
    return true;
  }
  const auto now = clock_.Now();
  const bool expired = job->msg.expires_time && *job->msg.expires_time <= now;
  if (expired || !job->msg.eta_time || *job->msg.eta_time <= now) return true;

  const auto delay = duration_cast<milliseconds>(*job->msg.eta_time - now);
  const uint64_t tag = job->delivery.delivery_tag;
  {
    std::lock_guard lock(mutex_);
    if (shutting_down_) {
      job->phase = kAbandoned;
      HandBack(job);
      return false;
    }
    held_[tag] = job;
    ++stats_.held_eta;
  }
  // On the loop thread: the broker's thread must never wait for Consumer().
  loop_.Post([this, job, delay, tag] {
    AdjustPrefetch();
    loop_.AddTimer(delay, [this, job, tag] {
      {
        std::lock_guard lock(mutex_);
        if (held_.erase(tag) == 0) return;  // handed back at shutdown
        --stats_.held_eta;
      }
      AdjustPrefetch();
      job->prepared = true;
      Dispatch(job);
    });
  });
  return false;
}

void Worker::AdjustPrefetch() {
  const int64_t held = stats_.held_eta;
  const auto prefetch = static_cast<uint16_t>(std::min<int64_t>(base_prefetch_ + held, 65535));
  if (auto st = broker_.SetPrefetch(Consumer(), prefetch); !st)
    spdlog::warn("cannot change prefetch to {}: {}", prefetch, st.error().message());
}

void Worker::Dispatch(std::shared_ptr<Job> job) { pool_->Submit(std::move(job)); }

void Worker::Run(const std::shared_ptr<Job>& job) {
  if (job->phase.load() != kQueued) return;  // handed back at shutdown
  if (!job->prepared) {
    job->prepared = true;
    if (!Prepare(job)) return;  // held until its ETA
  }
  int queued = kQueued;
  if (!job->phase.compare_exchange_strong(queued, kRunning)) return;  // handed back
  const bool expired = job->msg.expires_time && *job->msg.expires_time <= clock_.Now();
  // Ack-early (Celery's default) as the very first thing of a task that is going to run: at a
  // small prefetch the server sends the next message only once this ack is out.
  if (job->kind == Job::Kind::kRun && !expired && !job->acks_late()) Ack(job);
  log::ScopedLogContext ctx({{"task_id", job->msg.id}, {"task", job->msg.task}});
  ++stats_.active;
  const bool tracked = job->acks_late();
  if (tracked) {
    std::lock_guard lock(mutex_);
    running_[job.get()] = job;
  }
  auto leave = [&] {
    bool shutting_down = false;
    if (tracked) {
      std::lock_guard lock(mutex_);
      running_.erase(job.get());
    }
    --stats_.active;
    shutting_down = shutting_down_.load();
    if (shutting_down) MaybeFinishShutdown();  // not on the hot path otherwise
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
    spdlog::error("Received unregistered task of type '{}'", job->msg.task);
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

  if (!job->acks_late()) Ack(job);  // done above; a no-op here
  StartTimeLimits(job);

  TaskOutcome outcome = Json(nullptr);
  std::shared_ptr<const schema::SchemaValidator> body_schema;
  body_schema = BodySchema(job->msg.task);
  Status args_ok;
  if (body_schema) {
    const auto body = nlohmann::json::parse(
        Json::array({job->msg.args, job->msg.kwargs, Json::object()}).dump());
    args_ok = body_schema->Validate(body);
  }
  if (!args_ok) {
    outcome = TaskError::BadArguments(fmt::format("{}() called with bad arguments: {}",
                                                  job->msg.task, args_ok.error().message()));
  } else {
    TaskContext context(job->msg, job->cancelled);
    try {
      outcome = job->task->fn(context);
    } catch (const std::exception& e) {
      TaskError err;
      err.exception = celery::ExceptionInfo::Make("RuntimeError", "builtins", e.what());
      outcome = std::move(err);
    } catch (...) {
      TaskError err;
      err.exception = celery::ExceptionInfo::Make("RuntimeError", "builtins", "unknown C++ exception");
      outcome = std::move(err);
    }
  }

  int running = kRunning;
  if (!job->phase.compare_exchange_strong(running, kFinished)) {
    // Abandoned at its hard time limit (its message is already finished) or at shutdown.
    spdlog::warn("task {} returned after it was abandoned; its result is dropped", job->msg.id);
    return;
  }
  if (job->soft_timer != 0 || job->hard_timer != 0) {
    loop_.Post([this, job] {
      loop_.CancelTimer(job->soft_timer);
      loop_.CancelTimer(job->hard_timer);
    });
  }
  Finish(job, outcome);
  leave();
}

void Worker::StartTimeLimits(const std::shared_ptr<Job>& job) {
  const auto soft = Seconds(job->msg.soft_time_limit) ? Seconds(job->msg.soft_time_limit)
                                                      : job->task->options.soft_time_limit;
  const auto hard = Seconds(job->msg.time_limit) ? Seconds(job->msg.time_limit)
                                                 : job->task->options.time_limit;
  if (!soft && !hard) return;
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
  int running = kRunning;
  if (!job->phase.compare_exchange_strong(running, kAbandoned)) return;
  job->cancelled = true;
  loop_.CancelTimer(job->soft_timer);
  const double limit = job->msg.time_limit.value_or(
      job->task->options.time_limit ? job->task->options.time_limit->count() / 1000.0 : 0);
  spdlog::error("task {} passed its hard time limit ({} s); abandoning its thread", job->msg.id,
                limit);
  pool_->ReplaceAbandoned();
  {
    std::lock_guard lock(mutex_);
    running_.erase(job.get());
  }
  --stats_.active;
  Fail(job,
       celery::ExceptionInfo::Make("TimeLimitExceeded", "billiard.exceptions",
                                   fmt::format("TimeLimitExceeded({})", limit)),
       "TimeLimitExceeded");
  MaybeFinishShutdown();
}

void Worker::Finish(const std::shared_ptr<Job>& job, const TaskOutcome& outcome) {
  if (const auto* value = std::get_if<Json>(&outcome)) return Succeed(job, *value);
  const auto& err = std::get<TaskError>(outcome);
  const auto& opts = job->task->options;
  if (err.retryable && job->msg.retries < opts.max_retries) {
    milliseconds countdown = opts.default_retry_delay;
    if (err.countdown) {
      countdown = *err.countdown;
    } else if (opts.retry_backoff) {
      countdown = Backoff(*opts.retry_backoff).Delay(static_cast<int>(job->msg.retries));
    }
    if (Republish(job, countdown)) {
      ++stats_.retried;
      spdlog::info("task {} retry {}/{} in {} ms: {}", job->msg.id, job->msg.retries + 1,
                   opts.max_retries, countdown.count(), err.exception.exc_message.dump());
      ReplyAndRecord(job, celery::State::kRetry, err.exception.ToJson(), std::nullopt);
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
  std::string message;
  for (const auto& part : exc.exc_message)
    message += (message.empty() ? "" : ", ") + (part.is_string() ? part.get<std::string>() : part.dump());
  DeadLetter letter = MakeDeadLetter(*job, error_class, message);
  auto written = dead_letters_.Write(letter);
  if (!written) {
    spdlog::error("cannot write dead letter for task {} ({}); handing the message back in {} ms: "
                  "{}",
                  job->msg.id, error_class, options_.dead_letter_retry_pause.count(),
                  written.error().message());
    if (!job->acked) {
      loop_.Post([this, job] {
        loop_.AddTimer(options_.dead_letter_retry_pause, [this, job] { HandBack(job); });
      });
      return;
    }
    // Acked when it started (ack-early): the message is gone, as in Celery; still tell the
    // caller how it ended.
    spdlog::critical("dead letter of early-acked task {} is lost: {}", job->msg.id,
                     written.error().message());
    ReplyAndRecord(job, celery::State::kFailure, exc.ToJson(),
                   exc.traceback.empty() ? std::nullopt : std::optional(exc.traceback));
    return;
  }
  ++stats_.failed;
  ++stats_.dead_lettered;
  spdlog::error("task {} ({}) failed with {}: {}; dead letter {}", job->msg.id, job->msg.task,
                error_class, message, *written);
  ReplyAndRecord(job, celery::State::kFailure, exc.ToJson(),
                 exc.traceback.empty() ? std::nullopt : std::optional(exc.traceback));
  Ack(job);
}

DeadLetter Worker::MakeDeadLetter(const Job& job, const std::string& error_class,
                                  const std::string& message) const {
  DeadLetter letter;
  letter.queue = job.delivery.queue.empty() ? options_.queue : job.delivery.queue;
  if (!job.msg.task.empty()) letter.task_name = job.msg.task;
  if (!job.msg.id.empty()) letter.task_id = job.msg.id;
  letter.properties = job.delivery.properties;
  letter.body = job.delivery.body;
  letter.error_class = error_class;
  letter.error_message = message;
  letter.attempts = static_cast<int>(job.msg.retries) + 1;
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
  const bool is_failure = state == celery::State::kFailure;
  // Celery stores a failure of an unknown task even when the client asked to ignore results.
  if (job->ignore_result() && !(is_failure && job->kind != Job::Kind::kRun)) return;
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
    if (auto st = states_->Record(record); !st)
      spdlog::warn("cannot record state {} of task {}: {}", celery::ToString(state), job->msg.id,
                   st.error().message());
  }
}

void Worker::Ack(const std::shared_ptr<Job>& job) {
  if (job->acked.exchange(true)) return;
  if (auto st = broker_.Ack(Consumer(), job->delivery.delivery_tag); !st)
    spdlog::warn("cannot ack task {}: {}", job->msg.id, st.error().message());
}

void Worker::HandBack(const std::shared_ptr<Job>& job) {
  if (job->acked.exchange(true)) return;
  if (auto st = broker_.Reject(Consumer(), job->delivery.delivery_tag, /*requeue=*/true); !st)
    spdlog::warn("cannot hand back task {}: {}", job->msg.id, st.error().message());
}

void Worker::BeginShutdown(std::function<void()> done) {
  std::vector<std::shared_ptr<Job>> held;
  {
    std::lock_guard lock(mutex_);
    if (shutting_down_) return;
    shutting_down_ = true;
    shutdown_done_ = std::move(done);
    for (auto& [tag, job] : held_) held.push_back(job);
    held_.clear();
    stats_.held_eta = 0;
  }
  spdlog::info("worker {}: warm shutdown: stop consuming, finish running tasks (up to {} ms)",
               options_.hostname, options_.shutdown_timeout.count());
  if (auto st = broker_.Cancel(Consumer()); !st)
    spdlog::warn("cannot cancel consumer: {}", st.error().message());
  for (auto& job : held) HandBack(job);
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
      done = std::move(shutdown_done_);
    }
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
      done = std::move(shutdown_done_);
    }
    loop_.CancelTimer(shutdown_timer_);
    pool_->Stop(milliseconds(100));
    done();
  });
}

}  // namespace celeriac::orchestrator
