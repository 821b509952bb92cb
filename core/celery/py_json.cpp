#include "core/celery/py_json.hpp"

#include <cmath>

#include <fmt/format.h>

#include "core/celery/task_message.hpp"

namespace celeriac::celery {
namespace {

using json = nlohmann::ordered_json;

// Decodes one UTF-8 code point at s[i]; advances i. Invalid bytes come back as U+FFFD.
uint32_t NextCodePoint(const std::string& s, size_t& i) {
  const auto c = static_cast<unsigned char>(s[i]);
  int extra = c < 0x80 ? 0 : (c >> 5) == 0x6 ? 1 : (c >> 4) == 0xE ? 2 : (c >> 3) == 0x1E ? 3 : -1;
  if (extra < 0 || i + extra >= s.size()) {
    ++i;
    return 0xFFFD;
  }
  uint32_t cp = extra == 0 ? c : c & (0x3F >> extra);
  for (int k = 1; k <= extra; ++k) {
    const auto cc = static_cast<unsigned char>(s[i + k]);
    if ((cc >> 6) != 0x2) {
      ++i;
      return 0xFFFD;
    }
    cp = (cp << 6) | (cc & 0x3F);
  }
  i += extra + 1;
  return cp;
}

void DumpString(const std::string& s, std::string& out) {
  out += '"';
  for (size_t i = 0; i < s.size();) {
    const uint32_t cp = NextCodePoint(s, i);
    switch (cp) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (cp < 0x20 || (cp >= 0x7F && cp < 0x10000)) {
          out += fmt::format("\\u{:04x}", cp);
        } else if (cp >= 0x10000) {
          const uint32_t v = cp - 0x10000;
          out += fmt::format("\\u{:04x}\\u{:04x}", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
        } else {
          out += static_cast<char>(cp);
        }
    }
  }
  out += '"';
}

// repr() of a str: single quotes unless the text has ' and no ", then double quotes.
void ReprString(const std::string& s, std::string& out) {
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  out += quote;
  for (size_t i = 0; i < s.size();) {
    const size_t start = i;
    const uint32_t cp = NextCodePoint(s, i);
    if (cp == static_cast<uint32_t>(quote) || cp == '\\') {
      out += '\\';
      out += static_cast<char>(cp);
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (cp < 0x20 || cp == 0x7F) {
      out += fmt::format("\\x{:02x}", cp);
    } else {
      out.append(s, start, i - start);  // printable, including non-ASCII, as Python 3 shows it
    }
  }
  out += quote;
}

// How one language spells values: json.dumps and repr() share separators and structure.
struct Style {
  const char* true_text;
  const char* false_text;
  const char* null_text;
  const char* nan_text;
  const char* inf_text;
  void (*string)(const std::string&, std::string&);
};

constexpr Style kJsonStyle{"true", "false", "null", "NaN", "Infinity", &DumpString};
constexpr Style kReprStyle{"True", "False", "None", "nan", "inf", &ReprString};

void Write(const json& v, const Style& style, std::string& out) {
  switch (v.type()) {
    case json::value_t::object: {
      out += '{';
      bool first = true;
      for (const auto& [key, value] : v.items()) {
        if (!first) out += ", ";
        first = false;
        style.string(key, out);
        out += ": ";
        Write(value, style, out);
      }
      out += '}';
      break;
    }
    case json::value_t::array: {
      out += '[';
      bool first = true;
      for (const auto& e : v) {
        if (!first) out += ", ";
        first = false;
        Write(e, style, out);
      }
      out += ']';
      break;
    }
    case json::value_t::string:
      style.string(v.get_ref<const std::string&>(), out);
      break;
    case json::value_t::boolean:
      out += v.get<bool>() ? style.true_text : style.false_text;
      break;
    case json::value_t::null:
    case json::value_t::discarded:
      out += style.null_text;
      break;
    case json::value_t::number_float: {
      const double d = v.get<double>();
      if (std::isnan(d)) {
        out += style.nan_text;
      } else if (std::isinf(d)) {
        if (d < 0) out += '-';
        out += style.inf_text;
      } else {
        out += v.dump();
      }
      break;
    }
    default:
      out += v.dump();  // integers
  }
}

}  // namespace

std::string PyJsonDump(const json& value) {
  std::string out;
  Write(value, kJsonStyle, out);
  return out;
}

std::string PyRepr(const json& value, size_t max_chars) {
  std::string out;
  Write(value, kReprStyle, out);
  if (out.size() > max_chars) {
    out.resize(max_chars);
    // Do not cut a UTF-8 sequence in half.
    while (!out.empty() && (static_cast<unsigned char>(out.back()) & 0xC0) == 0x80) out.pop_back();
    if (!out.empty() && static_cast<unsigned char>(out.back()) >= 0xC0) out.pop_back();
    out += "...";
  }
  return out;
}

}  // namespace celeriac::celery
