#pragma once
// URL helpers for extraction: RFC 3986 parsing and reference resolution (section 5.2), the
// parts a `url` field can read, query parameter get/set for pagination, and the registrable
// domain (public suffix list, via libpsl) for scope same-domain.
//
// ResolveHttpUrl is what links go through: it cleans the reference the way browsers do
// (surrounding whitespace, tabs and newlines removed, `\` read as `/` before the query),
// resolves it, and normalises the result (scheme and host lower-cased, default port dropped,
// empty path "/", bytes that may not appear in a URL percent-encoded). Hosts must be ASCII
// (an internationalised host is not converted to punycode; such a link is dropped).
//
// Threading: pure functions; RegistrableDomain reads a PSL loaded once (thread-safe).

#include <optional>
#include <string>
#include <string_view>

namespace celeriac::extractor::parse {

struct UrlParts {
  std::string scheme;      // lower-case, without ':'
  bool has_authority = false;
  std::string userinfo;
  std::string host;        // lower-case; IPv6 keeps its brackets
  std::string port;        // digits as written; "" when absent
  std::string path;
  bool has_query = false;
  std::string query;       // without '?'
  bool has_fragment = false;
  std::string fragment;    // without '#'

  std::string ToString() const;
  std::string Origin() const;           // scheme://host[:port], port only when not default
  int EffectivePort() const;            // the port, or the scheme's default; -1 if unknown
};

// Splits any URI reference (relative ones too); nullopt when it has an invalid scheme or port.
std::optional<UrlParts> ParseUrlReference(std::string_view reference);

// `reference` resolved against the absolute `base`, cleaned and normalised (see above), with the
// fragment removed when `strip_fragment`. nullopt unless the result is an http(s) URL with a
// valid host.
std::optional<std::string> ResolveHttpUrl(std::string_view base, std::string_view reference,
                                          bool strip_fragment);

// The first value of query parameter `name` (names and values percent-decoded, '+' = space).
std::optional<std::string> QueryParam(std::string_view query, std::string_view name);

// `url` with query parameter `name` set to `value` (the first occurrence replaced, later ones
// removed, or appended). nullopt if `url` does not parse.
std::optional<std::string> SetQueryParam(std::string_view url, std::string_view name,
                                         std::string_view value);

// `text` with every byte but RFC 3986's unreserved ones percent-encoded (decode with
// celeriac::PercentDecode, core/base/text.hpp).
std::string PercentEncodeComponent(std::string_view text);

// "www.example.co.uk" -> "example.co.uk" (public suffix list). An IP address, a public suffix
// itself or an unknown single label gives the host unchanged.
std::string RegistrableDomain(std::string_view host);

}  // namespace celeriac::extractor::parse
