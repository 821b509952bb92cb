#include "extractor/pipeline/engine.hpp"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <random>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace celeriac::extractor {
namespace {

using std::chrono::milliseconds;

// scheme://host[:port], lower case: what robots.txt and politeness apply to.
std::string OriginOf(const std::string& url) {
  const auto s = url.find("://");
  if (s == std::string::npos) return {};
  const size_t begin = s + 3;
  size_t end = url.find_first_of("/?#", begin);
  if (end == std::string::npos) end = url.size();
  std::string host = url.substr(begin, end - begin);
  if (const auto at = host.rfind('@'); at != std::string::npos) host = host.substr(at + 1);
  std::string origin = url.substr(0, s + 3) + host;
  for (auto& c : origin) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return origin;
}

std::string HostKey(int64_t run_id, const std::string& url) {
  return std::to_string(run_id) + ' ' + OriginOf(url);
}

// Retry-After: delay-seconds or an HTTP-date.
std::optional<milliseconds> ParseRetryAfter(const std::string& value, Clock::WallTime now) {
  if (value.empty()) return std::nullopt;
  if (std::all_of(value.begin(), value.end(), [](char c) { return std::isdigit(c) != 0; })) {
    if (value.size() > 9) return milliseconds(999'999'999'000LL);
    return milliseconds(std::stoll(value) * 1000);
  }
  std::tm tm{};
  if (strptime(value.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm) == nullptr) return std::nullopt;
  const auto at = std::chrono::system_clock::from_time_t(timegm(&tm));
  return std::max(milliseconds(0), std::chrono::duration_cast<milliseconds>(at - now));
}

milliseconds RetryDelay(const parse::CrawlSettings& c, int attempt) {
  const auto& s = c.retry;
  thread_local std::mt19937_64 rng{std::random_device{}()};
  const double base = static_cast<double>(s.backoff_base.count());
  const double cap = static_cast<double>(s.backoff_max.count());
  const double raw = std::min(cap, base * std::pow(2.0, std::max(0, attempt - 1)));
  if (!s.jitter) return milliseconds(static_cast<int64_t>(raw));
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  return milliseconds(static_cast<int64_t>(raw * unit(rng)));
}

}  // namespace

Engine::Engine(Loop& loop, Fetcher& fetcher, CrawlStore& store, ModuleFactory modules,
               EngineOptions options, Clock& clock)
    : loop_(loop),
      fetcher_(fetcher),
      store_(store),
      modules_(std::move(modules)),
      options_(std::move(options)),
      clock_(clock),
      store_thread_(std::make_unique<Executor>(1, "store")),
      parse_threads_(std::make_unique<Executor>(options_.parse_threads, "parse")),
      host_thread_(std::make_unique<Executor>(1, "hosts")) {}

Engine::~Engine() {
  // Threads first: their queued work may still Post to the loop, which outlives us.
  parse_threads_.reset();
  host_thread_.reset();
  store_thread_.reset();
}

void Engine::Start() {
  MaybeLease();
  maintain_timer_ = loop_.AddTimer(
      std::max(milliseconds(100), options_.lease / 4), [this] { Maintain(); },
      std::max(milliseconds(100), options_.lease / 4));
}

EngineStats Engine::Stats() const {
  std::lock_guard lock(stats_mutex_);
  return stats_;
}

// ---- jobs -------------------------------------------------------------------------------

void Engine::SubmitRefetch(int64_t request_id, std::string celery_task_id,
                           std::function<void(Status)> durable) {
  store_thread_->Post([this, request_id, celery_task_id = std::move(celery_task_id),
                       durable = std::move(durable)] {
    auto job = store_.Refetch(request_id, celery_task_id);
    if (!job) return durable(job.error());
    spdlog::info("request {} replayed into job {}", request_id, *job);
    durable(Ok());
    loop_.Post([this] { MaybeLease(); });
  });
}

void Engine::SubmitExtract(ExtractRequest request, std::function<void(Status)> durable) {
  store_thread_->Post([this, request = std::move(request), durable = std::move(durable)] {
    auto job = store_.ClaimJob(request);
    if (!job) return durable(job.error());
    if (job->status != "pending") {
      spdlog::info("extract {}: job {} is already {}; nothing to start", request.celery_task_id,
                   job->job_id, job->status);
      return durable(Ok());
    }
    auto module = modules_(job->config);
    Result<std::optional<FinishedJob>> outcome = std::optional<FinishedJob>{};
    if (!module) {
      spdlog::warn("job {} (crawl config {}): config rejected: {}", job->job_id,
                   job->crawl_config_id, module.error().message());
      outcome = store_.FailJob(job->job_id, "Parse",
                               "crawl config " + std::to_string(job->crawl_config_id) +
                                   " is invalid: " + module.error().message(),
                               request.reply_to);
    } else {
      const auto start = (*module)->Generate();
      const auto settings = parse::CrawlSettings::FromConfig(job->config);
      outcome = store_.StartJob(job->job_id, start, request.reply_to, settings.limits.watchdog);
      if (outcome)
        spdlog::info("job {} (run {}, crawl config {}): started with {} start request(s)",
                     job->job_id, job->run_id, job->crawl_config_id, start.size());
    }
    if (!outcome) return durable(outcome.error());
    if (*outcome) Finished({**outcome});
    durable(Ok());
    loop_.Post([this] { MaybeLease(); });
  });
}

std::shared_ptr<const Engine::JobRuntime> Engine::RuntimeFor(int64_t job_id) {
  if (auto it = runtimes_.find(job_id); it != runtimes_.end()) return it->second;
  auto info = store_.LoadJob(job_id);
  if (!info) {
    spdlog::warn("job {}: cannot load: {}", job_id, info.error().message());
    return nullptr;
  }
  auto module = modules_(info->config);
  if (!module) {
    spdlog::warn("job {}: config rejected: {}", job_id, module.error().message());
    auto failed = store_.FailJob(job_id, "Parse", module.error().message(), "");
    if (failed && *failed) Finished({**failed});
    return nullptr;
  }
  auto rt = std::make_shared<JobRuntime>();
  rt->settings = parse::CrawlSettings::FromConfig(info->config);
  rt->info = std::move(*info);
  rt->module = std::move(*module);
  runtimes_[job_id] = rt;
  return rt;
}

void Engine::Finished(const std::vector<FinishedJob>& jobs) {
  for (const auto& f : jobs) {
    runtimes_.erase(f.job_id);
    spdlog::info("job {} (run {}): {}{}{} — {}", f.job_id, f.run_id, f.status,
                 f.reason.empty() ? "" : ": ", f.reason, f.result.dump());
    if (f.run_finished) spdlog::info("run {}: {}", f.run_id, f.run_status);
    if (on_finished_) on_finished_(f);
    const int64_t job_id = f.job_id;
    loop_.Post([this, job_id] {
      fetcher_.ForgetScope(job_id);
      runtime_cache_.erase(job_id);
      // Its requests still waiting here are void (the job skipped them when it ended).
      size_t dropped = 0;
      for (auto& [key, host] : hosts_)
        dropped += std::erase_if(host.queue, [&](const Work& w) { return w.lease.job_id == job_id; });
      queued_ -= std::min(queued_, dropped);
      for (auto it = modules_state_.begin(); it != modules_state_.end();) {
        if (it->first.starts_with(std::to_string(job_id) + ' ')) {
          dropped += it->second.parked.size();
          it = modules_state_.erase(it);
        } else {
          ++it;
        }
      }
      outstanding_ -= std::min(outstanding_, dropped);
      std::erase_if(speculations_, [&](const auto& kv) {
        return kv.second->job_id == job_id && kv.second->done;
      });
    });
  }
}

// ---- leasing ----------------------------------------------------------------------------

void Engine::MaybeLease() {
  if (leasing_ || draining_) return;
  const size_t target = options_.concurrency * 2;
  if (outstanding_ >= target + options_.commit_batch) return;
  if (queued_ + in_flight_ >= target) return;
  if (lease_timer_) {
    loop_.CancelTimer(*lease_timer_);
    lease_timer_.reset();
  }
  leasing_ = true;
  const size_t want = std::min(options_.lease_batch, target + options_.commit_batch - outstanding_);
  store_thread_->Post([this, want] {
    auto leased = store_.Lease(want, options_.lease, options_.only_job);
    std::vector<Work> work;
    if (!leased) {
      spdlog::warn("leasing requests failed: {}", leased.error().message());
    } else {
      work.reserve(leased->size());
      std::vector<int64_t> orphans;
      for (auto& l : *leased) {
        auto rt = RuntimeFor(l.job_id);
        if (!rt) {
          orphans.push_back(l.id);
          continue;
        }
        Work w;
        w.host = HostKey(rt->info.run_id, l.spec.url);
        w.lease = std::move(l);
        w.job = std::move(rt);
        work.push_back(std::move(w));
      }
      if (!orphans.empty()) (void)store_.ReleaseLeases(orphans);
    }
    loop_.Post([this, work = std::move(work), failed = !leased]() mutable {
      OnLeased(std::move(work), failed);
    });
  });
}

void Engine::OnLeased(std::vector<Work> work, bool failed) {
  leasing_ = false;
  const size_t got = work.size();
  if (draining_) {
    std::vector<int64_t> ids;
    for (const auto& w : work) ids.push_back(w.lease.id);
    if (!ids.empty())
      store_thread_->Post([this, ids] { (void)store_.ReleaseLeases(ids); });
    return CheckDrained();
  }
  outstanding_ += got;
  queued_ += got;
  for (auto& w : work) {
    runtime_cache_.try_emplace(w.lease.job_id, w.job);
    HostFor(w).queue.push_back(std::move(w));
  }
  Dispatch();
  if (got > 0 && !failed) return MaybeLease();
  // Nothing to do (or the database is away): look again in a while.
  lease_timer_ = loop_.AddTimer(options_.idle_poll, [this] {
    lease_timer_.reset();
    MaybeLease();
  });
}

// ---- downloading ------------------------------------------------------------------------

Engine::Host& Engine::HostFor(const Work& w) {
  auto [it, fresh] = hosts_.try_emplace(w.host);
  if (fresh) {
    it->second.run_id = w.job->info.run_id;
    it->second.origin = OriginOf(w.lease.spec.url);
  }
  return it->second;
}

std::chrono::milliseconds Engine::BaseDelay(const Host& host,
                                            const parse::CrawlSettings& s) const {
  auto delay = s.politeness.min_delay;
  if (host.rules)
    if (auto cd = host.rules->crawl_delay())
      delay = std::max(delay, std::min(*cd, s.politeness.max_retry_after));
  return delay;
}

void Engine::Dispatch() {
  const auto now = clock_.Monotonic();
  std::optional<Clock::MonoTime> wake;
  for (auto& [name, host] : hosts_) {
    if (in_flight_ >= options_.concurrency) break;
    DispatchHost(host, now, wake);
  }
  if (wake && (!dispatch_timer_ || *wake < dispatch_at_)) {
    if (dispatch_timer_) loop_.CancelTimer(*dispatch_timer_);
    dispatch_at_ = *wake;
    const auto delay = std::chrono::duration_cast<milliseconds>(*wake - now) + milliseconds(1);
    dispatch_timer_ = loop_.AddTimer(delay, [this] {
      dispatch_timer_.reset();
      Dispatch();
    });
  }
}

void Engine::DispatchHost(Host& host, Clock::MonoTime now,
                          std::optional<Clock::MonoTime>& wake) {
  auto wake_at = [&](Clock::MonoTime t) {
    if (!wake || t < *wake) wake = t;
  };
  while (!host.queue.empty() && in_flight_ < options_.concurrency) {
    Work& w = host.queue.front();
    const auto& s = w.job->settings;
    // robots.txt first: nothing goes to a host before its rules are known.
    if (s.politeness.robots_txt && host.robots != Host::Robots::kReady) {
      if (host.robots == Host::Robots::kUnknown) StartRobots(host, w);
      return;
    }
    if (s.politeness.robots_txt && host.rules && !host.rules->Allowed(w.lease.spec.url)) {
      RequestResult r;
      r.request_id = w.lease.id;
      r.job_id = w.lease.job_id;
      r.url = w.lease.spec.url;
      r.state = RequestResult::State::kSkipped;
      r.error_message = "disallowed by robots.txt";
      host.queue.pop_front();
      --queued_;
      AddResult(std::move(r));
      continue;
    }
    // A page type paused after repeated failures waits out its cool-down.
    if (auto m = modules_state_.find(ModuleKey(w.lease.job_id, w.lease.spec.page_type));
        m != modules_state_.end() && m->second.paused_until > now) {
      wake_at(m->second.paused_until);
      m->second.parked.push_back(std::move(w));
      host.queue.pop_front();
      --queued_;
      continue;
    }
    if (host.active >= s.politeness.per_host_concurrency) return;
    if (host.backoff_until > now) return wake_at(host.backoff_until);
    const auto base = BaseDelay(host, s);
    if (base.count() > 0) host.shared = true;
    if (host.shared) {
      // Reserved in Postgres, so the host's rate holds across processes.
      if (!host.reserved_start) {
        if (!host.reserving) Reserve(host, base);
        return;
      }
      if (*host.reserved_start > now) return wake_at(*host.reserved_start);
      host.reserved_start.reset();
    } else if (host.next_start > now) {
      return wake_at(host.next_start);
    }
    host.next_start = now + std::max(base, host.delay);
    ++host.active;
    ++host.requests;
    Work next = std::move(host.queue.front());
    host.queue.pop_front();
    --queued_;
    StartFetch(std::move(next));
  }
}

void Engine::StartRobots(Host& host, const Work& w) {
  host.robots = Host::Robots::kFetching;
  const std::string key = w.host;
  const std::string origin = host.origin;
  const int64_t run_id = host.run_id;
  auto job = w.job;
  const std::string agent =
      job->settings.user_agent.value_or(options_.default_user_agent);
  auto ready = [this, key, agent](StoredRobots stored) {
    auto it = hosts_.find(key);
    if (it == hosts_.end()) return;
    it->second.rules = std::make_shared<const RobotsRules>(
        RobotsRules::FromStatus(stored.status, stored.body, agent));
    it->second.robots = Host::Robots::kReady;
    Dispatch();
  };
  AcquireRobots(run_id, origin, job, agent, ready);
}

// Host thread: the stored robots.txt, or a claim to fetch it, or a look again shortly (another
// extractor of the run is fetching it: robots.txt is fetched once per run and host).
void Engine::AcquireRobots(int64_t run_id, std::string origin,
                           std::shared_ptr<const JobRuntime> job, std::string agent,
                           std::function<void(StoredRobots)> ready) {
  host_thread_->Post([this, run_id, origin, job, agent, ready] {
    auto stored = store_.GetRobots(run_id, origin);
    if (stored && *stored) return loop_.Post([ready, s = **stored] { ready(s); });
    const auto claim_for = job->settings.request.timeout + job->settings.request.connect_timeout +
                           milliseconds(5'000);
    auto claimed = store_.ClaimRobots(run_id, origin, claim_for);
    if (claimed && !*claimed) {
      // Someone else fetches it: look again in a moment.
      return loop_.Post([this, run_id, origin, job, agent, ready] {
        if (draining_) return;
        loop_.AddTimer(milliseconds(100), [this, run_id, origin, job, agent, ready] {
          AcquireRobots(run_id, origin, job, agent, ready);
        });
      });
    }
    // Claimed (or the database is away: fetch it ourselves rather than stall).
    loop_.Post([this, run_id, origin, job, agent, ready] {
      RequestSpec robots_spec;
      robots_spec.url = origin + "/robots.txt";
      FetchRequest req = MakeFetch(*job, robots_spec, job->info.job_id);
      req.method = "GET";
      req.body.clear();
      req.user_agent = agent;
      req.max_bytes = RobotsRules::kMaxBodyBytes;
      ++speculating_;  // in flight outside the request accounting, waited for by Drain
      fetcher_.Fetch(std::move(req), [this, alive = std::weak_ptr<int>(life_), run_id, origin,
                                      agent, job, ready](Result<FetchResponse> r,
                                                         std::string kind) {
        if (alive.expired()) return;
        --speculating_;
        StoredRobots fetched;
        if (r) {
          fetched.status = r->status;
          fetched.body = std::move(r->body);
        } else {
          spdlog::warn("run {}: robots.txt of {} unreachable ({}: {}): nothing of it is "
                       "crawled (RFC 9309)",
                       run_id, origin, kind, r.error().message());
        }
        const auto rules = RobotsRules::FromStatus(fetched.status, fetched.body, agent);
        std::optional<milliseconds> delay;
        if (auto cd = rules.crawl_delay())
          delay = std::min(*cd, job->settings.politeness.max_retry_after);
        host_thread_->Post([this, run_id, origin, fetched, delay, ready] {
          auto stored = store_.PutRobots(run_id, origin, fetched, delay);
          loop_.Post([ready, s = stored ? *stored : fetched] { ready(s); });
        });
      });
    });
  });
}

void Engine::Reserve(Host& host, milliseconds min_delay) {
  host.reserving = true;
  const int64_t run_id = host.run_id;
  const std::string origin = host.origin;
  const std::string key = HostKey(run_id, origin);
  host_thread_->Post([this, run_id, origin, key, min_delay] {
    auto slot = store_.ReserveSlot(run_id, origin, min_delay);
    loop_.Post([this, key, min_delay, slot = std::move(slot)] {
      auto it = hosts_.find(key);
      if (it == hosts_.end()) return;
      Host& h = it->second;
      h.reserving = false;
      const auto now = clock_.Monotonic();
      if (slot) {
        h.reserved_start = now + slot->wait;
        h.delay = slot->delay;
      } else {
        // The database is away: keep the configured pace in this process.
        spdlog::warn("reserving a request slot on {} failed: {}", h.origin,
                     slot.error().message());
        h.reserved_start = std::max(now, h.next_start);
        h.delay = min_delay;
      }
      Dispatch();
    });
  });
}

void Engine::SlowDown(Host& host, const parse::CrawlSettings& s,
                      const std::optional<std::string>& retry_after) {
  const auto cap = s.politeness.max_retry_after;
  auto backoff = std::max(milliseconds(1000), host.delay * 2);
  if (retry_after)
    if (auto ra = ParseRetryAfter(*retry_after, clock_.Now())) backoff = *ra;
  backoff = std::min(backoff, cap);
  host.delay = std::min(std::max(milliseconds(1000), host.delay * 2), cap);
  host.backoff_until = std::max(host.backoff_until, clock_.Monotonic() + backoff);
  host.shared = true;
  host.reserved_start.reset();
  spdlog::info("run {}: {} answered 429/503: backing off {} ms, then one request per {} ms",
               host.run_id, host.origin, backoff.count(), host.delay.count());
  const int64_t run_id = host.run_id;
  const std::string origin = host.origin;
  host_thread_->Post([this, run_id, origin, backoff, cap] {
    if (auto st = store_.SlowDown(run_id, origin, backoff, cap); !st)
      spdlog::warn("recording the backoff of {} failed: {}", origin, st.error().message());
  });
}

std::string Engine::ModuleKey(int64_t job_id, const std::string& page_type) {
  return std::to_string(job_id) + ' ' + page_type;
}

void Engine::NoteModuleOutcome(const Work& w, bool failed) {
  const auto& s = w.job->settings;
  auto& m = modules_state_[ModuleKey(w.lease.job_id, w.lease.spec.page_type)];
  if (!failed) {
    m.consecutive_failures = 0;
    return;
  }
  if (++m.consecutive_failures < s.errors.module_pause_after) return;
  m.consecutive_failures = 0;
  m.paused_until = clock_.Monotonic() + s.errors.module_cooldown;
  spdlog::warn("job {}: page type '{}' paused for {} ms after {} consecutive failures",
               w.lease.job_id, w.lease.spec.page_type, s.errors.module_cooldown.count(),
               s.errors.module_pause_after);
  const std::string key = ModuleKey(w.lease.job_id, w.lease.spec.page_type);
  loop_.AddTimer(s.errors.module_cooldown + milliseconds(1), [this, key] {
    auto it = modules_state_.find(key);
    if (it == modules_state_.end()) return;
    auto parked = std::move(it->second.parked);
    it->second.parked.clear();
    spdlog::info("job page type {} resumes with {} waiting request(s)", key, parked.size());
    for (auto& w : parked) {
      ++queued_;
      HostFor(w).queue.push_back(std::move(w));
    }
    Dispatch();
  });
}

FetchRequest Engine::MakeFetch(const JobRuntime& job, const RequestSpec& spec,
                               int64_t job_id) const {
  const auto& s = job.settings;
  FetchRequest req;
  req.url = spec.url;
  req.method = spec.method;
  req.body = spec.body;
  for (const auto& [k, v] : s.request.headers) req.headers.emplace_back(k, v);
  if (s.request.body_is_json && !s.request.headers.contains("Content-Type"))
    req.headers.emplace_back("Content-Type", "application/json");
  req.user_agent =
      s.request.user_agent.value_or(s.user_agent.value_or(options_.default_user_agent));
  req.timeout = s.request.timeout;
  req.connect_timeout = s.request.connect_timeout;
  req.max_bytes = static_cast<size_t>(s.request.max_bytes);
  req.max_redirects = s.request.max_redirects;
  req.proxy = s.request.proxy;
  req.allow_private_network = s.allow_private_network;
  req.cookies = s.request.cookies;
  req.cookie_scope = job_id;
  return req;
}

std::string Engine::SpeculationKey(int64_t job_id, const RequestSpec& s) {
  return fmt::format("{}|{}|{}|{}|{}|{}", job_id, s.method, s.page_type, s.depth,
                     s.pagination_index, s.url);
}

void Engine::StartFetch(Work w) {
  ++in_flight_;
  if (!speculations_.empty()) {
    auto it = speculations_.find(SpeculationKey(w.lease.job_id, w.lease.spec));
    if (it != speculations_.end()) {
      auto spec = it->second;
      if (!spec->done) {
        spec->waiters.push_back(std::move(w));
      } else {
        auto shared = std::make_shared<Work>(std::move(w));
        loop_.Post([this, spec, shared] { Consume(*spec, std::move(*shared)); });
      }
      return;
    }
  }
  auto req = MakeFetch(*w.job, w.lease.spec, w.lease.job_id);
  auto shared = std::make_shared<Work>(std::move(w));
  fetcher_.Fetch(std::move(req), [this, alive = std::weak_ptr<int>(life_), shared](
                                     Result<FetchResponse> r, std::string kind) {
    if (alive.expired()) return;  // the engine was destroyed with this fetch in flight
    OnFetched(std::move(*shared), std::move(r), kind);
  });
}

// Pagination is the one chain in a crawl that cannot run in parallel: page N+1 is known only
// once page N is parsed. Recording page N and leasing N+1 through Postgres takes a round trip or
// two, so the next page is fetched and parsed speculatively as soon as it is seen; when its
// lease arrives the result is ready. Only for hosts without a politeness delay, a few pages
// ahead at most; a speculation nobody leases (another extractor took it) is just dropped.
void Engine::Speculate(const std::shared_ptr<const JobRuntime>& job, const RequestSpec& spec,
                       int64_t job_id, int ahead) {
  constexpr size_t kMaxSpeculations = 64;
  constexpr int kMaxAhead = 3;  // pages beyond the last recorded one; also the waste at a stop
  if (ahead > kMaxAhead || !options_.speculate) return;
  if (draining_ || job->settings.politeness.min_delay.count() > 0) return;
  if (speculations_.size() >= kMaxSpeculations) return;
  auto key = SpeculationKey(job_id, spec);
  if (speculations_.contains(key)) return;
  auto entry = std::make_shared<Speculation>();
  entry->key = key;
  entry->job_id = job_id;
  speculations_.emplace(key, entry);
  ++speculating_;
  fetcher_.Fetch(MakeFetch(*job, spec, job_id),
                 [this, alive = std::weak_ptr<int>(life_), entry, job, spec, ahead](
                     Result<FetchResponse> r, std::string) {
    if (alive.expired()) return;
    {
      std::lock_guard lock(stats_mutex_);
      ++stats_.fetched;
      if (r) stats_.bytes += r->bytes;
    }
    if (!r || r->status < 200 || r->status >= 300) {
      --speculating_;
      return Resolve(entry, std::nullopt);  // the real request will fetch and classify it
    }
    auto response = std::make_shared<FetchResponse>(std::move(*r));
    parse_threads_->Post([this, entry, job, spec, response, ahead] {
      auto result = ParseResponse(*job, spec, *response);
      loop_.Post([this, entry, job, ahead, result = std::move(result)]() mutable {
        --speculating_;
        if (result.state == RequestResult::State::kDone)
          for (const auto& next : result.requests)
            if (next.is_pagination) Speculate(job, next, entry->job_id, ahead + 1);
        Resolve(entry, std::move(result));
      });
    }, true);
  });
}

void Engine::Resolve(const std::shared_ptr<Speculation>& entry,
                     std::optional<RequestResult> result) {
  entry->done = true;
  entry->result = std::move(result);
  auto waiters = std::move(entry->waiters);
  entry->waiters.clear();
  for (auto& w : waiters) Consume(*entry, std::move(w));
  if (fold_timer_) Flush();  // a leading page was waiting for this one
  CheckDrained();
}

void Engine::Consume(Speculation& entry, Work w) {
  speculations_.erase(entry.key);  // entry stays alive: the caller holds it
  if (!entry.result) {
    // The speculative fetch failed: fetch for real, and let that classify and retry.
    --in_flight_;
    return StartFetch(std::move(w));
  }
  RequestResult r = *entry.result;
  r.request_id = w.lease.id;
  r.job_id = w.lease.job_id;
  --HostFor(w).active;
  --in_flight_;
  AddResult(std::move(r));
  Dispatch();
}

RequestResult Engine::ParseResponse(const JobRuntime& job, const RequestSpec& spec,
                                    const FetchResponse& resp) {
  Page page;
  page.url = resp.final_url.empty() ? spec.url : resp.final_url;
  page.content_type = resp.content_type;
  page.body = resp.body;
  page.status = resp.status;
  page.page_type = spec.page_type;
  page.depth = spec.depth;
  page.pagination_index = spec.pagination_index;
  RequestResult r;
  r.status_code = resp.status;
  r.bytes = resp.bytes;
  r.url = page.url;
  r.parsed = true;
  Result<ParseOutcome> outcome = Error(ErrorCode::kInternal, "not parsed");
  try {
    outcome = job.module->Parse(page);
  } catch (const std::exception& e) {
    outcome = Error(ErrorCode::kInternal, std::string("parser threw: ") + e.what(), false);
  }
  if (outcome) {
    r.state = RequestResult::State::kDone;
    r.items = std::move(outcome->items);
    r.requests = std::move(outcome->requests);
    r.item_errors = outcome->item_errors.size();
    for (const auto& e : outcome->item_errors)
      spdlog::debug("job {}: {}: item dropped: {}", job.info.job_id, page.url, e);
  } else {
    r.state = RequestResult::State::kFailed;
    r.error_class = "Parse";
    r.error_message = outcome.error().message();
  }
  return r;
}

RequestResult Engine::Failure(const Work& w, std::string error_class, std::string message,
                              bool retryable, int status, std::optional<std::string> retry_after) {
  const auto& s = w.job->settings;
  RequestResult r;
  r.request_id = w.lease.id;
  r.job_id = w.lease.job_id;
  r.status_code = status;
  r.url = w.lease.spec.url;
  r.error_class = std::move(error_class);
  r.error_message = std::move(message);
  // attempts counts this one; retries made so far = attempts - 1.
  if (retryable && w.lease.attempts <= s.retry.max_retries) {
    r.state = RequestResult::State::kRetry;
    auto delay = RetryDelay(s, w.lease.attempts);
    if (retry_after) {
      if (auto ra = ParseRetryAfter(*retry_after, clock_.Now()))
        delay = std::max(delay, std::min(*ra, s.politeness.max_retry_after));
    }
    r.retry_delay = delay;
  } else {
    r.state = RequestResult::State::kFailed;
  }
  return r;
}

void Engine::OnFetched(Work w, Result<FetchResponse> response, const std::string& failure_kind) {
  auto& host = HostFor(w);
  --host.active;
  {
    std::lock_guard lock(stats_mutex_);
    ++stats_.fetched;
    if (response) stats_.bytes += response->bytes;
  }
  if (!response) {
    --in_flight_;
    const auto& e = response.error();
    ++host.errors;
    auto r = Failure(w, "Download",
                     failure_kind.empty() ? e.message() : failure_kind + ": " + e.message(),
                     e.retryable(), 0, std::nullopt);
    NoteModuleOutcome(w, r.state == RequestResult::State::kFailed);
    AddResult(std::move(r));
    Dispatch();
    return;
  }
  const int status = response->status;
  if (status < 200 || status >= 300) {
    --in_flight_;
    std::string cls = "HttpStatus";
    bool retryable = status == 408 || status >= 500;
    if (status == 401 || status == 403) cls = "Auth";
    if (status == 429) {
      cls = "RateLimit";
      retryable = true;
    }
    ++host.errors;
    if (status == 429 || status == 503) SlowDown(host, w.job->settings, response->retry_after);
    auto r = Failure(w, cls, "HTTP " + std::to_string(status) + " from " + response->final_url,
                     retryable, status, response->retry_after);
    r.bytes = response->bytes;
    NoteModuleOutcome(w, r.state == RequestResult::State::kFailed);
    AddResult(std::move(r));
    Dispatch();
    return;
  }
  NoteModuleOutcome(w, false);
  if (host.delay > BaseDelay(host, w.job->settings) && host.backoff_until <= clock_.Monotonic())
    host.delay = std::max(BaseDelay(host, w.job->settings),
                          std::chrono::duration_cast<milliseconds>(host.delay * 0.8));
  // Parse off the loop thread.
  const bool urgent = w.lease.spec.is_pagination || w.lease.spec.depth == 0;
  auto shared = std::make_shared<std::pair<Work, FetchResponse>>(std::move(w),
                                                                 std::move(*response));
  parse_threads_->Post([this, shared] {
    auto& [work, resp] = *shared;
    RequestResult r = ParseResponse(*work.job, work.lease.spec, resp);
    r.request_id = work.lease.id;
    r.job_id = work.lease.job_id;
    loop_.Post([this, r = std::move(r)]() mutable {
      --in_flight_;
      AddResult(std::move(r));
      Dispatch();
    });
  }, urgent);
}

// ---- recording --------------------------------------------------------------------------

void Engine::AddResult(RequestResult result) {
  {
    std::lock_guard lock(stats_mutex_);
    if (result.state == RequestResult::State::kDone) ++stats_.parsed;
    if (result.state == RequestResult::State::kFailed) ++stats_.failed;
    if (result.state == RequestResult::State::kRetry) ++stats_.retried;
  }
  if (result.state == RequestResult::State::kFailed)
    spdlog::warn("job {} request {}: {} error: {}", result.job_id, result.request_id,
                 result.error_class, result.error_message);
  // A page that leads to more pages is recorded first: its links are the crawl's critical path.
  const bool leads = Leads(result);
  if (leads && result.state == RequestResult::State::kDone) {
    if (auto rt = runtime_cache_.find(result.job_id); rt != runtime_cache_.end())
      for (const auto& next : result.requests)
        if (next.is_pagination) Speculate(rt->second, next, result.job_id, 1);
  }
  if (leads) {
    pending_results_.insert(pending_results_.begin(), std::move(result));
  } else {
    pending_results_.push_back(std::move(result));
  }
  if (pending_results_.size() >= options_.commit_batch || draining_ || leads || Starving())
    return Flush();
  if (!flush_timer_)
    flush_timer_ = loop_.AddTimer(options_.commit_interval, [this] {
      flush_timer_.reset();
      Flush();
    });
}

void Engine::Flush() {
  if (committing_ || pending_results_.empty()) return;
  // A leading page whose next page is being fetched ahead waits for it (a millisecond or two,
  // at most kFoldWait) so that one commit records both: the commit, not the fetch, is the slow
  // step of the pagination chain.
  if (!draining_ && !fold_waited_ && NextPageComing(pending_results_.front())) {
    if (!fold_timer_) {
      fold_timer_ = loop_.AddTimer(kFoldWait, [this] {
        fold_timer_.reset();
        fold_waited_ = true;
        Flush();
      });
    }
    return;
  }
  fold_waited_ = false;
  if (fold_timer_) {
    loop_.CancelTimer(*fold_timer_);
    fold_timer_.reset();
  }
  if (flush_timer_) {
    loop_.CancelTimer(*flush_timer_);
    flush_timer_.reset();
  }
  committing_ = true;
  const size_t target = options_.concurrency * 2 + options_.commit_batch;
  const size_t lease_new = draining_ ? 0 : target - std::min(target, outstanding_);
  auto batch = std::make_shared<std::vector<RequestResult>>();
  // Results that lead to more pages sit at the front, so they are always in the batch; the
  // rest fill it up to commit_batch. (Sending them alone, in a smaller transaction, made the
  // pagination chain wait for the big one before it: measured slower.)
  size_t leading = 0;
  while (leading < pending_results_.size() && Leads(pending_results_[leading])) ++leading;
  const size_t take = std::min(pending_results_.size(), std::max(leading, options_.commit_batch));
  if (take == pending_results_.size()) {
    batch->swap(pending_results_);
  } else {
    batch->assign(std::make_move_iterator(pending_results_.begin()),
                  std::make_move_iterator(pending_results_.begin() +
                                          static_cast<std::ptrdiff_t>(take)));
    pending_results_.erase(pending_results_.begin(),
                           pending_results_.begin() + static_cast<std::ptrdiff_t>(take));
  }
  const size_t leased_results = batch->size();
  auto riders = FoldChain(batch.get());
  store_thread_->Post([this, batch, lease_new, leased_results, riders = std::move(riders)] {
    std::vector<bool> recorded(batch->size() - leased_results, false);
    std::map<int64_t, JobLimits> limits;
    std::vector<Work> discovered;
    size_t left_pending = 1;  // unknown when the commit fails: look
    for (const auto& r : *batch) {
      if (limits.contains(r.job_id)) continue;
      auto rt = runtimes_.find(r.job_id);
      if (rt == runtimes_.end()) continue;
      const auto& s = rt->second->settings;
      JobLimits lim;
      lim.max_pages = s.limits.max_pages;
      if (s.limits.max_depth) lim.max_depth = static_cast<int>(*s.limits.max_depth);
      lim.max_requests = s.limits.max_requests;
      lim.abort_after_errors = s.errors.run_abort_after;
      lim.abort_error_rate = s.errors.run_abort_error_rate;
      limits[r.job_id] = lim;
    }
    auto report = CommitDurably(*batch, limits, lease_new, leased_results);
    if (report) {
      left_pending = report->left_pending;
      for (size_t i : report->follow_ons_recorded)
        if (i >= leased_results) recorded[i - leased_results] = true;
      for (auto& l : report->leased) {
        auto rt = RuntimeFor(l.job_id);
        if (!rt) continue;  // its job ended; the lease expires harmlessly
        Work w;
        w.host = HostKey(rt->info.run_id, l.spec.url);
        w.lease = std::move(l);
        w.job = std::move(rt);
        discovered.push_back(std::move(w));
      }
      if (report->dropped > 0)
        spdlog::warn("{} result(s) dropped: their leases expired and another extractor took "
                     "them",
                     report->dropped);
      Finished(report->finished);
    }
    const size_t n = leased_results;
    loop_.Post([this, n, discovered = std::move(discovered), left_pending, riders,
                recorded = std::move(recorded)]() mutable {
      OnCommitted(n, std::move(discovered), left_pending, riders, recorded);
    });
  });
}

// On the store thread. A commit that cannot reach the database is retried until it can (while
// draining, a bounded number of times): the results are the only record of the work, and their
// leases stay this extractor's while it keeps renewing them. A commit the database refuses for
// what it holds is tried result by result, so one bad result cannot take the others with it;
// a result still refused is recorded as failed (Store) without its items and links, and one
// that cannot even be recorded has its lease expired at once, so another attempt redoes it
// (bounded by max_lease_attempts). Nothing leased is ever left held by nobody.
Result<CommitReport> Engine::CommitDurably(const std::vector<RequestResult>& batch,
                                           const std::map<int64_t, JobLimits>& limits,
                                           size_t lease_new, size_t leased_results) {
  Result<CommitReport> report = Error(ErrorCode::kUnavailable, "not attempted");
  for (int attempt = 0;; ++attempt) {
    const auto commit_started = std::chrono::steady_clock::now();
    report = store_.Commit(batch, limits, lease_new, options_.lease);
    {
      std::lock_guard lock(stats_mutex_);
      stats_.commit_seconds +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - commit_started).count();
      ++stats_.commits;
      if (report) {
        stats_.committed += report->recorded;
        stats_.dropped += report->dropped;
      }
    }
    if (report || !report.error().retryable()) break;
    if (stopping_.load() && attempt >= 20) break;
    if (attempt == 0 || attempt % 10 == 0)
      spdlog::warn("recording {} result(s) failed ({}); retrying until the database answers",
                   batch.size(), report.error().message());
    std::this_thread::sleep_for(
        std::min(milliseconds(5000), milliseconds(100 << std::min(attempt, 5))));
  }
  if (report) return report;
  std::vector<int64_t> unrecorded;
  for (size_t i = 0; i < leased_results; ++i) unrecorded.push_back(batch[i].request_id);
  if (report.error().retryable()) {
    spdlog::error("recording {} result(s) failed while stopping: {}; their requests are redone "
                  "when their leases expire",
                  batch.size(), report.error().message());
    return report;
  }
  spdlog::error("the database refused a commit of {} result(s) ({}); recording them one by one",
                batch.size(), report.error().message());
  CommitReport merged;
  unrecorded.clear();
  for (size_t i = 0; i < leased_results; ++i) {
    std::vector<RequestResult> one{batch[i]};
    auto single = store_.Commit(one, limits, lease_new, options_.lease);
    if (!single && !single.error().retryable()) {
      RequestResult failed;
      failed.request_id = batch[i].request_id;
      failed.job_id = batch[i].job_id;
      failed.url = batch[i].url;
      failed.state = RequestResult::State::kFailed;
      failed.error_class = "Store";
      failed.error_message = "the database refused this page's results: " +
                             single.error().message();
      spdlog::error("request {}: {}", failed.request_id, failed.error_message);
      single = store_.Commit({failed}, limits, 0, options_.lease);
    }
    if (!single) {
      unrecorded.push_back(batch[i].request_id);
      continue;
    }
    merged.recorded += single->recorded;
    merged.dropped += single->dropped;
    merged.left_pending += single->left_pending;
    for (auto& f : single->finished) merged.finished.push_back(std::move(f));
    for (auto& l : single->leased) merged.leased.push_back(std::move(l));
  }
  if (!unrecorded.empty()) {
    if (auto st = store_.ExpireLeases(unrecorded); !st)
      spdlog::warn("expiring {} lease(s) failed: {}", unrecorded.size(), st.error().message());
  }
  return merged;
}

void Engine::OnCommitted(size_t count, std::vector<Work> discovered, size_t left_pending,
                         const std::vector<std::shared_ptr<Speculation>>& riders,
                         const std::vector<bool>& recorded) {
  committing_ = false;
  for (size_t i = 0; i < riders.size(); ++i) {
    auto it = speculations_.find(riders[i]->key);
    if (it == speculations_.end() || it->second != riders[i]) continue;  // a lease took it
    if (recorded[i]) {
      speculations_.erase(it);
      std::lock_guard lock(stats_mutex_);
      ++stats_.parsed;
    } else {
      it->second->riding = false;
    }
  }
  outstanding_ -= std::min(outstanding_, count);
  if (!discovered.empty()) {
    if (draining_) {
      std::vector<int64_t> ids;
      for (const auto& w : discovered) ids.push_back(w.lease.id);
      store_thread_->Post([this, ids] { (void)store_.ReleaseLeases(ids); });
    } else {
      outstanding_ += discovered.size();
      queued_ += discovered.size();
      for (auto& w : discovered) {
        runtime_cache_.try_emplace(w.lease.job_id, w.job);
        HostFor(w).queue.push_back(std::move(w));
      }
      Dispatch();
    }
  }
  if (!pending_results_.empty() &&
      (pending_results_.size() >= options_.commit_batch || draining_ || Starving()))
    Flush();
  else if (!pending_results_.empty() && !flush_timer_)
    flush_timer_ = loop_.AddTimer(options_.commit_interval, [this] {
      flush_timer_.reset();
      Flush();
    });
  if (draining_) return CheckDrained();
  // The commit leased us what it discovered (up to our target). Only when it left some pending
  // is there surely more to lease now; work from elsewhere (other extractors' overflow, new
  // jobs of other processes) is found by the idle poll.
  if (left_pending > 0) return MaybeLease();
  if (!lease_timer_ && !leasing_) {
    lease_timer_ = loop_.AddTimer(options_.idle_poll, [this] {
      lease_timer_.reset();
      MaybeLease();
    });
  }
}

// The pagination chain advances one page per commit: page N+1 is leased by the transaction
// that records page N. When N+1 (and N+2...) were already fetched and parsed ahead, their results
// ride along as follow-ons, and the same transaction records them as soon as it has inserted
// their requests and leased them to us: several pages of the chain per commit.
std::vector<std::shared_ptr<Engine::Speculation>> Engine::FoldChain(
    std::vector<RequestResult>* batch) {
  constexpr size_t kMaxFollowOns = 8;
  std::vector<std::shared_ptr<Speculation>> riders;  // one per follow-on, in batch order
  const size_t limit = batch->size() + kMaxFollowOns;
  const size_t first_follow_on = batch->size();
  for (size_t i = 0; i < batch->size() && batch->size() < limit; ++i) {
    if ((*batch)[i].state != RequestResult::State::kDone || !Leads((*batch)[i])) continue;
    const int64_t job_id = (*batch)[i].job_id;
    std::vector<RequestSpec> next;
    for (const auto& spec : (*batch)[i].requests)
      if (spec.is_pagination) next.push_back(spec);
    for (auto& spec : next) {
      auto it = speculations_.find(SpeculationKey(job_id, spec));
      if (it == speculations_.end()) continue;
      Speculation& entry = *it->second;
      if (!entry.done || entry.riding || !entry.result || !entry.waiters.empty() ||
          entry.result->state != RequestResult::State::kDone)
        continue;
      // The entry stays until the commit says whether it recorded the page (OnCommitted); if
      // not, the page's lease, whenever it comes, still finds the result here.
      entry.riding = true;
      riders.push_back(it->second);
      RequestResult f = *entry.result;
      f.request_id = 0;
      f.job_id = job_id;
      f.speculated = std::move(spec);
      batch->push_back(std::move(f));
      if (batch->size() >= limit) break;
    }
  }
  // The pages after the last follow-ons are now the next ones after a recorded page: fetch them
  // ahead too (the speculations that would have fetched them stopped at kMaxAhead).
  for (size_t i = first_follow_on; i < batch->size(); ++i) {
    const RequestResult& f = (*batch)[i];
    auto rt = runtime_cache_.find(f.job_id);
    if (rt == runtime_cache_.end()) continue;
    for (const auto& spec : f.requests) {
      if (spec.is_pagination) Speculate(rt->second, spec, f.job_id, 1);
    }
  }
  return riders;
}

bool Engine::NextPageComing(const RequestResult& r) const {
  if (r.state != RequestResult::State::kDone) return false;
  for (const auto& next : r.requests) {
    if (!next.is_pagination) continue;
    auto it = speculations_.find(SpeculationKey(r.job_id, next));
    if (it != speculations_.end() && !it->second->done && it->second->waiters.empty()) return true;
  }
  return false;
}

bool Engine::Leads(const RequestResult& r) {
  for (const auto& next : r.requests)
    if (next.is_pagination) return true;
  return false;
}

bool Engine::Starving() const {
  // Fewer requests waiting or running than the pipeline can take: recording now (and leasing
  // what the results discovered) beats batching.
  return queued_ + in_flight_ < options_.concurrency / 8;
}

// ---- maintenance and shutdown -----------------------------------------------------------

void Engine::Maintain() {
  std::vector<std::tuple<int64_t, std::string, int64_t, int64_t>> counts;
  for (auto& [key, h] : hosts_) {
    if (h.requests == 0 && h.errors == 0) continue;
    counts.emplace_back(h.run_id, h.origin, h.requests, h.errors);
    h.requests = h.errors = 0;
  }
  if (!counts.empty())
    host_thread_->Post([this, counts = std::move(counts)] {
      if (auto st = store_.AddHostCounts(counts); !st)
        spdlog::warn("host counters not recorded: {}", st.error().message());
    });
  if (maintaining_) return;
  maintaining_ = true;
  store_thread_->Post([this] {
    if (auto renewed = store_.RenewLeases(options_.lease); !renewed)
      spdlog::warn("renewing leases failed: {}", renewed.error().message());
    auto dead = store_.ReclaimExpired(options_.max_lease_attempts, options_.lease);
    std::vector<RequestResult> failed;
    if (dead) {
      for (const auto& l : *dead) {
        RequestResult r;
        r.request_id = l.id;
        r.job_id = l.job_id;
        r.state = RequestResult::State::kFailed;
        r.error_class = "Download";
        r.error_message = "given up: " + std::to_string(options_.max_lease_attempts) +
                          " extractors took this request and stopped without finishing it";
        failed.push_back(std::move(r));
      }
      if (!failed.empty()) {
        if (auto rep = store_.Commit(failed, {}); rep) Finished(rep->finished);
      }
    }
    if (auto stalled = store_.AbortStalled(); stalled) {
      for (const auto& f : *stalled)
        spdlog::warn("job {} aborted by its watchdog: {}", f.job_id, f.reason);
      Finished(*stalled);
    } else {
      spdlog::warn("watchdog check failed: {}", stalled.error().message());
    }
    loop_.Post([this] { maintaining_ = false; });
  });
}

void Engine::Drain(std::function<void()> done) {
  draining_ = true;
  stopping_ = true;
  drained_ = std::move(done);
  if (lease_timer_) {
    loop_.CancelTimer(*lease_timer_);
    lease_timer_.reset();
  }
  if (fold_timer_) {
    loop_.CancelTimer(*fold_timer_);
    fold_timer_.reset();
    Flush();
  }
  // Requests not started go back to the frontier for another extractor.
  std::vector<int64_t> unstarted;
  for (auto& [name, host] : hosts_) {
    for (const auto& w : host.queue) unstarted.push_back(w.lease.id);
    host.queue.clear();
  }
  outstanding_ -= std::min(outstanding_, unstarted.size());
  queued_ = 0;
  if (!unstarted.empty()) {
    store_thread_->Post([this, unstarted] {
      if (auto st = store_.ReleaseLeases(unstarted); !st)
        spdlog::warn("handing back {} requests failed: {}", unstarted.size(),
                     st.error().message());
    });
  }
  Flush();
  CheckDrained();
  // Fetches that never end (a peer that hangs past every timeout) do not hold shutdown: their
  // requests stay leased and go back to the frontier when the leases expire.
  loop_.AddTimer(options_.drain_timeout, [this] {
    if (!drained_) return;
    spdlog::warn("stopping with {} request(s) still in flight; their leases will expire",
                 in_flight_ + speculating_);
    auto done = std::move(drained_);
    drained_ = nullptr;
    done();
  });
}

void Engine::CheckDrained() {
  if (!draining_ || !drained_) return;
  if (leasing_ || in_flight_ > 0 || speculating_ > 0 || committing_ ||
      !pending_results_.empty())
    return;
  if (maintain_timer_) {
    loop_.CancelTimer(*maintain_timer_);
    maintain_timer_.reset();
  }
  if (dispatch_timer_) {
    loop_.CancelTimer(*dispatch_timer_);
    dispatch_timer_.reset();
  }
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
