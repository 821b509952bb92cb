// Migrations against a real Postgres: applied once, safe twice and concurrently, and the tables
// of SPEC section 4 refuse bad rows.

#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <pqxx/pqxx>

#include "core/pg/migrations.hpp"
#include "migrations/migrations.hpp"
#include "tests/support/pg_test.hpp"

namespace celeriac {
namespace {

class MigrationsTest : public testing::PgTest {
 protected:
  std::vector<pg::Migration> Embedded() {
    auto migs = pg::LoadMigrations(EmbeddedMigrations());
    EXPECT_TRUE(migs.ok());
    return migs.ok() ? *migs : std::vector<pg::Migration>{};
  }

  void MigrateOk() {
    auto report = pg::Migrate(pool(), Embedded());
    ASSERT_TRUE(report.ok()) << report.error().message();
  }

  // Runs one statement in its own transaction and returns the error text, or "" on success.
  std::string Try(const std::string& sql) {
    try {
      Exec(sql);
      return "";
    } catch (const std::exception& e) {
      return e.what();
    }
  }

  int64_t Count(const std::string& sql) {
    pqxx::connection conn(SchemaUrl());
    pqxx::nontransaction tx(conn);
    return tx.exec1(sql)[0].as<int64_t>();
  }
};

TEST_F(MigrationsTest, AppliesAllThenNothingTheSecondTime) {
  const auto migs = Embedded();
  auto first = pg::Migrate(pool(), migs);
  ASSERT_TRUE(first.ok()) << first.error().message();
  EXPECT_EQ(first->applied.size(), migs.size());
  EXPECT_EQ(first->already_applied, 0u);
  auto second = pg::Migrate(pool(), migs);
  ASSERT_TRUE(second.ok()) << second.error().message();
  EXPECT_TRUE(second->applied.empty());
  EXPECT_EQ(second->already_applied, migs.size());
  EXPECT_EQ(Count("SELECT count(*) FROM celeriac_migrations"), static_cast<int64_t>(migs.size()));
}

TEST_F(MigrationsTest, ConcurrentRunsApplyEachMigrationOnce) {
  const auto migs = Embedded();
  constexpr int kProcesses = 4;
  std::vector<std::unique_ptr<pg::Pool>> pools;
  for (int i = 0; i < kProcesses; ++i) pools.push_back(std::make_unique<pg::Pool>(MakeOptions()));
  std::vector<Result<pg::MigrateReport>> results(kProcesses, Error(ErrorCode::kInternal, "unset"));
  std::vector<std::thread> threads;
  for (int i = 0; i < kProcesses; ++i)
    threads.emplace_back([&, i] { results[i] = pg::Migrate(*pools[i], migs); });
  for (auto& t : threads) t.join();
  size_t applied_total = 0;
  for (const auto& r : results) {
    ASSERT_TRUE(r.ok()) << r.error().message();
    applied_total += r->applied.size();
  }
  EXPECT_EQ(applied_total, migs.size()) << "each migration applied by exactly one runner";
  EXPECT_EQ(Count("SELECT count(*) FROM celeriac_migrations"), static_cast<int64_t>(migs.size()));
}

TEST_F(MigrationsTest, ChangedMigrationIsRefused) {
  auto migs = Embedded();
  MigrateOk();
  migs[0].sql += "\n-- edited";
  migs[0].checksum = "0000000000000000";
  auto report = pg::Migrate(pool(), migs);
  ASSERT_FALSE(report.ok());
  EXPECT_NE(report.error().message().find("changed after it was applied"), std::string::npos);
}

TEST_F(MigrationsTest, FailingMigrationLeavesNothingBehind) {
  const EmbeddedFile files[] = {{"0001_create_a.sql", "CREATE TABLE a (x int)"},
                                {"0002_break.sql", "CREATE TABLE b (y int); SELECT no_such_fn()"}};
  auto migs = pg::LoadMigrations(files);
  ASSERT_TRUE(migs.ok());
  auto report = pg::Migrate(pool(), *migs);
  ASSERT_FALSE(report.ok());
  EXPECT_NE(report.error().message().find("0002_break"), std::string::npos);
  EXPECT_EQ(Count("SELECT count(*) FROM celeriac_migrations"), 1);
  EXPECT_EQ(Count("SELECT count(*) FROM information_schema.tables WHERE table_schema = "
                  "current_schema() AND table_name = 'b'"),
            0)
      << "the failed migration's table must be rolled back with it";
}

TEST_F(MigrationsTest, PlainInsertsOfTheContractColumnsWork) {
  MigrateOk();
  EXPECT_EQ(Try("INSERT INTO data_sources (name, base_url) VALUES ('shop', 'http://shop')"), "");
  EXPECT_EQ(Try("INSERT INTO crawl_tasks (name, data_source_ids, schedule) "
                "VALUES ('daily', '{1}', '0 3 * * *')"),
            "");
  EXPECT_EQ(Try("INSERT INTO crawl_tasks (name, data_source_ids, schedule, timezone) "
                "VALUES ('berlin', '{1}', '@daily', 'Europe/Berlin')"),
            "");
  EXPECT_EQ(Try("INSERT INTO crawl_tasks (name, data_source_ids) VALUES ('manual', '{1}')"), "");
  EXPECT_EQ(Try("INSERT INTO crawl_configs (data_source_id, version, status, config) "
                "VALUES (1, 1, 'active', '{\"start_urls\": []}')"),
            "");
  EXPECT_EQ(Count("SELECT count(*) FROM crawl_tasks WHERE enabled AND timezone IS NOT NULL"), 3);
}

TEST_F(MigrationsTest, ConstraintsRejectBadRows) {
  MigrateOk();
  ASSERT_EQ(Try("INSERT INTO data_sources (id, name) VALUES (1, 'shop')"), "");
  ASSERT_EQ(Try("INSERT INTO crawl_configs (data_source_id, version, status, config) "
                "VALUES (1, 1, 'active', '{}')"),
            "");
  struct Case {
    const char* what;
    const char* sql;
    const char* error_mentions;
  };
  const Case cases[] = {
      {"unknown status",
       "INSERT INTO crawl_configs (data_source_id, version, status, config) "
       "VALUES (1, 2, 'enabled', '{}')",
       "crawl_configs_status_check"},
      {"version not positive",
       "INSERT INTO crawl_configs (data_source_id, version, status, config) "
       "VALUES (1, 0, 'draft', '{}')",
       "crawl_configs_version_check"},
      {"duplicate version per data source",
       "INSERT INTO crawl_configs (data_source_id, version, status, config) "
       "VALUES (1, 1, 'draft', '{}')",
       "crawl_configs_version_unique"},
      {"config not an object",
       "INSERT INTO crawl_configs (data_source_id, version, status, config) "
       "VALUES (1, 3, 'draft', '[1]')",
       "crawl_configs_config_check"},
      {"unknown data source",
       "INSERT INTO crawl_configs (data_source_id, version, status, config) "
       "VALUES (999, 1, 'draft', '{}')",
       "foreign key"},
      {"empty data_source_ids",
       "INSERT INTO crawl_tasks (name, data_source_ids) VALUES ('t', '{}')",
       "crawl_tasks_data_source_ids_not_empty"},
      {"null in data_source_ids",
       "INSERT INTO crawl_tasks (name, data_source_ids) VALUES ('t', '{1,NULL}')",
       "crawl_tasks_data_source_ids_no_nulls"},
      {"missing data_source_ids",
       "INSERT INTO crawl_tasks (name) VALUES ('t')", "data_source_ids"},
      {"schedule with three fields",
       "INSERT INTO crawl_tasks (name, data_source_ids, schedule) VALUES ('t', '{1}', '* * *')",
       "invalid cron expression \"* * *\": 3 fields"},  // 0003 names it
      {"unknown macro",
       "INSERT INTO crawl_tasks (name, data_source_ids, schedule) VALUES ('t', '{1}', '@often')",
       "invalid cron expression \"@often\": unknown macro"},
      {"unknown time zone",
       "INSERT INTO crawl_tasks (name, data_source_ids, timezone) "
       "VALUES ('t', '{1}', 'Mars/Olympus')",
       "unknown time zone"},
      {"POSIX offset instead of a zone name",
       "INSERT INTO crawl_tasks (name, data_source_ids, timezone) VALUES ('t', '{1}', 'UTC+3')",
       "not an IANA time zone name"},
      {"empty name", "INSERT INTO data_sources (name) VALUES ('  ')", "data_sources_name_check"},
  };
  for (const auto& c : cases) {
    const std::string err = Try(c.sql);
    EXPECT_NE(err, "") << c.what << " was accepted";
    EXPECT_NE(err.find(c.error_mentions), std::string::npos)
        << c.what << ": expected the error to mention " << c.error_mentions << ", got: " << err;
  }
}

TEST_F(MigrationsTest, UpdatedAtMovesOnPlainSqlUpdates) {
  MigrateOk();
  Exec("INSERT INTO crawl_tasks (id, name, data_source_ids, updated_at) "
       "VALUES (1, 't', '{1}', now() - interval '1 hour')");
  Exec("UPDATE crawl_tasks SET schedule = '@hourly' WHERE id = 1");
  EXPECT_EQ(Count("SELECT count(*) FROM crawl_tasks WHERE updated_at > now() - interval '1 minute'"),
            1);
}

}  // namespace
}  // namespace celeriac
