#pragma once
// Regex: a compiled PCRE2 pattern with ECMAScript-like options, for crawl configs.
//
// Config regexes are written as ECMAScript; PCRE2 accepts that dialect for everything configs
// use (classes, groups, lookaround, lazy quantifiers, \d \w \s as ASCII, \uHHHH via ALT_BSUX,
// `$` only at the very end). Matching is searched, not anchored, unless the pattern anchors
// itself. Subjects may be invalid UTF-8 (raw bodies in any charset): PCRE2_MATCH_INVALID_UTF
// makes that safe. Every match runs under a match limit and a bounded JIT stack, so a
// pathological pattern or input ends as "no match", never as unbounded time or a stack overflow.
//
// Threading: a compiled Regex is immutable; Search/ReplaceAll may run concurrently (scratch
// space is per thread).

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/base/result.hpp"

namespace celeriac::extractor::parse {

class Regex {
 public:
  // InvalidArgument with PCRE2's message and offset when `pattern` does not compile.
  static Result<std::shared_ptr<const Regex>> Compile(std::string_view pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  const std::string& pattern() const { return pattern_; }
  int capture_count() const { return capture_count_; }

  // Whether the pattern matches somewhere in `subject`.
  bool Matches(std::string_view subject) const;

  // The text of capture `group` (0 = whole match) of the first match at or after `*offset`;
  // advances *offset past the match. nullopt when there is no (further) match. A group that did
  // not participate gives "".
  std::optional<std::string_view> Find(std::string_view subject, int group,
                                       size_t* offset) const;

  // Every occurrence replaced by `replacement`, which uses PCRE2 syntax (${1}, $$); see
  // TranslateEcmaReplacement. nullopt if the match failed (limit hit).
  std::optional<std::string> ReplaceAll(std::string_view subject,
                                        const std::string& replacement) const;

 private:
  Regex() = default;
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code*
  int capture_count_ = 0;
};

// An ECMAScript replacement string ($1, $&, $<name>, $$, lone $) in PCRE2 substitute syntax.
std::string TranslateEcmaReplacement(std::string_view ecma);

}  // namespace celeriac::extractor::parse
