#pragma once
// Identifiers: Celery task ids are random (version 4) UUIDs in their 36-character text form.

#include <string>
#include <string_view>

namespace celeriac {

std::string NewUuid4();

// True for the canonical 8-4-4-4-12 hexadecimal form (any version, either case).
bool IsUuid(std::string_view text);

}  // namespace celeriac
