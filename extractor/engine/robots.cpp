#include "extractor/engine/robots.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <unordered_set>

#include "core/base/text.hpp"
#include "core/url/url.hpp"

namespace celeriac::extractor {
namespace {

using std::chrono::milliseconds;

constexpr double kMaxCrawlDelaySeconds = 86'400;
constexpr std::string_view kWhitespace = " \t\v\f";

bool IsAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// RFC 9309 2.2.2: paths and patterns are compared in one canonical encoding (escaped unreserved
// characters decoded, other escapes in upper-case hex, octets that may not appear raw escaped;
// `*` and `$` pass through), the one request fingerprints use too.
void AppendNormalised(std::string& out, std::string_view in) {
  url::AppendNormalizedPercentEncoding(out, in);
}

// `pattern` (normalised, `*` = any run of octets) against the start of `path`; with
// `anchored`, against the whole of `path`. Greedy two-pointer match: on a mismatch, retry
// from the last `*` one octet further on. O(path * pattern) at worst.
bool Matches(std::string_view path, std::string_view pattern, bool anchored) {
  size_t p = 0;
  size_t s = 0;
  size_t star = std::string_view::npos;
  size_t mark = 0;
  while (s < path.size()) {
    if (p == pattern.size() && !anchored) return true;
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = s;
      continue;
    }
    if (p < pattern.size() && pattern[p] == path[s]) {
      ++p;
      ++s;
      continue;
    }
    if (star == std::string_view::npos) return false;
    p = star + 1;
    s = ++mark;
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

// The path and query of an absolute URL, a network-path reference or a path; no fragment.
std::string_view PathAndQuery(std::string_view url) {
  size_t authority = std::string_view::npos;
  if (url.substr(0, 2) == "//") {
    authority = 2;
  } else if (!url.empty() && IsAlpha(url[0])) {
    size_t i = 1;
    while (i < url.size() && (IsAlpha(url[i]) || IsDigit(url[i]) || url[i] == '+' ||
                              url[i] == '-' || url[i] == '.'))
      ++i;
    if (url.substr(i, 3) == "://") authority = i + 3;
  }
  std::string_view rest = url;
  if (authority != std::string_view::npos) {
    const size_t path = url.find_first_of("/?#", authority);
    rest = path == std::string_view::npos ? std::string_view{} : url.substr(path);
  }
  return rest.substr(0, rest.find('#'));
}

enum class Key { kUnknown, kUserAgent, kAllow, kDisallow, kCrawlDelay, kSitemap };

Key Classify(std::string_view raw_key) {
  const std::string key = AsciiLower(raw_key);
  // The typos Google's parser accepts, so a file means the same to us as to Googlebot.
  if (key == "user-agent" || key == "useragent" || key == "user agent") return Key::kUserAgent;
  if (key == "allow") return Key::kAllow;
  if (key == "disallow" || key == "dissallow" || key == "dissalow" || key == "disalow" ||
      key == "diasllow" || key == "disallaw")
    return Key::kDisallow;
  if (key == "crawl-delay" || key == "crawldelay" || key == "crawl delay") return Key::kCrawlDelay;
  if (key == "sitemap" || key == "site-map") return Key::kSitemap;
  return Key::kUnknown;
}

// Splits a comment-free, trimmed line into key and value. Without a colon, a line of exactly
// two whitespace-separated tokens is read as key and value ("disallow /x").
bool SplitKeyValue(std::string_view line, std::string_view& key, std::string_view& value) {
  const size_t colon = line.find(':');
  if (colon != std::string_view::npos) {
    key = Trim(line.substr(0, colon));
    value = Trim(line.substr(colon + 1));
  } else {
    const size_t space = line.find_first_of(kWhitespace);
    if (space == std::string_view::npos) return false;
    key = line.substr(0, space);
    value = Trim(line.substr(space));
    if (value.find_first_of(kWhitespace) != std::string_view::npos) return false;
  }
  return !key.empty();
}

std::optional<milliseconds> ParseCrawlDelay(std::string_view value) {
  double seconds = 0;
  const char* end = value.data() + value.size();
  const auto [ptr, ec] = std::from_chars(value.data(), end, seconds);
  if (ec != std::errc() || ptr != end || !std::isfinite(seconds) || seconds < 0)
    return std::nullopt;
  seconds = std::min(seconds, kMaxCrawlDelaySeconds);
  return milliseconds(std::llround(seconds * 1000));
}

// How well a group's user-agent value fits the crawler's lower-case product token: -1 no
// match, 0 the `*` group, otherwise 1 + the matched token's length (exact match, or a family
// prefix "celeriacbot" of "celeriacbot-news"; an exact match is always the longest).
int AgentScore(std::string_view value, const std::string& crawler_token) {
  // As at Google, "* anything" is still the global group.
  if (!value.empty() && value[0] == '*' &&
      (value.size() == 1 || kWhitespace.find(value[1]) != std::string_view::npos))
    return 0;
  const std::string token = AsciiLower(RobotsProductToken(value));
  if (token.empty() || crawler_token.empty()) return -1;
  if (token == crawler_token) return static_cast<int>(token.size()) + 1;
  if (crawler_token.size() > token.size() && crawler_token.compare(0, token.size(), token) == 0 &&
      crawler_token[token.size()] == '-')
    return static_cast<int>(token.size()) + 1;
  return -1;
}

}  // namespace

std::string RobotsProductToken(std::string_view user_agent) {
  user_agent = Trim(user_agent);
  size_t n = 0;
  while (n < user_agent.size() &&
         (IsAlpha(user_agent[n]) || user_agent[n] == '_' || user_agent[n] == '-'))
    ++n;
  return std::string(user_agent.substr(0, n));
}

RobotsRules RobotsRules::AllowAll() { return RobotsRules(Kind::kAllowAll); }
RobotsRules RobotsRules::DisallowAll() { return RobotsRules(Kind::kDisallowAll); }

RobotsRules RobotsRules::FromStatus(int http_status, std::string_view body,
                                    std::string_view user_agent) {
  if (http_status >= 200 && http_status < 300) return Parse(body, user_agent);
  if (http_status == 429) return Unreachable();
  if (http_status >= 300 && http_status < 500) return AllowAll();
  return Unreachable();
}

RobotsRules RobotsRules::Parse(std::string_view body, std::string_view user_agent) {
  struct Group {
    int score = -1;
    std::vector<Rule> rules;
    std::optional<milliseconds> crawl_delay;
  };

  RobotsRules out(Kind::kParsed);
  const std::string crawler = AsciiLower(RobotsProductToken(user_agent));
  std::vector<Group> groups;
  bool in_agent_list = false;  // the last group line was a user-agent: another one joins it
  std::unordered_set<std::string> seen_sitemaps;

  body = body.substr(0, kMaxBodyBytes);
  // A UTF-8 BOM, or what is left of one.
  for (const char b : {'\xEF', '\xBB', '\xBF'}) {
    if (body.empty() || body[0] != b) break;
    body.remove_prefix(1);
  }

  auto add_rule = [&](std::string_view value, bool allow) {
    if (groups.empty()) return;  // a rule before any user-agent belongs to no group
    in_agent_list = false;
    Group& group = groups.back();
    if (group.score < 0 || value.empty()) return;
    Rule rule;
    rule.allow = allow;
    AppendNormalised(rule.pattern, value);
    if (!rule.pattern.empty() && rule.pattern.back() == '$') {
      rule.pattern.pop_back();
      rule.anchored = true;
    }
    if (allow) {
      // Google: "allow: /dir/index.htm[l]" also allows the directory itself.
      const size_t slash = rule.pattern.rfind('/');
      if (slash != std::string::npos &&
          std::string_view(rule.pattern).substr(slash).substr(0, 10) == "/index.htm")
        group.rules.push_back(Rule{rule.pattern.substr(0, slash + 1), true, true});
    }
    group.rules.push_back(std::move(rule));
  };

  size_t pos = 0;
  while (pos < body.size()) {
    const size_t eol = std::min(body.find_first_of("\r\n", pos), body.size());
    std::string_view line = body.substr(pos, eol - pos).substr(0, kMaxLineBytes);
    pos = eol + 1;
    if (eol < body.size() && body[eol] == '\r' && pos < body.size() && body[pos] == '\n') ++pos;

    line = Trim(line.substr(0, line.find('#')));
    std::string_view key;
    std::string_view value;
    if (line.empty() || !SplitKeyValue(line, key, value)) continue;

    switch (Classify(key)) {
      case Key::kUserAgent: {
        if (!in_agent_list) {
          // The previous group matched nobody: drop it rather than keep its (empty) state.
          if (!groups.empty() && groups.back().score < 0) groups.pop_back();
          groups.emplace_back();
          in_agent_list = true;
        }
        groups.back().score = std::max(groups.back().score, AgentScore(value, crawler));
        break;
      }
      case Key::kAllow:
        add_rule(value, true);
        break;
      case Key::kDisallow:
        add_rule(value, false);
        break;
      case Key::kCrawlDelay: {
        // Kept even if the group matches nobody yet: a user-agent line may still join it.
        if (groups.empty()) break;
        if (const auto delay = ParseCrawlDelay(value)) {
          auto& current = groups.back().crawl_delay;
          current = current ? std::max(*current, *delay) : *delay;
        }
        break;
      }
      case Key::kSitemap:
        if (!value.empty() && seen_sitemaps.emplace(value).second)
          out.sitemaps_.emplace_back(value);
        break;
      case Key::kUnknown:
        break;
    }
  }

  int best = -1;
  for (const Group& g : groups) best = std::max(best, g.score);
  if (best < 0) return out;
  for (Group& g : groups) {
    if (g.score != best) continue;
    std::move(g.rules.begin(), g.rules.end(), std::back_inserter(out.rules_));
    if (g.crawl_delay)
      out.crawl_delay_ = out.crawl_delay_ ? std::max(*out.crawl_delay_, *g.crawl_delay)
                                          : *g.crawl_delay;
  }
  std::stable_sort(out.rules_.begin(), out.rules_.end(), [](const Rule& a, const Rule& b) {
    if (a.priority() != b.priority()) return a.priority() > b.priority();
    return a.allow && !b.allow;
  });
  return out;
}

bool RobotsRules::Allowed(std::string_view url_or_path) const {
  const std::string_view raw = PathAndQuery(url_or_path);
  std::string path;
  path.reserve(raw.size() + 8);
  if (raw.empty() || raw[0] != '/') path += '/';
  AppendNormalised(path, raw);

  if (std::string_view(path).substr(0, path.find('?')) == "/robots.txt") return true;
  if (kind_ == Kind::kAllowAll) return true;
  if (kind_ == Kind::kDisallowAll) return false;
  for (const Rule& rule : rules_)
    if (Matches(path, rule.pattern, rule.anchored)) return rule.allow;
  return true;
}

}  // namespace celeriac::extractor
