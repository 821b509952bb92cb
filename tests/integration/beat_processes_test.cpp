// Three real `orchestrator beat` processes on one schema and one RabbitMQ queue, SIGKILLed at
// random moments (half of them just after a due time, while firing) and restarted: every due
// time of every task is fired exactly once (beat_fires), none is lost, none is folded into a
// later one, and every message that reached the queue carries the task id of its due time, so
// the worker's unique crawl_runs.celery_task_id makes any duplicate delivery one run.
//
// Five-field cron has minute resolution, so the beats run on a scaled clock (--clock-scale,
// the same origin in every process): one cron minute passes every 5 real seconds.

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>

#include <cstdio>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "core/base/ids.hpp"
#include "core/broker/broker_factory.hpp"
#include "core/celery/codec.hpp"
#include "orchestrator/beat/beat.hpp"
#include "orchestrator/beat/schedule.hpp"
#include "tests/support/amqp_test.hpp"
#include "tests/support/paths.hpp"
#include "tests/support/pg_test.hpp"

extern char** environ;

namespace celeriac::orchestrator::beat {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::ordered_json;

constexpr double kScale = 12.0;  // a cron minute every 5 s

// A child process with its output in a log file.
class Child {
 public:
  Child(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
        const std::string& log) {
    std::vector<std::string> env_strings;
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string kv(*e);
      if (!env.count(kv.substr(0, kv.find('=')))) env_strings.push_back(kv);
    }
    for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
    std::vector<char*> args, envp;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    for (auto& e : env_strings) envp.push_back(e.data());
    envp.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                     0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    if (posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), envp.data()) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
  }
  ~Child() { Signal(SIGKILL); }
  pid_t pid() const { return pid_; }
  // Sends `sig` and reaps; returns the exit status (or -1).
  int Signal(int sig) {
    if (pid_ <= 0) return -1;
    kill(pid_, sig);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }

 private:
  pid_t pid_ = -1;
};

class BeatProcessesTest : public testing::PgTest {};

TEST_F(BeatProcessesTest, ThreeBeatsKilledAtRandomFireEveryDueTimeExactlyOnce) {
  MigrateSchema();
  ASSERT_FALSE(HasFatalFailure());
  const std::string broker_url = testing::BrokerUrl();
  ASSERT_FALSE(broker_url.empty()) << "CELERIAC_BROKER_URL is not set (./dev up)";
  const std::string queue = "t-beat-" + NewUuid4();

  // The scaled clock starts at the next whole real second; due times start two cron minutes on.
  using std::chrono::floor;
  const auto origin = floor<std::chrono::seconds>(std::chrono::system_clock::now()) + 1s;
  ScaledClock clock(origin, kScale);
  const auto first_due = floor<std::chrono::minutes>(origin) + 2min;
  const std::map<int64_t, std::string> tasks = {
      {1, "* * * * *"}, {2, "* * * * *"},   {3, "* * * * *"},
      {4, "*/2 * * * *"}, {5, "1-59/2 * * * *"}, {6, "*/3 * * * *"}};
  std::map<int64_t, Schedule> schedules;
  Exec("INSERT INTO data_sources (id, name) VALUES (1, 'shop')");
  // This test counts crawl task firings only; the built-in daily celery.backend_cleanup would
  // add a message of its own when the scaled clock passes 04:00 UTC (beat_test.cpp tests it).
  Exec("UPDATE beat_entries SET enabled = false");
  for (const auto& [id, expr] : tasks) {
    schedules.emplace(id, *Schedule::Make(expr, "UTC"));
    const auto next = *schedules.at(id).NextAfter(first_due - 1s);
    Exec("INSERT INTO crawl_tasks (id, name, data_source_ids, schedule, next_run_at) VALUES (" +
         std::to_string(id) + ", 'task " + std::to_string(id) + "', '{1}', '" + expr + "', '" +
         FormatIso8601(next) + "')");
  }

  // Everything that reaches the queue, as it arrives.
  auto consumer_broker = broker::MakeBroker(broker_url);
  ASSERT_TRUE(consumer_broker.ok());
  auto& consumer = **consumer_broker;
  ASSERT_TRUE(consumer.Connect().ok());
  broker::QueueSpec spec;
  spec.name = spec.exchange = spec.routing_key = queue;
  ASSERT_TRUE(consumer.Declare(spec).ok());
  std::mutex mutex;
  std::vector<celery::TaskMessage> received;
  broker::ConsumerId consumer_id = 0;
  auto consuming = consumer.Consume({queue, 0, ""}, [&](broker::Delivery&& d) {
    auto decoded = celery::DecodeTask(d.properties, d.body);
    std::lock_guard lock(mutex);
    if (decoded.ok()) received.push_back(decoded.message());
    (void)consumer.Ack(consumer_id, d.delivery_tag);
  });
  ASSERT_TRUE(consuming.ok());
  consumer_id = *consuming;

  const std::string log = "/tmp/celeriac-beat-kill-" + schema_ + ".log";
  const std::vector<std::string> argv = {
      (testing::BinDir() / "orchestrator").string(), "beat", "-Q", queue, "--clock-scale",
      std::to_string(kScale), "--clock-origin", FormatIso8601(origin)};
  const std::map<std::string, std::string> env = {{"CELERIAC_DATABASE_URL", SchemaUrl()},
                                                   {"CELERIAC_BROKER_URL", broker_url},
                                                   {"CELERIAC_LOG_LEVEL", "info"}};
  std::vector<std::unique_ptr<Child>> beats;
  for (int i = 0; i < 3; ++i) {
    beats.push_back(std::make_unique<Child>(argv, env, log));
    ASSERT_GT(beats.back()->pid(), 0);
  }

  // ~40 s: kill one beat at a time at a random moment and start a new one in its place. Half
  // the kills land 0-40 ms after a due time, when a beat is claiming, publishing or committing
  // (a firing takes about 10 ms here).
  std::mt19937 rng(std::random_device{}());
  const auto real_end = std::chrono::system_clock::now() + 40s;
  int kills = 0;
  while (std::chrono::system_clock::now() < real_end) {
    std::chrono::milliseconds pause(std::uniform_int_distribution<int>(700, 2500)(rng));
    if (rng() % 2 == 0) {
      const auto now = clock.Now();
      const auto next_minute = floor<std::chrono::minutes>(now) + 1min;
      pause = clock.RealDelay(next_minute - now) +
              std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 40)(rng));
    }
    std::this_thread::sleep_for(pause);
    auto& victim = beats[rng() % beats.size()];
    victim->Signal(SIGKILL);
    ++kills;
    victim = std::make_unique<Child>(argv, env, log);
    ASSERT_GT(victim->pid(), 0);
  }
  // Every due time up to here must be fired by the beats still running.
  const auto checked_until = clock.Now() - 30s;
  std::this_thread::sleep_for(clock.RealDelay(45s));
  for (auto& b : beats) {
    const int status = b->Signal(SIGTERM);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "a beat did not stop cleanly on SIGTERM (log: " << log << ")";
  }
  std::this_thread::sleep_for(500ms);
  (void)consumer.Cancel(consumer_id);
  consumer.Close();

  // What was fired, per task.
  std::map<int64_t, std::vector<Clock::WallTime>> fired;
  std::map<std::string, std::pair<int64_t, Clock::WallTime>> fire_of_task_id;
  int64_t folded = 0;
  auto rows = pool().Transact<int64_t>([&](pqxx::transaction_base& tx) -> Result<int64_t> {
    for (const auto& r : tx.exec(
             "SELECT crawl_task_id, (extract(epoch from due_at) * 1000000)::bigint, "
             "celery_task_id, missed_since IS NOT NULL FROM beat_fires "
             "ORDER BY crawl_task_id, due_at")) {
      const auto due = Clock::WallTime(std::chrono::duration_cast<Clock::WallTime::duration>(
          std::chrono::microseconds(r[1].as<int64_t>())));
      fired[r[0].as<int64_t>()].push_back(due);
      fire_of_task_id[r[2].as<std::string>()] = {r[0].as<int64_t>(), due};
      if (r[3].as<bool>()) ++folded;
    }
    return 0;
  });
  ASSERT_TRUE(rows.ok()) << rows.error().message();
  EXPECT_EQ(folded, 0) << "a due time was folded into a later one while beats were running";

  int64_t expected_total = 0;
  for (const auto& [id, schedule] : schedules) {
    std::vector<Clock::WallTime> want;
    for (auto t = schedule.NextAfter(first_due - 1s); t && *t <= checked_until;
         t = schedule.NextAfter(*t))
      want.push_back(*t);
    ASSERT_GE(want.size(), 2u) << "the test ran too few cron minutes";
    expected_total += static_cast<int64_t>(want.size());
    const auto& got = fired[id];
    ASSERT_GE(got.size(), want.size()) << "task " << id << ": due times lost (log: " << log << ")";
    for (size_t i = 0; i < want.size(); ++i)
      EXPECT_EQ(FormatIso8601(got[i]), FormatIso8601(want[i])) << "task " << id;
    for (size_t i = 0; i < got.size(); ++i) {  // and later ones are real due times too
      const auto prev = i == 0 ? first_due - 1s : got[i - 1];
      EXPECT_EQ(FormatIso8601(got[i]), FormatIso8601(*schedule.NextAfter(prev))) << "task " << id;
    }
  }

  // Every fired due time reached the queue, under its own task id; anything delivered twice
  // carries the same id (the worker runs it once).
  std::map<std::string, int> deliveries;
  {
    std::lock_guard lock(mutex);
    for (const auto& m : received) {
      ++deliveries[m.id];
      const auto it = fire_of_task_id.find(m.id);
      ASSERT_NE(it, fire_of_task_id.end()) << "message " << m.id << " fired no due time";
      EXPECT_EQ(m.id, FireTaskId(it->second.first, it->second.second));
      EXPECT_EQ(m.args, json::array({it->second.first}));
      EXPECT_EQ(m.custom_headers["x_celeriac_scheduled_for"], FormatIso8601(it->second.second));
    }
  }
  int duplicates = 0;
  for (const auto& [tid, fire] : fire_of_task_id) {
    EXPECT_GE(deliveries[tid], 1) << "due time " << FormatIso8601(fire.second) << " of task "
                                  << fire.first << " was never published";
    duplicates += std::max(0, deliveries[tid] - 1);
  }
  std::cout << "beat kill test: " << kills << " kills, " << fire_of_task_id.size()
            << " due times fired (" << expected_total << " checked), " << duplicates
            << " duplicate deliveries (same task id)\n";
  EXPECT_GE(kills, 10);

  if (!HasFailure()) std::remove(log.c_str());
  testing::RawAmqp raw(broker_url);
  raw.DeleteQueue(queue);
  raw.DeleteExchange(queue);
}

}  // namespace
}  // namespace celeriac::orchestrator::beat
