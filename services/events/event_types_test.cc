#include "services/events/event_types.h"

#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "libs/core/money.h"
#include "libs/core/status.h"

namespace mkt::events {
namespace {

using ::testing::HasSubstr;

pb::BusinessEvent Spend() {
  pb::BusinessEvent e;
  e.set_source("card");
  e.set_source_event_id("tx-1");
  e.set_event_type("credit_card.spend");
  e.set_customer_id("c-1");
  e.set_org_id("bank-a");
  e.mutable_occurred_at()->set_seconds(1'790'000'000);
  e.set_amount_fen(12345);
  (*e.mutable_attributes())["channel"] = "QR";
  return e;
}

class EventTypesTest : public ::testing::Test {
 protected:
  EventTypesTest() { registry_.Load(DefaultEventTypes()); }
  std::string Reject(const pb::BusinessEvent& e) {
    auto v = registry_.Validate(e, "env-1");
    EXPECT_FALSE(v.ok());
    return v.ok() ? "" : std::string(v.status().message());
  }
  EventTypeRegistry registry_;
};

TEST_F(EventTypesTest, SeedsTheTwelveBusinessEventsAndTwoReversals) {
  EXPECT_EQ(DefaultEventTypes().size(), 14u);
  for (const auto& t : DefaultEventTypes()) EXPECT_TRUE(CheckEventType(t).ok()) << t.name();
}

TEST_F(EventTypesTest, AValidEventIsTyped) {
  auto v = registry_.Validate(Spend(), "env-1");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->event_key, "card:tx-1");
  EventActivation activation(*v, nullptr);
  auto info = registry_.Find("credit_card.spend");
  EXPECT_EQ(activation.Slot(info->Field("channel")->slot).text, "QR");
  EXPECT_EQ(activation.Slot(kSlotAmount).number.units, 12345);
}

TEST_F(EventTypesTest, ConditionsReadTheCustomersTagsAsTheRulesOrgSeesThem) {
  auto v = registry_.Validate(Spend(), "env-1");
  ASSERT_TRUE(v.ok()) << v.status();
  TagSnapshot tags;
  tags.Put(v->org_id, v->customer_id, "age", TagValue::Number(30));
  tags.Put(v->org_id, v->customer_id, "vip", TagValue::Bool(true));
  tags.Put(v->org_id, v->customer_id, "opened", TagValue::Text("2026-03-01"));
  tags.Put("another-bank", v->customer_id, "segment", TagValue::Text("gold"));
  tags.Put(v->org_id, "another-customer", "segment", TagValue::Text("gold"));
  EventActivation activation(*v, &tags, v->org_id);  // a rule of the event's bank
  auto info = registry_.Find("credit_card.spend");
  const auto holds = [&](const std::string& condition) {
    auto program = expr::CompileExpression(condition, *info);
    EXPECT_TRUE(program.ok()) << condition << ": " << program.status();
    return program.ok() && (*program)->Matches(activation);
  };
  EXPECT_TRUE(holds("customer.tag('age') < 35 && customer.tag('vip')"));
  EXPECT_TRUE(holds("customer.tag('opened') >= '2026-01-01'"));
  EXPECT_FALSE(holds("customer.tag('segment') == 'gold'"));  // another org's, another customer's
  EXPECT_FALSE(holds("customer.tag('age') >= 35"));
  EXPECT_FALSE(holds("customer.tag('unknown') < 35"));
  EventActivation without(*v, nullptr);
  EXPECT_EQ(without.Tag("age").kind, expr::Value::Kind::kMissing);

  // The tag file's table answers per org what it holds for the customers asked.
  InMemoryCustomerTags table;
  table.Set("c-1", "age", TagValue::Number(30));
  table.Set("c-2", "age", TagValue::Number(40));
  TagQueries queries;
  queries["bank-a"].customers = {"c-1", "c-3"};
  queries["bank-a"].tags = {"age", "vip"};
  TagSnapshot fetched;
  ASSERT_TRUE(table.Fetch(queries, fetched).ok());
  EXPECT_EQ(fetched.size(), 1u);
  ASSERT_NE(fetched.Find("bank-a", "c-1", "age"), nullptr);
  EXPECT_EQ(*fetched.Find("bank-a", "c-1", "age"), TagValue::Number(30));
}

TEST_F(EventTypesTest, WhatDoesNotFitIsRejectedWithAReason) {
  pb::BusinessEvent e = Spend();
  e.set_event_type("card.swallowed");
  EXPECT_THAT(Reject(e), HasSubstr("unknown event type"));
  e = Spend();
  e.set_amount_fen(0);
  EXPECT_THAT(Reject(e), HasSubstr("needs amount_fen > 0"));
  e = Spend();
  (*e.mutable_attributes())["channel"] = "FAX";
  EXPECT_THAT(Reject(e), HasSubstr("not one of its enum values"));
  e = Spend();
  (*e.mutable_attributes())["colour"] = "red";
  EXPECT_THAT(Reject(e), HasSubstr("not in the schema"));
  e = Spend();
  e.set_event_type("loan.disbursed");
  e.clear_attributes();
  EXPECT_THAT(Reject(e), HasSubstr("required attribute contract_id"));
  (*e.mutable_attributes())["contract_id"] = "K1";
  (*e.mutable_attributes())["tenor_months"] = "twelve";
  EXPECT_THAT(Reject(e), HasSubstr("is not an integer"));
  e = Spend();
  e.clear_customer_id();
  EXPECT_THAT(Reject(e), HasSubstr("customer_id"));
}

// Text PostgreSQL cannot hold (a NUL cuts a libpq parameter short, jsonb refuses \u0000) would
// fail the whole batch's transaction for ever: such an event is refused here, naming the field.
TEST_F(EventTypesTest, TextWithNulMalformedUtf8OrControlCharactersIsRefusedNamingTheField) {
  const std::string nul("c-\0-1", 5);
  struct Case {
    const char* field;
    std::function<void(pb::BusinessEvent&)> spoil;
    const char* want;
  };
  const std::vector<Case> cases = {
      {"customer_id", [&](auto& e) { e.set_customer_id(nul); }, "customer_id contains a NUL"},
      {"source_event_id", [&](auto& e) { e.set_source_event_id(nul); },
       "source_event_id contains a NUL"},
      {"source", [&](auto& e) { e.set_source(nul); }, "source contains a NUL"},
      {"org_id", [&](auto& e) { e.set_org_id(nul); }, "org_id contains a NUL"},
      {"product_code", [&](auto& e) { e.set_product_code(nul); }, "product_code contains a NUL"},
      {"event_type", [&](auto& e) { e.set_event_type("credit_card.spend" + nul); },
       "event_type contains a NUL"},
      {"attributes.merchant_category",
       [&](auto& e) { (*e.mutable_attributes())["merchant_category"] = "caf" + nul; },
       "attribute merchant_category contains a NUL character (U+0000) at byte 5"},
      {"attributes.channel", [&](auto& e) { (*e.mutable_attributes())["channel"] = "QR" + nul; },
       "attribute channel contains a NUL"},
      {"attributes", [&](auto& e) { (*e.mutable_attributes())["chan" + nul] = "QR"; },
       "an attribute name contains a NUL"},
      {"customer_id", [](auto& e) { e.set_customer_id("c-\xff-1"); },
       "customer_id is not well-formed UTF-8"},
      {"customer_id", [](auto& e) { e.set_customer_id("c-\xc0\xaf"); },  // overlong '/'
       "customer_id is not well-formed UTF-8"},
      {"product_code", [](auto& e) { e.set_product_code("\xed\xa0\x80"); },  // a surrogate
       "product_code is not well-formed UTF-8"},
      {"attributes.merchant_category",
       [](auto& e) { (*e.mutable_attributes())["merchant_category"] = "caf\xe9"; },
       "attribute merchant_category is not well-formed UTF-8"},
      {"customer_id", [](auto& e) { e.set_customer_id("c-1\n"); },
       "customer_id contains the control character U+000A at byte 3"},
      {"source_event_id", [](auto& e) { e.set_source_event_id("tx\x7f"); },
       "contains the control character U+007F"},
      {"attributes.merchant_category",
       [](auto& e) { (*e.mutable_attributes())["merchant_category"] = "a\x1b[31m"; },
       "attribute merchant_category contains the control character U+001B"},
  };
  for (const Case& c : cases) {
    pb::BusinessEvent e = Spend();
    c.spoil(e);
    auto v = registry_.Validate(e, "env-1");
    ASSERT_FALSE(v.ok()) << c.want;
    EXPECT_THAT(std::string(v.status().message()), HasSubstr(c.want));
    EXPECT_EQ(FieldOf(v.status()), c.field) << c.want;
  }
  auto v = registry_.Validate(Spend(), nul);
  ASSERT_FALSE(v.ok());
  EXPECT_THAT(std::string(v.status().message()), HasSubstr("the envelope's event_id contains"));
}

TEST_F(EventTypesTest, FreeTextAttributesMayHoldLayoutAndAnyLanguage) {
  pb::BusinessEvent e = Spend();
  (*e.mutable_attributes())["merchant_category"] = "餐饮\t美食\r\n第二行 🍜";
  e.set_customer_id("客户-1");
  auto v = registry_.Validate(e, "env-1");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->attributes["merchant_category"], "餐饮\t美食\r\n第二行 🍜");
  // Not in values that are not free text: an enum value with a tab is not one of its values.
  e = Spend();
  (*e.mutable_attributes())["channel"] = "QR\t";
  EXPECT_THAT(Reject(e), HasSubstr("attribute channel contains the control character U+0009"));
}

TEST_F(EventTypesTest, AmountsAreBoundedSoThatTheirSumsCannotOverflow) {
  pb::BusinessEvent e = Spend();
  e.set_amount_fen(kMaxEventAmountFen);
  EXPECT_TRUE(registry_.Validate(e, "env-1").ok());
  e.set_amount_fen(kMaxEventAmountFen + 1);
  EXPECT_THAT(Reject(e), HasSubstr("amount_fen 1000000000000001 is above the largest amount"));
  e.set_amount_fen(std::numeric_limits<int64_t>::max());
  EXPECT_THAT(Reject(e), HasSubstr("amount_fen 9223372036854775807 is above"));
  e.set_amount_fen(-1);
  EXPECT_THAT(Reject(e), HasSubstr("amount_fen cannot be negative"));

  e = Spend();
  e.set_event_type("credit_card.application_approved");
  e.set_amount_fen(0);
  e.clear_attributes();
  (*e.mutable_attributes())["credit_limit_fen"] = "1000000000000000";
  EXPECT_TRUE(registry_.Validate(e, "env-1").ok());
  (*e.mutable_attributes())["credit_limit_fen"] = "1000000000000001";
  EXPECT_THAT(Reject(e), HasSubstr("attribute credit_limit_fen 1000000000000001 is above"));
  (*e.mutable_attributes())["credit_limit_fen"] = "9223372036854775807";
  EXPECT_THAT(Reject(e), HasSubstr("is above the largest amount"));
  (*e.mutable_attributes())["credit_limit_fen"] = "-5";
  EXPECT_THAT(Reject(e), HasSubstr("attribute credit_limit_fen cannot be negative"));
}

TEST_F(EventTypesTest, AnOccurrenceTimeOutsideTimestampRangeIsRefused) {
  pb::BusinessEvent e = Spend();
  e.mutable_occurred_at()->set_seconds(253'402'300'799);  // 9999-12-31T23:59:59Z
  EXPECT_TRUE(registry_.Validate(e, "env-1").ok());
  e.mutable_occurred_at()->set_seconds(253'402'300'800);
  EXPECT_THAT(Reject(e), HasSubstr("occurred_at is not a valid timestamp"));
  e.mutable_occurred_at()->set_seconds(std::numeric_limits<int64_t>::max());
  EXPECT_THAT(Reject(e), HasSubstr("occurred_at is not a valid timestamp"));
  e = Spend();
  e.mutable_occurred_at()->set_nanos(-1);
  EXPECT_THAT(Reject(e), HasSubstr("occurred_at is not a valid timestamp"));
}

TEST_F(EventTypesTest, EnumValuesOfATypeArePrintable) {
  pb::EventType t = DefaultEventTypes()[0];
  t.mutable_attributes(0)->add_enum_values(std::string("x\0y", 3));
  EXPECT_FALSE(CheckEventType(t).ok());
}

TEST_F(EventTypesTest, AReversalNamesItsOriginal) {
  pb::BusinessEvent e = Spend();
  e.set_event_type("credit_card.refunded");
  e.set_source_event_id("rf-1");
  e.clear_attributes();
  (*e.mutable_attributes())["original_event_id"] = "tx-1";
  auto v = registry_.Validate(e, "env");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->reversal, pb::REFUND);
  EXPECT_EQ(v->original_key, "card:tx-1");
}

}  // namespace
}  // namespace mkt::events
