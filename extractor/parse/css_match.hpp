#pragma once
// CSS selectors matched natively on a libxml2 tree: the nodes the selector's XPath (ToXPath in
// css_xpath.hpp) selects, in the same document order, without XPath's string building per
// node (`@class` normalized and concatenated for every element of the page) and stopping at
// the first match when only one is wanted. The XPath stays the reference and the fallback:
// Select answers false where it does not decide, and the caller evaluates the XPath instead:
//   - a selector list whose selectors end differently (elements, ::text, ::attr) mixed;
//   - a `+` or `~` combinator with an element as context (the XPath may then select siblings
//     of the context, outside the subtree this walks);
//   - more than a fixed budget of node visits (hostile documents and selectors such as
//     `div div div div` on thousands of nested divs, where right-to-left matching backtracks).
//
// Threading: a CssMatcher is immutable and shared across threads; Select keeps its state on
// the stack.

#include <cstddef>
#include <memory>
#include <vector>

#include <libxml/tree.h>

#include "extractor/parse/css_xpath.hpp"

namespace celeriac::extractor::parse {

class CssMatcher {
 public:
  // nullptr when `selectors` end differently (the XPath serves those).
  static std::shared_ptr<const CssMatcher> Create(css::SelectorList selectors);

  // Appends to `out` what the selectors select under `context` (a document node, or any node
  // of one) in document order: at most `limit` nodes, not counting elements that lack the
  // attribute `require_attr` (when non-null; those are skipped, as the field reading the
  // attribute would skip them). False when it cannot decide (see above); `out` is then as it
  // was.
  bool Select(xmlNodePtr context, size_t limit, const char* require_attr,
              std::vector<xmlNodePtr>* out) const;

 private:
  enum class Output { kElements, kText, kAttributes };
  explicit CssMatcher(css::SelectorList selectors, Output output, bool siblings)
      : selectors_(std::move(selectors)), output_(output), siblings_(siblings) {}

  css::SelectorList selectors_;
  Output output_;
  bool siblings_;  // some `+` or `~`
};

}  // namespace celeriac::extractor::parse
