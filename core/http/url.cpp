#include "core/http/url.hpp"

#include <curl/curl.h>

#include <memory>

#include "core/base/text.hpp"

namespace celeriac::http {
namespace {

struct UrlDeleter {
  void operator()(CURLU* u) const { curl_url_cleanup(u); }
};
using UrlHandle = std::unique_ptr<CURLU, UrlDeleter>;

struct CurlString {
  char* p = nullptr;
  ~CurlString() { curl_free(p); }
};

Error Invalid(std::string_view what, std::string_view url) {
  std::string shown(url.substr(0, 200));
  return Error(ErrorCode::kInvalidArgument, std::string(what) + ": " + shown, false);
}

Result<UrlParts> Extract(CURLU* u, std::string_view original) {
  UrlParts parts;
  {
    CurlString s;
    if (curl_url_get(u, CURLUPART_SCHEME, &s.p, 0) != CURLUE_OK)
      return Invalid("URL has no scheme", original);
    parts.scheme = s.p;
  }
  parts.scheme = AsciiLower(parts.scheme);
  if (parts.scheme != "http" && parts.scheme != "https")
    return Invalid("only http and https URLs can be fetched", original);
  {
    CurlString s;
    if (curl_url_get(u, CURLUPART_HOST, &s.p, 0) != CURLUE_OK || s.p[0] == '\0')
      return Invalid("URL has no host", original);
    parts.host = s.p;
  }
  {
    CurlString s;
    if (curl_url_get(u, CURLUPART_PORT, &s.p, CURLU_DEFAULT_PORT) == CURLUE_OK)
      parts.port = std::atoi(s.p);
  }
  // curl takes ":0", which no server listens on; say so here rather than as a failed connect.
  if (parts.port <= 0 || parts.port > 65535) return Invalid("URL has no usable port", original);
  {
    CurlString s;
    if (curl_url_get(u, CURLUPART_URL, &s.p, 0) != CURLUE_OK)
      return Invalid("URL cannot be normalized", original);
    parts.url = s.p;
  }
  return parts;
}

}  // namespace

Result<UrlParts> ParseHttpUrl(std::string_view url) {
  if (url.empty()) return Invalid("empty URL", url);
  if (url.size() > 64 * 1024) return Invalid("URL longer than 64 KiB", url);
  // curl reads a C string: a NUL would silently cut the URL to another one.
  if (url.find('\0') != std::string_view::npos) return Invalid("URL contains a NUL byte", url);
  UrlHandle u(curl_url());
  if (!u) return Error(ErrorCode::kInternal, "curl_url() failed", false);
  const std::string s(url);
  // No CURLU_GUESS_SCHEME: "example.com/x" is a caller's bug, not a URL to guess at.
  const CURLUcode rc = curl_url_set(u.get(), CURLUPART_URL, s.c_str(), CURLU_NON_SUPPORT_SCHEME);
  if (rc != CURLUE_OK) return Invalid(std::string("malformed URL (") + curl_url_strerror(rc) + ")", url);
  return Extract(u.get(), url);
}

Result<std::string> ResolveRedirect(std::string_view base, std::string_view location) {
  if (location.empty()) return Invalid("empty Location", location);
  if (location.size() > 64 * 1024) return Invalid("Location longer than 64 KiB", location);
  if (location.find('\0') != std::string_view::npos || base.find('\0') != std::string_view::npos)
    return Invalid("Location contains a NUL byte", location);
  UrlHandle u(curl_url());
  if (!u) return Error(ErrorCode::kInternal, "curl_url() failed", false);
  const std::string b(base), l(location);
  if (curl_url_set(u.get(), CURLUPART_URL, b.c_str(), CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK)
    return Invalid("malformed base URL", base);
  // Setting a URL on a handle that holds one resolves it as a reference (RFC 3986 5.2).
  const CURLUcode rc = curl_url_set(u.get(), CURLUPART_URL, l.c_str(), CURLU_NON_SUPPORT_SCHEME);
  if (rc != CURLUE_OK)
    return Invalid(std::string("malformed Location (") + curl_url_strerror(rc) + ")", location);
  auto parts = Extract(u.get(), location);
  if (!parts.ok()) return parts.error();
  return std::move(parts->url);
}

bool RedirectKeepsMethod(int status, std::string_view method) {
  if (status == 307 || status == 308) return true;
  if (status == 303) return method == "HEAD";
  return method != "POST";
}

}  // namespace celeriac::http
