#include <map>

#include <gtest/gtest.h>

#include "core/config/settings.hpp"

namespace celeriac {
namespace {

Settings::EnvLookup Env(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

TEST(Settings, DefaultsWorkOnLoopback) {
  auto s = Settings::Parse("", "test", Env({}));
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_EQ(s->database.url, "postgresql://celeriac:celeriac@127.0.0.1:16432/celeriac");
  EXPECT_EQ(s->broker.url, "amqp://guest:guest@127.0.0.1:16672//");
  EXPECT_EQ(s->worker.queue, "celery");
  EXPECT_EQ(s->extractor.queue, "extraction_queue");
  EXPECT_EQ(s->log.format, "text");
}

TEST(Settings, FileOverridesDefaults) {
  auto s = Settings::Parse(R"(
[broker]
url = "amqp://u:p@10.0.0.1:5672//"
[worker]
concurrency = 8
queue = "crawl"
[log]
format = "json"
)",
                           "celeriac.toml", Env({}));
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_EQ(s->broker.url, "amqp://u:p@10.0.0.1:5672//");
  EXPECT_EQ(s->worker.concurrency, 8);
  EXPECT_EQ(s->worker.queue, "crawl");
  EXPECT_EQ(s->log.format, "json");
}

TEST(Settings, EnvironmentOverridesFile) {
  auto s = Settings::Parse("[database]\nurl = \"postgresql://file/db\"\npool_size = 2\n", "f",
                           Env({{"CELERIAC_DATABASE_URL", "postgresql://env/db"},
                                {"CELERIAC_BROKER_URL", "memory://"},
                                {"CELERIAC_WORKER_PREFETCH_MULTIPLIER", "1"},
                                {"CELERIAC_API_TOKEN", "s3cret"}}));
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_EQ(s->database.url, "postgresql://env/db");
  EXPECT_EQ(s->database.pool_size, 2);
  EXPECT_EQ(s->broker.url, "memory://");
  EXPECT_EQ(s->worker.prefetch_multiplier, 1);
  EXPECT_EQ(s->api.token, "s3cret");
}

TEST(Settings, BadEnvironmentValueNamesTheKey) {
  auto s = Settings::Parse("", "f", Env({{"CELERIAC_WORKER_CONCURRENCY", "many"}}));
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("worker.concurrency"), std::string::npos)
      << s.error().message();
  EXPECT_NE(s.error().message().find("CELERIAC_WORKER_CONCURRENCY"), std::string::npos);
  EXPECT_NE(s.error().message().find("'many' is not an integer"), std::string::npos);
}

TEST(Settings, OutOfRangeAndUnknownChoiceAreRefused) {
  auto low = Settings::Parse("[database]\npool_size = 0\n", "celeriac.toml", Env({}));
  ASSERT_FALSE(low.ok());
  EXPECT_NE(low.error().message().find("database.pool_size (from celeriac.toml)"),
            std::string::npos)
      << low.error().message();
  auto level = Settings::Parse("", "f", Env({{"CELERIAC_LOG_LEVEL", "verbose"}}));
  ASSERT_FALSE(level.ok());
  EXPECT_NE(level.error().message().find("log.level"), std::string::npos);
  EXPECT_NE(level.error().message().find("'verbose' is not one of"), std::string::npos);
}

TEST(Settings, WrongTypeInFileNamesTheKey) {
  auto s = Settings::Parse("[worker]\nconcurrency = \"4\"\n", "celeriac.toml", Env({}));
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("worker.concurrency"), std::string::npos);
  EXPECT_NE(s.error().message().find("expected an integer"), std::string::npos);
}

TEST(Settings, UnknownKeysAndSectionsAreRefusedSoTyposShow) {
  auto key = Settings::Parse("[broker]\nulr = \"x\"\n", "celeriac.toml", Env({}));
  ASSERT_FALSE(key.ok());
  EXPECT_NE(key.error().message().find("unknown key broker.ulr"), std::string::npos);
  auto section = Settings::Parse("[brokr]\nurl = \"x\"\n", "celeriac.toml", Env({}));
  ASSERT_FALSE(section.ok());
  EXPECT_NE(section.error().message().find("unknown section [brokr]"), std::string::npos);
}

TEST(Settings, SyntaxErrorSaysWhere) {
  auto s = Settings::Parse("[broker]\nurl = \n", "celeriac.toml", Env({}));
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("celeriac.toml:2:"), std::string::npos)
      << s.error().message();
}

TEST(Settings, MissingFileIsAnError) {
  auto s = Settings::Load(std::string("/nonexistent/celeriac.toml"), Env({}));
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("/nonexistent/celeriac.toml"), std::string::npos);
}

TEST(Settings, DescribeMasksSecrets) {
  auto s = Settings::Parse("", "f",
                           Env({{"CELERIAC_API_TOKEN", "tok-123"},
                                {"CELERIAC_DATABASE_URL", "postgresql://app:hunter2@db:5432/x"}}));
  ASSERT_TRUE(s.ok());
  std::string all;
  for (const auto& line : s->Describe()) all += line + "\n";
  EXPECT_EQ(all.find("tok-123"), std::string::npos) << all;
  EXPECT_EQ(all.find("hunter2"), std::string::npos) << all;
  EXPECT_NE(all.find("database.url = \"postgresql://app:***@db:5432/x\""), std::string::npos)
      << all;
  EXPECT_NE(all.find("api.token = \"***\""), std::string::npos) << all;
}

TEST(Settings, DescribeMasksEveryFormOfDatabaseAndBrokerPassword) {
  for (const std::string database :
       {"host=db password=hunter2 dbname=x", "host=db password='hun ter2' dbname=x",
        "postgresql://db/x?password=hunter2", "postgresql://db/x?sslpassword=hunter2",
        "postgresql://app:hunter%32@db/x"}) {
    auto s = Settings::Parse("", "f",
                             Env({{"CELERIAC_DATABASE_URL", database},
                                  {"CELERIAC_BROKER_URL", "amqp://u:hunter3@mq:5672/v"},
                                  {"CELERIAC_DISCOVERY_URL", "http://d/?access_token=hunter4"}}));
    ASSERT_TRUE(s.ok()) << database;
    std::string all;
    for (const auto& line : s->Describe()) all += line + "\n";
    for (const char* secret : {"hunter2", "hun ter2", "hunter%32", "hunter3", "hunter4"})
      EXPECT_EQ(all.find(secret), std::string::npos) << all;
    EXPECT_NE(all.find("broker.url = \"amqp://u:***@mq:5672/v\""), std::string::npos) << all;
  }
}

}  // namespace
}  // namespace celeriac
