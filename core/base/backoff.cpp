#include "core/base/backoff.hpp"

#include <algorithm>
#include <cmath>
#include <random>

namespace celeriac {

std::chrono::milliseconds Backoff::Delay(int attempt, double unit_random) const {
  const double base = static_cast<double>(policy_.base.count());
  const double cap = static_cast<double>(policy_.max.count());
  // Computed in floating point and capped before converting, so a large attempt cannot overflow.
  double delay = base * std::pow(policy_.multiplier, std::max(attempt, 0));
  if (!std::isfinite(delay) || delay > cap) delay = cap;
  if (policy_.jitter) {
    delay = std::floor(std::clamp(unit_random, 0.0, 1.0) * (delay + 1.0));
    delay = std::min(delay, cap);
  }
  return std::chrono::milliseconds(static_cast<long long>(std::max(delay, 0.0)));
}

std::chrono::milliseconds Backoff::Delay(int attempt) const {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uniform_real_distribution<double> dist(0.0, 1.0);
  return Delay(attempt, dist(rng));
}

}  // namespace celeriac
