#pragma once
// The forward-only SQL migrations of this folder, compiled in (cmake/Embed.cmake).

#include <span>

#include "core/base/embedded.hpp"

namespace celeriac {

std::span<const EmbeddedFile> EmbeddedMigrations();

}  // namespace celeriac
