#include "orchestrator/commands/cli_support.hpp"

#include <iostream>

#include "core/app/startup.hpp"

#include <algorithm>
#include <iostream>

#include <fmt/format.h>

#include "core/base/secrets.hpp"
#include "core/broker/broker_factory.hpp"

namespace celeriac::orchestrator::cli {
namespace {

// Display width of UTF-8 text: code points, which is right for the text ops commands print.
size_t Width(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s)
    if ((c & 0xC0) != 0x80) ++n;
  return n;
}

}  // namespace

Result<std::unique_ptr<pg::Pool>> OpenDatabase(const Settings& settings) {
  auto options = settings.database.PoolOptionsFor();
  options.size = 2;
  auto pool = std::make_unique<pg::Pool>(options);
  if (auto st = pool->Ping(); !st)
    return Error(st.error().code(),
                 "database " + MaskSecrets(settings.database.url) + ": " +
                     MaskSecrets(st.error().message(), settings.database.url),
                 st.error().retryable());
  return pool;
}

Result<std::unique_ptr<broker::Broker>> OpenBroker(const Settings& settings) {
  auto broker = broker::MakeBroker(settings.broker.url);
  if (!broker)
    return Error(broker.error().code(),
                 "broker.url: " + MaskSecrets(broker.error().message(), settings.broker.url),
                 broker.error().retryable());
  if (auto st = (*broker)->Connect(); !st)
    return Error(st.error().code(),
                 "broker " + MaskSecrets(settings.broker.url) + ": " +
                     MaskSecrets(st.error().message(), settings.broker.url),
                 st.error().retryable());
  return std::move(*broker);
}

void Table::Print(std::ostream& out) const {
  std::vector<size_t> widths(header_.size(), 0);
  auto measure = [&](const std::vector<std::string>& row) {
    for (size_t i = 0; i < row.size() && i < widths.size(); ++i)
      widths[i] = std::max(widths[i], Width(row[i]));
  };
  measure(header_);
  for (const auto& row : rows_) measure(row);
  auto print = [&](const std::vector<std::string>& row) {
    std::string line;
    for (size_t i = 0; i < row.size() && i < widths.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(widths[i] - Width(row[i]) + 2, ' ');
    }
    out << line << "\n";
  };
  print(header_);
  for (const auto& row : rows_) print(row);
}

std::string ShortTime(Clock::WallTime t) {
  // FormatIso8601 gives "2024-05-01T12:00:05.123456+00:00".
  const std::string iso = FormatIso8601(t);
  return iso.substr(0, 10) + " " + iso.substr(11, 8) + "Z";
}

std::string ShortTime(const std::optional<Clock::WallTime>& t, const std::string& none) {
  return t ? ShortTime(*t) : none;
}

std::string HumanBytes(int64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  size_t unit = 0;
  while (value >= 1024 && unit + 1 < std::size(kUnits)) {
    value /= 1024;
    ++unit;
  }
  if (unit == 0) return fmt::format("{} B", bytes);
  return fmt::format("{:.1f} {}", value, kUnits[unit]);
}

std::string Truncate(const std::string& text, size_t max) {
  const size_t keep = Width(text) <= max ? max : (max > 3 ? max - 3 : 0);
  std::string out;
  size_t chars = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if ((c & 0xC0) != 0x80) {
      if (chars == keep) return out + "...";
      ++chars;
    }
    out += (c == '\n' || c == '\r' || c == '\t') ? ' ' : text[i];
  }
  return out;
}

Result<Clock::WallTime> ParseTimeOption(const std::string& option, const std::string& value) {
  if (auto t = ParseIso8601(value)) return *t;
  return Error(ErrorCode::kInvalidArgument,
               fmt::format("{}: '{}' is not an ISO-8601 time (for example 2024-05-01, "
                           "2024-05-01T12:00:00Z or 2024-05-01 14:00+02:00)",
                           option, value),
               false);
}

CLI::Validator NonNegative() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        int64_t n = 0;
        if (!CLI::detail::lexical_cast(value, n) || n < 0)
          return "'" + value + "' is not a whole number, 0 or more";
        return "";
      },
      "N>=0");
}

void PrintJson(const nlohmann::ordered_json& doc) {
  std::cout << doc.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << "\n"
            << std::flush;
}

std::variant<Opened, int> OpenSettingsAndDatabase(const std::optional<std::string>& config_path,
                                                  const std::string& me) {
  auto settings = app::Start<Settings>(config_path);
  if (!settings) {
    std::cerr << me << ": " << settings.error().message() << "\n";
    return kExitUsage;
  }
  auto pool = OpenDatabase(*settings);
  if (!pool) {
    std::cerr << me << ": " << pool.error().message() << "\n";
    return kExitFailed;
  }
  return Opened{std::move(*settings), std::move(*pool)};
}

}  // namespace celeriac::orchestrator::cli
