#pragma once
// tests/fuzz/data, compiled into the fuzz targets (cmake/Embed.cmake): a target needs no path at
// run time, wherever ./dev fuzz or ctest starts it.

#include <span>
#include <string_view>

#include "core/base/embedded.hpp"

namespace celeriac {

std::span<const EmbeddedFile> EmbeddedFuzzData();

// The content of tests/fuzz/data/<name>; aborts when it is not embedded.
std::string_view FuzzData(std::string_view name);

}  // namespace celeriac
