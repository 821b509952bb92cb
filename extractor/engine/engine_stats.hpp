#pragma once
// EngineStats: what the engine has done so far, for logs and the crawl command's summary;
// StatsBook keeps them for the rooms that count (loop, store and parse threads).

#include <cstdint>
#include <cstddef>
#include <mutex>

namespace celeriac::extractor {

struct EngineStats {
  uint64_t fetched = 0, parsed = 0, failed = 0, retried = 0, committed = 0, dropped = 0;
  uint64_t bytes = 0;
  uint64_t commits = 0;
  double commit_seconds = 0;   // time the store thread spent recording results
  size_t in_flight = 0, queued = 0;
};

class StatsBook {
 public:
  // Any thread: `change(stats)` under the book's lock.
  template <class Change>
  void Update(Change&& change) {
    std::lock_guard lock(mutex_);
    change(stats_);
  }
  EngineStats Snapshot() const {
    std::lock_guard lock(mutex_);
    return stats_;
  }

 private:
  mutable std::mutex mutex_;
  EngineStats stats_;
};

}  // namespace celeriac::extractor
