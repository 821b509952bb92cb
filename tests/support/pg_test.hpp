#pragma once
// PgTest: a fixture giving each test its own fresh schema in the Postgres of
// CELERIAC_DATABASE_URL (the one `./dev up` starts), dropped afterwards.
//
// Without CELERIAC_DATABASE_URL the test fails when services are required
// (CELERIAC_REQUIRE_SERVICES=1 or CI=true, as under ./dev test) and skips otherwise.

#include <memory>
#include <mutex>
#include <string>

#include <gtest/gtest.h>

#include "core/pg/pool.hpp"
#include "core/pg/sql.hpp"  // tests check rows with SQL

namespace celeriac::testing {

// True when a missing service must fail the test rather than skip it.
bool ServicesRequired();

// The database URL, or "" if unset.
std::string DatabaseUrl();

// A libpq URL for `base` whose connections use `schema` as search_path.
std::string UrlWithSchema(const std::string& base, const std::string& schema);

class PgTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  // A pool on this test's schema, created on first use (thread-safe).
  pg::Pool& pool();
  pg::PoolOptions MakeOptions() const;
  // The URL of the database with this test's schema as search_path, for child processes.
  std::string SchemaUrl() const { return UrlWithSchema(base_url_, schema_); }
  // Runs SQL on the test's schema outside any retry logic; throws on error.
  void Exec(const std::string& sql);
  // Applies the embedded migrations to this test's schema (a test failure if they fail).
  void MigrateSchema();

  std::string base_url_;
  std::string schema_;

 private:
  std::once_flag pool_once_;
  std::unique_ptr<pg::Pool> pool_;
};

}  // namespace celeriac::testing
