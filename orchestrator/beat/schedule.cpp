#include "orchestrator/beat/schedule.hpp"

#include <array>
#include <cctype>
#include <vector>

#include <date/date.h>
#include <date/tz.h>
#include <fmt/format.h>

#include "core/base/text.hpp"

namespace celeriac::orchestrator::beat {
namespace {

struct FieldSpec {
  const char* name;
  int min;
  int max;
  const char* const* names;  // index 0 = value `names_base`, or nullptr
  int names_base;
};

constexpr const char* kMonthNames[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                       "jul", "aug", "sep", "oct", "nov", "dec", nullptr};
constexpr const char* kDayNames[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat", nullptr};

constexpr FieldSpec kFields[] = {
    {"minute", 0, 59, nullptr, 0},
    {"hour", 0, 23, nullptr, 0},
    {"day-of-month", 1, 31, nullptr, 0},
    {"month", 1, 12, kMonthNames, 1},
    {"day-of-week", 0, 7, kDayNames, 0},
};

// Days a month can have (February 29 exists).
constexpr int kMaxDays[13] = {0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

// A number or (for months and weekdays) a name; nullopt with `why` set otherwise.
std::optional<int> Value(const FieldSpec& f, std::string_view text, std::string& why) {
  if (text.empty()) {
    why = "a value is missing";
    return std::nullopt;
  }
  if (std::isdigit(static_cast<unsigned char>(text[0]))) {
    if (text.size() > 4) {
      why = fmt::format("{} is out of range {}-{}", text, f.min, f.max);
      return std::nullopt;
    }
    int v = 0;
    for (char c : text) {
      if (!std::isdigit(static_cast<unsigned char>(c))) {
        why = fmt::format("\"{}\" is not a number", text);
        return std::nullopt;
      }
      v = v * 10 + (c - '0');
    }
    if (v < f.min || v > f.max) {
      why = fmt::format("{} is out of range {}-{}", v, f.min, f.max);
      return std::nullopt;
    }
    return v;
  }
  if (f.names != nullptr) {
    const std::string lower = AsciiLower(text);
    for (int i = 0; f.names[i] != nullptr; ++i)
      if (lower == f.names[i]) return f.names_base + i;
  }
  why = f.names != nullptr ? fmt::format("\"{}\" is not a number or a {} name", text, f.name)
                           : fmt::format("\"{}\" is not a number", text);
  return std::nullopt;
}

// Parses one field into `bits` (indexed by value); returns an error text or "".
std::string ParseField(const FieldSpec& f, std::string_view field, std::vector<bool>& bits) {
  bits.assign(static_cast<size_t>(f.max + 1), false);
  size_t pos = 0;
  while (true) {
    const size_t comma = field.find(',', pos);
    const std::string_view item =
        field.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
    if (item.empty()) return "an empty list item";
    std::string_view range = item;
    int step = 1;
    bool stepped = false;
    if (const size_t slash = item.find('/'); slash != std::string_view::npos) {
      range = item.substr(0, slash);
      const std::string_view s = item.substr(slash + 1);
      if (s.empty() || s.size() > 4 ||
          s.find_first_not_of("0123456789") != std::string_view::npos)
        return fmt::format("step \"{}\" is not a number", s);
      step = std::stoi(std::string(s));
      if (step < 1) return "a step of 0";
      stepped = true;
    }
    int lo = f.min, hi = f.max;
    std::string why;
    if (range == "*") {
      // the whole range
    } else if (const size_t dash = range.find('-'); dash != std::string_view::npos) {
      const auto a = Value(f, range.substr(0, dash), why);
      if (!a) return why;
      const auto b = Value(f, range.substr(dash + 1), why);
      if (!b) return why;
      if (*a > *b) return fmt::format("range {} is reversed", range);
      lo = *a;
      hi = *b;
    } else {
      const auto a = Value(f, range, why);
      if (!a) return why;
      lo = *a;
      hi = stepped ? f.max : *a;  // "n/step" = n to the end, by step
    }
    if (stepped && step > f.max - f.min + 1)
      return fmt::format("step {} is larger than the field's range {}-{}", step, f.min, f.max);
    for (int v = lo; v <= hi; v += step) bits[static_cast<size_t>(v)] = true;
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  return "";
}

std::string_view Macro(std::string_view text) {
  static constexpr std::pair<std::string_view, std::string_view> kMacros[] = {
      {"@yearly", "0 0 1 1 *"},  {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
      {"@weekly", "0 0 * * 0"},  {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
      {"@hourly", "0 * * * *"},
  };
  for (const auto& [name, expansion] : kMacros)
    if (text == name) return expansion;
  return {};
}

}  // namespace

Result<CronFields> CronFields::Parse(std::string_view text) {
  auto bad = [&](std::string why) {
    return Error(ErrorCode::kInvalidArgument,
                 fmt::format("invalid cron expression \"{}\": {}", text, why), false);
  };
  std::string_view expr = Trim(text);
  if (!expr.empty() && expr[0] == '@') {
    const auto expansion = Macro(AsciiLower(expr));
    if (expansion.empty())
      return bad("unknown macro (use @yearly, @annually, @monthly, @weekly, @daily, @midnight "
                 "or @hourly)");
    expr = expansion;
  }
  std::vector<std::string_view> parts;
  size_t i = 0;
  while (i < expr.size()) {
    while (i < expr.size() && std::isspace(static_cast<unsigned char>(expr[i]))) ++i;
    const size_t start = i;
    while (i < expr.size() && !std::isspace(static_cast<unsigned char>(expr[i]))) ++i;
    if (i > start) parts.push_back(expr.substr(start, i - start));
  }
  if (parts.size() != 5)
    return bad(fmt::format("{} fields, expected 5 (minute hour day-of-month month day-of-week) "
                           "or a macro such as @daily",
                           parts.size()));
  CronFields out;
  std::vector<bool> bits;
  for (size_t f = 0; f < 5; ++f) {
    if (auto why = ParseField(kFields[f], parts[f], bits); !why.empty())
      return bad(fmt::format("{} field \"{}\": {}", kFields[f].name, parts[f], why));
    for (size_t v = 0; v < bits.size(); ++v) {
      if (!bits[v]) continue;
      switch (f) {
        case 0: out.minutes.set(v); break;
        case 1: out.hours.set(v); break;
        case 2: out.days_of_month.set(v); break;
        case 3: out.months.set(v); break;
        case 4: out.days_of_week.set(v % 7); break;
      }
    }
  }
  out.dom_star = parts[2][0] == '*';
  out.dow_star = parts[4][0] == '*';
  // When a day must match the day-of-month field (and the weekday is free or must match too),
  // some selected month must have some selected day.
  if (out.dom_star || out.dow_star) {
    bool exists = false;
    for (int m = 1; m <= 12 && !exists; ++m)
      for (int d = 1; d <= kMaxDays[m] && !exists; ++d)
        exists = out.months.test(static_cast<size_t>(m)) &&
                 out.days_of_month.test(static_cast<size_t>(d));
    if (!exists) return bad("no selected month has any of the selected days of the month");
  }
  return out;
}

Result<const date::time_zone*> FindZone(std::string_view name) {
  auto bad = [&] {
    return Error(ErrorCode::kInvalidArgument,
                 fmt::format("unknown time zone \"{}\" (expected an IANA name such as "
                             "Europe/Berlin or UTC)",
                             name),
                 false);
  };
  if (name.empty()) return bad();
  try {
    // The time zone database is built on first use, and date's own handover of it to other
    // threads (an atomic in libdate-tz) is not one a thread sanitizer sees: build it once here,
    // behind a function-local static, so that every thread that looks a zone up comes after.
    static const bool tzdb_ready = (date::get_tzdb(), true);
    (void)tzdb_ready;
    return date::locate_zone(name);
  } catch (const std::exception&) {
    return bad();
  }
}

Result<Schedule> Schedule::Make(std::string_view expression, std::string_view zone) {
  auto fields = CronFields::Parse(expression);
  if (!fields) return fields.error();
  auto tz = FindZone(zone);
  if (!tz) return tz.error();
  return Schedule(std::string(expression), std::string(zone), *fields, *tz);
}

std::optional<Clock::WallTime> Schedule::NextAfter(Clock::WallTime t) const {
  using namespace std::chrono;
  const auto t_sec = floor<seconds>(t);
  const auto local = zone_->to_local(t_sec);
  const auto start = floor<minutes>(local);
  auto day = floor<date::days>(start);
  const int start_minute = static_cast<int>((start - day).count());
  // The horizon covers the longest wait (29 February on one weekday: 40 years); the search
  // stops before WallTime's nanoseconds run out in 2262.
  const auto last_day = date::local_days(date::year(2261) / date::December / 31);
  for (int i = 0; i < 366 * kHorizonYears + 2 && day <= last_day; ++i, day += date::days(1)) {
    const date::year_month_day ymd{day};
    if (!fields_.months.test(static_cast<unsigned>(ymd.month()))) continue;
    const bool dom = fields_.days_of_month.test(static_cast<unsigned>(ymd.day()));
    const bool dow = fields_.days_of_week.test(date::weekday(day).c_encoding());
    if (fields_.dom_star || fields_.dow_star ? !(dom && dow) : !(dom || dow)) continue;
    for (int h = 0; h < 24; ++h) {
      if (!fields_.hours.test(static_cast<size_t>(h))) continue;
      if (i == 0 && h * 60 + 59 < start_minute) continue;
      for (int m = 0; m < 60; ++m) {
        if (!fields_.minutes.test(static_cast<size_t>(m))) continue;
        if (i == 0 && h * 60 + m < start_minute) continue;
        const date::local_seconds wall = day + hours(h) + minutes(m);
        const auto info = zone_->get_info(wall);
        date::sys_seconds instant;
        switch (info.result) {
          case date::local_info::unique:
          case date::local_info::ambiguous:  // `first` is the earlier occurrence
            instant = date::sys_seconds(wall.time_since_epoch() - info.first.offset);
            break;
          case date::local_info::nonexistent:  // fires when the jump ends
            instant = info.first.end;
            break;
        }
        // Wall-clock order and instant order agree (ambiguous times take their first instant,
        // skipped ones the end of the jump), so the first match after `t` is the earliest.
        if (instant > t) return time_point_cast<Clock::WallTime::duration>(instant);
      }
    }
  }
  return std::nullopt;
}

std::optional<Clock::WallTime> Schedule::LatestIn(Clock::WallTime after,
                                                  Clock::WallTime at_or_before) const {
  using namespace std::chrono;
  // A long outage: look in the last two days first, so an every-minute schedule down for a
  // month does not walk 43,200 firings.
  auto cursor = after;
  if (at_or_before - after > hours(48)) {
    const auto window = at_or_before - hours(48);
    if (const auto probe = NextAfter(window); probe && *probe <= at_or_before) cursor = window;
  }
  std::optional<Clock::WallTime> latest;
  while (true) {
    const auto next = NextAfter(cursor);
    if (!next || *next > at_or_before) return latest;
    latest = next;
    cursor = *next;
  }
}

}  // namespace celeriac::orchestrator::beat
