// extractor: consumes extractor.tasks.extract from extraction_queue and runs the crawl pipeline.
// The pipeline lands with its own issue; today the binary checks its settings.

#include <iostream>

#include <CLI/CLI.hpp>

#include "core/app/config_show.hpp"

int main(int argc, char** argv) {
  CLI::App app{"Celeriac extractor: the crawl pipeline behind extraction_queue"};
  app.require_subcommand(1);
  std::optional<std::string> config_path;
  app.add_option("-c,--config", config_path,
                 "TOML settings file (default: $CELERIAC_CONFIG); every key can be overridden "
                 "by CELERIAC_<SECTION>_<KEY>");
  app.set_version_flag("--version", "extractor " CELERIAC_VERSION);
  int exit_code = 0;
  auto* config = app.add_subcommand("config", "Show settings");
  config->require_subcommand(1);
  celeriac::app::AddConfigShow(*config, config_path, exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::cerr << "extractor: " << e.what() << "\n";
    return 1;
  }
  return exit_code;
}
