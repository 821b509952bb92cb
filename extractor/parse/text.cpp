#include "extractor/parse/text.hpp"

#include "core/base/text.hpp"

#include <iconv.h>

#include <cctype>
#include <cerrno>
#include <cstring>

namespace celeriac::extractor::parse {
namespace {

bool IsSpaceAscii(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

// Length of the whitespace at s[i] (1 for ASCII, 2 for U+00A0), or 0.
size_t SpaceAt(std::string_view s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  if (IsSpaceAscii(c)) return 1;
  if (c == 0xC2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) == 0xA0) return 2;
  return 0;
}

// The 0x80-0x9F block of windows-1252 (0 = undefined).
constexpr uint16_t kCp1252[32] = {
    0x20AC, 0,      0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
    0x2039, 0x0152, 0,      0x017D, 0,      0,      0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
    0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0,      0x017E, 0x0178};


struct NamedEntity {
  const char* name;
  uint32_t cp;
};
constexpr NamedEntity kEntities[] = {
    {"amp", '&'},     {"lt", '<'},       {"gt", '>'},       {"quot", '"'},    {"apos", '\''},
    {"nbsp", 0xA0},   {"copy", 0xA9},    {"reg", 0xAE},     {"euro", 0x20AC}, {"pound", 0xA3},
    {"yen", 0xA5},    {"cent", 0xA2},    {"hellip", 0x2026}, {"ndash", 0x2013}, {"mdash", 0x2014},
    {"lsquo", 0x2018}, {"rsquo", 0x2019}, {"ldquo", 0x201C}, {"rdquo", 0x201D}, {"trade", 0x2122},
    {"times", 0xD7},  {"middot", 0xB7},  {"laquo", 0xAB},   {"raquo", 0xBB},  {"deg", 0xB0},
};

}  // namespace



void AppendCollapsed(std::string_view s, std::string* out, bool* pending_space) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = SpaceAt(s, i);
    if (n > 0) {
      *pending_space = true;
      i += n;
      continue;
    }
    if (*pending_space && !out->empty()) *out += ' ';
    *pending_space = false;
    *out += s[i++];
  }
}

std::string NormalizeSpace(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  bool pending = false;
  AppendCollapsed(s, &out, &pending);
  return out;
}


std::string DecodeEntities(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '&') {
      out += s[i];
      continue;
    }
    const size_t semi = s.find(';', i + 1);
    if (semi == std::string_view::npos || semi - i > 12) {
      out += '&';
      continue;
    }
    const std::string_view name = s.substr(i + 1, semi - i - 1);
    bool decoded = false;
    if (name.size() >= 2 && name[0] == '#') {
      uint32_t cp = 0;
      const bool hex = name[1] == 'x' || name[1] == 'X';
      const std::string_view digits = name.substr(hex ? 2 : 1);
      bool ok = !digits.empty() && digits.size() <= 7;
      for (char c : digits) {
        const auto u = static_cast<unsigned char>(c);
        if (hex ? !std::isxdigit(u) : !std::isdigit(u)) {
          ok = false;
          break;
        }
        cp = cp * (hex ? 16 : 10) +
             static_cast<uint32_t>(std::isdigit(u) ? c - '0' : (c | 0x20) - 'a' + 10);
      }
      if (ok) {
        AppendUtf8(&out, cp);
        decoded = true;
      }
    } else {
      for (const auto& e : kEntities) {
        if (name == e.name) {
          AppendUtf8(&out, e.cp);
          decoded = true;
          break;
        }
      }
    }
    if (decoded) {
      i = semi;
    } else {
      out += '&';
    }
  }
  return out;
}

std::string StripTags(std::string_view html) {
  std::string text;
  text.reserve(html.size());
  for (size_t i = 0; i < html.size();) {
    if (html[i] == '<') {
      if (html.substr(i, 4) == "<!--") {
        const size_t end = html.find("-->", i + 4);
        i = end == std::string_view::npos ? html.size() : end + 3;
        continue;
      }
      const char next = i + 1 < html.size() ? html[i + 1] : '\0';
      if (std::isalpha(static_cast<unsigned char>(next)) || next == '/' || next == '!' ||
          next == '?') {
        // Skip to the closing '>', honouring quoted attribute values.
        char quote = 0;
        size_t j = i + 1;
        for (; j < html.size(); ++j) {
          const char c = html[j];
          if (quote != 0) {
            if (c == quote) quote = 0;
          } else if (c == '"' || c == '\'') {
            quote = c;
          } else if (c == '>') {
            break;
          }
        }
        i = j + 1;
        continue;
      }
    }
    text += html[i++];
  }
  return DecodeEntities(text);
}



std::string ToUtf8(std::string_view bytes, std::string_view charset) {
  const std::string label = AsciiLower(Trim(charset));
  if (label.empty() || label == "utf-8" || label == "utf8" || label == "us-ascii" ||
      label == "ascii") {
    return IsValidUtf8(bytes) ? std::string(bytes) : SanitizeUtf8(bytes);
  }
  if (label == "iso-8859-1" || label == "latin1" || label == "latin-1" ||
      label == "windows-1252" || label == "cp1252" || label == "iso8859-1") {
    // WHATWG: latin-1 labels mean windows-1252.
    std::string out;
    out.reserve(bytes.size() + bytes.size() / 8);
    for (unsigned char c : bytes) {
      if (c < 0x80) {
        out += static_cast<char>(c);
      } else if (c < 0xA0) {
        AppendUtf8(&out, kCp1252[c - 0x80] != 0 ? kCp1252[c - 0x80] : c);
      } else {
        AppendUtf8(&out, c);
      }
    }
    return out;
  }
  iconv_t cd = iconv_open("UTF-8", label.c_str());
  if (cd == reinterpret_cast<iconv_t>(-1)) return SanitizeUtf8(bytes);
  std::string out;
  out.resize(bytes.size() * 4 + 16);
  char* in = const_cast<char*>(bytes.data());
  size_t in_left = bytes.size();
  char* dst = out.data();
  size_t out_left = out.size();
  while (in_left > 0) {
    const size_t rc = iconv(cd, &in, &in_left, &dst, &out_left);
    if (rc != static_cast<size_t>(-1)) break;
    if (errno == E2BIG) break;  // cannot happen with 4x room; stop rather than loop
    // EILSEQ / EINVAL: one undecodable byte becomes U+FFFD.
    if (out_left < 3) break;
    std::memcpy(dst, "\xEF\xBF\xBD", 3);
    dst += 3;
    out_left -= 3;
    ++in;
    --in_left;
  }
  iconv_close(cd);
  out.resize(out.size() - out_left);
  return IsValidUtf8(out) ? out : SanitizeUtf8(out);
}

}  // namespace celeriac::extractor::parse
