// `orchestrator config`: shows the effective settings (file + environment, secrets masked), or
// checks a crawl config document against schemas/crawl_config.schema.json.

#include <fstream>
#include <iostream>

#include "core/app/config_show.hpp"
#include "orchestrator/commands/commands.hpp"
#include "orchestrator/commands/settings.hpp"
#include "schemas/schemas.hpp"

namespace celeriac::orchestrator {

void RegisterConfig(CLI::App& app, const CommonOptions& common, int& exit_code) {
  auto* cmd = app.add_subcommand("config", "Show settings, or validate crawl configs");
  cmd->require_subcommand(1);

  app::AddConfigShow<Settings>(*cmd, common.config_path, exit_code);

  auto* validate =
      cmd->add_subcommand("validate", "Check crawl config JSON files against the schema");
  auto files = std::make_shared<std::vector<std::string>>();
  validate->add_option("files", *files, "crawl config JSON documents")
      ->required()
      ->check(CLI::ExistingFile);
  validate->callback([files, &exit_code] {
    auto validator = schemas::Get("crawl_config");
    if (!validator) {
      std::cerr << validator.error().message() << "\n";
      exit_code = 2;
      return;
    }
    exit_code = 0;
    for (const auto& file : *files) {
      std::ifstream in(file);
      const auto doc = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
      if (doc.is_discarded()) {
        std::cout << file << ": not valid JSON\n";
        exit_code = 1;
        continue;
      }
      const auto violations = (*validator)->Check(doc);
      if (violations.empty()) {
        std::cout << file << ": ok\n";
        continue;
      }
      exit_code = 1;
      for (const auto& v : violations)
        std::cout << file << ": " << (v.pointer.empty() ? "/" : v.pointer) << ": " << v.message
                  << "\n";
    }
  });
}

}  // namespace celeriac::orchestrator
