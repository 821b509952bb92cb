#include "extractor/parse/css_xpath.hpp"

#include <cctype>
#include <optional>
#include <vector>

#include "extractor/parse/text.hpp"

namespace celeriac::extractor::parse {
namespace {

struct Compound {
  std::string element = "*";         // name test
  bool has_type = false;
  std::vector<std::string> conditions;
  std::string pseudo_element;        // XPath suffix ("/text()", "/@href") or ""
};

std::string AsciiLower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

class Parser {
 public:
  Parser(std::string_view css, bool html) : s_(css), html_(html) {}

  Result<std::string> Translate() {
    std::vector<std::string> alternatives;
    SkipSpace();
    while (true) {
      auto complex = ParseComplex();
      if (!complex.ok()) return complex.error();
      alternatives.push_back(std::move(*complex));
      SkipSpace();
      if (AtEnd()) break;
      if (Peek() != ',') return Fail("unexpected '" + std::string(1, Peek()) + "'");
      ++pos_;
      SkipSpace();
      if (AtEnd()) return Fail("empty selector after ','");
    }
    std::string out;
    for (size_t i = 0; i < alternatives.size(); ++i) {
      if (i > 0) out += " | ";
      out += alternatives[i];
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

  Result<std::string> ParseComplex() {
    auto first = ParseCompound();
    if (!first.ok()) return first.error();
    std::string xpath = "descendant-or-self::" + Step(*first);
    std::string pseudo = first->pseudo_element;
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
      if (!pseudo.empty()) return Fail("a pseudo-element must end the selector");
      auto next = ParseCompound();
      if (!next.ok()) return next.error();
      switch (combinator) {
        case ' ': xpath += "/descendant::" + Step(*next); break;
        case '>': xpath += "/" + Step(*next); break;
        case '~': xpath += "/following-sibling::" + Step(*next); break;
        case '+': {
          std::string step = "following-sibling::*[1]/self::" + Step(*next);
          xpath += "/" + step;
          break;
        }
      }
      pseudo = next->pseudo_element;
    }
    return xpath + pseudo;
  }

  static std::string Step(const Compound& c) {
    std::string out = c.element;
    for (const auto& cond : c.conditions) out += "[" + cond + "]";
    return out;
  }

  Result<Compound> ParseCompound() {
    Compound c;
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
        c.conditions.push_back("@id = " + XPathLiteral(*id));
      } else if (ch == '.') {
        ++pos_;
        auto cls = Ident();
        if (!cls.ok()) return cls.error();
        // `@class and` first: most elements have no class, and the test then costs no strings.
        c.conditions.push_back("@class and contains(concat(' ', normalize-space(@class), ' '), " +
                               XPathLiteral(" " + *cls + " ") + ")");
      } else if (ch == '[') {
        auto cond = Attribute();
        if (!cond.ok()) return cond.error();
        c.conditions.push_back(std::move(*cond));
      } else if (ch == ':' && Peek(1) == ':') {
        pos_ += 2;
        auto pe = PseudoElement();
        if (!pe.ok()) return pe.error();
        c.pseudo_element = std::move(*pe);
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

  Result<std::string> Attribute() {
    ++pos_;  // '['
    SkipSpace();
    if (Peek() == '|') return Fail("namespaces are not supported");
    auto name_r = Ident();
    if (!name_r.ok()) return name_r.error();
    const std::string attr = "@" + Name(*name_r);
    SkipSpace();
    if (Peek() == ']') {
      ++pos_;
      return attr;
    }
    std::string op;
    if (Peek() == '=') {
      op = "=";
      ++pos_;
    } else if (Peek(1) == '=' && std::string_view("~|^$*!").find(Peek()) != std::string_view::npos) {
      op = std::string(1, Peek()) + "=";
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
    const std::string lit = XPathLiteral(value);
    if (op == "=") return attr + " = " + lit;
    if (op == "!=") return "not(" + attr + ") or " + attr + " != " + lit;
    if (op == "~=") {
      if (value.empty() || value.find_first_of(" \t\n\r\f") != std::string::npos) return std::string("false()");
      return attr + " and contains(concat(' ', normalize-space(" + attr + "), ' '), " +
             XPathLiteral(" " + value + " ") + ")";
    }
    if (op == "|=") {
      return attr + " = " + lit + " or starts-with(" + attr + ", " + XPathLiteral(value + "-") +
             ")";
    }
    if (value.empty()) return std::string("false()");
    if (op == "^=") return "starts-with(" + attr + ", " + lit + ")";
    if (op == "$=") {
      return "substring(" + attr + ", string-length(" + attr + ") - " +
             std::to_string(value.size() - 1) + ") = " + lit;
    }
    return "contains(" + attr + ", " + lit + ")";  // *=
  }

  Result<std::string> PseudoElement() {
    auto name = Ident();
    if (!name.ok()) return name.error();
    const std::string n = AsciiLower(*name);
    if (n == "text") return std::string("/text()");
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
      return "/@" + Name(attr);
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

  // XPath condition that (1-based position) p = count(<siblings>) + 1 is of the form a*n + b.
  static std::string NthCondition(long a, long b, const std::string& siblings) {
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

  Result<std::string> PseudoClass(const Compound& c) {
    auto name_r = Ident();
    if (!name_r.ok()) return name_r.error();
    const std::string name = AsciiLower(*name_r);
    const bool function = Peek() == '(';
    auto of_type = [&](const std::string& axis) -> Result<std::string> {
      if (!c.has_type) return Fail(":" + name + " needs an element name (e.g. li:" + name + ")");
      return axis + "::" + c.element;
    };
    if (!function) {
      if (name == "first-child") return std::string("count(preceding-sibling::*) = 0");
      if (name == "last-child") return std::string("count(following-sibling::*) = 0");
      if (name == "only-child") {
        return std::string("count(preceding-sibling::*) = 0 and count(following-sibling::*) = 0");
      }
      if (name == "empty") return std::string("not(*) and not(string-length())");
      if (name == "root") return std::string("not(parent::*)");
      if (name == "first-of-type" || name == "last-of-type" || name == "only-of-type") {
        auto pre = of_type("preceding-sibling");
        if (!pre.ok()) return pre.error();
        auto fol = of_type("following-sibling");
        if (name == "first-of-type") return "count(" + *pre + ") = 0";
        if (name == "last-of-type") return "count(" + *fol + ") = 0";
        return "count(" + *pre + ") = 0 and count(" + *fol + ") = 0";
      }
      return Fail("unsupported pseudo-class :" + name);
    }
    ++pos_;  // '('
    SkipSpace();
    if (name == "not") {
      auto inner = ParseCompound();
      if (!inner.ok()) return inner.error();
      if (!inner->pseudo_element.empty()) return Fail("pseudo-element inside :not()");
      SkipSpace();
      if (Peek() != ')') return Fail(":not() takes one compound selector");
      ++pos_;
      std::vector<std::string> parts;
      if (inner->has_type) parts.push_back("self::" + inner->element);
      for (auto& cond : inner->conditions) parts.push_back("(" + cond + ")");
      if (parts.empty()) return std::string("false()");  // :not(*)
      std::string joined;
      for (size_t i = 0; i < parts.size(); ++i) joined += (i ? " and " : "") + parts[i];
      return "not(" + joined + ")";
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
      return "contains(string(.), " + XPathLiteral(text) + ")";
    }
    if (name == "nth-child" || name == "nth-last-child" || name == "nth-of-type" ||
        name == "nth-last-of-type") {
      auto ab = NthArgument();
      if (!ab.ok()) return ab.error();
      const bool last = name.find("last") != std::string::npos;
      std::string siblings;
      if (name.ends_with("of-type")) {
        auto s = of_type(last ? "following-sibling" : "preceding-sibling");
        if (!s.ok()) return s.error();
        siblings = *s;
      } else {
        siblings = last ? "following-sibling::*" : "preceding-sibling::*";
      }
      return NthCondition(ab->first, ab->second, siblings);
    }
    return Fail("unsupported pseudo-class :" + name + "()");
  }

  std::string_view s_;
  bool html_;
  size_t pos_ = 0;
};

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

Result<std::string> CssToXPath(std::string_view css, bool html) {
  if (css.empty()) {
    return Error(ErrorCode::kInvalidArgument, "CSS selector is empty");
  }
  return Parser(css, html).Translate();
}

}  // namespace celeriac::extractor::parse
