#include <set>

#include <gtest/gtest.h>

#include "core/base/backoff.hpp"
#include "core/base/clock.hpp"
#include "core/base/ids.hpp"
#include "core/base/result.hpp"
#include "tests/support/manual_clock.hpp"

namespace celeriac {
namespace {

using std::chrono::milliseconds;

Result<int> Half(int x) {
  if (x % 2 != 0) return Error(ErrorCode::kInvalidArgument, "odd");
  return x / 2;
}

TEST(Result, CarriesValueOrError) {
  auto ok = Half(8);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, 4);
  auto bad = Half(3);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(bad.error().message(), "odd");
}

TEST(Error, RetryableBitFollowsCodeUnlessGiven) {
  EXPECT_TRUE(Error(ErrorCode::kUnavailable, "x").retryable());
  EXPECT_TRUE(Error(ErrorCode::kTimeout, "x").retryable());
  EXPECT_TRUE(Error(ErrorCode::kConflict, "x").retryable());
  EXPECT_FALSE(Error(ErrorCode::kInvalidArgument, "x").retryable());
  EXPECT_FALSE(Error(ErrorCode::kNotFound, "x").retryable());
  EXPECT_FALSE(Error(ErrorCode::kUnavailable, "in doubt", false).retryable());
  EXPECT_EQ(Error(ErrorCode::kTimeout, "slow").ToString(), "Timeout: slow (retryable)");
}

TEST(Status, DefaultIsOk) {
  Status st;
  EXPECT_TRUE(st.ok());
  Status bad = Error(ErrorCode::kInternal, "boom");
  EXPECT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message(), "boom");
}

TEST(Backoff, ExponentialWithoutJitterAndCapped) {
  Backoff b({milliseconds(100), milliseconds(1000), 2.0, false});
  EXPECT_EQ(b.Delay(0, 0.5), milliseconds(100));
  EXPECT_EQ(b.Delay(1, 0.5), milliseconds(200));
  EXPECT_EQ(b.Delay(3, 0.5), milliseconds(800));
  EXPECT_EQ(b.Delay(4, 0.5), milliseconds(1000));
  EXPECT_EQ(b.Delay(10'000, 0.5), milliseconds(1000)) << "a huge attempt must not overflow";
}

TEST(Backoff, CeleryCurveMatchesRetryBackoff) {
  // Celery: countdown = min(retry_backoff_max, factor * 2**retries) seconds.
  Backoff b({milliseconds(1000), milliseconds(600'000), 2.0, false});
  EXPECT_EQ(b.Delay(0, 0), milliseconds(1000));
  EXPECT_EQ(b.Delay(5, 0), milliseconds(32'000));
  EXPECT_EQ(b.Delay(20, 0), milliseconds(600'000));
}

TEST(Backoff, FullJitterStaysWithinZeroAndDelay) {
  Backoff b({milliseconds(100), milliseconds(10'000), 2.0, true});
  EXPECT_EQ(b.Delay(2, 0.0), milliseconds(0));
  EXPECT_EQ(b.Delay(2, 0.999999), milliseconds(400));
  std::set<long long> seen;
  for (int i = 0; i < 200; ++i) {
    const auto d = b.Delay(2);
    ASSERT_GE(d.count(), 0);
    ASSERT_LE(d.count(), 400);
    seen.insert(d.count());
  }
  EXPECT_GT(seen.size(), 20u) << "jitter should spread delays";
}

TEST(Ids, Uuid4IsCanonicalAndUnique) {
  std::set<std::string> ids;
  for (int i = 0; i < 1000; ++i) {
    const auto id = NewUuid4();
    ASSERT_TRUE(IsUuid(id)) << id;
    ASSERT_EQ(id[14], '4') << id;
    ASSERT_TRUE(std::string("89ab").find(id[19]) != std::string::npos) << id;
    ids.insert(id);
  }
  EXPECT_EQ(ids.size(), 1000u);
  EXPECT_FALSE(IsUuid("not-a-uuid"));
  EXPECT_FALSE(IsUuid("2f9f7d0e-6a8e-4c55-9a8e-0c1d2f3a4b5cX"));
  EXPECT_TRUE(IsUuid("2F9F7D0E-6A8E-4C55-9A8E-0C1D2F3A4B5C"));
}

TEST(Clock, FormatsIso8601LikeCelery) {
  using namespace std::chrono;
  const auto t = system_clock::time_point(seconds(1795361516) + microseconds(871728));
  EXPECT_EQ(FormatIso8601(t), "2026-11-22T15:31:56.871728+00:00");
  EXPECT_EQ(FormatIso8601(system_clock::time_point{}), "1970-01-01T00:00:00.000000+00:00");
}

TEST(Clock, ParseIso8601RefusesTimesTheClockCannotHold) {
  // An eta or expires from a Python client may name any year up to 9999; WallTime's nanoseconds
  // end in 2262. Refused, the message dead-letters as InvalidTaskError instead of wrapping around.
  EXPECT_FALSE(ParseIso8601("9999-12-31T23:59:59.999999+00:00"));
  EXPECT_FALSE(ParseIso8601("2262-04-12T00:00:00Z"));
  EXPECT_FALSE(ParseIso8601("1677-09-21"));
  EXPECT_FALSE(ParseIso8601("0001-01-01T00:00:00+14:00"));
  const auto late = ParseIso8601("2261-12-31T23:59:59.5-23:59");
  ASSERT_TRUE(late);
  EXPECT_EQ(FormatIso8601(*late), "2262-01-01T23:58:59.500000+00:00");
  const auto early = ParseIso8601("1678-01-01");
  ASSERT_TRUE(early);
  EXPECT_EQ(FormatIso8601(*early), "1678-01-01T00:00:00.000000+00:00");
}

TEST(Clock, ParseIso8601ReadsMidnightAs24OnlyWhole) {
  const auto midnight = ParseIso8601("2024-01-01T24:00:00Z");
  ASSERT_TRUE(midnight);
  EXPECT_EQ(FormatIso8601(*midnight), "2024-01-02T00:00:00.000000+00:00");
  EXPECT_FALSE(ParseIso8601("2024-01-01T24:30:00Z"));
  EXPECT_FALSE(ParseIso8601("2024-01-01T24:00:00.5Z"));
}

TEST(ManualClock, MovesOnlyWhenTold) {
  testing::ManualClock clock(std::chrono::system_clock::time_point(std::chrono::seconds(100)));
  const auto wall = clock.Now();
  const auto mono = clock.Monotonic();
  EXPECT_EQ(clock.Now(), wall);
  clock.Advance(std::chrono::seconds(5));
  EXPECT_EQ(clock.Now() - wall, std::chrono::seconds(5));
  EXPECT_EQ(clock.Monotonic() - mono, std::chrono::seconds(5));
}

}  // namespace
}  // namespace celeriac
