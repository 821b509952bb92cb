#pragma once
// Leases: this engine's share of the frontier. It leases requests in batches while it holds
// fewer than it can use: up to twice the concurrency waiting or running, and one commit's worth
// more leased and not yet recorded (`held`). A commit may lease what it discovers within the
// same bound (Room). It hands back requests it never started, and keeps its leases alive:
// renewed well before they expire, and a request whose leases expired too often (extractors
// died holding it) is given up as failed.
//
// Threading: the loop thread, but KeepAlive runs on the store thread.

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "core/loop/executor.hpp"
#include "core/loop/scheduler.hpp"
#include "extractor/engine/admission.hpp"
#include "extractor/engine/work.hpp"

namespace celeriac::extractor {

class Leases {
 public:
  struct Options {
    size_t concurrency = 128;
    size_t lease_batch = 256;
    size_t commit_batch = 256;
    std::chrono::milliseconds lease{60'000};
    std::chrono::milliseconds idle_poll{250};
    int max_lease_attempts = 5;
    std::optional<int64_t> only_job;
  };
  // `busy`: requests waiting for a host or running. `leased`: what a lease brought, on the loop
  // thread, once leasing() is false again (also when stopped: the engine hands it back).
  Leases(Scheduler& loop, Executor& store_thread, Frontier& frontier, Admission& admission,
         Options options, std::function<size_t()> busy,
         std::function<void(std::vector<Work>)> leased);

  // Leases more unless a lease is under way, the engine is stopping, or it holds enough.
  void MaybeLease();
  // Looks for work again after idle_poll (unless a look is under way or due already).
  void PollLater();
  // Drain: no more leasing.
  void Stop();

  // Work taken into the engine, and results recorded (or dropped with their job).
  void Hold(size_t n) { held_ += n; }
  void Settle(size_t n) { held_ -= std::min(held_, n); }
  // How many new requests the next commit may lease to us.
  size_t Room() const;
  // Puts requests this engine never started back to pending, on the store thread.
  void HandBack(std::vector<int64_t> request_ids);

  bool leasing() const { return leasing_; }
  size_t held() const { return held_; }

  // Store thread: renews this owner's leases, and records as failed the requests whose leases
  // expired max_lease_attempts times.
  void KeepAlive();

 private:
  void OnLeased(std::vector<Work> work, bool failed);

  Scheduler& loop_;
  Executor& store_thread_;
  Frontier& frontier_;
  Admission& admission_;
  Options options_;
  std::function<size_t()> busy_;
  std::function<void(std::vector<Work>)> leased_;
  size_t held_ = 0;  // leased and not yet recorded
  bool leasing_ = false;
  bool stopped_ = false;
  std::optional<Scheduler::TimerId> timer_;
};

}  // namespace celeriac::extractor
