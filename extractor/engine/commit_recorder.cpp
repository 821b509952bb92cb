#include "extractor/engine/commit_recorder.hpp"

#include <thread>

#include <spdlog/spdlog.h>

#include "core/base/backoff.hpp"

namespace celeriac::extractor {

using std::chrono::milliseconds;

namespace {
// 0.1 s, doubling to 3.2 s between attempts to reach the database.
const Backoff kRetryPause({milliseconds(100), milliseconds(3200), 2.0, false});
constexpr int kAttemptsWhileStopping = 20;
}  // namespace

CommitRecorder::CommitRecorder(Frontier& frontier, Admission& admission, StatsBook& stats,
                               milliseconds lease)
    : frontier_(frontier), admission_(admission), stats_(stats), lease_(lease) {}

CommitRecorder::Recorded CommitRecorder::Record(const std::vector<RequestResult>& batch,
                                                size_t leased_results, size_t lease_new) {
  Recorded out;
  out.follow_ons.assign(batch.size() - leased_results, false);
  const auto limits = admission_.LimitsOf(batch);
  auto report = CommitDurably(batch, limits, lease_new, leased_results);
  if (!report) return out;
  out.left_pending = report->left_pending;
  for (size_t i : report->follow_ons_recorded)
    if (i >= leased_results) out.follow_ons[i - leased_results] = true;
  for (auto& l : report->leased) {
    auto rt = admission_.RuntimeFor(l.job_id);
    if (!rt) continue;  // its job ended; the lease expires harmlessly
    out.discovered.push_back(MakeWork(std::move(l), std::move(rt)));
  }
  if (report->dropped > 0)
    spdlog::warn("{} result(s) dropped: their leases expired and another extractor took them",
                 report->dropped);
  admission_.Finished(report->finished);
  return out;
}

Result<CommitReport> CommitRecorder::CommitDurably(const std::vector<RequestResult>& batch,
                                                   const std::map<int64_t, JobLimits>& limits,
                                                   size_t lease_new, size_t leased_results) {
  auto report = CommitUntilAnswered(batch, limits, lease_new);
  if (report) return report;
  if (report.error().retryable()) {
    spdlog::error("recording {} result(s) failed while stopping: {}; their requests are redone "
                  "when their leases expire",
                  batch.size(), report.error().message());
    return report;
  }
  spdlog::error("the database refused a commit of {} result(s) ({}); recording them one by one",
                batch.size(), report.error().message());
  return CommitOneByOne(batch, limits, lease_new, leased_results);
}

// The commit as a whole, until the database answers (or refuses it for what it holds).
Result<CommitReport> CommitRecorder::CommitUntilAnswered(
    const std::vector<RequestResult>& batch, const std::map<int64_t, JobLimits>& limits,
    size_t lease_new) {
  for (int attempt = 0;; ++attempt) {
    const auto started = std::chrono::steady_clock::now();
    auto report = frontier_.Commit(batch, limits, lease_new, lease_);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    stats_.Update([&](EngineStats& s) {
      s.commit_seconds += seconds;
      ++s.commits;
      if (report) {
        s.committed += report->recorded;
        s.dropped += report->dropped;
      }
    });
    if (report || !report.error().retryable()) return report;
    if (stopping_.load() && attempt >= kAttemptsWhileStopping) return report;
    if (attempt == 0 || attempt % 10 == 0)
      spdlog::warn("recording {} result(s) failed ({}); retrying until the database answers",
                   batch.size(), report.error().message());
    std::this_thread::sleep_for(kRetryPause.Delay(attempt));
  }
}

CommitReport CommitRecorder::CommitOneByOne(const std::vector<RequestResult>& batch,
                                            const std::map<int64_t, JobLimits>& limits,
                                            size_t lease_new, size_t leased_results) {
  CommitReport merged;
  std::vector<int64_t> unrecorded;
  for (size_t i = 0; i < leased_results; ++i) {
    auto single = frontier_.Commit({batch[i]}, limits, lease_new, lease_);
    if (!single && !single.error().retryable()) {
      RequestResult failed;
      failed.request_id = batch[i].request_id;
      failed.job_id = batch[i].job_id;
      failed.url = batch[i].url;
      failed.state = RequestResult::State::kFailed;
      failed.error_class = "Store";
      failed.error_message =
          "the database refused this page's results: " + single.error().message();
      spdlog::error("request {}: {}", failed.request_id, failed.error_message);
      single = frontier_.Commit({failed}, limits, 0, lease_);
    }
    if (!single) {
      unrecorded.push_back(batch[i].request_id);
      continue;
    }
    merged.recorded += single->recorded;
    merged.dropped += single->dropped;
    merged.left_pending += single->left_pending;
    for (auto& f : single->finished) merged.finished.push_back(std::move(f));
    for (auto& l : single->leased) merged.leased.push_back(std::move(l));
  }
  if (!unrecorded.empty()) {
    if (auto st = frontier_.ExpireLeases(unrecorded); !st)
      spdlog::warn("expiring {} lease(s) failed: {}", unrecorded.size(), st.error().message());
  }
  return merged;
}

}  // namespace celeriac::extractor
