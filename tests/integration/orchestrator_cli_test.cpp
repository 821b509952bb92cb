// The orchestrator binary as ops run it: migrate, config show, config validate.

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/support/amqp_test.hpp"
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

// A password in any form a user may write it never reaches the terminal: not through
// `config show`, not through a start-up failure (driver errors included), not through a log line.
void ExpectNoPassword(const testing::CommandResult& r, const std::string& what) {
  // Every form of the password below starts with "Sekr" (plain, quoted, percent-encoded).
  EXPECT_EQ(r.output.find("Sekr"), std::string::npos) << what << " leaked: " << r.output;
}

TEST_F(OrchestratorCliTest, NoFormOfDatabasePasswordIsEverPrinted) {
  const std::vector<std::string> urls = {
      "postgresql://celeriac:Sekr1tPw@127.0.0.1:1/celeriac",
      "postgresql://celeriac:Sekr1tPw%zz@127.0.0.1:1/celeriac",  // libpq quotes the bad token
      "postgresql://celeriac:Sekr%31tPw@127.0.0.1:1/celeriac",
      "postgresql://127.0.0.1:1/celeriac?password=Sekr1tPw",
      "postgresql://127.0.0.1:1/celeriac?sslmode=disable&sslpassword=Sekr1tPw",
      "host=127.0.0.1 port=1 user=celeriac password=Sekr1tPw dbname=celeriac",
      "host=127.0.0.1 port=1 password='Sekr 1tPw' dbname=celeriac",
      "host=127.0.0.1 port=1 password=Sekr1tPw bogus_option=1",
  };
  for (const auto& url : urls) {
    const std::map<std::string, std::string> env = {{"CELERIAC_DATABASE_URL", url},
                                                    {"CELERIAC_DATABASE_MAX_ATTEMPTS", "1"},
                                                    {"CELERIAC_DATABASE_CONNECT_TIMEOUT_S", "1"},
                                                    {"CELERIAC_BROKER_URL", "memory://"}};
    auto shown = RunCommand(Orchestrator() + " config show", env);
    EXPECT_EQ(shown.exit_code, 0) << shown.output;
    EXPECT_NE(shown.output.find("database.url = "), std::string::npos) << shown.output;
    ExpectNoPassword(shown, "config show with " + url);
    for (const std::string command : {"migrate", "runs", "dlq list"}) {
      auto r = RunCommand(Orchestrator() + " " + command, env);
      EXPECT_EQ(r.exit_code, 1) << command << " with " << url << ": " << r.output;
      EXPECT_NE(r.output.find("127.0.0.1"), std::string::npos)
          << command << " with " << url << " should say where it failed: " << r.output;
      ExpectNoPassword(r, command + " with " + url);
    }
    // The worker waits for its database (see below), saying where it is, until SIGTERM.
    auto worker = RunCommand("timeout --preserve-status 2 " + Orchestrator() + " worker", env);
    EXPECT_EQ(worker.exit_code, 0) << "worker with " << url << ": " << worker.output;
    EXPECT_NE(worker.output.find("not reachable yet"), std::string::npos) << worker.output;
    EXPECT_NE(worker.output.find("127.0.0.1"), std::string::npos) << worker.output;
    ExpectNoPassword(worker, "worker with " + url);
    // The API starts without its database and logs why; a listen address it cannot bind ends it.
    auto api = RunCommand(Orchestrator() + " api --listen 192.0.2.1:9", env);
    EXPECT_EQ(api.exit_code, 1) << api.output;
    EXPECT_NE(api.output.find("not reachable yet"), std::string::npos) << api.output;
    ExpectNoPassword(api, "api with " + url);
  }
}

TEST_F(OrchestratorCliTest, NoFormOfBrokerPasswordIsEverPrinted) {
  const std::vector<std::string> urls = {
      "amqp://guest:Sekr1tPw@127.0.0.1:1//",         // refused
      "amqp://guest:Sekr1tPw@127.0.0.1:notaport//",  // unparsable
      "amqp://guest:Sekr1tPw@127.0.0.1:1//%zz",      // bad vhost encoding
      "amqp://guest:Sekr1tPw@127.0.0.1:1//?password=Sekr1tPw",
      "redis://guest:Sekr1tPw@127.0.0.1:1/0",        // unsupported scheme
      "guest:Sekr1tPw@127.0.0.1:1",                  // no scheme at all
  };
  for (const auto& url : urls) {
    const std::map<std::string, std::string> env = {{"CELERIAC_DATABASE_URL", SchemaUrl()},
                                                    {"CELERIAC_BROKER_URL", url}};
    auto shown = RunCommand(Orchestrator() + " config show", env);
    EXPECT_EQ(shown.exit_code, 0) << shown.output;
    ExpectNoPassword(shown, "config show with " + url);
    for (const std::string command : {"worker", "beat", "send-task celeriac.ping"}) {
      // worker and beat wait for a broker they cannot reach yet (see below): stopped after 3 s
      // (exit 124).
      const bool waits = command == "worker" || command == "beat";
      auto r = RunCommand((waits ? "timeout 3 " : "") + Orchestrator() + " " + command, env);
      EXPECT_NE(r.exit_code, 0) << command << " with " << url << ": " << r.output;
      EXPECT_NE(r.output.find("broker"), std::string::npos)
          << command << " with " << url << " should say the broker failed: " << r.output;
      ExpectNoPassword(r, command + " with " + url);
    }
  }
}

// A beat (re)started while RabbitMQ or Postgres is down waits for them, as it rides out any
// outage, instead of exiting for its supervisor to restart it in a loop (tests/chaos restarts
// beats during outages and checks that they fire again).
TEST_F(OrchestratorCliTest, BeatStartedDuringAnOutageWaitsForTheServices) {
  for (const auto& [database, broker] :
       {std::pair<std::string, std::string>{SchemaUrl(), "amqp://guest:Sekr1tPw@127.0.0.1:1//"},
        {"postgresql://celeriac:Sekr1tPw@127.0.0.1:1/celeriac", testing::BrokerUrl()}}) {
    auto r = RunCommand("timeout 4 " + Orchestrator() + " beat",
                        {{"CELERIAC_DATABASE_URL", database}, {"CELERIAC_BROKER_URL", broker}});
    EXPECT_EQ(r.exit_code, 124) << "beat should still run after 4 s: " << r.output;
    EXPECT_NE(r.output.find("not reachable yet"), std::string::npos) << r.output;
    ExpectNoPassword(r, "beat started during an outage");
  }
}

// So do the workers (orchestrator and extractor): one started while Postgres or RabbitMQ is
// down used to exit 1 at once, and a supervisor restarting it every second gives up (the chaos
// suite saw workers exit at start during a RabbitMQ restart). SIGTERM while it waits ends it
// with 0.
TEST_F(OrchestratorCliTest, WorkersStartedDuringAnOutageWaitForTheServicesAndStopOnSigterm) {
  const std::string extractor = ShellQuote((BinDir() / "extractor").string());
  for (const std::string& command : {Orchestrator() + " worker", extractor + " worker"}) {
    for (const auto& [database, broker] :
         {std::pair<std::string, std::string>{SchemaUrl(), "amqp://guest:Sekr1tPw@127.0.0.1:1//"},
          {"postgresql://celeriac:Sekr1tPw@127.0.0.1:1/celeriac", testing::BrokerUrl()}}) {
      auto r = RunCommand("timeout --preserve-status 4 " + command,
                          {{"CELERIAC_DATABASE_URL", database}, {"CELERIAC_BROKER_URL", broker},
                           {"CELERIAC_DATABASE_MAX_ATTEMPTS", "1"},
                           {"CELERIAC_DATABASE_CONNECT_TIMEOUT_S", "1"}});
      EXPECT_EQ(r.exit_code, 0) << command << " should wait, then stop on SIGTERM: " << r.output;
      EXPECT_NE(r.output.find("not reachable yet"), std::string::npos) << r.output;
      EXPECT_EQ(r.output.find("consuming"), std::string::npos) << r.output;
      ExpectNoPassword(r, command + " started during an outage");
    }
  }
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

// One settings file for every process (core/config/sections.hpp): each binary checks the
// sections it reads and accepts the other's unread; a section neither reads stops both.
TEST(ExtractorCli, OneSettingsFileServesBothBinaries) {
  const std::string extractor = ShellQuote((BinDir() / "extractor").string());
  const auto dir =
      std::filesystem::temp_directory_path() / ("celeriac-shared-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  auto write = [&](const std::string& name, const std::string& text) {
    const auto file = dir / name;
    std::ofstream(file) << text;
    return ShellQuote(file.string());
  };
  // Every key that either binary shows, as it shows it.
  std::map<std::string, std::set<std::string>> sections;
  for (const auto& binary : {Orchestrator(), extractor}) {
    auto shown = RunCommand(binary + " config show");
    ASSERT_EQ(shown.exit_code, 0) << shown.output;
    std::istringstream lines(shown.output);
    for (std::string line; std::getline(lines, line);) {
      const auto dot = line.find('.');
      if (dot != std::string::npos && line.find(" = ") != std::string::npos)
        sections[line.substr(0, dot)].insert(line.substr(dot + 1));
    }
  }
  ASSERT_EQ(sections.size(), 10u);
  std::string every_key;
  for (const auto& [section, keys] : sections) {
    every_key += "[" + section + "]\n";
    for (const auto& key : keys) every_key += key + "\n";
  }
  const auto shared = write("celeriac.toml", every_key);
  const auto theirs = write("theirs.toml", "[beat]\nbatch_size = 0\n[extractor]\nlease_ms = 5\n");
  const auto typo = write("typo.toml", "[extractr]\nqueue = \"q\"\n");
  std::map<std::string, testing::CommandResult> runs;
  for (const auto& [name, binary] : {std::pair{"orchestrator", Orchestrator()},
                                     std::pair{"extractor", extractor}}) {
    auto ok = RunCommand(binary + " --config " + shared + " config show");
    EXPECT_EQ(ok.exit_code, 0) << name << ": " << ok.output;
    auto bad = RunCommand(binary + " --config " + typo + " config show");
    EXPECT_EQ(bad.exit_code, 2) << name << ": " << bad.output;
    EXPECT_NE(bad.output.find("unknown section [extractr]"), std::string::npos) << bad.output;
    runs[name] = RunCommand(binary + " --config " + theirs + " config show");
  }
  std::filesystem::remove_all(dir);
  EXPECT_EQ(runs["orchestrator"].exit_code, 2) << runs["orchestrator"].output;
  EXPECT_NE(runs["orchestrator"].output.find("config key beat.batch_size"), std::string::npos)
      << runs["orchestrator"].output;
  EXPECT_EQ(runs["extractor"].exit_code, 2) << runs["extractor"].output;
  EXPECT_NE(runs["extractor"].output.find("config key extractor.lease_ms"), std::string::npos)
      << runs["extractor"].output;
}

}  // namespace
}  // namespace celeriac
