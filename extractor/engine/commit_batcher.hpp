#pragma once
// CommitBatcher: which results the next commit records, and when it starts. One commit at a
// time. Results wait until `batch` of them are in or `interval` has passed, except that a
// commit starts at once
//   - for a result that leads to more pages (its links are the crawl's critical path: it goes
//     to the front, and is always in the next batch), and
//   - when the engine asks for it (`now`: the pipeline starves for work, or drains).
// A leading page whose next page is being fetched ahead waits for it, a few ms at most
// (fold_wait), so that one commit records both: the commit, not the fetch, is the slow step of
// the pagination chain. A batch holds every leading result and fills up to `batch` with the
// rest. (Sending the leading ones alone, in a smaller transaction, made the pagination chain
// wait for the big one before it: measured slower.)
//
// Threading: the loop thread.

#include <chrono>
#include <functional>
#include <optional>
#include <vector>

#include "core/loop/scheduler.hpp"
#include "extractor/engine/work.hpp"

namespace celeriac::extractor {

class CommitBatcher {
 public:
  struct Options {
    size_t batch = 256;
    std::chrono::milliseconds interval{20};
    std::chrono::milliseconds fold_wait{3};
  };
  // `flush` asks the engine to start a commit (it calls Take).
  CommitBatcher(Scheduler& loop, Options options, std::function<void()> flush);

  void Add(RequestResult result, bool now);
  // The next batch; nullopt when no commit should start yet: one is under way, nothing waits,
  // or the first result's next page is `coming` and has not been waited for.
  std::optional<std::vector<RequestResult>> Take(
      bool draining, const std::function<bool(const RequestResult&)>& coming);
  // The commit under way ended.
  void Ended() { committing_ = false; }
  // Flushes what waits if it is a batch or `now`, else makes sure a flush comes within
  // `interval`.
  void FlushOrWait(bool now);
  // Stops waiting for a next page; true when it was waiting (the caller flushes).
  bool CancelFoldWait();

  bool committing() const { return committing_; }
  bool waiting_for_next_page() const { return fold_timer_.has_value(); }
  bool empty() const { return pending_.empty(); }
  size_t size() const { return pending_.size(); }

 private:
  void CancelTimers();

  Scheduler& loop_;
  Options options_;
  std::function<void()> flush_;
  std::vector<RequestResult> pending_;  // leading results first
  bool committing_ = false;
  std::optional<Scheduler::TimerId> flush_timer_;
  std::optional<Scheduler::TimerId> fold_timer_;
  bool fold_waited_ = false;
};

}  // namespace celeriac::extractor
