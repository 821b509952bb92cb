#pragma once
// Politeness: when the next request may start on one host. The gap between starts is the
// config's min_delay, or robots.txt's Crawl-delay when longer (capped by max_retry_after); a 429
// or 503 doubles the gap (at least 1 s) and holds the host for the Retry-After, or for the new
// gap; successes ease the gap back by x0.8 per request once the backoff is over.
//
// Once any gap applies the host is `shared`: every start is a slot reserved in the HostLedger,
// so the rate holds across the run's extractors; HostPace then waits for its reservation. If
// the ledger cannot be reached it keeps the pace in this process.
//
// Pure: times come in as arguments, so tests step them by hand.

#include <chrono>
#include <optional>
#include <string>

#include "core/base/clock.hpp"
#include "extractor/parse/crawl_settings.hpp"
#include "extractor/engine/robots.hpp"

namespace celeriac::extractor {

// Retry-After: delay-seconds or an HTTP-date; nullopt when neither.
std::optional<std::chrono::milliseconds> ParseRetryAfter(const std::string& value,
                                                         Clock::WallTime now);

// The gap between starts that the config and robots.txt ask for (`rules` may be null).
std::chrono::milliseconds BaseDelay(const RobotsRules* rules, const parse::CrawlSettings& s);

class HostPace {
 public:
  struct Verdict {
    enum class Kind {
      kGo,         // start now: the start is taken
      kWait,       // not before `until`
      kReserve,    // reserve a slot in the ledger first (then Reserving until Reserved)
      kReserving,  // a reservation is under way
    };
    Kind kind = Kind::kGo;
    Clock::MonoTime until{};
  };

  // May a request start now, given the gap `base`? On kGo the start is taken.
  Verdict TryStart(std::chrono::milliseconds base, Clock::MonoTime now);

  void Reserving() { reserving_ = true; }
  // The ledger's reservation: a start `wait` after `answered` (when the ledger's answer came),
  // with the host's current gap.
  void Reserved(std::chrono::milliseconds wait, std::chrono::milliseconds delay,
                Clock::MonoTime answered);
  // The ledger was away: keep the configured pace here.
  void ReserveFailed(std::chrono::milliseconds min_delay, Clock::MonoTime now);

  // A 429 or 503. Returns how long the host is held.
  std::chrono::milliseconds SlowDown(std::chrono::milliseconds cap,
                                     const std::optional<std::string>& retry_after,
                                     Clock::WallTime wall_now, Clock::MonoTime now);
  // A page served: the gap eases back towards `base` once the backoff is over.
  void Ease(std::chrono::milliseconds base, Clock::MonoTime now);

  std::chrono::milliseconds delay() const { return delay_; }
  Clock::MonoTime backoff_until() const { return backoff_until_; }
  bool shared() const { return shared_; }

 private:
  Clock::MonoTime next_start_{};              // in-process gap between starts
  std::chrono::milliseconds delay_{0};        // current gap (crawl-delay, backoff, the ledger's)
  Clock::MonoTime backoff_until_{};
  bool shared_ = false;
  bool reserving_ = false;
  std::optional<Clock::MonoTime> reserved_start_;
};

}  // namespace celeriac::extractor
