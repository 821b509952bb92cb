// orchestrator: one binary, subcommands like the `celery` CLI.

#include <iostream>

#include <CLI/CLI.hpp>

#include "orchestrator/commands/commands.hpp"

int main(int argc, char** argv) {
  using namespace celeriac::orchestrator;
  CLI::App app{"Celeriac orchestrator: Celery-compatible worker, beat, admin API and ops tools"};
  app.require_subcommand(1);
  CommonOptions common;
  app.add_option("-c,--config", common.config_path,
                 "TOML settings file (default: $CELERIAC_CONFIG); every key can be overridden "
                 "by CELERIAC_<SECTION>_<KEY>");
  app.set_version_flag("--version", "orchestrator " CELERIAC_VERSION);
  int exit_code = 0;
  RegisterMigrate(app, common, exit_code);
  RegisterConfig(app, common, exit_code);
  RegisterWorker(app, common, exit_code);
  RegisterSendTask(app, common, exit_code);
  RegisterRunNow(app, common, exit_code);
  RegisterRuns(app, common, exit_code);
  RegisterDlq(app, common, exit_code);
  RegisterApi(app, common, exit_code);
  RegisterBeat(app, common, exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // A usage error exits 2, as other command-line tools do (CLI11's own codes are 100 and
    // up); --help and --version exit 0.
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const std::exception& e) {
    std::cerr << "orchestrator: " << e.what() << "\n";
    return 1;
  }
  return exit_code;
}
