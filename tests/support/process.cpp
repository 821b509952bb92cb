#include "tests/support/process.hpp"

#include <sys/wait.h>

#include <array>
#include <cstdio>

namespace celeriac::testing {

std::string ShellQuote(const std::string& word) {
  std::string out = "'";
  for (char c : word) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

CommandResult RunCommand(const std::string& command,
                         const std::map<std::string, std::string>& env) {
  std::string line = "env";
  for (const auto& [k, v] : env) line += " " + k + "=" + ShellQuote(v);
  line += " sh -c " + ShellQuote(command) + " 2>&1";
  CommandResult result;
  FILE* pipe = popen(line.c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buf{};
  size_t n = 0;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) result.output.append(buf.data(), n);
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

}  // namespace celeriac::testing
