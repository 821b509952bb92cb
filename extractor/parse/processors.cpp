#include "extractor/parse/processors.hpp"

#include <date/date.h>

#include <cctype>
#include <charconv>
#include <locale>
#include <set>
#include <sstream>

#include "core/url/url.hpp"
#include "extractor/parse/text.hpp"

namespace celeriac::extractor::parse {
namespace {

using nlohmann::json;
using Kind = Processor::Kind;

// A string, or the JSON text of a number or boolean; nullopt for null, arrays and objects.
std::optional<std::string> AsText(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number() || v.is_boolean()) return v.dump();
  return std::nullopt;
}

Result<std::shared_ptr<const Regex>> CompileRegex(const std::string& pattern) {
  return Regex::Compile(pattern);
}

// ${N} references in a PCRE2 replacement must name existing groups.
bool ReplacementGroupsExist(const std::string& replacement, int captures) {
  for (size_t i = 0; i + 1 < replacement.size(); ++i) {
    if (replacement[i] != '$') continue;
    if (replacement[i + 1] == '$') {
      ++i;
      continue;
    }
    if (replacement[i + 1] != '{') continue;
    const size_t close = replacement.find('}', i);
    const std::string ref = replacement.substr(i + 2, close - i - 2);
    if (!ref.empty() && std::isdigit(static_cast<unsigned char>(ref[0]))) {
      // Not std::stoi: "$<99999999999>" would throw out of the compiler.
      int group = 0;
      const auto [end, ec] = std::from_chars(ref.data(), ref.data() + ref.size(), group);
      if (ec != std::errc() || group > captures) return false;
    }
  }
  return true;
}

bool HasTimeField(const std::string& format) {
  for (size_t i = 0; i + 1 < format.size(); ++i) {
    if (format[i] != '%') continue;
    size_t j = i + 1;
    if (format[j] == 'E' || format[j] == 'O') ++j;
    if (j < format.size() && std::string_view("HIMSTRrcXsp").find(format[j]) != std::string_view::npos) {
      return true;
    }
    i = j;
  }
  return false;
}

bool HasOffsetField(const std::string& format) {
  return format.find("%z") != std::string::npos || format.find("%Ez") != std::string::npos ||
         format.find("%Oz") != std::string::npos;
}

}  // namespace

Result<Processor> CompileProcessor(const json& spec) {
  if (!spec.is_object() || spec.size() != 1) {
    return Error(ErrorCode::kInvalidArgument, "a processor is an object with exactly one key");
  }
  // Not `auto& [key, arg] = *spec.items().begin()`: that binds to a proxy that dies at the end
  // of the statement (its key() points into it).
  const auto entry = spec.begin();
  const std::string& key = entry.key();
  const json& arg = entry.value();
  Processor p{};
  if (key == "trim") {
    p.kind = Kind::kTrim;
  } else if (key == "normalize_space") {
    p.kind = Kind::kNormalizeSpace;
  } else if (key == "lower") {
    p.kind = Kind::kLower;
  } else if (key == "strip_tags") {
    p.kind = Kind::kStripTags;
  } else if (key == "first") {
    p.kind = Kind::kFirst;
  } else if (key == "unique") {
    p.kind = Kind::kUnique;
  } else if (key == "urljoin") {
    p.kind = Kind::kUrlJoin;
  } else if (key == "split") {
    p.kind = Kind::kSplit;
    p.text = arg.get<std::string>();
  } else if (key == "join") {
    p.kind = Kind::kJoin;
    p.text = arg.get<std::string>();
  } else if (key == "map") {
    p.kind = Kind::kMap;
    p.map = arg;
  } else if (key == "regex") {
    p.kind = Kind::kRegex;
    const std::string pattern = arg.is_string() ? arg.get<std::string>()
                                                : arg.at("pattern").get<std::string>();
    auto regex = CompileRegex(pattern);
    if (!regex.ok()) return regex.error();
    p.regex = *regex;
    if (arg.is_object() && arg.contains("group")) {
      p.group = arg["group"].get<int>();
      if (p.group > p.regex->capture_count()) {
        return Error(ErrorCode::kInvalidArgument,
                     "group " + std::to_string(p.group) + " but the pattern has " +
                         std::to_string(p.regex->capture_count()) + " group(s)");
      }
    } else {
      p.group = p.regex->capture_count() > 0 ? 1 : 0;
    }
  } else if (key == "replace") {
    p.kind = Kind::kReplace;
    auto regex = CompileRegex(arg.at("pattern").get<std::string>());
    if (!regex.ok()) return regex.error();
    p.regex = *regex;
    p.text = TranslateEcmaReplacement(arg.at("with").get<std::string>());
    if (!ReplacementGroupsExist(p.text, p.regex->capture_count())) {
      return Error(ErrorCode::kInvalidArgument,
                   "replacement refers to a group the pattern does not have");
    }
  } else if (key == "cast") {
    if (arg.is_string()) {
      const auto& t = arg.get_ref<const std::string&>();
      if (t == "int") {
        p.kind = Kind::kCastInt;
      } else if (t == "decimal") {
        p.kind = Kind::kCastDecimal;
      } else if (t == "bool") {
        p.kind = Kind::kCastBool;
      } else {
        return Error(ErrorCode::kInvalidArgument, "unknown cast \"" + t + "\"");
      }
    } else {
      p.kind = Kind::kCastDate;
      p.text = arg.at("date").get<std::string>();
    }
  } else {
    return Error(ErrorCode::kInvalidArgument, "unknown processor \"" + key + "\"");
  }
  return p;
}

bool PipelineReduces(const std::vector<Processor>& pipeline) {
  for (const auto& p : pipeline) {
    if (p.kind == Kind::kJoin || p.kind == Kind::kFirst) return true;
  }
  return false;
}

std::optional<json> CastInt(const json& v) {
  if (v.is_number_integer()) return v;
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (d == static_cast<double>(static_cast<int64_t>(d)) && d > -9.2e18 && d < 9.2e18) {
      return json(static_cast<int64_t>(d));
    }
    return std::nullopt;
  }
  if (v.is_boolean()) return json(v.get<bool>() ? 1 : 0);
  if (!v.is_string()) return std::nullopt;
  std::string_view s = Trim(v.get_ref<const std::string&>());
  if (s.starts_with("+")) s.remove_prefix(1);
  int64_t out = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  if (ec != std::errc() || ptr != s.data() + s.size() || s.empty()) return std::nullopt;
  return json(out);
}

std::optional<json> CastDecimal(const json& v) {
  std::string text;
  if (v.is_number_integer()) return json(v.dump());
  if (v.is_number_float()) {
    text = v.dump();
    if (text.find_first_of("eE") != std::string::npos) return std::nullopt;
  } else if (v.is_string()) {
    text = std::string(Trim(v.get_ref<const std::string&>()));
  } else {
    return std::nullopt;
  }
  std::string_view s = text;
  bool negative = false;
  if (s.starts_with("-") || s.starts_with("+")) {
    negative = s[0] == '-';
    s.remove_prefix(1);
  }
  const size_t dot = s.find('.');
  std::string_view int_part = s.substr(0, dot);
  std::string_view frac_part = dot == std::string_view::npos ? "" : s.substr(dot + 1);
  if (int_part.empty() && frac_part.empty()) return std::nullopt;
  for (char c : int_part) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return std::nullopt;
  }
  for (char c : frac_part) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return std::nullopt;
  }
  while (int_part.size() > 1 && int_part[0] == '0') int_part.remove_prefix(1);
  std::string out;
  const bool zero = int_part.find_first_not_of('0') == std::string_view::npos &&
                    frac_part.find_first_not_of('0') == std::string_view::npos;
  if (negative && !zero) out += '-';
  out += int_part.empty() ? "0" : std::string(int_part);
  if (!frac_part.empty()) {
    out += '.';
    out += frac_part;
  }
  return json(out);
}

std::optional<json> CastBool(const json& v) {
  if (v.is_boolean()) return v;
  if (v.is_number()) return json(v.get<double>() != 0);
  if (!v.is_string()) return std::nullopt;
  const std::string s = AsciiLower(Trim(v.get_ref<const std::string&>()));
  if (s == "true" || s == "1" || s == "yes" || s == "on" || s == "y" || s == "t") return json(true);
  if (s == "false" || s == "0" || s == "no" || s == "off" || s == "n" || s == "f") {
    return json(false);
  }
  return std::nullopt;
}

std::optional<json> CastDate(const json& v, const std::string& format) {
  if (!v.is_string()) return std::nullopt;
  std::istringstream in{std::string(Trim(v.get_ref<const std::string&>()))};
  in.imbue(std::locale::classic());
  // Seconds are parsed into a floating-point duration: date.h reads %S as a long double and
  // converts it to the target duration before it checks the stream, so with integral seconds a
  // value such as "08:30:xx" (S is NaN then) is a NaN-to-integer conversion, undefined behaviour.
  using FloatSeconds = std::chrono::duration<long double>;
  if (HasOffsetField(format)) {
    date::sys_time<FloatSeconds> tp;
    in >> date::parse(format, tp);
    if (in.fail()) return std::nullopt;
    return json(date::format("%Y-%m-%dT%H:%M:%SZ", std::chrono::floor<std::chrono::seconds>(tp)));
  }
  if (HasTimeField(format)) {
    date::local_time<FloatSeconds> tp;
    in >> date::parse(format, tp);
    if (in.fail()) return std::nullopt;
    return json(date::format("%Y-%m-%dT%H:%M:%S", std::chrono::floor<std::chrono::seconds>(tp)));
  }
  date::year_month_day ymd;
  in >> date::parse(format, ymd);
  if (in.fail() || !ymd.ok()) return std::nullopt;
  return json(date::format("%Y-%m-%d", ymd));
}

void RunPipeline(const std::vector<Processor>& pipeline, std::string_view base_url,
                 std::vector<json>* values) {
  std::vector<json> next;
  for (const auto& p : pipeline) {
    switch (p.kind) {
      case Kind::kFirst:
        if (values->size() > 1) values->resize(1);
        continue;
      case Kind::kUnique: {
        std::set<std::string> seen;
        next.clear();
        for (auto& v : *values) {
          if (seen.insert(v.dump(-1, ' ', false, json::error_handler_t::replace)).second) {
            next.push_back(std::move(v));
          }
        }
        values->swap(next);
        continue;
      }
      case Kind::kJoin: {
        if (values->empty()) continue;
        std::string joined;
        bool first = true;
        for (const auto& v : *values) {
          auto t = AsText(v);
          if (!t) continue;
          if (!first) joined += p.text;
          joined += *t;
          first = false;
        }
        values->assign(1, json(std::move(joined)));
        continue;
      }
      default:
        break;
    }
    next.clear();
    next.reserve(values->size());
    for (auto& v : *values) {
      switch (p.kind) {
        case Kind::kCastInt:
          if (auto c = CastInt(v)) next.push_back(std::move(*c));
          continue;
        case Kind::kCastDecimal:
          if (auto c = CastDecimal(v)) next.push_back(std::move(*c));
          continue;
        case Kind::kCastBool:
          if (auto c = CastBool(v)) next.push_back(std::move(*c));
          continue;
        case Kind::kCastDate:
          if (auto c = CastDate(v, p.text)) next.push_back(std::move(*c));
          continue;
        case Kind::kMap: {
          auto t = AsText(v);
          if (t) {
            auto it = p.map.find(*t);
            if (it != p.map.end()) {
              next.push_back(*it);
              continue;
            }
          }
          next.push_back(std::move(v));
          continue;
        }
        default:
          break;
      }
      auto text = AsText(v);
      if (!text) {
        next.push_back(std::move(v));
        continue;
      }
      switch (p.kind) {
        case Kind::kTrim:
          next.emplace_back(std::string(Trim(*text)));
          break;
        case Kind::kNormalizeSpace:
          next.emplace_back(NormalizeSpace(*text));
          break;
        case Kind::kLower:
          next.emplace_back(AsciiLower(*text));
          break;
        case Kind::kStripTags:
          next.emplace_back(StripTags(*text));
          break;
        case Kind::kRegex: {
          size_t offset = 0;
          auto m = p.regex->Find(*text, p.group, &offset);
          if (m) next.emplace_back(std::string(*m));
          break;
        }
        case Kind::kReplace: {
          auto r = p.regex->ReplaceAll(*text, p.text);
          next.emplace_back(r ? std::move(*r) : std::move(*text));
          break;
        }
        case Kind::kSplit: {
          std::string_view rest = *text;
          while (true) {
            const size_t at = rest.find(p.text);
            next.emplace_back(std::string(rest.substr(0, at)));
            if (at == std::string_view::npos) break;
            rest.remove_prefix(at + p.text.size());
          }
          break;
        }
        case Kind::kUrlJoin: {
          auto resolved = url::ResolveLink(base_url, *text, false);
          if (resolved) next.emplace_back(std::move(*resolved));
          break;
        }
        default:
          next.push_back(std::move(v));
          break;
      }
    }
    values->swap(next);
  }
}

}  // namespace celeriac::extractor::parse
