#include "extractor/engine/speculator.hpp"

#include <fmt/format.h>

#include "extractor/engine/page_outcome.hpp"

namespace celeriac::extractor {

namespace {
constexpr size_t kMaxSpeculations = 64;
constexpr int kMaxAhead = 3;  // pages beyond the last recorded one; also the waste at a stop
constexpr size_t kMaxFollowOns = 8;
}  // namespace

Speculator::Speculator(Scheduler& loop, Fetcher& fetcher, Executor& parse_threads,
                       StatsBook& stats, bool enabled, std::string default_user_agent,
                       Hooks hooks)
    : loop_(loop),
      fetcher_(fetcher),
      parse_threads_(parse_threads),
      stats_(stats),
      enabled_(enabled),
      default_user_agent_(std::move(default_user_agent)),
      hooks_(std::move(hooks)) {}

std::string Speculator::KeyOf(int64_t job_id, const RequestSpec& s) {
  return fmt::format("{}|{}|{}|{}|{}|{}", job_id, s.method, s.page_type, s.depth,
                     s.pagination_index, s.url);
}

void Speculator::Track(const std::shared_ptr<const JobRuntime>& job) {
  jobs_.try_emplace(job->info.job_id, job);
}

void Speculator::AheadOf(const RequestResult& leading) {
  auto rt = jobs_.find(leading.job_id);
  if (rt == jobs_.end()) return;
  for (const auto& next : leading.requests)
    if (next.is_pagination) Speculate(rt->second, next, leading.job_id, 1);
}

void Speculator::Speculate(const std::shared_ptr<const JobRuntime>& job, const RequestSpec& spec,
                           int64_t job_id, int ahead) {
  if (ahead > kMaxAhead || !enabled_) return;
  if (stopped_ || job->settings.politeness.min_delay.count() > 0) return;
  if (entries_.size() >= kMaxSpeculations) return;
  auto key = KeyOf(job_id, spec);
  if (entries_.contains(key)) return;
  auto entry = std::make_shared<Entry>();
  entry->key = key;
  entry->job_id = job_id;
  entries_.emplace(std::move(key), entry);
  ++in_flight_;
  fetcher_.Fetch(MakeFetch(*job, spec, default_user_agent_),
                 [this, alive = std::weak_ptr<int>(life_), entry, job, spec, ahead](
                     Result<FetchResponse> r, std::string) {
    if (alive.expired()) return;
    stats_.Update([&](EngineStats& s) {
      ++s.fetched;
      if (r) s.bytes += r->bytes;
    });
    if (!r || r->status < 200 || r->status >= 300) {
      --in_flight_;
      return Resolve(entry, std::nullopt);  // the real request will fetch and classify it
    }
    Parse(entry, job, spec, std::move(*r), ahead);
  });
}

void Speculator::Parse(std::shared_ptr<Entry> entry, std::shared_ptr<const JobRuntime> job,
                       RequestSpec spec, FetchResponse response, int ahead) {
  auto page = std::make_shared<FetchResponse>(std::move(response));
  parse_threads_.Post([this, entry, job, spec, page, ahead] {
    auto result = ParseResponse(*job, spec, *page);
    loop_.Post([this, entry, job, ahead, result = std::move(result)]() mutable {
      --in_flight_;
      if (result.state == RequestResult::State::kDone)
        for (const auto& next : result.requests)
          if (next.is_pagination) Speculate(job, next, entry->job_id, ahead + 1);
      Resolve(entry, std::move(result));
    });
  }, true);
}

void Speculator::Resolve(const std::shared_ptr<Entry>& entry,
                         std::optional<RequestResult> result) {
  entry->done = true;
  entry->result = std::move(result);
  auto waiters = std::move(entry->waiters);
  entry->waiters.clear();
  for (auto& w : waiters) Consume(*entry, std::move(w));
  hooks_.resolved();
}

bool Speculator::Claim(Work& w) {
  if (entries_.empty()) return false;
  auto it = entries_.find(KeyOf(w.lease.job_id, w.lease.spec));
  if (it == entries_.end()) return false;
  auto entry = it->second;
  if (!entry->done) {
    entry->waiters.push_back(std::move(w));
  } else {
    auto shared = std::make_shared<Work>(std::move(w));
    loop_.Post([this, entry, shared] { Consume(*entry, std::move(*shared)); });
  }
  return true;
}

void Speculator::Consume(Entry& entry, Work w) {
  entries_.erase(entry.key);  // the entry stays alive: the caller holds it
  hooks_.serve(std::move(w), entry.result);
}

// The pagination chain advances one page per commit: page N+1 is leased by the transaction
// that records page N. When N+1 (and N+2...) were already fetched and parsed ahead, their results
// ride along as follow-ons, and the same transaction records them as soon as it has inserted
// their requests and leased them to us: several pages of the chain per commit.
Speculator::Riders Speculator::FoldChain(std::vector<RequestResult>* batch) {
  Riders riders;  // one per follow-on, in batch order
  const size_t limit = batch->size() + kMaxFollowOns;
  const size_t first_follow_on = batch->size();
  for (size_t i = 0; i < batch->size() && batch->size() < limit; ++i) {
    if ((*batch)[i].state != RequestResult::State::kDone || !Leads((*batch)[i])) continue;
    const int64_t job_id = (*batch)[i].job_id;
    std::vector<RequestSpec> next;
    for (const auto& spec : (*batch)[i].requests)
      if (spec.is_pagination) next.push_back(spec);
    for (auto& spec : next) {
      auto it = entries_.find(KeyOf(job_id, spec));
      if (it == entries_.end()) continue;
      Entry& entry = *it->second;
      if (!entry.done || entry.riding || !entry.result || !entry.waiters.empty() ||
          entry.result->state != RequestResult::State::kDone)
        continue;
      // The entry stays until the commit says whether it recorded the page (Settle); if not,
      // the page's lease, whenever it comes, still finds the result here.
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
    auto rt = jobs_.find(f.job_id);
    if (rt == jobs_.end()) continue;
    for (const auto& spec : f.requests)
      if (spec.is_pagination) Speculate(rt->second, spec, f.job_id, 1);
  }
  return riders;
}

void Speculator::Settle(const Riders& riders, const std::vector<bool>& recorded) {
  for (size_t i = 0; i < riders.size(); ++i) {
    auto it = entries_.find(riders[i]->key);
    if (it == entries_.end() || it->second != riders[i]) continue;  // a lease took it
    if (recorded[i]) {
      entries_.erase(it);
      stats_.Update([](EngineStats& s) { ++s.parsed; });
    } else {
      it->second->riding = false;
    }
  }
}

bool Speculator::NextPageComing(const RequestResult& r) const {
  if (r.state != RequestResult::State::kDone) return false;
  for (const auto& next : r.requests) {
    if (!next.is_pagination) continue;
    auto it = entries_.find(KeyOf(r.job_id, next));
    if (it != entries_.end() && !it->second->done && it->second->waiters.empty()) return true;
  }
  return false;
}

void Speculator::ForgetJob(int64_t job_id) {
  jobs_.erase(job_id);
  std::erase_if(entries_, [&](const auto& kv) {
    return kv.second->job_id == job_id && kv.second->done;
  });
}

}  // namespace celeriac::extractor
