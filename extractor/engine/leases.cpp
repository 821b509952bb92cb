#include "extractor/engine/leases.hpp"

#include <algorithm>

#include <spdlog/spdlog.h>

namespace celeriac::extractor {

using std::chrono::milliseconds;

Leases::Leases(Scheduler& loop, Executor& store_thread, Frontier& frontier, Admission& admission,
               Options options, std::function<size_t()> busy,
               std::function<void(std::vector<Work>)> leased)
    : loop_(loop),
      store_thread_(store_thread),
      frontier_(frontier),
      admission_(admission),
      options_(std::move(options)),
      busy_(std::move(busy)),
      leased_(std::move(leased)) {}

size_t Leases::Room() const {
  const size_t target = options_.concurrency * 2 + options_.commit_batch;
  return target - std::min(target, held_);
}

void Leases::MaybeLease() {
  if (leasing_ || stopped_) return;
  const size_t target = options_.concurrency * 2;
  if (held_ >= target + options_.commit_batch) return;
  if (busy_() >= target) return;
  if (timer_) {
    loop_.CancelTimer(*timer_);
    timer_.reset();
  }
  leasing_ = true;
  const size_t want = std::min(options_.lease_batch, target + options_.commit_batch - held_);
  store_thread_.Post([this, want] {
    auto leased = frontier_.Lease(want, options_.lease, options_.only_job);
    std::vector<Work> work;
    if (!leased) {
      spdlog::warn("leasing requests failed: {}", leased.error().message());
    } else {
      work.reserve(leased->size());
      std::vector<int64_t> orphans;  // of jobs that cannot run here: back to pending
      for (auto& l : *leased) {
        auto rt = admission_.RuntimeFor(l.job_id);
        if (!rt) {
          orphans.push_back(l.id);
          continue;
        }
        work.push_back(MakeWork(std::move(l), std::move(rt)));
      }
      if (!orphans.empty()) (void)frontier_.ReleaseLeases(orphans);
    }
    loop_.Post([this, work = std::move(work), failed = !leased]() mutable {
      OnLeased(std::move(work), failed);
    });
  });
}

void Leases::OnLeased(std::vector<Work> work, bool failed) {
  leasing_ = false;
  const size_t got = work.size();
  leased_(std::move(work));
  if (stopped_) return;
  if (got > 0 && !failed) return MaybeLease();
  // Nothing to do (or the database is away): look again in a while.
  PollLater();
}

void Leases::PollLater() {
  if (timer_ || leasing_ || stopped_) return;
  timer_ = loop_.AddTimer(options_.idle_poll, [this] {
    timer_.reset();
    MaybeLease();
  });
}

void Leases::Stop() {
  stopped_ = true;
  if (timer_) {
    loop_.CancelTimer(*timer_);
    timer_.reset();
  }
}

void Leases::HandBack(std::vector<int64_t> ids) {
  if (ids.empty()) return;
  store_thread_.Post([this, ids = std::move(ids)] {
    if (auto st = frontier_.ReleaseLeases(ids); !st)
      spdlog::warn("handing back {} requests failed: {}", ids.size(), st.error().message());
  });
}

void Leases::KeepAlive() {
  if (auto renewed = frontier_.RenewLeases(options_.lease); !renewed)
    spdlog::warn("renewing leases failed: {}", renewed.error().message());
  auto dead = frontier_.ReclaimExpired(options_.max_lease_attempts, options_.lease);
  if (!dead || dead->empty()) return;
  std::vector<RequestResult> failed;
  for (const auto& l : *dead) {
    RequestResult r;
    r.request_id = l.id;
    r.job_id = l.job_id;
    r.state = RequestResult::State::kFailed;
    r.error_class = "Download";
    r.error_message = "given up: " + std::to_string(options_.max_lease_attempts) +
                      " extractors took this request and stopped without finishing it";
    failed.push_back(std::move(r));
  }
  if (auto rep = frontier_.Commit(failed, {}); rep) admission_.Finished(rep->finished);
}

}  // namespace celeriac::extractor
