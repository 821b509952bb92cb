#include "core/json/untrusted_json.hpp"

#include <vector>

#include <fmt/format.h>

#include "core/base/text.hpp"

namespace celeriac {
namespace {

template <typename J>
Result<J> Parse(std::string_view text, int max_depth) {
  if (JsonNestsDeeperThan(text, max_depth))
    return Error(ErrorCode::kProtocol,
                 fmt::format("JSON nested deeper than {} levels", max_depth));
  try {
    return J::parse(text);
  } catch (const std::exception& e) {
    return Error(ErrorCode::kProtocol, EscapeToStorableText(e.what()));
  }
}

// Walks `value` without recursion; returns whether every string and key is storable.
template <typename J>
bool Storable(const J& value) {
  std::vector<const J*> stack{&value};
  while (!stack.empty()) {
    const J* v = stack.back();
    stack.pop_back();
    if (v->is_string()) {
      if (!IsStorableText(v->template get_ref<const std::string&>())) return false;
    } else if (v->is_object()) {
      for (auto it = v->begin(); it != v->end(); ++it) {
        if (!IsStorableText(it.key())) return false;
        stack.push_back(&it.value());
      }
    } else if (v->is_array()) {
      for (const auto& e : *v) stack.push_back(&e);
    }
  }
  return true;
}

// A storable copy, depth-limited (recursion bounded by kMaxJsonDepth).
template <typename J>
J StorableCopy(const J& v, int depth) {
  if (v.is_string()) return J(EscapeToStorableText(v.template get_ref<const std::string&>()));
  if (!v.is_structured()) return v;
  if (depth >= kMaxJsonDepth) return J("...");
  if (v.is_array()) {
    J out = J::array();
    for (const auto& e : v) out.push_back(StorableCopy(e, depth + 1));
    return out;
  }
  J out = J::object();
  for (auto it = v.begin(); it != v.end(); ++it)
    out[EscapeToStorableText(it.key())] = StorableCopy(it.value(), depth + 1);
  return out;
}

// Deepest nesting of `value`, without recursion, stopping once past `limit`.
template <typename J>
bool DeeperThan(const J& value, int limit) {
  std::vector<std::pair<const J*, int>> stack{{&value, 0}};
  while (!stack.empty()) {
    auto [v, depth] = stack.back();
    stack.pop_back();
    if (!v->is_structured()) continue;
    if (depth + 1 > limit) return true;
    for (const auto& e : *v) stack.emplace_back(&e, depth + 1);
  }
  return false;
}

template <typename J>
std::string DumpStorable(const J& value) {
  // Escapes in the storable copy (\xNN) are plain characters; U+0000 is never left for dump()
  // to write as \u0000.
  if (!DeeperThan(value, kMaxJsonDepth) && Storable(value)) return value.dump();
  return StorableCopy(value, 0).dump();
}

}  // namespace

bool JsonNestsDeeperThan(std::string_view text, int max_depth) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return true;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return false;
}

Result<nlohmann::json> ParseUntrustedJson(std::string_view text, int max_depth) {
  return Parse<nlohmann::json>(text, max_depth);
}

Result<nlohmann::ordered_json> ParseUntrustedOrderedJson(std::string_view text, int max_depth) {
  return Parse<nlohmann::ordered_json>(text, max_depth);
}

bool IsStorableJson(const nlohmann::ordered_json& value) { return Storable(value); }
bool IsStorableJson(const nlohmann::json& value) { return Storable(value); }

std::string DumpStorableJson(const nlohmann::ordered_json& value) { return DumpStorable(value); }
std::string DumpStorableJson(const nlohmann::json& value) { return DumpStorable(value); }

nlohmann::ordered_json StorableJson(const nlohmann::ordered_json& value) {
  if (!DeeperThan(value, kMaxJsonDepth) && Storable(value)) return value;
  return StorableCopy(value, 0);
}

std::string QuoteJson(const nlohmann::ordered_json& value, size_t max_chars) {
  std::string out = DumpStorableJson(value);
  if (out.size() <= max_chars) return out;
  out.resize(max_chars);
  // Do not cut a UTF-8 sequence in half.
  while (!out.empty() && (static_cast<unsigned char>(out.back()) & 0xC0) == 0x80) out.pop_back();
  if (!out.empty() && static_cast<unsigned char>(out.back()) >= 0xC0) out.pop_back();
  return out + "...";
}

}  // namespace celeriac
