#include "extractor/engine/admission.hpp"

#include <spdlog/spdlog.h>

namespace celeriac::extractor {

Admission::Admission(Frontier& frontier, ModuleFactory modules,
                     std::function<void(const FinishedJob&)> ended)
    : frontier_(frontier), modules_(std::move(modules)), ended_(std::move(ended)) {}

Result<bool> Admission::Admit(const ExtractRequest& request) {
  auto job = frontier_.ClaimJob(request);
  if (!job) return job.error();
  if (job->status != "pending") {
    spdlog::info("extract {}: job {} is already {}; nothing to start", request.celery_task_id,
                 job->job_id, job->status);
    return false;
  }
  auto module = modules_(job->config);
  Result<std::optional<FinishedJob>> outcome = std::optional<FinishedJob>{};
  if (!module) {
    spdlog::warn("job {} (crawl config {}): config rejected: {}", job->job_id,
                 job->crawl_config_id, module.error().message());
    outcome = frontier_.FailJob(job->job_id, "Parse",
                                "crawl config " + std::to_string(job->crawl_config_id) +
                                    " is invalid: " + module.error().message(),
                                request.reply_to);
  } else {
    const auto start = (*module)->Generate();
    const auto settings = parse::CrawlSettings::FromConfig(job->config);
    outcome = frontier_.StartJob(job->job_id, start, request.reply_to, settings.limits.watchdog);
    if (outcome)
      spdlog::info("job {} (run {}, crawl config {}): started with {} start request(s)",
                   job->job_id, job->run_id, job->crawl_config_id, start.size());
  }
  if (!outcome) return outcome.error();
  if (*outcome) Finished({**outcome});
  return true;
}

Status Admission::Refetch(int64_t request_id, const std::string& celery_task_id) {
  auto job = frontier_.Refetch(request_id, celery_task_id);
  if (!job) return job.error();
  spdlog::info("request {} replayed into job {}", request_id, *job);
  return Ok();
}

std::shared_ptr<const JobRuntime> Admission::RuntimeFor(int64_t job_id) {
  if (auto it = runtimes_.find(job_id); it != runtimes_.end()) return it->second;
  auto info = frontier_.LoadJob(job_id);
  if (!info) {
    spdlog::warn("job {}: cannot load: {}", job_id, info.error().message());
    return nullptr;
  }
  auto module = modules_(info->config);
  if (!module) {
    spdlog::warn("job {}: config rejected: {}", job_id, module.error().message());
    auto failed = frontier_.FailJob(job_id, "Parse", module.error().message(), "");
    if (failed && *failed) Finished({**failed});
    return nullptr;
  }
  auto rt = std::make_shared<JobRuntime>();
  rt->settings = parse::CrawlSettings::FromConfig(info->config);
  rt->limits = extractor::LimitsOf(rt->settings);
  rt->info = std::move(*info);
  rt->module = std::move(*module);
  runtimes_[job_id] = rt;
  return rt;
}

std::map<int64_t, JobLimits> Admission::LimitsOf(const std::vector<RequestResult>& batch) const {
  std::map<int64_t, JobLimits> limits;
  for (const auto& r : batch) {
    if (limits.contains(r.job_id)) continue;
    if (auto rt = runtimes_.find(r.job_id); rt != runtimes_.end())
      limits[r.job_id] = rt->second->limits;
  }
  return limits;
}

void Admission::Finished(const std::vector<FinishedJob>& jobs) {
  for (const auto& f : jobs) {
    runtimes_.erase(f.job_id);
    spdlog::info("job {} (run {}): {}{}{} — {}", f.job_id, f.run_id, f.status,
                 f.reason.empty() ? "" : ": ", f.reason, f.result.dump());
    if (f.run_finished) spdlog::info("run {}: {}", f.run_id, f.run_status);
    ended_(f);
  }
}

void Admission::Watchdog() {
  auto stalled = frontier_.AbortStalled();
  if (!stalled) {
    spdlog::warn("watchdog check failed: {}", stalled.error().message());
    return;
  }
  for (const auto& f : *stalled)
    spdlog::warn("job {} aborted by its watchdog: {}", f.job_id, f.reason);
  Finished(*stalled);
}

}  // namespace celeriac::extractor
