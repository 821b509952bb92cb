#pragma once
// Speculator: fetches the next pages of a pagination chain before their leases arrive.
//
// Pagination is the one chain in a crawl that cannot run in parallel: page N+1 is known only
// once page N is parsed, and recording page N and leasing N+1 through the frontier takes a
// round trip or two. So the next page is fetched and parsed as soon as it is seen (hosts
// without a politeness delay only, at most three pages beyond the last recorded one, 64 at
// once). Its result then either
//   - rides along with the commit that records the page leading to it (FoldChain): the commit
//     inserts the next page's request, leases it to us and records the result in one go; or
//   - waits for the next page's lease, which takes it instead of fetching (Claim); or
//   - is dropped, when nobody here leases it (another extractor took it) or its job ends.
// A speculative fetch that fails is no result: the lease fetches the page for real, and that
// classifies and retries it.
//
// Threading: the loop thread; pages are parsed on the parse threads.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/loop/executor.hpp"
#include "core/loop/scheduler.hpp"
#include "extractor/engine/engine_stats.hpp"
#include "extractor/engine/work.hpp"

namespace celeriac::extractor {

class Speculator {
 public:
  struct Entry {
    std::string key;
    int64_t job_id = 0;
    bool done = false;
    bool riding = false;  // its result rides along with a commit under way
    std::optional<RequestResult> result;  // nullopt: the speculative fetch failed
    std::vector<Work> waiters;            // leases that arrived before it was done
  };
  using Riders = std::vector<std::shared_ptr<Entry>>;

  struct Hooks {
    // A lease met its page fetched ahead: `result` is the page's (for no request yet), or
    // nullopt when that fetch failed (fetch it for real). `w` still counts as running.
    std::function<void(Work w, std::optional<RequestResult> result)> serve;
    // A speculation finished (a commit may be waiting for it: NextPageComing).
    std::function<void()> resolved;
  };

  Speculator(Scheduler& loop, Fetcher& fetcher, Executor& parse_threads, StatsBook& stats,
             bool enabled, std::string default_user_agent, Hooks hooks);

  // The job of a leased request (its settings decide whether its pages may be fetched ahead).
  void Track(const std::shared_ptr<const JobRuntime>& job);
  // `leading` was parsed and leads to more pages: fetch them ahead.
  void AheadOf(const RequestResult& leading);
  // A lease about to be fetched: when its page is being or was fetched ahead, takes `w` (and
  // serves it when that is done) and returns true.
  bool Claim(Work& w);

  // Appends to `batch` the results fetched ahead of the pages its leading results lead to
  // (follow-ons, at most 8), and returns their entries in the same order.
  Riders FoldChain(std::vector<RequestResult>* batch);
  // The commit of FoldChain's batch ended: `recorded[i]` says whether riders[i] was recorded.
  void Settle(const Riders& riders, const std::vector<bool>& recorded);
  // Whether the page after `r` is being fetched ahead (worth waiting for, to record both).
  bool NextPageComing(const RequestResult& r) const;

  void ForgetJob(int64_t job_id);
  // Drain: fetch nothing more ahead.
  void Stop() { stopped_ = true; }
  // Speculative fetches and parses under way (Drain waits for them).
  size_t in_flight() const { return in_flight_; }

 private:
  static std::string KeyOf(int64_t job_id, const RequestSpec& spec);
  void Speculate(const std::shared_ptr<const JobRuntime>& job, const RequestSpec& spec,
                 int64_t job_id, int ahead);
  void Parse(std::shared_ptr<Entry> entry, std::shared_ptr<const JobRuntime> job,
             RequestSpec spec, FetchResponse response, int ahead);
  void Resolve(const std::shared_ptr<Entry>& entry, std::optional<RequestResult> result);
  void Consume(Entry& entry, Work w);

  Scheduler& loop_;
  Fetcher& fetcher_;
  Executor& parse_threads_;
  StatsBook& stats_;
  bool enabled_;
  std::string default_user_agent_;
  Hooks hooks_;
  bool stopped_ = false;
  size_t in_flight_ = 0;
  std::unordered_map<std::string, std::shared_ptr<Entry>> entries_;
  std::unordered_map<int64_t, std::shared_ptr<const JobRuntime>> jobs_;
  // Fetch callbacks hold a weak reference: one that fires after this is gone is ignored.
  std::shared_ptr<int> life_ = std::make_shared<int>(0);
};

}  // namespace celeriac::extractor
