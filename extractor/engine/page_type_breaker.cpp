#include "extractor/engine/page_type_breaker.hpp"

#include <spdlog/spdlog.h>

namespace celeriac::extractor {

using std::chrono::milliseconds;

PageTypeBreaker::PageTypeBreaker(Scheduler& loop, const Clock& clock,
                                 std::function<void(std::vector<Work>)> resume)
    : loop_(loop), clock_(clock), resume_(std::move(resume)) {}

std::string PageTypeBreaker::Key(const Work& w) {
  return std::to_string(w.lease.job_id) + ' ' + w.lease.spec.page_type;
}

void PageTypeBreaker::Note(const Work& w, bool failed) {
  const auto& s = w.job->settings;
  const std::string key = Key(w);
  auto& m = page_types_[key];
  if (!failed) {
    m.consecutive_failures = 0;
    return;
  }
  if (++m.consecutive_failures < s.errors.module_pause_after) return;
  m.consecutive_failures = 0;
  m.paused_until = clock_.Monotonic() + s.errors.module_cooldown;
  spdlog::warn("job {}: page type '{}' paused for {} ms after {} consecutive failures",
               w.lease.job_id, w.lease.spec.page_type, s.errors.module_cooldown.count(),
               s.errors.module_pause_after);
  loop_.AddTimer(s.errors.module_cooldown + milliseconds(1), [this, key] { Resume(key); });
}

void PageTypeBreaker::Resume(const std::string& key) {
  auto it = page_types_.find(key);
  if (it == page_types_.end()) return;
  auto parked = std::move(it->second.parked);
  it->second.parked.clear();
  spdlog::info("job page type {} resumes with {} waiting request(s)", key, parked.size());
  resume_(std::move(parked));
}

std::optional<Clock::MonoTime> PageTypeBreaker::PausedUntil(const Work& w,
                                                            Clock::MonoTime now) const {
  if (page_types_.empty()) return std::nullopt;
  auto it = page_types_.find(Key(w));
  if (it == page_types_.end() || it->second.paused_until <= now) return std::nullopt;
  return it->second.paused_until;
}

void PageTypeBreaker::Park(Work w) {
  page_types_[Key(w)].parked.push_back(std::move(w));
}

size_t PageTypeBreaker::ForgetJob(int64_t job_id) {
  const std::string prefix = std::to_string(job_id) + ' ';
  size_t dropped = 0;
  for (auto it = page_types_.begin(); it != page_types_.end();) {
    if (it->first.starts_with(prefix)) {
      dropped += it->second.parked.size();
      it = page_types_.erase(it);
    } else {
      ++it;
    }
  }
  return dropped;
}

}  // namespace celeriac::extractor
