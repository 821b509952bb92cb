#pragma once
// Markup: libxml2 behind a small surface for the config module (the one folder that includes
// <libxml/...>): body format and charset detection, parsing HTML and XML pages safely, XPath
// expressions compiled once, and reading text, attributes and markup from nodes.
//
// Safety: HTML is parsed with RECOVER|NOERROR|NOWARNING|NONET|COMPACT and XML with
// RECOVER|NONET|NOCDATA and without entity substitution, DTD loading or XInclude (no XXE);
// neither uses *_PARSE_HUGE, so libxml2's depth and size limits stay on. Tree walks here are
// iterative, never recursive. Parse never fails: broken input gives whatever libxml2 recovered,
// empty input an empty document.
//
// Threading: InitMarkup() once (CompileConfig does it) before any other call. A CompiledXPath
// is shared read-only across threads; a MarkupDocument belongs to one thread at a time.
// (libxml2 caches a function lookup inside a compiled XPath step on first evaluation;
// concurrent first evaluations store the same pointer, a benign race. Compile evaluates each
// expression once on a probe document, which fills most of those caches up front.)

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <libxml/HTMLparser.h>
#include <libxml/tree.h>
#include <libxml/xpath.h>
#include <nlohmann/json.hpp>

#include "core/base/result.hpp"

namespace celeriac::extractor::parse {

enum class BodyFormat { kHtml, kXml, kJson };
enum class TextMode { kNormalized, kRaw, kOwn, kHtml, kOuterHtml };

void InitMarkup();

// json for a JSON media type (application/json, text/json, */*+json), xml for an XML one
// (application/xml, text/xml, */*+xml except XHTML), html otherwise.
BodyFormat FormatFromContentType(std::string_view content_type);

// The charset parameter of a Content-Type header, lower-cased; "" if none.
std::string CharsetFromContentType(std::string_view content_type);

// The encoding an HTML body is decoded with: BOM, else Content-Type charset, else a <meta>
// charset in the first 2 KB, else UTF-8 when the body is valid UTF-8, else windows-1252.
// Labels libxml2 cannot decode fall through to the next rule. Always a name libxml2 accepts.
std::string ChooseHtmlEncoding(std::string_view content_type, std::string_view body);

class CompiledXPath {
 public:
  // InvalidArgument naming the expression when it does not compile or fails on a probe
  // document (unknown function, wrong argument types).
  static Result<std::shared_ptr<const CompiledXPath>> Compile(const std::string& expression);
  ~CompiledXPath();
  CompiledXPath(const CompiledXPath&) = delete;
  CompiledXPath& operator=(const CompiledXPath&) = delete;
  const std::string& text() const { return text_; }
  xmlXPathCompExprPtr get() const { return comp_; }

 private:
  CompiledXPath() = default;
  std::string text_;
  xmlXPathCompExprPtr comp_ = nullptr;
};

// What an XPath evaluation gave: nodes, or a single scalar (string, number or boolean).
struct XPathResult {
  std::vector<xmlNodePtr> nodes;
  std::optional<nlohmann::json> scalar;
};

class MarkupDocument {
 public:
  // `encoding` for HTML (see ChooseHtmlEncoding); XML reads its own declaration.
  static std::unique_ptr<MarkupDocument> ParseHtml(std::string_view body,
                                                   const std::string& encoding);
  static std::unique_ptr<MarkupDocument> ParseXml(std::string_view body);
  ~MarkupDocument();
  MarkupDocument(const MarkupDocument&) = delete;
  MarkupDocument& operator=(const MarkupDocument&) = delete;

  bool html() const { return html_; }
  // The document node: the context for page-level expressions.
  xmlNodePtr root() const { return reinterpret_cast<xmlNodePtr>(doc_); }

  // Evaluates `xpath` with `context` as the context node. An evaluation error gives nothing.
  XPathResult Select(const CompiledXPath& xpath, xmlNodePtr context) const;

  // The value of a node: for an element, its text in `mode`; for an attribute, text, CDATA,
  // comment or PI node, its content as is.
  std::string NodeText(xmlNodePtr node, TextMode mode) const;
  // An element's attribute; nullopt when absent (or `node` is not an element). An attribute or
  // text node gives its own content, as parsel's ::attr()/::text results do.
  std::optional<std::string> NodeAttribute(xmlNodePtr node, const std::string& name) const;

 private:
  MarkupDocument() = default;
  std::string Serialize(xmlNodePtr node) const;
  xmlDocPtr doc_ = nullptr;
  mutable xmlXPathContextPtr xpath_ = nullptr;  // made by the first Select
  bool html_ = true;
};

}  // namespace celeriac::extractor::parse
