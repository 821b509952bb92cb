#include "tests/support/paths.hpp"

#include <fstream>
#include <sstream>
#include <stdexcept>

namespace celeriac::testing {

std::filesystem::path SourceDir() { return CELERIAC_SOURCE_DIR; }
std::filesystem::path BinDir() { return CELERIAC_BIN_DIR; }

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  std::stringstream out;
  out << in.rdbuf();
  return out.str();
}

}  // namespace celeriac::testing
