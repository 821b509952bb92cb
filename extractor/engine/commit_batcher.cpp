#include "extractor/engine/commit_batcher.hpp"

#include <algorithm>
#include <iterator>

#include "extractor/engine/page_outcome.hpp"

namespace celeriac::extractor {

CommitBatcher::CommitBatcher(Scheduler& loop, Options options, std::function<void()> flush)
    : loop_(loop), options_(options), flush_(std::move(flush)) {}

void CommitBatcher::Add(RequestResult result, bool now) {
  const bool leads = Leads(result);
  if (leads) {
    pending_.insert(pending_.begin(), std::move(result));
  } else {
    pending_.push_back(std::move(result));
  }
  FlushOrWait(now || leads);
}

void CommitBatcher::FlushOrWait(bool now) {
  if (pending_.empty()) return;
  if (pending_.size() >= options_.batch || now) return flush_();
  if (!flush_timer_)
    flush_timer_ = loop_.AddTimer(options_.interval, [this] {
      flush_timer_.reset();
      flush_();
    });
}

std::optional<std::vector<RequestResult>> CommitBatcher::Take(
    bool draining, const std::function<bool(const RequestResult&)>& coming) {
  if (committing_ || pending_.empty()) return std::nullopt;
  if (!draining && !fold_waited_ && coming(pending_.front())) {
    if (!fold_timer_) {
      fold_timer_ = loop_.AddTimer(options_.fold_wait, [this] {
        fold_timer_.reset();
        fold_waited_ = true;
        flush_();
      });
    }
    return std::nullopt;
  }
  fold_waited_ = false;
  CancelTimers();
  committing_ = true;
  size_t leading = 0;
  while (leading < pending_.size() && Leads(pending_[leading])) ++leading;
  const size_t take = std::min(pending_.size(), std::max(leading, options_.batch));
  std::vector<RequestResult> batch;
  if (take == pending_.size()) {
    batch.swap(pending_);
  } else {
    const auto end = pending_.begin() + static_cast<std::ptrdiff_t>(take);
    batch.assign(std::make_move_iterator(pending_.begin()), std::make_move_iterator(end));
    pending_.erase(pending_.begin(), end);
  }
  return batch;
}

bool CommitBatcher::CancelFoldWait() {
  if (!fold_timer_) return false;
  loop_.CancelTimer(*fold_timer_);
  fold_timer_.reset();
  return true;
}

void CommitBatcher::CancelTimers() {
  CancelFoldWait();
  if (flush_timer_) {
    loop_.CancelTimer(*flush_timer_);
    flush_timer_.reset();
  }
}

}  // namespace celeriac::extractor
