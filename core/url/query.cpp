#include "core/url/query.hpp"

#include "core/base/text.hpp"
#include "core/url/url.hpp"

namespace celeriac::url {
namespace {

std::string_view NameOf(std::string_view argument) {
  return argument.substr(0, argument.find('='));
}

}  // namespace

std::vector<std::string_view> SplitQuery(std::string_view query) {
  std::vector<std::string_view> out;
  while (!query.empty()) {
    const size_t amp = query.find('&');
    if (const std::string_view argument = query.substr(0, amp); !argument.empty())
      out.push_back(argument);
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return out;
}

std::optional<std::string> QueryParam(std::string_view query, std::string_view name) {
  for (const std::string_view argument : SplitQuery(query)) {
    if (PercentDecode(NameOf(argument), true) != name) continue;
    const size_t eq = argument.find('=');
    return eq == std::string_view::npos ? std::string()
                                        : PercentDecode(argument.substr(eq + 1), true);
  }
  return std::nullopt;
}

std::optional<std::string> SetQueryParam(std::string_view url, std::string_view name,
                                         std::string_view value) {
  auto parts = Parse(url);
  if (!parts.ok()) return std::nullopt;
  const std::string encoded = EncodeComponent(name) + "=" + EncodeComponent(value);
  std::string query;
  bool replaced = false;
  for (const std::string_view argument : SplitQuery(parts->query)) {
    const bool named = PercentDecode(NameOf(argument), true) == name;
    if (named && replaced) continue;
    if (!query.empty()) query += '&';
    if (named) {
      query += encoded;
      replaced = true;
    } else {
      query += argument;
    }
  }
  if (!replaced) {
    if (!query.empty()) query += '&';
    query += encoded;
  }
  parts->query = std::move(query);
  return parts->ToString();
}

std::string EncodeComponent(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '.' || c == '_' || c == '~') {
      out += ch;
    } else {
      AppendPercentEncoded(out, c);
    }
  }
  return out;
}

}  // namespace celeriac::url
