#include "libs/expr/expr.h"

#include <map>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mkt::expr {
namespace {

using ::testing::HasSubstr;

// Fields of a loan event: amount_fen (number), product_code (string), first (bool), tenor
// (number, often missing); event.* spells the same fields.
class LoanEnvironment : public Environment {
 public:
  std::optional<FieldInfo> Field(std::string_view name) const override {
    std::string n(name);
    if (n.rfind("event.", 0) == 0) n = n.substr(6);
    if (n == "amount_fen") return FieldInfo{Type::kNumber, 0};
    if (n == "product_code") return FieldInfo{Type::kString, 1};
    if (n == "first") return FieldInfo{Type::kBool, 2};
    if (n == "tenor") return FieldInfo{Type::kNumber, 3};
    if (n == "type") return FieldInfo{Type::kString, 4};
    return std::nullopt;
  }
};

class MapActivation : public Activation {
 public:
  std::map<int, Value> slots;
  std::map<std::string, std::string> string_tags;
  std::map<std::string, int64_t> number_tags;
  Value Slot(int slot) const override {
    auto it = slots.find(slot);
    return it == slots.end() ? Value::Missing() : it->second;
  }
  Value Tag(std::string_view name) const override {
    if (auto it = string_tags.find(std::string(name)); it != string_tags.end()) {
      return Value::String(it->second);
    }
    if (auto it = number_tags.find(std::string(name)); it != number_tags.end()) {
      return Value::Int(it->second);
    }
    return Value::Missing();
  }
};

class ExprTest : public ::testing::Test {
 protected:
  ExprTest() {
    event_.slots[0] = Value::Int(1500000);
    event_.slots[1] = Value::String("LOAN_A");
    event_.slots[2] = Value::Bool(true);
    event_.slots[4] = Value::String("loan.disbursed");
    event_.number_tags["age"] = 30;
    event_.string_tags["city"] = "Hangzhou";
  }

  bool Eval(std::string_view text) {
    auto program = CompileExpression(text, env_);
    EXPECT_TRUE(program.ok()) << text << ": " << program.status();
    if (!program.ok()) return false;
    return (*program)->Matches(event_);
  }

  std::string Error(std::string_view text) {
    auto program = CompileExpression(text, env_);
    EXPECT_FALSE(program.ok()) << text << " compiled";
    return program.ok() ? "" : std::string(program.status().message());
  }

  LoanEnvironment env_;
  MapActivation event_;
};

TEST_F(ExprTest, TheIssueExampleHolds) {
  EXPECT_TRUE(Eval(
      R"(amount_fen >= 1000000 && product_code in ["LOAN_A","LOAN_B"] && customer.tag("age") < 35)"));
  event_.number_tags["age"] = 35;
  EXPECT_FALSE(Eval(
      R"(amount_fen >= 1000000 && product_code in ["LOAN_A","LOAN_B"] && customer.tag("age") < 35)"));
}

TEST_F(ExprTest, AndBindsTighterThanOr) {
  // false && false || true  ==  (false && false) || true
  EXPECT_TRUE(Eval("amount_fen < 0 && amount_fen < 0 || amount_fen > 0"));
  // true || false && false  ==  true || (false && false)
  EXPECT_TRUE(Eval("amount_fen > 0 || amount_fen < 0 && amount_fen < 0"));
  EXPECT_FALSE(Eval("(amount_fen > 0 || amount_fen < 0) && amount_fen < 0"));
  EXPECT_TRUE(Eval("amount_fen > 0 and not amount_fen < 0 or false"));
}

TEST_F(ExprTest, NotBindsLooserThanComparison) {
  EXPECT_TRUE(Eval("!amount_fen == 1"));  // !(amount_fen == 1)
  EXPECT_FALSE(Eval("!!(amount_fen == 1)"));
  EXPECT_FALSE(Eval("not first"));
}

TEST_F(ExprTest, NumbersAreExactDecimals) {
  EXPECT_TRUE(Eval("amount_fen == 1500000.00"));
  EXPECT_TRUE(Eval("amount_fen > 1499999.999999999999"));
  EXPECT_TRUE(Eval("amount_fen < 1500000.000000000001"));
  EXPECT_TRUE(Eval("amount_fen >= -5"));
  EXPECT_TRUE(Eval("0.1 < 0.10000000000000001"));
  EXPECT_EQ(Decimal::Parse("12.50")->ToString(), "12.50");
  EXPECT_EQ(Decimal::Parse("-0.05")->ToString(), "-0.05");
  EXPECT_FALSE(Decimal::Parse("99999999999999999999").has_value());
  EXPECT_THAT(Error("amount_fen > 99999999999999999999"),
              HasSubstr("out of range at character 14"));
}

TEST_F(ExprTest, StringsCompareBytewise) {
  EXPECT_TRUE(Eval("product_code == 'LOAN_A'"));
  EXPECT_TRUE(Eval("product_code < \"LOAN_B\""));
  EXPECT_TRUE(Eval("product_code >= \"LOAN_A\""));
  EXPECT_FALSE(Eval("product_code > \"loan\""));  // upper case sorts first
  EXPECT_TRUE(Eval(R"(product_code != "LOAN_A\"")"));
}

TEST_F(ExprTest, InChecksMembershipByKind) {
  EXPECT_TRUE(Eval("product_code in ['X', 'LOAN_A']"));
  EXPECT_FALSE(Eval("product_code in ['X', 'Y']"));
  EXPECT_FALSE(Eval("product_code in []"));
  EXPECT_TRUE(Eval("amount_fen in [1, 1500000.0]"));
  EXPECT_TRUE(Eval("customer.tag('city') in ['Hangzhou', 'Ningbo']"));
  EXPECT_FALSE(Eval("customer.tag('age') in ['30']"));  // a number tag is not a string
}

TEST_F(ExprTest, MissingValuesMakeComparisonsFalseNotCrash) {
  EXPECT_FALSE(Eval("tenor > 12"));
  EXPECT_FALSE(Eval("tenor <= 12"));
  EXPECT_FALSE(Eval("tenor == 12"));
  EXPECT_FALSE(Eval("tenor != 12"));
  EXPECT_TRUE(Eval("!(tenor > 12)"));
  EXPECT_FALSE(Eval("tenor in [1, 2]"));
  EXPECT_FALSE(Eval("customer.tag('nope') < 35"));
  EXPECT_FALSE(Eval("customer.tags.nope == 'x'"));
  event_.slots.erase(2);
  EXPECT_FALSE(Eval("first"));
  EXPECT_TRUE(Eval("tenor > 12 || amount_fen > 0"));
}

TEST_F(ExprTest, DynamicTagsOfAnotherKindCompareFalse) {
  EXPECT_FALSE(Eval("customer.tag('city') > 3"));
  EXPECT_TRUE(Eval("customer.tags.age >= 18"));
}

TEST_F(ExprTest, TypeErrorsNamePositions) {
  EXPECT_THAT(Error("amount_fen == 'big'"), HasSubstr("cannot compare number 'amount_fen' with "
                                                      "string ''big'' at character 1"));
  EXPECT_THAT(Error("first && amount_fen"), HasSubstr("at character 10"));
  EXPECT_THAT(Error("first && amount_fen"), HasSubstr("is a number"));
  EXPECT_THAT(Error("amount_fen > 1 && colour == 'red'"),
              HasSubstr("unknown field 'colour' at character 19"));
  EXPECT_THAT(Error("first < true"), HasSubstr("booleans have no order"));
  EXPECT_THAT(Error("product_code in [1, 2]"), HasSubstr("cannot be in a list of numbers"));
  EXPECT_THAT(Error("[1] == amount_fen"), HasSubstr("at character 1"));
  EXPECT_THAT(Error("amount_fen in ['a', 1]"), HasSubstr("one type"));
  EXPECT_THAT(Error("amount_fen in ['a', 1]"), HasSubstr("at character 21"));
  EXPECT_THAT(Error("amount_fen"), HasSubstr("must be a condition"));
  EXPECT_THAT(Error("product_code == 1 in [1]"),
              ::testing::AllOf(HasSubstr("cannot be chained"), HasSubstr("at character 19")));
}

TEST_F(ExprTest, SyntaxErrorsNamePositions) {
  EXPECT_THAT(Error("(amount_fen > 1"), HasSubstr("unbalanced '(' at character 1"));
  EXPECT_THAT(Error("amount_fen > 1)"), HasSubstr("unbalanced ')' at character 15"));
  EXPECT_THAT(Error("amount_fen >"), HasSubstr("missing operand at the end at character 13"));
  EXPECT_THAT(Error("amount_fen > 1 &&"), HasSubstr("at character 18"));
  EXPECT_THAT(Error("amount_fen 1"), HasSubstr("missing operator before '1' at character 12"));
  EXPECT_THAT(Error("amount_fen # 1"),
              HasSubstr("unknown operator or character '#' at character 12"));
  EXPECT_THAT(Error("product_code == 'abc"), HasSubstr("unterminated string at character 17"));
  EXPECT_THAT(Error("()"), HasSubstr("empty parentheses at character 2"));
  EXPECT_THAT(Error("   "), HasSubstr("empty"));
  EXPECT_THAT(Error("upper('a') == 'A'"), HasSubstr("not a function"));
  EXPECT_THAT(Error("customer.tag(age) < 3"), HasSubstr("at character 14"));
  EXPECT_THAT(Error("12abc > 1"), HasSubstr("malformed number at character 1"));
  EXPECT_THAT(Error("event..x > 1"), HasSubstr("malformed field name"));
  EXPECT_THAT(Error(std::string(150, '(') + "first" + std::string(150, ')')),
              HasSubstr("nested too deeply"));
  EXPECT_THAT(Error(std::string(2001, ' ') + "x"), HasSubstr("longer than 2000"));
}

// Everything services/campaigns/trigger_expression accepts parses here too (the grammar is a
// superset); a few samples from its tests.
TEST_F(ExprTest, CampaignsShapesParse) {
  for (const char* text : {"event.type == \"deposit\" && event.amount_fen >= 1000000",
                           "not (a == 1) or b in [1, 2, 3]", "x in []", "a.b.c != 'q' and (d or e)",
                           "!flag", "x == -3.5", "x in [true, false]"}) {
    EXPECT_TRUE(Parse(text).ok()) << text << ": " << Parse(text).status();
  }
}

TEST_F(ExprTest, RequiredValuesFindsTheEventType) {
  auto e = Parse("event.type == 'deposit.made' && amount_fen > 1");
  ASSERT_TRUE(e.ok());
  EXPECT_THAT(RequiredValues(*e, "event.type"), ::testing::ElementsAre("deposit.made"));
  auto f = Parse("type in ['a', 'b'] && amount_fen > 1");
  ASSERT_TRUE(f.ok());
  EXPECT_THAT(RequiredValues(*f, "event.type"), ::testing::ElementsAre("a", "b"));
  auto g = Parse("type == 'a' || amount_fen > 1");
  ASSERT_TRUE(g.ok());
  EXPECT_TRUE(RequiredValues(*g, "event.type").empty());
}

TEST_F(ExprTest, AProgramNamesTheTagsItReadsOnceEach) {
  auto program = CompileExpression(
      "customer.tag('segment') == 'vip' || customer.tags.age < 35 && customer.tag('age') > 18 && "
      "amount_fen > 1 && !customer.tag('blocked')",
      env_);
  ASSERT_TRUE(program.ok()) << program.status();
  EXPECT_THAT((*program)->tags(), ::testing::ElementsAre("age", "blocked", "segment"));
  // The same names from the parsed (not yet checked) expression, as the campaigns service asks.
  auto parsed = Parse(
      "customer.tag('segment') == 'vip' || customer.tags.age < 35 && customer.tag('age') > 18 && "
      "amount_fen > 1 && !customer.tag('blocked')");
  ASSERT_TRUE(parsed.ok());
  EXPECT_THAT(TagNames(*parsed), ::testing::ElementsAre("age", "blocked", "segment"));
  auto plain = CompileExpression("amount_fen > 1 && product_code == 'LOAN_A'", env_);
  ASSERT_TRUE(plain.ok());
  EXPECT_TRUE((*plain)->tags().empty());
}

TEST_F(ExprTest, ExplainShowsTheFailingConditionWithValues) {
  auto program = CompileExpression(
      "amount_fen >= 2000000 && product_code in ['LOAN_A'] && customer.tag('age') < 35", env_);
  ASSERT_TRUE(program.ok());
  Explanation e = (*program)->Explain(event_);
  EXPECT_FALSE(e.result);
  ASSERT_EQ(e.observations.size(), 1u);  // && short-circuits
  EXPECT_EQ(e.failed_condition, "amount_fen >= 2000000");
  EXPECT_EQ(e.observations[0].left, "1500000");
  EXPECT_EQ(e.observations[0].right, "2000000");

  event_.slots[0] = Value::Int(3000000);
  event_.number_tags["age"] = 40;
  e = (*program)->Explain(event_);
  EXPECT_FALSE(e.result);
  ASSERT_EQ(e.observations.size(), 3u);
  EXPECT_EQ(e.failed_condition, "customer.tag('age') < 35");
  EXPECT_EQ(e.observations[1].right, "[\"LOAN_A\"]");
  EXPECT_EQ(e.observations[2].left, "40");
  event_.number_tags["age"] = 20;
  EXPECT_TRUE((*program)->Explain(event_).result);
  EXPECT_TRUE((*program)->Explain(event_).failed_condition.empty());
}

}  // namespace
}  // namespace mkt::expr
