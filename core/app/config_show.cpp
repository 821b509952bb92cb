#include "core/app/config_show.hpp"

#include <iostream>

#include "core/app/startup.hpp"

namespace celeriac::app {

void AddConfigShow(CLI::App& config_cmd, const std::optional<std::string>& config_path,
                   int& exit_code) {
  auto* show = config_cmd.add_subcommand("show", "Print the effective settings, secrets masked");
  show->callback([&config_path, &exit_code, name = config_cmd.get_parent()->get_name()] {
    auto settings = Start(config_path);
    if (!settings) {
      std::cerr << name << " config show: " << settings.error().message() << "\n";
      exit_code = 2;
      return;
    }
    for (const auto& line : settings->Describe()) std::cout << line << "\n";
    exit_code = 0;
  });
}

}  // namespace celeriac::app
