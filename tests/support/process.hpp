#pragma once
// Runs a command through /bin/sh and captures its combined output and exit code.

#include <map>
#include <string>

namespace celeriac::testing {

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr, interleaved
};

// `env` entries are set for the child only; the command line is passed to sh -c as it is.
CommandResult RunCommand(const std::string& command,
                         const std::map<std::string, std::string>& env = {});

// Single-quotes a word for sh.
std::string ShellQuote(const std::string& word);

}  // namespace celeriac::testing
