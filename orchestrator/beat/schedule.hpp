#pragma once
// Schedule: a crawl task's cron expression in its IANA time zone, and when it fires next.
//
// Expressions (the Vixie cron dialect, as crontab(5) describes it):
//   five fields  minute hour day-of-month month day-of-week
//                each a list of items: `*`, `n`, `a-b`, with an optional `/step` (`*/15`,
//                `1-30/5`, and `n/step` meaning n to the field's end); months JAN-DEC and
//                weekdays SUN-SAT by name (any case, also in ranges); weekday 0 and 7 are Sunday.
//                When both day fields are restricted (neither starts with `*`), a day matching
//                either fires, as in Vixie cron; otherwise a day must match both.
//   macros       @yearly (@annually) @monthly @weekly @daily (@midnight) @hourly.
// Refused, with a message naming the expression and the field: anything else, values out of
// range, reversed ranges, a step of 0, and a day that never exists (`0 0 30 2 *`).
// migrations/0003_create_beat_tables.sql refuses the same set in SQL (celeriac_cron_error).
//
// Time zones and DST. The fields are matched against the wall clock of the task's zone, and
// each matching wall-clock minute fires exactly once:
//   - a time that does not exist (skipped by a spring-forward jump) fires at the instant the
//     jump ends (02:30 in Europe/Berlin on the last Sunday of March fires at 03:00 CEST);
//     several skipped times collapse into that one firing;
//   - a time that exists twice (fall back) fires at its first occurrence only.
// So `0 * * * *` in a DST zone fires 23 times on the spring day and 24 times on the autumn day,
// 2 hours apart across the repeated hour; a task that needs strict absolute intervals uses UTC.
//
// Threading: immutable after construction; NextAfter is safe from any thread.

#include <bitset>
#include <optional>
#include <string>
#include <string_view>

#include "core/base/clock.hpp"
#include "core/base/result.hpp"

namespace date {
class time_zone;
}

namespace celeriac::orchestrator::beat {

// The five fields of a parsed expression, as sets of allowed values.
struct CronFields {
  std::bitset<60> minutes;
  std::bitset<24> hours;
  std::bitset<32> days_of_month;  // bit 0 unused
  std::bitset<13> months;         // bit 0 unused
  std::bitset<7> days_of_week;    // 0 = Sunday
  bool dom_star = false;          // the field starts with '*'
  bool dow_star = false;

  // InvalidArgument naming `text` and the field when it is not a valid expression or macro.
  static Result<CronFields> Parse(std::string_view text);
};

class Schedule {
 public:
  // InvalidArgument when the expression or the zone is invalid (the message names it).
  static Result<Schedule> Make(std::string_view expression, std::string_view zone);

  // The first firing instant strictly after `t`; nullopt if there is none within
  // kHorizonYears, or before 2262 (where Clock::WallTime ends). Every valid schedule fires within
  // the horizon: a date that must also fall on a selected weekday (`0 0 29 2 */7`: 29 February,
  // a Sunday; Vixie cron reads a weekday field starting with `*` as a restriction that must hold
  // too) comes round within 40 years, any other date within 12.
  std::optional<Clock::WallTime> NextAfter(Clock::WallTime t) const;
  static constexpr int kHorizonYears = 41;

  // The latest firing instant in (after, at_or_before], nullopt if none. For coalescing the
  // times missed while no beat ran into one run.
  std::optional<Clock::WallTime> LatestIn(Clock::WallTime after,
                                          Clock::WallTime at_or_before) const;

  const std::string& expression() const { return expression_; }
  const std::string& zone_name() const { return zone_name_; }

 private:
  Schedule(std::string expression, std::string zone_name, CronFields fields,
           const date::time_zone* zone)
      : expression_(std::move(expression)), zone_name_(std::move(zone_name)),
        fields_(fields), zone_(zone) {}

  std::string expression_;
  std::string zone_name_;
  CronFields fields_;
  const date::time_zone* zone_;
};

// The IANA zone of that name from the OS tz database, or InvalidArgument naming it.
Result<const date::time_zone*> FindZone(std::string_view name);

}  // namespace celeriac::orchestrator::beat
