// The trigger-condition language of event campaigns: a small expression language over a business
// event's attributes and the customer's tags, e.g.
//
//   amount_fen >= 1000000 && product_code in ["LOAN_A", "LOAN_B"] && customer.tag("age") < 35
//
// Text goes through three stages, so that nothing is interpreted from strings at match time:
//   Parse()   text → AST (syntax errors name the 1-based character where they are);
//   Check()   AST + an Environment (which fields exist, of which type) → typed AST (type errors
//             with positions too);
//   Compile() typed AST → Program: a flat array of nodes with field slots and constants resolved,
//             evaluated against an Activation (the event at hand) without allocation.
//
// Grammar (the campaigns service checks trigger expressions with this parser too, see
// services/campaigns/trigger_expression.h):
//   expr  := or
//   or    := and (("||" | "or") and)*
//   and   := not (("&&" | "and") not)*
//   not   := ("!" | "not") not | cmp
//   cmp   := value (("==" | "!=" | "<" | "<=" | ">" | ">=" | "in") value)?
//   value := field | field "(" string ")" | number | string | "true" | "false" | "(" expr ")"
//            | "[" (literal ("," literal)*)? "]"
// Note that `!` binds looser than a comparison: `!a == b` is `!(a == b)`.
//
// Semantics:
// - Numbers are exact decimals (int64 digits and a scale up to 18): 10 == 10.0, 0.1 + no floats.
// - Strings compare bytewise (==, !=, <, <=, >, >=).
// - A comparison that involves a missing value (an optional attribute the event lacks, a tag the
//   customer does not have) or, for dynamically typed values (tags), values of different kinds,
//   is false. `!` of it is therefore true. A missing boolean field alone is false.
// - `x in [..]` is true when x equals one of the literals.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace mkt::expr {

inline constexpr size_t kMaxExpressionLength = 2000;
inline constexpr int kMaxDepth = 100;

// ---- Values -------------------------------------------------------------------------------------

// An exact decimal: units × 10^-scale.
struct Decimal {
  int64_t units = 0;
  int scale = 0;  // 0..18

  static Decimal Int(int64_t v) { return {v, 0}; }
  // Returns <0, 0, >0 as a is less than, equal to or greater than b (exact).
  static int Compare(const Decimal& a, const Decimal& b);
  // Parses "-12", "3.50"; nullopt when it is not a number or does not fit.
  static std::optional<Decimal> Parse(std::string_view text);
  std::string ToString() const;
};

// A value seen at evaluation. Strings are views into the activation or the program: a Value does
// not outlive the evaluation that produced it.
struct Value {
  enum class Kind { kMissing, kBool, kNumber, kString };
  Kind kind = Kind::kMissing;
  bool boolean = false;
  Decimal number;
  std::string_view text;

  static Value Missing() { return {}; }
  static Value Bool(bool b) {
    Value v;
    v.kind = Kind::kBool;
    v.boolean = b;
    return v;
  }
  static Value Number(Decimal d) {
    Value v;
    v.kind = Kind::kNumber;
    v.number = d;
    return v;
  }
  static Value Int(int64_t i) { return Number(Decimal::Int(i)); }
  static Value String(std::string_view s) {
    Value v;
    v.kind = Kind::kString;
    v.text = s;
    return v;
  }
  // For explanations: `true`, `12.5`, `"LOAN_A"`, `<missing>`.
  std::string ToString() const;
};

// ---- Types and environment ---------------------------------------------------------------------

enum class Type {
  kBool,
  kNumber,
  kString,
  kNumberList,
  kStringList,
  kBoolList,
  kEmptyList,
  kDynamic
};
std::string TypeName(Type type);

// What the checker knows about a field: its type and the slot the Activation serves it from.
struct FieldInfo {
  Type type = Type::kDynamic;
  int slot = 0;
};

// The fields an expression may use. `customer.tag("name")` (and the campaigns-compatible
// spelling `customer.tags.name`) is always allowed, dynamically typed, and served by Tag().
class Environment {
 public:
  virtual ~Environment() = default;
  // Returns the field named `name` (as written: "amount_fen", "event.amount_fen"), or nullopt
  // when there is no such field.
  virtual std::optional<FieldInfo> Field(std::string_view name) const = 0;
};

// The data an expression is evaluated against.
class Activation {
 public:
  virtual ~Activation() = default;
  // Returns the value of field `slot` (as the Environment numbered it), or Missing.
  virtual Value Slot(int slot) const = 0;
  // Returns the customer's tag `name`, or Missing.
  virtual Value Tag(std::string_view name) const = 0;
};

// ---- AST ----------------------------------------------------------------------------------------

enum class NodeKind {
  kLiteral,  // bool, number or string
  kList,     // literal list
  kField,
  kTag,  // customer.tag("x")
  kNot,
  kAnd,
  kOr,
  kCompare,
};

enum class CompareOp { kEq, kNe, kLt, kLe, kGt, kGe, kIn };
std::string_view CompareOpText(CompareOp op);

struct Node {
  NodeKind kind;
  size_t pos = 0;  // 0-based character where it starts
  size_t end = 0;  // one past its last character
  // kLiteral
  Value literal;
  std::string text;  // the literal string / field name / tag name (owned)
  // kList
  std::vector<Node> items;
  // kCompare
  CompareOp op = CompareOp::kEq;
  // kNot: children[0]; kAnd/kOr/kCompare: children[0], children[1]
  std::vector<Node> children;
  // Set by Check().
  Type type = Type::kDynamic;
  int slot = -1;
};

// The result of Parse(): the AST and the text it came from.
struct Expression {
  std::string source;
  Node root;
};

// Parses `text`; INVALID_ARGUMENT "<what> at character N" on a syntax error.
absl::StatusOr<Expression> Parse(std::string_view text);

// Types `expression` against `env`; INVALID_ARGUMENT naming the position on an unknown field, a
// comparison of incompatible types, or a non-boolean condition.
absl::Status Check(Expression& expression, const Environment& env);

// Returns the values the expression requires `field` to equal, when its top level is a
// conjunction containing `field == "v"` or `field in ["v", ...]` (e.g. event.type); empty when
// it does not constrain the field.
std::vector<std::string> RequiredValues(const Expression& expression, std::string_view field);

// Returns the customer tags the expression reads (`customer.tag("x")`, `customer.tags.x`),
// sorted, each once; the expression need not be checked.
std::vector<std::string> TagNames(const Expression& expression);

// ---- Compiled program ---------------------------------------------------------------------------

// One comparison (or boolean field) evaluated while explaining, in evaluation order.
struct Observation {
  std::string condition;  // the source text of the comparison
  std::string left;       // the value seen on the left
  std::string right;      // the value (or list) on the right; "" for a lone boolean field
  bool result = false;
};

struct Explanation {
  bool result = false;
  std::vector<Observation> observations;
  // The first observation that was false on the way to a false result (empty when true).
  std::string failed_condition;
};

class Program {
 public:
  // Compiles a checked expression.
  static absl::StatusOr<std::shared_ptr<const Program>> Compile(const Expression& checked);

  // Returns whether the condition holds for `activation`.
  bool Matches(const Activation& activation) const;
  // Evaluates like Matches() and records every comparison evaluated (short-circuiting as
  // Matches() does), with the values seen.
  Explanation Explain(const Activation& activation) const;

  const std::string& source() const { return source_; }
  // The customer tags the expression reads (`customer.tag("x")`), sorted, each once: what a caller
  // fetches before evaluating it.
  const std::vector<std::string>& tags() const { return tags_; }

  struct Instr;
  ~Program();

 private:
  Program();
  bool Eval(int index, const Activation& activation, Explanation* trace) const;
  Value Load(int index, const Activation& activation) const;

  std::string source_;
  std::vector<std::string> tags_;
  std::vector<Instr> code_;
  int root_ = 0;
};

// Parse + Check + Compile.
absl::StatusOr<std::shared_ptr<const Program>> CompileExpression(std::string_view text,
                                                                 const Environment& env);

}  // namespace mkt::expr
