// Replays inputs through a fuzz target without libFuzzer: every file named on the command line,
// and every file of every folder named (recursively, in name order). Fails when a named folder is
// missing or holds nothing, so an empty corpus cannot pass unnoticed; folders named after
// `--optional` (a target's regressions, which it may not have yet) may be missing.

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "tests/fuzz/fuzz_support.hpp"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s FILE_OR_DIR... [--optional DIR...]\n", argv[0]);
    return 2;
  }
  std::vector<fs::path> files;
  bool optional = false;
  for (int i = 1; i < argc; ++i) {
    const fs::path arg(argv[i]);
    if (arg == "--optional") {
      optional = true;
      continue;
    }
    if (optional && !fs::exists(arg)) continue;
    if (fs::is_regular_file(arg)) {
      files.push_back(arg);
      continue;
    }
    if (!fs::is_directory(arg)) {
      std::fprintf(stderr, "%s: no such file or folder\n", argv[i]);
      return 2;
    }
    std::vector<fs::path> found;
    for (const auto& entry : fs::recursive_directory_iterator(arg))
      if (entry.is_regular_file() && entry.path().filename() != "README.md")
        found.push_back(entry.path());
    if (found.empty() && !optional) {
      std::fprintf(stderr, "%s: no inputs\n", argv[i]);
      return 2;
    }
    std::sort(found.begin(), found.end());
    files.insert(files.end(), found.begin(), found.end());
  }
  for (const fs::path& file : files) {
    std::ifstream in(file, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "%s: cannot read\n", file.c_str());
      return 2;
    }
    const std::string bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    // Named before it runs, so a crash or a broken invariant is traced to its file.
    std::fprintf(stderr, "replaying %s (%zu bytes)\n", file.c_str(), bytes.size());
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  }
  std::printf("%zu inputs replayed\n", files.size());
  return 0;
}
