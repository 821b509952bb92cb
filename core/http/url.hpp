#pragma once
// URL helpers for the HTTP client: parse an absolute http(s) URL and resolve a redirect's
// Location against the URL it came from, both with libcurl's own URL parser so the client
// checks exactly what curl will connect to.
//
// Pure functions, no I/O; safe from any thread.

#include <string>
#include <string_view>

#include "core/base/result.hpp"

namespace celeriac::http {

struct UrlParts {
  std::string scheme;  // lower case: "http" or "https"
  std::string host;    // as curl normalizes it; an IPv6 literal keeps its brackets
  int port = 0;        // explicit or the scheme's default
  std::string url;     // the normalized absolute URL
};

// Only absolute http:// and https:// URLs pass; anything else is kInvalidArgument.
Result<UrlParts> ParseHttpUrl(std::string_view url);

// Resolves `location` (absolute, scheme-relative, absolute-path or relative) against `base`
// as a browser would for a redirect; the result must itself be http(s).
Result<std::string> ResolveRedirect(std::string_view base, std::string_view location);

// Whether a redirect keeps the method and body: 307 and 308 do; 303 always becomes GET; 301
// and 302 turn a POST into a GET (what browsers and curl do), other methods stay.
bool RedirectKeepsMethod(int status, std::string_view method);

// 301, 302, 303, 307, 308.
inline bool IsRedirectStatus(int status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

}  // namespace celeriac::http
