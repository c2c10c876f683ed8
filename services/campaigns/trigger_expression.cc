#include "services/campaigns/trigger_expression.h"

#include <cctype>
#include <string>
#include <vector>

#include "libs/core/status.h"

namespace mkt::campaigns {
namespace {

enum class Kind {
  kField,
  kNumber,
  kString,
  kBool,
  kOp,
  kLParen,
  kRParen,
  kLBracket,
  kRBracket,
  kComma,
  kEnd
};

struct Token {
  Kind kind;
  std::string text;
  size_t pos;  // 0-based
};

bool IsIdentStart(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool IsIdentChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.';
}

absl::Status ErrorAt(size_t pos, const std::string& what) {
  return InvalidArgument("trigger_expression", what + " at character " + std::to_string(pos + 1));
}

absl::Status Tokenize(std::string_view s, std::vector<Token>* out) {
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
        return ErrorAt(start, "malformed field name '" + word + "'");
      }
      if (word == "and" || word == "or" || word == "not" || word == "in") {
        out->push_back({Kind::kOp, word, start});
      } else if (word == "true" || word == "false") {
        out->push_back({Kind::kBool, word, start});
      } else {
        out->push_back({Kind::kField, word, start});
      }
      continue;
    }
    if (std::isdigit(static_cast<unsigned char>(c)) ||
        (c == '-' && i + 1 < s.size() && std::isdigit(static_cast<unsigned char>(s[i + 1])))) {
      ++i;
      bool dot = false;
      while (i < s.size() &&
             (std::isdigit(static_cast<unsigned char>(s[i])) || (s[i] == '.' && !dot))) {
        dot = dot || s[i] == '.';
        ++i;
      }
      if (i < s.size() && IsIdentStart(s[i])) return ErrorAt(start, "malformed number");
      out->push_back({Kind::kNumber, std::string(s.substr(start, i - start)), start});
      continue;
    }
    if (c == '"' || c == '\'') {
      ++i;
      while (i < s.size() && s[i] != c) {
        if (s[i] == '\\') ++i;
        ++i;
      }
      if (i >= s.size()) return ErrorAt(start, "unterminated string");
      ++i;
      out->push_back({Kind::kString, std::string(s.substr(start, i - start)), start});
      continue;
    }
    auto two = s.substr(i, 2);
    if (two == "==" || two == "!=" || two == "<=" || two == ">=" || two == "&&" || two == "||") {
      out->push_back({Kind::kOp, std::string(two), start});
      i += 2;
      continue;
    }
    switch (c) {
      case '<':
      case '>':
      case '!':
        out->push_back({Kind::kOp, std::string(1, c), start});
        break;
      case '(':
        out->push_back({Kind::kLParen, "(", start});
        break;
      case ')':
        out->push_back({Kind::kRParen, ")", start});
        break;
      case '[':
        out->push_back({Kind::kLBracket, "[", start});
        break;
      case ']':
        out->push_back({Kind::kRBracket, "]", start});
        break;
      case ',':
        out->push_back({Kind::kComma, ",", start});
        break;
      default:
        return ErrorAt(start, "unknown operator or character '" + std::string(1, c) + "'");
    }
    ++i;
  }
  out->push_back({Kind::kEnd, "", s.size()});
  return absl::OkStatus();
}

class Parser {
 public:
  explicit Parser(const std::vector<Token>& tokens) : tokens_(tokens) {}

  absl::Status Parse() {
    MKT_RETURN_IF_ERROR(Or());
    const Token& t = Peek();
    if (t.kind == Kind::kRParen) return ErrorAt(t.pos, "unbalanced ')'");
    if (t.kind != Kind::kEnd) return ErrorAt(t.pos, "unexpected '" + t.text + "'");
    return absl::OkStatus();
  }

 private:
  const Token& Peek() const { return tokens_[pos_]; }
  bool IsOp(const char* a, const char* b = nullptr) const {
    const Token& t = Peek();
    return t.kind == Kind::kOp && (t.text == a || (b != nullptr && t.text == b));
  }

  absl::Status Or() {
    MKT_RETURN_IF_ERROR(And());
    while (IsOp("||", "or")) {
      ++pos_;
      MKT_RETURN_IF_ERROR(And());
    }
    return absl::OkStatus();
  }
  absl::Status And() {
    MKT_RETURN_IF_ERROR(Not());
    while (IsOp("&&", "and")) {
      ++pos_;
      MKT_RETURN_IF_ERROR(Not());
    }
    return absl::OkStatus();
  }
  absl::Status Not() {
    if (++depth_ > 100) return ErrorAt(Peek().pos, "expression nested too deeply");
    absl::Status s;
    if (IsOp("!", "not")) {
      ++pos_;
      s = Not();
    } else {
      s = Cmp();
    }
    --depth_;
    return s;
  }
  absl::Status Cmp() {
    MKT_RETURN_IF_ERROR(Value());
    if (IsOp("==", "!=") || IsOp("<", "<=") || IsOp(">", ">=") || IsOp("in")) {
      ++pos_;
      MKT_RETURN_IF_ERROR(Value());
      const Token& t = Peek();
      if (t.kind == Kind::kOp && t.text != "&&" && t.text != "||" && t.text != "and" &&
          t.text != "or") {
        return ErrorAt(t.pos, "comparisons cannot be chained; use && or parentheses");
      }
    }
    return absl::OkStatus();
  }
  absl::Status Value() {
    const Token& t = Peek();
    switch (t.kind) {
      case Kind::kField:
      case Kind::kNumber:
      case Kind::kString:
      case Kind::kBool:
        ++pos_;
        if (Kind k = Peek().kind; k == Kind::kField || k == Kind::kNumber || k == Kind::kString ||
                                  k == Kind::kBool || k == Kind::kLParen || k == Kind::kLBracket) {
          return ErrorAt(Peek().pos, "missing operator before '" + Peek().text + "'");
        }
        return absl::OkStatus();
      case Kind::kLParen: {
        const size_t open = t.pos;
        ++pos_;
        MKT_RETURN_IF_ERROR(Or());
        if (Peek().kind != Kind::kRParen) return ErrorAt(open, "unbalanced '('");
        ++pos_;
        return absl::OkStatus();
      }
      case Kind::kLBracket: {
        const size_t open = t.pos;
        ++pos_;
        if (Peek().kind != Kind::kRBracket) {
          while (true) {
            const Token& v = Peek();
            if (v.kind != Kind::kNumber && v.kind != Kind::kString && v.kind != Kind::kBool) {
              return ErrorAt(v.pos, "a list holds numbers, strings or booleans");
            }
            ++pos_;
            if (Peek().kind != Kind::kComma) break;
            ++pos_;
          }
        }
        if (Peek().kind != Kind::kRBracket) return ErrorAt(open, "unbalanced '['");
        ++pos_;
        return absl::OkStatus();
      }
      case Kind::kEnd:
        return ErrorAt(t.pos, "missing operand at the end");
      case Kind::kRParen:
        return ErrorAt(t.pos,
                       tokens_.size() > 1 && pos_ > 0 && tokens_[pos_ - 1].kind == Kind::kLParen
                           ? "empty parentheses"
                           : "missing operand before ')'");
      default:
        return ErrorAt(t.pos, "missing operand before '" + t.text + "'");
    }
  }

  const std::vector<Token>& tokens_;
  size_t pos_ = 0;
  int depth_ = 0;
};

}  // namespace

absl::Status CheckTriggerExpression(std::string_view expression) {
  bool blank = true;
  for (char c : expression) blank = blank && std::isspace(static_cast<unsigned char>(c));
  if (blank)
    return InvalidArgument("trigger_expression", "an event campaign needs a trigger expression");
  if (expression.size() > kMaxTriggerExpressionLength) {
    return InvalidArgument(
        "trigger_expression",
        "longer than " + std::to_string(kMaxTriggerExpressionLength) + " characters");
  }
  std::vector<Token> tokens;
  MKT_RETURN_IF_ERROR(Tokenize(expression, &tokens));
  return Parser(tokens).Parse();
}

}  // namespace mkt::campaigns
