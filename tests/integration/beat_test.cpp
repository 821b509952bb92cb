// Beat against a real Postgres, on a manual clock, with the in-memory broker: schedules refused
// where they are written, one message per due time (what a BFF sends plus beat's headers, run by
// the real worker task as trigger 'beat'), live changes made with plain SQL, missed times folded
// into one run, the grace period, DST, bad rows, two beats sharing one burst, and the built-in
// beat entry celery.backend_cleanup fired daily at 04:00, once across beats.

#include <atomic>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "core/broker/memory_broker.hpp"
#include "core/celery/codec.hpp"
#include "core/pg/listener.hpp"
#include "orchestrator/beat/beat.hpp"
#include "orchestrator/tasks/backend_cleanup.hpp"
#include "orchestrator/tasks/crawl_tasks.hpp"
#include "tests/support/manual_clock.hpp"
#include "tests/support/pg_test.hpp"

namespace celeriac::orchestrator::beat {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::ordered_json;

Clock::WallTime T(const char* iso) { return *ParseIso8601(iso); }

class NoDiscovery final : public discovery::DiscoveryClient {
 public:
  Result<discovery::DiscoverResponse> Discover(const discovery::DiscoverRequest&) override {
    return Error(ErrorCode::kUnavailable, "not in this test");
  }
};

class BeatTest : public testing::PgTest {
 protected:
  void SetUp() override {
    PgTest::SetUp();
    if (IsSkipped() || HasFailure()) return;
    MigrateSchema();
    if (HasFatalFailure()) return;
    Exec("INSERT INTO data_sources (id, name) VALUES (1, 'shop')");
    ASSERT_TRUE(broker_.Connect().ok());
  }

  std::unique_ptr<Beat> MakeBeat(BeatOptions options = {}) {
    if (options.name.empty()) options.name = "test-beat";
    options.queue = "celery";
    return std::make_unique<Beat>(pool(), broker_, clock_, options);
  }

  // Every message waiting on the beat's queue, decoded.
  std::vector<celery::TaskMessage> Messages() {
    std::vector<celery::TaskMessage> out;
    std::vector<uint64_t> tags;
    std::mutex mutex;
    // Acked here once Consume has returned the consumer id: a delivery may arrive before that
    // (reading the id from the handler raced with its assignment; ThreadSanitizer saw it).
    auto consumer = broker_.Consume({"celery", 0, ""}, [&](broker::Delivery&& d) {
      auto decoded = celery::DecodeTask(d.properties, d.body);
      std::lock_guard lock(mutex);
      EXPECT_TRUE(decoded.ok()) << decoded.failure().message;
      if (decoded.ok()) out.push_back(decoded.message());
      tags.push_back(d.delivery_tag);
    });
    if (!consumer.ok()) return out;
    for (int i = 0; i < 400 && broker_.QueueDepth("celery") > 0; ++i)
      std::this_thread::sleep_for(5ms);
    std::this_thread::sleep_for(20ms);
    EXPECT_TRUE(broker_.Cancel(*consumer).ok());
    std::lock_guard lock(mutex);
    for (const uint64_t tag : tags) EXPECT_TRUE(broker_.Ack(*consumer, tag).ok());
    return out;
  }

  std::string Text(const std::string& sql) {
    auto v = pool().Transact<std::string>([&](pqxx::transaction_base& tx) -> Result<std::string> {
      const auto r = tx.exec1(sql);
      return r[0].is_null() ? std::string("null") : r[0].as<std::string>();
    });
    EXPECT_TRUE(v.ok()) << (v.ok() ? "" : v.error().message());
    return v.ok() ? *v : "";
  }
  // A timestamptz column as ISO-8601 UTC, or "null".
  std::string When(const std::string& column, const std::string& from) {
    return Text("SELECT to_char(" + column +
                " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM " + from);
  }
  int64_t Count(const std::string& sql) { return std::stoll(Text(sql)); }

  // What the insert said when it was refused ("" if it was not).
  std::string Refusal(const std::string& sql) {
    try {
      Exec(sql);
    } catch (const std::exception& e) {
      return e.what();
    }
    return "";
  }

  FireReport Fire(Beat& beat) {
    auto r = beat.FireDue();
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message());
    return r.ok() ? *r : FireReport{};
  }
  int64_t Schedule(Beat& beat) {
    auto r = beat.ScheduleUnscheduled();
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message());
    return r.ok() ? *r : -1;
  }
  int64_t ScheduleEntries(Beat& beat) {
    auto r = beat.ScheduleEntries();
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message());
    return r.ok() ? *r : -1;
  }
  FireReport FireEntries(Beat& beat) {
    auto r = beat.FireDueEntries();
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message());
    return r.ok() ? *r : FireReport{};
  }

  broker::MemoryBroker broker_;
  testing::ManualClock clock_{T("2026-05-01T10:02:30Z")};
};

TEST_F(BeatTest, InvalidSchedulesAndZonesAreRefusedWhereTheyAreWritten) {
  auto why = Refusal("INSERT INTO crawl_tasks (name, data_source_ids, schedule) "
                     "VALUES ('a', '{1}', '61 * * * *')");
  EXPECT_NE(why.find("invalid cron expression \"61 * * * *\""), std::string::npos) << why;
  EXPECT_NE(why.find("minute field \"61\": 61 is out of range 0-59"), std::string::npos) << why;
  why = Refusal("INSERT INTO crawl_tasks (name, data_source_ids, schedule) "
                "VALUES ('a', '{1}', '0 0 30 2 *')");
  EXPECT_NE(why.find("\"0 0 30 2 *\""), std::string::npos) << why;
  why = Refusal("INSERT INTO crawl_tasks (name, data_source_ids, schedule, timezone) "
                "VALUES ('a', '{1}', '@daily', 'Mars/Olympus')");
  EXPECT_NE(why.find("\"Mars/Olympus\""), std::string::npos) << why;
  Exec("INSERT INTO crawl_tasks (id, name, data_source_ids, schedule) VALUES (1005, 'ok', '{1}', "
       "'*/5 * * * *')");
  why = Refusal("UPDATE crawl_tasks SET schedule = '* * * * mon-funday' WHERE id = 1005");
  EXPECT_NE(why.find("\"* * * * mon-funday\""), std::string::npos) << why;
  EXPECT_EQ(Refusal("INSERT INTO crawl_tasks (name, data_source_ids, schedule, timezone) VALUES "
                    "('b', '{1}', '*/15 1-5,22 1,15 JAN-mar,Dec mon-FRI', 'Europe/Berlin'), "
                    "('c', '{1}', '@hourly', 'UTC'), ('manual', '{1}', NULL, 'UTC')"),
            "");
}

TEST_F(BeatTest, FiresEachDueTimeOnceAsABffMessageWithBeatHeaders) {
  Exec("INSERT INTO crawl_tasks (id, name, data_source_ids, schedule, updated_at) VALUES "
       "(7, 'every five', '{1}', '*/5 * * * *', '2026-05-01T10:02:00Z'), "
       "(8, 'manual only', '{1}', NULL, '2026-05-01T10:02:00Z')");
  auto beat = MakeBeat();
  EXPECT_EQ(Schedule(*beat), 1);
  EXPECT_EQ(When("next_run_at", "crawl_tasks WHERE id = 7"), "2026-05-01T10:05:00Z");
  EXPECT_EQ(When("next_run_at", "crawl_tasks WHERE id = 8"), "null");
  auto earliest = beat->EarliestDue();
  ASSERT_TRUE(earliest.ok());
  ASSERT_TRUE(earliest->has_value());
  EXPECT_EQ(FormatIso8601(**earliest), "2026-05-01T10:05:00.000000+00:00");

  clock_.Set(T("2026-05-01T10:04:59.999Z"));
  EXPECT_EQ(Fire(*beat).fired, 0);
  clock_.Set(T("2026-05-01T10:05:00Z"));
  EXPECT_EQ(Fire(*beat).fired, 1);
  EXPECT_EQ(Fire(*beat).fired, 0) << "a due time fires once";
  EXPECT_EQ(When("next_run_at", "crawl_tasks WHERE id = 7"), "2026-05-01T10:10:00Z");
  EXPECT_EQ(When("last_run_at", "crawl_tasks WHERE id = 7"), "2026-05-01T10:05:00Z");
  EXPECT_EQ(When("updated_at", "crawl_tasks WHERE id = 7"), "2026-05-01T10:02:00Z")
      << "beat's own writes do not count as changes";

  auto messages = Messages();
  ASSERT_EQ(messages.size(), 1u);
  const auto& m = messages[0];
  EXPECT_EQ(m.task, kExecuteCrawlTask);
  EXPECT_EQ(m.args, json::array({7}));
  EXPECT_EQ(m.kwargs, json::object());
  EXPECT_EQ(m.id, FireTaskId(7, T("2026-05-01T10:05:00Z")));
  EXPECT_EQ(m.root_id, m.id);
  EXPECT_EQ(m.custom_headers["x_celeriac_trigger"], "beat");
  EXPECT_EQ(m.custom_headers["x_celeriac_schedule"], 7);
  EXPECT_EQ(m.custom_headers["x_celeriac_scheduled_for"], "2026-05-01T10:05:00.000000+00:00");
  EXPECT_EQ(m.custom_headers["periodic_task_name"], "every five");
  EXPECT_EQ(Count("SELECT count(*) FROM beat_fires WHERE crawl_task_id = 7 AND "
                  "due_at = '2026-05-01T10:05:00Z' AND celery_task_id = '" + m.id + "'"),
            1);

  // The worker's task records the run as beat's, for that due time.
  NoDiscovery discovery;
  CrawlTasks tasks(pool(), broker_, discovery, CrawlTaskOptions{});
  std::atomic<bool> cancelled{false};
  TaskContext ctx(m, cancelled);
  const auto outcome = tasks.ExecuteCrawlTask(ctx);
  ASSERT_TRUE(std::holds_alternative<Json>(outcome));
  EXPECT_EQ(Text("SELECT trigger FROM crawl_runs WHERE celery_task_id = '" + m.id + "'"), "beat");
  EXPECT_EQ(When("scheduled_for", "crawl_runs WHERE celery_task_id = '" + m.id + "'"),
            "2026-05-01T10:05:00Z");
  // Delivered twice (a beat died between the confirm and its commit): still one run.
  TaskContext again(m, cancelled);
  ASSERT_TRUE(std::holds_alternative<Json>(tasks.ExecuteCrawlTask(again)));
  EXPECT_EQ(Count("SELECT count(*) FROM crawl_runs WHERE crawl_task_id = 7"), 1);

  // Set back by hand: that due time was fired already, so it is not fired again.
  Exec("UPDATE crawl_tasks SET next_run_at = '2026-05-01T10:05:00Z' WHERE id = 7");
  EXPECT_EQ(Fire(*beat).fired, 0);
  EXPECT_EQ(beat->stats().already, 1);
  EXPECT_EQ(When("next_run_at", "crawl_tasks WHERE id = 7"), "2026-05-01T10:10:00Z");
}

TEST_F(BeatTest, ChangesMadeWithPlainSqlAreAnnouncedAndTakeEffect) {
  // updated_at is the time a change counts from; this test pins it to its manual clock.
  Exec("ALTER TABLE crawl_tasks DISABLE TRIGGER crawl_tasks_touch");
  pg::Listener listener(pool());
  ASSERT_TRUE(listener.Listen(kChannel).ok());
  auto beat = MakeBeat();
  auto heard = [&] {
    std::set<std::string> out;
    for (int i = 0; i < 20; ++i) {
      auto got = listener.Wait(i == 0 ? 500ms : 50ms);
      EXPECT_TRUE(got.ok());
      if (!got.ok() || got->empty()) break;
      out.insert(got->begin(), got->end());
    }
    return out;
  };

  Exec("INSERT INTO crawl_tasks (id, name, data_source_ids, schedule, updated_at) VALUES "
       "(1, 'a', '{1}', '0 * * * *', '2026-05-01T10:02:00Z'), "
       "(2, 'b', '{1}', '0 * * * *', '2026-05-01T10:02:00Z'), "
       "(3, 'c', '{1}', '0 * * * *', '2026-05-01T10:02:00Z')");
  EXPECT_EQ(heard(), (std::set<std::string>{"1", "2", "3"}));
  EXPECT_EQ(Schedule(*beat), 3);
  EXPECT_TRUE(heard().empty()) << "beat's own writes are not announced";
  EXPECT_EQ(When("min(next_run_at)", "crawl_tasks"), "2026-05-01T11:00:00Z");

  // Changed: to every 10 minutes (announced, next due time recomputed from the change);
  // disabled; deleted; renamed (not announced: it changes no due time).
  Exec("UPDATE crawl_tasks SET schedule = '*/10 * * * *', updated_at = '2026-05-01T10:21:00Z' "
       "WHERE id = 1");
  Exec("UPDATE crawl_tasks SET enabled = false WHERE id = 2");
  Exec("DELETE FROM crawl_tasks WHERE id = 3");
  Exec("UPDATE crawl_tasks SET name = 'renamed' WHERE id = 1");
  EXPECT_EQ(heard(), (std::set<std::string>{"1", "2", "3"}));
  EXPECT_EQ(When("next_run_at", "crawl_tasks WHERE id = 1"), "null");
  EXPECT_EQ(Schedule(*beat), 1);
  EXPECT_EQ(When("next_run_at", "crawl_tasks WHERE id = 1"), "2026-05-01T10:30:00Z");
  EXPECT_EQ(When("next_run_at", "crawl_tasks WHERE id = 2"), "null");

  clock_.Set(T("2026-05-01T11:00:00Z"));
  EXPECT_EQ(Fire(*beat).fired, 1) << "only task 1 (its 10:30 run, caught up)";
  auto messages = Messages();
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0].args, json::array({1}));
  EXPECT_EQ(messages[0].custom_headers["x_celeriac_scheduled_for"],
            "2026-05-01T11:00:00.000000+00:00")
      << "10:30, 10:40 ... 11:00 missed: folded into the latest";

  // Enabled again at 12:34: counts from then, no catch-up for the disabled hours.
  Exec("UPDATE crawl_tasks SET enabled = true, updated_at = '2026-05-01T12:34:00Z' WHERE id = 2");
  EXPECT_EQ(heard(), (std::set<std::string>{"2"}));
  EXPECT_EQ(Schedule(*beat), 1);
  EXPECT_EQ(When("next_run_at", "crawl_tasks WHERE id = 2"), "2026-05-01T13:00:00Z");
}

TEST_F(BeatTest, MissedTimesFoldIntoOneRunUnlessOlderThanTheGrace) {
  Exec("INSERT INTO crawl_tasks (id, name, data_source_ids, schedule, next_run_at) VALUES "
       "(1, 'a', '{1}', '*/5 * * * *', '2026-05-01T10:00:00Z')");
  clock_.Set(T("2026-05-01T10:32:00Z"));  // 10:00 ... 10:30 missed while no beat ran
  auto beat = MakeBeat();
  EXPECT_EQ(Fire(*beat).fired, 1);
  EXPECT_EQ(When("due_at", "beat_fires"), "2026-05-01T10:30:00Z");
  EXPECT_EQ(When("missed_since", "beat_fires"), "2026-05-01T10:00:00Z");
  EXPECT_EQ(When("next_run_at", "crawl_tasks"), "2026-05-01T10:35:00Z");
  EXPECT_EQ(Messages().size(), 1u);

  BeatOptions strict;
  strict.catch_up_grace = 60s;
  auto grace = MakeBeat(strict);
  clock_.Set(T("2026-05-01T10:37:00Z"));  // 10:35 is two minutes old: skipped
  EXPECT_EQ(Fire(*grace).fired, 0);
  EXPECT_EQ(grace->stats().skipped, 1);
  EXPECT_EQ(When("next_run_at", "crawl_tasks"), "2026-05-01T10:40:00Z");
  clock_.Set(T("2026-05-01T10:40:30Z"));  // 30 s late: within the grace
  EXPECT_EQ(Fire(*grace).fired, 1);
  EXPECT_EQ(Messages().size(), 1u);

  // A row written a week ago while no beat ran has no next due time yet: it counts from when a
  // beat first sees it (less 2 minutes), so last week's times are not caught up.
  Exec("INSERT INTO crawl_tasks (id, name, data_source_ids, schedule, updated_at) VALUES "
       "(2, 'old', '{1}', '0 * * * *', '2026-04-24T10:00:00Z'), "
       "(3, 'just before', '{1}', '0 * * * *', '2026-05-01T10:59:30Z')");
  clock_.Set(T("2026-05-01T11:00:20Z"));
  EXPECT_EQ(Schedule(*beat), 2);
  EXPECT_EQ(When("next_run_at", "crawl_tasks WHERE id = 2"), "2026-05-01T11:00:00Z")
      << "counts from 10:58:20: the 11:00 run a beat saw coming is still fired";
  EXPECT_EQ(When("next_run_at", "crawl_tasks WHERE id = 3"), "2026-05-01T11:00:00Z");
  EXPECT_EQ(Fire(*beat).fired, 3) << "2, 3 and task 1 (10:45 and 11:00 folded)";
  EXPECT_EQ(Count("SELECT count(*) FROM beat_fires WHERE crawl_task_id IN (2, 3) AND "
                  "due_at = '2026-05-01T11:00:00Z' AND missed_since IS NULL"),
            2);
}

TEST_F(BeatTest, OldFireRecordsAreDeleted) {
  Exec("INSERT INTO beat_fires (crawl_task_id, due_at, celery_task_id, fired_at, published_at, "
       "beat) VALUES (1, '2026-03-01T00:00:00Z', 'a', now(), now(), 'x'), "
       "(1, '2026-04-15T00:00:00Z', 'b', now(), now(), 'x')");
  auto beat = MakeBeat();
  auto n = beat->DeleteOldFires();
  ASSERT_TRUE(n.ok()) << n.error().message();
  EXPECT_EQ(*n, 1);
  EXPECT_EQ(Text("SELECT string_agg(celery_task_id, ',') FROM beat_fires"), "b");
}

TEST_F(BeatTest, DstOnAManualClockFiresEachLocalTimeOnce) {
  // updated_at is the time a change counts from; this test pins it to its manual clock.
  Exec("ALTER TABLE crawl_tasks DISABLE TRIGGER crawl_tasks_touch");
  Exec("INSERT INTO crawl_tasks (id, name, data_source_ids, schedule, timezone, updated_at) "
       "VALUES (1, 'berlin', '{1}', '30 2 * * *', 'Europe/Berlin', '2026-03-28T12:00:00Z')");
  clock_.Set(T("2026-03-28T12:00:00Z"));
  auto beat = MakeBeat();
  EXPECT_EQ(Schedule(*beat), 1);
  // Spring: 02:30 does not exist on 29 March; it fires once at 03:00 CEST (01:00 UTC).
  for (clock_.Set(T("2026-03-29T00:00:00Z")); clock_.Now() < T("2026-03-29T03:00:00Z");
       clock_.Advance(60s))
    Fire(*beat);
  // Autumn: 02:30 happens twice on 25 October; it fires once, at the first (00:30 UTC).
  Exec("UPDATE crawl_tasks SET next_run_at = NULL, updated_at = '2026-10-24T12:00:00Z'");
  EXPECT_EQ(Schedule(*beat), 1);
  for (clock_.Set(T("2026-10-25T00:00:00Z")); clock_.Now() < T("2026-10-25T03:00:00Z");
       clock_.Advance(60s))
    Fire(*beat);
  EXPECT_EQ(Text("SELECT string_agg(to_char(due_at AT TIME ZONE 'UTC', 'MM-DD HH24:MI'), ',' "
                 "ORDER BY due_at) FROM beat_fires"),
            "03-29 01:00,10-25 00:30");
  EXPECT_EQ(Messages().size(), 2u);
}

TEST_F(BeatTest, BadRowsAlreadyPresentAreLoggedAndSkipped) {
  // Rows written before migration 0003 checked schedules.
  Exec("ALTER TABLE crawl_tasks DISABLE TRIGGER crawl_tasks_schedule");
  Exec("INSERT INTO crawl_tasks (id, name, data_source_ids, schedule, updated_at, next_run_at) "
       "VALUES (1, 'bad', '{1}', '99 * * * *', '2026-05-01T10:00:00Z', NULL), "
       "(2, 'bad due', '{1}', '* * 31 2 *', '2026-05-01T10:00:00Z', '2026-05-01T10:01:00Z'), "
       "(3, 'good', '{1}', '*/5 * * * *', '2026-05-01T10:00:00Z', NULL)");
  Exec("ALTER TABLE crawl_tasks ENABLE TRIGGER crawl_tasks_schedule");
  auto beat = MakeBeat();
  EXPECT_EQ(Schedule(*beat), 1);
  EXPECT_EQ(Schedule(*beat), 0) << "a bad row is not retried until it changes";
  clock_.Set(T("2026-05-01T10:05:00Z"));
  EXPECT_EQ(Fire(*beat).fired, 1);
  EXPECT_EQ(beat->stats().bad, 2);
  EXPECT_EQ(When("next_run_at", "crawl_tasks WHERE id = 2"), "null");
  auto messages = Messages();
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0].args, json::array({3}));
}

TEST_F(BeatTest, TwoBeatsShareABurstAndFireEachDueTimeOnce) {
  Exec("INSERT INTO crawl_tasks (name, data_source_ids, schedule, next_run_at) "
       "SELECT 'burst ' || i, '{1}', '*/5 * * * *', '2026-05-01T10:05:00Z' "
       "FROM generate_series(1, 300) i");
  clock_.Set(T("2026-05-01T10:05:00.500Z"));
  BeatOptions small;
  small.batch = 40;
  auto a = MakeBeat(small);
  small.name = "other-beat";
  auto b = MakeBeat(small);
  FireReport ra, rb;
  std::thread ta([&] { ra = Fire(*a); });
  std::thread tb([&] { rb = Fire(*b); });
  ta.join();
  tb.join();
  EXPECT_EQ(ra.fired + rb.fired, 300);
  auto messages = Messages();
  std::set<std::string> ids;
  for (const auto& m : messages) ids.insert(m.id);
  EXPECT_EQ(messages.size(), 300u);
  EXPECT_EQ(ids.size(), 300u);
  EXPECT_EQ(Count("SELECT count(*) FROM beat_fires"), 300);
  EXPECT_EQ(Count("SELECT count(*) FROM crawl_tasks WHERE next_run_at = '2026-05-01T10:10:00Z'"),
            300);
}

TEST_F(BeatTest, TheBuiltInBackendCleanupFiresDailyAtFourOnceAcrossBeats) {
  // The entry migrations/0007 created, as Celery beat's default; the time its schedule counts
  // from pinned to this test's clock.
  EXPECT_EQ(Text("SELECT concat_ws(' | ', task, schedule, timezone, args::text, kwargs::text, "
                 "enabled::text) FROM beat_entries WHERE name = 'celery.backend_cleanup'"),
            "celery.backend_cleanup | 0 4 * * * | UTC | [] | {} | true");
  Exec("ALTER TABLE beat_entries DISABLE TRIGGER beat_entries_touch");
  Exec("UPDATE beat_entries SET updated_at = '2026-05-01T10:00:00Z'");
  auto a = MakeBeat();
  BeatOptions other;
  other.name = "other-beat";
  auto b = MakeBeat(other);
  EXPECT_EQ(ScheduleEntries(*a), 1);
  EXPECT_EQ(ScheduleEntries(*b), 0) << "the first beat's value stands";
  EXPECT_EQ(When("next_run_at", "beat_entries"), "2026-05-02T04:00:00Z");
  auto earliest = a->EarliestDue();
  ASSERT_TRUE(earliest.ok() && earliest->has_value());
  EXPECT_EQ(FormatIso8601(**earliest), "2026-05-02T04:00:00.000000+00:00");

  clock_.Set(T("2026-05-02T03:59:59.999Z"));
  EXPECT_EQ(FireEntries(*a).fired, 0);
  EXPECT_EQ(Fire(*a).fired, 0) << "crawl task firing leaves entries alone";
  clock_.Set(T("2026-05-02T04:00:00.500Z"));
  FireReport ra, rb;
  std::thread ta([&] { ra = FireEntries(*a); });
  std::thread tb([&] { rb = FireEntries(*b); });
  ta.join();
  tb.join();
  EXPECT_EQ(ra.fired + rb.fired, 1) << "two beats, one firing";
  EXPECT_EQ(FireEntries(*a).fired, 0) << "a due time fires once";
  EXPECT_EQ(When("next_run_at", "beat_entries"), "2026-05-03T04:00:00Z");
  EXPECT_EQ(When("last_run_at", "beat_entries"), "2026-05-02T04:00:00Z");
  EXPECT_EQ(Count("SELECT count(*) FROM beat_entry_fires WHERE entry = 'celery.backend_cleanup' "
                  "AND due_at = '2026-05-02T04:00:00Z' AND missed_since IS NULL"),
            1);

  // The message is Celery's own task, as a Python beat sends it.
  auto messages = Messages();
  ASSERT_EQ(messages.size(), 1u);
  const auto& m = messages[0];
  EXPECT_EQ(m.task, "celery.backend_cleanup");
  EXPECT_EQ(m.args, json::array());
  EXPECT_EQ(m.kwargs, json::object());
  EXPECT_EQ(m.id, EntryTaskId("celery.backend_cleanup", T("2026-05-02T04:00:00Z")));
  EXPECT_EQ(m.custom_headers["periodic_task_name"], "celery.backend_cleanup");
  EXPECT_EQ(Text("SELECT celery_task_id FROM beat_entry_fires"), m.id);
  // The worker's task runs retention on it.
  worker::TaskRegistry registry;
  worker::RegisterBuiltinTasks(registry, MakeBackendCleanup(RetentionSettings{}, pool(), clock_));
  std::atomic<bool> cancelled{false};
  TaskContext ctx(m, cancelled);
  const auto outcome = registry.Find(m.task)->fn(ctx);
  ASSERT_TRUE(std::holds_alternative<Json>(outcome));
  EXPECT_EQ(std::get<Json>(outcome)["complete"], true);
  EXPECT_EQ(std::get<Json>(outcome)["deleted"]["task_results"], 0);

  // Set back by hand: already fired, not again. Missed days fold into one run.
  Exec("UPDATE beat_entries SET next_run_at = '2026-05-02T04:00:00Z'");
  EXPECT_EQ(FireEntries(*a).fired, 0);
  EXPECT_EQ(a->stats().already, 1);
  clock_.Set(T("2026-05-06T09:00:00Z"));
  EXPECT_EQ(FireEntries(*a).fired, 1);
  EXPECT_EQ(When("max(due_at)", "beat_entry_fires"), "2026-05-06T04:00:00Z");
  EXPECT_EQ(When("max(missed_since)", "beat_entry_fires"), "2026-05-03T04:00:00Z");
  EXPECT_EQ(Messages().size(), 1u);

  // Changed with plain SQL: announced, refused when invalid, next due time computed again.
  pg::Listener listener(pool());
  ASSERT_TRUE(listener.Listen(kChannel).ok());
  EXPECT_NE(Refusal("UPDATE beat_entries SET schedule = '0 25 * * *'")
                .find("beat_entries.schedule: invalid cron expression \"0 25 * * *\""),
            std::string::npos);
  EXPECT_NE(Refusal("UPDATE beat_entries SET timezone = 'Mars/Olympus'")
                .find("unknown time zone \"Mars/Olympus\""),
            std::string::npos);
  Exec("UPDATE beat_entries SET schedule = '30 3 * * *', timezone = 'Europe/Berlin', "
       "updated_at = '2026-05-06T09:00:00Z'");
  auto heard = listener.Wait(500ms);
  ASSERT_TRUE(heard.ok());
  EXPECT_EQ(*heard, std::vector<std::string>{"entry:celery.backend_cleanup"});
  EXPECT_EQ(When("next_run_at", "beat_entries"), "null");
  EXPECT_EQ(ScheduleEntries(*a), 1);
  EXPECT_EQ(When("next_run_at", "beat_entries"), "2026-05-07T01:30:00Z") << "03:30 CEST";
  // Disabled: never fired.
  Exec("UPDATE beat_entries SET enabled = false");
  clock_.Set(T("2026-05-08T00:00:00Z"));
  EXPECT_EQ(ScheduleEntries(*a), 0);
  EXPECT_EQ(FireEntries(*a).fired, 0);
  EXPECT_EQ(Messages().size(), 0u);
}

}  // namespace
}  // namespace celeriac::orchestrator::beat
