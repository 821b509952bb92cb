#include "orchestrator/tasks/backend_cleanup.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace celeriac::orchestrator {
namespace {

using worker::Json;
using worker::TaskContext;
using worker::TaskError;
using worker::TaskOutcome;

std::chrono::seconds Hours(int64_t h) { return std::chrono::hours(h); }

std::string Summary(const state::RetentionCounts& c) {
  return fmt::format("{} crawl_requests, {} crawl_hosts, {} task_results, {} dead_letters",
                     c.crawl_requests, c.crawl_hosts, c.task_results, c.dead_letters);
}

}  // namespace

state::RetentionAges RetentionAgesOf(const RetentionSettings& s) {
  state::RetentionAges a;
  a.task_results = Hours(s.task_results_hours);
  a.crawl_requests = Hours(s.crawl_requests_hours);
  a.crawl_hosts = Hours(s.crawl_hosts_hours);
  a.dead_letters = Hours(s.dead_letters_hours);
  return a;
}

worker::TaskFunction MakeBackendCleanup(const RetentionSettings& settings, RetentionRun run) {
  return [settings, run = std::move(run)](TaskContext& ctx) -> TaskOutcome {
    state::RetentionOptions options;
    options.ages = RetentionAgesOf(settings);
    options.batch = settings.batch_size;
    options.stop = [&ctx] { return ctx.cancelled(); };
    const auto started = std::chrono::steady_clock::now();
    state::RetentionCounts so_far;
    auto counts = run(options, &so_far);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    if (!counts) {
      spdlog::error("backend_cleanup: failed after {:.1f} s, having deleted {}: {}", seconds,
                    Summary(so_far), counts.error().message());
      TaskError e = TaskError::FromError(counts.error());
      e.retryable = false;
      return e;
    }
    spdlog::info("backend_cleanup: deleted {} in {:.1f} s{}", Summary(*counts), seconds,
                 counts->complete ? "" : " (stopped early: the rest is left for the next run)");
    Json out = counts->ToJson();
    const auto& a = options.ages;
    out["max_age_s"] = Json{{"crawl_requests", a.crawl_requests.count()},
                            {"crawl_hosts", a.crawl_hosts.count()},
                            {"task_results", a.task_results.count()},
                            {"dead_letters", a.dead_letters.count()}};
    return out;
  };
}

worker::TaskFunction MakeBackendCleanup(const RetentionSettings& settings, pg::Pool& pool,
                                        const Clock& clock) {
  return MakeBackendCleanup(
      settings, [&pool, &clock](const state::RetentionOptions& options,
                                state::RetentionCounts* so_far) {
        return state::DeleteExpired(pool, clock.Now(), options, so_far);
      });
}

}  // namespace celeriac::orchestrator
