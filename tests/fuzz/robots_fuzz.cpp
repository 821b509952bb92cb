// robots: the robots.txt parser and matcher (extractor/engine/robots.hpp) on a site's file.
//
// Input: a robots.txt body. The crawler asks as several user agents (fixed ones and each
// user-agent value in the file) about fixed paths and about every rule value in the file (as a
// path and inside an absolute URL), which is where the matcher's corner cases are.
//
// Invariants: nothing throws; /robots.txt is always allowed; a path and the absolute URL with that
// path get the same answer, and so do the path with and without a fragment; the crawl delay is
// within 0..1 day; FromStatus maps statuses as documented; sitemaps have no duplicates.

#include <set>
#include <string>
#include <vector>

#include "extractor/engine/robots.hpp"
#include "tests/fuzz/fuzz_support.hpp"

namespace {

using celeriac::extractor::RobotsRules;
using celeriac::fuzz::AsText;

// The value of each `key: value` line (what might be a path or an agent), at most `max`.
std::vector<std::string_view> Values(std::string_view body, size_t max) {
  std::vector<std::string_view> out;
  for (std::string_view line : celeriac::fuzz::Split(body, '\n', max * 4)) {
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
    while (!value.empty() && (value.back() == '\r' || value.back() == ' ')) value.remove_suffix(1);
    out.push_back(value);
    if (out.size() == max) break;
  }
  return out;
}

void CheckRules(const RobotsRules& rules, const std::vector<std::string>& paths) {
  FUZZ_CHECK(rules.Allowed("/robots.txt"), "/robots.txt disallowed");
  FUZZ_CHECK(rules.Allowed("https://example.com/robots.txt"), "/robots.txt URL disallowed");
  if (const auto delay = rules.crawl_delay()) {
    FUZZ_CHECK(delay->count() >= 0 && delay->count() <= 86'400'000, "crawl delay out of range");
  }
  const auto& sitemaps = rules.sitemaps();
  FUZZ_CHECK(std::set<std::string>(sitemaps.begin(), sitemaps.end()).size() == sitemaps.size(),
             "duplicate sitemaps");
  for (const std::string& path : paths) {
    const bool allowed = rules.Allowed(path);
    // ("//x" alone is a network-path reference, its own documented case.)
    if (path.empty() || path[0] != '/' || path.starts_with("//") ||
        path.find('#') != std::string::npos)
      continue;
    FUZZ_CHECK(rules.Allowed("https://example.com" + path) == allowed,
               "path and URL answer differently: " + path);
    FUZZ_CHECK(rules.Allowed(path + "#section") == allowed, "a fragment changed the answer: " + path);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body = AsText(data, size);
  const auto values = Values(body, 64);

  std::vector<std::string> paths = {"/", "/index.html", "/private/x?y=1", "/a%2fb", "/%7Euser/",
                                    "/caf%C3%A9", "/search?q=*", "", "?only=query", "//h"};
  for (std::string_view v : values) {
    paths.emplace_back(v);
    if (!v.empty() && v[0] != '/') paths.push_back("/" + std::string(v));
  }
  std::vector<std::string> agents = {"CeleriacBot/1.0 (+https://example.org/bot)",
                                     "celeriacbot-news", "Googlebot", "", "*"};
  for (size_t i = 0; i < values.size() && i < 8; ++i) agents.emplace_back(values[i]);

  for (const std::string& agent : agents) {
    const RobotsRules rules = RobotsRules::Parse(body, agent);
    FUZZ_CHECK(rules.kind() == RobotsRules::Kind::kParsed, "Parse gave another kind");
    CheckRules(rules, paths);
  }
  FUZZ_CHECK(RobotsRules::FromStatus(404, body, agents[0]).Allowed("/anything"), "404 not allow-all");
  FUZZ_CHECK(!RobotsRules::FromStatus(503, body, agents[0]).Allowed("/anything"), "503 not disallow-all");
  FUZZ_CHECK(!RobotsRules::FromStatus(429, body, agents[0]).Allowed("/anything"), "429 not disallow-all");
  return 0;
}
