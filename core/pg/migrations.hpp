#pragma once
// Migrations: forward-only SQL files named NNNN_verb_object.sql, applied in version order.
//
// Each migration runs in its own transaction together with the row that records it in
// `celeriac_migrations` (version, name, checksum, applied_at), so it is applied entirely or not
// at all. Every transaction first takes a transaction-scoped advisory lock, so several processes
// migrating at once apply each file exactly once: the others wait, then see it recorded.
// A recorded migration whose file has since changed is an error (forward-only: write a new one).

#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "core/base/embedded.hpp"
#include "core/base/result.hpp"
#include "core/pg/pool.hpp"

namespace celeriac::pg {

struct Migration {
  int version = 0;
  std::string name;  // file name without extension, e.g. "0001_create_crawl_tables"
  std::string sql;
  std::string checksum;
};

struct MigrateReport {
  std::vector<std::string> applied;  // names applied by this call, in order
  size_t already_applied = 0;
};

// Parses and orders migration files; rejects bad names and duplicate versions.
Result<std::vector<Migration>> LoadMigrations(std::span<const EmbeddedFile> files);
Result<std::vector<Migration>> LoadMigrationsFromDir(const std::filesystem::path& dir);

Result<MigrateReport> Migrate(Pool& pool, const std::vector<Migration>& migrations);

}  // namespace celeriac::pg
