// The ops commands as ops run them: `runs`, `dlq list|show|replay|purge` and `run-now --wait`,
// the real binary against a fresh schema and the real RabbitMQ (uniquely named queues, deleted
// afterwards).

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/base/ids.hpp"
#include "core/pg/migrations.hpp"
#include "migrations/migrations.hpp"
#include "state/dead_letter_store.hpp"
#include "state/task_state_store.hpp"
#include "tests/support/amqp_test.hpp"
#include "tests/support/paths.hpp"
#include "tests/support/pg_test.hpp"
#include "tests/support/process.hpp"

namespace celeriac {
namespace {

using state::PgDeadLetterStore;
using state::PgTaskStateStore;
using worker::DeadLetter;
using worker::TaskStateRecord;
using broker::PropertiesFromJson;
using broker::PropertiesToJson;

using json = nlohmann::ordered_json;
using testing::BinDir;
using testing::RunCommand;
using testing::ShellQuote;

std::string Orchestrator() { return ShellQuote((BinDir() / "orchestrator").string()); }

class OpsCliTest : public testing::PgTest {
 protected:
  void SetUp() override {
    PgTest::SetUp();
    if (IsSkipped() || HasFailure()) return;
    MigrateSchema();
    if (HasFatalFailure()) return;
  }

  void TearDown() override {
    if (!queues_.empty()) {
      testing::RawAmqp raw(testing::BrokerUrl());
      for (const auto& q : queues_) {
        raw.DeleteQueue(q);
        raw.DeleteExchange(q);
      }
    }
    PgTest::TearDown();
  }

  std::map<std::string, std::string> Env() const {
    std::map<std::string, std::string> env{{"CELERIAC_DATABASE_URL", SchemaUrl()},
                                           {"CELERIAC_LOG_LEVEL", "warn"}};
    if (!testing::BrokerUrl().empty()) env["CELERIAC_BROKER_URL"] = testing::BrokerUrl();
    return env;
  }

  // Runs an ops command; stdout only (stderr dropped), for --json.
  testing::CommandResult Stdout(const std::string& args) {
    return RunCommand(Orchestrator() + " " + args + " 2>/dev/null", Env());
  }
  testing::CommandResult Run(const std::string& args) {
    return RunCommand(Orchestrator() + " " + args, Env());
  }

  // A queue name of this test, deleted with its exchange in TearDown; needs the broker.
  std::string Queue(const std::string& suffix) {
    const std::string name = "t-" + NewUuid4() + "-" + suffix;
    queues_.push_back(name);
    return name;
  }

  bool NeedBroker() {
    if (!testing::BrokerUrl().empty()) return true;
    if (testing::ServicesRequired()) {
      ADD_FAILURE() << "CELERIAC_BROKER_URL is not set: ./dev up; eval \"$(./dev env)\"";
    }
    return false;
  }

  int64_t WriteDeadLetter(const std::string& queue, const std::string& task,
                          const std::string& error_class) {
    DeadLetter letter;
    letter.queue = queue;
    letter.task_name = task;
    const std::string id = NewUuid4();
    letter.task_id = id;
    letter.properties.content_type = "application/json";
    letter.properties.content_encoding = "utf-8";
    letter.properties.correlation_id = id;
    letter.properties.headers = json{{"lang", "py"}, {"task", task}, {"id", id}, {"retries", 3},
                                     {"root_id", id}};
    letter.body = R"([[1], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}])";
    letter.error_class = error_class;
    letter.error_message = "it broke";
    PgDeadLetterStore store(pool());
    auto written = store.Write(letter);
    EXPECT_TRUE(written.ok()) << written.error().message();
    return written.ok() ? *written : -1;
  }

  int64_t ReplayCount(int64_t id) {
    auto n = pool().Transact<int64_t>([&](pqxx::transaction_base& tx) -> Result<int64_t> {
      return tx.exec_params1("SELECT replay_count FROM dead_letters WHERE id = $1", id)[0]
          .as<int64_t>();
    });
    return n.ok() ? *n : -1;
  }

 private:
  std::vector<std::string> queues_;
};

TEST_F(OpsCliTest, RunsJsonListsAndFilters) {
  Exec(R"(
    INSERT INTO crawl_runs (id, crawl_task_id, celery_task_id, trigger, status) VALUES
      (1, 1, 'a', 'beat', 'succeeded'), (2, 2, 'b', 'bff', 'running'), (3, 1, 'c', 'run-now', 'pending');
    INSERT INTO extraction_jobs (run_id, crawl_config_id, config_version, data_source_id,
                                 celery_task_id) VALUES (3, 10, 1, 1, 'j');
  )");
  auto all = Stdout("runs --json");
  ASSERT_EQ(all.exit_code, 0) << all.output;
  const auto doc = json::parse(all.output, nullptr, false);
  ASSERT_FALSE(doc.is_discarded()) << "one JSON document on stdout: " << all.output;
  ASSERT_EQ(doc["runs"].size(), 3u);
  EXPECT_EQ(doc["runs"][0]["id"], 3) << "newest first";

  auto filtered = Stdout("runs --crawl-task 1 --status pending --json");
  ASSERT_EQ(filtered.exit_code, 0) << filtered.output;
  const auto f = json::parse(filtered.output);
  ASSERT_EQ(f["runs"].size(), 1u);
  EXPECT_EQ(f["runs"][0]["celery_task_id"], "c");

  auto show = Stdout("runs show 3 --json");
  ASSERT_EQ(show.exit_code, 0) << show.output;
  const auto s = json::parse(show.output);
  EXPECT_EQ(s["id"], 3);
  ASSERT_EQ(s["jobs"].size(), 1u);
  EXPECT_EQ(s["jobs"][0]["crawl_config_id"], 10);

  auto table = Run("runs --trigger beat");
  ASSERT_EQ(table.exit_code, 0) << table.output;
  EXPECT_NE(table.output.find("STATUS"), std::string::npos) << table.output;
  EXPECT_NE(table.output.find("succeeded"), std::string::npos) << table.output;
  EXPECT_EQ(table.output.find("running"), std::string::npos) << table.output;

  auto missing = Run("runs show 99");
  EXPECT_EQ(missing.exit_code, 1) << missing.output;
  EXPECT_NE(missing.output.find("run 99 does not exist"), std::string::npos) << missing.output;
}

TEST_F(OpsCliTest, RunsShowPrintsErrorCountsRequestsJobsAndHosts) {
  Exec(R"(
    INSERT INTO crawl_runs (id, crawl_task_id, celery_task_id, trigger, status, pages, errors,
                            error_counts, started_at)
      VALUES (5, 1, 'c-5', 'run-now', 'running', 40, 4, '{"Download": 3, "RateLimit": 1}',
              now() - interval '2 minutes'),
             (6, NULL, 'c-6', 'bff', 'pending', 0, 0, '{}', NULL);
    INSERT INTO extraction_jobs (id, run_id, crawl_config_id, config_version, data_source_id,
                                 celery_task_id, status, pages, errors, error_counts,
                                 requests_open, requests_total, requests_failed)
      VALUES (50, 5, 10, 1, 1, 'e-50', 'running', 40, 4, '{"Download": 3, "RateLimit": 1}',
              3, 9, 1);
    INSERT INTO crawl_hosts (run_id, host, robots_status, robots_txt, crawl_delay_ms, state,
                             delay_ms, requests, errors, rate_limited)
      VALUES (5, 'https://shop.example', 200, 'User-agent: *', 2000, 'backing_off', 4000, 30,
              4, 1);
    INSERT INTO crawl_requests (job_id, fingerprint, url, page_type, state) VALUES
      (50, 'f1', 'https://shop.example/1', 'list', 'pending'),
      (50, 'f2', 'https://shop.example/2', 'item', 'done'),
      (50, 'f3', 'https://shop.example/3', 'item', 'failed');
  )");
  auto shown = Run("runs show 5");
  ASSERT_EQ(shown.exit_code, 0) << shown.output;
  for (const std::string expected : {
           "4 (Download 3, RateLimit 1)",
           "1 pending, 0 leased, 1 done, 1 failed, 0 skipped",
           "REQUESTS OPEN/TOTAL/FAILED",
           "3/9/1",
           "HOST",
           "https://shop.example",
           "backing_off",
           "200 13 B",  // robots.txt status and length
       }) {
    EXPECT_NE(shown.output.find(expected), std::string::npos) << expected << " in\n"
                                                              << shown.output;
  }
  EXPECT_EQ(shown.output.find("User-agent"), std::string::npos) << "never the robots.txt text";

  auto json_shown = Stdout("runs show 5 --json");
  ASSERT_EQ(json_shown.exit_code, 0) << json_shown.output;
  const auto doc = json::parse(json_shown.output);
  EXPECT_EQ(doc["error_counts"]["Download"], 3);
  EXPECT_EQ(doc["requests"]["done"], 1);
  ASSERT_EQ(doc["hosts"].size(), 1u);
  EXPECT_EQ(doc["hosts"][0]["robots_txt_bytes"], 13);
  EXPECT_EQ(doc["jobs"][0]["requests_total"], 9);

  Exec("INSERT INTO crawl_hosts (run_id, host, requests) VALUES (5, 'https://quiet.example', 1)");
  auto one_host = Run("runs show 5 --hosts 1");
  ASSERT_EQ(one_host.exit_code, 0) << one_host.output;
  EXPECT_NE(one_host.output.find("https://shop.example"), std::string::npos) << one_host.output;
  EXPECT_EQ(one_host.output.find("quiet.example"), std::string::npos) << one_host.output;
  EXPECT_NE(one_host.output.find("1 of 2 hosts shown"), std::string::npos) << one_host.output;

  auto listed = Run("runs");
  ASSERT_EQ(listed.exit_code, 0) << listed.output;
  EXPECT_NE(listed.output.find("Download 3, RateLimit 1"), std::string::npos) << listed.output;
  auto bare = Run("runs show 6");
  ASSERT_EQ(bare.exit_code, 0) << bare.output;
  EXPECT_NE(bare.output.find("no extraction jobs"), std::string::npos) << bare.output;
  EXPECT_NE(bare.output.find("no hosts"), std::string::npos) << bare.output;
}

TEST_F(OpsCliTest, DlqListJsonFiltersAndShowPrintsTheMessage) {
  const int64_t a = WriteDeadLetter("celery", "t.a", "NotRegistered");
  const int64_t b = WriteDeadLetter("celery", "t.b", "TypeError");
  WriteDeadLetter("extraction_queue", "t.c", "NotRegistered");

  auto listed = Stdout("dlq list --queue celery --error-class NotRegistered --json");
  ASSERT_EQ(listed.exit_code, 0) << listed.output;
  const auto doc = json::parse(listed.output, nullptr, false);
  ASSERT_FALSE(doc.is_discarded()) << listed.output;
  ASSERT_EQ(doc["dead_letters"].size(), 1u) << listed.output;
  EXPECT_EQ(doc["dead_letters"][0]["id"], a);
  EXPECT_EQ(doc["dead_letters"][0]["task_name"], "t.a");

  auto since = Stdout("dlq list --since 2000-01-01T00:00:00Z --task t.b --json");
  ASSERT_EQ(since.exit_code, 0) << since.output;
  ASSERT_EQ(json::parse(since.output)["dead_letters"].size(), 1u);

  auto table = Run("dlq list --queue celery");
  ASSERT_EQ(table.exit_code, 0) << table.output;
  EXPECT_NE(table.output.find("ERROR"), std::string::npos) << table.output;
  EXPECT_NE(table.output.find("TypeError"), std::string::npos) << table.output;

  auto show = Run("dlq show " + std::to_string(b));
  ASSERT_EQ(show.exit_code, 0) << show.output;
  EXPECT_NE(show.output.find("headers:"), std::string::npos) << show.output;
  EXPECT_NE(show.output.find("\"retries\": 3"), std::string::npos) << show.output;
  EXPECT_NE(show.output.find("[[1], {}, {\"callbacks\""), std::string::npos) << show.output;
  auto show_json = Stdout("dlq show " + std::to_string(b) + " --json");
  ASSERT_EQ(show_json.exit_code, 0) << show_json.output;
  EXPECT_EQ(json::parse(show_json.output)["body"].get<std::string>().substr(0, 5), "[[1],");
}

TEST_F(OpsCliTest, BadTimeOptionsExitTwoNamingTheOption) {
  auto bad = Run("dlq list --since yesterday");
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("--since"), std::string::npos) << bad.output;
  EXPECT_NE(bad.output.find("yesterday"), std::string::npos) << bad.output;

  auto until = Run("dlq replay --until 2024-13-01 --dry-run");
  EXPECT_EQ(until.exit_code, 2) << until.output;
  EXPECT_NE(until.output.find("--until"), std::string::npos) << until.output;

  auto limit = Run("dlq list --limit -1");
  EXPECT_EQ(limit.exit_code, 2) << limit.output;
  EXPECT_NE(limit.output.find("--limit"), std::string::npos) << limit.output;

  auto nothing = Run("dlq replay");
  EXPECT_EQ(nothing.exit_code, 2) << nothing.output;
  EXPECT_NE(nothing.output.find("--all"), std::string::npos) << nothing.output;
  auto purge_nothing = Run("dlq purge --dry-run");
  EXPECT_EQ(purge_nothing.exit_code, 2) << purge_nothing.output;
}

TEST_F(OpsCliTest, DlqReplayDryRunChangesNothing) {
  const int64_t id = WriteDeadLetter("celery", "t.a", "NotRegistered");
  auto dry = Run("dlq replay " + std::to_string(id) + " --dry-run");
  ASSERT_EQ(dry.exit_code, 0) << dry.output;
  EXPECT_NE(dry.output.find("would_replay"), std::string::npos) << dry.output;
  EXPECT_NE(dry.output.find("nothing published"), std::string::npos) << dry.output;
  EXPECT_EQ(ReplayCount(id), 0);

  auto dry_json = Stdout("dlq replay --all --dry-run --json");
  ASSERT_EQ(dry_json.exit_code, 0) << dry_json.output;
  const auto doc = json::parse(dry_json.output);
  EXPECT_EQ(doc["dry_run"], true);
  ASSERT_EQ(doc["outcomes"].size(), 1u);
  EXPECT_EQ(doc["outcomes"][0]["status"], "would_replay");

  auto purge = Stdout("dlq purge --queue celery --dry-run --json");
  ASSERT_EQ(purge.exit_code, 0) << purge.output;
  EXPECT_EQ(json::parse(purge.output)["ids"], json::array({id}));
  auto listed = Stdout("dlq list --json");
  EXPECT_EQ(json::parse(listed.output)["dead_letters"].size(), 1u) << "nothing purged";
}

TEST_F(OpsCliTest, DlqReplayPublishesToRabbitMqOnceThenPurge) {
  if (!NeedBroker()) GTEST_SKIP() << "CELERIAC_BROKER_URL not set";
  const std::string queue = Queue("dlq");
  const int64_t id = WriteDeadLetter(queue, "t.a", "NotRegistered");
  auto replayed = Stdout("dlq replay " + std::to_string(id) + " --json");
  ASSERT_EQ(replayed.exit_code, 0) << replayed.output;
  EXPECT_EQ(json::parse(replayed.output)["outcomes"][0]["status"], "replayed");
  EXPECT_EQ(ReplayCount(id), 1);
  testing::RawAmqp raw(testing::BrokerUrl());
  ASSERT_TRUE(raw.ok()) << raw.error();
  EXPECT_EQ(raw.MessageCount(queue), 1);

  auto again = Run("dlq replay " + std::to_string(id));
  EXPECT_EQ(again.exit_code, 1) << again.output;
  EXPECT_NE(again.output.find("already_replayed"), std::string::npos) << again.output;
  EXPECT_EQ(raw.MessageCount(queue), 1);

  auto purged = Run("dlq purge " + std::to_string(id));
  ASSERT_EQ(purged.exit_code, 0) << purged.output;
  EXPECT_NE(purged.output.find("purged 1 dead letter"), std::string::npos) << purged.output;
  auto forced = Run("dlq replay " + std::to_string(id) + " --force");
  EXPECT_EQ(forced.exit_code, 1) << forced.output;
  EXPECT_NE(forced.output.find("purged"), std::string::npos) << forced.output;
  EXPECT_EQ(raw.MessageCount(queue), 1);
}

TEST_F(OpsCliTest, RunNowWaitSucceedsWhenNothingIsToDispatch) {
  if (!NeedBroker()) GTEST_SKIP() << "CELERIAC_BROKER_URL not set";
  Exec(R"(
    INSERT INTO data_sources (id, name) VALUES (1, 'no config yet');
    INSERT INTO crawl_tasks (id, name, data_source_ids) VALUES (5, 'empty', '{1}');
  )");
  const std::string queue = Queue("orch");
  // A worker on the test's own queue, stopped (SIGTERM, warm shutdown) once run-now returns.
  const std::string script =
      Orchestrator() + " worker -Q " + ShellQuote(queue) + " -c 1 >/dev/null 2>&1 & worker=$!; " +
      Orchestrator() + " run-now 5 -Q " + ShellQuote(queue) +
      " --wait --timeout 30 --json 2>/dev/null; rc=$?; kill -TERM $worker; wait $worker; "
      "exit $rc";
  auto r = RunCommand(script, Env());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto doc = json::parse(r.output, nullptr, false);
  ASSERT_FALSE(doc.is_discarded()) << r.output;
  EXPECT_EQ(doc["run"]["status"], "succeeded") << r.output;
  EXPECT_EQ(doc["run"]["trigger"], "run-now");
  EXPECT_EQ(doc["run"]["sources_skipped"][0]["reason"], "no_active_config");
  EXPECT_EQ(doc["timed_out"], false);

  // Human form: ids first, progress on stderr, the final status.
  const std::string human =
      Orchestrator() + " worker -Q " + ShellQuote(queue) + " -c 1 >/dev/null 2>&1 & worker=$!; " +
      Orchestrator() + " run-now 5 -Q " + ShellQuote(queue) +
      " --wait --timeout 30; rc=$?; kill -TERM $worker; wait $worker; exit $rc";
  auto h = RunCommand(human, Env());
  ASSERT_EQ(h.exit_code, 0) << h.output;
  EXPECT_NE(h.output.find("task id"), std::string::npos) << h.output;
  EXPECT_NE(h.output.find("run id"), std::string::npos) << h.output;
  EXPECT_NE(h.output.find("succeeded"), std::string::npos) << h.output;

  // Refusals: an unknown and a disabled crawl task, nothing published.
  Exec("INSERT INTO crawl_tasks (id, name, data_source_ids, enabled) VALUES (6, 'off', '{1}', false)");
  auto off = Run("run-now 6 -Q " + ShellQuote(queue));
  EXPECT_EQ(off.exit_code, 1) << off.output;
  EXPECT_NE(off.output.find("disabled"), std::string::npos) << off.output;
  auto unknown = Run("run-now 404 -Q " + ShellQuote(queue));
  EXPECT_EQ(unknown.exit_code, 1) << unknown.output;
  EXPECT_NE(unknown.output.find("does not exist"), std::string::npos) << unknown.output;
}

TEST_F(OpsCliTest, RunNowWaitTimesOutWithExitThree) {
  if (!NeedBroker()) GTEST_SKIP() << "CELERIAC_BROKER_URL not set";
  Exec(R"(
    INSERT INTO data_sources (id, name) VALUES (1, 'shop');
    INSERT INTO crawl_tasks (id, name, data_source_ids) VALUES (5, 'shop', '{1}');
  )");
  // No worker on this queue: the run stays pending.
  const std::string queue = Queue("idle");
  auto r = Run("run-now 5 -Q " + ShellQuote(queue) + " --wait --timeout 1");
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("still pending"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace celeriac
