#include "extractor/parse/jsonpath.hpp"

#include <algorithm>
#include <cctype>
#include <optional>

#include "extractor/parse/text.hpp"

namespace celeriac::extractor::parse {

using nlohmann::json;

namespace {
enum class SelectorKind { kName, kWildcard, kIndex, kSlice, kFilter };
enum class FilterOp { kOr, kAnd, kNot, kEq, kNe, kLt, kLe, kGt, kGe, kExists, kLiteral, kPath };
}  // namespace

struct JsonPath::Filter {
  FilterOp op;
  std::vector<Filter> children;  // operands
  json literal;                  // kLiteral
  bool relative = true;          // kPath / kExists: `@` (true) or `$`
  std::vector<Segment> path;     // kPath / kExists
};

namespace {
struct Selector {
  SelectorKind kind;
  std::string name;
  long long index = 0;
  std::optional<long long> start, end;
  long long step = 1;
  std::shared_ptr<JsonPath::Filter> filter;
};
}  // namespace

struct JsonPath::Segment {
  bool descendant = false;
  std::vector<Selector> selectors;
};

namespace {

using Segment = JsonPath::Segment;
using Filter = JsonPath::Filter;

class Parser {
 public:
  explicit Parser(std::string_view s) : s_(s) {}

  Result<std::vector<Segment>> Path(bool top) {
    // at '$' or '@'
    ++pos_;
    std::vector<Segment> segments;
    while (true) {
      const size_t before = pos_;
      SkipSpace();
      if (AtEnd()) break;
      Segment seg;
      if (Peek() == '.' && Peek(1) == '.') {
        pos_ += 2;
        seg.descendant = true;
        if (Peek() == '[') {
          auto sel = Bracket();
          if (!sel.ok()) return sel.error();
          seg.selectors = std::move(*sel);
        } else {
          auto sel = Shorthand();
          if (!sel.ok()) return sel.error();
          seg.selectors.push_back(std::move(*sel));
        }
      } else if (Peek() == '.') {
        ++pos_;
        auto sel = Shorthand();
        if (!sel.ok()) return sel.error();
        seg.selectors.push_back(std::move(*sel));
      } else if (Peek() == '[') {
        auto sel = Bracket();
        if (!sel.ok()) return sel.error();
        seg.selectors = std::move(*sel);
      } else {
        if (top) return Fail("unexpected '" + std::string(1, Peek()) + "'");
        pos_ = before;  // inside a filter: the path ends here
        break;
      }
      segments.push_back(std::move(seg));
    }
    return segments;
  }

  bool AtEnd() const { return pos_ >= s_.size(); }
  Error Fail(const std::string& what) const {
    return Error(ErrorCode::kInvalidArgument, "JSONPath \"" + std::string(s_) + "\": " + what +
                                                  " at offset " + std::to_string(pos_));
  }

 private:
  char Peek(size_t ahead = 0) const {
    return pos_ + ahead < s_.size() ? s_[pos_ + ahead] : '\0';
  }
  void SkipSpace() {
    while (!AtEnd() && (Peek() == ' ' || Peek() == '\t' || Peek() == '\n' || Peek() == '\r')) {
      ++pos_;
    }
  }
  static bool NameFirst(char c) {
    const auto u = static_cast<unsigned char>(c);
    return std::isalpha(u) || c == '_' || u >= 0x80;
  }

  Result<Selector> Shorthand() {
    Selector sel;
    if (Peek() == '*') {
      ++pos_;
      sel.kind = SelectorKind::kWildcard;
      return sel;
    }
    if (!NameFirst(Peek())) return Fail("member name expected");
    sel.kind = SelectorKind::kName;
    while (!AtEnd() && (NameFirst(Peek()) || std::isdigit(static_cast<unsigned char>(Peek())))) {
      sel.name += Peek();
      ++pos_;
    }
    return sel;
  }

  Result<std::string> StringLiteral() {
    const char quote = Peek();
    ++pos_;
    std::string out;
    while (true) {
      if (AtEnd()) return Fail("unterminated string");
      const char c = Peek();
      ++pos_;
      if (c == quote) return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      const char e = Peek();
      ++pos_;
      switch (e) {
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case '/': case '\\': case '\'': case '"': out += e; break;
        case 'u': {
          if (pos_ + 4 > s_.size()) return Fail("bad \\u escape");
          uint32_t cp = 0;
          for (int i = 0; i < 4; ++i) {
            const char h = Peek();
            if (!std::isxdigit(static_cast<unsigned char>(h))) return Fail("bad \\u escape");
            cp = cp * 16 + static_cast<uint32_t>(std::isdigit(static_cast<unsigned char>(h))
                                                     ? h - '0'
                                                     : (h | 0x20) - 'a' + 10);
            ++pos_;
          }
          AppendUtf8(&out, cp);
          break;
        }
        default:
          return Fail("bad escape");
      }
    }
  }

  std::optional<long long> Integer() {
    const size_t start = pos_;
    if (Peek() == '-') ++pos_;
    if (!std::isdigit(static_cast<unsigned char>(Peek()))) {
      pos_ = start;
      return std::nullopt;
    }
    long long v = 0;
    int digits = 0;
    while (std::isdigit(static_cast<unsigned char>(Peek()))) {
      if (++digits > 16) return std::nullopt;
      v = v * 10 + (Peek() - '0');
      ++pos_;
    }
    return s_[start] == '-' ? -v : v;
  }

  Result<std::vector<Selector>> Bracket() {
    ++pos_;  // '['
    std::vector<Selector> out;
    while (true) {
      SkipSpace();
      Selector sel;
      const char c = Peek();
      if (c == '\'' || c == '"') {
        auto name = StringLiteral();
        if (!name.ok()) return name.error();
        sel.kind = SelectorKind::kName;
        sel.name = std::move(*name);
      } else if (c == '*') {
        ++pos_;
        sel.kind = SelectorKind::kWildcard;
      } else if (c == '?') {
        ++pos_;
        auto f = Or();
        if (!f.ok()) return f.error();
        sel.kind = SelectorKind::kFilter;
        sel.filter = std::make_shared<Filter>(std::move(*f));
      } else if (c == ':' || c == '-' || std::isdigit(static_cast<unsigned char>(c))) {
        auto first = Integer();
        SkipSpace();
        if (Peek() == ':') {
          sel.kind = SelectorKind::kSlice;
          sel.start = first;
          ++pos_;
          SkipSpace();
          sel.end = Integer();
          SkipSpace();
          if (Peek() == ':') {
            ++pos_;
            SkipSpace();
            auto step = Integer();
            if (step) sel.step = *step;
          }
        } else {
          if (!first) return Fail("index expected");
          sel.kind = SelectorKind::kIndex;
          sel.index = *first;
        }
      } else {
        return Fail("selector expected");
      }
      out.push_back(std::move(sel));
      SkipSpace();
      if (Peek() == ',') {
        ++pos_;
        continue;
      }
      if (Peek() == ']') {
        ++pos_;
        return out;
      }
      return Fail("']' expected");
    }
  }

  // Filter expressions.
  Result<Filter> Or() {
    auto left = And();
    if (!left.ok()) return left;
    while (true) {
      SkipSpace();
      if (!(Peek() == '|' && Peek(1) == '|')) return left;
      pos_ += 2;
      auto right = And();
      if (!right.ok()) return right;
      Filter f{FilterOp::kOr, {std::move(*left), std::move(*right)}, {}, true, {}};
      left = std::move(f);
    }
  }
  Result<Filter> And() {
    auto left = Unary();
    if (!left.ok()) return left;
    while (true) {
      SkipSpace();
      if (!(Peek() == '&' && Peek(1) == '&')) return left;
      pos_ += 2;
      auto right = Unary();
      if (!right.ok()) return right;
      Filter f{FilterOp::kAnd, {std::move(*left), std::move(*right)}, {}, true, {}};
      left = std::move(f);
    }
  }
  Result<Filter> Unary() {
    SkipSpace();
    if (Peek() == '!' && Peek(1) != '=') {
      ++pos_;
      auto inner = Unary();
      if (!inner.ok()) return inner;
      return Filter{FilterOp::kNot, {std::move(*inner)}, {}, true, {}};
    }
    if (Peek() == '(') {
      ++pos_;
      auto inner = Or();
      if (!inner.ok()) return inner;
      SkipSpace();
      if (Peek() != ')') return Fail("')' expected");
      ++pos_;
      return inner;
    }
    auto left = Operand();
    if (!left.ok()) return left;
    SkipSpace();
    FilterOp op;
    if (Peek() == '=' && Peek(1) == '=') {
      op = FilterOp::kEq;
    } else if (Peek() == '!' && Peek(1) == '=') {
      op = FilterOp::kNe;
    } else if (Peek() == '<' && Peek(1) == '=') {
      op = FilterOp::kLe;
    } else if (Peek() == '>' && Peek(1) == '=') {
      op = FilterOp::kGe;
    } else if (Peek() == '<') {
      op = FilterOp::kLt;
    } else if (Peek() == '>') {
      op = FilterOp::kGt;
    } else {
      if (left->op == FilterOp::kLiteral) return Fail("a literal is not a test");
      left->op = FilterOp::kExists;
      return left;
    }
    pos_ += (op == FilterOp::kLt || op == FilterOp::kGt) ? 1 : 2;
    SkipSpace();
    auto right = Operand();
    if (!right.ok()) return right;
    return Filter{op, {std::move(*left), std::move(*right)}, {}, true, {}};
  }
  Result<Filter> Operand() {
    SkipSpace();
    const char c = Peek();
    if (c == '@' || c == '$') {
      const bool relative = c == '@';
      auto path = Path(false);
      if (!path.ok()) return path.error();
      return Filter{FilterOp::kPath, {}, {}, relative, std::move(*path)};
    }
    if (c == '\'' || c == '"') {
      auto s = StringLiteral();
      if (!s.ok()) return s.error();
      return Filter{FilterOp::kLiteral, {}, json(std::move(*s)), true, {}};
    }
    // Numbers and the keywords true / false / null.
    const size_t start = pos_;
    while (!AtEnd() && (std::isalnum(static_cast<unsigned char>(Peek())) || Peek() == '-' ||
                        Peek() == '+' || Peek() == '.')) {
      ++pos_;
    }
    const std::string word(s_.substr(start, pos_ - start));
    if (word == "true") return Filter{FilterOp::kLiteral, {}, json(true), true, {}};
    if (word == "false") return Filter{FilterOp::kLiteral, {}, json(false), true, {}};
    if (word == "null") return Filter{FilterOp::kLiteral, {}, json(nullptr), true, {}};
    if (!word.empty() && (word[0] == '-' || std::isdigit(static_cast<unsigned char>(word[0])))) {
      json number = json::parse(word, nullptr, false);
      if (number.is_number()) return Filter{FilterOp::kLiteral, {}, std::move(number), true, {}};
    }
    if (!AtEnd() && Peek() == '(') {
      return Fail("function extensions such as " + word + "() are not supported");
    }
    pos_ = start;
    return Fail("operand expected");
  }

  std::string_view s_;
  size_t pos_ = 0;
};

void EvalSegments(const std::vector<Segment>& segments, const json& root, const json& start,
                  std::vector<const json*>* out);

bool Truthy(const Filter& f, const json& root, const json& current);

// The single value a comparison operand denotes, or nullptr (Nothing).
const json* OperandValue(const Filter& f, const json& root, const json& current) {
  if (f.op == FilterOp::kLiteral) return &f.literal;
  std::vector<const json*> nodes;
  EvalSegments(f.path, root, f.relative ? current : root, &nodes);
  return nodes.size() == 1 ? nodes.front() : nullptr;
}

bool Equal(const json* a, const json* b) {
  if (a == nullptr || b == nullptr) return a == b;
  if (a->is_number() && b->is_number()) return a->get<double>() == b->get<double>();
  return *a == *b;
}

bool Less(const json* a, const json* b) {
  if (a == nullptr || b == nullptr) return false;
  if (a->is_number() && b->is_number()) return a->get<double>() < b->get<double>();
  if (a->is_string() && b->is_string()) return a->get_ref<const std::string&>() <
                                               b->get_ref<const std::string&>();
  return false;
}

bool Truthy(const Filter& f, const json& root, const json& current) {
  switch (f.op) {
    case FilterOp::kOr:
      return Truthy(f.children[0], root, current) || Truthy(f.children[1], root, current);
    case FilterOp::kAnd:
      return Truthy(f.children[0], root, current) && Truthy(f.children[1], root, current);
    case FilterOp::kNot:
      return !Truthy(f.children[0], root, current);
    case FilterOp::kExists: {
      std::vector<const json*> nodes;
      EvalSegments(f.path, root, f.relative ? current : root, &nodes);
      return !nodes.empty();
    }
    case FilterOp::kLiteral:
    case FilterOp::kPath:
      return false;
    default:
      break;
  }
  const json* a = OperandValue(f.children[0], root, current);
  const json* b = OperandValue(f.children[1], root, current);
  switch (f.op) {
    case FilterOp::kEq: return Equal(a, b);
    case FilterOp::kNe: return !Equal(a, b);
    case FilterOp::kLt: return Less(a, b);
    case FilterOp::kLe: return Less(a, b) || Equal(a, b);
    case FilterOp::kGt: return Less(b, a);
    case FilterOp::kGe: return Less(b, a) || Equal(a, b);
    default: return false;
  }
}

void ApplySelector(const Selector& sel, const json& root, const json& node,
                   std::vector<const json*>* out) {
  switch (sel.kind) {
    case SelectorKind::kName:
      if (node.is_object()) {
        auto it = node.find(sel.name);
        if (it != node.end()) out->push_back(&*it);
      }
      return;
    case SelectorKind::kWildcard:
      if (node.is_object() || node.is_array()) {
        for (const auto& child : node) out->push_back(&child);
      }
      return;
    case SelectorKind::kIndex: {
      if (!node.is_array()) return;
      const auto size = static_cast<long long>(node.size());
      const long long i = sel.index < 0 ? size + sel.index : sel.index;
      if (i >= 0 && i < size) out->push_back(&node[static_cast<size_t>(i)]);
      return;
    }
    case SelectorKind::kSlice: {
      if (!node.is_array() || sel.step == 0) return;
      const auto len = static_cast<long long>(node.size());
      auto normalize = [len](long long i) { return i >= 0 ? i : len + i; };
      const long long step = sel.step;
      if (step > 0) {
        const long long lower = std::min(std::max(normalize(sel.start.value_or(0)), 0LL), len);
        const long long upper = std::min(std::max(normalize(sel.end.value_or(len)), 0LL), len);
        for (long long i = lower; i < upper; i += step) {
          out->push_back(&node[static_cast<size_t>(i)]);
        }
      } else {
        const long long upper =
            std::min(std::max(normalize(sel.start.value_or(len - 1)), -1LL), len - 1);
        const long long lower =
            sel.end ? std::min(std::max(normalize(*sel.end), -1LL), len - 1) : -1;
        for (long long i = upper; lower < i; i += step) {
          out->push_back(&node[static_cast<size_t>(i)]);
        }
      }
      return;
    }
    case SelectorKind::kFilter:
      if (node.is_object() || node.is_array()) {
        for (const auto& child : node) {
          if (Truthy(*sel.filter, root, child)) out->push_back(&child);
        }
      }
      return;
  }
}

void EvalSegments(const std::vector<Segment>& segments, const json& root, const json& start,
                  std::vector<const json*>* out) {
  std::vector<const json*> current{&start};
  std::vector<const json*> next;
  std::vector<const json*> stack;
  for (const auto& seg : segments) {
    next.clear();
    for (const json* node : current) {
      if (!seg.descendant) {
        for (const auto& sel : seg.selectors) ApplySelector(sel, root, *node, &next);
        continue;
      }
      // The node and its descendants, pre-order, iteratively (no recursion on deep input).
      stack.assign(1, node);
      while (!stack.empty()) {
        const json* n = stack.back();
        stack.pop_back();
        for (const auto& sel : seg.selectors) ApplySelector(sel, root, *n, &next);
        if (n->is_object() || n->is_array()) {
          const size_t mark = stack.size();
          for (const auto& child : *n) stack.push_back(&child);
          std::reverse(stack.begin() + static_cast<long>(mark), stack.end());
        }
      }
    }
    current.swap(next);
    if (current.empty()) return;
  }
  out->insert(out->end(), current.begin(), current.end());
}

}  // namespace

Result<JsonPath> JsonPath::Compile(std::string_view path) {
  Parser parser(path);
  if (path.empty() || path[0] != '$') return parser.Fail("must start with '$'");
  auto segments = parser.Path(true);
  if (!segments.ok()) return segments.error();
  JsonPath out;
  out.text_ = std::string(path);
  out.segments_ = std::make_shared<const std::vector<Segment>>(std::move(*segments));
  return out;
}

void JsonPath::Evaluate(const json& root, std::vector<const json*>* out) const {
  EvalSegments(*segments_, root, root, out);
}

}  // namespace celeriac::extractor::parse
