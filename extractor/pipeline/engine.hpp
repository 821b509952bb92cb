#pragma once
// Engine: one extractor process's crawl pipeline. Request -> Download -> Response -> Parse ->
// items / new requests, over the durable frontier in Postgres (state/crawl_store.hpp).
//
// Delivery guarantee: at least once per request, exactly once per recorded result. Work is
// leased from the frontier in batches; each finished request (a parsed page, a retry, a failure)
// is recorded by CrawlStore::Commit in one transaction with the items and links it produced, so
// a process killed at any moment loses nothing (its leases expire and any extractor takes them)
// and duplicates nothing (items are upserted by key, links by fingerprint, and a result whose
// lease was lost is dropped whole). Several processes share one job simply by leasing from it.
//
// Threads:
// - the loop thread (the Loop passed in) owns all engine state, the Fetcher and the politeness
//   queues; every public method except SubmitExtract and Stats must be called on it;
// - one store thread runs every Postgres call in order (lease, start job, commit, renew);
// - `parse_threads` threads run Module::Parse.
// Results cross threads only through Loop::Post and the two executors' queues.
//
// Shutdown: Drain() stops leasing and taking new extract messages, hands never-started leased
// requests back to the frontier, lets fetches, parses and commits in flight finish, then calls
// its callback on the loop thread. The destructor joins the threads (call it after Drain, or
// accept that in-flight work is left to lease expiry).

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/base/clock.hpp"
#include "core/base/result.hpp"
#include "core/loop/loop.hpp"
#include "core/loop/executor.hpp"
#include "extractor/pipeline/fetcher.hpp"
#include "extractor/parse/crawl_settings.hpp"
#include "extractor/module/module.hpp"
#include "extractor/pipeline/robots.hpp"
#include "state/crawl_store.hpp"

namespace celeriac::extractor {

// The crawl's durable state lives in state/ (the one home of Celeriac's tables).
using state::CanonicalUrl;
using state::CommitReport;
using state::CrawlStore;
using state::ExtractRequest;
using state::FinishedJob;
using state::Fingerprint;
using state::HostSlot;
using state::JobInfo;
using state::JobLimits;
using state::kRefetchTask;
using state::LeasedRequest;
using state::RequestResult;
using state::StoredRobots;

// Builds the module for a job's config (the config-driven module, or a registered C++ one).
using ModuleFactory =
    std::function<Result<std::shared_ptr<const Module>>(const nlohmann::json& config)>;

struct EngineOptions {
  size_t concurrency = 128;            // requests in flight at once, all hosts
  size_t parse_threads = 1;
  size_t lease_batch = 256;            // requests leased per round trip
  std::chrono::milliseconds lease{60'000};
  size_t commit_batch = 256;           // results recorded per transaction (at most)
  std::chrono::milliseconds commit_interval{20};
  std::chrono::milliseconds idle_poll{250};  // how often an idle engine looks for work
  int max_lease_attempts = 5;          // leases that expired before a request is given up
  std::string default_user_agent = "Celeriac/0.1 (+https://github.com/celeriac)";
  std::optional<int64_t> only_job;     // lease only from this job (one-shot crawls)
  // Fetch and parse the next pagination page before its lease arrives (hosts without a
  // politeness delay only, at most three pages ahead of the last recorded one; their results
  // ride along with the commit that leases them).
  bool speculate = true;
  // How long Drain waits for requests in flight before giving up on them.
  std::chrono::milliseconds drain_timeout{30'000};
};

struct EngineStats {
  uint64_t fetched = 0, parsed = 0, failed = 0, retried = 0, committed = 0, dropped = 0;
  uint64_t bytes = 0;
  uint64_t commits = 0;
  double commit_seconds = 0;   // time the store thread spent recording results
  size_t in_flight = 0, queued = 0;
};

class Engine {
 public:
  Engine(Loop& loop, Fetcher& fetcher, CrawlStore& store, ModuleFactory modules,
         EngineOptions options, Clock& clock = SystemClock::Instance());
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Loop thread: start leasing and the periodic lease renewal.
  void Start();

  // Any thread: claim the job an extract message names, compile its config and put its start
  // requests in the frontier. `durable` runs (on the store thread) once that has committed, or
  // with the error that stopped it; a message is acked only after durable(Ok).
  void SubmitExtract(ExtractRequest request, std::function<void(Status)> durable);

  // Any thread: replay a request that failed for good (a dead letter's refetch message); see
  // CrawlStore::Refetch. `durable` as for SubmitExtract.
  void SubmitRefetch(int64_t request_id, std::string celery_task_id,
                     std::function<void(Status)> durable);

  // Called on the store thread for every job that ended (after its commit), for publishing
  // its result.
  void OnJobFinished(std::function<void(const FinishedJob&)> fn) { on_finished_ = std::move(fn); }

  // Loop thread: stop taking work, finish what is in flight, then `done`.
  void Drain(std::function<void()> done);

  EngineStats Stats() const;

 private:
  struct JobRuntime {
    JobInfo info;
    parse::CrawlSettings settings;
    std::shared_ptr<const Module> module;
  };
  struct Work {
    LeasedRequest lease;
    std::shared_ptr<const JobRuntime> job;
    std::string host;   // key of its Host in hosts_
  };
  // One host (origin) of one run: its queue, politeness and robots.txt.
  struct Host {
    int64_t run_id = 0;
    std::string origin;            // scheme://host[:port]
    std::deque<Work> queue;
    int active = 0;
    Clock::MonoTime next_start{};  // in-process gap between starts
    std::chrono::milliseconds delay{0};       // current gap (config, crawl-delay, backoff)
    Clock::MonoTime backoff_until{};
    // robots.txt: unknown until asked; requests wait while it is fetched
    enum class Robots { kUnknown, kFetching, kReady } robots = Robots::kUnknown;
    std::shared_ptr<const RobotsRules> rules;
    // Shared through Postgres once a delay or a backoff applies: every start is reserved in
    // crawl_hosts, so the rate holds across the run's extractors.
    bool shared = false;
    bool reserving = false;
    std::optional<Clock::MonoTime> reserved_start;
    int64_t requests = 0, errors = 0;  // not yet added to crawl_hosts
  };
  struct ModuleState {
    int consecutive_failures = 0;
    Clock::MonoTime paused_until{};
    std::vector<Work> parked;      // requests that waited out the pause
  };
  struct Speculation {
    std::string key;
    int64_t job_id = 0;
    bool done = false;
    bool riding = false;  // its result rides along with a commit (FoldChain) being recorded
    std::optional<RequestResult> result;  // nullopt: the speculative fetch failed
    std::vector<Work> waiters;            // leases that arrived before it was done
  };

  // loop thread
  void MaybeLease();
  void OnLeased(std::vector<Work> work, bool failed);
  void Dispatch();
  // Dispatch for one host; returns when it would wait until `*wake` (or cannot proceed).
  void DispatchHost(Host& host, Clock::MonoTime now, std::optional<Clock::MonoTime>& wake);
  void StartRobots(Host& host, const Work& w);
  void AcquireRobots(int64_t run_id, std::string origin, std::shared_ptr<const JobRuntime> job,
                     std::string agent, std::function<void(StoredRobots)> ready);
  void Reserve(Host& host, std::chrono::milliseconds min_delay);
  void SlowDown(Host& host, const parse::CrawlSettings& s,
                const std::optional<std::string>& retry_after);
  std::chrono::milliseconds BaseDelay(const Host& host, const parse::CrawlSettings& s) const;
  void NoteModuleOutcome(const Work& w, bool failed);
  static std::string ModuleKey(int64_t job_id, const std::string& page_type);
  Host& HostFor(const Work& w);
  void StartFetch(Work work);
  FetchRequest MakeFetch(const JobRuntime& job, const RequestSpec& spec, int64_t job_id) const;
  static std::string SpeculationKey(int64_t job_id, const RequestSpec& spec);
  // Appends the follow-ons to `batch`; returns their speculation entries, in the same order.
  std::vector<std::shared_ptr<Speculation>> FoldChain(std::vector<RequestResult>* batch);
  bool NextPageComing(const RequestResult& r) const;
  static constexpr std::chrono::milliseconds kFoldWait{3};
  void Speculate(const std::shared_ptr<const JobRuntime>& job, const RequestSpec& spec,
                 int64_t job_id, int ahead);
  void Resolve(const std::shared_ptr<Speculation>& entry, std::optional<RequestResult> result);
  void Consume(Speculation& entry, Work work);
  // Parse thread: a page through its job's module.
  static RequestResult ParseResponse(const JobRuntime& job, const RequestSpec& spec,
                                     const FetchResponse& response);
  void OnFetched(Work work, Result<FetchResponse> response, const std::string& failure_kind);
  void AddResult(RequestResult result);
  void Flush();
  Result<CommitReport> CommitDurably(const std::vector<RequestResult>& batch,
                                     const std::map<int64_t, JobLimits>& limits, size_t lease_new,
                                     size_t leased_results);
  void OnCommitted(size_t count, std::vector<Work> discovered, size_t left_pending,
                   const std::vector<std::shared_ptr<Speculation>>& riders,
                   const std::vector<bool>& recorded);
  bool Starving() const;
  static bool Leads(const RequestResult& r);
  void Maintain();
  void CheckDrained();
  RequestResult Failure(const Work& w, std::string error_class, std::string message,
                        bool retryable, int status, std::optional<std::string> retry_after);

  // store thread
  std::shared_ptr<const JobRuntime> RuntimeFor(int64_t job_id);
  void Finished(const std::vector<FinishedJob>& jobs);

  Loop& loop_;
  Fetcher& fetcher_;
  CrawlStore& store_;
  ModuleFactory modules_;
  EngineOptions options_;
  Clock& clock_;
  std::function<void(const FinishedJob&)> on_finished_;
  std::unique_ptr<Executor> store_thread_;
  std::unique_ptr<Executor> parse_threads_;
  std::unique_ptr<Executor> host_thread_;   // robots.txt and slot reservations in Postgres

  // store thread only
  std::unordered_map<int64_t, std::shared_ptr<const JobRuntime>> runtimes_;

  // loop thread only
  std::unordered_map<std::string, Host> hosts_;  // by "run_id origin"
  std::unordered_map<std::string, ModuleState> modules_state_;  // by "job_id page_type"
  std::unordered_map<int64_t, std::shared_ptr<const JobRuntime>> runtime_cache_;
  std::unordered_map<std::string, std::shared_ptr<Speculation>> speculations_;
  size_t speculating_ = 0;     // speculative fetches and parses under way
  size_t queued_ = 0;          // leased, waiting for a host slot
  size_t in_flight_ = 0;       // fetching or parsing
  size_t outstanding_ = 0;     // leased and not yet committed
  bool leasing_ = false;
  bool committing_ = false;
  bool draining_ = false;
  std::atomic<bool> stopping_{false};  // draining_, for the store thread
  std::function<void()> drained_;
  std::vector<RequestResult> pending_results_;
  std::optional<Loop::TimerId> flush_timer_;
  std::optional<Loop::TimerId> fold_timer_;  // a leading page waits for the next (Flush)
  bool fold_waited_ = false;
  std::optional<Loop::TimerId> lease_timer_;
  std::optional<Loop::TimerId> dispatch_timer_;
  Clock::MonoTime dispatch_at_{};
  std::optional<Loop::TimerId> maintain_timer_;
  bool maintaining_ = false;

  // Fetch callbacks hold a weak reference: one that fires after the engine is gone is ignored.
  std::shared_ptr<int> life_ = std::make_shared<int>(0);

  mutable std::mutex stats_mutex_;
  EngineStats stats_;
};

}  // namespace celeriac::extractor
