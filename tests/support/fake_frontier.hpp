#pragma once
// FakeFrontier: the Frontier and HostLedger in memory, for the engine's unit tests. It keeps
// the rules the engine relies on (state/frontier.hpp, state/host_ledger.hpp) in their simplest
// form: one owner (us), requests deduplicated by URL within a job, a job that ends when its last
// open request closes, follow-ons recorded when the same commit leased their request to us,
// and host slots spaced by the host's delay. It records what the engine asked of it (commits,
// hand-backs, reservations, slow-downs) for the tests to look at, and a test can steer it:
// drop every follow-on, or refuse slot reservations.
//
// Threading: one thread (the engine with inline threads, on the test's thread).

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "state/frontier.hpp"
#include "state/host_ledger.hpp"
#include "tests/support/manual_clock.hpp"

namespace celeriac::testing {

class FakeFrontier final : public state::Frontier, public state::HostLedger {
 public:
  using RequestResult = state::RequestResult;
  using RequestSpec = state::RequestSpec;
  enum class RequestState { kPending, kLeased, kDone, kRetry, kFailed, kSkipped };
  struct Request {
    int64_t id = 0, job_id = 0;
    RequestSpec spec;
    RequestState status = RequestState::kPending;
    int attempts = 0;
    Clock::MonoTime not_before{};
    std::string error_class;
  };
  struct Job {
    state::JobInfo info;
    std::string reply_to;
    std::map<std::string, nlohmann::json> items;  // by item key
  };
  struct Host {
    Clock::MonoTime next_slot{}, backoff_until{};
    std::chrono::milliseconds delay{0};
    int reservations = 0;
    std::optional<state::StoredRobots> robots;
    bool robots_claimed = false;
    int64_t requests = 0, errors = 0;
  };

  explicit FakeFrontier(ManualClock& clock) : clock_(clock) {}

  // ---- set-up and steering
  void AddConfig(int64_t crawl_config_id, nlohmann::json config) {
    configs_[crawl_config_id] = std::move(config);
  }
  bool record_follow_ons = true;                  // false: every follow-on is dropped
  std::optional<Error> reserve_error;             // ReserveSlot fails with it

  // ---- what the engine did
  std::vector<std::vector<RequestResult>> commits;   // each Commit's results, as sent
  std::vector<Clock::MonoTime> commit_times;          // when each was made
  std::vector<size_t> follow_ons_recorded;           // per commit, how many were recorded
  std::vector<int64_t> released;                     // ReleaseLeases, in order
  std::vector<state::FinishedJob> finished;
  std::vector<std::tuple<std::string, std::chrono::milliseconds, std::chrono::milliseconds>>
      slow_downs;                                    // origin, backoff, max delay
  std::map<int64_t, Request> requests;               // by id
  std::map<int64_t, Job> jobs;                       // by id
  std::map<std::string, Host> hosts;                 // by origin (one run in these tests)

  const Request* Find(const std::string& url) const {
    for (const auto& [id, r] : requests)
      if (r.spec.url == url) return &r;
    return nullptr;
  }

  // ---- Frontier
  Result<state::JobInfo> ClaimJob(const state::ExtractRequest& req) override {
    for (auto& [id, j] : jobs)
      if (j.info.celery_task_id == req.celery_task_id) return j.info;
    auto config = configs_.find(req.crawl_config_id);
    if (config == configs_.end())
      return Error(ErrorCode::kNotFound, "crawl config does not exist", false);
    Job j;
    j.info.job_id = next_job_++;
    j.info.run_id = 100 + j.info.job_id;
    j.info.crawl_config_id = req.crawl_config_id;
    j.info.status = "pending";
    j.info.celery_task_id = req.celery_task_id;
    j.info.config = config->second;
    j.reply_to = req.reply_to;
    jobs[j.info.job_id] = j;
    return j.info;
  }
  Result<state::JobInfo> LoadJob(int64_t job_id) override {
    auto it = jobs.find(job_id);
    if (it == jobs.end()) return Error(ErrorCode::kNotFound, "no such job", false);
    return it->second.info;
  }
  Result<std::optional<state::FinishedJob>> StartJob(int64_t job_id,
                                                     const std::vector<RequestSpec>& start,
                                                     const std::string&,
                                                     std::chrono::milliseconds) override {
    auto& j = jobs.at(job_id);
    if (j.info.status != "pending") return std::optional<state::FinishedJob>{};
    j.info.status = "running";
    for (const auto& s : start) Insert(job_id, s);
    return EndIfDone(j);
  }
  Result<std::optional<state::FinishedJob>> FailJob(int64_t job_id, const std::string&,
                                                    const std::string& reason,
                                                    const std::string&) override {
    auto& j = jobs.at(job_id);
    return End(j, "failed", reason);
  }
  Result<std::vector<state::FinishedJob>> AbortStalled() override {
    return std::vector<state::FinishedJob>{};
  }
  Result<int64_t> Refetch(int64_t, const std::string&) override {
    return Error(ErrorCode::kNotFound, "not in the fake", false);
  }

  Result<std::vector<state::LeasedRequest>> Lease(size_t max, std::chrono::milliseconds,
                                                  std::optional<int64_t> job_id) override {
    std::vector<state::LeasedRequest> out;
    for (auto& [id, r] : requests) {
      if (out.size() >= max) break;
      if (r.status != RequestState::kPending && r.status != RequestState::kRetry) continue;
      if (r.not_before > clock_.Monotonic() || (job_id && r.job_id != *job_id)) continue;
      if (jobs.at(r.job_id).info.status != "running") continue;
      out.push_back(LeaseToUs(r));
    }
    return out;
  }
  Result<int64_t> RenewLeases(std::chrono::milliseconds) override {
    return static_cast<int64_t>(std::count_if(requests.begin(), requests.end(), [](auto& kv) {
      return kv.second.status == RequestState::kLeased;
    }));
  }
  Status ExpireLeases(const std::vector<int64_t>& ids) override {
    for (auto id : ids) requests.at(id).status = RequestState::kPending;
    return Ok();
  }
  Status ReleaseLeases(const std::vector<int64_t>& ids) override {
    for (auto id : ids) {
      auto& r = requests.at(id);
      r.status = RequestState::kPending;
      --r.attempts;
      released.push_back(id);
    }
    return Ok();
  }
  Result<std::vector<state::LeasedRequest>> ReclaimExpired(int,
                                                           std::chrono::milliseconds) override {
    return std::vector<state::LeasedRequest>{};
  }

  Result<state::CommitReport> Commit(const std::vector<RequestResult>& results,
                                     const std::map<int64_t, state::JobLimits>&,
                                     size_t lease_new, std::chrono::milliseconds) override {
    commits.push_back(results);
    commit_times.push_back(clock_.Monotonic());
    state::CommitReport report;
    std::vector<int64_t> fresh;  // leased to us by this commit
    size_t lease_left = lease_new;
    for (const auto& r : results) {
      if (r.speculated) continue;
      auto it = requests.find(r.request_id);
      if (it == requests.end() || it->second.status != RequestState::kLeased) {
        ++report.dropped;
        continue;
      }
      Record(it->second, r, report, fresh, lease_left);
    }
    size_t follow_ons = 0;
    for (size_t i = 0; i < results.size(); ++i) {
      const auto& r = results[i];
      if (!r.speculated || !record_follow_ons) continue;
      auto f = std::find_if(fresh.begin(), fresh.end(), [&](int64_t id) {
        return requests.at(id).spec.url == r.speculated->url && requests.at(id).job_id == r.job_id;
      });
      if (f == fresh.end()) continue;
      const int64_t id = *f;
      fresh.erase(f);
      Record(requests.at(id), r, report, fresh, lease_left);
      report.follow_ons_recorded.push_back(i);
      ++follow_ons;
    }
    follow_ons_recorded.push_back(follow_ons);
    for (int64_t id : fresh) {
      const auto& q = requests.at(id);
      report.leased.push_back({q.id, q.job_id, q.attempts, q.spec});
    }
    for (auto& [id, j] : jobs)
      if (auto f = EndIfDone(j)) report.finished.push_back(*f);
    return report;
  }

  // ---- HostLedger
  Result<std::optional<state::StoredRobots>> GetRobots(int64_t,
                                                       const std::string& origin) override {
    return hosts[origin].robots;
  }
  Result<bool> ClaimRobots(int64_t, const std::string& origin,
                           std::chrono::milliseconds) override {
    auto& h = hosts[origin];
    if (h.robots || h.robots_claimed) return false;
    h.robots_claimed = true;
    return true;
  }
  Result<state::StoredRobots> PutRobots(int64_t, const std::string& origin,
                                        const state::StoredRobots& robots,
                                        std::optional<std::chrono::milliseconds>) override {
    auto& h = hosts[origin];
    if (!h.robots) h.robots = robots;
    return *h.robots;
  }
  Result<state::HostSlot> ReserveSlot(int64_t, const std::string& origin,
                                      std::chrono::milliseconds min_delay) override {
    if (reserve_error) return *reserve_error;
    auto& h = hosts[origin];
    const auto now = clock_.Monotonic();
    const auto gap = std::max(min_delay, h.delay);
    const auto start = std::max({h.next_slot, now, h.backoff_until});
    h.delay = h.backoff_until <= now
                  ? std::max(min_delay, std::chrono::duration_cast<std::chrono::milliseconds>(
                                            h.delay * 0.8))
                  : gap;
    h.next_slot = start + gap;
    ++h.reservations;
    state::HostSlot slot;
    slot.wait = std::chrono::duration_cast<std::chrono::milliseconds>(start - now);
    slot.delay = h.delay;
    slot.state = "ok";
    return slot;
  }
  Status SlowDown(int64_t, const std::string& origin, std::chrono::milliseconds backoff,
                  std::chrono::milliseconds max_delay) override {
    auto& h = hosts[origin];
    h.delay = std::min(max_delay, std::max(std::chrono::milliseconds(1000), h.delay * 2));
    h.backoff_until = std::max(h.backoff_until, clock_.Monotonic() + backoff);
    slow_downs.emplace_back(origin, backoff, max_delay);
    return Ok();
  }
  Status AddHostCounts(const std::vector<std::tuple<int64_t, std::string, int64_t, int64_t>>&
                           counts) override {
    for (const auto& [run, origin, n, e] : counts) {
      hosts[origin].requests += n;
      hosts[origin].errors += e;
    }
    return Ok();
  }

 private:
  state::LeasedRequest LeaseToUs(Request& r) {
    r.status = RequestState::kLeased;
    ++r.attempts;
    return {r.id, r.job_id, r.attempts, r.spec};
  }

  // Inserts `spec` unless its job has its URL already; returns the new id or 0.
  int64_t Insert(int64_t job_id, const RequestSpec& spec) {
    for (const auto& [id, r] : requests)
      if (r.job_id == job_id && r.spec.url == spec.url) return 0;
    Request r;
    r.id = next_request_++;
    r.job_id = job_id;
    r.spec = spec;
    requests[r.id] = r;
    return r.id;
  }

  // Closes `q` with `r`; what it found goes in, pagination first, leased to us while
  // `lease_left` lasts.
  void Record(Request& q, const RequestResult& r, state::CommitReport& report,
              std::vector<int64_t>& fresh, size_t& lease_left) {
    ++report.recorded;
    q.error_class = r.error_class;
    switch (r.state) {
      case RequestResult::State::kDone: q.status = RequestState::kDone; break;
      case RequestResult::State::kFailed: q.status = RequestState::kFailed; break;
      case RequestResult::State::kSkipped: q.status = RequestState::kSkipped; break;
      case RequestResult::State::kRetry:
        q.status = RequestState::kRetry;
        q.not_before = clock_.Monotonic() + r.retry_delay;
        break;
    }
    auto& job = jobs.at(q.job_id);
    for (const auto& item : r.items) job.items[item.key] = item.data;
    std::vector<RequestSpec> found = r.requests;
    std::stable_partition(found.begin(), found.end(),
                          [](const RequestSpec& s) { return s.is_pagination; });
    for (const auto& s : found) {
      const int64_t id = Insert(q.job_id, s);
      if (id == 0) continue;
      if (lease_left == 0) {
        ++report.left_pending;
        continue;
      }
      --lease_left;
      LeaseToUs(requests.at(id));
      fresh.push_back(id);
    }
  }

  std::optional<state::FinishedJob> EndIfDone(Job& j) {
    if (j.info.status != "running") return std::nullopt;
    for (const auto& [id, r] : requests)
      if (r.job_id == j.info.job_id &&
          (r.status == RequestState::kPending || r.status == RequestState::kLeased ||
           r.status == RequestState::kRetry))
        return std::nullopt;
    return End(j, "succeeded", "");
  }

  std::optional<state::FinishedJob> End(Job& j, const std::string& status,
                                        const std::string& reason) {
    j.info.status = status;
    state::FinishedJob f;
    f.job_id = j.info.job_id;
    f.run_id = j.info.run_id;
    f.crawl_config_id = j.info.crawl_config_id;
    f.status = status;
    f.reason = reason;
    f.celery_task_id = j.info.celery_task_id;
    f.reply_to = j.reply_to;
    f.result = {{"job_id", f.job_id}, {"status", status}, {"items", j.items.size()}};
    f.run_finished = true;
    f.run_status = status;
    finished.push_back(f);
    return f;
  }

  ManualClock& clock_;
  std::map<int64_t, nlohmann::json> configs_;
  int64_t next_job_ = 1;
  int64_t next_request_ = 1;
};

}  // namespace celeriac::testing
