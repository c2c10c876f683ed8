#include "services/campaigns/trigger_expression.h"

#include <string>

#include "gtest/gtest.h"
#include "libs/core/status.h"

namespace mkt::campaigns {
namespace {

TEST(CampaignTriggerExpressionTest, AcceptsWellFormedConditions) {
  for (const char* e : {
           "event.type == \"deposit\"",
           "event.type == 'deposit' && event.amount_fen >= 1000000",
           "event.type == \"card_spend\" and not event.refund",
           "event.type == 'qr_pay' && event.channel in [\"mobile_banking\", \"wecom\"]",
           "event.type == 'deposit' && !(event.amount_fen < 100)",
           "event.type == 'deposit' && event.balance_delta_fen > -500",
           "event.type == 'card.opened' && event.first_time",
           "event.type == 'deposit' && event.tags in []",
           // The pin may be written either way round, unprefixed, or as a one-element list.
           "'deposit' == event.type && amount_fen > 1",
           "type in ['loan.disbursed'] && product_code in ['LOAN_A', 'LOAN_B']",
           // The customer's tags, as documented in libs/expr/expr.h, in both spellings.
           "event.type == 'loan.disbursed' && customer.tag(\"age\") < 35",
           "event.type == 'deposit' && customer.tags.vip == true",
           // Line breaks between tokens; non-ASCII text inside string literals.
           "event.type == 'deposit'\n\t&& event.merchant == '\xE7\xA6\x8F'",
       }) {
    EXPECT_TRUE(CheckTriggerExpression(e).ok()) << e << ": " << CheckTriggerExpression(e);
  }
}

TEST(CampaignTriggerExpressionTest, RefusesMalformedConditionsNamingWhereAndWhat) {
  struct Case {
    std::string expression;
    const char* message_part;
  };
  for (const Case& c : {
           Case{"", "needs a trigger expression"},
           Case{"   ", "needs a trigger expression"},
           Case{"(event.amount_fen > 1", "unbalanced '('"},
           Case{"event.amount_fen > 1)", "unbalanced ')'"},
           Case{"event.amount_fen >= >= 1", "missing operand before '>='"},
           Case{"event.amount_fen = 1", "unknown operator or character '='"},
           Case{"event.a & event.b", "unknown operator or character '&'"},
           Case{"event.a ; drop", "unknown operator or character ';'"},
           Case{"event.amount_fen 1", "missing operator"},
           Case{"event.a ==", "missing operand at the end"},
           Case{"event.a == 1 == 2", "cannot be chained"},
           Case{"()", "empty parentheses"},
           Case{"event.a == \"open", "unterminated string"},
           Case{"event.channel in [\"a\", ", "a list holds"},
           Case{"event..a == 1", "malformed field name"},
           Case{"event.type == 'x' && event.tag('vip')",
                "only customer.tag(\"name\") can be called"},
           Case{"event.type == 'x' && event.amount_fen > 99999999999999999999", "out of range"},
       }) {
    absl::Status s = CheckTriggerExpression(c.expression);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.expression;
    EXPECT_NE(std::string(s.message()).find(c.message_part), std::string::npos)
        << c.expression << " → " << s.message();
    EXPECT_EQ(FieldOf(s), "trigger_expression");
  }
}

// What would reach the database as an unstorable jsonb string ("\u0000") or an operator's
// screen as garbage is refused with its position, before any parsing.
TEST(CampaignTriggerExpressionTest, RefusesNulControlCharactersAndMalformedUtf8) {
  struct Case {
    std::string expression;
    const char* message_part;
  };
  for (const Case& c : {
           // The reviewer's case: "trigger_expression": "event.type == \"a\u0000\"".
           Case{std::string("event.type == \"a\0\"", 18),
                "control character U+0000 in a string literal at character 17"},
           Case{std::string("event.type == 'a'\0", 18), "control character U+0000 at character 18"},
           Case{"event.type == 'a' \x01&& b", "control character U+0001 at character 19"},
           Case{"event.type == 'a\tb'", "inside a string literal (write \\n or \\t instead)"},
           Case{"event.type == 'a\x7f'", "control character U+007F"},
           Case{"event.type == '\xff'", "not well-formed UTF-8 at character 16"},
           Case{"event.type == '\xC0\xAF'", "not well-formed UTF-8"},  // an overlong '/'
           Case{"event.type == 'x' \xEF\xBC\x86\xEF\xBC\x86 event.a",
                "unknown operator or character '\xEF\xBC\x86' (only string literals may hold "
                "non-ASCII text) at character 19"},
       }) {
    absl::Status s = CheckTriggerExpression(c.expression);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.expression;
    EXPECT_NE(std::string(s.message()).find(c.message_part), std::string::npos)
        << c.expression << " → " << s.message();
    EXPECT_EQ(FieldOf(s), "trigger_expression");
  }
}

// The events service turns the campaign into a rule only when the expression pins exactly one
// event type at its top level and type-checks; what can be known without its event-type registry
// is refused here.
TEST(CampaignTriggerExpressionTest, RefusesWhatTheEventsServiceCouldNeverCompile) {
  struct Case {
    const char* expression;
    const char* message_part;
  };
  for (const Case& c : {
           Case{"event.amount_fen >= 100000", "must require one event type"},
           Case{"(event.type == 'a' || event.type == 'b') && event.amount_fen > 1",
                "must require one event type"},
           Case{"!(event.type == 'a')", "must require one event type"},
           Case{"event.type in ['a', 'b']",
                "requires 2 event types; a rule matches events of "
                "exactly one type at character 21"},
           Case{"event.type == 'deposit made'", "no event type can be called \"deposit made\""},
           Case{"event.type == 'x' && event.amount_fen == 'big'", "cannot compare number"},
           Case{"event.type == 'x' && event.product_code > 3", "cannot compare string"},
           Case{"event.type == 'x' && customer.segment == 'vip'",
                "unknown field 'customer.segment' at character 22"},
           Case{"event.type == 'x' && 5", "'&&' needs a condition"},
           Case{"event.type == 'x' && event.level in [1, 'gold']",
                "a list holds values of one type"},
           Case{"event.type == 'x' && event.level == [1]", "a list can only stand on the right"},
       }) {
    absl::Status s = CheckTriggerExpression(c.expression);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.expression;
    EXPECT_NE(std::string(s.message()).find(c.message_part), std::string::npos)
        << c.expression << " → " << s.message();
    EXPECT_EQ(FieldOf(s), "trigger_expression");
  }
}

TEST(CampaignTriggerExpressionTest, ReportsThePositionOfTheProblem) {
  absl::Status s = CheckTriggerExpression("event.a == 1 && event.b $ 2");
  EXPECT_NE(std::string(s.message()).find("at character 25"), std::string::npos) << s.message();
  s = CheckTriggerExpression("event.type == 'deposit made'");
  EXPECT_NE(std::string(s.message()).find("at character 15"), std::string::npos) << s.message();
}

TEST(CampaignTriggerExpressionTest, RefusesTooLongAndTooDeepExpressions) {
  EXPECT_FALSE(CheckTriggerExpression(std::string(3000, 'a')).ok());
  std::string deep(150, '!');
  deep += "event.a";
  EXPECT_FALSE(CheckTriggerExpression(deep).ok());
  std::string nested = std::string(60, '(') + "event.type == 'x'" + std::string(60, ')');
  EXPECT_TRUE(CheckTriggerExpression(nested).ok()) << CheckTriggerExpression(nested);
}

}  // namespace
}  // namespace mkt::campaigns
