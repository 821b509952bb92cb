#pragma once
// Identifiers: Celery task ids are random (version 4) UUIDs in their 36-character text form,
// made by libuuid; and this machine's name, which node names are built from.

#include <string>
#include <string_view>

namespace celeriac {

std::string NewUuid4();

// A name-based (version 5, SHA-1) UUID, RFC 4122 section 4.3: the same namespace and name give
// the same id in every process, so a message re-published after a crash keeps its task id.
// `namespace_uuid` must be a UUID in canonical form.
std::string NameUuid5(std::string_view namespace_uuid, std::string_view name);

// True for the canonical 8-4-4-4-12 hexadecimal form (any version, either case).
bool IsUuid(std::string_view text);

// gethostname(), or "localhost" if it fails.
std::string HostName();

}  // namespace celeriac
