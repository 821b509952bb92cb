#pragma once
// Engine: one extractor process's crawl pipeline. Request -> Download -> Response -> Parse ->
// items / new requests, over the durable frontier (state/frontier.hpp; in Postgres, the
// CrawlStore).
//
// Delivery guarantee: at least once per request, exactly once per recorded result. Work is
// leased from the frontier in batches; each finished request (a parsed page, a retry, a failure)
// is recorded by Frontier::Commit in one transaction with the items and links it produced, so
// a process killed at any moment loses nothing (its leases expire and any extractor takes them)
// and duplicates nothing (items are upserted by key, links by fingerprint, and a result whose
// lease was lost is dropped whole). Several processes share one job simply by leasing from it.
//
// The engine coordinates its rooms (extractor/engine/README.md draws one request's path):
//   Admission       extract and refetch messages; jobs compiled, started and ended
//   Leases          how much of the frontier this process holds; leasing, renewal, hand-back
//   HostScheduler   queues per host; which request starts next (with RobotsGate, HostPace
//                   from politeness.hpp and PageTypeBreaker)
//   Speculator      the next pages of a pagination chain, fetched ahead of their leases
//   CommitBatcher   which results the next commit records, and when
//   CommitRecorder  a commit made durable whatever the database does
//
// Threads:
// - the loop thread (the Scheduler passed in) owns all engine state, the Fetcher and the
//   politeness queues; every public method except SubmitExtract, SubmitRefetch and Stats must
//   be called on it;
// - one store thread runs every Frontier call in order (lease, start job, commit, renew);
// - one host thread runs the HostLedger calls (robots.txt, slot reservations, host counters);
// - `parse_threads` threads run Module::Parse.
// Results cross threads only through Scheduler::Post and the executors' queues.
//
// Shutdown: Drain() stops leasing and taking new extract messages, hands never-started leased
// requests back to the frontier, lets fetches, parses and commits in flight finish, then calls
// its callback on the loop thread. The destructor joins the threads (call it after Drain, or
// accept that in-flight work is left to lease expiry).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/base/clock.hpp"
#include "core/base/result.hpp"
#include "core/loop/executor.hpp"
#include "core/loop/scheduler.hpp"
#include "extractor/engine/admission.hpp"
#include "extractor/engine/commit_batcher.hpp"
#include "extractor/engine/commit_recorder.hpp"
#include "extractor/engine/engine_stats.hpp"
#include "extractor/engine/host_scheduler.hpp"
#include "extractor/engine/leases.hpp"
#include "extractor/engine/page_type_breaker.hpp"
#include "extractor/engine/robots_gate.hpp"
#include "extractor/engine/speculator.hpp"
#include "extractor/engine/work.hpp"
#include "extractor/engine/fetcher.hpp"

namespace celeriac::extractor {

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
  // Unit tests only: no threads; store, host and parse work run at once on the loop thread
  // (Executor::Inline), so a test steps the engine with a manual loop and clock.
  bool inline_threads = false;
};

class Engine {
 public:
  Engine(Scheduler& loop, Fetcher& fetcher, Frontier& frontier, HostLedger& ledger,
         ModuleFactory modules, EngineOptions options, Clock& clock = SystemClock::Instance());
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
  // Frontier::Refetch. `durable` as for SubmitExtract.
  void SubmitRefetch(int64_t request_id, std::string celery_task_id,
                     std::function<void(Status)> durable);

  // Called on the store thread for every job that ended (after its commit), for publishing
  // its result.
  void OnJobFinished(std::function<void(const FinishedJob&)> fn) { on_finished_ = std::move(fn); }

  // Loop thread: stop taking work, finish what is in flight, then `done`.
  void Drain(std::function<void()> done);

  EngineStats Stats() const { return stats_.Snapshot(); }

 private:
  // The path of one request, on the loop thread.
  void Accept(std::vector<Work> work);
  void StartFetch(Work w);
  void OnFetched(Work w, Result<FetchResponse> response, const std::string& failure_kind);
  void Parse(Work w, FetchResponse response);
  void Serve(Work w, std::optional<RequestResult> fetched_ahead);
  void Failed(const Work& w, RequestResult result);
  void AddResult(RequestResult result);
  void Flush();
  void OnCommitted(size_t count, CommitRecorder::Recorded recorded,
                   const Speculator::Riders& riders);
  bool Starving() const;
  // A job ended (store thread), and what goes with it here (loop thread).
  void JobEnded(const FinishedJob& job);
  void ForgetJob(int64_t job_id);
  void Maintain();
  void CheckDrained();

  Scheduler& loop_;
  Fetcher& fetcher_;
  EngineOptions options_;
  Clock& clock_;
  std::function<void(const FinishedJob&)> on_finished_;
  std::unique_ptr<Executor> store_thread_;
  std::unique_ptr<Executor> parse_threads_;
  std::unique_ptr<Executor> host_thread_;
  StatsBook stats_;

  Admission admission_;        // store thread
  CommitRecorder recorder_;    // store thread
  Leases leases_;
  PageTypeBreaker breaker_;
  RobotsGate robots_;
  HostScheduler hosts_;
  Speculator speculator_;
  CommitBatcher batcher_;

  // loop thread only
  bool draining_ = false;
  std::function<void()> drained_;
  std::optional<Scheduler::TimerId> maintain_timer_;
  bool maintaining_ = false;

  // Fetch callbacks hold a weak reference: one that fires after the engine is gone is ignored.
  std::shared_ptr<int> life_ = std::make_shared<int>(0);
};

}  // namespace celeriac::extractor
