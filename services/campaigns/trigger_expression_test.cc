#include "services/campaigns/trigger_expression.h"

#include "gtest/gtest.h"
#include "libs/core/status.h"

namespace mkt::campaigns {
namespace {

TEST(CampaignTriggerExpressionTest, AcceptsWellFormedConditions) {
  for (const char* e : {
           "event.type == \"deposit\"",
           "event.type == 'deposit' && event.amount_fen >= 1000000",
           "(event.type == \"card_spend\" || event.type == \"qr_pay\") and not event.refund",
           "event.channel in [\"mobile_banking\", \"wecom\"]",
           "!(event.amount_fen < 100)",
           "event.balance_delta_fen > -500",
           "event.first_time",
           "event.tags in []",
       }) {
    EXPECT_TRUE(CheckTriggerExpression(e).ok()) << e << ": " << CheckTriggerExpression(e);
  }
}

TEST(CampaignTriggerExpressionTest, RefusesMalformedConditionsNamingWhereAndWhat) {
  struct Case {
    const char* expression;
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
}

TEST(CampaignTriggerExpressionTest, RefusesTooLongAndTooDeepExpressions) {
  EXPECT_FALSE(CheckTriggerExpression(std::string(3000, 'a')).ok());
  std::string deep(150, '!');
  deep += "event.a";
  EXPECT_FALSE(CheckTriggerExpression(deep).ok());
  std::string nested = std::string(60, '(') + "event.a" + std::string(60, ')');
  EXPECT_TRUE(CheckTriggerExpression(nested).ok());
}

}  // namespace
}  // namespace mkt::campaigns
