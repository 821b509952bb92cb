#include <gtest/gtest.h>

#include "core/pg/migrations.hpp"
#include "migrations/migrations.hpp"

namespace celeriac {
namespace {

TEST(Migrations, EmbeddedOnesLoadInVersionOrder) {
  auto migs = pg::LoadMigrations(EmbeddedMigrations());
  ASSERT_TRUE(migs.ok()) << migs.error().message();
  ASSERT_GE(migs->size(), 2u);
  EXPECT_EQ((*migs)[0].version, 1);
  EXPECT_EQ((*migs)[0].name, "0001_create_source_tables");
  for (size_t i = 1; i < migs->size(); ++i) EXPECT_LT((*migs)[i - 1].version, (*migs)[i].version);
}

TEST(Migrations, OrderIsByVersionNotListing) {
  const EmbeddedFile files[] = {{"0002_b.sql", "select 2"}, {"0001_a.sql", "select 1"}};
  auto migs = pg::LoadMigrations(files);
  ASSERT_TRUE(migs.ok());
  EXPECT_EQ((*migs)[0].name, "0001_a");
  EXPECT_EQ((*migs)[1].name, "0002_b");
  EXPECT_NE((*migs)[0].checksum, (*migs)[1].checksum);
}

TEST(Migrations, BadNamesAndDuplicateVersionsAreRefused) {
  const EmbeddedFile bad_name[] = {{"create.sql", "select 1"}};
  auto a = pg::LoadMigrations(bad_name);
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.error().message().find("create.sql"), std::string::npos);
  const EmbeddedFile dup[] = {{"0001_a.sql", "select 1"}, {"0001_b.sql", "select 2"}};
  auto b = pg::LoadMigrations(dup);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.error().message().find("share version 1"), std::string::npos);
}

}  // namespace
}  // namespace celeriac
