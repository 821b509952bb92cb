#pragma once
// Bearer-token checks for the admin API's routes.

#include <optional>
#include <string_view>

namespace celeriac::orchestrator::api {

// The token of an `Authorization: Bearer <token>` header value (scheme case-insensitive, as
// RFC 6750 says), or nullopt when the value is missing, another scheme, or has no token.
std::optional<std::string_view> BearerToken(std::string_view authorization);

// Whether `presented` equals `expected`, in time that depends only on the length of
// `presented` (which the caller already knows), never on where the two first differ or on
// the length of `expected`. An empty `expected` matches nothing: an unset token refuses all.
bool TokenMatches(std::string_view presented, std::string_view expected);

}  // namespace celeriac::orchestrator::api
