#include "services/events/event_types.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

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
