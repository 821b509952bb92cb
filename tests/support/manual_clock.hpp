#pragma once
// ManualClock: a Clock that only moves when a test says so.

#include "core/base/clock.hpp"

namespace celeriac::testing {

class ManualClock final : public Clock {
 public:
  explicit ManualClock(WallTime start = WallTime{}) : now_(start) {}
  WallTime Now() const override { return now_; }
  MonoTime Monotonic() const override { return MonoTime{} + (now_ - start_); }
  void Advance(std::chrono::nanoseconds d) { now_ += std::chrono::duration_cast<WallTime::duration>(d); }
  void Set(WallTime t) { now_ = t; }

 private:
  WallTime now_;           // declared first: start_ is initialised from it
  WallTime start_ = now_;
};

}  // namespace celeriac::testing
