// The bundled demo rows load on a migrated database, twice without harm, and every demo crawl
// config passes the crawl config schema (the demo must show valid configs).

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/pg/migrations.hpp"
#include "migrations/migrations.hpp"
#include "schemas/schemas.hpp"
#include "tests/support/paths.hpp"
#include "tests/support/pg_test.hpp"

namespace celeriac {
namespace {

class DemoSeedTest : public testing::PgTest {};

TEST_F(DemoSeedTest, LoadsIdempotentlyWithValidConfigs) {
  MigrateSchema();
  ASSERT_FALSE(HasFatalFailure());
  const std::string seed = testing::ReadFile(testing::SourceDir() / "demo" / "seed.sql");
  ASSERT_NO_THROW(Exec(seed));
  ASSERT_NO_THROW(Exec(seed)) << "seed.sql must be safe to load twice";

  auto validator = schemas::Get("crawl_config");
  ASSERT_TRUE(validator.ok());
  struct Row {
    int64_t id;
    std::string status;
    std::string config;
  };
  auto rows = pool().Transact<std::vector<Row>>(
      [](pqxx::transaction_base& tx) -> Result<std::vector<Row>> {
        std::vector<Row> out;
        for (const auto& r : tx.exec("SELECT id, status, config::text FROM crawl_configs"))
          out.push_back({r[0].as<int64_t>(), r[1].as<std::string>(), r[2].as<std::string>()});
        return out;
      });
  ASSERT_TRUE(rows.ok()) << rows.error().message();
  int active = 0, inactive = 0;
  for (const auto& row : *rows) {
    const auto st = (*validator)->Validate(nlohmann::json::parse(row.config));
    EXPECT_TRUE(st.ok()) << "crawl_configs.id " << row.id << ": " << st.error().message();
    active += row.status == "active";
    inactive += row.status == "inactive";
  }
  EXPECT_GE(active, 1);
  EXPECT_GE(inactive, 1);

  auto counts = pool().Transact<std::pair<int64_t, int64_t>>(
      [](pqxx::transaction_base& tx) -> Result<std::pair<int64_t, int64_t>> {
        return std::pair{tx.exec1("SELECT count(*) FROM data_sources")[0].as<int64_t>(),
                         tx.exec1("SELECT count(*) FROM crawl_tasks")[0].as<int64_t>()};
      });
  ASSERT_TRUE(counts.ok());
  EXPECT_GE(counts->first, 2);
  EXPECT_GE(counts->second, 2);
}

}  // namespace
}  // namespace celeriac
