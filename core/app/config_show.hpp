#pragma once
// `<binary> config show`: prints the effective settings (defaults < file < environment), secrets
// masked. Shared by every binary so ops can check what a process will run with.

#include <optional>
#include <string>

#include <CLI/CLI.hpp>

namespace celeriac::app {

void AddConfigShow(CLI::App& config_cmd, const std::optional<std::string>& config_path,
                   int& exit_code);

}  // namespace celeriac::app
