// cron: beat's cron parser and next-fire computation (orchestrator/beat/schedule.hpp), as beat
// runs them on crawl_tasks.schedule and crawl_tasks.timezone, which anyone with SQL access writes.
//
// Input: the expression, a newline, the IANA zone name (the rest of the input).
//
// Invariants: nothing throws; the zone does not change whether the expression parses; a valid
// schedule fires again (within Schedule::kHorizonYears, unless that reaches 2262) after fixed
// instants around DST changes and at ordinary times, and after each of its firings; its
// firings strictly increase; each falls on a wall-clock minute the fields select, or at the end
// of a DST jump that skipped one; nothing fires between two firings; LatestIn agrees with
// NextAfter.

#include <chrono>
#include <string>

#include <date/tz.h>

#include "orchestrator/beat/schedule.hpp"
#include "tests/fuzz/fuzz_support.hpp"

namespace {

using celeriac::Clock;
using celeriac::fuzz::AsText;
namespace beat = celeriac::orchestrator::beat;
using namespace std::chrono;

std::string Show(Clock::WallTime t) { return date::format("%FT%TZ", floor<seconds>(t)); }

// Whether the wall-clock minute `local` is one the fields select (day rule as in Vixie cron).
bool Selected(const beat::CronFields& f, date::local_seconds local) {
  const auto day = floor<date::days>(local);
  const date::year_month_day ymd{day};
  const date::hh_mm_ss hms{local - day};
  if (hms.seconds().count() != 0) return false;
  if (!f.minutes.test(static_cast<size_t>(hms.minutes().count())) ||
      !f.hours.test(static_cast<size_t>(hms.hours().count())) ||
      !f.months.test(static_cast<unsigned>(ymd.month())))
    return false;
  const bool dom = f.days_of_month.test(static_cast<unsigned>(ymd.day()));
  const bool dow = f.days_of_week.test(date::weekday(day).c_encoding());
  return f.dom_star || f.dow_star ? dom && dow : dom || dow;
}

void CheckFiring(const beat::CronFields& fields, const date::time_zone* zone,
                 Clock::WallTime fire, const std::string& what) {
  const auto instant = floor<seconds>(fire);
  FUZZ_CHECK(instant == fire, what + " fires between seconds");
  if (Selected(fields, zone->to_local(instant))) return;
  // Not a selected wall-clock minute: only the end of a jump that skipped one may be.
  const auto info = zone->get_info(instant);
  FUZZ_CHECK(info.begin == instant, what + " fires at " + Show(fire) +
                                        ", neither a selected minute nor the end of a DST jump");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto parts = celeriac::fuzz::Split(AsText(data, size), '\n', 2);
  const std::string_view expression = parts[0];
  const std::string_view zone_name = parts.size() > 1 ? parts[1] : std::string_view("UTC");

  const auto fields = beat::CronFields::Parse(expression);
  const auto schedule = beat::Schedule::Make(expression, zone_name);
  const auto zone = beat::FindZone(zone_name);
  FUZZ_CHECK(schedule.ok() == (fields.ok() && zone.ok()),
             "Schedule::Make disagrees with CronFields::Parse and FindZone");
  if (!schedule.ok()) return 0;

  // Around the 2024 DST changes of Europe and the US, the Lord Howe half hour, and plain days.
  static const Clock::WallTime kStarts[] = {
      Clock::WallTime(seconds(1711846800)),  // 2024-03-31T01:00:00Z
      Clock::WallTime(seconds(1729990800)),  // 2024-10-27T01:00:00Z
      Clock::WallTime(seconds(1710054000)),  // 2024-03-10T07:00:00Z
      Clock::WallTime(seconds(1712419200)),  // 2024-04-06T16:00:00Z
      Clock::WallTime(seconds(1700000000)),  // 2023-11-14T22:13:20Z
      Clock::WallTime(seconds(1700000000) + milliseconds(1)),
  };
  const std::string name = std::string(expression) + "\" in \"" + std::string(zone_name);
  for (const Clock::WallTime start : kStarts) {
    Clock::WallTime t = start;
    for (int i = 0; i < 6; ++i) {
      const auto next = schedule->NextAfter(t);
      // Only WallTime's end in 2262 may come before the horizon does.
      if (!next && t >= date::sys_days(date::year(2262 - beat::Schedule::kHorizonYears) /
                                       date::January / 1))
        break;
      FUZZ_CHECK(next.has_value(), "\"" + name + "\" never fires after " + Show(t));
      FUZZ_CHECK(*next > t, "\"" + name + "\" fires at " + Show(*next) + ", not after " + Show(t));
      CheckFiring(*fields, *zone, *next, "\"" + name + "\"");
      // Nothing in (t, next): the latest firing up to just before it is none.
      FUZZ_CHECK(!schedule->LatestIn(t, *next - seconds(1)).has_value() || *next - seconds(1) <= t,
                 "\"" + name + "\" skipped a firing before " + Show(*next));
      FUZZ_CHECK(schedule->LatestIn(t, *next) == next, "LatestIn disagrees with NextAfter");
      t = *next;
    }
    // Coalescing a long outage finds the last of them.
    if (t != start) FUZZ_CHECK(schedule->LatestIn(start, t) == t, "LatestIn missed " + Show(t));
  }
  return 0;
}
