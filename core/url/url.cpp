#include "core/url/url.hpp"

#include <curl/curl.h>
#include <idn2.h>

#include <algorithm>
#include <memory>
#include <utility>
#include <vector>

#include "core/base/text.hpp"
#include "core/url/query.hpp"

namespace celeriac::url {
namespace {

constexpr size_t kMaxUrlBytes = 64 * 1024;
constexpr size_t kMaxSchemeLength = 40;  // curl's MAX_SCHEME_LEN

struct HandleDeleter {
  void operator()(CURLU* u) const { curl_url_cleanup(u); }
};
using Handle = std::unique_ptr<CURLU, HandleDeleter>;

// No CURLU_GUESS_SCHEME: "example.com/x" is a caller's bug, not a URL to guess at.
unsigned Flags(ParseOptions options) {
  return CURLU_NON_SUPPORT_SCHEME | (options.keep_dot_segments ? CURLU_PATH_AS_IS : 0u) |
         (options.allow_spaces ? CURLU_ALLOW_SPACE : 0u);
}

std::optional<std::string> Get(CURLU* u, CURLUPart part) {
  char* s = nullptr;
  if (curl_url_get(u, part, &s, 0) != CURLUE_OK || s == nullptr) return std::nullopt;
  std::string out(s);
  curl_free(s);
  return out;
}

Error Invalid(std::string_view what, std::string_view url) {
  return Error(ErrorCode::kInvalidArgument,
               std::string(what) + ": " + std::string(url.substr(0, 200)), false);
}

Status CheckText(std::string_view text, std::string_view what) {
  if (text.empty()) return Invalid("empty " + std::string(what), text);
  if (text.size() > kMaxUrlBytes) return Invalid(std::string(what) + " longer than 64 KiB", text);
  // curl reads a C string: a NUL would silently cut the URL to another one.
  if (text.find('\0') != std::string_view::npos)
    return Invalid(std::string(what) + " contains a NUL byte", text);
  return Ok();
}

// An internationalised host name as its ASCII form (punycode labels), the UTS #46
// non-transitional mapping browsers use (case folded, NFC); nullopt when it is not a valid one.
// ASCII names come back as they are.
std::optional<std::string> AsciiHost(const std::string& host) {
  if (std::all_of(host.begin(), host.end(), [](char c) { return (c & 0x80) == 0; })) return host;
  char* ascii = nullptr;
  if (idn2_to_ascii_8z(host.c_str(), &ascii, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL) != IDN2_OK)
    return std::nullopt;
  std::string out(ascii);
  idn2_free(ascii);
  // UTS #46 maps some symbols to ASCII punctuation ("\u2048" is "?!"); a name made of labels
  // has none (what browsers call forbidden host code points).
  const bool name = std::all_of(out.begin(), out.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_';
  });
  if (!name || out.empty()) return std::nullopt;  // "\u00AD" alone maps to nothing
  return out;
}

// curl writes an IPv4 address given as one number, in hex or octal ("2130706433", "0x7f.1") as
// a dotted quad, but before it decodes escapes: "%30x7f.1" comes out "0x7f.1", which the next
// parse makes "127.0.0.1". A decoded host that could be such a number is read once more.
std::string NumericHostAgain(std::string host) {
  if (host.find_first_not_of("0123456789abcdefxABCDEFX.") != std::string::npos) return host;
  Handle u(curl_url());
  const std::string text = "http://" + host + "/";
  if (!u || curl_url_set(u.get(), CURLUPART_URL, text.c_str(), 0) != CURLUE_OK) return host;
  return Get(u.get(), CURLUPART_HOST).value_or(host);
}

Result<Url> Extract(CURLU* u, std::string_view original) {
  Url out;
  const auto scheme = Get(u, CURLUPART_SCHEME);
  if (!scheme) return Invalid("URL has no scheme", original);
  out.scheme = AsciiLower(*scheme);
  const auto host = Get(u, CURLUPART_HOST);
  if (!host || host->empty()) return Invalid("URL has no host", original);
  // curl 7.88's CURLU_PUNYCODE does not convert; curl converts only when it connects.
  const auto ascii_host = AsciiHost(*host);
  if (!ascii_host) return Invalid("URL has an invalid internationalised host name", original);
  // curl decodes escapes in a name and then lets '%', DEL and controls through ("a%25b" is
  // "a%b"); such a host prints as another URL, and no DNS name holds one.
  if (std::any_of(ascii_host->begin(), ascii_host->end(), [](char c) {
        return c == '%' || static_cast<unsigned char>(c) <= 0x20 || c == 0x7F;
      }))
    return Invalid("URL has a host that no name can be", original);
  out.host = NumericHostAgain(AsciiLower(*ascii_host));
  // Url has no place for one, and no crawl or broker URL needs one.
  if (Get(u, CURLUPART_ZONEID)) return Invalid("URL has an IPv6 zone id", original);
  if (const auto port = Get(u, CURLUPART_PORT)) {
    out.port = std::atoi(port->c_str());  // curl checked it: digits, at most 65535
    // curl takes ":0", which no server listens on; say so here rather than as a failed connect.
    if (out.port <= 0 || out.port > 65535) return Invalid("URL has no usable port", original);
  }
  if (const auto user = Get(u, CURLUPART_USER)) out.userinfo = *user;
  if (const auto password = Get(u, CURLUPART_PASSWORD)) out.userinfo += ':' + *password;
  out.path = Get(u, CURLUPART_PATH).value_or("/");
  if (out.path.empty()) out.path = "/";
  out.query = Get(u, CURLUPART_QUERY).value_or("");
  out.fragment = Get(u, CURLUPART_FRAGMENT).value_or("");
  return out;
}

Result<Handle> NewHandle() {
  Handle u(curl_url());
  if (!u) return Error(ErrorCode::kInternal, "curl_url() failed", false);
  return u;
}

// `reference` resolved against `base` on curl's parser (RFC 3986 5.2). curl 7.88 resolves an
// empty or fragment-only reference against the base's directory, dropping its last segment and
// query; RFC 3986 keeps them, so those are joined here.
Result<Url> ResolveReference(std::string_view base, std::string_view reference) {
  if (auto st = CheckText(base, "base URL"); !st.ok()) return st.error();
  if (reference.size() > kMaxUrlBytes)
    return Invalid("URL reference longer than 64 KiB", reference);
  if (reference.find('\0') != std::string_view::npos)
    return Invalid("URL reference contains a NUL byte", reference);
  if (reference.empty() || reference.front() == '#') {
    std::string joined(base.substr(0, base.find('#')));
    joined += reference;
    return Parse(joined);
  }
  auto u = NewHandle();
  if (!u.ok()) return u.error();
  const std::string b(base), r(reference);
  if (curl_url_set(u->get(), CURLUPART_URL, b.c_str(), Flags({})) != CURLUE_OK)
    return Invalid("malformed base URL", base);
  // Setting a URL on a handle that holds one resolves it as a reference.
  const CURLUcode rc = curl_url_set(u->get(), CURLUPART_URL, r.c_str(), Flags({}));
  if (rc != CURLUE_OK)
    return Invalid(std::string("malformed URL reference (") + curl_url_strerror(rc) + ")",
                   reference);
  return Extract(u->get(), reference);
}

bool IsAsciiAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsAsciiDigit(char c) { return c >= '0' && c <= '9'; }

bool IsUnreserved(unsigned char c) {
  return IsAsciiAlpha(static_cast<char>(c)) || IsAsciiDigit(static_cast<char>(c)) || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

// Browser-style cleanup of an href: trim C0 controls and space, drop tab/CR/LF, `\` -> `/`
// before the query or fragment.
std::string CleanHref(std::string_view ref) {
  size_t b = 0, e = ref.size();
  while (b < e && static_cast<unsigned char>(ref[b]) <= 0x20) ++b;
  while (e > b && static_cast<unsigned char>(ref[e - 1]) <= 0x20) --e;
  std::string out;
  out.reserve(e - b);
  bool in_query = false;
  for (size_t i = b; i < e; ++i) {
    char c = ref[i];
    if (c == '\t' || c == '\n' || c == '\r') continue;
    if (c == '?' || c == '#') in_query = true;
    if (c == '\\' && !in_query) c = '/';
    out += c;
  }
  return out;
}

// Bytes a link may not carry raw.
bool NeedsEscape(unsigned char c) {
  if (c <= 0x20 || c >= 0x7F) return true;
  switch (c) {
    case '"': case '<': case '>': case '`': case '{': case '}': case '|': case '\\': case '^':
      return true;
    default:
      return false;
  }
}

void AppendEscaped(std::string& out, std::string_view s, bool escape_at) {
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    const bool escape = c == '%' && !(i + 2 < s.size() && HexDigitValue(s[i + 1]) >= 0 &&
                                      HexDigitValue(s[i + 2]) >= 0);
    if (escape || NeedsEscape(c) || (escape_at && c == '@')) {
      AppendPercentEncoded(out, c);
    } else {
      out += static_cast<char>(c);
    }
  }
}

// `ref` with the bytes a link may not carry raw percent-encoded everywhere but in the host and
// port, which are left to curl (it refuses what cannot be a host); in the userinfo, every '@'
// but the one that ends it too, so that where the host begins stays unambiguous. nullopt when
// what precedes the first ':' is not a scheme, when a scheme is not followed by "//" and a host
// ("mailto:", "javascript:", "http:/x", "http:///x"), or when the host holds a NUL.
//
// This finds only where the authority is (RFC 3986 3: after "scheme://" or a leading "//", up
// to the first '/', '?' or '#'); the URL itself is split by curl.
std::optional<std::string> EscapeLink(std::string_view ref) {
  size_t authority = std::string_view::npos;
  const size_t delimiter = ref.find_first_of(":/?#");
  if (delimiter != std::string_view::npos && ref[delimiter] == ':' && delimiter > 0) {
    // curl reads a longer "scheme" as the start of a relative path, browsers as a scheme (and
    // then not as http): no link either way.
    if (delimiter > kMaxSchemeLength) return std::nullopt;
    if (!IsAsciiAlpha(ref[0])) return std::nullopt;
    for (size_t i = 1; i < delimiter; ++i) {
      const char c = ref[i];
      if (!IsAsciiAlpha(c) && !IsAsciiDigit(c) && c != '+' && c != '-' && c != '.')
        return std::nullopt;
    }
    if (ref.substr(delimiter + 1, 2) != "//") return std::nullopt;
    authority = delimiter + 3;
  } else if (ref.starts_with("//")) {
    authority = 2;
  }
  std::string out;
  out.reserve(ref.size() + 16);
  size_t rest = 0;
  if (authority != std::string_view::npos) {
    const size_t end = std::min(ref.find_first_of("/?#", authority), ref.size());
    const std::string_view auth = ref.substr(authority, end - authority);
    const size_t at = auth.rfind('@');
    const std::string_view host_port = at == std::string_view::npos ? auth : auth.substr(at + 1);
    if (host_port.empty() || host_port.front() == ':') return std::nullopt;
    if (host_port.find('\0') != std::string_view::npos) return std::nullopt;
    out.append(ref.substr(0, authority));
    if (at != std::string_view::npos) {
      AppendEscaped(out, auth.substr(0, at), true);
      out += '@';
    }
    out.append(host_port);
    rest = end;
  }
  AppendEscaped(out, ref.substr(rest), false);
  return out;
}

// A host a link may name: an IPv6 literal (curl checked it) or an ASCII name.
bool IsLinkHost(std::string_view host) {
  if (host.empty()) return false;
  if (host.front() == '[') return true;
  return std::all_of(host.begin(), host.end(), [](char c) {
    return IsAsciiAlpha(c) || IsAsciiDigit(c) || c == '-' || c == '.' || c == '_';
  });
}

}  // namespace

int DefaultPort(std::string_view scheme) {
  if (scheme == "http") return 80;
  if (scheme == "https") return 443;
  if (scheme == "amqp") return 5672;
  if (scheme == "amqps") return 5671;
  return 0;
}

int Url::EffectivePort() const { return port != 0 ? port : DefaultPort(scheme); }

std::string Url::Origin() const {
  std::string out = scheme + "://" + host;
  if (port != 0 && port != DefaultPort(scheme)) out += ':' + std::to_string(port);
  return out;
}

std::string Url::ToString() const {
  std::string out;
  out.reserve(scheme.size() + userinfo.size() + host.size() + path.size() + query.size() +
              fragment.size() + 16);
  out += scheme;
  out += "://";
  if (!userinfo.empty()) {
    out += userinfo;
    out += '@';
  }
  out += host;
  if (port != 0) {
    out += ':';
    out += std::to_string(port);
  }
  out += path;
  if (!query.empty()) {
    out += '?';
    out += query;
  }
  if (!fragment.empty()) {
    out += '#';
    out += fragment;
  }
  return out;
}

Result<Url> Parse(std::string_view text, ParseOptions options) {
  if (auto st = CheckText(text, "URL"); !st.ok()) return st.error();
  auto u = NewHandle();
  if (!u.ok()) return u.error();
  const std::string s(text);
  const CURLUcode rc = curl_url_set(u->get(), CURLUPART_URL, s.c_str(), Flags(options));
  if (rc != CURLUE_OK)
    return Invalid(std::string("malformed URL (") + curl_url_strerror(rc) + ")", text);
  return Extract(u->get(), text);
}

Result<Url> ParseHttpUrl(std::string_view text) {
  auto u = Parse(text);
  if (u.ok() && u->scheme != "http" && u->scheme != "https")
    return Invalid("only http and https URLs can be fetched", text);
  return u;
}

Result<std::string> ResolveRedirect(std::string_view base, std::string_view location) {
  if (location.empty()) return Invalid("empty Location", location);
  auto u = ResolveReference(base, location);
  if (!u.ok()) return u.error();
  if (u->scheme != "http" && u->scheme != "https")
    return Invalid("only http and https URLs can be fetched", location);
  return u->ToString();
}

std::optional<std::string> ResolveLink(std::string_view base, std::string_view reference,
                                       bool strip_fragment) {
  const auto escaped_base = EscapeLink(base);
  if (!escaped_base) return std::nullopt;
  const auto escaped = EscapeLink(CleanHref(reference));
  if (!escaped) return std::nullopt;
  auto u = ResolveReference(*escaped_base, *escaped);
  if (!u.ok()) return std::nullopt;
  if (u->scheme != "http" && u->scheme != "https") return std::nullopt;
  if (!IsLinkHost(u->host)) return std::nullopt;
  if (u->port == DefaultPort(u->scheme)) u->port = 0;
  if (strip_fragment) u->fragment.clear();
  std::string out = u->ToString();
  if (out.size() > kMaxUrlBytes) return std::nullopt;  // what the downloader refuses
  return out;
}

std::string Canonicalize(std::string_view text) {
  // Escapes first (RFC 3986 6.2.2 puts percent-encoding before dot segments): "%2E%2E" is "..".
  // No delimiter is decoded, so the split curl makes is the same.
  auto u = Parse(NormalizePercentEncoding(text));
  if (!u.ok()) return std::string(text);
  if (u->port == DefaultPort(u->scheme)) u->port = 0;
  std::vector<std::pair<std::string_view, std::string_view>> arguments;
  for (const std::string_view argument : SplitQuery(u->query)) {
    const size_t eq = std::min(argument.find('='), argument.size());
    // The value keeps its '=', so that "a" and "a=" stay two arguments.
    arguments.emplace_back(argument.substr(0, eq), argument.substr(eq));
  }
  std::sort(arguments.begin(), arguments.end());
  std::string query;
  for (const auto& [name, value] : arguments) {
    if (!query.empty()) query += '&';
    query += name;
    query += value;
  }
  u->query = std::move(query);
  u->fragment.clear();
  return u->ToString();
}

void AppendNormalizedPercentEncoding(std::string& out, std::string_view in) {
  for (size_t i = 0; i < in.size(); ++i) {
    const auto c = static_cast<unsigned char>(in[i]);
    if (c == '%' && i + 2 < in.size()) {
      const int hi = HexDigitValue(in[i + 1]);
      const int lo = HexDigitValue(in[i + 2]);
      if (hi >= 0 && lo >= 0) {
        const auto decoded = static_cast<unsigned char>(hi * 16 + lo);
        if (IsUnreserved(decoded)) {
          out += static_cast<char>(decoded);
        } else {
          AppendPercentEncoded(out, decoded);
        }
        i += 2;
        continue;
      }
    }
    if (c == '%' || c <= 0x20 || c >= 0x7F) {  // a '%' that starts no escape is a literal
      AppendPercentEncoded(out, c);
    } else {
      out += static_cast<char>(c);
    }
  }
}

std::string NormalizePercentEncoding(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  AppendNormalizedPercentEncoding(out, in);
  return out;
}

}  // namespace celeriac::url
