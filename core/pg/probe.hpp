#pragma once
// ProbeDatabase: is Postgres there, answered within a deadline whatever the network does.
//
// Opens a fresh connection of its own (never a pooled one, never the pool's retries), runs
// SELECT 1 and closes it, all through libpq's non-blocking calls against one deadline, so a
// refused port, a silent peer (a host that accepts TCP and never speaks) or a dropped packet
// all end at `timeout` at the latest. libpq's own connect_timeout cannot do that: it rounds
// anything under 2 s up to 2 s, and counts it per address. The one step outside the deadline
// is the host name lookup, which libpq does synchronously: a numeric host avoids it.
//
// The error says what failed (Unavailable, or Timeout past the deadline); its text never
// carries a password of `url` (core/base/secrets.hpp). Thread-safe; blocks the calling thread.

#include <chrono>
#include <string>

#include "core/base/result.hpp"

namespace celeriac::pg {

Status ProbeDatabase(const std::string& url, std::chrono::milliseconds timeout);

}  // namespace celeriac::pg
