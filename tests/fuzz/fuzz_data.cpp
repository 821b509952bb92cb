#include "tests/fuzz/fuzz_data.hpp"

#include <cstdio>
#include <cstdlib>

namespace celeriac {

std::string_view FuzzData(std::string_view name) {
  for (const EmbeddedFile& file : EmbeddedFuzzData())
    if (file.path.starts_with("data/") && file.path.substr(5) == name) return file.content;
  std::fprintf(stderr, "tests/fuzz/data/%.*s is not embedded\n", static_cast<int>(name.size()),
               name.data());
  std::abort();
}

}  // namespace celeriac
