#pragma once
// URLs, read by libcurl's URL parser (CURLU): the one place that splits, resolves and normalises
// them. The downloader, the extractor's links, the request fingerprint and the broker URL all
// read a URL here, so each sees the parts curl itself will connect to.
//
// Three strengths of normal form, weakest first:
//  * Parse: the parts as curl reads them: scheme and host lower-cased, dot segments removed
//    (unless ParseOptions say not to), the rest as written. What the downloader and broker use.
//  * ResolveLink: an href as a browser follows it: cleaned, resolved against the page (RFC 3986
//    5.2), bytes that may not appear raw percent-encoded, default port dropped. What the crawl
//    stores and fetches.
//  * Canonicalize: for request fingerprints only, w3lib's canonicalize_url where it is sound:
//    percent-encoding normalised, query arguments sorted, fragment dropped.
//
// Limits of libcurl 7.88 that show: an empty query or fragment ("x?", "x#") is dropped; IPv6
// zone ids are refused. Internationalised host names are converted here (libidn2, UTS #46 as
// browsers do), as curl's CURLU_PUNYCODE does not in this version.
//
// Pure functions, no I/O; safe from any thread.

#include <optional>
#include <string>
#include <string_view>

#include "core/base/result.hpp"

namespace celeriac::url {

// scheme://userinfo@host:port/path?query#fragment, split.
struct Url {
  std::string scheme;    // lower case, without "://"
  std::string userinfo;  // "user[:password]" percent-encoded as written; "" when absent
  std::string host;      // lower case, %XX decoded (curl's rule), an internationalised name in
                         // punycode ("xn--"), an IPv4 address as a dotted quad (however it
                         // was written); an IPv6 literal keeps its brackets
  int port = 0;          // as written; 0 when the URL names none
  std::string path;      // percent-encoded as written; at least "/"
  std::string query;     // without '?'; "" when absent or empty
  std::string fragment;  // without '#'; "" when absent or empty

  int EffectivePort() const;     // `port`, else DefaultPort(scheme); 0 when neither
  std::string Origin() const;    // scheme://host[:port], the port only when not the default
  std::string ToString() const;  // the URL these parts make (it parses back to them)
};

// 80 for http, 443 for https, 5672 for amqp, 5671 for amqps; 0 for other schemes.
int DefaultPort(std::string_view scheme);

struct ParseOptions {
  // The path as written, "/./" and "/../" included (the broker's vhost is a name, not a path).
  bool keep_dot_segments = false;
  // Raw spaces outside the scheme and host kept as they are (kombu reads a broker URL with a
  // space in its password or vhost); otherwise a raw space makes the URL malformed.
  bool allow_spaces = false;
};

// An absolute URL with a host, any scheme ("scheme://host..."; no scheme guessed). Refused with
// kInvalidArgument (not retryable): empty, over 64 KiB, a NUL byte, anything curl will not
// parse, no host, a non-ASCII host that is no valid internationalised name, a host with '%' or
// a control in it once curl has decoded it, port 0, an IPv6 zone id. Messages quote at most 200
// bytes of the URL.
Result<Url> Parse(std::string_view text, ParseOptions options = {});

// Parse, and only http:// and https:// pass: what the downloader may fetch.
Result<Url> ParseHttpUrl(std::string_view text);

// `location` (absolute, scheme-relative, absolute-path or relative) resolved against `base` as a
// browser does for a redirect, as Url::ToString of an http(s) URL.
Result<std::string> ResolveRedirect(std::string_view base, std::string_view location);

// A link: `reference` cleaned the way browsers clean an href (surrounding C0 controls and spaces
// trimmed, tab, CR and LF removed, `\` read as `/` before the query), resolved against `base`
// (RFC 3986 5.2, strict: a reference with a scheme is absolute, and that scheme must be
// followed by "//" and a host), then normalised: scheme and host lower case, default port
// dropped, empty path "/", dot segments removed, and in the userinfo, path, query and fragment
// the bytes that may not appear raw (controls, space, non-ASCII, "<>`{}|\^, a '%' that starts
// no escape; '@' in the userinfo) percent-encoded. Existing escapes are kept as written. The
// fragment is removed when `strip_fragment`. nullopt unless the result is an http(s) URL the
// downloader takes, with a host name (punycode for an internationalised one) or an IPv6 literal.
std::optional<std::string> ResolveLink(std::string_view base, std::string_view reference,
                                       bool strip_fragment);

// The form two URLs share when a crawl should fetch only one of them (w3lib's
// canonicalize_url, where it is sound): scheme and host lower case, default port dropped, dot
// segments removed, empty path "/", percent-encoding normalised (NormalizePercentEncoding) in
// the userinfo, path and query, query arguments sorted (by name, then value; empty ones
// dropped), fragment dropped. Unlike w3lib it does not decode reserved characters, turn "%20"
// into "+", nor give a bare "a" an "=". A URL that does not parse comes back as it is.
std::string Canonicalize(std::string_view url);

// `in` appended to `out` with one spelling per octet (RFC 3986 6.2.2.2, as RFC 9309 2.2.2
// compares robots.txt paths): escaped unreserved characters decoded, other escapes in upper-case
// hex, a '%' that starts no escape, controls, space and non-ASCII octets escaped. Everything else
// ('*' and '$' of robots.txt patterns included) passes unchanged.
void AppendNormalizedPercentEncoding(std::string& out, std::string_view in);
std::string NormalizePercentEncoding(std::string_view in);

}  // namespace celeriac::url
