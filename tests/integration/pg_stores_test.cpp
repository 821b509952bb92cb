// The worker's Postgres sinks: a dead letter keeps the original message whole, and task states
// follow Celery's rule that SUCCESS is never overwritten.

#include <gtest/gtest.h>

#include <limits>
#include <mutex>
#include <thread>

#include "core/broker/memory_broker.hpp"
#include "core/pg/migrations.hpp"
#include "migrations/migrations.hpp"
#include "orchestrator/ops/ops.hpp"
#include "state/dead_letter_store.hpp"
#include "state/task_state_store.hpp"
#include "tests/support/pg_test.hpp"

namespace celeriac::orchestrator {
namespace {

using state::PgDeadLetterStore;
using state::PgTaskStateStore;
using worker::DeadLetter;
using worker::TaskStateRecord;
using broker::PropertiesFromJson;
using broker::PropertiesToJson;

using json = nlohmann::ordered_json;

class PgStoresTest : public testing::PgTest {
 protected:
  void SetUp() override {
    PgTest::SetUp();
    if (IsSkipped() || HasFailure()) return;
    MigrateSchema();
    if (HasFatalFailure()) return;
  }
};

TEST_F(PgStoresTest, ALetterHoldingBytesPostgresRefusesIsStoredSafelyAndReplaysExactly) {
  DeadLetter letter;
  letter.queue = "celery";
  letter.task_name = std::string("bad\xff\0name", 9);
  letter.task_id = std::string("id-\xc0", 4);
  letter.properties.content_type = "application/json";
  letter.properties.correlation_id = std::string("c\0", 2);
  letter.properties.headers = json::object();
  letter.properties.headers["task"] = "celeriac.ping";
  letter.properties.headers["retries"] = std::string("\xff\xfe", 2);
  letter.properties.headers["x_raw"] = std::string("a\0b\x80", 4);
  letter.body = "[[], {}, {}]";
  letter.error_class = "InvalidTaskError";
  letter.error_message = std::string("header 'retries' \0 \xff", 20);
  letter.context = {{"note", std::string("n\0", 2)}, {std::string("k\xff", 2), 1}};
  letter.attempts = std::numeric_limits<int64_t>::max();
  PgDeadLetterStore store(pool());
  auto id = store.Write(letter);
  ASSERT_TRUE(id.ok()) << id.error().message();

  auto shown = ops::ShowDeadLetter(pool(), *id);
  ASSERT_TRUE(shown.ok() && shown->has_value());
  const auto& row = **shown;
  const auto& l = row.letter;
  EXPECT_EQ(l.task_name, "bad\\xff\\x00name") << "text escaped";
  EXPECT_EQ(l.task_id, "id-\\xc0");
  EXPECT_EQ(l.error_message, "header 'retries' \\x00 \\xff");
  EXPECT_EQ(row.ToJson()["headers"]["x_raw"], "a\\x00b\\x80") << "shown escaped";
  EXPECT_EQ(l.properties.headers["x_raw"].get<std::string>(), std::string("a\0b\x80", 4))
      << "read back exact";
  EXPECT_EQ(l.context["note"], "n\\x00");
  EXPECT_EQ(l.attempts, std::numeric_limits<int32_t>::max()) << "clamped, not wrapped";
  ASSERT_TRUE(l.raw_headers.has_value()) << "the headers' exact bytes are kept";

  // A replay sends the headers as they arrived (retries reset, the letter's id added).
  broker::MemoryBroker broker;
  ASSERT_TRUE(broker.Connect().ok());
  ops::DeadLetterFilter filter;
  filter.ids = {*id};
  auto outcomes = ops::ReplayDeadLetters(pool(), broker, filter, {});
  ASSERT_TRUE(outcomes.ok()) << outcomes.error().message();
  ASSERT_EQ(outcomes->size(), 1u);
  EXPECT_EQ((*outcomes)[0].status, "replayed") << (*outcomes)[0].message;
  std::optional<broker::Delivery> got;
  std::mutex mutex;
  auto c = broker.Consume({"celery", 1, ""}, [&](broker::Delivery&& d) {
    std::lock_guard lock(mutex);
    got = std::move(d);
  });
  ASSERT_TRUE(c.ok());
  for (int i = 0; i < 500; ++i) {
    {
      std::lock_guard lock(mutex);
      if (got) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::lock_guard lock(mutex);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->properties.headers["x_raw"].get<std::string>(), std::string("a\0b\x80", 4));
  EXPECT_EQ(got->properties.headers["retries"], 0);
  EXPECT_EQ(got->properties.headers["x_celeriac_dead_letter_id"], *id);
  EXPECT_EQ(got->body, letter.body);
}

TEST_F(PgStoresTest, TaskStatesCanBeLookedUpByTaskId) {
  PgTaskStateStore states(pool());
  auto missing = states.Lookup("nope");
  ASSERT_TRUE(missing.ok()) << missing.error().message();
  EXPECT_FALSE(missing->has_value());
  TaskStateRecord r;
  r.task_id = "t-look";
  r.task_name = "x";
  r.state = celery::State::kRetry;
  r.retries = 2;
  r.result = json{{"a", std::string("\0", 1)}};
  ASSERT_TRUE(states.Record(r).ok()) << "a U+0000 in a result must not stop the record";
  auto found = states.Lookup("t-look");
  ASSERT_TRUE(found.ok() && found->has_value());
  EXPECT_EQ((*found)->state, celery::State::kRetry);
  EXPECT_EQ((*found)->retries, 2);
  // The retry (retries 3) failed and recorded before the RETRY of retries 2 came in.
  r.state = celery::State::kFailure;
  r.retries = 3;
  ASSERT_TRUE(states.Record(r).ok());
  r.state = celery::State::kRetry;
  r.retries = 2;
  ASSERT_TRUE(states.Record(r).ok());
  found = states.Lookup("t-look");
  ASSERT_TRUE(found.ok() && found->has_value());
  EXPECT_EQ((*found)->state, celery::State::kFailure) << "an earlier message never goes back";
  EXPECT_EQ((*found)->retries, 3);
}

TEST_F(PgStoresTest, DeadLetterKeepsTheMessageWhole) {
  DeadLetter letter;
  letter.queue = "celery";
  letter.task_name = "orchestrator.tasks.trigger_site_analysis";
  letter.task_id = "t-1";
  letter.properties.content_type = "application/json";
  letter.properties.content_encoding = "utf-8";
  letter.properties.correlation_id = "t-1";
  letter.properties.reply_to = "oid";
  letter.properties.priority = 3;
  letter.properties.expiration = "60000";
  letter.properties.headers = json::parse(
      R"({"lang": "py", "task": "x", "id": "t-1", "retries": 3, "big": 1099511627776, "f": 1.0, "nested": {"z": 1, "a": [null]}})");
  letter.body = std::string("[[7, \"pricing\"], {}, {}]\x00\xff", 27);
  letter.error_class = "UnavailableError";
  letter.error_message = "discovery down";
  letter.context = {{"worker", "w1"}, {"retries", 3}};
  letter.attempts = 4;
  PgDeadLetterStore store(pool());
  auto id = store.Write(letter);
  ASSERT_TRUE(id.ok()) << id.error().message();

  auto row = pool().Transact<json>([&](pqxx::transaction_base& tx) -> Result<json> {
    const auto r = tx.exec_params1(
        "SELECT queue, task_name, task_id, headers::text, properties::text, body, error_class, "
        "error_message, error_context::text, attempts, replay_count FROM dead_letters WHERE id = $1",
        *id);
    const pqxx::binarystring body(r[5]);
    return json{{"queue", r[0].as<std::string>()},
                {"task_name", r[1].as<std::string>()},
                {"task_id", r[2].as<std::string>()},
                {"headers", r[3].as<std::string>()},
                {"properties", json::parse(r[4].as<std::string>())},
                {"body", body.str()},
                {"error_class", r[6].as<std::string>()},
                {"error_message", r[7].as<std::string>()},
                {"context", json::parse(r[8].as<std::string>())},
                {"attempts", r[9].as<int>()},
                {"replay_count", r[10].as<int>()}};
  });
  ASSERT_TRUE(row.ok()) << row.error().message();
  EXPECT_EQ((*row)["queue"], "celery");
  EXPECT_EQ((*row)["task_name"], "orchestrator.tasks.trigger_site_analysis");
  EXPECT_EQ((*row)["headers"], letter.properties.headers.dump())
      << "header order and number forms survive for a replay";
  EXPECT_EQ((*row)["body"].get<std::string>(), letter.body) << "the original bytes";
  const auto back = PropertiesFromJson((*row)["properties"], letter.properties.headers);
  EXPECT_EQ(back.priority, 3);
  EXPECT_EQ(back.expiration, "60000");
  EXPECT_EQ(back.reply_to, "oid");
  EXPECT_EQ((*row)["error_class"], "UnavailableError");
  EXPECT_EQ((*row)["context"]["worker"], "w1");
  EXPECT_EQ((*row)["attempts"], 4);
  EXPECT_EQ((*row)["replay_count"], 0);
}

TEST_F(PgStoresTest, SuccessIsNeverOverwritten) {
  PgTaskStateStore store(pool());
  TaskStateRecord r;
  r.task_id = "t-2";
  r.task_name = "celeriac.ping";
  r.queue = "celery";
  r.worker = "w";
  r.state = celery::State::kRetry;
  ASSERT_TRUE(store.Record(r).ok());
  r.state = celery::State::kSuccess;
  r.result = "pong";
  ASSERT_TRUE(store.Record(r).ok());
  r.state = celery::State::kFailure;  // a late duplicate delivery's failure
  r.result = json{{"exc_type", "X"}};
  ASSERT_TRUE(store.Record(r).ok());
  auto state = pool().Transact<std::string>([](pqxx::transaction_base& tx) -> Result<std::string> {
    const auto row = tx.exec1("SELECT status || ' ' || result::text || ' ' || (date_done IS NOT NULL)::text "
                              "FROM task_results WHERE task_id = 't-2'");
    return row[0].as<std::string>();
  });
  ASSERT_TRUE(state.ok()) << state.error().message();
  EXPECT_EQ(*state, "SUCCESS \"pong\" true");
}

}  // namespace
}  // namespace celeriac::orchestrator
