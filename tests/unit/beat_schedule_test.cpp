// Cron parsing, next due times in IANA zones, and the DST rules of orchestrator/beat/schedule.hpp,
// stepped on a manual clock.

#include <gtest/gtest.h>

#include "core/base/ids.hpp"
#include "core/config/sections.hpp"
#include "orchestrator/beat/beat.hpp"
#include "orchestrator/beat/schedule.hpp"
#include "orchestrator/commands/settings.hpp"
#include "tests/support/manual_clock.hpp"

namespace celeriac::orchestrator::beat {
namespace {

using namespace std::chrono_literals;

Clock::WallTime T(const char* iso) {
  auto t = ParseIso8601(iso);
  EXPECT_TRUE(t.has_value()) << iso;
  return t.value_or(Clock::WallTime{});
}

std::string Next(const Schedule& s, const char* iso) {
  auto n = s.NextAfter(T(iso));
  return n ? FormatIso8601(*n) : "never";
}

Schedule Make(const char* expr, const char* zone = "UTC") {
  auto s = Schedule::Make(expr, zone);
  EXPECT_TRUE(s.ok()) << expr << " " << zone << ": " << (s.ok() ? "" : s.error().message());
  return std::move(s).value();
}

// Fires the way beat does on a clock stepped a minute at a time: due when now >= next, then
// next = NextAfter(now). Returns the due times fired in [from, to).
std::vector<std::string> Walk(const Schedule& s, const char* from, const char* to,
                              std::chrono::seconds step = 60s) {
  testing::ManualClock clock(T(from));
  std::vector<std::string> fired;
  auto next = s.NextAfter(clock.Now() - 1s);
  while (clock.Now() < T(to)) {
    if (next && clock.Now() >= *next) {
      fired.push_back(FormatIso8601(*next));
      next = s.NextAfter(clock.Now());
    }
    clock.Advance(step);
  }
  return fired;
}

TEST(BeatSchedule, ParsesListsRangesStepsAndNames) {
  auto f = CronFields::Parse("*/15 1-5,22 1,15 JAN-mar,Dec mon-FRI");
  ASSERT_TRUE(f.ok()) << f.error().message();
  EXPECT_EQ(f->minutes.count(), 4u);
  EXPECT_TRUE(f->minutes.test(45));
  EXPECT_EQ(f->hours.count(), 6u);
  EXPECT_TRUE(f->hours.test(22));
  EXPECT_EQ(f->days_of_month.count(), 2u);
  EXPECT_EQ(f->months.count(), 4u);
  EXPECT_TRUE(f->months.test(12));
  EXPECT_EQ(f->days_of_week.count(), 5u);
  EXPECT_FALSE(f->days_of_week.test(0));
  EXPECT_FALSE(f->dom_star);

  auto g = CronFields::Parse("  10/20 0 * * 7 ");  // n/step = n to the end; 7 = Sunday
  ASSERT_TRUE(g.ok()) << g.error().message();
  EXPECT_EQ(g->minutes.count(), 3u);  // 10, 30, 50
  EXPECT_TRUE(g->days_of_week.test(0));
  EXPECT_TRUE(g->dom_star);
}

TEST(BeatSchedule, MacrosExpand) {
  EXPECT_EQ(Next(Make("@hourly"), "2026-05-01T10:15:00Z"), "2026-05-01T11:00:00.000000+00:00");
  EXPECT_EQ(Next(Make("@daily"), "2026-05-01T10:15:00Z"), "2026-05-02T00:00:00.000000+00:00");
  EXPECT_EQ(Next(Make("@midnight"), "2026-05-01T10:15:00Z"), "2026-05-02T00:00:00.000000+00:00");
  // 2026-05-01 is a Friday: the next Sunday is the 3rd.
  EXPECT_EQ(Next(Make("@weekly"), "2026-05-01T10:15:00Z"), "2026-05-03T00:00:00.000000+00:00");
  EXPECT_EQ(Next(Make("@monthly"), "2026-05-01T10:15:00Z"), "2026-06-01T00:00:00.000000+00:00");
  EXPECT_EQ(Next(Make("@yearly"), "2026-05-01T10:15:00Z"), "2027-01-01T00:00:00.000000+00:00");
  EXPECT_EQ(Next(Make("@annually"), "2026-05-01T10:15:00Z"), "2027-01-01T00:00:00.000000+00:00");
}

TEST(BeatSchedule, NextIsStrictlyAfter) {
  const auto s = Make("*/15 * * * *");
  EXPECT_EQ(Next(s, "2026-05-01T10:15:00Z"), "2026-05-01T10:30:00.000000+00:00");
  EXPECT_EQ(Next(s, "2026-05-01T10:14:59.999Z"), "2026-05-01T10:15:00.000000+00:00");
  EXPECT_EQ(Next(s, "2026-12-31T23:59:00Z"), "2027-01-01T00:00:00.000000+00:00");
}

TEST(BeatSchedule, DayOfMonthOrDayOfWeekAsVixieCron) {
  // Both restricted: the 13th or any Friday. 2026-05-01 is a Friday, the next are 8th, 13th.
  const auto both = Make("0 12 13 * fri");
  EXPECT_EQ(Next(both, "2026-05-01T13:00:00Z"), "2026-05-08T12:00:00.000000+00:00");
  EXPECT_EQ(Next(both, "2026-05-08T13:00:00Z"), "2026-05-13T12:00:00.000000+00:00");
  // Day-of-month starts with '*': both must match (a Friday on an odd day).
  const auto star = Make("0 12 */2 * fri");
  EXPECT_EQ(Next(star, "2026-05-01T13:00:00Z"), "2026-05-15T12:00:00.000000+00:00");
  // Leap day only.
  EXPECT_EQ(Next(Make("0 0 29 2 *"), "2026-03-01T00:00:00Z"), "2028-02-29T00:00:00.000000+00:00");
}

TEST(BeatSchedule, ADateOnOneWeekdayIsFoundYearsAhead) {
  // Weekday "*/7" starts with '*', so the date must also be a Sunday: 1 January is one in 2023
  // and then 2034, 29 February in 2032 and then 2060 (tests/fuzz cron: these were "never").
  EXPECT_EQ(Next(Make("0 0 1 1 */7"), "2023-01-02T00:00:00Z"), "2034-01-01T00:00:00.000000+00:00");
  EXPECT_EQ(Next(Make("0 0 29 2 */7"), "2024-03-01T00:00:00Z"), "2032-02-29T00:00:00.000000+00:00");
  EXPECT_EQ(Next(Make("0 0 29 2 */7"), "2032-03-01T00:00:00Z"), "2060-02-29T00:00:00.000000+00:00");
  // Where WallTime ends, nothing comes next rather than a time that wraps around.
  EXPECT_EQ(Next(Make("0 0 29 2 */7"), "2240-03-01T00:00:00Z"), "2252-02-29T00:00:00.000000+00:00");
  EXPECT_EQ(Next(Make("0 0 29 2 */7"), "2252-03-01T00:00:00Z"), "never");  // 2280 is too late
}

TEST(BeatSchedule, InvalidExpressionsAreRefusedNamingThem) {
  const struct {
    const char* expr;
    const char* says;
  } cases[] = {
      {"61 * * * *", "minute field \"61\": 61 is out of range 0-59"},
      {"* 24 * * *", "hour field"},
      {"* * 0 * *", "day-of-month field"},
      {"* * * 13 *", "month field"},
      {"* * * * 8", "day-of-week field"},
      {"5-1 * * * *", "range 5-1 is reversed"},
      {"*/0 * * * *", "a step of 0"},
      {"*/61 * * * *", "step 61 is larger"},
      {"1,,2 * * * *", "an empty list item"},
      {"* * * *", "4 fields, expected 5"},
      {"* * * * * *", "6 fields, expected 5"},
      {"x * * * *", "\"x\" is not a number"},
      {"* * * foo *", "not a number or a month name"},
      {"* * * * someday", "not a number or a day-of-week name"},
      {"@reboot", "unknown macro"},
      {"0 0 30 2 *", "no selected month has any of the selected days"},
      {"0 0 31 4,6,9,11 *", "no selected month"},
  };
  for (const auto& c : cases) {
    auto s = Schedule::Make(c.expr, "UTC");
    ASSERT_FALSE(s.ok()) << c.expr;
    EXPECT_EQ(s.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_FALSE(s.error().retryable());
    EXPECT_NE(s.error().message().find(std::string("\"") + c.expr + "\""), std::string::npos)
        << s.error().message();
    EXPECT_NE(s.error().message().find(c.says), std::string::npos) << s.error().message();
  }
  // Both day fields restricted: 31 February never happens, but Mondays in February do.
  EXPECT_TRUE(Schedule::Make("0 0 31 2 mon", "UTC").ok());
}

TEST(BeatSchedule, InvalidZonesAreRefusedNamingThem) {
  for (const char* zone : {"Mars/Olympus", "", "CEST+2", "../../etc/passwd"}) {
    auto s = Schedule::Make("* * * * *", zone);
    ASSERT_FALSE(s.ok()) << zone;
    EXPECT_NE(s.error().message().find(std::string("\"") + zone + "\""), std::string::npos)
        << s.error().message();
  }
  EXPECT_TRUE(Schedule::Make("* * * * *", "America/Argentina/Buenos_Aires").ok());
}

TEST(BeatSchedule, ZonesShiftTheWallClock) {
  // 09:00 in Tokyo (UTC+9, no DST) is 00:00 UTC; in New York in May (EDT, UTC-4) 13:00 UTC.
  EXPECT_EQ(Next(Make("0 9 * * *", "Asia/Tokyo"), "2026-05-01T01:00:00Z"),
            "2026-05-02T00:00:00.000000+00:00");
  EXPECT_EQ(Next(Make("0 9 * * *", "America/New_York"), "2026-05-01T01:00:00Z"),
            "2026-05-01T13:00:00.000000+00:00");
  EXPECT_EQ(Next(Make("0 9 * * *", "America/New_York"), "2026-01-10T01:00:00Z"),
            "2026-01-10T14:00:00.000000+00:00");  // EST, UTC-5
}

// Europe/Berlin 2026: 29 March 02:00 CET -> 03:00 CEST (01:00 UTC); 25 October 03:00 CEST ->
// 02:00 CET (01:00 UTC).
TEST(BeatSchedule, NonexistentTimeFiresOnceWhenTheJumpEnds) {
  const auto s = Make("30 2 * * *", "Europe/Berlin");
  const auto fired = Walk(s, "2026-03-27T12:00:00Z", "2026-03-31T12:00:00Z");
  ASSERT_EQ(fired.size(), 4u);
  EXPECT_EQ(fired[0], "2026-03-28T01:30:00.000000+00:00");  // 02:30 CET
  EXPECT_EQ(fired[1], "2026-03-29T01:00:00.000000+00:00");  // 02:30 does not exist: 03:00 CEST
  EXPECT_EQ(fired[2], "2026-03-30T00:30:00.000000+00:00");  // 02:30 CEST
  EXPECT_EQ(fired[3], "2026-03-31T00:30:00.000000+00:00");
}

TEST(BeatSchedule, SeveralSkippedTimesCollapseIntoOneFiring) {
  // Every 15 minutes: 02:00, 02:15, 02:30, 02:45 are skipped; 03:00 CEST fires once for them.
  const auto fired = Walk(Make("*/15 * * * *", "Europe/Berlin"), "2026-03-29T00:30:00Z",
                          "2026-03-29T01:31:00Z");
  const std::vector<std::string> want = {
      "2026-03-29T00:30:00.000000+00:00", "2026-03-29T00:45:00.000000+00:00",
      "2026-03-29T01:00:00.000000+00:00",  // 03:00 CEST, for 02:00-02:45 and itself
      "2026-03-29T01:15:00.000000+00:00", "2026-03-29T01:30:00.000000+00:00"};
  EXPECT_EQ(fired, want);
}

TEST(BeatSchedule, RepeatedTimeFiresOnceAtItsFirstOccurrence) {
  const auto s = Make("30 2 * * *", "Europe/Berlin");
  const auto fired = Walk(s, "2026-10-24T12:00:00Z", "2026-10-26T12:00:00Z");
  ASSERT_EQ(fired.size(), 2u);
  EXPECT_EQ(fired[0], "2026-10-25T00:30:00.000000+00:00");  // 02:30 CEST; not again at 02:30 CET
  EXPECT_EQ(fired[1], "2026-10-26T01:30:00.000000+00:00");  // 02:30 CET

  // Hourly on the autumn day: 24 wall-clock hours, 02:00 once (CEST), so 24 firings in 25 h.
  const auto hourly = Walk(Make("0 * * * *", "Europe/Berlin"), "2026-10-24T22:00:00Z",
                           "2026-10-25T23:00:00Z");
  EXPECT_EQ(hourly.size(), 24u);
  for (size_t i = 1; i < hourly.size(); ++i) EXPECT_NE(hourly[i], hourly[i - 1]);
  // Asked from inside the repeated hour (02:10 CET), the next 02:30 is the next day's.
  EXPECT_EQ(Next(s, "2026-10-25T01:10:00Z"), "2026-10-26T01:30:00.000000+00:00");
  // ... and from before it (02:10 CEST), today's first 02:30.
  EXPECT_EQ(Next(s, "2026-10-25T00:10:00Z"), "2026-10-25T00:30:00.000000+00:00");
}

TEST(BeatSchedule, SpringDayHasOneHourlyFiringFewer) {
  const auto hourly = Walk(Make("0 * * * *", "America/New_York"), "2026-03-08T05:00:00Z",
                           "2026-03-09T04:00:00Z");  // the local day of 8 March (23 h)
  EXPECT_EQ(hourly.size(), 23u);
}

TEST(BeatSchedule, LatestInFoldsMissedTimes) {
  const auto s = Make("*/10 * * * *");
  EXPECT_EQ(FormatIso8601(*s.LatestIn(T("2026-05-01T10:00:00Z"), T("2026-05-01T10:35:00Z"))),
            "2026-05-01T10:30:00.000000+00:00");
  EXPECT_FALSE(s.LatestIn(T("2026-05-01T10:00:00Z"), T("2026-05-01T10:09:59Z")).has_value());
  // A month down: found from the last two days, not by walking 4,000 firings.
  EXPECT_EQ(FormatIso8601(*s.LatestIn(T("2026-04-01T00:00:00Z"), T("2026-05-01T10:35:00Z"))),
            "2026-05-01T10:30:00.000000+00:00");
  EXPECT_EQ(FormatIso8601(*Make("0 0 1 1 *").LatestIn(T("2020-06-01T00:00:00Z"),
                                                      T("2026-05-01T00:00:00Z"))),
            "2026-01-01T00:00:00.000000+00:00");
}

TEST(BeatSchedule, FireTaskIdsAreNameBasedUuids) {
  // RFC 4122 version 5, checked against Python's uuid.uuid5.
  EXPECT_EQ(NameUuid5("6ba7b810-9dad-11d1-80b4-00c04fd430c8", "python.org"),
            "886313e1-3b8a-5372-9b90-0c9aee199e5d");
  EXPECT_EQ(NameUuid5("6ba7b810-9dad-11d1-80b4-00c04fd430c8", std::string(100, 'a')),
            "56596f37-716c-57a9-a735-2561f8608390");
  const auto due = T("2026-05-01T10:30:00Z");
  EXPECT_EQ(FireTaskId(7, due), FireTaskId(7, due));
  EXPECT_NE(FireTaskId(7, due), FireTaskId(8, due));
  EXPECT_NE(FireTaskId(7, due), FireTaskId(7, due + 60s));
  EXPECT_TRUE(IsUuid(FireTaskId(7, due)));
}

TEST(BeatSchedule, ScaledClockRunsFasterFromItsOrigin) {
  const auto origin = std::chrono::system_clock::now();
  ScaledClock clock(origin, 60.0);
  EXPECT_GE(clock.Now(), origin);
  EXPECT_EQ(clock.RealDelay(60s), std::chrono::milliseconds(1000));
  EXPECT_EQ(clock.RealDelay(std::chrono::milliseconds(1)), std::chrono::milliseconds(1));
}

}  // namespace
}  // namespace celeriac::orchestrator::beat

namespace celeriac {
namespace {

TEST(BeatSettings, DefaultsAndOverrides) {
  const auto parse = config::Parse<orchestrator::Settings>;
  auto d = parse("", "test", [](const std::string&) { return std::nullopt; });
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->beat.catch_up_grace_s, 0);
  EXPECT_EQ(d->beat.batch_size, 1000);
  EXPECT_EQ(d->beat.max_sleep_s, 60);
  auto s = parse("[beat]\ncatch_up_grace_s = 600\n", "celeriac.toml",
                 [](const std::string& name) -> std::optional<std::string> {
                   if (name == "CELERIAC_BEAT_BATCH_SIZE") return "50";
                   return std::nullopt;
                 });
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_EQ(s->beat.catch_up_grace_s, 600);
  EXPECT_EQ(s->beat.batch_size, 50);
  auto bad = parse("[beat]\nbatch_size = 0\n", "celeriac.toml",
                   [](const std::string&) { return std::nullopt; });
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("beat.batch_size"), std::string::npos)
      << bad.error().message();
}

}  // namespace
}  // namespace celeriac
