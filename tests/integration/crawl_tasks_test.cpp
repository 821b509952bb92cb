// execute_crawl_task and trigger_site_analysis against a real Postgres: the latest active config
// per data source is dispatched, sources without one are skipped, a redelivery creates nothing
// new, and errors carry the right retryable bit.

#include <gtest/gtest.h>

#include "core/broker/memory_broker.hpp"
#include "core/celery/codec.hpp"
#include "core/pg/migrations.hpp"
#include "migrations/migrations.hpp"
#include "orchestrator/tasks/crawl_tasks.hpp"
#include "schemas/schemas.hpp"
#include "tests/support/pg_test.hpp"

namespace celeriac::orchestrator {
namespace {

using json = nlohmann::ordered_json;

class FakeDiscovery final : public discovery::DiscoveryClient {
 public:
  Result<discovery::DiscoverResponse> Discover(const discovery::DiscoverRequest& r) override {
    calls.push_back(r);
    if (next_error) return *next_error;
    discovery::DiscoverResponse out;
    out.status = 202;
    out.analysis_id = "an-1";
    return out;
  }
  std::vector<discovery::DiscoverRequest> calls;
  std::optional<Error> next_error;
};

class CrawlTasksTest : public testing::PgTest {
 protected:
  void SetUp() override {
    PgTest::SetUp();
    if (IsSkipped() || HasFailure()) return;
    MigrateSchema();
    if (HasFatalFailure()) return;
    Exec(R"(
      INSERT INTO data_sources (id, name) VALUES (1, 'shop'), (2, 'blog'), (3, 'empty');
      INSERT INTO crawl_configs (id, data_source_id, version, status, config) VALUES
        (10, 1, 1, 'active', '{}'), (11, 1, 2, 'active', '{}'), (12, 1, 3, 'draft', '{}'),
        (20, 2, 1, 'inactive', '{}'),
        (30, 3, 4, 'active', '{}');
      INSERT INTO crawl_tasks (id, name, data_source_ids, enabled) VALUES
        (1, 'mixed', '{1,2,99,1,3}', true),
        (2, 'off', '{1}', false),
        (3, 'nothing', '{2}', true);
    )");
    ASSERT_TRUE(broker_.Connect().ok());
    tasks_ = std::make_unique<CrawlTasks>(pool(), broker_, discovery_, CrawlTaskOptions{});
  }

  celery::TaskMessage Request(json args, json custom = json::object()) {
    auto m = celery::NewTask(kExecuteCrawlTask, std::move(args), json::object());
    m.custom_headers = std::move(custom);
    return m;
  }

  TaskOutcome Run(const celery::TaskMessage& m) {
    std::atomic<bool> cancelled{false};
    TaskContext ctx(m, cancelled);
    return tasks_->ExecuteCrawlTask(ctx);
  }

  // Every message waiting on extraction_queue, decoded.
  std::vector<celery::TaskMessage> Extractions() {
    std::vector<celery::TaskMessage> out;
    std::mutex mutex;
    broker::ConsumerId id = 0;
    auto consumer = broker_.Consume({"extraction_queue", 0, ""}, [&](broker::Delivery&& d) {
      auto decoded = celery::DecodeTask(d.properties, d.body);
      std::lock_guard lock(mutex);
      if (decoded.ok()) out.push_back(decoded.message());
      (void)broker_.Ack(id, d.delivery_tag);
    });
    EXPECT_TRUE(consumer.ok());
    id = *consumer;
    for (int i = 0; i < 200 && broker_.QueueDepth("extraction_queue") > 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_TRUE(broker_.Cancel(id).ok());
    std::lock_guard lock(mutex);
    return out;
  }

  int64_t Count(const std::string& sql) {
    auto n = pool().Transact<int64_t>([&](pqxx::transaction_base& tx) -> Result<int64_t> {
      return tx.exec1(sql)[0].as<int64_t>();
    });
    EXPECT_TRUE(n.ok());
    return n.ok() ? *n : -1;
  }

  broker::MemoryBroker broker_;
  FakeDiscovery discovery_;
  std::unique_ptr<CrawlTasks> tasks_;
};

TEST_F(CrawlTasksTest, DispatchesTheLatestActiveConfigAndSkipsTheRest) {
  const auto request = Request(json::array({1}));
  const auto outcome = Run(request);
  ASSERT_TRUE(std::holds_alternative<Json>(outcome))
      << std::get<TaskError>(outcome).exception.ToJson().dump();
  const json result = std::get<Json>(outcome);
  auto schema = schemas::Get("tasks/orchestrator.tasks.execute_crawl_task.result");
  ASSERT_TRUE(schema.ok());
  const auto valid = (*schema)->Validate(nlohmann::json::parse(result.dump()));
  EXPECT_TRUE(valid.ok()) << valid.error().message();

  EXPECT_EQ(result["trigger"], "bff");
  ASSERT_EQ(result["dispatched"].size(), 2u) << result.dump();
  EXPECT_EQ(result["dispatched"][0]["crawl_config_id"], 11) << "highest active version";
  EXPECT_EQ(result["dispatched"][0]["config_version"], 2);
  EXPECT_EQ(result["dispatched"][1]["crawl_config_id"], 30);
  EXPECT_EQ(result["skipped"],
            json::parse(R"([{"data_source_id": 2, "reason": "no_active_config"},
                            {"data_source_id": 99, "reason": "data_source_not_found"}])"));

  const auto messages = Extractions();
  ASSERT_EQ(messages.size(), 2u);
  auto body_schema = schemas::Get("tasks/extractor.tasks.extract.body");
  ASSERT_TRUE(body_schema.ok());
  for (const auto& m : messages) {
    EXPECT_EQ(m.task, kExtractTask);
    EXPECT_EQ(m.parent_id, request.id);
    EXPECT_EQ(m.root_id, request.id);
    EXPECT_EQ(m.kwargs["run_id"], result["run_id"]);
    EXPECT_EQ(m.kwargs["crawl_task_id"], 1);
    const auto body = nlohmann::json::parse(json::array({m.args, m.kwargs, json::object()}).dump());
    const auto ok = (*body_schema)->Validate(body);
    EXPECT_TRUE(ok.ok()) << ok.error().message();
  }
  EXPECT_EQ(messages[0].args, json::array({11}));
  EXPECT_EQ(messages[0].id, result["dispatched"][0]["extract_task_id"]);
  EXPECT_EQ(Count("SELECT count(*) FROM crawl_runs WHERE status = 'running' AND configs_dispatched = 2"), 1);
  EXPECT_EQ(Count("SELECT count(*) FROM extraction_jobs WHERE published_at IS NOT NULL"), 2);
}

TEST_F(CrawlTasksTest, RedeliveryCreatesNoSecondRunOrMessages) {
  const auto request = Request(json::array({1}));
  const auto first = Run(request);
  ASSERT_TRUE(std::holds_alternative<Json>(first));
  ASSERT_EQ(Extractions().size(), 2u);
  // The same config set changes before the redelivery: the run keeps its first decision.
  Exec("UPDATE crawl_configs SET status = 'inactive' WHERE id = 30");
  const auto again = Run(request);
  ASSERT_TRUE(std::holds_alternative<Json>(again));
  EXPECT_EQ(std::get<Json>(again).dump(), std::get<Json>(first).dump());
  EXPECT_TRUE(Extractions().empty()) << "nothing published twice";
  EXPECT_EQ(Count("SELECT count(*) FROM crawl_runs"), 1);
  EXPECT_EQ(Count("SELECT count(*) FROM extraction_jobs"), 2);
}

TEST_F(CrawlTasksTest, RedeliveryPublishesWhatWasNeverConfirmed) {
  const auto request = Request(json::array({1}));
  ASSERT_TRUE(std::holds_alternative<Json>(Run(request)));
  const auto first = Extractions();
  ASSERT_EQ(first.size(), 2u);
  Exec("UPDATE extraction_jobs SET published_at = NULL WHERE crawl_config_id = 30");
  ASSERT_TRUE(std::holds_alternative<Json>(Run(request)));
  const auto second = Extractions();
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].id, first[1].id) << "the same extract task id, so the extractor sees one job";
}

TEST_F(CrawlTasksTest, UnknownAndDisabledTasksFailWithoutRetry) {
  for (int64_t id : {404, 2}) {
    const auto outcome = Run(Request(json::array({id})));
    ASSERT_TRUE(std::holds_alternative<TaskError>(outcome)) << id;
    const auto& err = std::get<TaskError>(outcome);
    EXPECT_FALSE(err.retryable) << id;
    EXPECT_NE(err.exception.exc_message.dump().find(std::to_string(id)), std::string::npos);
  }
  EXPECT_EQ(Count("SELECT count(*) FROM crawl_runs"), 0);
}

TEST_F(CrawlTasksTest, KeywordArgumentAndTriggersFromHeaders) {
  auto by_kw = celery::NewTask(kExecuteCrawlTask, json::array(), json{{"task_id", 3}});
  by_kw.custom_headers = {{kTriggerHeader, "run-now"}};
  const auto outcome = Run(by_kw);
  ASSERT_TRUE(std::holds_alternative<Json>(outcome));
  EXPECT_EQ(std::get<Json>(outcome)["trigger"], "run-now");
  EXPECT_TRUE(std::get<Json>(outcome)["dispatched"].empty());
  EXPECT_EQ(Count("SELECT count(*) FROM crawl_runs WHERE status = 'succeeded' "
                  "AND trigger = 'run-now' AND finished_at IS NOT NULL"), 1)
      << "a run with nothing to dispatch is complete at once";
  const auto beat = Run(Request(json::array({3}), {{kScheduleHeader, 3}}));
  EXPECT_EQ(std::get<Json>(beat)["trigger"], "beat");
}

TEST_F(CrawlTasksTest, TriggerSiteAnalysisReportsAcceptanceAndClassifiesErrors) {
  auto m = celery::NewTask(kTriggerSiteAnalysis, json::array({7, "pricing"}), json::object());
  std::atomic<bool> cancelled{false};
  TaskContext ctx(m, cancelled);
  auto ok = tasks_->TriggerSiteAnalysis(ctx);
  ASSERT_TRUE(std::holds_alternative<Json>(ok));
  EXPECT_EQ(std::get<Json>(ok),
            json::parse(R"({"data_source_id": 7, "theme_name": "pricing", "accepted": true,
                            "status_code": 202, "analysis_id": "an-1"})"));
  ASSERT_EQ(discovery_.calls.size(), 1u);
  EXPECT_EQ(discovery_.calls[0].theme_name, "pricing");

  discovery_.next_error = Error(ErrorCode::kUnavailable, "503 from discovery");
  auto down = tasks_->TriggerSiteAnalysis(ctx);
  ASSERT_TRUE(std::holds_alternative<TaskError>(down));
  EXPECT_TRUE(std::get<TaskError>(down).retryable);
  discovery_.next_error = Error(ErrorCode::kInvalidArgument, "422 unknown theme", false);
  auto refused = tasks_->TriggerSiteAnalysis(ctx);
  ASSERT_TRUE(std::holds_alternative<TaskError>(refused));
  EXPECT_FALSE(std::get<TaskError>(refused).retryable);
}

}  // namespace
}  // namespace celeriac::orchestrator
