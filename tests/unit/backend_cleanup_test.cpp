// celery.backend_cleanup without Postgres: [retention] read and checked in both binaries, its
// ages handed to retention, the task's result (checked against its schema), cancellation and
// failure; and beat's pure planning of a due row, for the built-in daily 04:00 entry.

#include <atomic>
#include <map>

#include <gtest/gtest.h>

#include "core/celery/codec.hpp"
#include "core/config/sections.hpp"
#include "extractor/pipeline/settings.hpp"
#include "orchestrator/beat/beat.hpp"
#include "orchestrator/commands/settings.hpp"
#include "orchestrator/tasks/backend_cleanup.hpp"
#include "schemas/schemas.hpp"

namespace celeriac::orchestrator {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::ordered_json;

config::EnvLookup Env(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

Clock::WallTime T(const char* iso) { return *ParseIso8601(iso); }

TEST(RetentionSettings, DefaultsAsCeleryAndTheIssueSay) {
  auto s = config::Parse<Settings>("", "test", Env({}));
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_EQ(s->retention.task_results_hours, 24) << "Celery's result_expires: 1 day";
  EXPECT_EQ(s->retention.crawl_requests_hours, 7 * 24);
  EXPECT_EQ(s->retention.crawl_hosts_hours, 7 * 24);
  EXPECT_EQ(s->retention.dead_letters_hours, 30 * 24);
  EXPECT_EQ(s->retention.batch_size, 1000);
  const auto ages = RetentionAgesOf(s->retention);
  EXPECT_EQ(ages.task_results, 86400s);
  EXPECT_EQ(ages.crawl_requests, 604800s);
  EXPECT_EQ(ages.crawl_hosts, 604800s);
  EXPECT_EQ(ages.dead_letters, 2592000s);
}

TEST(RetentionSettings, FileAndEnvironmentSetEachAgeAndZeroKeepsForever) {
  auto s = config::Parse<Settings>(
      "[retention]\ntask_results_hours = 0\ncrawl_hosts_hours = 48\nbatch_size = 50\n",
      "celeriac.toml", Env({{"CELERIAC_RETENTION_CRAWL_REQUESTS_HOURS", "12"}}));
  ASSERT_TRUE(s.ok()) << s.error().message();
  const auto ages = RetentionAgesOf(s->retention);
  EXPECT_EQ(ages.task_results, 0s);
  EXPECT_EQ(ages.crawl_requests, 12h);
  EXPECT_EQ(ages.crawl_hosts, 48h);
  EXPECT_EQ(ages.dead_letters, 720h);
  EXPECT_EQ(s->retention.batch_size, 50);

  for (const auto& [file, key] :
       std::vector<std::pair<std::string, std::string>>{
           {"[retention]\ndead_letters_hours = -1\n", "retention.dead_letters_hours"},
           {"[retention]\nbatch_size = 0\n", "retention.batch_size"},
           {"[retention]\ntask_results_days = 1\n", "unknown key retention.task_results_days"}}) {
    auto bad = config::Parse<Settings>(file, "celeriac.toml", Env({}));
    ASSERT_FALSE(bad.ok()) << file;
    EXPECT_NE(bad.error().message().find(key), std::string::npos) << bad.error().message();
    // The extractor leaves the section to the orchestrator.
    auto extractor = config::Parse<extractor::Settings>(file, "celeriac.toml", Env({}));
    EXPECT_TRUE(extractor.ok()) << extractor.error().message();
  }
}

class BackendCleanupTest : public ::testing::Test {
 protected:
  // Runs the task as the worker does, with `run` standing for the database.
  worker::TaskOutcome RunTask(const RetentionSettings& settings, RetentionRun run) {
    worker::TaskRegistry registry;
    worker::RegisterBuiltinTasks(registry, MakeBackendCleanup(settings, std::move(run)));
    const auto task = registry.Find("celery.backend_cleanup");
    EXPECT_NE(task, nullptr);
    EXPECT_EQ(task->options.max_retries, 0) << "never retried: tomorrow's run does the rest";
    EXPECT_FALSE(task->options.acks_late);
    // As a Python beat sends it: no arguments.
    const auto message = celery::NewTask("celery.backend_cleanup", json::array(), json::object());
    worker::TaskContext ctx(message, cancelled_);
    return task->fn(ctx);
  }

  std::atomic<bool> cancelled_{false};
};

TEST_F(BackendCleanupTest, HandsTheAgesToRetentionAndReturnsTheCounts) {
  RetentionSettings settings;
  settings.dead_letters_hours = 0;
  settings.batch_size = 250;
  state::RetentionOptions seen;
  const auto outcome = RunTask(settings, [&](const state::RetentionOptions& o,
                                              state::RetentionCounts*) {
    seen = o;
    state::RetentionCounts c;
    c.crawl_requests = 3400;
    c.crawl_hosts = 7;
    c.task_results = 12;
    return Result<state::RetentionCounts>(c);
  });
  ASSERT_TRUE(std::holds_alternative<worker::Json>(outcome));
  const auto& result = std::get<worker::Json>(outcome);
  EXPECT_EQ(seen.ages.task_results, 24h);
  EXPECT_EQ(seen.ages.crawl_requests, 168h);
  EXPECT_EQ(seen.ages.dead_letters, 0s);
  EXPECT_EQ(seen.batch, 250);
  EXPECT_EQ(result.dump(),
            json::parse(R"({"deleted": {"crawl_requests": 3400, "crawl_hosts": 7,
                                        "task_results": 12, "dead_letters": 0},
                            "complete": true,
                            "max_age_s": {"crawl_requests": 604800, "crawl_hosts": 604800,
                                          "task_results": 86400, "dead_letters": 0}})")
                .dump());
  auto schema = schemas::Get("tasks/celery.backend_cleanup.result");
  ASSERT_TRUE(schema.ok()) << schema.error().message();
  const auto valid = (*schema)->Validate(nlohmann::json::parse(result.dump()));
  EXPECT_TRUE(valid.ok()) << (valid.ok() ? "" : valid.error().message());
}

TEST_F(BackendCleanupTest, StopsBetweenBatchesWhenCancelled) {
  const auto outcome = RunTask(RetentionSettings{}, [&](const state::RetentionOptions& o,
                                                        state::RetentionCounts*) {
    state::RetentionCounts c;
    EXPECT_FALSE(o.stop());
    c.task_results = 1000;  // a batch, then the soft time limit
    cancelled_ = true;
    EXPECT_TRUE(o.stop());
    c.complete = false;
    return Result<state::RetentionCounts>(c);
  });
  ASSERT_TRUE(std::holds_alternative<worker::Json>(outcome));
  EXPECT_EQ(std::get<worker::Json>(outcome)["complete"], false);
  EXPECT_EQ(std::get<worker::Json>(outcome)["deleted"]["task_results"], 1000);
}

TEST_F(BackendCleanupTest, ADatabaseErrorFailsWithoutRetry) {
  const auto outcome = RunTask(RetentionSettings{}, [&](const state::RetentionOptions&,
                                                        state::RetentionCounts* so_far) {
    so_far->task_results = 5;
    return Result<state::RetentionCounts>(
        Error(ErrorCode::kUnavailable, "deleting dead_letters: connection lost", true));
  });
  ASSERT_TRUE(std::holds_alternative<worker::TaskError>(outcome));
  const auto& e = std::get<worker::TaskError>(outcome);
  EXPECT_FALSE(e.retryable);
  EXPECT_NE(e.exception.exc_message.dump().find("deleting dead_letters: connection lost"),
            std::string::npos);
}

TEST(RetentionCounts, JsonNamesEveryTable) {
  state::RetentionCounts c;
  c.dead_letters = 2;
  c.complete = false;
  EXPECT_EQ(c.ToJson().dump(),
            R"({"deleted":{"crawl_requests":0,"crawl_hosts":0,"task_results":0,)"
            R"("dead_letters":2},"complete":false})");
  EXPECT_EQ(c.total(), 2);
}

// Beat's decision for one due row, as for the built-in entry celery.backend_cleanup
// ("0 4 * * *" in UTC, migrations/0007).
TEST(BeatPlanDue, TheDailyCleanupFiresAtFourAndMovesToTomorrow) {
  using beat::DuePlan;
  const auto on_time = beat::PlanDue("0 4 * * *", "UTC", T("2026-05-02T04:00:00Z"),
                                     T("2026-05-02T04:00:00.300Z"), 0s);
  EXPECT_EQ(on_time.kind, DuePlan::Kind::kFire);
  EXPECT_EQ(FormatIso8601(on_time.due_at), "2026-05-02T04:00:00.000000+00:00");
  EXPECT_FALSE(on_time.missed_since.has_value());
  ASSERT_TRUE(on_time.next.has_value());
  EXPECT_EQ(FormatIso8601(*on_time.next), "2026-05-03T04:00:00.000000+00:00");

  // Three days without a beat: one run, for the latest day, as Celery beat does.
  const auto late = beat::PlanDue("0 4 * * *", "UTC", T("2026-05-02T04:00:00Z"),
                                  T("2026-05-05T09:30:00Z"), 0s);
  EXPECT_EQ(late.kind, DuePlan::Kind::kFire);
  EXPECT_EQ(FormatIso8601(late.due_at), "2026-05-05T04:00:00.000000+00:00");
  ASSERT_TRUE(late.missed_since.has_value());
  EXPECT_EQ(FormatIso8601(*late.missed_since), "2026-05-02T04:00:00.000000+00:00");
  EXPECT_EQ(FormatIso8601(*late.next), "2026-05-06T04:00:00.000000+00:00");

  // Older than the catch-up grace: skipped, next at tomorrow's time.
  const auto skipped = beat::PlanDue("0 4 * * *", "UTC", T("2026-05-02T04:00:00Z"),
                                     T("2026-05-02T05:00:00Z"), 600s);
  EXPECT_EQ(skipped.kind, DuePlan::Kind::kSkip);
  EXPECT_EQ(FormatIso8601(*skipped.next), "2026-05-03T04:00:00.000000+00:00");

  // In a zone of the admin's choice (changed with SQL): 04:00 Berlin summer time is 02:00 UTC.
  const auto berlin = beat::PlanDue("0 4 * * *", "Europe/Berlin", T("2026-05-02T02:00:00Z"),
                                    T("2026-05-02T02:00:01Z"), 0s);
  EXPECT_EQ(berlin.kind, DuePlan::Kind::kFire);
  EXPECT_EQ(FormatIso8601(*berlin.next), "2026-05-03T02:00:00.000000+00:00");

  const auto bad = beat::PlanDue("0 4 * * *", "Mars/Olympus", T("2026-05-02T04:00:00Z"),
                                 T("2026-05-02T04:00:00Z"), 0s);
  EXPECT_EQ(bad.kind, DuePlan::Kind::kBad);
  EXPECT_NE(bad.why.find("Mars/Olympus"), std::string::npos) << bad.why;
  EXPECT_FALSE(bad.next.has_value());
}

TEST(BeatPlanDue, EntryTaskIdsAreTheSameInEveryBeatAndDifferPerDueTime) {
  const auto a = beat::EntryTaskId("celery.backend_cleanup", T("2026-05-02T04:00:00Z"));
  EXPECT_EQ(a, beat::EntryTaskId("celery.backend_cleanup", T("2026-05-02T04:00:00Z")));
  EXPECT_NE(a, beat::EntryTaskId("celery.backend_cleanup", T("2026-05-03T04:00:00Z")));
  EXPECT_NE(a, beat::FireTaskId(1, T("2026-05-02T04:00:00Z")));
}

}  // namespace
}  // namespace celeriac::orchestrator
