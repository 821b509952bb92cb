#include "extractor/parse/url.hpp"

#include <arpa/inet.h>
#include <libpsl.h>

#include <cctype>

#include "core/base/text.hpp"

namespace celeriac::extractor::parse {
namespace {

bool IsSchemeChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '-' || c == '.';
}

// Bytes that may not appear raw in a URL we hand to the downloader.
bool NeedsEscape(unsigned char c) {
  if (c <= 0x20 || c >= 0x7F) return true;
  switch (c) {
    case '"': case '<': case '>': case '`': case '{': case '}': case '|': case '\\': case '^':
      return true;
    default:
      return false;
  }
}

std::string EscapeUnsafe(std::string_view s, bool allow_hash) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '%' && !(i + 2 < s.size() && HexDigitValue(s[i + 1]) >= 0 && HexDigitValue(s[i + 2]) >= 0)) {
      out += "%25";
    } else if (NeedsEscape(c) || (c == '#' && !allow_hash)) {
      AppendPercentEncoded(out, c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

// RFC 3986 5.2.4.
std::string RemoveDotSegments(std::string_view input) {
  std::string output;
  output.reserve(input.size());
  std::string in(input);
  size_t pos = 0;
  while (pos < in.size()) {
    std::string_view rest(in.data() + pos, in.size() - pos);
    if (rest.starts_with("../")) {
      pos += 3;
    } else if (rest.starts_with("./")) {
      pos += 2;
    } else if (rest.starts_with("/./")) {
      pos += 2;
    } else if (rest == "/.") {
      in.replace(pos, 2, "/");
    } else if (rest.starts_with("/../")) {
      pos += 3;
      const size_t slash = output.rfind('/');
      output.erase(slash == std::string::npos ? 0 : slash);
    } else if (rest == "/..") {
      in.replace(pos, 3, "/");
      const size_t slash = output.rfind('/');
      output.erase(slash == std::string::npos ? 0 : slash);
    } else if (rest == "." || rest == "..") {
      pos = in.size();
    } else {
      size_t end = in.find('/', pos + (in[pos] == '/' ? 1 : 0));
      if (end == std::string::npos) end = in.size();
      output.append(in, pos, end - pos);
      pos = end;
    }
  }
  return output;
}

std::string MergePaths(const UrlParts& base, std::string_view ref_path) {
  if (base.has_authority && base.path.empty()) return "/" + std::string(ref_path);
  const size_t slash = base.path.rfind('/');
  if (slash == std::string::npos) return std::string(ref_path);
  return base.path.substr(0, slash + 1) + std::string(ref_path);
}

// Browser-style cleanup of an href: trim C0/space, drop tab/CR/LF, `\` -> `/` before ?/#.
std::string CleanReference(std::string_view ref) {
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

bool ValidHost(std::string_view host) {
  if (host.empty()) return false;
  if (host.front() == '[') {
    // An IPv6 literal the downloader (curl) takes: "[:10]" is made of the right characters only.
    if (host.size() < 2 || host.back() != ']') return false;
    const std::string literal(host.substr(1, host.size() - 2));
    in6_addr address;
    return literal.find('\0') == std::string::npos &&  // inet_pton would stop at it
           inet_pton(AF_INET6, literal.c_str(), &address) == 1;
  }
  for (char c : host) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_') {
      return false;
    }
  }
  return true;
}

}  // namespace

std::optional<UrlParts> ParseUrlReference(std::string_view s) {
  UrlParts u;
  // scheme: only if a ':' comes before any of / ? #
  const size_t delim = s.find_first_of(":/?#");
  if (delim != std::string_view::npos && s[delim] == ':' && delim > 0) {
    if (!std::isalpha(static_cast<unsigned char>(s[0]))) return std::nullopt;
    for (size_t i = 0; i < delim; ++i) {
      if (!IsSchemeChar(s[i])) return std::nullopt;
    }
    u.scheme = AsciiLower(s.substr(0, delim));
    s.remove_prefix(delim + 1);
  }
  if (s.starts_with("//")) {
    u.has_authority = true;
    s.remove_prefix(2);
    const size_t end = s.find_first_of("/?#");
    std::string_view authority = s.substr(0, end);
    s.remove_prefix(end == std::string_view::npos ? s.size() : end);
    const size_t at = authority.rfind('@');
    if (at != std::string_view::npos) {
      u.userinfo = std::string(authority.substr(0, at));
      authority.remove_prefix(at + 1);
    }
    // host[:port], the host an IPv6 literal in brackets or a name without ':'. Anything else
    // ("h:80.x:00", "[::1]:http:") has no port that could print back as the same URL.
    std::string_view host = authority;
    std::string_view port;
    if (authority.starts_with("[")) {
      const size_t close = authority.find(']');
      if (close == std::string_view::npos) return std::nullopt;
      host = authority.substr(0, close + 1);
      const std::string_view rest = authority.substr(close + 1);
      if (!rest.empty() && rest[0] != ':') return std::nullopt;
      if (!rest.empty()) port = rest.substr(1);
    } else if (const size_t colon = authority.find(':'); colon != std::string_view::npos) {
      host = authority.substr(0, colon);
      port = authority.substr(colon + 1);
    }
    for (char c : port) {
      if (!std::isdigit(static_cast<unsigned char>(c))) return std::nullopt;
    }
    if (port.size() > 5) return std::nullopt;
    u.port = std::string(port);
    u.host = AsciiLower(host);
  }
  const size_t hash = s.find('#');
  if (hash != std::string_view::npos) {
    u.has_fragment = true;
    u.fragment = std::string(s.substr(hash + 1));
    s = s.substr(0, hash);
  }
  const size_t question = s.find('?');
  if (question != std::string_view::npos) {
    u.has_query = true;
    u.query = std::string(s.substr(question + 1));
    s = s.substr(0, question);
  }
  u.path = std::string(s);
  return u;
}

std::string UrlParts::ToString() const {
  std::string out;
  out.reserve(scheme.size() + host.size() + path.size() + query.size() + fragment.size() + 16);
  if (!scheme.empty()) {
    out += scheme;
    out += ':';
  }
  if (has_authority) {
    out += "//";
    if (!userinfo.empty()) {
      out += userinfo;
      out += '@';
    }
    out += host;
    if (!port.empty()) {
      out += ':';
      out += port;
    }
  }
  out += path;
  if (has_query) {
    out += '?';
    out += query;
  }
  if (has_fragment) {
    out += '#';
    out += fragment;
  }
  return out;
}

int UrlParts::EffectivePort() const {
  if (!port.empty()) return std::stoi(port);
  if (scheme == "http") return 80;
  if (scheme == "https") return 443;
  return -1;
}

std::string UrlParts::Origin() const {
  std::string out = scheme + "://" + host;
  if (!port.empty() && EffectivePort() != (scheme == "https" ? 443 : scheme == "http" ? 80 : -1)) {
    out += ':';
    out += port;
  }
  return out;
}

std::optional<std::string> ResolveHttpUrl(std::string_view base_text, std::string_view reference,
                                          bool strip_fragment) {
  auto base = ParseUrlReference(base_text);
  if (!base || base->scheme.empty()) return std::nullopt;
  const std::string cleaned = CleanReference(reference);
  auto ref = ParseUrlReference(cleaned);
  if (!ref) return std::nullopt;
  // RFC 3986 5.2.2 (strict: a reference with a scheme is absolute).
  UrlParts t;
  if (!ref->scheme.empty()) {
    t = *ref;
    t.path = RemoveDotSegments(ref->path);
  } else {
    if (ref->has_authority) {
      t = *ref;
      t.path = RemoveDotSegments(ref->path);
    } else {
      t.has_authority = base->has_authority;
      t.userinfo = base->userinfo;
      t.host = base->host;
      t.port = base->port;
      if (ref->path.empty()) {
        // RFC 3986 takes the base path as it is, assuming a normalised base; a page URL such as
        // "/a/./b" is not always one, and the result must not depend on how the base was written.
        t.path = RemoveDotSegments(base->path);
        t.has_query = ref->has_query ? true : base->has_query;
        t.query = ref->has_query ? ref->query : base->query;
      } else {
        t.path = ref->path.front() == '/' ? RemoveDotSegments(ref->path)
                                          : RemoveDotSegments(MergePaths(*base, ref->path));
        t.has_query = ref->has_query;
        t.query = ref->query;
      }
    }
    t.scheme = base->scheme;
    t.has_fragment = ref->has_fragment;
    t.fragment = ref->fragment;
  }
  if (t.scheme != "http" && t.scheme != "https") return std::nullopt;
  if (!t.has_authority || !ValidHost(t.host)) return std::nullopt;
  if (!t.port.empty()) {
    const int port = std::stoi(t.port);
    if (port <= 0 || port > 65535) return std::nullopt;
    if ((t.scheme == "http" && port == 80) || (t.scheme == "https" && port == 443)) {
      t.port.clear();
    } else {
      t.port = std::to_string(port);
    }
  }
  if (t.path.empty()) t.path = "/";
  // The userinfo too (an href may carry controls or a NUL there); '@' inside it is escaped so
  // that where the host begins stays unambiguous.
  if (!t.userinfo.empty()) {
    std::string userinfo;
    for (char c : EscapeUnsafe(t.userinfo, false)) {
      if (c == '@') {
        userinfo += "%40";
      } else {
        userinfo += c;
      }
    }
    t.userinfo = std::move(userinfo);
  }
  t.path = EscapeUnsafe(t.path, false);
  if (t.has_query) t.query = EscapeUnsafe(t.query, false);
  if (strip_fragment) {
    t.has_fragment = false;
    t.fragment.clear();
  } else if (t.has_fragment) {
    t.fragment = EscapeUnsafe(t.fragment, true);
  }
  return t.ToString();
}

std::string PercentEncodeComponent(std::string_view text) {
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      AppendPercentEncoded(out, c);
    }
  }
  return out;
}

std::optional<std::string> QueryParam(std::string_view query, std::string_view name) {
  while (true) {
    const size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    const size_t eq = pair.find('=');
    if (PercentDecode(pair.substr(0, eq), true) == name) {
      return eq == std::string_view::npos ? std::string()
                                          : PercentDecode(pair.substr(eq + 1), true);
    }
    if (amp == std::string_view::npos) return std::nullopt;
    query.remove_prefix(amp + 1);
  }
}

std::optional<std::string> SetQueryParam(std::string_view url, std::string_view name,
                                         std::string_view value) {
  auto parts = ParseUrlReference(url);
  if (!parts) return std::nullopt;
  const std::string encoded = PercentEncodeComponent(name) + "=" + PercentEncodeComponent(value);
  std::string query;
  bool replaced = false;
  std::string_view rest = parts->query;
  while (parts->has_query) {
    const size_t amp = rest.find('&');
    std::string_view pair = rest.substr(0, amp);
    if (PercentDecode(pair.substr(0, pair.find('=')), true) == name) {
      if (!replaced) {
        if (!query.empty()) query += '&';
        query += encoded;
        replaced = true;
      }
    } else if (!pair.empty()) {
      if (!query.empty()) query += '&';
      query += pair;
    }
    if (amp == std::string_view::npos) break;
    rest.remove_prefix(amp + 1);
  }
  if (!replaced) {
    if (!query.empty()) query += '&';
    query += encoded;
  }
  parts->has_query = true;
  parts->query = std::move(query);
  return parts->ToString();
}

std::string RegistrableDomain(std::string_view host) {
  static const psl_ctx_t* psl = [] {
    const psl_ctx_t* ctx = psl_latest(nullptr);  // newest of the system list and the built-in one
    return ctx != nullptr ? ctx : psl_builtin();
  }();
  const std::string h(host);
  if (psl == nullptr || h.empty() || h.front() == '[') return h;
  if (h.find_first_not_of("0123456789.") == std::string::npos) return h;  // IPv4
  const char* domain = psl_registrable_domain(psl, h.c_str());
  return domain != nullptr ? std::string(domain) : h;
}

}  // namespace celeriac::extractor::parse
