#pragma once
// Clock: the one source of time. Beat, retries, ETAs, backoff and politeness read a Clock, so
// tests step a manual clock (tests/support/manual_clock.hpp) across cron boundaries and DST
// without sleeping.

#include <chrono>
#include <optional>
#include <string_view>
#include <string>

namespace celeriac {

class Clock {
 public:
  using WallTime = std::chrono::system_clock::time_point;
  using MonoTime = std::chrono::steady_clock::time_point;

  virtual ~Clock() = default;
  // Wall time (UTC), for schedules, ETAs and timestamps written anywhere.
  virtual WallTime Now() const = 0;
  // Monotonic time, for measuring durations and deadlines.
  virtual MonoTime Monotonic() const = 0;
};

class SystemClock final : public Clock {
 public:
  WallTime Now() const override { return std::chrono::system_clock::now(); }
  MonoTime Monotonic() const override { return std::chrono::steady_clock::now(); }

  // The process-wide real clock, for main() to inject.
  static SystemClock& Instance();
};

// ISO-8601 in UTC with microseconds and an explicit offset, as Celery writes eta/expires:
// "2026-11-22T15:31:56.871728+00:00".
std::string FormatIso8601(Clock::WallTime t);

// Parses ISO-8601 as Celery's workers accept it (dateutil.isoparse): "YYYY-MM-DD", then "T" or
// a space and "HH:MM[:SS[.ffffff]]", then "Z", "+HH:MM", "+HHMM" or "+HH", or nothing. A time
// without an offset is taken as UTC (Celery's default worker timezone). nullopt if malformed, or
// outside the years 1678-2261 that Clock::WallTime (64-bit nanoseconds) holds with room to spare.
std::optional<Clock::WallTime> ParseIso8601(std::string_view text);

}  // namespace celeriac
