#include "core/pg/migrations.hpp"
#include "core/pg/sql.hpp"

#include <algorithm>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include <fmt/format.h>

namespace celeriac::pg {
namespace {

// Names the lock for this purpose; the schema is part of the key so that isolated test schemas
// in one database do not queue behind each other.
constexpr const char* kLockSql =
    "SELECT pg_advisory_xact_lock(hashtext('celeriac_migrations:' || current_schema()))";

std::string Fnv1a64(std::string_view text) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return fmt::format("{:016x}", h);
}

Result<Migration> Parse(std::string_view path, std::string_view content) {
  static const std::regex kName(R"(^([0-9]{4})_[a-z0-9_]+\.sql$)");
  const std::string file = std::filesystem::path(path).filename().string();
  std::smatch m;
  if (!std::regex_match(file, m, kName))
    return Error(ErrorCode::kInvalidArgument,
                 fmt::format("migration file '{}' is not named NNNN_verb_object.sql", file));
  Migration mig;
  mig.version = std::stoi(m[1].str());
  mig.name = file.substr(0, file.size() - 4);
  mig.sql = std::string(content);
  mig.checksum = Fnv1a64(content);
  return mig;
}

Result<std::vector<Migration>> Order(std::vector<Migration> migrations) {
  std::sort(migrations.begin(), migrations.end(),
            [](const Migration& a, const Migration& b) { return a.version < b.version; });
  for (size_t i = 1; i < migrations.size(); ++i) {
    if (migrations[i].version == migrations[i - 1].version)
      return Error(ErrorCode::kInvalidArgument,
                   fmt::format("migrations {} and {} share version {}", migrations[i - 1].name,
                               migrations[i].name, migrations[i].version));
  }
  return migrations;
}

}  // namespace

Result<std::vector<Migration>> LoadMigrations(std::span<const EmbeddedFile> files) {
  std::vector<Migration> out;
  for (const auto& f : files) {
    auto m = Parse(f.path, f.content);
    if (!m) return m.error();
    out.push_back(std::move(m.value()));
  }
  return Order(std::move(out));
}

Result<std::vector<Migration>> LoadMigrationsFromDir(const std::filesystem::path& dir) {
  std::error_code ec;
  std::vector<Migration> out;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.path().extension() != ".sql") continue;
    std::ifstream in(entry.path());
    std::stringstream text;
    text << in.rdbuf();
    if (!in) return Error(ErrorCode::kNotFound, "cannot read " + entry.path().string());
    auto m = Parse(entry.path().string(), text.str());
    if (!m) return m.error();
    out.push_back(std::move(m.value()));
  }
  if (ec) return Error(ErrorCode::kNotFound, "cannot list " + dir.string() + ": " + ec.message());
  return Order(std::move(out));
}

Result<MigrateReport> Migrate(Pool& pool, const std::vector<Migration>& migrations) {
  // The bookkeeping table, created under the lock: concurrent CREATE TABLE IF NOT EXISTS can
  // otherwise collide on the catalog's unique index.
  auto applied = pool.Transact<std::map<int, std::string>>(
      [](pqxx::transaction_base& tx) -> Result<std::map<int, std::string>> {
        tx.exec(kLockSql);
        tx.exec(
            "CREATE TABLE IF NOT EXISTS celeriac_migrations ("
            " version integer PRIMARY KEY,"
            " name text NOT NULL,"
            " checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())");
        std::map<int, std::string> out;
        for (const auto& row : tx.exec("SELECT version, checksum FROM celeriac_migrations"))
          out.emplace(row[0].as<int>(), row[1].as<std::string>());
        return out;
      });
  if (!applied) return applied.error();

  MigrateReport report;
  for (const auto& mig : migrations) {
    auto it = applied->find(mig.version);
    if (it != applied->end()) {
      if (it->second != mig.checksum)
        return Error(ErrorCode::kInvalidArgument,
                     fmt::format("migration {} changed after it was applied (checksum {} in the "
                                 "database, {} now); migrations are forward-only: add a new one",
                                 mig.name, it->second, mig.checksum));
      ++report.already_applied;
      continue;
    }
    auto done = pool.Transact<bool>([&](pqxx::transaction_base& tx) -> Result<bool> {
      tx.exec(kLockSql);
      // Another process may have applied it while we waited for the lock.
      const auto row = tx.exec_params(
          "SELECT checksum FROM celeriac_migrations WHERE version = $1", mig.version);
      if (!row.empty()) return false;
      try {
        tx.exec(mig.sql);
      } catch (const pqxx::sql_error& e) {
        return Error(ErrorCode::kInvalidArgument,
                     fmt::format("migration {} failed: {}", mig.name, e.what()));
      }
      tx.exec_params(
          "INSERT INTO celeriac_migrations (version, name, checksum) VALUES ($1, $2, $3)",
          mig.version, mig.name, mig.checksum);
      return true;
    });
    if (!done) return done.error();
    if (*done) {
      report.applied.push_back(mig.name);
    } else {
      ++report.already_applied;
    }
  }
  return report;
}

}  // namespace celeriac::pg
