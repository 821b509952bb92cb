#include "core/admin/readiness.hpp"

#include <optional>

#include <spdlog/spdlog.h>

#include "core/base/secrets.hpp"
#include "core/log/log.hpp"

namespace celeriac::admin {

using Clock = std::chrono::steady_clock;

namespace {
spdlog::logger& Log() {
  static const std::shared_ptr<spdlog::logger> logger = log::Get("readiness");
  return *logger;
}
}  // namespace

struct Readiness::State {
  std::string name;
  CheckFn check;

  std::mutex mu;
  std::condition_variable cv;
  bool requested = false;
  bool running = false;
  bool stopping = false;
  uint64_t completed = 0;  // runs finished so far
  bool ok = false;
  std::optional<Clock::time_point> finished_at;
  bool reported_down = false;  // the log said it is unreachable and has not said it is back
  bool reported_slow = false;  // the log said the run in flight is late
};

Readiness::Readiness(ReadinessOptions options) : options_(options) {}

Readiness::~Readiness() {
  Stop();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
}

void Readiness::Add(std::string name, CheckFn check) {
  auto state = std::make_unique<State>();
  state->name = std::move(name);
  state->check = std::move(check);
  states_.push_back(std::move(state));
}

void Readiness::Start() {
  for (auto& state : states_) {
    state->requested = true;
    threads_.emplace_back([this, s = state.get()] { Run(*s); });
  }
}

void Readiness::Stop() {
  for (auto& state : states_) {
    std::lock_guard lock(state->mu);
    state->stopping = true;
    state->cv.notify_all();
  }
}

void Readiness::Run(State& s) {
  std::unique_lock lock(s.mu);
  for (;;) {
    s.cv.wait(lock, [&] { return s.requested || s.stopping; });
    if (s.stopping) return;
    s.requested = false;
    s.running = true;
    lock.unlock();
    Status st = Ok();
    try {
      st = s.check();
    } catch (const std::exception& e) {
      st = Error(ErrorCode::kInternal, e.what());
    } catch (...) {
      st = Error(ErrorCode::kInternal, "unknown exception");
    }
    lock.lock();
    s.running = false;
    s.reported_slow = false;
    s.ok = st.ok();
    s.finished_at = Clock::now();
    ++s.completed;
    if (!st.ok() && !s.reported_down) {
      Log().warn("readiness: {} is unreachable: {}", s.name,
                   MaskSecrets(st.error().message()));
      s.reported_down = true;
    } else if (st.ok() && s.reported_down) {
      Log().info("readiness: {} is reachable again", s.name);
      s.reported_down = false;
    }
    s.cv.notify_all();
  }
}

std::vector<Readiness::Dependency> Readiness::Check() {
  const auto now = Clock::now();
  const auto deadline = now + options_.deadline;
  // Ask first, then wait: the checks run side by side, within one deadline.
  std::vector<uint64_t> wanted(states_.size(), 0);
  for (size_t i = 0; i < states_.size(); ++i) {
    State& s = *states_[i];
    std::lock_guard lock(s.mu);
    const bool fresh =
        !s.running && !s.requested && s.finished_at && now - *s.finished_at < options_.fresh_for;
    if (fresh) {
      wanted[i] = s.completed;
      continue;
    }
    // The run in flight (or asked for) counts: it started no earlier than the fresh period.
    wanted[i] = s.completed + 1;
    if (!s.running && !s.requested) {
      s.requested = true;
      s.cv.notify_all();
    }
  }
  std::vector<Dependency> out;
  for (size_t i = 0; i < states_.size(); ++i) {
    State& s = *states_[i];
    std::unique_lock lock(s.mu);
    const bool answered = s.cv.wait_until(
        lock, deadline, [&] { return s.completed >= wanted[i] || s.stopping; });
    Dependency d;
    d.name = s.name;
    d.ok = answered && s.completed >= wanted[i] && s.ok;
    d.reason = d.ok ? "ok" : "unreachable";
    if (!answered && !s.reported_slow) {
      Log().warn("readiness: {} did not answer within {} ms", s.name,
                   options_.deadline.count());
      s.reported_slow = true;
    }
    out.push_back(std::move(d));
  }
  return out;
}

}  // namespace celeriac::admin
