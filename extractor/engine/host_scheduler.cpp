#include "extractor/engine/host_scheduler.hpp"

#include <spdlog/spdlog.h>

#include "extractor/engine/page_outcome.hpp"

namespace celeriac::extractor {

using std::chrono::milliseconds;

namespace {

void Earliest(std::optional<Clock::MonoTime>& wake, Clock::MonoTime t) {
  if (!wake || t < *wake) wake = t;
}

}  // namespace

HostScheduler::HostScheduler(Scheduler& loop, Executor& host_thread, HostLedger& ledger,
                             RobotsGate& robots, PageTypeBreaker& breaker, const Clock& clock,
                             size_t concurrency, Hooks hooks)
    : loop_(loop),
      host_thread_(host_thread),
      ledger_(ledger),
      robots_(robots),
      breaker_(breaker),
      clock_(clock),
      concurrency_(concurrency),
      hooks_(std::move(hooks)) {}

HostScheduler::Host& HostScheduler::HostFor(const Work& w) {
  auto [it, fresh] = hosts_.try_emplace(w.host);
  if (fresh) {
    it->second.run_id = w.job->info.run_id;
    it->second.origin = OriginOf(w.lease.spec.url);
  }
  return it->second;
}

void HostScheduler::Enqueue(Work w) {
  ++queued_;
  HostFor(w).queue.push_back(std::move(w));
}

Work HostScheduler::Pop(Host& host) {
  Work w = std::move(host.queue.front());
  host.queue.pop_front();
  --queued_;
  return w;
}

void HostScheduler::Dispatch() {
  const auto now = clock_.Monotonic();
  std::optional<Clock::MonoTime> wake;
  for (auto& [key, host] : hosts_) {
    if (running_ >= concurrency_) break;
    DispatchHost(host, now, wake);
  }
  if (wake) WakeAt(*wake, now);
}

void HostScheduler::WakeAt(Clock::MonoTime at, Clock::MonoTime now) {
  if (timer_ && at >= timer_at_) return;
  if (timer_) loop_.CancelTimer(*timer_);
  timer_at_ = at;
  const auto delay = std::chrono::duration_cast<milliseconds>(at - now) + milliseconds(1);
  timer_ = loop_.AddTimer(delay, [this] {
    timer_.reset();
    Dispatch();
  });
}

void HostScheduler::DispatchHost(Host& host, Clock::MonoTime now,
                                 std::optional<Clock::MonoTime>& wake) {
  while (!host.queue.empty() && running_ < concurrency_) {
    const Work& w = host.queue.front();
    if (w.job->settings.politeness.robots_txt) {
      // robots.txt first: nothing goes to a host before its rules are known.
      if (host.robots != Host::Robots::kReady) {
        if (host.robots == Host::Robots::kUnknown) AskRobots(host, w);
        return;
      }
      if (host.rules && !host.rules->Allowed(w.lease.spec.url)) {
        hooks_.skip(Skipped(Pop(host), "disallowed by robots.txt"));
        continue;
      }
    }
    // A page type paused after repeated failures waits out its cool-down.
    if (auto until = breaker_.PausedUntil(w, now)) {
      Earliest(wake, *until);
      breaker_.Park(Pop(host));
      continue;
    }
    if (!MayStart(host, w, now, wake)) return;
    ++host.active;
    ++host.requests;
    ++running_;
    hooks_.start(Pop(host));
  }
}

bool HostScheduler::MayStart(Host& host, const Work& w, Clock::MonoTime now,
                             std::optional<Clock::MonoTime>& wake) {
  const auto& s = w.job->settings;
  if (host.active >= s.politeness.per_host_concurrency) return false;
  const auto base = BaseDelay(host.rules.get(), s);
  const auto verdict = host.pace.TryStart(base, now);
  switch (verdict.kind) {
    case HostPace::Verdict::Kind::kGo:
      return true;
    case HostPace::Verdict::Kind::kWait:
      Earliest(wake, verdict.until);
      return false;
    case HostPace::Verdict::Kind::kReserve:
      Reserve(host, base);
      return false;
    case HostPace::Verdict::Kind::kReserving:
      return false;
  }
  return false;
}

void HostScheduler::AskRobots(Host& host, const Work& w) {
  host.robots = Host::Robots::kFetching;
  robots_.Acquire(host.run_id, host.origin, w.job,
                  [this, key = w.host](std::shared_ptr<const RobotsRules> rules) {
                    auto it = hosts_.find(key);
                    if (it == hosts_.end()) return;
                    it->second.rules = std::move(rules);
                    it->second.robots = Host::Robots::kReady;
                    Dispatch();
                  });
}

// The slot is reserved in the ledger, so the host's rate holds across processes.
void HostScheduler::Reserve(Host& host, milliseconds min_delay) {
  host.pace.Reserving();
  const int64_t run_id = host.run_id;
  const std::string origin = host.origin;
  host_thread_.Post([this, run_id, origin, min_delay] {
    auto slot = ledger_.ReserveSlot(run_id, origin, min_delay);
    // The wait counts from when the ledger answered (never before its clock read it, so never
    // early), not from when the answer reaches a busy loop: that delay would push this slot
    // into the next one, another process's perhaps.
    const auto answered = clock_.Monotonic();
    loop_.Post([this, key = HostKey(run_id, origin), min_delay, answered, slot = std::move(slot)] {
      auto it = hosts_.find(key);
      if (it == hosts_.end()) return;
      Host& h = it->second;
      const auto now = clock_.Monotonic();
      if (slot) {
        h.pace.Reserved(slot->wait, slot->delay, answered);
      } else {
        spdlog::warn("reserving a request slot on {} failed: {}", h.origin,
                     slot.error().message());
        h.pace.ReserveFailed(min_delay, now);
      }
      Dispatch();
    });
  });
}

void HostScheduler::FetchEnded(const Work& w, Reply reply,
                               const std::optional<std::string>& retry_after) {
  Host& host = HostFor(w);
  --host.active;
  switch (reply) {
    case Reply::kServed:
      host.pace.Ease(BaseDelay(host.rules.get(), w.job->settings), clock_.Monotonic());
      break;
    case Reply::kTooFast:
      ++host.errors;
      SlowDown(host, w.job->settings, retry_after);
      break;
    case Reply::kFailed:
      ++host.errors;
      break;
    case Reply::kFetchedAhead:
      break;
  }
}

void HostScheduler::SlowDown(Host& host, const parse::CrawlSettings& s,
                             const std::optional<std::string>& retry_after) {
  const auto cap = s.politeness.max_retry_after;
  const auto backoff = host.pace.SlowDown(cap, retry_after, clock_.Now(), clock_.Monotonic());
  spdlog::info("run {}: {} answered 429/503: backing off {} ms, then one request per {} ms",
               host.run_id, host.origin, backoff.count(), host.pace.delay().count());
  host_thread_.Post([this, run_id = host.run_id, origin = host.origin, backoff, cap] {
    if (auto st = ledger_.SlowDown(run_id, origin, backoff, cap); !st)
      spdlog::warn("recording the backoff of {} failed: {}", origin, st.error().message());
  });
}

std::vector<int64_t> HostScheduler::TakeUnstarted() {
  std::vector<int64_t> ids;
  for (auto& [key, host] : hosts_) {
    for (const auto& w : host.queue) ids.push_back(w.lease.id);
    host.queue.clear();
  }
  queued_ = 0;
  return ids;
}

void HostScheduler::Stop() {
  if (timer_) {
    loop_.CancelTimer(*timer_);
    timer_.reset();
  }
}

size_t HostScheduler::ForgetJob(int64_t job_id) {
  size_t dropped = 0;
  for (auto& [key, host] : hosts_)
    dropped += std::erase_if(host.queue, [&](const Work& w) { return w.lease.job_id == job_id; });
  queued_ -= std::min(queued_, dropped);
  return dropped;
}

void HostScheduler::RecordCounts() {
  std::vector<std::tuple<int64_t, std::string, int64_t, int64_t>> counts;
  for (auto& [key, h] : hosts_) {
    if (h.requests == 0 && h.errors == 0) continue;
    counts.emplace_back(h.run_id, h.origin, h.requests, h.errors);
    h.requests = h.errors = 0;
  }
  if (counts.empty()) return;
  host_thread_.Post([this, counts = std::move(counts)] {
    if (auto st = ledger_.AddHostCounts(counts); !st)
      spdlog::warn("host counters not recorded: {}", st.error().message());
  });
}

}  // namespace celeriac::extractor
