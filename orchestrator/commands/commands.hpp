#pragma once
// The orchestrator's subcommands. Each Register* adds one to the CLI11 app; the callback runs
// after parsing and returns the process exit code through `exit_code`.

#include <optional>
#include <string>

#include <CLI/CLI.hpp>

namespace celeriac::orchestrator {

struct CommonOptions {
  std::optional<std::string> config_path;  // --config
};

void RegisterMigrate(CLI::App& app, const CommonOptions& common, int& exit_code);
void RegisterConfig(CLI::App& app, const CommonOptions& common, int& exit_code);
void RegisterWorker(CLI::App& app, const CommonOptions& common, int& exit_code);
void RegisterSendTask(CLI::App& app, const CommonOptions& common, int& exit_code);
void RegisterRunNow(CLI::App& app, const CommonOptions& common, int& exit_code);
void RegisterRuns(CLI::App& app, const CommonOptions& common, int& exit_code);
void RegisterDlq(CLI::App& app, const CommonOptions& common, int& exit_code);
void RegisterApi(CLI::App& app, const CommonOptions& common, int& exit_code);
void RegisterBeat(CLI::App& app, const CommonOptions& common, int& exit_code);

}  // namespace celeriac::orchestrator
