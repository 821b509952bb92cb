#include "core/app/startup.hpp"

#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <thread>

#include <spdlog/spdlog.h>

#include "core/base/backoff.hpp"
#include "core/base/secrets.hpp"
#include "core/log/log.hpp"

namespace celeriac::app {

std::optional<std::string> ConfigPath(std::optional<std::string> config_path) {
  if (!config_path) {
    if (const char* env = std::getenv("CELERIAC_CONFIG"); env != nullptr && *env != '\0')
      config_path = env;
  }
  return config_path;
}

Status StartLogging(const log::LogSettings& settings) {
  const auto format = settings.format == "json" ? log::Format::kJson : log::Format::kText;
  return log::Init(settings.level, format);
}

namespace {

volatile sig_atomic_t g_shutdown_requested = 0;

void OnShutdownSignal(int) { g_shutdown_requested = 1; }

// Until the event loop takes SIGTERM and SIGINT over, they set the flag instead of killing the
// process (which would exit by signal, not 0, and skip any cleanup).
void CatchShutdownSignals() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction action {};
    action.sa_handler = OnShutdownSignal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGTERM, &action, nullptr);
    sigaction(SIGINT, &action, nullptr);
  });
}

}  // namespace

bool ShutdownRequested() { return g_shutdown_requested != 0; }

Status WaitForService(std::string_view what, std::string_view url,
                      const std::function<Status()>& attempt) {
  CatchShutdownSignals();
  const Backoff backoff(BackoffPolicy{std::chrono::milliseconds(500), std::chrono::seconds(10),
                                      2.0, /*jitter=*/false});
  for (int n = 0;; ++n) {
    if (ShutdownRequested()) break;
    Status st = attempt();
    if (st.ok()) {
      if (n > 0) spdlog::info("{} {} reachable; starting", what, MaskSecrets(url));
      return st;
    }
    if (!st.error().retryable()) return st;
    const auto delay = backoff.Delay(n);
    spdlog::warn("{} {} not reachable yet: {}; retrying in {} ms", what, MaskSecrets(url),
                 MaskSecrets(st.error().message(), url), delay.count());
    for (auto waited = std::chrono::milliseconds(0); waited < delay && !ShutdownRequested();
         waited += std::chrono::milliseconds(100))
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return Error(ErrorCode::kUnavailable,
               std::string("stopped by a signal while waiting for ") + std::string(what), false);
}

}  // namespace celeriac::app
