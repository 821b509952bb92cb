#include "core/base/secrets.hpp"

#include <algorithm>
#include <cctype>
#include <utility>
#include <vector>

#include "core/base/text.hpp"

namespace celeriac {
namespace {

// A half-open range [first, second) of the text that holds a secret.
using Span = std::pair<size_t, size_t>;

constexpr size_t kMaxUrlScan = 4096;

bool IsSpace(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

bool IsKeyChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '-' || c == '.';
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

bool IsSecretKey(std::string_view key) {
  const std::string k = AsciiLower(key);
  return k == "password" || k == "passwd" || k == "pwd" || k == "pass" || k == "apikey" ||
         k == "api_key" || EndsWith(k, "password") || EndsWith(k, "secret") ||
         EndsWith(k, "token");
}

// The password of each URL userinfo ("scheme://user:password@host").
void FindUrlPasswords(std::string_view text, std::vector<Span>& spans) {
  size_t stop = 0;
  for (size_t pos = text.find("://"); pos != std::string_view::npos;
       pos = text.find("://", pos + 3)) {
    const size_t a = pos + 3;
    // A URL runs to the next white space: an unencoded '/', '?', '#' or '@' in a password is
    // invalid but common, so the authority's usual delimiters cannot bound the search. URLs
    // nested in one token ("...?next=http://...") share its end.
    if (stop < a) {
      stop = a;
      while (stop < text.size() && !IsSpace(text[stop])) ++stop;
    }
    // Bounded, so that a long line of "://" costs linear time; no userinfo is this long.
    const std::string_view token = text.substr(a, std::min(stop - a, kMaxUrlScan));
    // The userinfo ends at the last '@' before the query if there is one (an '@' in a query
    // value is not userinfo), else at the last '@' of the token.
    const size_t query = token.find('?');
    size_t at = token.substr(0, query).rfind('@');
    if (at == std::string_view::npos) at = token.rfind('@');
    if (at == std::string_view::npos) continue;
    const std::string_view userinfo = token.substr(0, at);
    const size_t colon = userinfo.find(':');
    if (colon == std::string_view::npos) continue;  // a user name only
    // "host/path:x@y" is a path, not a user.
    if (userinfo.substr(0, colon).find_first_of("/?#") != std::string_view::npos) continue;
    // "host:80/path@x" is a port followed by a path that holds an '@'.
    const size_t after = userinfo.find_first_of("/?#", colon + 1);
    if (after != std::string_view::npos) {
      const std::string_view digits = userinfo.substr(colon + 1, after - colon - 1);
      if (std::all_of(digits.begin(), digits.end(),
                      [](char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; }))
        continue;
    }
    if (colon + 1 < at) spans.emplace_back(a + colon + 1, a + at);
  }
}

// "user:password@host" written without a scheme (invalid, but it must not leak either): a
// white-space delimited word with a ':' before its last '@', and no "/?#@" before the ':'.
void FindSchemelessPasswords(std::string_view text, std::vector<Span>& spans) {
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && IsSpace(text[i])) ++i;
    size_t end = i;
    while (end < text.size() && !IsSpace(text[end])) ++end;
    const std::string_view word = text.substr(i, end - i);
    const size_t colon = word.find(':');
    const size_t at = word.rfind('@');
    if (word.find("://") == std::string_view::npos && colon != std::string_view::npos &&
        colon > 0 && word.substr(0, colon).find_first_of("/?#@") == std::string_view::npos &&
        at != std::string_view::npos && at > colon + 1 && at + 1 < word.size()) {
      spans.emplace_back(i + colon + 1, i + at);
    }
    i = end;
  }
}

// The value of each secret key=value pair: libpq's key=value strings (values optionally
// single-quoted, with backslash escapes) and URL query parameters.
void FindKeyValueSecrets(std::string_view text, std::vector<Span>& spans) {
  size_t i = 0;
  const size_t n = text.size();
  while (i < n) {
    if (!IsKeyChar(text[i]) || (i > 0 && IsKeyChar(text[i - 1]))) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < n && IsKeyChar(text[j])) ++j;
    size_t k = j;
    while (k < n && (text[k] == ' ' || text[k] == '\t')) ++k;
    if (k >= n || text[k] != '=' || !IsSecretKey(text.substr(i, j - i))) {
      i = j;
      continue;
    }
    ++k;
    while (k < n && (text[k] == ' ' || text[k] == '\t')) ++k;
    size_t end = k;
    if (k < n && text[k] == '\'') {
      end = k + 1;
      while (end < n && text[end] != '\'') end += text[end] == '\\' ? 2 : 1;
      end = std::min(end + 1, n);  // the closing quote; unterminated: the rest of the text
    } else {
      while (end < n && !IsSpace(text[end]) && text[end] != '&' && text[end] != '"')
        end += text[end] == '\\' ? 2 : 1;
      end = std::min(end, n);
    }
    if (end > k) spans.emplace_back(k, end);
    i = std::max(end, j);
  }
}

std::vector<Span> SecretSpans(std::string_view text) {
  std::vector<Span> spans;
  FindUrlPasswords(text, spans);
  FindSchemelessPasswords(text, spans);
  FindKeyValueSecrets(text, spans);
  std::sort(spans.begin(), spans.end());
  std::vector<Span> merged;
  for (const Span& s : spans) {
    if (!merged.empty() && s.first <= merged.back().second) {
      merged.back().second = std::max(merged.back().second, s.second);
    } else {
      merged.push_back(s);
    }
  }
  return merged;
}

// A libpq single-quoted value without its quotes and escapes.
std::string Unquoted(std::string_view s) {
  if (s.empty() || s.front() != '\'') return std::string(s);
  std::string out;
  for (size_t i = 1; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      out.push_back(s[++i]);
    } else if (s[i] == '\'') {
      break;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

void ReplaceAll(std::string& text, std::string_view needle) {
  for (size_t pos = text.find(needle); pos != std::string::npos;
       pos = text.find(needle, pos + kMaskedSecret.size())) {
    text.replace(pos, needle.size(), kMaskedSecret);
  }
}

}  // namespace

std::string MaskSecrets(std::string_view text) {
  const std::vector<Span> spans = SecretSpans(text);
  if (spans.empty()) return std::string(text);
  std::string out;
  out.reserve(text.size());
  size_t copied = 0;
  for (const Span& s : spans) {
    out.append(text.substr(copied, s.first - copied));
    out.append(kMaskedSecret);
    copied = s.second;
  }
  out.append(text.substr(copied));
  return out;
}

std::string MaskSecrets(std::string_view text, std::string_view connection_string) {
  std::string out = MaskSecrets(text);
  std::vector<std::string> secrets;
  for (const Span& s : SecretSpans(connection_string)) {
    const std::string_view raw = connection_string.substr(s.first, s.second - s.first);
    const std::string plain = Unquoted(raw);
    for (std::string candidate : {std::string(raw), plain, PercentDecode(plain)}) {
      if (candidate.size() >= 3 && candidate.find(kMaskedSecret) == std::string::npos)
        secrets.push_back(std::move(candidate));
    }
  }
  // Longest first, so that a password is not half-replaced through a shorter one it contains.
  std::sort(secrets.begin(), secrets.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  for (const std::string& secret : secrets) ReplaceAll(out, secret);
  return out;
}

std::string DescribeUrlScheme(std::string_view url) {
  const size_t colon = url.find("://");
  const std::string_view scheme = url.substr(0, colon == std::string_view::npos ? 0 : colon);
  const bool well_formed =
      !scheme.empty() && scheme.size() <= 32 &&
      std::isalpha(static_cast<unsigned char>(scheme[0])) != 0 &&
      std::all_of(scheme.begin(), scheme.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '+' || c == '-' ||
               c == '.';
      });
  return well_formed ? "scheme '" + std::string(scheme) + "'" : "no URL scheme";
}

}  // namespace celeriac
