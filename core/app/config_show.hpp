#pragma once
// `<binary> config show`: prints the effective settings (defaults < file < environment) of the
// sections the binary reads, secrets masked. Shared by every binary so ops can check what a
// process will run with.

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "core/app/startup.hpp"
#include "core/base/result.hpp"
#include "core/config/sections.hpp"

namespace celeriac::app {

// `lines` loads the settings and returns their "section.key = value" lines.
void AddConfigShow(CLI::App& config_cmd,
                   std::function<Result<std::vector<std::string>>()> lines, int& exit_code);

// For the binary's settings S (see Start).
template <class S>
void AddConfigShow(CLI::App& config_cmd, const std::optional<std::string>& config_path,
                   int& exit_code) {
  AddConfigShow(
      config_cmd,
      [&config_path]() -> Result<std::vector<std::string>> {
        auto settings = Start<S>(config_path);
        if (!settings) return settings.error();
        return config::Describe(*settings);
      },
      exit_code);
}

}  // namespace celeriac::app
