// Ops against a real Postgres and an in-memory broker: run-now publishes what a BFF would and
// the worker finds its run; runs list and show; dead letters list, show, replay (byte for byte,
// retries reset, marked once, forced again) and purge, each with its dry run.

#include <gtest/gtest.h>

#include <mutex>
#include <thread>

#include "core/base/ids.hpp"
#include "core/broker/memory_broker.hpp"
#include "core/celery/codec.hpp"
#include "core/pg/migrations.hpp"
#include "migrations/migrations.hpp"
#include "orchestrator/ops/ops.hpp"
#include "state/dead_letter_store.hpp"
#include "state/task_state_store.hpp"
#include "orchestrator/tasks/crawl_tasks.hpp"
#include "tests/support/pg_test.hpp"

namespace celeriac::orchestrator::ops {
namespace {

using state::PgDeadLetterStore;
using state::PgTaskStateStore;
using worker::DeadLetter;
using worker::TaskStateRecord;
using broker::PropertiesFromJson;
using broker::PropertiesToJson;

using json = nlohmann::ordered_json;

// A MemoryBroker that remembers what was declared and published, and can refuse to publish to
// one queue.
class RecordingBroker final : public broker::Broker {
 public:
  Status Connect() override { return inner.Connect(); }
  Status Declare(const broker::QueueSpec& spec) override {
    std::lock_guard lock(mutex);
    declared.push_back(spec);
    return inner.Declare(spec);
  }
  Status Publish(const broker::OutgoingMessage& m) override {
    {
      std::lock_guard lock(mutex);
      if (m.routing_key == fail_queue)
        return Error(ErrorCode::kUnavailable, "broker refused the publish (test)");
      published.push_back(m);
    }
    return inner.Publish(m);
  }
  Result<broker::ConsumerId> Consume(const broker::ConsumeOptions& o,
                                     broker::DeliveryHandler h) override {
    return inner.Consume(o, std::move(h));
  }
  Status Cancel(broker::ConsumerId c) override { return inner.Cancel(c); }
  Status SetPrefetch(broker::ConsumerId c, uint16_t p) override { return inner.SetPrefetch(c, p); }
  Status Ack(broker::ConsumerId c, uint64_t t) override { return inner.Ack(c, t); }
  Status Reject(broker::ConsumerId c, uint64_t t, bool r) override {
    return inner.Reject(c, t, r);
  }
  void Close() override { inner.Close(); }

  broker::MemoryBroker inner;
  std::mutex mutex;
  std::vector<broker::QueueSpec> declared;
  std::vector<broker::OutgoingMessage> published;
  std::string fail_queue;
};

class FakeDiscovery final : public discovery::DiscoveryClient {
 public:
  Result<discovery::DiscoverResponse> Discover(const discovery::DiscoverRequest&) override {
    discovery::DiscoverResponse out;
    out.status = 202;
    return out;
  }
};

class OpsTest : public testing::PgTest {
 protected:
  void SetUp() override {
    PgTest::SetUp();
    if (IsSkipped() || HasFailure()) return;
    MigrateSchema();
    if (HasFatalFailure()) return;
    Exec(R"(
      INSERT INTO data_sources (id, name) VALUES (1, 'shop'), (2, 'blog');
      INSERT INTO crawl_configs (id, data_source_id, version, status, config) VALUES
        (10, 1, 1, 'active', '{}');
      INSERT INTO crawl_tasks (id, name, data_source_ids, enabled) VALUES
        (1, 'shop', '{1}', true),
        (2, 'off', '{1}', false),
        (3, 'nothing active', '{2}', true);
    )");
    ASSERT_TRUE(broker_.Connect().ok());
  }

  // Every message waiting in `queue`, acked.
  std::vector<broker::Delivery> Drain(const std::string& queue) {
    std::vector<broker::Delivery> out;
    std::mutex mutex;
    broker::ConsumerId id = 0;
    auto consumer = broker_.Consume({queue, 0, ""}, [&](broker::Delivery&& d) {
      std::lock_guard lock(mutex);
      (void)broker_.Ack(id, d.delivery_tag);
      out.push_back(std::move(d));
    });
    EXPECT_TRUE(consumer.ok());
    if (!consumer.ok()) return out;
    id = *consumer;
    for (int i = 0; i < 200 && broker_.inner.QueueDepth(queue) > 0; ++i)
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
    EXPECT_TRUE(n.ok()) << n.error().message();
    return n.ok() ? *n : -1;
  }

  int64_t WriteDeadLetter(const std::string& queue, const std::string& task,
                          const std::string& error_class, std::string body = "",
                          std::optional<json> headers = std::nullopt) {
    DeadLetter letter;
    letter.queue = queue;
    letter.task_name = task;
    const std::string id = NewUuid4();
    letter.task_id = id;
    letter.properties.content_type = "application/json";
    letter.properties.content_encoding = "utf-8";
    letter.properties.correlation_id = id;
    letter.properties.reply_to = "reply-oid";
    letter.properties.priority = 3;
    letter.properties.headers =
        headers ? *headers
                : json{{"lang", "py"},    {"task", task},   {"id", id},
                       {"shadow", nullptr}, {"eta", nullptr}, {"expires", nullptr},
                       {"group", nullptr},  {"group_index", nullptr}, {"retries", 3},
                       {"timelimit", json::array({nullptr, nullptr})}, {"root_id", id},
                       {"parent_id", nullptr}, {"argsrepr", "(7, 'pricing')"},
                       {"kwargsrepr", "{}"}, {"origin", "gen1@bff"}, {"ignore_result", false},
                       {"x_custom", 1.5}};
    letter.body = body.empty() ? std::string(R"([[7, "pricing"], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}])")
                               : body;
    letter.error_class = error_class;
    letter.error_message = error_class + " happened";
    letter.context = {{"worker", "w1"}};
    letter.attempts = 4;
    PgDeadLetterStore store(pool());
    auto written = store.Write(letter);
    EXPECT_TRUE(written.ok()) << written.error().message();
    return written.ok() ? *written : -1;
  }

  std::vector<int64_t> Ids(const std::vector<DeadLetterRow>& rows) {
    std::vector<int64_t> out;
    for (const auto& r : rows) out.push_back(r.id);
    return out;
  }

  std::vector<int64_t> ListIds(DeadLetterFilter filter) {
    auto rows = ListDeadLetters(pool(), filter);
    EXPECT_TRUE(rows.ok()) << rows.error().message();
    return rows.ok() ? Ids(*rows) : std::vector<int64_t>{};
  }

  RecordingBroker broker_;
};

// ---- run-now ---------------------------------------------------------------------------------

TEST_F(OpsTest, RunNowCreatesTheRunAndPublishesWhatABffWould) {
  RunNowOptions options;
  options.queue = "ops-orchestrator";
  auto started = RunNow(pool(), broker_, 1, options);
  ASSERT_TRUE(started.ok()) << started.error().message();
  EXPECT_TRUE(IsUuid(started->task_id));
  EXPECT_EQ(Count("SELECT count(*) FROM crawl_runs WHERE id = " + std::to_string(started->run_id) +
                  " AND crawl_task_id = 1 AND trigger = 'run-now' AND status = 'pending' "
                  "AND celery_task_id = '" + started->task_id + "'"),
            1);

  ASSERT_EQ(broker_.declared.size(), 1u);
  EXPECT_EQ(broker_.declared[0].name, "ops-orchestrator");
  EXPECT_EQ(broker_.declared[0].exchange, "ops-orchestrator");
  EXPECT_EQ(broker_.declared[0].routing_key, "ops-orchestrator");
  EXPECT_TRUE(broker_.declared[0].durable);
  EXPECT_TRUE(broker_.declared[0].arguments.empty()) << "Celery's parameters, nothing more";

  auto deliveries = Drain("ops-orchestrator");
  ASSERT_EQ(deliveries.size(), 1u);
  EXPECT_EQ(deliveries[0].exchange, "");
  EXPECT_EQ(deliveries[0].routing_key, "ops-orchestrator");
  auto decoded = celery::DecodeTask(deliveries[0].properties, deliveries[0].body);
  ASSERT_TRUE(decoded.ok()) << decoded.failure().message;
  const auto& m = decoded.message();
  EXPECT_EQ(m.protocol, 2);
  EXPECT_EQ(m.task, kExecuteCrawlTask);
  EXPECT_EQ(m.id, started->task_id);
  EXPECT_EQ(m.correlation_id, started->task_id);
  EXPECT_EQ(m.root_id, started->task_id);
  EXPECT_EQ(m.args, json::array({1}));
  EXPECT_EQ(m.kwargs, json::object());
  EXPECT_EQ(m.retries, 0);
  EXPECT_EQ(m.custom_headers[kTriggerHeader], "run-now");
  EXPECT_EQ(TriggerOf(m), "run-now");
  EXPECT_EQ(deliveries[0].properties.content_type, "application/json");
  EXPECT_EQ(deliveries[0].properties.delivery_mode, 2);

  // The worker running that message finds the run instead of starting a second one.
  FakeDiscovery discovery;
  CrawlTasks tasks(pool(), broker_, discovery, CrawlTaskOptions{});
  std::atomic<bool> cancelled{false};
  TaskContext ctx(m, cancelled);
  const auto outcome = tasks.ExecuteCrawlTask(ctx);
  ASSERT_TRUE(std::holds_alternative<Json>(outcome))
      << std::get<TaskError>(outcome).exception.ToJson().dump();
  EXPECT_EQ(std::get<Json>(outcome)["run_id"], started->run_id);
  EXPECT_EQ(std::get<Json>(outcome)["trigger"], "run-now");
  EXPECT_EQ(Count("SELECT count(*) FROM crawl_runs"), 1);
  auto run = ShowRun(pool(), started->run_id);
  ASSERT_TRUE(run.ok() && run->has_value());
  EXPECT_EQ((*run)->status, "running");
  EXPECT_EQ((*run)->configs_dispatched, 1);
  ASSERT_EQ((*run)->jobs.size(), 1u);
  EXPECT_EQ((*run)->jobs[0].crawl_config_id, 10);
  EXPECT_TRUE((*run)->jobs[0].published);
}

TEST_F(OpsTest, RunNowRefusesUnknownAndDisabledCrawlTasks) {
  auto unknown = RunNow(pool(), broker_, 99);
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code(), ErrorCode::kNotFound);
  EXPECT_FALSE(unknown.error().retryable());
  EXPECT_NE(unknown.error().message().find("99"), std::string::npos);

  auto disabled = RunNow(pool(), broker_, 2);
  ASSERT_FALSE(disabled.ok());
  EXPECT_EQ(disabled.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_FALSE(disabled.error().retryable());
  EXPECT_NE(disabled.error().message().find("disabled"), std::string::npos);

  EXPECT_TRUE(broker_.published.empty());
  EXPECT_EQ(Count("SELECT count(*) FROM crawl_runs"), 0);
}

TEST_F(OpsTest, RunNowTakesTheRunBackWhenThePublishFails) {
  broker_.fail_queue = "celery";
  auto started = RunNow(pool(), broker_, 1);
  ASSERT_FALSE(started.ok());
  EXPECT_TRUE(started.error().retryable()) << started.error().ToString();
  EXPECT_NE(started.error().message().find("celery"), std::string::npos);
  EXPECT_EQ(Count("SELECT count(*) FROM crawl_runs"), 0) << "no run left pending forever";
}

TEST_F(OpsTest, TriggerSiteAnalysisPublishesTheSeedsTask) {
  auto id = TriggerSiteAnalysis(broker_, 7, "pricing");
  ASSERT_TRUE(id.ok()) << id.error().message();
  auto deliveries = Drain("celery");
  ASSERT_EQ(deliveries.size(), 1u);
  auto decoded = celery::DecodeTask(deliveries[0].properties, deliveries[0].body);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded.message().task, kTriggerSiteAnalysis);
  EXPECT_EQ(decoded.message().id, *id);
  EXPECT_EQ(decoded.message().args, json::parse(R"([7, "pricing"])"));
}

// ---- runs ------------------------------------------------------------------------------------

TEST_F(OpsTest, ListsRunsNewestFirstWithFiltersAndShowsOneWithItsJobs) {
  Exec(R"(
    INSERT INTO crawl_runs (id, crawl_task_id, celery_task_id, trigger, status, status_reason,
                            configs_dispatched, sources_skipped, pages, items_new, bytes,
                            started_at, finished_at) VALUES
      (1, 1, 'c1', 'beat', 'succeeded', NULL, 1, '[]', 10, 4, 2048, now(), now()),
      (2, 1, 'c2', 'run-now', 'running', NULL, 2,
       '[{"reason": "no_active_config", "data_source_id": 2}]', 3, 1, 100, now(), NULL),
      (3, 3, 'c3', 'bff', 'failed', 'boom', 0, '[]', 0, 0, 0, now(), now());
    INSERT INTO extraction_jobs (id, run_id, crawl_config_id, config_version, data_source_id,
                                 celery_task_id, published_at, status, pages) VALUES
      (5, 2, 10, 1, 1, 'j5', now(), 'running', 3),
      (6, 2, 11, 2, 4, 'j6', NULL, 'pending', 0);
  )");
  auto ids = [&](RunFilter f) {
    std::vector<int64_t> out;
    auto runs = ListRuns(pool(), f);
    EXPECT_TRUE(runs.ok()) << runs.error().message();
    if (runs.ok())
      for (const auto& r : *runs) out.push_back(r.id);
    return out;
  };
  EXPECT_EQ(ids({}), (std::vector<int64_t>{3, 2, 1}));
  RunFilter by_task;
  by_task.crawl_task_id = 1;
  EXPECT_EQ(ids(by_task), (std::vector<int64_t>{2, 1}));
  RunFilter by_status;
  by_status.status = "failed";
  EXPECT_EQ(ids(by_status), (std::vector<int64_t>{3}));
  RunFilter by_trigger;
  by_trigger.trigger = "run-now";
  EXPECT_EQ(ids(by_trigger), (std::vector<int64_t>{2}));
  RunFilter paged;
  paged.limit = 1;
  EXPECT_EQ(ids(paged), (std::vector<int64_t>{3}));
  paged.before_id = 3;
  EXPECT_EQ(ids(paged), (std::vector<int64_t>{2}));
  RunFilter hostile;
  hostile.status = "running' OR '1'='1";
  EXPECT_TRUE(ids(hostile).empty()) << "parameters, not SQL";

  auto listed = ListRuns(pool(), {});
  ASSERT_TRUE(listed.ok());
  EXPECT_FALSE((*listed)[0].ToJson().contains("jobs")) << "lists carry no jobs";

  auto shown = ShowRun(pool(), 2);
  ASSERT_TRUE(shown.ok()) << shown.error().message();
  ASSERT_TRUE(shown->has_value());
  const RunRow& run = **shown;
  EXPECT_EQ(run.trigger, "run-now");
  EXPECT_EQ(run.pages, 3);
  EXPECT_TRUE(run.started_at.has_value());
  EXPECT_FALSE(run.finished_at.has_value());
  ASSERT_EQ(run.jobs.size(), 2u);
  EXPECT_EQ(run.jobs[0].id, 5);
  EXPECT_TRUE(run.jobs[0].published);
  EXPECT_FALSE(run.jobs[1].published);
  const json j = run.ToJson();
  EXPECT_EQ(j["id"], 2);
  EXPECT_EQ(j["finished_at"], nullptr);
  EXPECT_TRUE(ParseIso8601(j["created_at"].get<std::string>()).has_value());
  EXPECT_EQ(j["sources_skipped"].dump(), R"([{"data_source_id":2,"reason":"no_active_config"}])");
  ASSERT_EQ(j["jobs"].size(), 2u);
  EXPECT_EQ(j["jobs"][1]["celery_task_id"], "j6");

  auto empty = ShowRun(pool(), 3);
  ASSERT_TRUE(empty.ok() && empty->has_value());
  EXPECT_EQ((*empty)->ToJson()["jobs"], json::array()) << "show always says which jobs";
  EXPECT_EQ((*empty)->status_reason, "boom");

  auto missing = ShowRun(pool(), 99);
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());
}

// ---- dead letters ----------------------------------------------------------------------------

TEST_F(OpsTest, ListsDeadLettersByEachFilter) {
  const int64_t a = WriteDeadLetter("celery", "orchestrator.tasks.trigger_site_analysis",
                                    "MaxRetriesExceededError");
  const int64_t b = WriteDeadLetter("celery", "nope.unknown", "NotRegistered");
  const int64_t c = WriteDeadLetter("extraction_queue", "extractor.tasks.extract", "NotRegistered");
  const int64_t d = WriteDeadLetter("celery", "orchestrator.tasks.trigger_site_analysis",
                                    "UnavailableError");
  // Spread them over time: a on May 1st, b on May 2nd, c on May 3rd, d now.
  Exec("UPDATE dead_letters SET created_at = '2024-05-01T10:00:00Z' WHERE id = " + std::to_string(a));
  Exec("UPDATE dead_letters SET created_at = '2024-05-02T10:00:00Z' WHERE id = " + std::to_string(b));
  Exec("UPDATE dead_letters SET created_at = '2024-05-03T10:00:00Z' WHERE id = " + std::to_string(c));

  EXPECT_EQ(ListIds({}), (std::vector<int64_t>{d, c, b, a})) << "newest first";
  DeadLetterFilter f;
  f.queue = "celery";
  EXPECT_EQ(ListIds(f), (std::vector<int64_t>{d, b, a}));
  f = {};
  f.task_name = "orchestrator.tasks.trigger_site_analysis";
  EXPECT_EQ(ListIds(f), (std::vector<int64_t>{d, a}));
  f = {};
  f.error_class = "NotRegistered";
  EXPECT_EQ(ListIds(f), (std::vector<int64_t>{c, b}));
  f = {};
  f.since = ParseIso8601("2024-05-02T10:00:00Z");
  EXPECT_EQ(ListIds(f), (std::vector<int64_t>{d, c, b})) << "since is inclusive";
  f = {};
  f.until = ParseIso8601("2024-05-03T10:00:00Z");
  EXPECT_EQ(ListIds(f), (std::vector<int64_t>{b, a})) << "until is exclusive";
  f = {};
  f.since = ParseIso8601("2024-05-01T12:00:01+02:00");
  f.until = ParseIso8601("2024-05-03");
  EXPECT_EQ(ListIds(f), (std::vector<int64_t>{b}));
  f = {};
  f.queue = "celery";
  f.error_class = "NotRegistered";
  EXPECT_EQ(ListIds(f), (std::vector<int64_t>{b})) << "filters combine";
  f = {};
  f.ids = {a, c, 999};
  EXPECT_EQ(ListIds(f), (std::vector<int64_t>{c, a}));
  f = {};
  f.limit = 2;
  EXPECT_EQ(ListIds(f), (std::vector<int64_t>{d, c}));
  f = {};
  f.queue = "celery' OR 'x'='x";
  EXPECT_TRUE(ListIds(f).empty()) << "parameters, not SQL";

  // Replayed and purged rows.
  Exec("UPDATE dead_letters SET replay_count = 1, replayed_at = now() WHERE id = " + std::to_string(b));
  Exec("UPDATE dead_letters SET purged_at = now() WHERE id = " + std::to_string(c));
  EXPECT_EQ(ListIds({}), (std::vector<int64_t>{d, b, a})) << "purged rows leave lists";
  f = {};
  f.include_purged = true;
  EXPECT_EQ(ListIds(f), (std::vector<int64_t>{d, c, b, a}));
  f = {};
  f.include_replayed = false;
  EXPECT_EQ(ListIds(f), (std::vector<int64_t>{d, a}));

  auto rows = ListDeadLetters(pool(), {});
  ASSERT_TRUE(rows.ok());
  const json brief = rows->front().ToJson(/*with_message=*/false);
  EXPECT_FALSE(brief.contains("headers"));
  EXPECT_FALSE(brief.contains("body"));
  EXPECT_EQ(brief["error_class"], "UnavailableError");
}

TEST_F(OpsTest, ShowsTheExactBodyBytesAndHeadersInOrder) {
  const std::string binary("[[1], {}, {}]\x00\xff\xfe tail", 21);
  const json headers = json::parse(
      R"({"zeta": 1, "lang": "py", "task": "t.x", "id": "abc", "retries": 2, "big": 1099511627776, "f": 1.0, "alpha": {"z": 1, "a": [null]}})");
  const int64_t bin = WriteDeadLetter("celery", "t.x", "DecodeError", binary, headers);
  const int64_t text = WriteDeadLetter("celery", "t.y", "TypeError", "[[\"h\u00e9\"], {}, {}]");

  auto shown = ShowDeadLetter(pool(), bin);
  ASSERT_TRUE(shown.ok()) << shown.error().message();
  ASSERT_TRUE(shown->has_value());
  const DeadLetterRow& row = **shown;
  EXPECT_EQ(row.letter.body, binary) << "the original bytes";
  EXPECT_EQ(row.letter.properties.headers.dump(), headers.dump()) << "header order and number forms kept";
  EXPECT_EQ(row.letter.properties.correlation_id, row.letter.task_id.value());
  EXPECT_EQ(row.letter.properties.priority, 3);
  EXPECT_EQ(row.letter.context["worker"], "w1");
  EXPECT_EQ(row.letter.attempts, 4);
  EXPECT_EQ(row.replay_count, 0);

  const json j = row.ToJson();
  EXPECT_FALSE(j.contains("body"));
  EXPECT_EQ(j["body_base64"], "W1sxXSwge30sIHt9XQD//iB0YWls");
  EXPECT_EQ(j["headers"].dump(), headers.dump());
  EXPECT_NO_THROW((void)j.dump()) << "a JSON document whatever the body holds";

  auto shown_text = ShowDeadLetter(pool(), text);
  ASSERT_TRUE(shown_text.ok() && shown_text->has_value());
  const json t = (*shown_text)->ToJson();
  EXPECT_EQ(t["body"], "[[\"h\u00e9\"], {}, {}]");
  EXPECT_FALSE(t.contains("body_base64"));

  auto missing = ShowDeadLetter(pool(), 12345);
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());
}

TEST_F(OpsTest, ReplayPublishesTheOriginalOnceAndAgainOnlyWhenForced) {
  const std::string body =
      R"([[7, "pricing"], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}])";
  const int64_t id = WriteDeadLetter("ops-replay", "orchestrator.tasks.trigger_site_analysis",
                                     "MaxRetriesExceededError", body);
  auto before = ShowDeadLetter(pool(), id);
  ASSERT_TRUE(before.ok() && before->has_value());
  const std::string task_id = (*before)->letter.task_id.value();

  DeadLetterFilter named;
  named.ids = {id};
  auto outcomes = ReplayDeadLetters(pool(), broker_, named, {});
  ASSERT_TRUE(outcomes.ok()) << outcomes.error().message();
  ASSERT_EQ(outcomes->size(), 1u);
  EXPECT_EQ((*outcomes)[0].status, "replayed") << (*outcomes)[0].message;
  EXPECT_EQ((*outcomes)[0].task_id, task_id);
  EXPECT_EQ((*outcomes)[0].ToJson()["dead_letter_id"], id);

  ASSERT_FALSE(broker_.declared.empty());
  EXPECT_EQ(broker_.declared.back().name, "ops-replay");
  EXPECT_EQ(broker_.declared.back().exchange, "ops-replay");
  auto deliveries = Drain("ops-replay");
  ASSERT_EQ(deliveries.size(), 1u);
  const auto& d = deliveries[0];
  EXPECT_EQ(d.exchange, "") << "the default exchange";
  EXPECT_EQ(d.routing_key, "ops-replay");
  EXPECT_EQ(d.body, body) << "byte for byte";
  // Headers: the stored ones in their order, retries 0, the dead letter's id appended.
  json expected = (*before)->letter.properties.headers;
  expected["retries"] = 0;
  expected[kDeadLetterHeader] = id;
  EXPECT_EQ(d.properties.headers.dump(), expected.dump());
  EXPECT_TRUE(d.properties.headers[kDeadLetterHeader].is_number_integer());
  EXPECT_EQ(d.properties.correlation_id, task_id);
  EXPECT_EQ(d.properties.reply_to, "reply-oid");
  EXPECT_EQ(d.properties.priority, 3);
  EXPECT_EQ(d.properties.content_type, "application/json");
  auto decoded = celery::DecodeTask(d.properties, d.body);
  ASSERT_TRUE(decoded.ok()) << decoded.failure().message;
  EXPECT_EQ(decoded.message().retries, 0);
  EXPECT_EQ(decoded.message().id, task_id) << "same task id";
  EXPECT_EQ(decoded.message().custom_headers[kDeadLetterHeader], id);

  auto after = ShowDeadLetter(pool(), id);
  ASSERT_TRUE(after.ok() && after->has_value());
  EXPECT_EQ((*after)->replay_count, 1);
  EXPECT_TRUE((*after)->replayed_at.has_value());
  EXPECT_EQ((*after)->replayed_task_id, task_id);
  EXPECT_EQ((*after)->letter.properties.headers.dump(), (*before)->letter.properties.headers.dump()) << "the row keeps the original";

  // A second replay is refused...
  auto again = ReplayDeadLetters(pool(), broker_, named, {});
  ASSERT_TRUE(again.ok());
  ASSERT_EQ(again->size(), 1u);
  EXPECT_EQ((*again)[0].status, "already_replayed");
  EXPECT_NE((*again)[0].message.find("force"), std::string::npos);
  EXPECT_TRUE(Drain("ops-replay").empty());
  // ...and a filter without force does not even select it.
  DeadLetterFilter by_queue;
  by_queue.queue = "ops-replay";
  auto by_filter = ReplayDeadLetters(pool(), broker_, by_queue, {});
  ASSERT_TRUE(by_filter.ok());
  EXPECT_TRUE(by_filter->empty());
  // Forced, it goes again.
  ReplayOptions force;
  force.force = true;
  auto forced = ReplayDeadLetters(pool(), broker_, by_queue, force);
  ASSERT_TRUE(forced.ok());
  ASSERT_EQ(forced->size(), 1u);
  EXPECT_EQ((*forced)[0].status, "replayed");
  auto second = Drain("ops-replay");
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].body, body);
  EXPECT_EQ(second[0].properties.headers[kDeadLetterHeader], id);
  EXPECT_EQ(Count("SELECT replay_count FROM dead_letters WHERE id = " + std::to_string(id)), 2);
}

TEST_F(OpsTest, ReplayOfAProtocolV1MessageLeavesItsHeadersAlone) {
  const std::string body = R"({"task": "t.v1", "id": "v1-id", "args": [1], "kwargs": {}, "retries": 3})";
  DeadLetter letter;
  letter.queue = "ops-v1";
  letter.task_name = "t.v1";
  letter.task_id = "v1-id";
  letter.properties.content_type = "application/json";
  letter.properties.content_encoding = "utf-8";
  letter.properties.correlation_id = "v1-id";
  letter.properties.headers = json::object();
  letter.body = body;
  letter.error_class = "NotRegistered";
  letter.error_message = "t.v1";
  PgDeadLetterStore store(pool());
  auto id = store.Write(letter);
  ASSERT_TRUE(id.ok());

  DeadLetterFilter f;
  f.ids = {*id};
  auto outcomes = ReplayDeadLetters(pool(), broker_, f, {});
  ASSERT_TRUE(outcomes.ok());
  ASSERT_EQ(outcomes->size(), 1u);
  EXPECT_EQ((*outcomes)[0].status, "replayed");
  EXPECT_EQ((*outcomes)[0].task_id, "v1-id") << "from the correlation id";
  auto deliveries = Drain("ops-v1");
  ASSERT_EQ(deliveries.size(), 1u);
  EXPECT_EQ(deliveries[0].body, body);
  json expected = json::object();
  expected[kDeadLetterHeader] = *id;
  EXPECT_EQ(deliveries[0].properties.headers.dump(), expected.dump())
      << "no retries header added to a v1 message";
}

TEST_F(OpsTest, DryRunsChangeNothingAndPublishNothing) {
  const int64_t a = WriteDeadLetter("ops-dry", "t.a", "NotRegistered");
  const int64_t b = WriteDeadLetter("ops-dry", "t.b", "TypeError");
  broker::QueueSpec spec;
  spec.name = spec.exchange = spec.routing_key = "ops-dry";
  ASSERT_TRUE(broker_.inner.Declare(spec).ok());

  DeadLetterFilter f;
  f.queue = "ops-dry";
  ReplayOptions dry;
  dry.dry_run = true;
  auto outcomes = ReplayDeadLetters(pool(), broker_, f, dry);
  ASSERT_TRUE(outcomes.ok()) << outcomes.error().message();
  ASSERT_EQ(outcomes->size(), 2u);
  EXPECT_EQ((*outcomes)[0].dead_letter_id, a) << "oldest first";
  EXPECT_EQ((*outcomes)[0].status, "would_replay");
  EXPECT_EQ((*outcomes)[1].dead_letter_id, b);
  EXPECT_EQ((*outcomes)[1].status, "would_replay");
  EXPECT_TRUE((*outcomes)[1].task_id.has_value());
  EXPECT_TRUE(broker_.published.empty());
  EXPECT_EQ(broker_.inner.QueueDepth("ops-dry"), 0u);

  auto purge = PurgeDeadLetters(pool(), f, /*dry_run=*/true);
  ASSERT_TRUE(purge.ok());
  EXPECT_TRUE(purge->dry_run);
  EXPECT_EQ(purge->count, 2);
  EXPECT_EQ(purge->ids, (std::vector<int64_t>{a, b}));

  EXPECT_EQ(Count("SELECT count(*) FROM dead_letters WHERE replay_count = 0 AND replayed_at IS "
                  "NULL AND purged_at IS NULL"),
            2);
}

TEST_F(OpsTest, PurgedRowsAreNeverReplayed) {
  const int64_t kept = WriteDeadLetter("ops-purged", "t.a", "NotRegistered");
  const int64_t gone = WriteDeadLetter("ops-purged", "t.b", "NotRegistered");
  DeadLetterFilter one;
  one.ids = {gone};
  auto purged = PurgeDeadLetters(pool(), one, false);
  ASSERT_TRUE(purged.ok());
  EXPECT_EQ(purged->ids, std::vector<int64_t>{gone});

  DeadLetterFilter both;
  both.ids = {kept, gone, 4242};
  ReplayOptions force;
  force.force = true;
  auto outcomes = ReplayDeadLetters(pool(), broker_, both, force);
  ASSERT_TRUE(outcomes.ok());
  ASSERT_EQ(outcomes->size(), 3u);
  EXPECT_EQ((*outcomes)[0].dead_letter_id, kept);
  EXPECT_EQ((*outcomes)[0].status, "replayed");
  EXPECT_EQ((*outcomes)[1].dead_letter_id, gone);
  EXPECT_EQ((*outcomes)[1].status, "purged") << "refused, even forced";
  EXPECT_EQ((*outcomes)[2].dead_letter_id, 4242);
  EXPECT_EQ((*outcomes)[2].status, "not_found");
  EXPECT_EQ(Drain("ops-purged").size(), 1u);
  EXPECT_EQ(Count("SELECT replay_count FROM dead_letters WHERE id = " + std::to_string(gone)), 0);

  // A filter does not select purged rows at all.
  DeadLetterFilter by_queue;
  by_queue.queue = "ops-purged";
  auto filtered = ReplayDeadLetters(pool(), broker_, by_queue, force);
  ASSERT_TRUE(filtered.ok());
  ASSERT_EQ(filtered->size(), 1u);
  EXPECT_EQ((*filtered)[0].dead_letter_id, kept);
}

TEST_F(OpsTest, OneRowFailingStopsNoOther) {
  const int64_t a = WriteDeadLetter("ops-good", "t.a", "NotRegistered");
  const int64_t b = WriteDeadLetter("ops-bad", "t.b", "NotRegistered");
  const int64_t c = WriteDeadLetter("ops-good", "t.c", "NotRegistered");
  broker_.fail_queue = "ops-bad";
  DeadLetterFilter f;
  f.error_class = "NotRegistered";
  auto outcomes = ReplayDeadLetters(pool(), broker_, f, {});
  ASSERT_TRUE(outcomes.ok());
  ASSERT_EQ(outcomes->size(), 3u);
  EXPECT_EQ((*outcomes)[0].dead_letter_id, a);
  EXPECT_EQ((*outcomes)[0].status, "replayed");
  EXPECT_EQ((*outcomes)[1].dead_letter_id, b);
  EXPECT_EQ((*outcomes)[1].status, "failed");
  EXPECT_NE((*outcomes)[1].message.find("ops-bad"), std::string::npos) << (*outcomes)[1].message;
  EXPECT_EQ((*outcomes)[2].dead_letter_id, c);
  EXPECT_EQ((*outcomes)[2].status, "replayed");
  EXPECT_EQ(Count("SELECT replay_count FROM dead_letters WHERE id = " + std::to_string(b)), 0)
      << "the failed row is left as it was";
  EXPECT_EQ(Drain("ops-good").size(), 2u);

  // Once the broker takes it, the failed row replays without force: it was never replayed.
  broker_.fail_queue.clear();
  DeadLetterFilter retry;
  retry.error_class = "NotRegistered";
  auto second = ReplayDeadLetters(pool(), broker_, retry, {});
  ASSERT_TRUE(second.ok());
  ASSERT_EQ(second->size(), 1u);
  EXPECT_EQ((*second)[0].dead_letter_id, b);
  EXPECT_EQ((*second)[0].status, "replayed");
}

TEST_F(OpsTest, PurgeMarksTheFilteredRowsOnce) {
  const int64_t a = WriteDeadLetter("celery", "t.a", "NotRegistered");
  const int64_t b = WriteDeadLetter("celery", "t.b", "TypeError");
  const int64_t c = WriteDeadLetter("extraction_queue", "t.c", "NotRegistered");
  Exec("UPDATE dead_letters SET created_at = '2024-01-01T00:00:00Z' WHERE id = " + std::to_string(a));

  DeadLetterFilter f;
  f.error_class = "NotRegistered";
  f.until = ParseIso8601("2024-06-01");
  auto dry = PurgeDeadLetters(pool(), f, true);
  ASSERT_TRUE(dry.ok());
  EXPECT_EQ(dry->ids, std::vector<int64_t>{a});
  EXPECT_EQ(Count("SELECT count(*) FROM dead_letters WHERE purged_at IS NOT NULL"), 0);

  auto done = PurgeDeadLetters(pool(), f, false);
  ASSERT_TRUE(done.ok()) << done.error().message();
  EXPECT_FALSE(done->dry_run);
  EXPECT_EQ(done->count, 1);
  EXPECT_EQ(done->ids, std::vector<int64_t>{a});
  EXPECT_EQ(ListIds({}), (std::vector<int64_t>{c, b})) << "purged rows leave lists";
  DeadLetterFilter all;
  all.include_purged = true;
  EXPECT_EQ(ListIds(all), (std::vector<int64_t>{c, b, a})) << "but are still there";
  auto shown = ShowDeadLetter(pool(), a);
  ASSERT_TRUE(shown.ok() && shown->has_value());
  ASSERT_TRUE((*shown)->purged_at.has_value());
  const auto first_purge = *(*shown)->purged_at;

  auto again = PurgeDeadLetters(pool(), f, false);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->count, 0) << "already purged";
  auto reshown = ShowDeadLetter(pool(), a);
  ASSERT_TRUE(reshown.ok() && reshown->has_value());
  EXPECT_EQ((*reshown)->purged_at, first_purge) << "keeps its first purge time";

  DeadLetterFilter limited;
  limited.limit = 1;
  auto one = PurgeDeadLetters(pool(), limited, false);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->ids, std::vector<int64_t>{b}) << "oldest first, up to the limit";
}

}  // namespace
}  // namespace celeriac::orchestrator::ops
