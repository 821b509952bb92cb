// The engine's rooms alone, with a manual clock: a host's pace (delay, backoff, Retry-After,
// easing, reservations), how a failed request is classified and retried, and what the commit
// batcher sends when.

#include <chrono>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "extractor/engine/commit_batcher.hpp"
#include "extractor/engine/page_outcome.hpp"
#include "extractor/engine/politeness.hpp"
#include "tests/support/manual_clock.hpp"
#include "tests/support/manual_loop.hpp"

namespace celeriac::extractor {
namespace {

using std::chrono::milliseconds;
using testing::ManualClock;
using testing::ManualLoop;
using Kind = HostPace::Verdict::Kind;

// ---- Retry-After and the pace of one host -------------------------------------------------

TEST(RetryAfterTest, ReadsSecondsAndHttpDates) {
  const auto now = Clock::WallTime{} + std::chrono::seconds(1'700'000'000);
  EXPECT_EQ(ParseRetryAfter("120", now), milliseconds(120'000));
  EXPECT_EQ(ParseRetryAfter("0", now), milliseconds(0));
  // 1,700,000,030 s since the epoch.
  EXPECT_EQ(ParseRetryAfter("Tue, 14 Nov 2023 22:13:50 GMT", now), milliseconds(30'000));
  EXPECT_EQ(ParseRetryAfter("Tue, 14 Nov 2023 22:13:00 GMT", now), milliseconds(0)) << "past";
  EXPECT_EQ(ParseRetryAfter("soon", now), std::nullopt);
  EXPECT_EQ(ParseRetryAfter("", now), std::nullopt);
  EXPECT_EQ(ParseRetryAfter("99999999999", now), milliseconds(999'999'999'000LL)) << "huge";
}

TEST(HostPaceTest, WithoutADelayEveryRequestMayStartAtOnce) {
  HostPace pace;
  const auto now = Clock::MonoTime{} + std::chrono::hours(1);
  EXPECT_EQ(pace.TryStart(milliseconds(0), now).kind, Kind::kGo);
  EXPECT_EQ(pace.TryStart(milliseconds(0), now).kind, Kind::kGo);
  EXPECT_FALSE(pace.shared());
}

TEST(HostPaceTest, ADelayMakesEveryStartAReservedSlot) {
  HostPace pace;
  const auto now = Clock::MonoTime{} + std::chrono::hours(1);
  EXPECT_EQ(pace.TryStart(milliseconds(250), now).kind, Kind::kReserve);
  pace.Reserving();
  EXPECT_EQ(pace.TryStart(milliseconds(250), now).kind, Kind::kReserving);
  pace.Reserved(milliseconds(100), milliseconds(250), now);
  const auto wait = pace.TryStart(milliseconds(250), now);
  EXPECT_EQ(wait.kind, Kind::kWait);
  EXPECT_EQ(wait.until, now + milliseconds(100));
  EXPECT_EQ(pace.TryStart(milliseconds(250), now + milliseconds(100)).kind, Kind::kGo);
  EXPECT_EQ(pace.TryStart(milliseconds(250), now + milliseconds(100)).kind, Kind::kReserve)
      << "one slot, one start";
}

TEST(HostPaceTest, AStartThatCameLateDoesNotBringTheNextOneForward) {
  // The ledger spaces slots 300 ms apart; this process started its first one 120 ms late (a
  // busy loop). Its next slot is due 180 ms after that start, but the gap holds here.
  HostPace pace;
  const auto t = Clock::MonoTime{} + std::chrono::hours(1);
  ASSERT_EQ(pace.TryStart(milliseconds(300), t).kind, Kind::kReserve);
  pace.Reserved(milliseconds(0), milliseconds(300), t);
  const auto late = t + milliseconds(120);
  ASSERT_EQ(pace.TryStart(milliseconds(300), late).kind, Kind::kGo);
  ASSERT_EQ(pace.TryStart(milliseconds(300), late).kind, Kind::kReserve);
  pace.Reserved(milliseconds(180), milliseconds(300), late);  // the slot at t + 300
  const auto next = pace.TryStart(milliseconds(300), t + milliseconds(300));
  EXPECT_EQ(next.kind, Kind::kWait);
  EXPECT_EQ(next.until, late + milliseconds(300)) << "300 ms after the late start";
  EXPECT_EQ(pace.TryStart(milliseconds(300), late + milliseconds(300)).kind, Kind::kGo);
}

TEST(HostPaceTest, WithoutTheLedgerTheConfiguredGapIsKeptHere) {
  HostPace pace;
  const auto t = Clock::MonoTime{} + std::chrono::hours(1);
  ASSERT_EQ(pace.TryStart(milliseconds(500), t).kind, Kind::kReserve);
  pace.ReserveFailed(milliseconds(500), t);
  ASSERT_EQ(pace.TryStart(milliseconds(500), t).kind, Kind::kGo);
  ASSERT_EQ(pace.TryStart(milliseconds(500), t).kind, Kind::kReserve);
  pace.ReserveFailed(milliseconds(500), t);
  const auto next = pace.TryStart(milliseconds(500), t);
  EXPECT_EQ(next.kind, Kind::kWait);
  EXPECT_EQ(next.until, t + milliseconds(500));
}

TEST(HostPaceTest, A429HoldsTheHostForRetryAfterAndDoublesTheGap) {
  HostPace pace;
  const auto wall = Clock::WallTime{} + std::chrono::seconds(1'700'000'000);
  const auto t = Clock::MonoTime{} + std::chrono::hours(1);
  EXPECT_EQ(pace.SlowDown(milliseconds(60'000), std::string("7"), wall, t), milliseconds(7000));
  EXPECT_EQ(pace.delay(), milliseconds(1000));
  EXPECT_TRUE(pace.shared());
  const auto held = pace.TryStart(milliseconds(0), t + milliseconds(6999));
  EXPECT_EQ(held.kind, Kind::kWait);
  EXPECT_EQ(held.until, t + milliseconds(7000));
  EXPECT_EQ(pace.TryStart(milliseconds(0), t + milliseconds(7000)).kind, Kind::kReserve);
  // Without Retry-After: twice the gap, capped.
  EXPECT_EQ(pace.SlowDown(milliseconds(1500), std::nullopt, wall, t), milliseconds(1500));
  EXPECT_EQ(pace.delay(), milliseconds(1500));
}

TEST(HostPaceTest, AfterTheBackoffTheGapEasesBackTowardsTheBase) {
  HostPace pace;
  const auto wall = Clock::WallTime{};
  const auto t = Clock::MonoTime{} + std::chrono::hours(1);
  pace.SlowDown(milliseconds(60'000), std::nullopt, wall, t);  // 1 s gap, held 1 s
  pace.Ease(milliseconds(100), t + milliseconds(500));
  EXPECT_EQ(pace.delay(), milliseconds(1000)) << "not while backing off";
  pace.Ease(milliseconds(100), t + milliseconds(1000));
  EXPECT_EQ(pace.delay(), milliseconds(800));
  for (int i = 0; i < 20; ++i) pace.Ease(milliseconds(100), t + milliseconds(1000));
  EXPECT_EQ(pace.delay(), milliseconds(100));
}

// ---- failures -----------------------------------------------------------------------------

Work WorkWith(int attempts, parse::CrawlSettings settings) {
  auto job = std::make_shared<JobRuntime>();
  job->settings = std::move(settings);
  Work w;
  w.lease.id = 7;
  w.lease.job_id = 3;
  w.lease.attempts = attempts;
  w.lease.spec.url = "http://site.test/a";
  w.job = job;
  return w;
}

TEST(PageOutcomeTest, StatusesAreClassifiedAsTheSpecSays) {
  EXPECT_EQ(ClassifyStatus(429).error_class, "RateLimit");
  EXPECT_TRUE(ClassifyStatus(429).retryable);
  EXPECT_EQ(ClassifyStatus(401).error_class, "Auth");
  EXPECT_FALSE(ClassifyStatus(403).retryable);
  EXPECT_EQ(ClassifyStatus(404).error_class, "HttpStatus");
  EXPECT_FALSE(ClassifyStatus(404).retryable);
  EXPECT_TRUE(ClassifyStatus(408).retryable);
  EXPECT_TRUE(ClassifyStatus(503).retryable);
}

TEST(PageOutcomeTest, ARetryableFailureIsRetriedWithBackoffUntilItsRetriesAreSpent) {
  parse::CrawlSettings s;
  s.retry.max_retries = 2;
  s.retry.backoff_base = milliseconds(100);
  s.retry.backoff_max = milliseconds(1000);
  s.retry.jitter = false;
  const auto now = Clock::WallTime{};
  auto first = Failure(WorkWith(1, s), "Download", "timeout", true, 0, std::nullopt, now);
  EXPECT_EQ(first.state, RequestResult::State::kRetry);
  EXPECT_EQ(first.retry_delay, milliseconds(100));
  auto second = Failure(WorkWith(2, s), "Download", "timeout", true, 0, std::nullopt, now);
  EXPECT_EQ(second.retry_delay, milliseconds(200));
  auto third = Failure(WorkWith(3, s), "Download", "timeout", true, 0, std::nullopt, now);
  EXPECT_EQ(third.state, RequestResult::State::kFailed);
  auto fatal = Failure(WorkWith(1, s), "Auth", "HTTP 401", false, 401, std::nullopt, now);
  EXPECT_EQ(fatal.state, RequestResult::State::kFailed);
  EXPECT_EQ(fatal.request_id, 7);
  EXPECT_EQ(fatal.status_code, 401);
}

TEST(PageOutcomeTest, ARetryWaitsAtLeastItsRetryAfterUpToTheCap) {
  parse::CrawlSettings s;
  s.retry.backoff_base = milliseconds(10);
  s.retry.jitter = false;
  s.politeness.max_retry_after = milliseconds(30'000);
  const auto now = Clock::WallTime{};
  EXPECT_EQ(Failure(WorkWith(1, s), "RateLimit", "", true, 429, "20", now).retry_delay,
            milliseconds(20'000));
  EXPECT_EQ(Failure(WorkWith(1, s), "RateLimit", "", true, 429, "3600", now).retry_delay,
            milliseconds(30'000));
}

// ---- the commit batcher -------------------------------------------------------------------

RequestResult Result(int64_t id, bool leads = false) {
  RequestResult r;
  r.request_id = id;
  if (leads) {
    RequestSpec next;
    next.is_pagination = true;
    r.requests.push_back(next);
  }
  return r;
}

class CommitBatcherTest : public ::testing::Test {
 protected:
  std::vector<int64_t> Ids(const std::vector<RequestResult>& batch) {
    std::vector<int64_t> ids;
    for (const auto& r : batch) ids.push_back(r.request_id);
    return ids;
  }
  // Takes a batch whenever the batcher asks for a flush, and ends its commit at once.
  void Flush() {
    auto batch = batcher_.Take(false, [&](const RequestResult&) { return next_page_coming_; });
    if (!batch) return;
    batches_.push_back(Ids(*batch));
    batcher_.Ended();
  }

  ManualClock clock_;
  ManualLoop loop_{clock_};
  CommitBatcher batcher_{loop_, {3, milliseconds(20), milliseconds(3)}, [this] { Flush(); }};
  std::vector<std::vector<int64_t>> batches_;
  bool next_page_coming_ = false;
};

TEST_F(CommitBatcherTest, AFullBatchGoesAtOnce) {
  batcher_.Add(Result(1), false);
  batcher_.Add(Result(2), false);
  EXPECT_TRUE(batches_.empty());
  batcher_.Add(Result(3), false);
  EXPECT_EQ(batches_, (std::vector<std::vector<int64_t>>{{1, 2, 3}}));
}

TEST_F(CommitBatcherTest, WhatWaitsGoesAfterTheInterval) {
  batcher_.Add(Result(1), false);
  loop_.Advance(milliseconds(19));
  EXPECT_TRUE(batches_.empty());
  loop_.Advance(milliseconds(1));
  EXPECT_EQ(batches_, (std::vector<std::vector<int64_t>>{{1}}));
}

TEST_F(CommitBatcherTest, ALeadingResultGoesFirstAndAtOnce) {
  batcher_.Add(Result(1), false);
  batcher_.Add(Result(2, true), false);
  EXPECT_EQ(batches_, (std::vector<std::vector<int64_t>>{{2, 1}}));
}

TEST_F(CommitBatcherTest, NowSendsWhatWaits) {
  batcher_.Add(Result(1), true);
  EXPECT_EQ(batches_.size(), 1u);
}

TEST_F(CommitBatcherTest, OneCommitAtATimeAndEveryLeadingResultInTheNext) {
  auto first = (batcher_.Add(Result(1), false), batcher_.Take(false, [](auto&) { return false; }));
  ASSERT_TRUE(first);  // a commit is under way
  for (int64_t id : {2, 3, 4, 5}) batcher_.Add(Result(id, true), false);
  EXPECT_TRUE(batches_.empty()) << "waits for the commit under way";
  batcher_.Ended();
  batcher_.FlushOrWait(false);
  EXPECT_EQ(batches_, (std::vector<std::vector<int64_t>>{{5, 4, 3, 2}})) << "over the batch size";
}

TEST_F(CommitBatcherTest, ALeadingPageWaitsAFewMillisecondsForItsNextPage) {
  next_page_coming_ = true;
  batcher_.Add(Result(1, true), false);
  EXPECT_TRUE(batches_.empty());
  EXPECT_TRUE(batcher_.waiting_for_next_page());
  loop_.Advance(milliseconds(3));
  EXPECT_EQ(batches_, (std::vector<std::vector<int64_t>>{{1}})) << "but not longer";
}

}  // namespace
}  // namespace celeriac::extractor
