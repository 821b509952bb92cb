#include "core/log/log.hpp"

#include <mutex>

#include <nlohmann/json.hpp>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>

#include "core/base/secrets.hpp"

namespace celeriac::log {
namespace {

thread_local std::vector<std::pair<std::string, std::string>> t_context;

// Every form MaskSecrets knows needs "://" or '='; most lines have neither.
bool MayHoldSecret(std::string_view text) {
  return text.find('=') != std::string_view::npos || text.find("://") != std::string_view::npos;
}

std::string Masked(std::string_view text) {
  return MayHoldSecret(text) ? MaskSecrets(text) : std::string(text);
}

std::mutex g_mutex;
spdlog::sink_ptr g_sink;
Format g_format = Format::kText;

std::string Timestamp(const spdlog::details::log_msg& msg) {
  using namespace std::chrono;
  const auto t = msg.time;
  const auto secs = system_clock::to_time_t(t);
  const auto us = duration_cast<microseconds>(t.time_since_epoch()).count() % 1'000'000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, us);
}

// %* in the text pattern: " key=value" for each context field.
class ContextFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg&, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    for (const auto& [key, value] : t_context) {
      dest.push_back(' ');
      dest.append(key.data(), key.data() + key.size());
      dest.push_back('=');
      dest.append(value.data(), value.data() + value.size());
    }
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<ContextFlag>();
  }
};

// Every text line goes through MaskSecrets: a password that reached a log call by any path
// (a driver's error text, a URL in a message) is hidden here at the latest.
class MaskingFormatter final : public spdlog::formatter {
 public:
  explicit MaskingFormatter(std::unique_ptr<spdlog::formatter> inner) : inner_(std::move(inner)) {}
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    spdlog::memory_buf_t line;
    inner_->format(msg, line);
    const std::string_view text(line.data(), line.size());
    if (!MayHoldSecret(text)) {
      dest.append(line.data(), line.data() + line.size());
      return;
    }
    const std::string masked = MaskSecrets(text);
    dest.append(masked.data(), masked.data() + masked.size());
  }
  std::unique_ptr<formatter> clone() const override {
    return std::make_unique<MaskingFormatter>(inner_->clone());
  }

 private:
  std::unique_ptr<spdlog::formatter> inner_;
};

class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const std::string line = FormatJsonLine(msg);
    dest.append(line.data(), line.data() + line.size());
    dest.push_back('\n');
  }
  std::unique_ptr<formatter> clone() const override { return std::make_unique<JsonFormatter>(); }
};

std::unique_ptr<spdlog::formatter> MakeFormatter(Format format) {
  if (format == Format::kJson) return std::make_unique<JsonFormatter>();
  auto f = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
  f->add_flag<ContextFlag>('*').set_pattern("%Y-%m-%dT%H:%M:%S.%fZ %-5l [%n] %v%*");
  return std::make_unique<MaskingFormatter>(std::move(f));
}

}  // namespace

std::string FormatJsonLine(const spdlog::details::log_msg& msg) {
  nlohmann::ordered_json j;
  j["ts"] = Timestamp(msg);
  const auto level = spdlog::level::to_string_view(msg.level);
  j["level"] = std::string(level.data(), level.size());
  j["logger"] = std::string(msg.logger_name.data(), msg.logger_name.size());
  j["msg"] = Masked(std::string_view(msg.payload.data(), msg.payload.size()));
  for (const auto& [key, value] : t_context) j[key] = Masked(value);
  // Invalid UTF-8 in a message (say, a hostile page's title) is replaced, never thrown.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

Status Init(std::string_view level, Format format) {
  const auto lvl = spdlog::level::from_str(std::string(level));
  if (lvl == spdlog::level::off && level != "off")
    return Error(ErrorCode::kInvalidArgument, fmt::format("unknown log level '{}'", level));
  std::lock_guard lock(g_mutex);
  if (!g_sink) g_sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  g_format = format;
  g_sink->set_formatter(MakeFormatter(format));
  auto logger = std::make_shared<spdlog::logger>("celeriac", g_sink);
  logger->set_level(lvl);
  spdlog::set_default_logger(logger);
  spdlog::set_level(lvl);
  return Ok();
}

std::shared_ptr<spdlog::logger> Get(const std::string& name) {
  if (auto existing = spdlog::get(name)) return existing;
  std::lock_guard lock(g_mutex);
  if (!g_sink) {
    g_sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    g_sink->set_formatter(MakeFormatter(g_format));
  }
  auto logger = std::make_shared<spdlog::logger>(name, g_sink);
  logger->set_level(spdlog::default_logger()->level());
  // Another thread may have registered it meanwhile; register_logger throws on duplicates.
  if (auto existing = spdlog::get(name)) return existing;
  spdlog::register_logger(logger);
  return logger;
}

ScopedLogContext::ScopedLogContext(
    std::initializer_list<std::pair<std::string, std::string>> fields)
    : added_(fields.size()) {
  for (const auto& f : fields) t_context.push_back(f);
}

ScopedLogContext::~ScopedLogContext() { t_context.resize(t_context.size() - added_); }

const std::vector<std::pair<std::string, std::string>>& CurrentContext() { return t_context; }

}  // namespace celeriac::log
