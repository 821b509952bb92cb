// Retention against the real Postgres (state/retention.hpp): old rows of every kind go, live
// ones stay (runs in progress, runs with a job still open, fresh runs, pending dead letters and
// the requests their replay needs, unfinished task states); a big run is deleted in bounded
// batches; a job added to a pruned run brings it back; and celery.backend_cleanup does it all
// when sent to a real `orchestrator worker` through RabbitMQ, with the ages of [retention].

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/base/ids.hpp"
#include "orchestrator/tasks/retention_settings.hpp"
#include "orchestrator/tasks/backend_cleanup.hpp"
#include "state/crawl_store.hpp"
#include "state/retention.hpp"
#include "tests/support/amqp_test.hpp"
#include "tests/support/paths.hpp"
#include "tests/support/pg_test.hpp"
#include "tests/support/process.hpp"

namespace celeriac {
namespace {

using json = nlohmann::ordered_json;
using testing::RunCommand;
using testing::ShellQuote;

class RetentionTest : public testing::PgTest {
 protected:
  void SetUp() override {
    PgTest::SetUp();
    if (IsSkipped() || HasFailure()) return;
    MigrateSchema();
    if (HasFatalFailure()) return;
  }

  void TearDown() override {
    if (!queue_.empty()) {
      testing::RawAmqp raw(testing::BrokerUrl());
      raw.DeleteQueue(queue_);
      raw.DeleteExchange(queue_);
    }
    PgTest::TearDown();
  }

  std::string Text(const std::string& sql) {
    auto v = pool().Transact<std::string>([&](pqxx::transaction_base& tx) -> Result<std::string> {
      const auto r = tx.exec1(sql);
      return r[0].is_null() ? std::string("null") : r[0].as<std::string>();
    });
    EXPECT_TRUE(v.ok()) << (v.ok() ? "" : v.error().message());
    return v.ok() ? *v : "";
  }
  int64_t Count(const std::string& sql) { return std::stoll(Text(sql)); }

  // Rows of every kind, old and fresh, live and done with (ages as the defaults:
  // requests and hosts 7 days after their run ended, task results 1 day, dead letters 30 days
  // after their purge or last replay).
  void Seed() {
    Exec(R"SQL(
      INSERT INTO crawl_runs (id, celery_task_id, trigger, status, created_at, started_at,
                              finished_at) VALUES
        (1, 'old-done',      'bff', 'succeeded', now() - interval '9 days',
            now() - interval '9 days', now() - interval '8 days'),
        (2, 'fresh-done',    'bff', 'succeeded', now() - interval '2 days',
            now() - interval '2 days', now() - interval '1 day'),
        (3, 'old-running',   'bff', 'running',   now() - interval '30 days',
            now() - interval '30 days', NULL),
        (4, 'old-job-open',  'bff', 'failed',    now() - interval '12 days',
            now() - interval '12 days', now() - interval '10 days'),
        (5, 'old-aborted',   'bff', 'aborted',   now() - interval '12 days',
            now() - interval '12 days', now() - interval '10 days'),
        (6, 'old-pending',   'run-now', 'pending', now() - interval '40 days', NULL, NULL);
      SELECT setval('crawl_runs_id_seq', 100);
      INSERT INTO extraction_jobs (id, run_id, crawl_config_id, config_version, data_source_id,
                                   celery_task_id, status) VALUES
        (11, 1, 1, 1, 1, 'j11', 'succeeded'), (12, 1, 2, 1, 1, 'j12', 'failed'),
        (21, 2, 1, 1, 1, 'j21', 'succeeded'),
        (31, 3, 1, 1, 1, 'j31', 'running'),
        (41, 4, 1, 1, 1, 'j41', 'running'), (42, 4, 2, 1, 1, 'j42', 'failed'),
        (51, 5, 1, 1, 1, 'j51', 'aborted');
      SELECT setval('extraction_jobs_id_seq', 100);
      -- Requests: run 1 has 5 plain ones in each job plus x (a pending refetch letter names it),
      -- y (one purged long ago does) and z (one replayed lately does); run 5 has 2,500.
      INSERT INTO crawl_requests (job_id, fingerprint, url, page_type, state, created_at,
                                  finished_at)
        SELECT j, 'f' || i, 'https://shop.test/' || i, 'product', 'done',
               now() - interval '9 days', now() - interval '9 days'
        FROM unnest(ARRAY[11, 12, 21, 31, 41, 42]) j, generate_series(1, 5) i;
      INSERT INTO crawl_requests (job_id, fingerprint, url, page_type, state, created_at)
        VALUES (12, 'x', 'https://shop.test/x', 'product', 'failed', now() - interval '9 days'),
               (12, 'y', 'https://shop.test/y', 'product', 'failed', now() - interval '9 days'),
               (12, 'z', 'https://shop.test/z', 'product', 'failed', now() - interval '9 days');
      INSERT INTO crawl_requests (job_id, fingerprint, url, page_type, state, created_at)
        SELECT 51, 'big' || i, 'https://big.test/' || i, 'product', 'skipped',
               now() - interval '11 days'
        FROM generate_series(1, 2500) i;
      INSERT INTO crawl_hosts (run_id, host, robots_txt) VALUES
        (1, 'https://shop.test', 'User-agent: *'), (1, 'https://cdn.shop.test', NULL),
        (2, 'https://shop.test', NULL), (3, 'https://shop.test', NULL),
        (4, 'https://shop.test', NULL), (5, 'https://big.test', NULL),
        (5, 'https://a.big.test', NULL), (5, 'https://b.big.test', NULL);

      INSERT INTO task_results (task_id, task_name, status, created_at, updated_at, date_done)
      VALUES
        ('old-success',  'celeriac.ping', 'SUCCESS', now() - interval '3 days',
         now() - interval '2 days', now() - interval '2 days'),
        ('old-failure',  'celeriac.fail', 'FAILURE', now() - interval '3 days',
         now() - interval '3 days', now() - interval '3 days'),
        ('old-revoked',  'celeriac.ping', 'REVOKED', now() - interval '25 hours',
         now() - interval '25 hours', now() - interval '25 hours'),
        ('fresh-success', 'celeriac.ping', 'SUCCESS', now() - interval '1 hour',
         now() - interval '1 hour', now() - interval '1 hour'),
        ('old-started',  'celeriac.sleep', 'STARTED', now() - interval '5 days',
         now() - interval '5 days', NULL),
        ('old-retry',    'celeriac.flaky', 'RETRY', now() - interval '5 days',
         now() - interval '5 days', NULL);
    )SQL");
    const auto letter = [&](const std::string& id, const std::string& task,
                            const std::string& context, const std::string& replayed,
                            const std::string& purged) {
      Exec("INSERT INTO dead_letters (task_id, queue, task_name, body, error_class, "
           "error_message, error_context, created_at, replay_count, replayed_at, purged_at) "
           "VALUES ('" + id + "', 'q', '" + task + "', '\\x5b5d', 'E', 'm', '" + context +
           "', now() - interval '60 days', " + (replayed == "NULL" ? "0" : "1") + ", " +
           replayed + ", " + purged + ")");
    };
    const auto request = [&](const char* fp) {
      return Text(std::string("SELECT id FROM crawl_requests WHERE fingerprint = '") + fp + "'");
    };
    letter("pending-old", "t.a", "{}", "NULL", "NULL");
    letter("purged-31d", "t.a", "{}", "NULL", "now() - interval '31 days'");
    letter("purged-1d", "t.a", "{}", "NULL", "now() - interval '1 day'");
    letter("replayed-40d", "t.a", "{}", "now() - interval '40 days'", "NULL");
    letter("replayed-2d", "t.a", "{}", "now() - interval '2 days'", "NULL");
    letter("replayed-40d-purged-2d", "t.a", "{}", "now() - interval '40 days'",
           "now() - interval '2 days'");
    letter("refetch-x-pending", state::kRefetchTask, R"({"request_id": )" + request("x") + "}",
           "NULL", "NULL");
    letter("refetch-y-purged-31d", state::kRefetchTask,
           R"({"request_id": )" + request("y") + "}", "NULL", "now() - interval '31 days'");
    letter("refetch-z-replayed-2d", state::kRefetchTask,
           R"({"request_id": )" + request("z") + "}", "now() - interval '2 days'", "NULL");
  }

  state::RetentionOptions Defaults() {
    state::RetentionOptions o;
    o.ages = orchestrator::RetentionAgesOf(orchestrator::RetentionSettings{});
    return o;
  }

  state::RetentionCounts Delete(const state::RetentionOptions& o) {
    auto r = state::DeleteExpired(pool(), SystemClock::Instance().Now(), o);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message());
    return r.ok() ? *r : state::RetentionCounts{};
  }

  int64_t RequestsOfRun(int run) {
    return Count("SELECT count(*) FROM crawl_requests q JOIN extraction_jobs j ON j.id = "
                 "q.job_id WHERE j.run_id = " + std::to_string(run));
  }
  int64_t HostsOfRun(int run) {
    return Count("SELECT count(*) FROM crawl_hosts WHERE run_id = " + std::to_string(run));
  }
  std::string Rows(const std::string& column, const std::string& table) {
    return Text("SELECT string_agg(" + column + ", ',' ORDER BY " + column + ") FROM " + table);
  }

  std::string queue_;
};

TEST_F(RetentionTest, OldRowsGoAndLiveOnesStay) {
  Seed();
  const auto counts = Delete(Defaults());
  EXPECT_EQ(counts.crawl_requests, 10 + 1 + 2500) << "run 1: 10 plain and y; run 5: all";
  EXPECT_EQ(counts.crawl_hosts, 2 + 3);
  EXPECT_EQ(counts.task_results, 3);
  EXPECT_EQ(counts.dead_letters, 3);
  EXPECT_TRUE(counts.complete);

  // Requests: run 1 keeps the two a replay may still read (x: its letter is pending; z: its
  // letter was replayed, and may be again with --force); fresh, running and open runs keep
  // theirs.
  EXPECT_EQ(Rows("fingerprint", "crawl_requests q JOIN extraction_jobs j ON j.id = q.job_id "
                                "WHERE j.run_id = 1"),
            "x,z");
  EXPECT_EQ(RequestsOfRun(2), 5) << "finished a day ago";
  EXPECT_EQ(RequestsOfRun(3), 5) << "still running";
  EXPECT_EQ(RequestsOfRun(4), 10) << "finished, but a job is still running";
  EXPECT_EQ(RequestsOfRun(5), 0);
  EXPECT_EQ(HostsOfRun(1), 0);
  EXPECT_EQ(HostsOfRun(2), 1);
  EXPECT_EQ(HostsOfRun(3), 1);
  EXPECT_EQ(HostsOfRun(4), 1);
  EXPECT_EQ(HostsOfRun(5), 0);
  // Runs, jobs and their counters stay; a run wholly pruned is marked.
  EXPECT_EQ(Count("SELECT count(*) FROM crawl_runs"), 6);
  EXPECT_EQ(Count("SELECT count(*) FROM extraction_jobs"), 7);
  EXPECT_EQ(Rows("id::text", "crawl_runs WHERE requests_pruned_at IS NOT NULL"), "5")
      << "run 1 still has requests a replay needs";
  EXPECT_EQ(Rows("id::text", "crawl_runs WHERE hosts_pruned_at IS NOT NULL"), "1,5");

  EXPECT_EQ(Rows("task_id", "task_results"), "fresh-success,old-retry,old-started");
  EXPECT_EQ(Rows("task_id", "dead_letters"),
            "pending-old,purged-1d,refetch-x-pending,refetch-z-replayed-2d,replayed-2d,"
            "replayed-40d-purged-2d");

  // Again: nothing left to delete.
  const auto again = Delete(Defaults());
  EXPECT_EQ(again.total(), 0);
  EXPECT_TRUE(again.complete);

  // Once the letter naming x is purged, x may go (the letter stays 30 days).
  Exec("UPDATE dead_letters SET purged_at = now() WHERE task_id = 'refetch-x-pending'");
  const auto third = Delete(Defaults());
  EXPECT_EQ(third.crawl_requests, 1);
  EXPECT_EQ(third.dead_letters, 0);
  EXPECT_EQ(Rows("fingerprint", "crawl_requests q JOIN extraction_jobs j ON j.id = q.job_id "
                                "WHERE j.run_id = 1"),
            "z");
}

TEST_F(RetentionTest, AnAgeOfZeroKeepsThatKindForever) {
  Seed();
  state::RetentionOptions keep;  // every age 0
  EXPECT_EQ(Delete(keep).total(), 0);
  auto only_results = keep;
  only_results.ages.task_results = std::chrono::hours(2);
  const auto c = Delete(only_results);
  EXPECT_EQ(c.task_results, 3);
  EXPECT_EQ(c.total(), 3);
  EXPECT_EQ(RequestsOfRun(5), 2500);
  EXPECT_EQ(Count("SELECT count(*) FROM dead_letters"), 9);
}

TEST_F(RetentionTest, ABigRunGoesInBoundedBatchesAndAStopIsHonoured) {
  Seed();
  auto o = Defaults();
  o.ages = {};
  o.ages.crawl_requests = std::chrono::hours(7 * 24);
  o.batch = 1000;
  std::vector<int64_t> left;  // run 5's requests before each transaction
  o.stop = [&] {
    left.push_back(RequestsOfRun(5));
    return false;
  };
  Delete(o);
  // Run 1 (one transaction: fewer than a batch), then run 5 a batch at a time.
  EXPECT_EQ(left, (std::vector<int64_t>{2500, 2500, 1500, 500, 0}));

  // A stop between two transactions: what was deleted stays deleted, and the run says so.
  Exec("UPDATE crawl_runs SET requests_pruned_at = NULL WHERE id = 5");
  Exec("INSERT INTO crawl_requests (job_id, fingerprint, url, page_type, state) "
       "SELECT 51, 'again' || i, 'https://big.test/again' || i, 'product', 'done' "
       "FROM generate_series(1, 2500) i");
  int asks = 0;
  o.stop = [&] { return ++asks > 2; };  // run 1 (nothing left to delete), a batch of run 5
  const auto stopped = Delete(o);
  EXPECT_FALSE(stopped.complete);
  EXPECT_EQ(stopped.crawl_requests, 1000);
  EXPECT_EQ(RequestsOfRun(5), 1500);
}

TEST_F(RetentionTest, AJobAddedToAPrunedRunBringsItBack) {
  Seed();
  Exec("INSERT INTO data_sources (id, name) VALUES (1, 'shop');"
       "INSERT INTO crawl_configs (id, data_source_id, version, status, config) "
       "VALUES (7, 1, 1, 'active', '{}')");
  Delete(Defaults());
  ASSERT_EQ(Text("SELECT requests_pruned_at IS NOT NULL FROM crawl_runs WHERE id = 5"), "t");
  // An extract message naming the old run (a Python caller's extract(7, run_id=5)).
  state::CrawlStore store(pool(), "test-extractor");
  state::ExtractRequest req;
  req.crawl_config_id = 7;
  req.run_id = 5;
  req.celery_task_id = NewUuid4();
  auto job = store.ClaimJob(req);
  ASSERT_TRUE(job.ok()) << job.error().message();
  EXPECT_EQ(Text("SELECT (requests_pruned_at, hosts_pruned_at) IS NULL FROM crawl_runs "
                 "WHERE id = 5"),
            "t");
  Exec("INSERT INTO crawl_requests (job_id, fingerprint, url, page_type) VALUES (" +
       std::to_string(job->job_id) + ", 'late', 'https://big.test/late', 'product')");
  EXPECT_EQ(Delete(Defaults()).crawl_requests, 0) << "the run has a pending job again";
  EXPECT_EQ(RequestsOfRun(5), 1);
}

TEST_F(RetentionTest, TheWorkerRunsBackendCleanupWhenSent) {
  const std::string broker = testing::BrokerUrl();
  if (broker.empty()) {
    if (testing::ServicesRequired()) FAIL() << "CELERIAC_BROKER_URL is not set";
    GTEST_SKIP() << "CELERIAC_BROKER_URL not set";
  }
  Seed();
  queue_ = "t-" + NewUuid4() + "-cleanup";
  const std::string orchestrator = ShellQuote((testing::BinDir() / "orchestrator").string());
  // What a Python beat or `celery call celery.backend_cleanup` sends (send-task publishes as
  // Python's send_task does), to a real worker; dead letters kept forever by configuration.
  const std::string log = ShellQuote(::testing::TempDir() + "celeriac-cleanup-" + schema_ + ".log");
  const std::string script =
      orchestrator + " worker -Q " + ShellQuote(queue_) + " -c 1 >" + log + " 2>&1 & w=$!; " +
      orchestrator + " send-task celery.backend_cleanup -Q " + ShellQuote(queue_) +
      " --wait --timeout 60 2>/dev/null; rc=$?; kill -TERM $w; wait $w; "
      "grep -h 'backend_cleanup: deleted' " + log + "; rm -f " + log + "; exit $rc";
  auto r = RunCommand(script,
                      {{"CELERIAC_DATABASE_URL", SchemaUrl()},
                       {"CELERIAC_BROKER_URL", broker},
                       {"CELERIAC_LOG_LEVEL", "info"},
                       {"CELERIAC_RETENTION_DEAD_LETTERS_HOURS", "0"}});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // Lines: the task id, the reply, the worker's log line.
  std::vector<std::string> lines;
  for (size_t at = 0, nl; at < r.output.size(); at = nl + 1) {
    nl = r.output.find('\n', at);
    if (nl == std::string::npos) nl = r.output.size();
    lines.push_back(r.output.substr(at, nl - at));
  }
  ASSERT_GE(lines.size(), 3u) << r.output;
  const auto reply = json::parse(lines[1], nullptr, false);
  ASSERT_FALSE(reply.is_discarded()) << r.output;
  EXPECT_EQ(reply["status"], "SUCCESS") << r.output;
  const auto& result = reply["result"];
  EXPECT_EQ(result["deleted"],
            json::parse(R"({"crawl_requests": 2511, "crawl_hosts": 5, "task_results": 3,
                            "dead_letters": 0})"))
      << r.output;
  EXPECT_EQ(result["complete"], true);
  EXPECT_EQ(result["max_age_s"]["dead_letters"], 0) << "retention.dead_letters_hours = 0";
  EXPECT_EQ(result["max_age_s"]["task_results"], 86400);
  EXPECT_NE(lines[2].find("backend_cleanup: deleted 2511 crawl_requests, 5 crawl_hosts, "
                          "3 task_results, 0 dead_letters"),
            std::string::npos)
      << r.output;
  EXPECT_EQ(RequestsOfRun(5), 0);
  EXPECT_EQ(RequestsOfRun(3), 5);
  EXPECT_EQ(Count("SELECT count(*) FROM dead_letters"), 9);
  // Its own state is recorded like any task's (and kept: it is fresh).
  EXPECT_EQ(Text("SELECT status FROM task_results WHERE task_name = 'celery.backend_cleanup'"),
            "SUCCESS");
}

}  // namespace
}  // namespace celeriac
