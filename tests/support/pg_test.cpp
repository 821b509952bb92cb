#include "tests/support/pg_test.hpp"

#include <cstdlib>

#include <pqxx/pqxx>

#include "core/base/ids.hpp"
#include "core/pg/migrations.hpp"
#include "migrations/migrations.hpp"

namespace celeriac::testing {

bool ServicesRequired() {
  for (const char* name : {"CELERIAC_REQUIRE_SERVICES", "CI"}) {
    const char* v = std::getenv(name);
    if (v != nullptr && (std::string(v) == "1" || std::string(v) == "true")) return true;
  }
  return false;
}

std::string DatabaseUrl() {
  const char* v = std::getenv("CELERIAC_DATABASE_URL");
  return v == nullptr ? "" : v;
}

std::string UrlWithSchema(const std::string& base, const std::string& schema) {
  // libpq URL parameter: options=-csearch_path=<schema>, percent-encoded.
  return base + (base.find('?') == std::string::npos ? "?" : "&") +
         "options=-csearch_path%3D" + schema;
}

void PgTest::SetUp() {
  base_url_ = DatabaseUrl();
  if (base_url_.empty()) {
    if (ServicesRequired()) {
      FAIL() << "CELERIAC_DATABASE_URL is not set: start Postgres with ./dev up and "
                "eval \"$(./dev env)\"";
    }
    GTEST_SKIP() << "CELERIAC_DATABASE_URL not set (./dev up; eval \"$(./dev env)\")";
  }
  std::string id = NewUuid4();
  schema_ = "t_" + id.substr(0, 8) + id.substr(9, 4);
  try {
    pqxx::connection conn(base_url_);
    pqxx::nontransaction tx(conn);
    tx.exec("CREATE SCHEMA " + tx.quote_name(schema_));
  } catch (const std::exception& e) {
    FAIL() << "cannot reach Postgres at CELERIAC_DATABASE_URL: " << e.what();
  }
}

void PgTest::TearDown() {
  pool_.reset();
  if (schema_.empty() || base_url_.empty()) return;
  try {
    pqxx::connection conn(base_url_);
    pqxx::nontransaction tx(conn);
    tx.exec("DROP SCHEMA IF EXISTS " + tx.quote_name(schema_) + " CASCADE");
  } catch (const std::exception& e) {
    ADD_FAILURE() << "cannot drop test schema " << schema_ << ": " << e.what();
  }
}

pg::PoolOptions PgTest::MakeOptions() const {
  pg::PoolOptions options;
  options.url = base_url_;
  options.schema = schema_;
  options.size = 4;
  return options;
}

pg::Pool& PgTest::pool() {
  // Tests call this from several threads at once.
  std::call_once(pool_once_, [this] { pool_ = std::make_unique<pg::Pool>(MakeOptions()); });
  return *pool_;
}

void PgTest::MigrateSchema() {
  auto migs = pg::LoadMigrations(EmbeddedMigrations());
  ASSERT_TRUE(migs.ok()) << migs.error().message();
  auto report = pg::Migrate(pool(), *migs);
  ASSERT_TRUE(report.ok()) << report.error().message();
}

void PgTest::Exec(const std::string& sql) {
  pqxx::connection conn(SchemaUrl());
  pqxx::nontransaction tx(conn);
  tx.exec(sql);
}

}  // namespace celeriac::testing
