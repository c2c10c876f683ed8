#include "libs/expr/expr.h"

#include <algorithm>
#include <cctype>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace mkt::expr {

// ---- Decimal ------------------------------------------------------------------------------------

namespace {

constexpr int kMaxScale = 18;

__int128 Pow10(int n) {
  __int128 r = 1;
  for (int i = 0; i < n; ++i) r *= 10;
  return r;
}

}  // namespace

int Decimal::Compare(const Decimal& a, const Decimal& b) {
  const int scale = std::max(a.scale, b.scale);
  const __int128 x = static_cast<__int128>(a.units) * Pow10(scale - a.scale);
  const __int128 y = static_cast<__int128>(b.units) * Pow10(scale - b.scale);
  return x < y ? -1 : (x > y ? 1 : 0);
}

std::optional<Decimal> Decimal::Parse(std::string_view text) {
  size_t i = 0;
  bool negative = false;
  if (i < text.size() && (text[i] == '-' || text[i] == '+')) {
    negative = text[i] == '-';
    ++i;
  }
  if (i >= text.size()) return std::nullopt;
  __int128 units = 0;
  int scale = 0;
  bool dot = false;
  int digits = 0;
  for (; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '.') {
      if (dot) return std::nullopt;
      dot = true;
      continue;
    }
    if (c < '0' || c > '9') return std::nullopt;
    ++digits;
    if (dot) {
      if (++scale > kMaxScale) return std::nullopt;
    }
    units = units * 10 + (c - '0');
    if (units > static_cast<__int128>(INT64_MAX)) return std::nullopt;
  }
  if (digits == 0) return std::nullopt;
  return Decimal{static_cast<int64_t>(negative ? -units : units), scale};
}

std::string Decimal::ToString() const {
  if (scale == 0) return std::to_string(units);
  const bool negative = units < 0;
  // Through __int128 so that INT64_MIN negates.
  __int128 magnitude = negative ? -static_cast<__int128>(units) : units;
  std::string digits;
  while (magnitude > 0) {
    digits.push_back(static_cast<char>('0' + static_cast<int>(magnitude % 10)));
    magnitude /= 10;
  }
  while (static_cast<int>(digits.size()) <= scale) digits.push_back('0');
  std::reverse(digits.begin(), digits.end());
  // Split rather than insert: GCC 12's -Wrestrict misreads an insert into the middle at -O2.
  const size_t point = digits.size() - static_cast<size_t>(scale);
  std::string out = negative ? "-" : "";
  out.append(digits, 0, point);
  out += '.';
  out.append(digits, point, std::string::npos);
  return out;
}

std::string Value::ToString() const {
  switch (kind) {
    case Kind::kMissing:
      return "<missing>";
    case Kind::kBool:
      return boolean ? "true" : "false";
    case Kind::kNumber:
      return number.ToString();
    case Kind::kString:
      return absl::StrCat("\"", std::string(text), "\"");
  }
  return "?";
}

std::string TypeName(Type type) {
  switch (type) {
    case Type::kBool:
      return "bool";
    case Type::kNumber:
      return "number";
    case Type::kString:
      return "string";
    case Type::kNumberList:
      return "list of numbers";
    case Type::kStringList:
      return "list of strings";
    case Type::kBoolList:
      return "list of booleans";
    case Type::kEmptyList:
      return "empty list";
    case Type::kDynamic:
      return "dynamic";
  }
  return "?";
}

std::string_view CompareOpText(CompareOp op) {
  switch (op) {
    case CompareOp::kEq:
      return "==";
    case CompareOp::kNe:
      return "!=";
    case CompareOp::kLt:
      return "<";
    case CompareOp::kLe:
      return "<=";
    case CompareOp::kGt:
      return ">";
    case CompareOp::kGe:
      return ">=";
    case CompareOp::kIn:
      return "in";
  }
  return "?";
}

// ---- Lexer --------------------------------------------------------------------------------------

namespace {

enum class Tok {
  kIdent,
  kNumber,
  kString,
  kTrue,
  kFalse,
  kAnd,
  kOr,
  kNot,
  kIn,
  kCmp,
  kLParen,
  kRParen,
  kLBracket,
  kRBracket,
  kComma,
  kEnd
};

struct Token {
  Tok kind;
  std::string text;  // identifier, number text, unescaped string, operator
  size_t pos;
  size_t end;
};

absl::Status ErrorAt(size_t pos, std::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat(std::string(what), " at character ", std::to_string(pos + 1)));
}

bool IsIdentStart(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool IsIdentChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.';
}
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

absl::StatusOr<std::vector<Token>> Tokenize(std::string_view s) {
  std::vector<Token> out;
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      ++i;
      continue;
    }
    const size_t start = i;
    if (IsIdentStart(c)) {
      while (i < s.size() && IsIdentChar(s[i])) ++i;
      std::string word(s.substr(start, i - start));
      if (word.back() == '.' || word.find("..") != std::string::npos) {
        return ErrorAt(start, absl::StrCat("malformed field name '", word, "'"));
      }
      Tok kind = Tok::kIdent;
      if (word == "and") kind = Tok::kAnd;
      if (word == "or") kind = Tok::kOr;
      if (word == "not") kind = Tok::kNot;
      if (word == "in") kind = Tok::kIn;
      if (word == "true") kind = Tok::kTrue;
      if (word == "false") kind = Tok::kFalse;
      out.push_back({kind, std::move(word), start, i});
      continue;
    }
    if (IsDigit(c) || (c == '-' && i + 1 < s.size() && IsDigit(s[i + 1]))) {
      ++i;
      bool dot = false;
      while (i < s.size() && (IsDigit(s[i]) || (s[i] == '.' && !dot))) {
        dot = dot || s[i] == '.';
        ++i;
      }
      if (i < s.size() && IsIdentStart(s[i])) return ErrorAt(start, "malformed number");
      out.push_back({Tok::kNumber, std::string(s.substr(start, i - start)), start, i});
      continue;
    }
    if (c == '"' || c == '\'') {
      ++i;
      std::string text;
      while (i < s.size() && s[i] != c) {
        if (s[i] == '\\' && i + 1 < s.size()) {
          ++i;
          text.push_back(s[i] == 'n' ? '\n' : (s[i] == 't' ? '\t' : s[i]));
        } else {
          text.push_back(s[i]);
        }
        ++i;
      }
      if (i >= s.size()) return ErrorAt(start, "unterminated string");
      ++i;
      out.push_back({Tok::kString, std::move(text), start, i});
      continue;
    }
    const std::string_view two = s.substr(i, 2);
    if (two == "==" || two == "!=" || two == "<=" || two == ">=") {
      out.push_back({Tok::kCmp, std::string(two), start, i + 2});
      i += 2;
      continue;
    }
    if (two == "&&" || two == "||") {
      out.push_back({two == "&&" ? Tok::kAnd : Tok::kOr, std::string(two), start, i + 2});
      i += 2;
      continue;
    }
    Tok kind;
    switch (c) {
      case '<':
      case '>':
        kind = Tok::kCmp;
        break;
      case '!':
        kind = Tok::kNot;
        break;
      case '(':
        kind = Tok::kLParen;
        break;
      case ')':
        kind = Tok::kRParen;
        break;
      case '[':
        kind = Tok::kLBracket;
        break;
      case ']':
        kind = Tok::kRBracket;
        break;
      case ',':
        kind = Tok::kComma;
        break;
      default:
        return ErrorAt(start,
                       absl::StrCat("unknown operator or character '", std::string(1, c), "'"));
    }
    out.push_back({kind, std::string(1, c), start, i + 1});
    ++i;
  }
  out.push_back({Tok::kEnd, "", s.size(), s.size()});
  return out;
}

// ---- Parser -------------------------------------------------------------------------------------

bool IsOperandStart(Tok k) {
  return k == Tok::kIdent || k == Tok::kNumber || k == Tok::kString || k == Tok::kTrue ||
         k == Tok::kFalse || k == Tok::kLParen || k == Tok::kLBracket;
}

class Parser {
 public:
  explicit Parser(const std::vector<Token>& tokens) : tokens_(tokens) {}

  absl::StatusOr<Node> ParseAll() {
    auto root = Or();
    if (!root.ok()) return root.status();
    const Token& t = Peek();
    if (t.kind == Tok::kRParen) return ErrorAt(t.pos, "unbalanced ')'");
    if (t.kind != Tok::kEnd) return ErrorAt(t.pos, absl::StrCat("unexpected '", t.text, "'"));
    return root;
  }

 private:
  const Token& Peek() const { return tokens_[pos_]; }

  static Node Binary(NodeKind kind, Node left, Node right) {
    Node n{.kind = kind};
    n.pos = left.pos;
    n.end = right.end;
    n.children.push_back(std::move(left));
    n.children.push_back(std::move(right));
    return n;
  }

  absl::StatusOr<Node> Or() {
    auto left = And();
    if (!left.ok()) return left;
    Node node = *std::move(left);
    while (Peek().kind == Tok::kOr) {
      ++pos_;
      auto right = And();
      if (!right.ok()) return right;
      node = Binary(NodeKind::kOr, std::move(node), *std::move(right));
    }
    return node;
  }

  absl::StatusOr<Node> And() {
    auto left = Not();
    if (!left.ok()) return left;
    Node node = *std::move(left);
    while (Peek().kind == Tok::kAnd) {
      ++pos_;
      auto right = Not();
      if (!right.ok()) return right;
      node = Binary(NodeKind::kAnd, std::move(node), *std::move(right));
    }
    return node;
  }

  absl::StatusOr<Node> Not() {
    if (depth_ >= kMaxDepth) return ErrorAt(Peek().pos, "expression nested too deeply");
    ++depth_;
    absl::StatusOr<Node> result;
    if (Peek().kind == Tok::kNot) {
      const size_t start = Peek().pos;
      ++pos_;
      auto child = Not();
      if (child.ok()) {
        Node n{.kind = NodeKind::kNot};
        n.pos = start;
        n.end = child->end;
        n.children.push_back(*std::move(child));
        result = std::move(n);
      } else {
        result = child.status();
      }
    } else {
      result = Cmp();
    }
    --depth_;
    return result;
  }

  absl::StatusOr<Node> Cmp() {
    auto left = Value();
    if (!left.ok()) return left;
    const Token& t = Peek();
    if (t.kind != Tok::kCmp && t.kind != Tok::kIn) return left;
    CompareOp op = CompareOp::kIn;
    if (t.text == "==") op = CompareOp::kEq;
    if (t.text == "!=") op = CompareOp::kNe;
    if (t.text == "<") op = CompareOp::kLt;
    if (t.text == "<=") op = CompareOp::kLe;
    if (t.text == ">") op = CompareOp::kGt;
    if (t.text == ">=") op = CompareOp::kGe;
    ++pos_;
    auto right = Value();
    if (!right.ok()) return right;
    if (Peek().kind == Tok::kCmp || Peek().kind == Tok::kIn || Peek().kind == Tok::kNot) {
      return ErrorAt(Peek().pos, "comparisons cannot be chained; use && or parentheses");
    }
    Node n = Binary(NodeKind::kCompare, *std::move(left), *std::move(right));
    n.op = op;
    return n;
  }

  absl::StatusOr<Node> Literal(const Token& t) {
    Node n{.kind = NodeKind::kLiteral};
    n.pos = t.pos;
    n.end = t.end;
    switch (t.kind) {
      case Tok::kNumber: {
        std::optional<Decimal> d = Decimal::Parse(t.text);
        if (!d) return ErrorAt(t.pos, absl::StrCat("number '", t.text, "' is out of range"));
        n.literal = Value::Number(*d);
        break;
      }
      case Tok::kString:
        // The string itself lives in `text`: a view would dangle once the AST moves.
        n.text = t.text;
        n.literal = Value::String({});
        break;
      case Tok::kTrue:
      case Tok::kFalse:
        n.literal = Value::Bool(t.kind == Tok::kTrue);
        break;
      default:
        return ErrorAt(t.pos, "a list holds numbers, strings or booleans");
    }
    return n;
  }

  absl::Status NoAdjacentOperand() {
    if (IsOperandStart(Peek().kind)) {
      return ErrorAt(Peek().pos, absl::StrCat("missing operator before '", Peek().text, "'"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<Node> Value() {
    const Token& t = Peek();
    switch (t.kind) {
      case Tok::kIdent: {
        ++pos_;
        Node n{.kind = NodeKind::kField};
        n.pos = t.pos;
        n.end = t.end;
        n.text = t.text;
        if (Peek().kind == Tok::kLParen) {
          if (t.text != "customer.tag") {
            return ErrorAt(t.pos, absl::StrCat("'", t.text,
                                               "' is not a function; only customer.tag(\"name\") "
                                               "can be called"));
          }
          ++pos_;
          const Token& arg = Peek();
          if (arg.kind != Tok::kString) {
            return ErrorAt(arg.pos, "customer.tag takes the tag's name as a string");
          }
          ++pos_;
          if (Peek().kind != Tok::kRParen) {
            return ErrorAt(Peek().pos, "customer.tag takes one argument; missing ')'");
          }
          n.kind = NodeKind::kTag;
          n.text = arg.text;
          n.end = Peek().end;
          ++pos_;
        }
        if (auto s = NoAdjacentOperand(); !s.ok()) return s;
        return n;
      }
      case Tok::kNumber:
      case Tok::kString:
      case Tok::kTrue:
      case Tok::kFalse: {
        ++pos_;
        auto n = Literal(t);
        if (!n.ok()) return n;
        if (auto s = NoAdjacentOperand(); !s.ok()) return s;
        return n;
      }
      case Tok::kLParen: {
        const size_t open = t.pos;
        ++pos_;
        if (Peek().kind == Tok::kRParen) return ErrorAt(Peek().pos, "empty parentheses");
        auto inner = Or();
        if (!inner.ok()) return inner;
        if (Peek().kind != Tok::kRParen) return ErrorAt(open, "unbalanced '('");
        inner->pos = open;
        inner->end = Peek().end;
        ++pos_;
        if (auto s = NoAdjacentOperand(); !s.ok()) return s;
        return inner;
      }
      case Tok::kLBracket: {
        Node n{.kind = NodeKind::kList};
        n.pos = t.pos;
        ++pos_;
        if (Peek().kind != Tok::kRBracket) {
          while (true) {
            const Token& v = Peek();
            auto item = Literal(v);
            if (!item.ok()) return item;
            n.items.push_back(*std::move(item));
            ++pos_;
            if (Peek().kind != Tok::kComma) break;
            ++pos_;
          }
        }
        if (Peek().kind != Tok::kRBracket) return ErrorAt(t.pos, "unbalanced '['");
        n.end = Peek().end;
        ++pos_;
        if (auto s = NoAdjacentOperand(); !s.ok()) return s;
        return n;
      }
      case Tok::kEnd:
        return ErrorAt(t.pos, "missing operand at the end");
      case Tok::kRParen:
        return ErrorAt(t.pos, "missing operand before ')'");
      default:
        return ErrorAt(t.pos, absl::StrCat("missing operand before '", t.text, "'"));
    }
  }

  const std::vector<Token>& tokens_;
  size_t pos_ = 0;
  int depth_ = 0;
};

}  // namespace

absl::StatusOr<Expression> Parse(std::string_view text) {
  bool blank = true;
  for (char c : text) blank = blank && std::isspace(static_cast<unsigned char>(c));
  if (blank) return absl::InvalidArgumentError("the condition is empty at character 1");
  if (text.size() > kMaxExpressionLength) {
    return ErrorAt(
        kMaxExpressionLength,
        absl::StrCat("longer than ", std::to_string(kMaxExpressionLength), " characters"));
  }
  auto tokens = Tokenize(text);
  if (!tokens.ok()) return tokens.status();
  Parser parser(*tokens);
  auto root = parser.ParseAll();
  if (!root.ok()) return root.status();
  Expression e{.source = std::string(text), .root = *std::move(root)};
  return e;
}

// ---- Checker ------------------------------------------------------------------------------------

namespace {

bool IsList(Type t) {
  return t == Type::kNumberList || t == Type::kStringList || t == Type::kBoolList ||
         t == Type::kEmptyList;
}
bool IsBoolish(Type t) { return t == Type::kBool || t == Type::kDynamic; }

Type LiteralType(const Value& v) {
  switch (v.kind) {
    case Value::Kind::kBool:
      return Type::kBool;
    case Value::Kind::kNumber:
      return Type::kNumber;
    default:
      return Type::kString;
  }
}

Type ElementType(Type list) {
  switch (list) {
    case Type::kNumberList:
      return Type::kNumber;
    case Type::kStringList:
      return Type::kString;
    case Type::kBoolList:
      return Type::kBool;
    default:
      return Type::kDynamic;
  }
}

class Checker {
 public:
  Checker(const Expression& e, const Environment& env) : e_(e), env_(env) {}

  absl::Status Visit(Node& n) {
    switch (n.kind) {
      case NodeKind::kLiteral:
        n.type = LiteralType(n.literal);
        return absl::OkStatus();
      case NodeKind::kList: {
        if (n.items.empty()) {
          n.type = Type::kEmptyList;
          return absl::OkStatus();
        }
        const Type first = LiteralType(n.items[0].literal);
        for (Node& item : n.items) {
          item.type = LiteralType(item.literal);
          if (item.type != first) {
            return ErrorAt(item.pos,
                           absl::StrCat("a list holds values of one type: ", TypeName(item.type),
                                        " among ", TypeName(first), " values"));
          }
        }
        n.type = first == Type::kNumber   ? Type::kNumberList
                 : first == Type::kString ? Type::kStringList
                                          : Type::kBoolList;
        return absl::OkStatus();
      }
      case NodeKind::kTag:
        n.type = Type::kDynamic;
        return absl::OkStatus();
      case NodeKind::kField: {
        constexpr std::string_view kTagsPrefix = "customer.tags.";
        if (n.text.rfind(kTagsPrefix, 0) == 0) {
          n.kind = NodeKind::kTag;
          n.text = n.text.substr(kTagsPrefix.size());
          n.type = Type::kDynamic;
          return absl::OkStatus();
        }
        std::optional<FieldInfo> info = env_.Field(n.text);
        if (!info) return ErrorAt(n.pos, absl::StrCat("unknown field '", n.text, "'"));
        n.type = info->type;
        n.slot = info->slot;
        return absl::OkStatus();
      }
      case NodeKind::kNot:
        if (auto s = Visit(n.children[0]); !s.ok()) return s;
        if (!IsBoolish(n.children[0].type)) return NotBool(n.children[0], "'!' needs");
        n.type = Type::kBool;
        return absl::OkStatus();
      case NodeKind::kAnd:
      case NodeKind::kOr:
        for (Node& child : n.children) {
          if (auto s = Visit(child); !s.ok()) return s;
          if (!IsBoolish(child.type)) {
            return NotBool(child, n.kind == NodeKind::kAnd ? "'&&' needs" : "'||' needs");
          }
        }
        n.type = Type::kBool;
        return absl::OkStatus();
      case NodeKind::kCompare:
        return VisitCompare(n);
    }
    return absl::OkStatus();
  }

  absl::Status NotBool(const Node& n, std::string_view who) {
    return ErrorAt(n.pos, absl::StrCat(std::string(who), " a condition, but '", Text(n), "' is a ",
                                       TypeName(n.type)));
  }

  std::string Text(const Node& n) const {
    return e_.source.substr(n.pos, n.end > n.pos ? n.end - n.pos : 0);
  }

  absl::Status VisitCompare(Node& n) {
    Node& l = n.children[0];
    Node& r = n.children[1];
    if (auto s = Visit(l); !s.ok()) return s;
    if (auto s = Visit(r); !s.ok()) return s;
    n.type = Type::kBool;
    if (IsList(l.type)) {
      return ErrorAt(l.pos, "a list can only stand on the right of 'in'");
    }
    if (n.op == CompareOp::kIn) {
      if (!IsList(r.type)) {
        return ErrorAt(r.pos,
                       absl::StrCat("'in' needs a list on its right, not a ", TypeName(r.type)));
      }
      const Type element = ElementType(r.type);
      if (l.type != Type::kDynamic && element != Type::kDynamic && l.type != element) {
        return ErrorAt(n.pos, absl::StrCat("'", Text(l), "' is a ", TypeName(l.type),
                                           " and cannot be in a ", TypeName(r.type)));
      }
      return absl::OkStatus();
    }
    if (IsList(r.type)) {
      return ErrorAt(r.pos, absl::StrCat("a list can only stand on the right of 'in', not of '",
                                         std::string(CompareOpText(n.op)), "'"));
    }
    if (l.type != Type::kDynamic && r.type != Type::kDynamic && l.type != r.type) {
      return ErrorAt(n.pos, absl::StrCat("cannot compare ", TypeName(l.type), " '", Text(l),
                                         "' with ", TypeName(r.type), " '", Text(r), "'"));
    }
    const bool ordering = n.op != CompareOp::kEq && n.op != CompareOp::kNe;
    if (ordering && (l.type == Type::kBool || r.type == Type::kBool)) {
      return ErrorAt(n.pos,
                     absl::StrCat("booleans have no order; '", std::string(CompareOpText(n.op)),
                                  "' needs numbers or strings"));
    }
    return absl::OkStatus();
  }

 private:
  const Expression& e_;
  const Environment& env_;
};

}  // namespace

absl::Status Check(Expression& expression, const Environment& env) {
  Checker checker(expression, env);
  if (auto s = checker.Visit(expression.root); !s.ok()) return s;
  if (!IsBoolish(expression.root.type)) {
    return checker.NotBool(expression.root, "the whole expression must be");
  }
  return absl::OkStatus();
}

namespace {

void CollectRequired(const Node& n, std::string_view field, std::vector<std::string>* out) {
  if (n.kind == NodeKind::kAnd) {
    for (const Node& c : n.children) CollectRequired(c, field, out);
    return;
  }
  if (n.kind != NodeKind::kCompare) return;
  const Node& l = n.children[0];
  const Node& r = n.children[1];
  auto is_field = [&](const Node& x) {
    return x.kind == NodeKind::kField &&
           (x.text == field || absl::StrCat("event.", std::string(x.text)) == field);
  };
  if (n.op == CompareOp::kEq) {
    if (is_field(l) && r.kind == NodeKind::kLiteral && r.literal.kind == Value::Kind::kString) {
      out->push_back(r.text);
    } else if (is_field(r) && l.kind == NodeKind::kLiteral &&
               l.literal.kind == Value::Kind::kString) {
      out->push_back(l.text);
    }
  } else if (n.op == CompareOp::kIn && is_field(l) && r.kind == NodeKind::kList) {
    for (const Node& item : r.items) {
      if (item.literal.kind == Value::Kind::kString) out->push_back(item.text);
    }
  }
}

void CollectTags(const Node& n, std::vector<std::string>* out) {
  constexpr std::string_view kTagsPrefix = "customer.tags.";
  if (n.kind == NodeKind::kTag) {
    out->push_back(n.text);
  } else if (n.kind == NodeKind::kField && n.text.rfind(kTagsPrefix, 0) == 0) {
    out->push_back(n.text.substr(kTagsPrefix.size()));  // as Check() will read it
  }
  for (const Node& c : n.children) CollectTags(c, out);
}

}  // namespace

std::vector<std::string> TagNames(const Expression& expression) {
  std::vector<std::string> out;
  CollectTags(expression.root, &out);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::vector<std::string> RequiredValues(const Expression& expression, std::string_view field) {
  std::vector<std::string> out;
  CollectRequired(expression.root, field, &out);
  return out;
}

// ---- Program ------------------------------------------------------------------------------------

struct Program::Instr {
  enum class Op { kConst, kField, kTag, kList, kNot, kAnd, kOr, kCmp, kIn, kTruthy };
  Op op;
  int a = -1;
  int b = -1;
  int slot = -1;
  CompareOp cmp = CompareOp::kEq;
  Value::Kind const_kind = Value::Kind::kMissing;
  bool boolean = false;
  Decimal number;
  std::string text;  // string constant or tag name
  // kList: the literals, by kind (only one kind is non-empty).
  std::vector<Decimal> numbers;
  std::vector<std::string> strings;  // sorted
  std::vector<bool> bools;
  // For explanations: the source of the comparison.
  size_t pos = 0;
  size_t end = 0;
};

Program::Program() = default;
Program::~Program() = default;

namespace {

using Instr = Program::Instr;

bool IsCondition(const Node& n) {
  return n.kind == NodeKind::kNot || n.kind == NodeKind::kAnd || n.kind == NodeKind::kOr ||
         n.kind == NodeKind::kCompare;
}

// Appends the instructions of `n` to `code` and returns its index. Children come first, so the
// root is last.
int Emit(const Node& n, std::vector<Instr>& code, bool as_condition) {
  Instr in{.op = Instr::Op::kConst};
  in.pos = n.pos;
  in.end = n.end;
  switch (n.kind) {
    case NodeKind::kLiteral:
      in.op = Instr::Op::kConst;
      in.const_kind = n.literal.kind;
      in.boolean = n.literal.boolean;
      in.number = n.literal.number;
      in.text = n.text;
      break;
    case NodeKind::kList:
      in.op = Instr::Op::kList;
      for (const Node& item : n.items) {
        if (item.literal.kind == Value::Kind::kNumber) in.numbers.push_back(item.literal.number);
        if (item.literal.kind == Value::Kind::kString) in.strings.push_back(item.text);
        if (item.literal.kind == Value::Kind::kBool) in.bools.push_back(item.literal.boolean);
      }
      std::sort(in.strings.begin(), in.strings.end());
      break;
    case NodeKind::kField:
      in.op = Instr::Op::kField;
      in.slot = n.slot;
      in.text = n.text;
      break;
    case NodeKind::kTag:
      in.op = Instr::Op::kTag;
      in.text = n.text;
      break;
    case NodeKind::kNot:
      in.op = Instr::Op::kNot;
      in.a = Emit(n.children[0], code, true);
      break;
    case NodeKind::kAnd:
    case NodeKind::kOr:
      in.op = n.kind == NodeKind::kAnd ? Instr::Op::kAnd : Instr::Op::kOr;
      in.a = Emit(n.children[0], code, true);
      in.b = Emit(n.children[1], code, true);
      break;
    case NodeKind::kCompare:
      in.op = n.op == CompareOp::kIn ? Instr::Op::kIn : Instr::Op::kCmp;
      in.cmp = n.op;
      in.a = Emit(n.children[0], code, false);
      in.b = Emit(n.children[1], code, false);
      break;
  }
  code.push_back(std::move(in));
  int index = static_cast<int>(code.size()) - 1;
  if (as_condition && !IsCondition(n)) {
    // A value standing where a condition is expected (a boolean field or tag).
    Instr truthy{.op = Instr::Op::kTruthy};
    truthy.a = index;
    truthy.pos = n.pos;
    truthy.end = n.end;
    code.push_back(std::move(truthy));
    index = static_cast<int>(code.size()) - 1;
  }
  return index;
}

bool CompareValues(CompareOp op, const Value& l, const Value& r) {
  if (l.kind == Value::Kind::kMissing || r.kind == Value::Kind::kMissing) return false;
  if (l.kind != r.kind) return false;
  int c = 0;
  switch (l.kind) {
    case Value::Kind::kNumber:
      c = Decimal::Compare(l.number, r.number);
      break;
    case Value::Kind::kString:
      c = l.text.compare(r.text);
      break;
    case Value::Kind::kBool:
      if (op != CompareOp::kEq && op != CompareOp::kNe) return false;
      c = l.boolean == r.boolean ? 0 : 1;
      break;
    case Value::Kind::kMissing:
      return false;
  }
  switch (op) {
    case CompareOp::kEq:
      return c == 0;
    case CompareOp::kNe:
      return c != 0;
    case CompareOp::kLt:
      return c < 0;
    case CompareOp::kLe:
      return c <= 0;
    case CompareOp::kGt:
      return c > 0;
    case CompareOp::kGe:
      return c >= 0;
    case CompareOp::kIn:
      return false;
  }
  return false;
}

bool InList(const Value& v, const Instr& list) {
  switch (v.kind) {
    case Value::Kind::kNumber:
      for (const Decimal& d : list.numbers) {
        if (Decimal::Compare(d, v.number) == 0) return true;
      }
      return false;
    case Value::Kind::kString:
      return std::binary_search(
          list.strings.begin(), list.strings.end(), v.text,
          [](const auto& a, const auto& b) { return std::string_view(a) < std::string_view(b); });
    case Value::Kind::kBool:
      for (bool b : list.bools) {
        if (b == v.boolean) return true;
      }
      return false;
    case Value::Kind::kMissing:
      return false;
  }
  return false;
}

std::string ListText(const Instr& list) {
  std::string out = "[";
  auto sep = [&] {
    if (out.size() > 1) out += ", ";
  };
  for (const Decimal& d : list.numbers) {
    sep();
    out += d.ToString();
  }
  for (const std::string& s : list.strings) {
    sep();
    out += "\"" + s + "\"";
  }
  for (bool b : list.bools) {
    sep();
    out += b ? "true" : "false";
  }
  return out + "]";
}

}  // namespace

absl::StatusOr<std::shared_ptr<const Program>> Program::Compile(const Expression& checked) {
  std::shared_ptr<Program> program(new Program());
  program->source_ = checked.source;
  program->root_ = Emit(checked.root, program->code_, true);
  program->tags_ = TagNames(checked);
  return std::shared_ptr<const Program>(std::move(program));
}

Value Program::Load(int index, const Activation& activation) const {
  const Instr& in = code_[static_cast<size_t>(index)];
  switch (in.op) {
    case Instr::Op::kConst:
      switch (in.const_kind) {
        case Value::Kind::kBool:
          return Value::Bool(in.boolean);
        case Value::Kind::kNumber:
          return Value::Number(in.number);
        case Value::Kind::kString:
          return Value::String(in.text);
        case Value::Kind::kMissing:
          return Value::Missing();
      }
      return Value::Missing();
    case Instr::Op::kField:
      return activation.Slot(in.slot);
    case Instr::Op::kTag:
      return activation.Tag(in.text);
    case Instr::Op::kList:
      return Value::Missing();
    default:
      return Value::Bool(Eval(index, activation, nullptr));
  }
}

bool Program::Eval(int index, const Activation& activation, Explanation* trace) const {
  const Instr& in = code_[static_cast<size_t>(index)];
  switch (in.op) {
    case Instr::Op::kNot:
      return !Eval(in.a, activation, trace);
    case Instr::Op::kAnd:
      return Eval(in.a, activation, trace) && Eval(in.b, activation, trace);
    case Instr::Op::kOr:
      return Eval(in.a, activation, trace) || Eval(in.b, activation, trace);
    case Instr::Op::kCmp: {
      const Value l = Load(in.a, activation);
      const Value r = Load(in.b, activation);
      const bool result = CompareValues(in.cmp, l, r);
      if (trace != nullptr) {
        trace->observations.push_back(
            {source_.substr(in.pos, in.end - in.pos), l.ToString(), r.ToString(), result});
      }
      return result;
    }
    case Instr::Op::kIn: {
      const Value l = Load(in.a, activation);
      const Instr& list = code_[static_cast<size_t>(in.b)];
      const bool result = InList(l, list);
      if (trace != nullptr) {
        trace->observations.push_back(
            {source_.substr(in.pos, in.end - in.pos), l.ToString(), ListText(list), result});
      }
      return result;
    }
    case Instr::Op::kTruthy: {
      const Value v = Load(in.a, activation);
      const bool result = v.kind == Value::Kind::kBool && v.boolean;
      if (trace != nullptr) {
        trace->observations.push_back(
            {source_.substr(in.pos, in.end - in.pos), v.ToString(), "", result});
      }
      return result;
    }
    default: {
      const Value v = Load(index, activation);
      return v.kind == Value::Kind::kBool && v.boolean;
    }
  }
}

bool Program::Matches(const Activation& activation) const {
  return Eval(root_, activation, nullptr);
}

Explanation Program::Explain(const Activation& activation) const {
  Explanation e;
  e.result = Eval(root_, activation, &e);
  if (!e.result) {
    for (const Observation& o : e.observations) {
      if (!o.result) {
        e.failed_condition = o.condition;
        break;
      }
    }
  }
  return e;
}

absl::StatusOr<std::shared_ptr<const Program>> CompileExpression(std::string_view text,
                                                                 const Environment& env) {
  auto parsed = Parse(text);
  if (!parsed.ok()) return parsed.status();
  if (auto s = Check(*parsed, env); !s.ok()) return s;
  return Program::Compile(*parsed);
}

}  // namespace mkt::expr
