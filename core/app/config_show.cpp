#include "core/app/config_show.hpp"

#include <iostream>

namespace celeriac::app {

void AddConfigShow(CLI::App& config_cmd,
                   std::function<Result<std::vector<std::string>>()> lines, int& exit_code) {
  auto* show = config_cmd.add_subcommand("show", "Print the effective settings, secrets masked");
  show->callback([lines = std::move(lines), &exit_code,
                  name = config_cmd.get_parent()->get_name()] {
    auto shown = lines();
    if (!shown) {
      std::cerr << name << " config show: " << shown.error().message() << "\n";
      exit_code = 2;
      return;
    }
    for (const auto& line : *shown) std::cout << line << "\n";
    exit_code = 0;
  });
}

}  // namespace celeriac::app
