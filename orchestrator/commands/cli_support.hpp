#pragma once
// What the ops subcommands (run-now, runs, dlq) share: opening the database and the broker from
// the settings, aligned tables for people, one JSON document on stdout for scripts.
//
// Exit codes, the same for every ops command: 0 done, 1 the operation failed (database or
// broker unreachable, no such row, a replay refused), 2 bad input (an option's value, a setting),
// 3 timed out waiting.

#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "core/base/clock.hpp"
#include "core/base/result.hpp"
#include <optional>
#include <variant>

#include "core/broker/broker.hpp"
#include "core/pg/pool.hpp"
#include "orchestrator/commands/settings.hpp"

namespace celeriac::orchestrator::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitTimeout = 3;

// A small pool on database.url, checked with a ping; the error names the URL, password masked.
Result<std::unique_ptr<pg::Pool>> OpenDatabase(const Settings& settings);

// The broker of broker.url, connected; the error names the URL, password masked.
Result<std::unique_ptr<broker::Broker>> OpenBroker(const Settings& settings);

// Settings and a database for an ops command.
struct Opened {
  Settings settings;
  std::unique_ptr<pg::Pool> pool;
};

// Loads settings (--config / environment) and opens the database; on failure prints
// "<me>: <why>" to stderr and returns the exit code (kExitUsage for bad settings, kExitFailed
// for an unreachable database).
std::variant<Opened, int> OpenSettingsAndDatabase(const std::optional<std::string>& config_path,
                                                  const std::string& me);

// Columns padded to their widest cell, two spaces apart; the last column is not padded.
class Table {
 public:
  explicit Table(std::vector<std::string> header) : header_(std::move(header)) {}
  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  bool empty() const { return rows_.empty(); }
  void Print(std::ostream& out) const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

// "2024-05-01 12:00:05Z": seconds are enough at a terminal.
std::string ShortTime(Clock::WallTime t);
std::string ShortTime(const std::optional<Clock::WallTime>& t, const std::string& none = "-");
// 1536 -> "1.5 KiB".
std::string HumanBytes(int64_t bytes);
// At most `max` characters (cut at a UTF-8 boundary, ending "..." when cut), newlines shown
// as spaces.
std::string Truncate(const std::string& text, size_t max);

// The value of a time option (ISO-8601, as celeriac::ParseIso8601 reads it), or a message that
// names the option.
Result<Clock::WallTime> ParseTimeOption(const std::string& option, const std::string& value);

// A CLI11 check for counts such as --limit: a whole number, 0 or more.
CLI::Validator NonNegative();

// Writes one JSON document to stdout (indented, invalid UTF-8 replaced).
void PrintJson(const nlohmann::ordered_json& doc);

}  // namespace celeriac::orchestrator::cli
