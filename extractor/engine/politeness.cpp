#include "extractor/engine/politeness.hpp"

#include <algorithm>
#include <cctype>
#include <ctime>

namespace celeriac::extractor {

using std::chrono::milliseconds;

std::optional<milliseconds> ParseRetryAfter(const std::string& value, Clock::WallTime now) {
  if (value.empty()) return std::nullopt;
  if (std::all_of(value.begin(), value.end(), [](char c) { return std::isdigit(c) != 0; })) {
    if (value.size() > 9) return milliseconds(999'999'999'000LL);
    return milliseconds(std::stoll(value) * 1000);
  }
  std::tm tm{};
  if (strptime(value.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm) == nullptr) return std::nullopt;
  const auto at = std::chrono::system_clock::from_time_t(timegm(&tm));
  return std::max(milliseconds(0), std::chrono::duration_cast<milliseconds>(at - now));
}

milliseconds BaseDelay(const RobotsRules* rules, const parse::CrawlSettings& s) {
  auto delay = s.politeness.min_delay;
  if (rules)
    if (auto cd = rules->crawl_delay())
      delay = std::max(delay, std::min(*cd, s.politeness.max_retry_after));
  return delay;
}

HostPace::Verdict HostPace::TryStart(milliseconds base, Clock::MonoTime now) {
  using Kind = Verdict::Kind;
  if (backoff_until_ > now) return {Kind::kWait, backoff_until_};
  if (base.count() > 0) shared_ = true;
  if (shared_) {
    if (!reserved_start_) return {reserving_ ? Kind::kReserving : Kind::kReserve, {}};
    // The ledger's slot, and never sooner after this process's last start than the gap: a
    // start that came late (a busy loop) does not bring the next one forward.
    const auto at = std::max(*reserved_start_, next_start_);
    if (at > now) return {Kind::kWait, at};
    reserved_start_.reset();
  } else if (next_start_ > now) {
    return {Kind::kWait, next_start_};
  }
  next_start_ = now + std::max(base, delay_);
  return {Kind::kGo, {}};
}

void HostPace::Reserved(milliseconds wait, milliseconds delay, Clock::MonoTime answered) {
  reserving_ = false;
  reserved_start_ = answered + wait;
  delay_ = delay;
}

void HostPace::ReserveFailed(milliseconds min_delay, Clock::MonoTime now) {
  reserving_ = false;
  reserved_start_ = std::max(now, next_start_);
  delay_ = min_delay;
}

milliseconds HostPace::SlowDown(milliseconds cap, const std::optional<std::string>& retry_after,
                                Clock::WallTime wall_now, Clock::MonoTime now) {
  auto backoff = std::max(milliseconds(1000), delay_ * 2);
  if (retry_after)
    if (auto ra = ParseRetryAfter(*retry_after, wall_now)) backoff = *ra;
  backoff = std::min(backoff, cap);
  delay_ = std::min(std::max(milliseconds(1000), delay_ * 2), cap);
  backoff_until_ = std::max(backoff_until_, now + backoff);
  shared_ = true;
  reserved_start_.reset();
  return backoff;
}

void HostPace::Ease(milliseconds base, Clock::MonoTime now) {
  if (delay_ > base && backoff_until_ <= now)
    delay_ = std::max(base, std::chrono::duration_cast<milliseconds>(delay_ * 0.8));
}

}  // namespace celeriac::extractor
