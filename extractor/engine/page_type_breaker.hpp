#pragma once
// PageTypeBreaker: a page type (a step of a job's module) whose requests fail for good
// `errors.module_pause_after` times in a row pauses for `errors.module_cooldown`. While it is
// paused, its requests are parked instead of fetched; when the pause ends they go back to their
// hosts' queues (`resume`). A success resets the count.
//
// Threading: the loop thread.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/base/clock.hpp"
#include "core/loop/scheduler.hpp"
#include "extractor/engine/work.hpp"

namespace celeriac::extractor {

class PageTypeBreaker {
 public:
  PageTypeBreaker(Scheduler& loop, const Clock& clock,
                  std::function<void(std::vector<Work>)> resume);

  // A request of `w`'s page type ended: failed for good, or not.
  void Note(const Work& w, bool failed);
  // Until when `w`'s page type is paused, if it is at `now`.
  std::optional<Clock::MonoTime> PausedUntil(const Work& w, Clock::MonoTime now) const;
  // Keeps `w` until its page type resumes.
  void Park(Work w);
  // The job ended: its page types go; returns how many parked requests went with them.
  size_t ForgetJob(int64_t job_id);

 private:
  struct PageType {
    int consecutive_failures = 0;
    Clock::MonoTime paused_until{};
    std::vector<Work> parked;
  };
  static std::string Key(const Work& w);
  void Resume(const std::string& key);

  Scheduler& loop_;
  const Clock& clock_;
  std::function<void(std::vector<Work>)> resume_;
  std::unordered_map<std::string, PageType> page_types_;  // by "job_id page_type"
};

}  // namespace celeriac::extractor
