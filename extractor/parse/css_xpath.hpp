#pragma once
// CSS selectors translated to XPath 1.0, once per config (as cssselect/parsel do for Scrapy).
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

#include <string>
#include <string_view>

#include "core/base/result.hpp"

namespace celeriac::extractor::parse {

Result<std::string> CssToXPath(std::string_view css, bool html);

// An XPath 1.0 string literal for `text` ('...', "...", or concat() when it holds both quotes).
std::string XPathLiteral(std::string_view text);

}  // namespace celeriac::extractor::parse
