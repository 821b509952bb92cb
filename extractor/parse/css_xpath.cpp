#include "extractor/parse/css_xpath.hpp"

#include <cctype>
#include <optional>
#include <vector>

#include "extractor/parse/text.hpp"

namespace celeriac::extractor::parse {
namespace {

css::Condition Cond(css::Op op, std::string name = {}, std::string value = {}) {
  css::Condition c;
  c.op = op;
  c.name = std::move(name);
  c.value = std::move(value);
  return c;
}

class Parser {
 public:
  Parser(std::string_view css, bool html) : s_(css), html_(html) {}

  Result<css::SelectorList> Parse() {
    css::SelectorList out;
    SkipSpace();
    while (true) {
      auto complex = ParseComplex();
      if (!complex.ok()) return complex.error();
      out.alternatives.push_back(std::move(*complex));
      SkipSpace();
      if (AtEnd()) break;
      if (Peek() != ',') return Fail("unexpected '" + std::string(1, Peek()) + "'");
      ++pos_;
      SkipSpace();
      if (AtEnd()) return Fail("empty selector after ','");
    }
    return out;
  }

 private:
  Error Fail(const std::string& what) const {
    return Error(ErrorCode::kInvalidArgument, "CSS selector \"" + std::string(s_) + "\": " +
                                                  what + " at offset " + std::to_string(pos_));
  }
  bool AtEnd() const { return pos_ >= s_.size(); }
  char Peek(size_t ahead = 0) const {
    return pos_ + ahead < s_.size() ? s_[pos_ + ahead] : '\0';
  }
  bool SkipSpace() {
    const size_t start = pos_;
    while (!AtEnd() && std::isspace(static_cast<unsigned char>(Peek()))) ++pos_;
    return pos_ > start;
  }

  bool IdentStart(size_t at) const {
    const char c = at < s_.size() ? s_[at] : '\0';
    const auto u = static_cast<unsigned char>(c);
    if (std::isalpha(u) || c == '_' || u >= 0x80 || c == '\\') return true;
    if (c == '-') {
      const char n = at + 1 < s_.size() ? s_[at + 1] : '\0';
      const auto un = static_cast<unsigned char>(n);
      return std::isalpha(un) || n == '_' || n == '-' || un >= 0x80 || n == '\\';
    }
    return false;
  }

  std::optional<uint32_t> Escape() {  // at '\'
    ++pos_;
    if (AtEnd()) return std::nullopt;
    if (std::isxdigit(static_cast<unsigned char>(Peek()))) {
      uint32_t cp = 0;
      int n = 0;
      while (n < 6 && std::isxdigit(static_cast<unsigned char>(Peek()))) {
        const char c = Peek();
        cp = cp * 16 + static_cast<uint32_t>(std::isdigit(static_cast<unsigned char>(c))
                                                 ? c - '0'
                                                 : (c | 0x20) - 'a' + 10);
        ++pos_;
        ++n;
      }
      if (Peek() == ' ') ++pos_;
      return cp;
    }
    const auto c = static_cast<unsigned char>(Peek());
    ++pos_;
    return c;
  }

  Result<std::string> Ident() {
    if (!IdentStart(pos_)) return Fail("expected a name");
    std::string out;
    while (!AtEnd()) {
      const char c = Peek();
      const auto u = static_cast<unsigned char>(c);
      if (c == '\\') {
        auto cp = Escape();
        if (!cp) return Fail("bad escape");
        AppendUtf8(&out, *cp);
      } else if (std::isalnum(u) || c == '_' || c == '-' || u >= 0x80) {
        out += c;
        ++pos_;
      } else {
        break;
      }
    }
    return out;
  }

  Result<std::string> String() {
    const char quote = Peek();
    ++pos_;
    std::string out;
    while (true) {
      if (AtEnd()) return Fail("unterminated string");
      const char c = Peek();
      if (c == quote) {
        ++pos_;
        return out;
      }
      if (c == '\\') {
        if (Peek(1) == '\n') {
          pos_ += 2;
          continue;
        }
        auto cp = Escape();
        if (!cp) return Fail("bad escape");
        AppendUtf8(&out, *cp);
      } else {
        out += c;
        ++pos_;
      }
    }
  }

  std::string Name(std::string name) const { return html_ ? AsciiLower(std::move(name)) : name; }

  Result<css::Complex> ParseComplex() {
    css::Complex out;
    auto first = ParseCompound();
    if (!first.ok()) return first.error();
    out.compounds.push_back(std::move(*first));
    while (true) {
      const bool space = SkipSpace();
      if (AtEnd() || Peek() == ',' || Peek() == ')') break;
      char combinator = ' ';
      if (Peek() == '>' || Peek() == '+' || Peek() == '~') {
        combinator = Peek();
        ++pos_;
        SkipSpace();
      } else if (!space) {
        return Fail("unexpected '" + std::string(1, Peek()) + "'");
      }
      if (out.compounds.back().pseudo != css::PseudoElement::kNone) {
        return Fail("a pseudo-element must end the selector");
      }
      auto next = ParseCompound();
      if (!next.ok()) return next.error();
      out.combinators += combinator;
      out.compounds.push_back(std::move(*next));
    }
    return out;
  }

  Result<css::Compound> ParseCompound() {
    css::Compound c;
    bool any = false;
    if (Peek() == '*') {
      ++pos_;
      any = true;
    } else if (IdentStart(pos_)) {
      auto name = Ident();
      if (!name.ok()) return name.error();
      c.element = Name(*name);
      c.has_type = true;
      any = true;
    }
    if (Peek() == '|') return Fail("namespaces are not supported");
    while (!AtEnd()) {
      const char ch = Peek();
      if (ch == '#') {
        ++pos_;
        auto id = Ident();
        if (!id.ok()) return id.error();
        c.conditions.push_back(Cond(css::Op::kId, "", *id));
      } else if (ch == '.') {
        ++pos_;
        auto cls = Ident();
        if (!cls.ok()) return cls.error();
        c.conditions.push_back(Cond(css::Op::kClass, "", *cls));
      } else if (ch == '[') {
        auto cond = Attribute();
        if (!cond.ok()) return cond.error();
        c.conditions.push_back(std::move(*cond));
      } else if (ch == ':' && Peek(1) == ':') {
        pos_ += 2;
        if (auto pe = PseudoElement(&c); !pe.ok()) return pe.error();
        any = true;
        break;
      } else if (ch == ':') {
        ++pos_;
        auto cond = PseudoClass(c);
        if (!cond.ok()) return cond.error();
        c.conditions.push_back(std::move(*cond));
      } else {
        break;
      }
      any = true;
    }
    if (!any) {
      if (AtEnd()) return Fail("selector ends where a name was expected");
      return Fail("unexpected '" + std::string(1, Peek()) + "'");
    }
    return c;
  }

  Result<css::Condition> Attribute() {
    ++pos_;  // '['
    SkipSpace();
    if (Peek() == '|') return Fail("namespaces are not supported");
    auto name_r = Ident();
    if (!name_r.ok()) return name_r.error();
    css::Condition cond = Cond(css::Op::kHas, Name(*name_r));
    SkipSpace();
    if (Peek() == ']') {
      ++pos_;
      return cond;
    }
    char op = 0;
    if (Peek() == '=') {
      op = '=';
      ++pos_;
    } else if (Peek(1) == '=' && std::string_view("~|^$*!").find(Peek()) != std::string_view::npos) {
      op = Peek();
      pos_ += 2;
    } else if (Peek() == '|') {
      return Fail("namespaces are not supported");
    } else {
      return Fail("bad attribute selector");
    }
    SkipSpace();
    std::string value;
    if (Peek() == '"' || Peek() == '\'') {
      auto v = String();
      if (!v.ok()) return v.error();
      value = std::move(*v);
    } else {
      // Bare values: an identifier, or (leniently, as browsers do for numbers) word characters.
      while (!AtEnd() && (std::isalnum(static_cast<unsigned char>(Peek())) || Peek() == '-' ||
                          Peek() == '_' || Peek() == '.' ||
                          static_cast<unsigned char>(Peek()) >= 0x80)) {
        value += Peek();
        ++pos_;
      }
      if (value.empty()) return Fail("attribute value expected");
    }
    SkipSpace();
    if (Peek() != ']') return Fail("attribute flags or ']' expected; flags are not supported");
    ++pos_;
    switch (op) {
      case '=': cond.op = css::Op::kEquals; break;
      case '!': cond.op = css::Op::kNotEquals; break;
      case '~':
        cond.op = value.empty() || value.find_first_of(" \t\n\r\f") != std::string::npos
                      ? css::Op::kNever
                      : css::Op::kIncludes;
        break;
      case '|': cond.op = css::Op::kDash; break;
      case '^': cond.op = value.empty() ? css::Op::kNever : css::Op::kPrefix; break;
      case '$': cond.op = value.empty() ? css::Op::kNever : css::Op::kSuffix; break;
      default: cond.op = value.empty() ? css::Op::kNever : css::Op::kSubstring; break;  // *=
    }
    cond.value = std::move(value);
    return cond;
  }

  Status PseudoElement(css::Compound* c) {
    auto name = Ident();
    if (!name.ok()) return name.error();
    const std::string n = AsciiLower(*name);
    if (n == "text") {
      c->pseudo = css::PseudoElement::kText;
      return Status();
    }
    if (n == "attr" && Peek() == '(') {
      ++pos_;
      SkipSpace();
      std::string attr;
      if (Peek() == '"' || Peek() == '\'') {
        auto v = String();
        if (!v.ok()) return v.error();
        attr = *v;
      } else {
        auto v = Ident();
        if (!v.ok()) return v.error();
        attr = *v;
      }
      SkipSpace();
      if (Peek() != ')') return Fail("')' expected");
      ++pos_;
      c->pseudo = css::PseudoElement::kAttr;
      c->pseudo_attr = Name(attr);
      return Status();
    }
    return Fail("unsupported pseudo-element ::" + n);
  }

  // Parses the argument of :nth-*() up to ')'.
  Result<std::pair<long, long>> NthArgument() {
    const size_t close = s_.find(')', pos_);
    if (close == std::string_view::npos) return Fail("')' expected");
    std::string arg;
    for (char c : s_.substr(pos_, close - pos_)) {
      if (!std::isspace(static_cast<unsigned char>(c))) {
        arg += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      }
    }
    pos_ = close + 1;
    if (arg == "odd") return std::pair<long, long>{2, 1};
    if (arg == "even") return std::pair<long, long>{2, 0};
    auto number = [](std::string_view s, long* out) {
      if (s.empty() || s.size() > 9) return false;
      long v = 0;
      for (char c : s) {
        if (!std::isdigit(static_cast<unsigned char>(c))) return false;
        v = v * 10 + (c - '0');
      }
      *out = v;
      return true;
    };
    const size_t n = arg.find('n');
    long a = 0, b = 0;
    if (n == std::string::npos) {
      std::string_view sv = arg;
      const bool neg = sv.starts_with("-");
      if (sv.starts_with("-") || sv.starts_with("+")) sv.remove_prefix(1);
      if (!number(sv, &b)) return Fail("bad an+b argument");
      return std::pair<long, long>{0, neg ? -b : b};
    }
    std::string_view as = std::string_view(arg).substr(0, n);
    if (as.empty() || as == "+") {
      a = 1;
    } else if (as == "-") {
      a = -1;
    } else {
      const bool neg = as.starts_with("-");
      if (as.starts_with("-") || as.starts_with("+")) as.remove_prefix(1);
      if (!number(as, &a)) return Fail("bad an+b argument");
      if (neg) a = -a;
    }
    std::string_view bs = std::string_view(arg).substr(n + 1);
    if (!bs.empty()) {
      const bool neg = bs.starts_with("-");
      if (!bs.starts_with("-") && !bs.starts_with("+")) return Fail("bad an+b argument");
      bs.remove_prefix(1);
      if (!number(bs, &b)) return Fail("bad an+b argument");
      if (neg) b = -b;
    }
    return std::pair<long, long>{a, b};
  }

  Result<css::Condition> PseudoClass(const css::Compound& c) {
    auto name_r = Ident();
    if (!name_r.ok()) return name_r.error();
    const std::string name = AsciiLower(*name_r);
    const bool function = Peek() == '(';
    auto of_type = [&](css::Op op) -> Result<css::Condition> {
      if (!c.has_type) return Fail(":" + name + " needs an element name (e.g. li:" + name + ")");
      return Cond(op, c.element);
    };
    if (!function) {
      if (name == "first-child") return Cond(css::Op::kFirstChild);
      if (name == "last-child") return Cond(css::Op::kLastChild);
      if (name == "only-child") return Cond(css::Op::kOnlyChild);
      if (name == "empty") return Cond(css::Op::kEmpty);
      if (name == "root") return Cond(css::Op::kRoot);
      if (name == "first-of-type") return of_type(css::Op::kFirstOfType);
      if (name == "last-of-type") return of_type(css::Op::kLastOfType);
      if (name == "only-of-type") return of_type(css::Op::kOnlyOfType);
      return Fail("unsupported pseudo-class :" + name);
    }
    ++pos_;  // '('
    SkipSpace();
    if (name == "not") {
      auto inner = ParseCompound();
      if (!inner.ok()) return inner.error();
      if (inner->pseudo != css::PseudoElement::kNone) return Fail("pseudo-element inside :not()");
      SkipSpace();
      if (Peek() != ')') return Fail(":not() takes one compound selector");
      ++pos_;
      css::Condition cond = Cond(css::Op::kNot);
      cond.inner = std::make_shared<const css::Compound>(std::move(*inner));
      return cond;
    }
    if (name == "contains") {
      std::string text;
      if (Peek() == '"' || Peek() == '\'') {
        auto v = String();
        if (!v.ok()) return v.error();
        text = *v;
      } else {
        auto v = Ident();
        if (!v.ok()) return v.error();
        text = *v;
      }
      SkipSpace();
      if (Peek() != ')') return Fail("')' expected");
      ++pos_;
      return Cond(css::Op::kContains, "", std::move(text));
    }
    if (name == "nth-child" || name == "nth-last-child" || name == "nth-of-type" ||
        name == "nth-last-of-type") {
      auto ab = NthArgument();
      if (!ab.ok()) return ab.error();
      const bool last = name.find("last") != std::string::npos;
      css::Condition cond;
      if (name.ends_with("of-type")) {
        auto t = of_type(last ? css::Op::kNthLastOfType : css::Op::kNthOfType);
        if (!t.ok()) return t.error();
        cond = std::move(*t);
      } else {
        cond.op = last ? css::Op::kNthLastChild : css::Op::kNthChild;
      }
      cond.a = ab->first;
      cond.b = ab->second;
      return cond;
    }
    return Fail("unsupported pseudo-class :" + name + "()");
  }

  std::string_view s_;
  bool html_;
  size_t pos_ = 0;
};

// ---- XPath

// Characters, as XPath's string-length and substring count them.
size_t Utf8Length(std::string_view s) {
  size_t n = 0;
  for (char c : s) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
  }
  return n;
}

// XPath condition that (1-based position) p = count(<siblings>) + 1 is of the form a*n + b.
std::string NthCondition(long a, long b, const std::string& siblings) {
  const std::string p = "(count(" + siblings + ") + 1)";
  if (a == 0) return p + " = " + std::to_string(b);
  std::string diff = "(" + p + " - " + std::to_string(b) + ")";
  if (b < 0) diff = "(" + p + " + " + std::to_string(-b) + ")";
  if (a > 0) {
    std::string out = diff + " mod " + std::to_string(a) + " = 0";
    if (b > 1) out = p + " >= " + std::to_string(b) + " and " + out;
    return out;
  }
  return p + " <= " + std::to_string(b) + " and " + diff + " mod " + std::to_string(-a) + " = 0";
}

std::string Predicate(const css::Condition& c) {
  const std::string attr = "@" + c.name;
  const std::string lit = XPathLiteral(c.value);
  switch (c.op) {
    case css::Op::kId: return "@id = " + lit;
    case css::Op::kClass:
      // `@class and` first: most elements have no class, and the test then costs no strings.
      return "@class and contains(concat(' ', normalize-space(@class), ' '), " +
             XPathLiteral(" " + c.value + " ") + ")";
    case css::Op::kHas: return attr;
    case css::Op::kEquals: return attr + " = " + lit;
    case css::Op::kNotEquals: return "not(" + attr + ") or " + attr + " != " + lit;
    case css::Op::kIncludes:
      return attr + " and contains(concat(' ', normalize-space(" + attr + "), ' '), " +
             XPathLiteral(" " + c.value + " ") + ")";
    case css::Op::kDash:
      return attr + " = " + lit + " or starts-with(" + attr + ", " + XPathLiteral(c.value + "-") +
             ")";
    case css::Op::kPrefix: return "starts-with(" + attr + ", " + lit + ")";
    case css::Op::kSuffix:
      return "substring(" + attr + ", string-length(" + attr + ") - " +
             std::to_string(Utf8Length(c.value) - 1) + ") = " + lit;
    case css::Op::kSubstring: return "contains(" + attr + ", " + lit + ")";
    case css::Op::kNever: return "false()";
    case css::Op::kFirstChild: return "count(preceding-sibling::*) = 0";
    case css::Op::kLastChild: return "count(following-sibling::*) = 0";
    case css::Op::kOnlyChild:
      return "count(preceding-sibling::*) = 0 and count(following-sibling::*) = 0";
    case css::Op::kEmpty: return "not(*) and not(string-length())";
    case css::Op::kRoot: return "not(parent::*)";
    case css::Op::kFirstOfType: return "count(preceding-sibling::" + c.name + ") = 0";
    case css::Op::kLastOfType: return "count(following-sibling::" + c.name + ") = 0";
    case css::Op::kOnlyOfType:
      return "count(preceding-sibling::" + c.name + ") = 0 and count(following-sibling::" +
             c.name + ") = 0";
    case css::Op::kNthChild: return NthCondition(c.a, c.b, "preceding-sibling::*");
    case css::Op::kNthLastChild: return NthCondition(c.a, c.b, "following-sibling::*");
    case css::Op::kNthOfType: return NthCondition(c.a, c.b, "preceding-sibling::" + c.name);
    case css::Op::kNthLastOfType: return NthCondition(c.a, c.b, "following-sibling::" + c.name);
    case css::Op::kNot: {
      std::vector<std::string> parts;
      if (c.inner->has_type) parts.push_back("self::" + c.inner->element);
      for (const auto& cond : c.inner->conditions) parts.push_back("(" + Predicate(cond) + ")");
      if (parts.empty()) return "false()";  // :not(*)
      std::string joined;
      for (size_t i = 0; i < parts.size(); ++i) joined += (i ? " and " : "") + parts[i];
      return "not(" + joined + ")";
    }
    case css::Op::kContains: return "contains(string(.), " + lit + ")";
  }
  return "false()";
}

std::string Step(const css::Compound& c) {
  std::string out = c.element;
  for (const auto& cond : c.conditions) out += "[" + Predicate(cond) + "]";
  return out;
}

std::string ComplexXPath(const css::Complex& complex) {
  std::string xpath = "descendant-or-self::" + Step(complex.compounds[0]);
  for (size_t i = 1; i < complex.compounds.size(); ++i) {
    const std::string step = Step(complex.compounds[i]);
    switch (complex.combinators[i - 1]) {
      case '>': xpath += "/" + step; break;
      case '~': xpath += "/following-sibling::" + step; break;
      case '+': xpath += "/following-sibling::*[1]/self::" + step; break;
      default: xpath += "/descendant::" + step; break;
    }
  }
  const css::Compound& last = complex.compounds.back();
  if (last.pseudo == css::PseudoElement::kText) xpath += "/text()";
  if (last.pseudo == css::PseudoElement::kAttr) xpath += "/@" + last.pseudo_attr;
  return xpath;
}

}  // namespace

std::string XPathLiteral(std::string_view text) {
  if (text.find('\'') == std::string_view::npos) return "'" + std::string(text) + "'";
  if (text.find('"') == std::string_view::npos) return "\"" + std::string(text) + "\"";
  std::string out = "concat(";
  size_t start = 0;
  bool first = true;
  while (start <= text.size()) {
    const size_t q = text.find('\'', start);
    const std::string_view part = text.substr(start, q == std::string_view::npos ? q : q - start);
    if (!part.empty()) {
      out += (first ? "" : ", ") + std::string("'") + std::string(part) + "'";
      first = false;
    }
    if (q == std::string_view::npos) break;
    out += (first ? "" : ", ") + std::string("\"'\"");
    first = false;
    start = q + 1;
  }
  return out + ")";
}

Result<css::SelectorList> ParseCss(std::string_view css, bool html) {
  if (css.empty()) {
    return Error(ErrorCode::kInvalidArgument, "CSS selector is empty");
  }
  return Parser(css, html).Parse();
}

std::string ToXPath(const css::SelectorList& selectors) {
  std::string out;
  for (size_t i = 0; i < selectors.alternatives.size(); ++i) {
    if (i > 0) out += " | ";
    out += ComplexXPath(selectors.alternatives[i]);
  }
  return out;
}

Result<std::string> CssToXPath(std::string_view css, bool html) {
  auto parsed = ParseCss(css, html);
  if (!parsed.ok()) return parsed.error();
  return ToXPath(*parsed);
}

}  // namespace celeriac::extractor::parse
