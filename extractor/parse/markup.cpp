#include "extractor/parse/markup.hpp"

#include <libxml/HTMLtree.h>
#include <libxml/parser.h>
#include <libxml/xmlerror.h>
#include <libxml/xmlsave.h>

#include <cctype>
#include <climits>
#include <cmath>
#include <cstring>
#include <mutex>

#include "extractor/parse/text.hpp"

namespace celeriac::extractor::parse {
namespace {

constexpr int kHtmlOptions = HTML_PARSE_RECOVER | HTML_PARSE_NOERROR | HTML_PARSE_NOWARNING |
                             HTML_PARSE_NONET | HTML_PARSE_COMPACT;
constexpr int kXmlOptions = XML_PARSE_RECOVER | XML_PARSE_NOERROR | XML_PARSE_NOWARNING |
                            XML_PARSE_NONET | XML_PARSE_NOCDATA | XML_PARSE_COMPACT;

void IgnoreStructuredError(void*, xmlErrorPtr) {}
void IgnoreGenericError(void*, const char*, ...) {}

// libxml2's error handlers are per thread: silence them on each thread that uses it, so a bad
// page or expression never writes to stderr.
void SilenceThisThread() {
  thread_local bool silenced = false;
  if (silenced) return;
  xmlSetStructuredErrorFunc(nullptr, IgnoreStructuredError);
  xmlSetGenericErrorFunc(nullptr, IgnoreGenericError);
  silenced = true;
}

std::string MediaType(std::string_view content_type) {
  const size_t semi = content_type.find(';');
  return AsciiLower(Trim(content_type.substr(0, semi)));
}

// A label libxml2 can decode, or "".
std::string UsableEncoding(std::string label) {
  label = AsciiLower(Trim(label));
  if (label.empty()) return "";
  if (label == "utf8" || label == "utf-8" || label == "unicode-1-1-utf-8") return "UTF-8";
  // WHATWG: these labels all mean windows-1252.
  if (label == "iso-8859-1" || label == "latin1" || label == "us-ascii" || label == "ascii" ||
      label == "iso8859-1" || label == "l1" || label == "cp1252" || label == "windows-1252") {
    return "windows-1252";
  }
  for (char c : label) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.' &&
        c != ':') {
      return "";
    }
  }
  xmlCharEncodingHandlerPtr handler = xmlFindCharEncodingHandler(label.c_str());
  if (handler == nullptr) return "";
  xmlCharEncCloseFunc(handler);
  return label;
}

std::string MetaCharset(std::string_view body) {
  const std::string head = AsciiLower(body.substr(0, 2048));
  size_t pos = 0;
  while ((pos = head.find("<meta", pos)) != std::string::npos) {
    const size_t end = head.find('>', pos);
    const std::string_view tag(head.data() + pos,
                               (end == std::string::npos ? head.size() : end) - pos);
    pos += 5;
    const size_t cs = tag.find("charset");
    if (cs == std::string_view::npos) continue;
    size_t i = cs + 7;
    while (i < tag.size() && (tag[i] == ' ' || tag[i] == '\t')) ++i;
    if (i >= tag.size() || tag[i] != '=') continue;
    ++i;
    while (i < tag.size() && (tag[i] == ' ' || tag[i] == '"' || tag[i] == '\'')) ++i;
    std::string label;
    while (i < tag.size() && (std::isalnum(static_cast<unsigned char>(tag[i])) ||
                              tag[i] == '-' || tag[i] == '_' || tag[i] == '.' || tag[i] == ':')) {
      label += tag[i++];
    }
    if (!label.empty()) return label;
  }
  return "";
}

bool IsTextLike(xmlNodePtr n) {
  return n->type == XML_TEXT_NODE || n->type == XML_CDATA_SECTION_NODE;
}

// Visits the text of every descendant of `node` in document order, without recursion.
template <typename F>
void ForEachDescendantText(xmlNodePtr node, F&& f) {
  xmlNodePtr cur = node->children;
  while (cur != nullptr) {
    if (IsTextLike(cur)) {
      if (cur->content != nullptr) f(reinterpret_cast<const char*>(cur->content));
    } else if (cur->type == XML_ELEMENT_NODE && cur->children != nullptr) {
      cur = cur->children;
      continue;
    }
    while (cur != nullptr && cur->next == nullptr) {
      cur = cur->parent;
      if (cur == node) cur = nullptr;
    }
    if (cur != nullptr) cur = cur->next;
  }
}

std::string AttributeValue(xmlAttrPtr attr) {
  std::string out;
  for (xmlNodePtr c = attr->children; c != nullptr; c = c->next) {
    if (c->content != nullptr) out += reinterpret_cast<const char*>(c->content);
  }
  return out;
}

}  // namespace

void InitMarkup() {
  static std::once_flag once;
  std::call_once(once, [] { xmlInitParser(); });
  SilenceThisThread();
}

BodyFormat FormatFromContentType(std::string_view content_type) {
  const std::string media = MediaType(content_type);
  if (media == "application/json" || media == "text/json" || media.ends_with("+json")) {
    return BodyFormat::kJson;
  }
  if (media == "application/xhtml+xml") return BodyFormat::kHtml;
  if (media == "application/xml" || media == "text/xml" || media.ends_with("+xml")) {
    return BodyFormat::kXml;
  }
  return BodyFormat::kHtml;
}

std::string CharsetFromContentType(std::string_view content_type) {
  const std::string lower = AsciiLower(content_type);
  size_t pos = lower.find("charset");
  while (pos != std::string::npos) {
    size_t i = pos + 7;
    while (i < lower.size() && lower[i] == ' ') ++i;
    if (i < lower.size() && lower[i] == '=') {
      ++i;
      while (i < lower.size() && (lower[i] == ' ' || lower[i] == '"' || lower[i] == '\'')) ++i;
      std::string label;
      while (i < lower.size() && lower[i] != ';' && lower[i] != '"' && lower[i] != '\'' &&
             lower[i] != ' ') {
        label += lower[i++];
      }
      return label;
    }
    pos = lower.find("charset", pos + 7);
  }
  return "";
}

std::string ChooseHtmlEncoding(std::string_view content_type, std::string_view body) {
  if (body.starts_with("\xEF\xBB\xBF")) return "UTF-8";
  if (body.starts_with("\xFF\xFE")) return "UTF-16LE";
  if (body.starts_with("\xFE\xFF")) return "UTF-16BE";
  if (auto e = UsableEncoding(CharsetFromContentType(content_type)); !e.empty()) return e;
  if (auto e = UsableEncoding(MetaCharset(body)); !e.empty()) {
    // A page cannot declare itself UTF-16 in ASCII-compatible bytes (WHATWG).
    return e.starts_with("utf-16") ? "UTF-8" : e;
  }
  return IsValidUtf8(body) ? "UTF-8" : "windows-1252";
}

// ---------------------------------------------------------------------------------------------

Result<std::shared_ptr<const CompiledXPath>> CompiledXPath::Compile(const std::string& expression) {
  InitMarkup();
  xmlXPathCompExprPtr comp = xmlXPathCompile(reinterpret_cast<const xmlChar*>(expression.c_str()));
  if (comp == nullptr) {
    return Error(ErrorCode::kInvalidArgument, "XPath \"" + expression + "\" does not compile");
  }
  std::shared_ptr<CompiledXPath> out(new CompiledXPath());
  out->text_ = expression;
  out->comp_ = comp;
  // Probe: unknown functions and type errors only show at evaluation.
  static constexpr char kProbe[] =
      "<html><head><title>t</title></head><body><div id='a' class='b'><p>x</p><a href='/'>y</a>"
      "</div></body></html>";
  auto probe = MarkupDocument::ParseHtml(kProbe, "UTF-8");
  xmlXPathContextPtr ctx = xmlXPathNewContext(reinterpret_cast<xmlDocPtr>(probe->root()));
  ctx->node = probe->root();
  xmlXPathObjectPtr result = xmlXPathCompiledEval(comp, ctx);
  const bool failed = result == nullptr;
  if (result != nullptr) xmlXPathFreeObject(result);
  xmlXPathFreeContext(ctx);
  if (failed) {
    return Error(ErrorCode::kInvalidArgument,
                 "XPath \"" + expression +
                     "\" fails to evaluate (unknown function or wrong argument types)");
  }
  return std::shared_ptr<const CompiledXPath>(std::move(out));
}

CompiledXPath::~CompiledXPath() {
  if (comp_ != nullptr) xmlXPathFreeCompExpr(comp_);
}

// ---------------------------------------------------------------------------------------------

std::unique_ptr<MarkupDocument> MarkupDocument::ParseHtml(std::string_view body,
                                                          const std::string& encoding) {
  SilenceThisThread();
  std::unique_ptr<MarkupDocument> out(new MarkupDocument());
  out->html_ = true;
  if (!body.empty() && body.size() < static_cast<size_t>(INT_MAX)) {
    // One parser context per thread, reset for each page: saves its set-up and keeps one
    // dictionary of element and attribute names warm (documents hold a reference to it).
    struct CtxtDeleter {
      void operator()(htmlParserCtxtPtr c) const { htmlFreeParserCtxt(c); }
    };
    thread_local std::unique_ptr<htmlParserCtxt, CtxtDeleter> ctxt(htmlNewParserCtxt());
    thread_local int pages = 0;
    if (ctxt && ++pages % 1000 == 0) ctxt.reset(htmlNewParserCtxt());  // bound the dictionary
    if (ctxt) {
      out->doc_ = htmlCtxtReadMemory(ctxt.get(), body.data(), static_cast<int>(body.size()),
                                     nullptr, encoding.empty() ? nullptr : encoding.c_str(),
                                     kHtmlOptions);
    } else {
      out->doc_ = htmlReadMemory(body.data(), static_cast<int>(body.size()), nullptr,
                                 encoding.empty() ? nullptr : encoding.c_str(), kHtmlOptions);
    }
  }
  if (out->doc_ == nullptr) out->doc_ = htmlNewDocNoDtD(nullptr, nullptr);
  return out;
}

std::unique_ptr<MarkupDocument> MarkupDocument::ParseXml(std::string_view body) {
  SilenceThisThread();
  std::unique_ptr<MarkupDocument> out(new MarkupDocument());
  out->html_ = false;
  if (!body.empty() && body.size() < static_cast<size_t>(INT_MAX)) {
    out->doc_ = xmlReadMemory(body.data(), static_cast<int>(body.size()), nullptr, nullptr,
                              kXmlOptions);
  }
  if (out->doc_ == nullptr) out->doc_ = xmlNewDoc(reinterpret_cast<const xmlChar*>("1.0"));
  return out;
}

MarkupDocument::~MarkupDocument() {
  if (xpath_ != nullptr) xmlXPathFreeContext(xpath_);
  if (doc_ != nullptr) xmlFreeDoc(doc_);
}

XPathResult MarkupDocument::Select(const CompiledXPath& xpath, xmlNodePtr context) const {
  XPathResult out;
  // Made on first use: it registers every XPath function in a fresh hash table, work that pages
  // read with natively matched CSS alone never need.
  if (xpath_ == nullptr) xpath_ = xmlXPathNewContext(doc_);
  if (xpath_ == nullptr) return out;
  xpath_->node = context;
  xmlXPathObjectPtr obj = xmlXPathCompiledEval(xpath.get(), xpath_);
  if (obj == nullptr) return out;
  switch (obj->type) {
    case XPATH_NODESET:
      if (obj->nodesetval != nullptr) {
        out.nodes.reserve(static_cast<size_t>(obj->nodesetval->nodeNr));
        for (int i = 0; i < obj->nodesetval->nodeNr; ++i) {
          xmlNodePtr n = obj->nodesetval->nodeTab[i];
          // Namespace nodes are copies owned by the result; they carry nothing to extract.
          if (n != nullptr && n->type != XML_NAMESPACE_DECL) out.nodes.push_back(n);
        }
      }
      break;
    case XPATH_STRING:
      out.scalar = std::string(obj->stringval != nullptr
                                   ? reinterpret_cast<const char*>(obj->stringval)
                                   : "");
      break;
    case XPATH_NUMBER: {
      const double v = obj->floatval;
      if (std::isfinite(v)) {
        if (v == std::floor(v) && std::fabs(v) < 9e15) {
          out.scalar = static_cast<int64_t>(v);
        } else {
          out.scalar = v;
        }
      }
      break;
    }
    case XPATH_BOOLEAN:
      out.scalar = obj->boolval != 0;
      break;
    default:
      break;
  }
  xmlXPathFreeObject(obj);
  return out;
}

std::string MarkupDocument::Serialize(xmlNodePtr node) const {
  xmlBufferPtr buf = xmlBufferCreate();
  if (buf == nullptr) return "";
  if (html_) {
    htmlNodeDump(buf, doc_, node);
  } else {
    xmlNodeDump(buf, doc_, node, 0, 0);
  }
  std::string out(reinterpret_cast<const char*>(xmlBufferContent(buf)),
                  static_cast<size_t>(xmlBufferLength(buf)));
  xmlBufferFree(buf);
  return out;
}

std::string MarkupDocument::NodeText(xmlNodePtr node, TextMode mode) const {
  if (node->type == XML_ATTRIBUTE_NODE) return AttributeValue(reinterpret_cast<xmlAttrPtr>(node));
  if (node->type != XML_ELEMENT_NODE && node->type != XML_DOCUMENT_NODE &&
      node->type != XML_HTML_DOCUMENT_NODE) {
    return node->content != nullptr ? reinterpret_cast<const char*>(node->content) : "";
  }
  std::string out;
  switch (mode) {
    case TextMode::kNormalized: {
      bool pending = false;
      ForEachDescendantText(node, [&](const char* t) { AppendCollapsed(t, &out, &pending); });
      break;
    }
    case TextMode::kRaw:
      ForEachDescendantText(node, [&](const char* t) { out += t; });
      break;
    case TextMode::kOwn: {
      bool pending = false;
      for (xmlNodePtr c = node->children; c != nullptr; c = c->next) {
        if (IsTextLike(c) && c->content != nullptr) {
          AppendCollapsed(reinterpret_cast<const char*>(c->content), &out, &pending);
        }
      }
      break;
    }
    case TextMode::kHtml:
      for (xmlNodePtr c = node->children; c != nullptr; c = c->next) out += Serialize(c);
      break;
    case TextMode::kOuterHtml:
      out = Serialize(node);
      break;
  }
  return out;
}

std::optional<std::string> MarkupDocument::NodeAttribute(xmlNodePtr node,
                                                         const std::string& name) const {
  if (node->type == XML_ATTRIBUTE_NODE) return AttributeValue(reinterpret_cast<xmlAttrPtr>(node));
  if (node->type != XML_ELEMENT_NODE) {
    if (IsTextLike(node) && node->content != nullptr) {
      return std::string(reinterpret_cast<const char*>(node->content));
    }
    return std::nullopt;
  }
  for (xmlAttrPtr a = node->properties; a != nullptr; a = a->next) {
    if (a->name != nullptr && std::strcmp(reinterpret_cast<const char*>(a->name), name.c_str()) == 0) {
      return AttributeValue(a);
    }
  }
  return std::nullopt;
}

}  // namespace celeriac::extractor::parse
