#include "extractor/parse/css_match.hpp"

#include <cstring>
#include <string>
#include <string_view>

namespace celeriac::extractor::parse {
namespace {

// Node visits (walk steps, ancestor and sibling steps) one Select may take before it hands the
// selector to the XPath: about 10 ms of work, far above any ordinary page (a 15 KB page takes
// a few hundred per field), reached only by backtracking on pathological nesting.
constexpr size_t kBudget = 2'000'000;

const char* Str(const xmlChar* s) { return reinterpret_cast<const char*>(s); }

bool IsElement(xmlNodePtr n) { return n != nullptr && n->type == XML_ELEMENT_NODE; }

bool IsDocument(xmlNodePtr n) {
  return n->type == XML_DOCUMENT_NODE || n->type == XML_HTML_DOCUMENT_NODE;
}

// XPath's whitespace (normalize-space), which the class tests split on.
bool IsXPathSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

bool HasXPathSpace(std::string_view s) {
  for (char c : s) {
    if (IsXPathSpace(c)) return true;
  }
  return false;
}

// `s` normalized as XPath's normalize-space does.
std::string NormalizeSpace(std::string_view s) {
  std::string out;
  bool space = false;
  for (char c : s) {
    if (IsXPathSpace(c)) {
      space = !out.empty();
    } else {
      if (space) out += ' ';
      space = false;
      out += c;
    }
  }
  return out;
}

// The XPath test contains(concat(' ', normalize-space(value), ' '), ' ' + token + ' ').
bool HasToken(std::string_view value, std::string_view token) {
  if (HasXPathSpace(token)) {
    return (" " + NormalizeSpace(value) + " ").find(" " + std::string(token) + " ") !=
           std::string::npos;
  }
  size_t i = 0;
  while (i < value.size()) {
    while (i < value.size() && IsXPathSpace(value[i])) ++i;
    const size_t start = i;
    while (i < value.size() && !IsXPathSpace(value[i])) ++i;
    if (i > start && value.substr(start, i - start) == token) return true;
  }
  return false;
}

// An attribute the XPath `@name` finds: that name, no namespace.
xmlAttrPtr FindAttribute(xmlNodePtr el, const std::string& name) {
  for (xmlAttrPtr a = el->properties; a != nullptr; a = a->next) {
    if (a->ns == nullptr && a->name != nullptr && name == Str(a->name)) return a;
  }
  return nullptr;
}

// Whether the field reading attribute `name` finds one (any namespace, as
// MarkupDocument::NodeAttribute reads it).
bool HasAttributeNamed(xmlNodePtr el, const char* name) {
  for (xmlAttrPtr a = el->properties; a != nullptr; a = a->next) {
    if (a->name != nullptr && std::strcmp(Str(a->name), name) == 0) return true;
  }
  return false;
}

// An attribute's string value: borrowed when it is one text node (nearly always), else built in
// `scratch`.
std::string_view AttributeValue(xmlAttrPtr a, std::string* scratch) {
  xmlNodePtr c = a->children;
  if (c == nullptr) return {};
  if (c->next == nullptr && c->type == XML_TEXT_NODE) {
    return c->content != nullptr ? std::string_view(Str(c->content)) : std::string_view();
  }
  xmlChar* v = xmlNodeGetContent(reinterpret_cast<xmlNodePtr>(a));
  scratch->assign(v != nullptr ? Str(v) : "");
  xmlFree(v);
  return *scratch;
}

// An element's string value (XPath string(.)).
std::string StringValue(xmlNodePtr el) {
  xmlChar* v = xmlNodeGetContent(el);
  std::string out = v != nullptr ? Str(v) : "";
  xmlFree(v);
  return out;
}

// The XPath name test `name`: an element of that name in no namespace.
bool NameIs(xmlNodePtr el, const std::string& name) {
  return el->ns == nullptr && el->name != nullptr && name == Str(el->name);
}

bool Nth(long a, long b, long p) {
  if (a == 0) return p == b;
  const long diff = p - b;
  if (a > 0) return diff >= 0 && diff % a == 0;
  return diff <= 0 && (-diff) % (-a) == 0;
}

class Walk {
 public:
  explicit Walk(xmlNodePtr context) : context_(context) {}

  bool exhausted() const { return steps_ > kBudget; }
  void Step() { ++steps_; }

  bool Compound(const css::Compound& c, xmlNodePtr el) {
    if (c.has_type && !NameIs(el, c.element)) return false;
    for (const auto& cond : c.conditions) {
      if (!Condition(cond, el)) return false;
    }
    return true;
  }

  // `el` is matched by compounds [0, k] of `cx`, with compounds[k] on `el` itself.
  bool Complex(const css::Complex& cx, size_t k, xmlNodePtr el) {
    if (++steps_ > kBudget) return false;
    if (!Compound(cx.compounds[k], el)) return false;
    if (k == 0) return true;
    switch (cx.combinators[k - 1]) {
      case '>': {
        if (el == context_) return false;
        xmlNodePtr p = el->parent;
        return IsElement(p) && Complex(cx, k - 1, p);
      }
      case '+': {
        xmlNodePtr p = PreviousElement(el);
        return p != nullptr && Complex(cx, k - 1, p);
      }
      case '~':
        for (xmlNodePtr p = PreviousElement(el); p != nullptr; p = PreviousElement(p)) {
          if (Complex(cx, k - 1, p)) return true;
          if (exhausted()) return false;
        }
        return false;
      default:  // descendant
        if (el == context_) return false;
        for (xmlNodePtr p = el->parent; IsElement(p); p = p->parent) {
          if (Complex(cx, k - 1, p)) return true;
          if (exhausted() || p == context_) return false;
        }
        return false;
    }
  }

 private:
  xmlNodePtr PreviousElement(xmlNodePtr n) {
    for (n = n->prev; n != nullptr; n = n->prev) {
      ++steps_;
      if (n->type == XML_ELEMENT_NODE) return n;
    }
    return nullptr;
  }
  xmlNodePtr NextElement(xmlNodePtr n) {
    for (n = n->next; n != nullptr; n = n->next) {
      ++steps_;
      if (n->type == XML_ELEMENT_NODE) return n;
    }
    return nullptr;
  }

  // 1 + the number of element siblings before (or after, `last`) `el`, only those named `name`
  // when non-null.
  long Position(xmlNodePtr el, bool last, const std::string* name) {
    long p = 1;
    for (xmlNodePtr s = last ? NextElement(el) : PreviousElement(el); s != nullptr;
         s = last ? NextElement(s) : PreviousElement(s)) {
      if (name == nullptr || NameIs(s, *name)) ++p;
    }
    return p;
  }

  bool Condition(const css::Condition& c, xmlNodePtr el) {
    switch (c.op) {
      case css::Op::kId: {
        xmlAttrPtr a = FindAttribute(el, "id");
        return a != nullptr && AttributeValue(a, &scratch_) == c.value;
      }
      case css::Op::kClass: {
        xmlAttrPtr a = FindAttribute(el, "class");
        return a != nullptr && HasToken(AttributeValue(a, &scratch_), c.value);
      }
      case css::Op::kHas: return FindAttribute(el, c.name) != nullptr;
      case css::Op::kEquals: {
        xmlAttrPtr a = FindAttribute(el, c.name);
        return a != nullptr && AttributeValue(a, &scratch_) == c.value;
      }
      case css::Op::kNotEquals: {
        xmlAttrPtr a = FindAttribute(el, c.name);
        return a == nullptr || AttributeValue(a, &scratch_) != c.value;
      }
      case css::Op::kIncludes: {
        xmlAttrPtr a = FindAttribute(el, c.name);
        return a != nullptr && HasToken(AttributeValue(a, &scratch_), c.value);
      }
      case css::Op::kDash: {
        xmlAttrPtr a = FindAttribute(el, c.name);
        if (a == nullptr) return false;
        const std::string_view v = AttributeValue(a, &scratch_);
        return v == c.value || (v.size() > c.value.size() && v.starts_with(c.value) &&
                                v[c.value.size()] == '-');
      }
      case css::Op::kPrefix: {
        xmlAttrPtr a = FindAttribute(el, c.name);
        return a != nullptr && AttributeValue(a, &scratch_).starts_with(c.value);
      }
      case css::Op::kSuffix: {
        xmlAttrPtr a = FindAttribute(el, c.name);
        return a != nullptr && AttributeValue(a, &scratch_).ends_with(c.value);
      }
      case css::Op::kSubstring: {
        xmlAttrPtr a = FindAttribute(el, c.name);
        return a != nullptr && AttributeValue(a, &scratch_).find(c.value) != std::string::npos;
      }
      case css::Op::kNever: return false;
      case css::Op::kFirstChild: return PreviousElement(el) == nullptr;
      case css::Op::kLastChild: return NextElement(el) == nullptr;
      case css::Op::kOnlyChild: return PreviousElement(el) == nullptr && NextElement(el) == nullptr;
      case css::Op::kEmpty: {
        for (xmlNodePtr ch = el->children; ch != nullptr; ch = ch->next) {
          if (ch->type == XML_ELEMENT_NODE) return false;
        }
        return StringValue(el).empty();
      }
      case css::Op::kRoot: return !IsElement(el->parent);
      case css::Op::kFirstOfType: return Position(el, false, &c.name) == 1;
      case css::Op::kLastOfType: return Position(el, true, &c.name) == 1;
      case css::Op::kOnlyOfType:
        return Position(el, false, &c.name) == 1 && Position(el, true, &c.name) == 1;
      case css::Op::kNthChild: return Nth(c.a, c.b, Position(el, false, nullptr));
      case css::Op::kNthLastChild: return Nth(c.a, c.b, Position(el, true, nullptr));
      case css::Op::kNthOfType: return Nth(c.a, c.b, Position(el, false, &c.name));
      case css::Op::kNthLastOfType: return Nth(c.a, c.b, Position(el, true, &c.name));
      case css::Op::kNot:
        if (!c.inner->has_type && c.inner->conditions.empty()) return false;  // :not(*)
        return !Compound(*c.inner, el);
      case css::Op::kContains: return StringValue(el).find(c.value) != std::string::npos;
    }
    return false;
  }

  xmlNodePtr context_;
  size_t steps_ = 0;
  std::string scratch_;
};

}  // namespace

std::shared_ptr<const CssMatcher> CssMatcher::Create(css::SelectorList selectors) {
  if (selectors.alternatives.empty()) return nullptr;
  const css::PseudoElement kind = selectors.alternatives.front().compounds.back().pseudo;
  bool siblings = false;
  for (const auto& cx : selectors.alternatives) {
    if (cx.compounds.empty() || cx.combinators.size() + 1 != cx.compounds.size()) return nullptr;
    if (cx.compounds.back().pseudo != kind) return nullptr;
    if (cx.combinators.find_first_of("+~") != std::string::npos) siblings = true;
  }
  const Output output = kind == css::PseudoElement::kText   ? Output::kText
                        : kind == css::PseudoElement::kAttr ? Output::kAttributes
                                                            : Output::kElements;
  return std::shared_ptr<const CssMatcher>(new CssMatcher(std::move(selectors), output, siblings));
}

bool CssMatcher::Select(xmlNodePtr context, size_t limit, const char* require_attr,
                        std::vector<xmlNodePtr>* out) const {
  const size_t start = out->size();
  if (limit == 0) return true;
  if (!IsDocument(context)) {
    // From an attribute, text or other leaf node the XPath's descendant-or-self::* finds no
    // element.
    if (context->type != XML_ELEMENT_NODE) return true;
    if (siblings_) return false;
  }
  Walk walk(context);
  auto give_up = [&] {
    out->resize(start);
    return false;
  };
  auto full = [&] { return out->size() - start >= limit; };
  auto any = [&](xmlNodePtr el) {
    for (const auto& cx : selectors_.alternatives) {
      if (walk.Complex(cx, cx.compounds.size() - 1, el)) return true;
    }
    return false;
  };
  xmlNodePtr text_parent = nullptr;  // the last text node's parent, and whether it matched
  bool text_parent_matches = false;

  xmlNodePtr cur = IsDocument(context) ? context->children : context;
  while (cur != nullptr) {
    walk.Step();
    if (walk.exhausted()) return give_up();
    if (cur->type == XML_ELEMENT_NODE) {
      switch (output_) {
        case Output::kElements:
          if (any(cur) && (require_attr == nullptr || HasAttributeNamed(cur, require_attr))) {
            out->push_back(cur);
            if (full()) return true;
          }
          break;
        case Output::kAttributes: {
          // Which attribute names the selectors that match this element ask for.
          const std::string* names[8];
          size_t n = 0;
          bool many = false;
          for (const auto& cx : selectors_.alternatives) {
            if (!walk.Complex(cx, cx.compounds.size() - 1, cur)) continue;
            if (n < 8) {
              names[n++] = &cx.compounds.back().pseudo_attr;
            } else {
              many = true;
            }
          }
          if (n == 0) break;
          for (xmlAttrPtr a = cur->properties; a != nullptr; a = a->next) {
            if (a->ns != nullptr || a->name == nullptr) continue;
            bool wanted = false;
            if (many) {
              for (const auto& cx : selectors_.alternatives) {
                if (cx.compounds.back().pseudo_attr == Str(a->name) &&
                    walk.Complex(cx, cx.compounds.size() - 1, cur)) {
                  wanted = true;
                  break;
                }
              }
            } else {
              for (size_t i = 0; i < n && !wanted; ++i) wanted = *names[i] == Str(a->name);
            }
            if (wanted) {
              out->push_back(reinterpret_cast<xmlNodePtr>(a));
              if (full()) return true;
            }
          }
          break;
        }
        case Output::kText:
          break;
      }
      if (walk.exhausted()) return give_up();
      if (cur->children != nullptr) {
        cur = cur->children;
        continue;
      }
    } else if (output_ == Output::kText &&
               (cur->type == XML_TEXT_NODE || cur->type == XML_CDATA_SECTION_NODE) &&
               IsElement(cur->parent)) {
      if (cur->parent != text_parent) {
        text_parent = cur->parent;
        text_parent_matches = any(text_parent);
        if (walk.exhausted()) return give_up();
      }
      if (text_parent_matches && (require_attr == nullptr || cur->content != nullptr)) {
        out->push_back(cur);
        if (full()) return true;
      }
    }
    // The next node in document order within the context's subtree.
    while (cur != nullptr && cur != context) {
      if (cur->next != nullptr) {
        cur = cur->next;
        break;
      }
      cur = cur->parent;
    }
    if (cur == context) cur = nullptr;
  }
  return true;
}

}  // namespace celeriac::extractor::parse
