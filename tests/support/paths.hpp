#pragma once
// Where tests find the source tree (schemas/examples, demo/) and the built binaries.

#include <filesystem>
#include <string>

namespace celeriac::testing {

std::filesystem::path SourceDir();
std::filesystem::path BinDir();
std::string ReadFile(const std::filesystem::path& path);

}  // namespace celeriac::testing
