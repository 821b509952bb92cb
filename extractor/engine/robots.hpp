#pragma once
// RobotsRules: one site's robots.txt, parsed for one crawler, answering "may I fetch this URL?".
// Behaviour is RFC 9309 (Robots Exclusion Protocol) as Google's open-source parser implements
// it, so a site owner's robots.txt means for us what it means for Googlebot.
//
// Contract:
// - Scope: rules belong to one origin (scheme, host, port); the caller keeps one RobotsRules
//   per origin and asks it only about that origin's URLs (Allowed looks at path + query only).
// - Groups: one or more `user-agent` lines followed by rules. The crawler obeys the group(s)
//   whose user-agent token best matches its product token (RobotsProductToken), compared
//   case-insensitively: an exact match beats a family prefix ("celeriacbot" for a crawler
//   "CeleriacBot-News"), a longer token beats a shorter one, and `*` is the fallback. All
//   groups naming the winning token are merged. No matching group: everything is allowed.
//   A matching group without rules also allows everything (it hides the `*` group).
//   Blank lines, sitemap and unknown lines do not end a group's user-agent list; the first
//   allow / disallow does (so `user-agent: a` `user-agent: b` `disallow: /x` is one group).
// - Rules: `allow` / `disallow` patterns; `*` matches any run of octets, a trailing `$`
//   anchors the end, anything else matches as a prefix. Of all matching rules the longest
//   pattern (in octets, after normalisation, counting `*` and `$`) wins; on a tie allow wins.
//   Empty patterns are ignored (an empty disallow allows all). Patterns and paths are compared
//   after percent-encoding normalisation (RFC 9309 2.2.2): an escaped unreserved character is
//   decoded (%7E == ~, %41 == A), other escapes get upper-case hex (%2f == %2F), and octets
//   outside printable ASCII are escaped (UTF-8 "ツ" == %E3%83%84). Matching is case-sensitive.
//   Google quirk kept: `allow: /dir/index.htm[l]` also allows `/dir/$`.
//   /robots.txt itself is always allowed, even by DisallowAll.
// - crawl-delay: seconds, fractional allowed, from the selected group(s) (the largest if
//   several give one); negative or non-numeric values are ignored, values above one day are
//   capped at one day. Not part of RFC 9309 (Google ignores it); the engine decides how it
//   combines with its own per-host delay.
// - sitemap: every `sitemap:` value in the file, whatever group it sits in, in file order,
//   duplicates dropped.
// - Robustness: a UTF-8 BOM, CR / LF / CRLF line ends, `#` comments, surrounding whitespace,
//   a missing colon (`disallow /x`, when the value is one token) and common key typos
//   (`dissallow`, `useragent`, ...) are accepted; unknown keys are ignored; lines are cut at
//   kMaxLineBytes and the body at kMaxBodyBytes (RFC 9309's 500 KiB); any byte sequence
//   parses without error (garbage just yields no rules). Matching is a greedy two-pointer
//   wildcard match, O(path * pattern) at worst, never exponential.
//
// Threading: a parsed RobotsRules is immutable; const methods are safe from any thread. No I/O.
// Allowed() is cheap (no parsing; one small string normalisation, then rules in precedence
// order until the first match) and is meant to run per request on the loop thread.

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace celeriac::extractor {

// The product token robots.txt groups are matched against: the leading run of letters, '_'
// and '-' of a User-Agent ("CeleriacBot/1.0 (+https://x)" -> "CeleriacBot"). Empty if the
// agent starts with anything else; such a crawler obeys only the `*` group.
std::string RobotsProductToken(std::string_view user_agent);

class RobotsRules {
 public:
  static constexpr size_t kMaxBodyBytes = 500 * 1024;  // RFC 9309 2.5: parse at least 500 KiB
  static constexpr size_t kMaxLineBytes = 16'664;      // Google's limit (2083 * 8)

  enum class Kind {
    kParsed,       // rules from a robots.txt body
    kAllowAll,     // no restrictions: robots.txt "unavailable" (4xx), or robots disabled
    kDisallowAll,  // complete disallow: robots.txt "unreachable" (5xx, network failure)
  };

  // Parses `body` (only its first kMaxBodyBytes) for the crawler identified by `user_agent`
  // (a full User-Agent header or just the product token). Never fails.
  static RobotsRules Parse(std::string_view body, std::string_view user_agent);
  static RobotsRules AllowAll();
  static RobotsRules DisallowAll();
  // RFC 9309 2.3.1.4: robots.txt could not be fetched because of a server or network error;
  // the crawler must assume complete disallow. The same as DisallowAll(). (RFC 9309 lets a
  // crawler fall back to a cached copy, or allow all after 30 days unreachable; that is the
  // caller's policy.)
  static RobotsRules Unreachable() { return DisallowAll(); }
  // The robots.txt fetch outcome mapped per RFC 9309 2.3.1, as Google applies it:
  //   2xx -> Parse(body); 3xx (the fetcher gave up redirecting) and 4xx -> AllowAll
  //   ("unavailable"), except 429 which, as at Google, counts as a server error;
  //   5xx, 429, 0 / anything else (network failure: pass 0) -> DisallowAll ("unreachable").
  static RobotsRules FromStatus(int http_status, std::string_view body,
                                std::string_view user_agent);

  // Whether the crawler may fetch `url_or_path`: an absolute URL ("https://h/p?q#f", also
  // "//h/p") of which only the path and query count, or a path ("/p?q"). A URL without a path
  // means "/". The fragment is ignored.
  bool Allowed(std::string_view url_or_path) const;

  std::optional<std::chrono::milliseconds> crawl_delay() const { return crawl_delay_; }
  const std::vector<std::string>& sitemaps() const { return sitemaps_; }
  Kind kind() const { return kind_; }
  // Rules kept for this crawler (after group selection); for logs and tests.
  size_t rule_count() const { return rules_.size(); }

 private:
  struct Rule {
    std::string pattern;  // normalised, without the end anchor
    bool anchored = false;
    bool allow = false;
    size_t priority() const { return pattern.size() + (anchored ? 1 : 0); }
  };

  explicit RobotsRules(Kind kind) : kind_(kind) {}

  Kind kind_;
  std::vector<Rule> rules_;  // in precedence order: longest first, allow before disallow
  std::optional<std::chrono::milliseconds> crawl_delay_;
  std::vector<std::string> sitemaps_;
};

}  // namespace celeriac::extractor
