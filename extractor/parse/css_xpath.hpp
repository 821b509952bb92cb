#pragma once
// CSS selectors: parsed once per config into a small syntax tree, which is then translated to
// XPath 1.0 (as cssselect/parsel do for Scrapy) and, where it can be, matched natively
// (css_match.hpp) with exactly the XPath's result.
//
// Supported: type, `*`, #id, .class, [a] [a=v] [a~=v] [a|=v] [a^=v] [a$=v] [a*=v] [a!=v]
// (values quoted or bare), the combinators descendant, >, +, ~, selector lists (`,`),
// :first-child :last-child :only-child :nth-child() :nth-last-child() :first-of-type
// :last-of-type :only-of-type :nth-of-type() :nth-last-of-type() (an+b | odd | even),
// :not(compound) :empty :root :contains("text"), and the parsel pseudo-elements ::text and
// ::attr(name) at the end of a selector. Anything else (namespaces, :hover, attribute flags,
// pseudo-elements in the middle) is an InvalidArgument error that quotes the selector and says
// what is unsupported, never a silent mistranslation.
//
// The XPath is relative: `descendant-or-self::...` from the context node, so the same
// expression serves a whole document (context = the document node) and a container.
// In HTML mode element and attribute names are lower-cased (libxml2's HTML parser lower-cases
// them); in XML mode names are compared as written.

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/result.hpp"

namespace celeriac::extractor::parse {

namespace css {

enum class Op {
  kId,         // value
  kClass,      // value: a whitespace-separated token of @class
  kHas,        // name
  kEquals,     // name, value
  kNotEquals,  // name, value: absent or different
  kIncludes,   // name, value: a token (value non-empty, without whitespace)
  kDash,       // name, value: equal, or starting with value + "-"
  kPrefix,     // name, value (non-empty)
  kSuffix,     // name, value (non-empty)
  kSubstring,  // name, value (non-empty)
  kNever,      // matches nothing ([a~=""], [a^=""], ...)
  kFirstChild, kLastChild, kOnlyChild, kEmpty, kRoot,
  kFirstOfType, kLastOfType, kOnlyOfType,  // name: the compound's element name
  kNthChild, kNthLastChild,                // a, b
  kNthOfType, kNthLastOfType,              // a, b, name
  kNot,                                    // inner
  kContains,                               // value: in the element's string value
};

struct Compound;

struct Condition {
  Op op = Op::kNever;
  std::string name;
  std::string value;
  long a = 0;
  long b = 0;
  std::shared_ptr<const Compound> inner;  // kNot
};

enum class PseudoElement { kNone, kText, kAttr };

struct Compound {
  std::string element = "*";  // name test (lower-cased in HTML mode)
  bool has_type = false;
  std::vector<Condition> conditions;
  PseudoElement pseudo = PseudoElement::kNone;  // only on the last compound of a selector
  std::string pseudo_attr;                      // kAttr
};

// compounds[i] and compounds[i + 1] are joined by combinators[i]: ' ', '>', '+' or '~'.
struct Complex {
  std::vector<Compound> compounds;
  std::string combinators;
};

struct SelectorList {
  std::vector<Complex> alternatives;
};

}  // namespace css

Result<css::SelectorList> ParseCss(std::string_view css, bool html);

// The XPath 1.0 expression selecting what `selectors` select.
std::string ToXPath(const css::SelectorList& selectors);

// ParseCss + ToXPath.
Result<std::string> CssToXPath(std::string_view css, bool html);

// An XPath 1.0 string literal for `text` ('...', "...", or concat() when it holds both quotes).
std::string XPathLiteral(std::string_view text);

}  // namespace celeriac::extractor::parse
