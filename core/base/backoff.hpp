#pragma once
// Backoff: how long to wait before attempt N+1. Exponential with a cap and optional full jitter,
// the same curve as Celery's retry_backoff / retry_backoff_max / retry_jitter:
//   delay = min(max, base * multiplier^attempt); with jitter, uniform in [0, delay].

#include <chrono>

namespace celeriac {

struct BackoffPolicy {
  std::chrono::milliseconds base{1000};   // delay before the first retry (attempt 0)
  std::chrono::milliseconds max{600'000};  // cap; Celery's retry_backoff_max default is 600 s
  double multiplier = 2.0;
  bool jitter = true;                      // full jitter: spreads retry storms apart
};

class Backoff {
 public:
  explicit Backoff(BackoffPolicy policy) : policy_(policy) {}

  // `attempt` counts retries already made (0 for the first retry). `unit_random` in [0, 1)
  // is the jitter draw; pass a fixed value in tests.
  std::chrono::milliseconds Delay(int attempt, double unit_random) const;

  // Same, drawing the jitter from a thread-local generator.
  std::chrono::milliseconds Delay(int attempt) const;

  const BackoffPolicy& policy() const { return policy_; }

 private:
  BackoffPolicy policy_;
};

}  // namespace celeriac
