#include "orchestrator/api/auth.hpp"

#include <cctype>
#include <cstddef>

namespace celeriac::orchestrator::api {

std::optional<std::string_view> BearerToken(std::string_view authorization) {
  constexpr std::string_view kScheme = "bearer";
  if (authorization.size() <= kScheme.size()) return std::nullopt;
  for (size_t i = 0; i < kScheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(authorization[i])) != kScheme[i]) {
      return std::nullopt;
    }
  }
  std::string_view rest = authorization.substr(kScheme.size());
  if (rest.front() != ' ' && rest.front() != '\t') return std::nullopt;
  while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t')) rest.remove_prefix(1);
  while (!rest.empty() && (rest.back() == ' ' || rest.back() == '\t')) rest.remove_suffix(1);
  if (rest.empty()) return std::nullopt;
  return rest;
}

bool TokenMatches(std::string_view presented, std::string_view expected) {
  if (expected.empty()) return false;
  // Every byte of `presented` is compared (against `expected` repeated), and the differences
  // are OR-ed together, so the loop never ends early. volatile keeps the compiler from
  // turning it back into an early-exit comparison.
  volatile unsigned char diff = presented.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < presented.size(); ++i) {
    diff = diff | static_cast<unsigned char>(presented[i] ^ expected[i % expected.size()]);
  }
  return diff == 0 && !presented.empty();
}

}  // namespace celeriac::orchestrator::api
