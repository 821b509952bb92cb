// The settings of the two binaries, from one shared file: each section as its component declares
// it (core/config/sections.hpp has the mechanism; config_sections_test.cpp tests it alone).

#include <map>
#include <set>

#include <gtest/gtest.h>

#include "core/config/sections.hpp"
#include "extractor/pipeline/settings.hpp"
#include "orchestrator/commands/settings.hpp"
#include "tests/support/paths.hpp"

namespace celeriac {
namespace {

using OrchestratorSettings = orchestrator::Settings;
using ExtractorSettings = extractor::Settings;

// What these tests used to call Settings::Parse: the orchestrator reads the most sections.
Result<OrchestratorSettings> Parse(std::string_view toml, std::string_view origin,
                                   const config::EnvLookup& env) {
  return config::Parse<OrchestratorSettings>(toml, origin, env);
}

config::EnvLookup Env(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

TEST(Settings, DefaultsWorkOnLoopback) {
  auto s = Parse("", "test", Env({}));
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_EQ(s->database.url, "postgresql://celeriac:celeriac@127.0.0.1:16432/celeriac");
  EXPECT_EQ(s->broker.url, "amqp://guest:guest@127.0.0.1:16672//");
  EXPECT_EQ(s->worker.queue, "celery");
  EXPECT_EQ(s->extractor.queue, "extraction_queue");
  EXPECT_EQ(s->log.format, "text");
}

TEST(Settings, FileOverridesDefaults) {
  auto s = Parse(R"(
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
  auto s = Parse("[database]\nurl = \"postgresql://file/db\"\npool_size = 2\n", "f",
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
  auto s = Parse("", "f", Env({{"CELERIAC_WORKER_CONCURRENCY", "many"}}));
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("worker.concurrency"), std::string::npos)
      << s.error().message();
  EXPECT_NE(s.error().message().find("CELERIAC_WORKER_CONCURRENCY"), std::string::npos);
  EXPECT_NE(s.error().message().find("'many' is not an integer"), std::string::npos);
}

TEST(Settings, OutOfRangeAndUnknownChoiceAreRefused) {
  auto low = Parse("[database]\npool_size = 0\n", "celeriac.toml", Env({}));
  ASSERT_FALSE(low.ok());
  EXPECT_NE(low.error().message().find("database.pool_size (from celeriac.toml)"),
            std::string::npos)
      << low.error().message();
  auto level = Parse("", "f", Env({{"CELERIAC_LOG_LEVEL", "verbose"}}));
  ASSERT_FALSE(level.ok());
  EXPECT_NE(level.error().message().find("log.level"), std::string::npos);
  EXPECT_NE(level.error().message().find("'verbose' is not one of"), std::string::npos);
}

TEST(Settings, WrongTypeInFileNamesTheKey) {
  auto s = Parse("[worker]\nconcurrency = \"4\"\n", "celeriac.toml", Env({}));
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("worker.concurrency"), std::string::npos);
  EXPECT_NE(s.error().message().find("expected an integer"), std::string::npos);
}

TEST(Settings, UnknownKeysAndSectionsAreRefusedSoTyposShow) {
  auto key = Parse("[broker]\nulr = \"x\"\n", "celeriac.toml", Env({}));
  ASSERT_FALSE(key.ok());
  EXPECT_NE(key.error().message().find("unknown key broker.ulr"), std::string::npos);
  auto section = Parse("[brokr]\nurl = \"x\"\n", "celeriac.toml", Env({}));
  ASSERT_FALSE(section.ok());
  EXPECT_NE(section.error().message().find("unknown section [brokr]"), std::string::npos);
}

TEST(Settings, SyntaxErrorSaysWhere) {
  auto s = Parse("[broker]\nurl = \n", "celeriac.toml", Env({}));
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("celeriac.toml:2:"), std::string::npos)
      << s.error().message();
}

TEST(Settings, MissingFileIsAnError) {
  auto s =
      config::Load<OrchestratorSettings>(std::string("/nonexistent/celeriac.toml"), Env({}));
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("/nonexistent/celeriac.toml"), std::string::npos);
}

TEST(Settings, DescribeMasksSecrets) {
  auto s = Parse("", "f",
                 Env({{"CELERIAC_API_TOKEN", "tok-123"},
                      {"CELERIAC_DATABASE_URL", "postgresql://app:hunter2@db:5432/x"}}));
  ASSERT_TRUE(s.ok());
  std::string all;
  for (const auto& line : config::Describe(*s)) all += line + "\n";
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
    auto s = Parse("", "f",
                   Env({{"CELERIAC_DATABASE_URL", database},
                        {"CELERIAC_BROKER_URL", "amqp://u:hunter3@mq:5672/v"},
                        {"CELERIAC_DISCOVERY_URL", "http://d/?access_token=hunter4"}}));
    ASSERT_TRUE(s.ok()) << database;
    std::string all;
    for (const auto& line : config::Describe(*s)) all += line + "\n";
    for (const char* secret : {"hunter2", "hun ter2", "hunter%32", "hunter3", "hunter4"})
      EXPECT_EQ(all.find(secret), std::string::npos) << all;
    EXPECT_NE(all.find("broker.url = \"amqp://u:***@mq:5672/v\""), std::string::npos) << all;
  }
}

// Every key of both binaries at its default, as their `config show` prints it, in one file.
std::string SharedFileWithEveryKey() {
  std::map<std::string, std::set<std::string>> sections;
  auto add = [&](const std::vector<std::string>& lines) {
    for (const auto& line : lines) {
      const auto dot = line.find('.');
      sections[line.substr(0, dot)].insert(line.substr(dot + 1));
    }
  };
  add(config::Describe(OrchestratorSettings{}));
  add(config::Describe(ExtractorSettings{}));
  std::string file;
  for (const auto& [section, keys] : sections) {
    file += "[" + section + "]\n";
    for (const auto& key : keys) file += key + "\n";
  }
  return file;
}

TEST(Settings, OneFileServesBothBinaries) {
  const std::string file = SharedFileWithEveryKey();
  for (const char* section : {"[api]", "[beat]", "[discovery]", "[tasks]", "[extractor]",
                              "concurrency = 256", "[worker]", "[database]", "[retention]"})
    ASSERT_NE(file.find(section), std::string::npos) << file;
  auto orchestrator = config::Parse<OrchestratorSettings>(file, "celeriac.toml", Env({}));
  EXPECT_TRUE(orchestrator.ok()) << orchestrator.error().message() << "\n" << file;
  auto extractor = config::Parse<ExtractorSettings>(file, "celeriac.toml", Env({}));
  EXPECT_TRUE(extractor.ok()) << extractor.error().message() << "\n" << file;
}

// The example file of the README's Configuration section.
TEST(Settings, ReadmeExampleLoadsInBothBinaries) {
  const std::string readme = testing::ReadFile(testing::SourceDir() / "README.md");
  const auto section = readme.find("## Configuration");
  ASSERT_NE(section, std::string::npos);
  const auto begin = readme.find("```toml\n", section);
  ASSERT_NE(begin, std::string::npos);
  const auto end = readme.find("```", begin + 8);
  const std::string example = readme.substr(begin + 8, end - begin - 8);
  auto orchestrator = config::Parse<OrchestratorSettings>(example, "README.md", Env({}));
  EXPECT_TRUE(orchestrator.ok()) << orchestrator.error().message();
  auto extractor = config::Parse<ExtractorSettings>(example, "README.md", Env({}));
  EXPECT_TRUE(extractor.ok()) << extractor.error().message();
}

// The binary that reads a section checks it; the other accepts it unread.
TEST(Settings, EachBinaryChecksTheSectionsItReads) {
  struct Case {
    std::string file;
    std::string orchestrator_error;  // empty: loads
    std::string extractor_error;
  };
  const Case cases[] = {
      {"[beat]\nbatch_size = 0\n",
       "config key beat.batch_size (from celeriac.toml): 0 is out of range [1, 100000]", ""},
      {"[api]\ntokn = \"x\"\n", "config celeriac.toml: unknown key api.tokn", ""},
      {"[discovery]\ntimeout_ms = \"5\"\n",
       "config key discovery.timeout_ms (from celeriac.toml): expected an integer", ""},
      {"[extractor]\nconcurrency = 0\n", "",
       "config key extractor.concurrency (from celeriac.toml): 0 is out of range [1, 65536]"},
      {"[extractor]\nconcurency = 8\n", "",
       "config celeriac.toml: unknown key extractor.concurency"},
      {"[extractor]\nqueue = 7\n",
       "config key extractor.queue (from celeriac.toml): expected a string",
       "config key extractor.queue (from celeriac.toml): expected a string"},
      {"[worker]\nmax_held_eta = 0\n",
       "config key worker.max_held_eta (from celeriac.toml): 0 is out of range [1, 60000]",
       "config key worker.max_held_eta (from celeriac.toml): 0 is out of range [1, 60000]"},
      {"[extractr]\nqueue = \"q\"\n", "config celeriac.toml: unknown section [extractr]",
       "config celeriac.toml: unknown section [extractr]"},
  };
  for (const auto& c : cases) {
    auto orchestrator = config::Parse<OrchestratorSettings>(c.file, "celeriac.toml", Env({}));
    auto extractor = config::Parse<ExtractorSettings>(c.file, "celeriac.toml", Env({}));
    if (c.orchestrator_error.empty())
      EXPECT_TRUE(orchestrator.ok()) << c.file << orchestrator.error().message();
    else
      EXPECT_EQ(orchestrator.ok() ? "" : orchestrator.error().message(), c.orchestrator_error)
          << c.file;
    if (c.extractor_error.empty())
      EXPECT_TRUE(extractor.ok()) << c.file << extractor.error().message();
    else
      EXPECT_EQ(extractor.ok() ? "" : extractor.error().message(), c.extractor_error) << c.file;
  }
}

TEST(Settings, BothBinariesReadTheExtractionQueue) {
  const std::string file = "[extractor]\nqueue = \"from-file\"\nconcurrency = 8\n";
  auto orchestrator = config::Parse<OrchestratorSettings>(file, "f", Env({}));
  auto extractor = config::Parse<ExtractorSettings>(file, "f", Env({}));
  ASSERT_TRUE(orchestrator.ok()) << orchestrator.error().message();
  ASSERT_TRUE(extractor.ok()) << extractor.error().message();
  EXPECT_EQ(orchestrator->extractor.queue, "from-file");
  EXPECT_EQ(extractor->extractor.queue, "from-file");
  EXPECT_EQ(extractor->extractor.concurrency, 8);
  const auto env = Env({{"CELERIAC_EXTRACTOR_QUEUE", "from-env"}});
  EXPECT_EQ(config::Parse<OrchestratorSettings>(file, "f", env)->extractor.queue, "from-env");
  EXPECT_EQ(config::Parse<ExtractorSettings>(file, "f", env)->extractor.queue, "from-env");
}

// `config show` of each binary: the sections it reads; a key both read shows the same.
TEST(Settings, EachBinaryShowsTheSectionsItReads) {
  const auto orchestrator = config::Describe(OrchestratorSettings{});
  const auto extractor = config::Describe(ExtractorSettings{});
  auto shows = [](const std::vector<std::string>& lines, const std::string& prefix) {
    for (const auto& line : lines)
      if (line.rfind(prefix, 0) == 0) return true;
    return false;
  };
  EXPECT_TRUE(shows(orchestrator, "beat.batch_size = 1000"));
  EXPECT_TRUE(shows(orchestrator, "extractor.queue = \"extraction_queue\""));
  EXPECT_FALSE(shows(orchestrator, "extractor.concurrency"));
  EXPECT_TRUE(shows(extractor, "extractor.concurrency = 256"));
  EXPECT_TRUE(shows(extractor, "worker.max_held_eta = 1000"));
  for (const char* other : {"api.", "discovery.", "tasks.", "beat."})
    EXPECT_FALSE(shows(extractor, other)) << other;
  for (const auto& line : extractor) {
    const auto key = line.substr(0, line.find(" = "));
    if (shows(orchestrator, key + " = ")) {
      EXPECT_TRUE(shows(orchestrator, line)) << line;
    }
  }
}

}  // namespace
}  // namespace celeriac
