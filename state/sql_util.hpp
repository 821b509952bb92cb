#pragma once
// Helpers for state/'s own .cpp files (never included from outside state/): values across the
// SQL boundary, and JSON for rows.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/clock.hpp"
#include "core/pg/sql.hpp"

namespace celeriac::state::sql {

using Json = nlohmann::ordered_json;

// Timestamps cross the SQL boundary as microseconds since the epoch: exact, and no time zone
// or text format to agree on.
inline std::string Micros(const char* column) {
  return std::string("(extract(epoch from ") + column + ") * 1000000)::bigint";
}

inline Clock::WallTime FromMicros(int64_t micros) {
  return Clock::WallTime(std::chrono::duration_cast<Clock::WallTime::duration>(
      std::chrono::microseconds(micros)));
}

inline std::optional<Clock::WallTime> OptTime(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return FromMicros(f.as<int64_t>());
}

inline std::optional<std::string> OptText(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return f.as<std::string>();
}

inline std::optional<int64_t> OptInt64(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return f.as<int64_t>();
}

inline std::optional<std::string> OptIso(const std::optional<Clock::WallTime>& t) {
  if (!t) return std::nullopt;
  return FormatIso8601(*t);
}

// Optional integers go to libpqxx as text: GCC's -Wmaybe-uninitialized misfires on
// std::optional<int64_t> parameters.
inline std::optional<std::string> OptInt(const std::optional<int64_t>& v) {
  if (!v) return std::nullopt;
  return std::to_string(*v);
}

// A limit of 0 or less is no limit (LIMIT NULL).
inline std::optional<std::string> LimitParam(int64_t limit) {
  return limit > 0 ? OptInt(limit) : std::nullopt;
}

// Ids joined with commas: 1,2,3.
inline std::string JoinIds(const std::vector<int64_t>& ids) {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) out += ',';
    out += std::to_string(ids[i]);
  }
  return out;
}

// A Postgres array literal of ids: {1,2,3}.
inline std::string IdArray(const std::vector<int64_t>& ids) { return "{" + JoinIds(ids) + "}"; }

// A json/jsonb column's text; a value that does not parse (never expected) becomes `fallback`
// rather than failing the whole listing.
inline Json ParseColumn(const pqxx::field& f, Json fallback) {
  if (f.is_null()) return fallback;
  auto j = Json::parse(f.as<std::string>(), nullptr, /*allow_exceptions=*/false);
  return j.is_discarded() ? fallback : j;
}

template <typename T>
Json OrNull(const std::optional<T>& v) {
  return v ? Json(*v) : Json(nullptr);
}

inline Json TimeOrNull(const std::optional<Clock::WallTime>& t) {
  return t ? Json(FormatIso8601(*t)) : Json(nullptr);
}

}  // namespace celeriac::state::sql
