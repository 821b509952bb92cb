// The orchestrator binary as ops run it: migrate, config show, config validate.

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/support/paths.hpp"
#include "tests/support/pg_test.hpp"
#include "tests/support/process.hpp"

namespace celeriac {
namespace {

using testing::BinDir;
using testing::RunCommand;
using testing::ShellQuote;

std::string Orchestrator() { return ShellQuote((BinDir() / "orchestrator").string()); }

class OrchestratorCliTest : public testing::PgTest {};

TEST_F(OrchestratorCliTest, MigrateAppliesOnceAndIsSafeToRepeat) {
  const std::map<std::string, std::string> env = {{"CELERIAC_DATABASE_URL", SchemaUrl()}};
  auto first = RunCommand(Orchestrator() + " migrate", env);
  ASSERT_EQ(first.exit_code, 0) << first.output;
  EXPECT_NE(first.output.find("applied 0001_create_source_tables"), std::string::npos)
      << first.output;
  EXPECT_NE(first.output.find("0 already up to date"), std::string::npos) << first.output;
  auto second = RunCommand(Orchestrator() + " migrate", env);
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_NE(second.output.find("migrations: 0 applied"), std::string::npos) << second.output;
}

TEST_F(OrchestratorCliTest, UnreachableDatabaseFailsWithMaskedUrl) {
  auto r = RunCommand(
      Orchestrator() + " migrate",
      {{"CELERIAC_DATABASE_URL", "postgresql://celeriac:topsecret@127.0.0.1:1/celeriac"},
       {"CELERIAC_DATABASE_MAX_ATTEMPTS", "1"},
       {"CELERIAC_DATABASE_CONNECT_TIMEOUT_S", "1"}});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("127.0.0.1:1"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("topsecret"), std::string::npos) << "password leaked: " << r.output;
}

TEST(OrchestratorCli, BadSettingFailsAtStartNamingTheKey) {
  auto r = RunCommand(Orchestrator() + " config show", {{"CELERIAC_WORKER_CONCURRENCY", "-3"}});
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("worker.concurrency"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("CELERIAC_WORKER_CONCURRENCY"), std::string::npos) << r.output;
}

TEST(OrchestratorCli, ConfigShowReadsFileAndEnvironmentAndMasksSecrets) {
  const auto dir = std::filesystem::temp_directory_path() / ("celeriac-cli-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const auto file = dir / "celeriac.toml";
  {
    std::ofstream out(file);
    out << "[worker]\nqueue = \"from-file\"\n[api]\ntoken = \"file-token\"\n";
  }
  auto r = RunCommand(Orchestrator() + " --config " + ShellQuote(file.string()) + " config show",
                      {{"CELERIAC_BROKER_URL", "amqp://u:pw123@127.0.0.1:5/"}});
  std::filesystem::remove_all(dir);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("worker.queue = \"from-file\""), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("broker.url = \"amqp://u:***@127.0.0.1:5/\""), std::string::npos)
      << r.output;
  EXPECT_EQ(r.output.find("file-token"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("pw123"), std::string::npos) << r.output;
}

TEST(OrchestratorCli, ConfigValidateNamesTheOffendingPath) {
  const auto examples = testing::SourceDir() / "schemas" / "examples" / "crawl_config";
  std::string valid, invalid;
  for (const auto& e : std::filesystem::directory_iterator(examples / "valid"))
    if (valid.empty()) valid = e.path().string();
  const auto expected = nlohmann::json::parse(testing::ReadFile(examples / "invalid" / "_expected.json"));
  std::string pointer;
  for (const auto& [file, ptr] : expected.items()) {
    invalid = (examples / "invalid" / file).string();
    pointer = ptr.get<std::string>();
    if (!pointer.empty()) break;
  }
  ASSERT_FALSE(valid.empty());
  ASSERT_FALSE(invalid.empty());
  auto ok = RunCommand(Orchestrator() + " config validate " + ShellQuote(valid));
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_NE(ok.output.find(": ok"), std::string::npos) << ok.output;
  auto bad = RunCommand(Orchestrator() + " config validate " + ShellQuote(invalid));
  EXPECT_EQ(bad.exit_code, 1) << bad.output;
  EXPECT_NE(bad.output.find(": " + pointer + ": "), std::string::npos)
      << "expected " << pointer << " in: " << bad.output;
}

TEST(ExtractorCli, StartsAndShowsSettings) {
  auto r = RunCommand(ShellQuote((BinDir() / "extractor").string()) + " config show");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("extractor.queue = \"extraction_queue\""), std::string::npos)
      << r.output;
}

}  // namespace
}  // namespace celeriac
