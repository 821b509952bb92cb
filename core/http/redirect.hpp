#pragma once
// Redirect rules of the HTTP client (the URL a redirect goes to is core/url's ResolveRedirect).

#include <string_view>

namespace celeriac::http {

// 301, 302, 303, 307, 308.
inline bool IsRedirectStatus(int status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

// Whether a redirect keeps the method and body: 307 and 308 do; 303 always becomes GET; 301
// and 302 turn a POST into a GET (what browsers and curl do), other methods stay.
inline bool RedirectKeepsMethod(int status, std::string_view method) {
  if (status == 307 || status == 308) return true;
  if (status == 303) return method == "HEAD";
  return method != "POST";
}

}  // namespace celeriac::http
