#include "extractor/engine/robots_gate.hpp"

#include <algorithm>

#include <spdlog/spdlog.h>

namespace celeriac::extractor {

using std::chrono::milliseconds;

RobotsGate::RobotsGate(Scheduler& loop, Executor& host_thread, HostLedger& ledger,
                       Fetcher& fetcher, std::string default_user_agent)
    : loop_(loop),
      host_thread_(host_thread),
      ledger_(ledger),
      fetcher_(fetcher),
      default_user_agent_(std::move(default_user_agent)) {}

void RobotsGate::Acquire(int64_t run_id, const std::string& origin,
                         std::shared_ptr<const JobRuntime> job, Ready ready) {
  auto ask = std::make_shared<Ask>();
  ask->run_id = run_id;
  ask->origin = origin;
  ask->agent = job->settings.user_agent.value_or(default_user_agent_);
  ask->job = std::move(job);
  ask->ready = [agent = ask->agent, ready = std::move(ready)](StoredRobots stored) {
    ready(std::make_shared<const RobotsRules>(
        RobotsRules::FromStatus(stored.status, stored.body, agent)));
  };
  Look(std::move(ask));
}

// Host thread: the stored robots.txt, or a claim to fetch it, or a look again shortly (another
// extractor of the run is fetching it).
void RobotsGate::Look(std::shared_ptr<const Ask> ask) {
  host_thread_.Post([this, ask] {
    auto stored = ledger_.GetRobots(ask->run_id, ask->origin);
    if (stored && *stored) return loop_.Post([ask, s = **stored] { ask->ready(s); });
    const auto& request = ask->job->settings.request;
    const auto claim_for = request.timeout + request.connect_timeout + milliseconds(5'000);
    auto claimed = ledger_.ClaimRobots(ask->run_id, ask->origin, claim_for);
    if (claimed && !*claimed) {
      // Someone else fetches it: look again in a moment.
      return loop_.Post([this, ask] {
        if (stopped_) return;
        loop_.AddTimer(milliseconds(100), [this, ask] { Look(ask); });
      });
    }
    // Claimed (or the database is away: fetch it ourselves rather than stall).
    loop_.Post([this, ask] { Fetch(ask); });
  });
}

void RobotsGate::Fetch(std::shared_ptr<const Ask> ask) {
  RequestSpec spec;
  spec.url = ask->origin + "/robots.txt";
  FetchRequest req = MakeFetch(*ask->job, spec, default_user_agent_);
  req.method = "GET";
  req.body.clear();
  req.user_agent = ask->agent;
  req.max_bytes = RobotsRules::kMaxBodyBytes;
  ++in_flight_;
  fetcher_.Fetch(std::move(req), [this, alive = std::weak_ptr<int>(life_), ask](
                                     Result<FetchResponse> r, std::string kind) {
    if (alive.expired()) return;
    --in_flight_;
    Store(ask, std::move(r), kind);
  });
}

void RobotsGate::Store(std::shared_ptr<const Ask> ask, Result<FetchResponse> r,
                       const std::string& failure_kind) {
  StoredRobots fetched;
  if (r) {
    fetched.status = r->status;
    fetched.body = std::move(r->body);
  } else {
    spdlog::warn("run {}: robots.txt of {} unreachable ({}: {}): nothing of it is crawled "
                 "(RFC 9309)",
                 ask->run_id, ask->origin, failure_kind, r.error().message());
  }
  const auto rules = RobotsRules::FromStatus(fetched.status, fetched.body, ask->agent);
  std::optional<milliseconds> delay;
  if (auto cd = rules.crawl_delay())
    delay = std::min(*cd, ask->job->settings.politeness.max_retry_after);
  host_thread_.Post([this, ask, fetched, delay] {
    auto stored = ledger_.PutRobots(ask->run_id, ask->origin, fetched, delay);
    loop_.Post([ask, s = stored ? *stored : fetched] { ask->ready(s); });
  });
}

}  // namespace celeriac::extractor
