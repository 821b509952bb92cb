#include "extractor/engine/engine.hpp"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "extractor/engine/page_outcome.hpp"

namespace celeriac::extractor {
namespace {

using std::chrono::milliseconds;

std::unique_ptr<Executor> Threads(const EngineOptions& o, size_t n, const char* name) {
  return o.inline_threads ? Executor::Inline(name) : std::make_unique<Executor>(n, name);
}

std::vector<int64_t> IdsOf(const std::vector<Work>& work) {
  std::vector<int64_t> ids;
  ids.reserve(work.size());
  for (const auto& w : work) ids.push_back(w.lease.id);
  return ids;
}

}  // namespace

Engine::Engine(Scheduler& loop, Fetcher& fetcher, Frontier& frontier, HostLedger& ledger,
               ModuleFactory modules, EngineOptions options, Clock& clock)
    : loop_(loop),
      fetcher_(fetcher),
      options_(std::move(options)),
      clock_(clock),
      store_thread_(Threads(options_, 1, "store")),
      parse_threads_(Threads(options_, options_.parse_threads, "parse")),
      host_thread_(Threads(options_, 1, "hosts")),
      admission_(frontier, std::move(modules), [this](const FinishedJob& f) { JobEnded(f); }),
      recorder_(frontier, admission_, stats_, options_.lease),
      leases_(loop, *store_thread_, frontier, admission_,
              {options_.concurrency, options_.lease_batch, options_.commit_batch, options_.lease,
               options_.idle_poll, options_.max_lease_attempts, options_.only_job},
              [this] { return hosts_.queued() + hosts_.running(); },
              [this](std::vector<Work> work) { Accept(std::move(work)); }),
      breaker_(loop, clock,
               [this](std::vector<Work> parked) {
                 for (auto& w : parked) hosts_.Enqueue(std::move(w));
                 hosts_.Dispatch();
               }),
      robots_(loop, *host_thread_, ledger, fetcher, options_.default_user_agent),
      hosts_(loop, *host_thread_, ledger, robots_, breaker_, clock, options_.concurrency,
             {[this](Work w) { StartFetch(std::move(w)); },
              [this](RequestResult r) { AddResult(std::move(r)); }}),
      speculator_(loop, fetcher, *parse_threads_, stats_, options_.speculate,
                  options_.default_user_agent,
                  {[this](Work w, std::optional<RequestResult> r) {
                     Serve(std::move(w), std::move(r));
                   },
                   [this] {
                     if (batcher_.waiting_for_next_page()) Flush();
                     CheckDrained();
                   }}),
      batcher_(loop, {options_.commit_batch, options_.commit_interval, milliseconds(3)},
               [this] { Flush(); }) {}

Engine::~Engine() {
  // Threads first: their queued work may still Post to the loop, which outlives us.
  parse_threads_.reset();
  host_thread_.reset();
  store_thread_.reset();
}

void Engine::Start() {
  leases_.MaybeLease();
  const auto every = std::max(milliseconds(100), options_.lease / 4);
  maintain_timer_ = loop_.AddTimer(every, [this] { Maintain(); }, every);
}

// ---- jobs -------------------------------------------------------------------------------

void Engine::SubmitExtract(ExtractRequest request, std::function<void(Status)> durable) {
  store_thread_->Post([this, request = std::move(request), durable = std::move(durable)] {
    auto started = admission_.Admit(request);
    if (!started) return durable(started.error());
    durable(Ok());
    if (*started) loop_.Post([this] { leases_.MaybeLease(); });
  });
}

void Engine::SubmitRefetch(int64_t request_id, std::string celery_task_id,
                           std::function<void(Status)> durable) {
  store_thread_->Post([this, request_id, celery_task_id = std::move(celery_task_id),
                       durable = std::move(durable)] {
    auto st = admission_.Refetch(request_id, celery_task_id);
    durable(st);
    if (st.ok()) loop_.Post([this] { leases_.MaybeLease(); });
  });
}

// Store thread.
void Engine::JobEnded(const FinishedJob& f) {
  if (on_finished_) on_finished_(f);
  loop_.Post([this, job_id = f.job_id] { ForgetJob(job_id); });
}

void Engine::ForgetJob(int64_t job_id) {
  fetcher_.ForgetScope(job_id);
  // Its requests still waiting here are void (the job skipped them when it ended).
  const size_t dropped = hosts_.ForgetJob(job_id) + breaker_.ForgetJob(job_id);
  leases_.Settle(dropped);
  speculator_.ForgetJob(job_id);
}

// ---- one request: leased, started, fetched, parsed --------------------------------------

void Engine::Accept(std::vector<Work> work) {
  if (draining_) {
    leases_.HandBack(IdsOf(work));
    return CheckDrained();
  }
  leases_.Hold(work.size());
  for (auto& w : work) {
    speculator_.Track(w.job);
    hosts_.Enqueue(std::move(w));
  }
  hosts_.Dispatch();
}

void Engine::StartFetch(Work w) {
  if (speculator_.Claim(w)) return;
  auto req = MakeFetch(*w.job, w.lease.spec, options_.default_user_agent);
  auto shared = std::make_shared<Work>(std::move(w));
  fetcher_.Fetch(std::move(req), [this, alive = std::weak_ptr<int>(life_), shared](
                                     Result<FetchResponse> r, std::string kind) {
    if (alive.expired()) return;  // the engine was destroyed with this fetch in flight
    OnFetched(std::move(*shared), std::move(r), kind);
  });
}

void Engine::OnFetched(Work w, Result<FetchResponse> response, const std::string& failure_kind) {
  stats_.Update([&](EngineStats& s) {
    ++s.fetched;
    if (response) s.bytes += response->bytes;
  });
  if (!response) {
    const auto& e = response.error();
    hosts_.FetchEnded(w, HostScheduler::Reply::kFailed);
    return Failed(w, Failure(w, "Download",
                             failure_kind.empty() ? e.message()
                                                  : failure_kind + ": " + e.message(),
                             e.retryable(), 0, std::nullopt, clock_.Now()));
  }
  const int status = response->status;
  if (status < 200 || status >= 300) {
    const bool too_fast = status == 429 || status == 503;
    hosts_.FetchEnded(w, too_fast ? HostScheduler::Reply::kTooFast : HostScheduler::Reply::kFailed,
                      response->retry_after);
    const auto cls = ClassifyStatus(status);
    auto r = Failure(w, cls.error_class,
                     "HTTP " + std::to_string(status) + " from " + response->final_url,
                     cls.retryable, status, response->retry_after, clock_.Now());
    r.bytes = response->bytes;
    return Failed(w, std::move(r));
  }
  hosts_.FetchEnded(w, HostScheduler::Reply::kServed);
  breaker_.Note(w, false);
  Parse(std::move(w), std::move(*response));
}

void Engine::Failed(const Work& w, RequestResult r) {
  hosts_.Done();
  breaker_.Note(w, r.state == RequestResult::State::kFailed);
  AddResult(std::move(r));
  hosts_.Dispatch();
}

// Off the loop thread; the first pages of a crawl and its pagination before the rest.
void Engine::Parse(Work w, FetchResponse response) {
  const bool urgent = w.lease.spec.is_pagination || w.lease.spec.depth == 0;
  auto shared = std::make_shared<std::pair<Work, FetchResponse>>(std::move(w),
                                                                 std::move(response));
  parse_threads_->Post([this, shared] {
    auto& [work, resp] = *shared;
    RequestResult r = ParseResponse(*work.job, work.lease.spec, resp);
    r.request_id = work.lease.id;
    r.job_id = work.lease.job_id;
    loop_.Post([this, r = std::move(r)]() mutable {
      hosts_.Done();
      AddResult(std::move(r));
      hosts_.Dispatch();
    });
  }, urgent);
}

void Engine::Serve(Work w, std::optional<RequestResult> fetched_ahead) {
  // The fetch ahead failed: fetch for real, and let that classify and retry.
  if (!fetched_ahead) return StartFetch(std::move(w));
  RequestResult r = std::move(*fetched_ahead);
  r.request_id = w.lease.id;
  r.job_id = w.lease.job_id;
  hosts_.FetchEnded(w, HostScheduler::Reply::kFetchedAhead);
  hosts_.Done();
  AddResult(std::move(r));
  hosts_.Dispatch();
}

// ---- recording --------------------------------------------------------------------------

void Engine::AddResult(RequestResult result) {
  stats_.Update([&](EngineStats& s) {
    if (result.state == RequestResult::State::kDone) ++s.parsed;
    if (result.state == RequestResult::State::kFailed) ++s.failed;
    if (result.state == RequestResult::State::kRetry) ++s.retried;
  });
  if (result.state == RequestResult::State::kFailed)
    spdlog::warn("job {} request {}: {} error: {}", result.job_id, result.request_id,
                 result.error_class, result.error_message);
  if (result.state == RequestResult::State::kDone && Leads(result)) speculator_.AheadOf(result);
  batcher_.Add(std::move(result), draining_ || Starving());
}

void Engine::Flush() {
  auto batch = batcher_.Take(
      draining_, [this](const RequestResult& r) { return speculator_.NextPageComing(r); });
  if (!batch) return;
  const size_t leased_results = batch->size();
  const size_t lease_new = draining_ ? 0 : leases_.Room();
  auto riders = speculator_.FoldChain(&*batch);
  auto results = std::make_shared<std::vector<RequestResult>>(std::move(*batch));
  store_thread_->Post([this, results, leased_results, lease_new, riders = std::move(riders)] {
    auto recorded = recorder_.Record(*results, leased_results, lease_new);
    loop_.Post([this, leased_results, recorded = std::move(recorded), riders]() mutable {
      OnCommitted(leased_results, std::move(recorded), riders);
    });
  });
}

void Engine::OnCommitted(size_t count, CommitRecorder::Recorded recorded,
                         const Speculator::Riders& riders) {
  batcher_.Ended();
  speculator_.Settle(riders, recorded.follow_ons);
  leases_.Settle(count);
  if (!recorded.discovered.empty()) Accept(std::move(recorded.discovered));
  batcher_.FlushOrWait(draining_ || Starving());
  if (draining_) return CheckDrained();
  // The commit leased us what it discovered (up to our target). Only when it left some pending
  // is there surely more to lease now; work from elsewhere (other extractors' overflow, new
  // jobs of other processes) is found by the idle poll.
  if (recorded.left_pending > 0) return leases_.MaybeLease();
  leases_.PollLater();
}

bool Engine::Starving() const {
  // Fewer requests waiting or running than the pipeline can take: recording now (and leasing
  // what the results discovered) beats batching.
  return hosts_.queued() + hosts_.running() < options_.concurrency / 8;
}

// ---- maintenance and shutdown -----------------------------------------------------------

void Engine::Maintain() {
  hosts_.RecordCounts();
  if (maintaining_) return;
  maintaining_ = true;
  store_thread_->Post([this] {
    leases_.KeepAlive();
    admission_.Watchdog();
    loop_.Post([this] { maintaining_ = false; });
  });
}

void Engine::Drain(std::function<void()> done) {
  draining_ = true;
  drained_ = std::move(done);
  leases_.Stop();
  robots_.Stop();
  speculator_.Stop();
  recorder_.Stop();
  if (batcher_.CancelFoldWait()) Flush();
  // Requests not started go back to the frontier for another extractor.
  auto unstarted = hosts_.TakeUnstarted();
  leases_.Settle(unstarted.size());
  leases_.HandBack(std::move(unstarted));
  Flush();
  CheckDrained();
  // Fetches that never end (a peer that hangs past every timeout) do not hold shutdown: their
  // requests stay leased and go back to the frontier when the leases expire.
  loop_.AddTimer(options_.drain_timeout, [this] {
    if (!drained_) return;
    spdlog::warn("stopping with {} request(s) still in flight; their leases will expire",
                 hosts_.running() + speculator_.in_flight() + robots_.in_flight());
    auto done = std::move(drained_);
    drained_ = nullptr;
    done();
  });
}

void Engine::CheckDrained() {
  if (!draining_ || !drained_) return;
  if (leases_.leasing() || hosts_.running() > 0 || speculator_.in_flight() > 0 ||
      robots_.in_flight() > 0 || batcher_.committing() || !batcher_.empty())
    return;
  if (maintain_timer_) {
    loop_.CancelTimer(*maintain_timer_);
    maintain_timer_.reset();
  }
  hosts_.Stop();
  // Everything posted to the store thread before now (releases, commits) finishes first.
  store_thread_->Post([this] {
    loop_.Post([this] {
      if (auto done = std::move(drained_)) {
        drained_ = nullptr;
        done();
      }
    });
  });
}

}  // namespace celeriac::extractor
