#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/ostream_sink.h>

#include "core/log/log.hpp"

namespace celeriac::log {
namespace {

spdlog::details::log_msg Msg(std::string_view text) {
  return spdlog::details::log_msg("worker", spdlog::level::info, text);
}

TEST(Log, JsonLineCarriesContextFields) {
  ScopedLogContext outer({{"task_id", "abc-123"}});
  {
    ScopedLogContext inner({{"run_id", "42"}});
    const auto j = nlohmann::json::parse(FormatJsonLine(Msg("task \"succeeded\"\n")));
    EXPECT_EQ(j["level"], "info");
    EXPECT_EQ(j["logger"], "worker");
    EXPECT_EQ(j["msg"], "task \"succeeded\"\n");
    EXPECT_EQ(j["task_id"], "abc-123");
    EXPECT_EQ(j["run_id"], "42");
    EXPECT_EQ(j["ts"].get<std::string>().back(), 'Z');
  }
  const auto j = nlohmann::json::parse(FormatJsonLine(Msg("after")));
  EXPECT_EQ(j["task_id"], "abc-123");
  EXPECT_FALSE(j.contains("run_id")) << "inner context must end with its scope";
}

TEST(Log, InvalidUtf8NeverThrows) {
  const std::string bad = "title \xff\xfe end";
  std::string line;
  ASSERT_NO_THROW(line = FormatJsonLine(Msg(bad)));
  EXPECT_TRUE(nlohmann::json::accept(line)) << line;
}

TEST(Log, ContextIsPerThread) {
  ScopedLogContext here({{"task_id", "main"}});
  size_t other_size = 99;
  std::thread([&] { other_size = CurrentContext().size(); }).join();
  EXPECT_EQ(other_size, 0u);
  EXPECT_EQ(CurrentContext().size(), 1u);
}

TEST(Log, JsonLinesNeverCarryPasswords) {
  ScopedLogContext ctx({{"dsn", "host=h password=ctxsecret"}});
  const std::string line =
      FormatJsonLine(Msg("cannot connect to postgresql://u:msgsecret@h/db?sslpassword=k3y"));
  EXPECT_EQ(line.find("msgsecret"), std::string::npos) << line;
  EXPECT_EQ(line.find("ctxsecret"), std::string::npos) << line;
  EXPECT_EQ(line.find("k3y"), std::string::npos) << line;
  EXPECT_NE(line.find("postgresql://u:***@h/db"), std::string::npos) << line;
}

TEST(Log, TextLinesNeverCarryPasswords) {
  ASSERT_TRUE(Init("info", Format::kText).ok());
  testing::internal::CaptureStderr();
  {
    ScopedLogContext ctx({{"dsn", "host=h password='ctx secret'"}});
    spdlog::info("cannot connect to amqp://guest:msgsecret@mq:5672//");
    Get("pg")->warn("libpq said: host=h password=pgsecret dbname=x");
  }
  spdlog::default_logger()->flush();
  Get("pg")->flush();
  const std::string out = testing::internal::GetCapturedStderr();
  for (const char* secret : {"msgsecret", "ctx secret", "pgsecret"})
    EXPECT_EQ(out.find(secret), std::string::npos) << out;
  EXPECT_NE(out.find("amqp://guest:***@mq:5672//"), std::string::npos) << out;
  EXPECT_NE(out.find("host=h password=*** dbname=x"), std::string::npos) << out;
}

TEST(Log, InitRejectsUnknownLevel) {
  EXPECT_FALSE(Init("chatty", Format::kText).ok());
  EXPECT_TRUE(Init("warn", Format::kText).ok());
}

}  // namespace
}  // namespace celeriac::log
