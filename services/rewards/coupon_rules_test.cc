#include "services/rewards/coupon_rules.h"

#include <gtest/gtest.h>

#include "libs/core/status.h"

namespace mkt::rewards {
namespace {

namespace cpb = ::marketing::common::v1;

pb::BenefitTemplate Template(pb::BenefitType type) {
  pb::BenefitTemplate t;
  t.set_id("tpl-1");
  t.set_org_id("bank-a");
  t.set_name("coupon");
  t.set_type(type);
  t.set_total_stock(10);
  t.mutable_validity()->set_days_after_grant(30);
  return t;
}

struct DiscountCase {
  const char* name;
  pb::BenefitType type;
  int64_t face;
  int64_t threshold;
  int32_t rate_bp;
  int64_t cap;
  int64_t order;
  int64_t want_fen;  // -1: refused with COUPON_NOT_USABLE
};

class DiscountTest : public ::testing::TestWithParam<DiscountCase> {};

TEST_P(DiscountTest, ComputesTheDiscountAtItsEdges) {
  const DiscountCase& c = GetParam();
  pb::BenefitTemplate t = Template(c.type);
  t.set_face_value(c.face);
  t.set_threshold_fen(c.threshold);
  t.set_discount_rate_bp(c.rate_bp);
  t.set_max_discount_fen(c.cap);
  absl::StatusOr<Discount> d = ComputeDiscount(t, c.order);
  if (c.want_fen < 0) {
    ASSERT_FALSE(d.ok());
    EXPECT_EQ(ReasonOf(d.status()), cpb::COUPON_NOT_USABLE) << d.status();
    return;
  }
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->fen, c.want_fen);
}

INSTANTIATE_TEST_SUITE_P(
    Coupons, DiscountTest,
    ::testing::Values(
        // Cash: face value, never more than the order.
        DiscountCase{"cash_normal", pb::COUPON_CASH, 500, 0, 0, 0, 10000, 500},
        DiscountCase{"cash_order_equals_face", pb::COUPON_CASH, 500, 0, 0, 0, 500, 500},
        DiscountCase{"cash_order_smaller", pb::COUPON_CASH, 500, 0, 0, 0, 320, 320},
        DiscountCase{"cash_zero_order", pb::COUPON_CASH, 500, 0, 0, 0, 0, 0},
        // Threshold (满减): exactly met, one fen short, far above, face above the order.
        DiscountCase{"threshold_exactly_met", pb::COUPON_THRESHOLD, 2000, 10000, 0, 0, 10000, 2000},
        DiscountCase{"threshold_one_fen_short", pb::COUPON_THRESHOLD, 2000, 10000, 0, 0, 9999, -1},
        DiscountCase{"threshold_above", pb::COUPON_THRESHOLD, 2000, 10000, 0, 0, 50000, 2000},
        DiscountCase{"threshold_face_over_order", pb::COUPON_THRESHOLD, 5000, 3000, 0, 0, 4000,
                     4000},
        // Discount: rate, rounded down, capped.
        DiscountCase{"discount_uncapped", pb::COUPON_DISCOUNT, 1, 0, 1500, 0, 10000, 1500},
        DiscountCase{"discount_rounds_down", pb::COUPON_DISCOUNT, 1, 0, 1500, 0, 999, 149},
        DiscountCase{"discount_below_cap", pb::COUPON_DISCOUNT, 1, 0, 1000, 2000, 19999, 1999},
        DiscountCase{"discount_exactly_cap", pb::COUPON_DISCOUNT, 1, 0, 1000, 2000, 20000, 2000},
        DiscountCase{"discount_capped", pb::COUPON_DISCOUNT, 1, 0, 1000, 2000, 1000000, 2000},
        DiscountCase{"discount_tiny_order", pb::COUPON_DISCOUNT, 1, 0, 1000, 2000, 5, 0},
        DiscountCase{"discount_max_order_no_overflow", pb::COUPON_DISCOUNT, 1, 0, 9999, 0,
                     kMaxOrderFen, kMaxOrderFen / 10000 * 9999},
        // Financial coupons and gift vouchers take no money off.
        DiscountCase{"financial_no_money", pb::COUPON_FINANCIAL, 25, 0, 0, 0, 100000, 0},
        DiscountCase{"gift_no_money", pb::GIFT_VOUCHER, 0, 0, 0, 0, 100000, 0},
        // Not coupons at all.
        DiscountCase{"red_envelope_not_a_coupon", pb::RED_ENVELOPE, 100, 0, 0, 0, 1000, -1}),
    [](const ::testing::TestParamInfo<DiscountCase>& info) { return info.param.name; });

TEST(ComputeDiscountTest, FinancialCouponCarriesRateAndProduct) {
  pb::BenefitTemplate t = Template(pb::COUPON_FINANCIAL);
  t.set_face_value(35);
  t.set_product_code("LOAN-CONSUMER");
  auto d = ComputeDiscount(t, 100000);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->rate_bp, 35);
  EXPECT_EQ(d->product_code, "LOAN-CONSUMER");
}

TEST(ComputeDiscountTest, RefusesMalformedAmounts) {
  pb::BenefitTemplate t = Template(pb::COUPON_CASH);
  t.set_face_value(100);
  EXPECT_EQ(ReasonOf(ComputeDiscount(t, -1).status()), cpb::INVALID_ARGUMENT);
  EXPECT_EQ(ReasonOf(ComputeDiscount(t, kMaxOrderFen + 1).status()), cpb::INVALID_ARGUMENT);
}

struct UsageCase {
  const char* name;
  pb::OrderInfo order;
  const char* refused_field;  // "" when usable
};

pb::OrderInfo Order(int64_t amount, std::string channel, std::string merchant, std::string category,
                    std::vector<std::string> products) {
  pb::OrderInfo o;
  o.set_order_id("o-1");
  o.set_amount_fen(amount);
  o.set_channel(channel);
  o.set_merchant_id(merchant);
  o.set_merchant_category(category);
  for (auto& p : products) o.add_products(p);
  return o;
}

TEST(CheckUsageTest, EachRuleRefusesWithItsField) {
  pb::BenefitTemplate t = Template(pb::COUPON_CASH);
  t.set_face_value(100);
  t.mutable_usage()->set_min_order_fen(1000);
  t.mutable_usage()->add_channels("mobile");
  t.mutable_usage()->add_merchants("m-1");
  t.mutable_usage()->add_merchant_categories("5411");
  t.mutable_usage()->add_products("sku-1");
  t.mutable_usage()->add_products("sku-2");
  const std::vector<UsageCase> cases = {
      {"all_fit", Order(1000, "mobile", "m-1", "5411", {"x", "sku-2"}), ""},
      {"below_min", Order(999, "mobile", "m-1", "5411", {"sku-1"}), "order.amount_fen"},
      {"channel", Order(5000, "wecom", "m-1", "5411", {"sku-1"}), "order.channel"},
      {"merchant", Order(5000, "mobile", "m-2", "5411", {"sku-1"}), "order.merchant_id"},
      {"category", Order(5000, "mobile", "m-1", "5812", {"sku-1"}), "order.merchant_category"},
      {"product", Order(5000, "mobile", "m-1", "5411", {"sku-9"}), "order.products"},
  };
  for (const UsageCase& c : cases) {
    absl::Status s = CheckUsage(t, c.order);
    if (std::string(c.refused_field).empty()) {
      EXPECT_TRUE(s.ok()) << c.name << ": " << s;
    } else {
      EXPECT_EQ(ReasonOf(s), cpb::COUPON_NOT_USABLE) << c.name;
      EXPECT_EQ(FieldOf(s), c.refused_field) << c.name;
    }
  }
}

TEST(CheckUsageTest, EmptyListsAllowAnything) {
  pb::BenefitTemplate t = Template(pb::COUPON_CASH);
  t.set_face_value(100);
  EXPECT_TRUE(CheckUsage(t, Order(0, "", "", "", {})).ok());
}

TEST(ValidateOrderTest, RefusesBadInput) {
  EXPECT_EQ(FieldOf(ValidateOrder(Order(-1, "", "", "", {}))), "order.amount_fen");
  EXPECT_EQ(FieldOf(ValidateOrder(Order(kMaxOrderFen + 1, "", "", "", {}))), "order.amount_fen");
  pb::OrderInfo no_id = Order(1, "", "", "", {});
  no_id.clear_order_id();
  EXPECT_EQ(FieldOf(ValidateOrder(no_id)), "order.order_id");
  EXPECT_EQ(FieldOf(ValidateOrder(Order(1, "bad channel", "", "", {}))), "order.channel");
  EXPECT_TRUE(ValidateOrder(Order(0, "mobile", "m", "c", {"p"})).ok());
}

TEST(ValidateTemplateTest, RefusesMalformedTemplates) {
  struct Case {
    const char* name;
    std::function<void(pb::BenefitTemplate&)> mutate;
    const char* field;
  };
  const std::vector<Case> cases = {
      {"ok", [](auto&) {}, ""},
      {"no_id", [](auto& t) { t.clear_id(); }, "template.id"},
      {"no_type", [](auto& t) { t.set_type(pb::BENEFIT_TYPE_UNSPECIFIED); }, "template.type"},
      {"zero_face", [](auto& t) { t.set_face_value(0); }, "template.face_value"},
      {"negative_face", [](auto& t) { t.set_face_value(-5); }, "template.face_value"},
      {"threshold_missing",
       [](auto& t) {
         t.set_type(pb::COUPON_THRESHOLD);
         t.set_threshold_fen(0);
       },
       "template.threshold_fen"},
      {"rate_100pct",
       [](auto& t) {
         t.set_type(pb::COUPON_DISCOUNT);
         t.set_discount_rate_bp(10000);
       },
       "template.discount_rate_bp"},
      {"financial_without_product", [](auto& t) { t.set_type(pb::COUPON_FINANCIAL); },
       "template.product_code"},
      {"no_stock", [](auto& t) { t.set_total_stock(0); }, "template.total_stock"},
      {"negative_cost", [](auto& t) { t.set_unit_cost_fen(-1); }, "template.unit_cost_fen"},
      {"no_validity", [](auto& t) { t.clear_validity(); }, "template.validity"},
      {"bad_channel", [](auto& t) { t.mutable_usage()->add_channels("a b"); },
       "template.usage.channels[0]"},
  };
  for (const Case& c : cases) {
    pb::BenefitTemplate t = Template(pb::COUPON_CASH);
    t.set_face_value(100);
    c.mutate(t);
    absl::Status s = ValidateTemplate(t);
    if (std::string(c.field).empty()) {
      EXPECT_TRUE(s.ok()) << c.name << ": " << s;
    } else {
      EXPECT_EQ(FieldOf(s), c.field) << c.name << ": " << s;
    }
  }
}

TEST(WindowForTest, FixedOrRelative) {
  const absl::Time now = absl::FromUnixSeconds(1'800'000'000);
  pb::Validity rel;
  rel.set_days_after_grant(7);
  EXPECT_EQ(WindowFor(rel, now).until - now, absl::Hours(24 * 7));
  pb::Validity fixed;
  fixed.mutable_fixed_from()->set_seconds(100);
  fixed.mutable_fixed_until()->set_seconds(200);
  EXPECT_EQ(WindowFor(fixed, now).until, absl::FromUnixSeconds(200));
}

}  // namespace
}  // namespace mkt::rewards
