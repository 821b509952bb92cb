// `orchestrator migrate`: applies the forward-only SQL migrations (embedded in the binary, or
// from --dir) to the database of `database.url`. Safe to run twice and from several processes
// at once (core/pg/migrations.hpp).

#include <iostream>

#include "core/app/startup.hpp"
#include "core/base/secrets.hpp"
#include "core/pg/migrations.hpp"
#include "migrations/migrations.hpp"
#include "orchestrator/commands/commands.hpp"
#include "orchestrator/commands/settings.hpp"

namespace celeriac::orchestrator {

void RegisterMigrate(CLI::App& app, const CommonOptions& common, int& exit_code) {
  auto* cmd = app.add_subcommand("migrate", "Apply database migrations (idempotent)");
  auto dir = std::make_shared<std::string>();
  cmd->add_option("--dir", *dir, "Read migrations from this folder instead of the built-in ones")
      ->check(CLI::ExistingDirectory);
  cmd->callback([&common, &exit_code, dir] {
    auto settings = app::Start<Settings>(common.config_path);
    if (!settings) {
      std::cerr << "orchestrator migrate: " << settings.error().message() << "\n";
      exit_code = 2;
      return;
    }
    auto migrations = dir->empty() ? pg::LoadMigrations(EmbeddedMigrations())
                                   : pg::LoadMigrationsFromDir(*dir);
    if (!migrations) {
      std::cerr << "orchestrator migrate: " << migrations.error().message() << "\n";
      exit_code = 2;
      return;
    }
    auto options = settings->database.PoolOptionsFor();
    options.size = 1;
    pg::Pool pool(options);
    auto report = pg::Migrate(pool, *migrations);
    if (!report) {
      std::cerr << "orchestrator migrate: " << MaskSecrets(settings->database.url) << ": "
                << MaskSecrets(report.error().message(), settings->database.url) << "\n";
      exit_code = 1;
      return;
    }
    for (const auto& name : report->applied) std::cout << "applied " << name << "\n";
    std::cout << "migrations: " << report->applied.size() << " applied, "
              << report->already_applied << " already up to date\n";
    exit_code = 0;
  });
}

}  // namespace celeriac::orchestrator
