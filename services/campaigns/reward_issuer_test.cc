#include "services/campaigns/reward_issuer.h"

#include "gtest/gtest.h"

namespace mkt::campaigns {
namespace {

namespace rpb = ::marketing::rewards::v1;
namespace cpb = ::marketing::campaigns::v1;

TEST(RewardIssuerTest, CouponBecomesBudgetStockAndCouponLegs) {
  IssueRequest r{.request_id = "p:abc",
                 .org_id = "bank-a",
                 .campaign_id = "cmp_1",
                 .customer_id = "cust-1",
                 .participation_id = "par_1"};
  r.rewards.push_back({.kind = cpb::REWARD_KIND_COUPON,
                       .benefit_template_id = "bt-c",
                       .quantity = 1,
                       .cost_fen = 5000});
  auto t = LedgerTransfersFor(r);
  ASSERT_EQ(t.size(), 3u);
  EXPECT_EQ(t[0].id(), "p:abc:budget-0");
  EXPECT_EQ(t[0].debit().asset(), rpb::BUDGET_FEN);
  EXPECT_EQ(t[0].debit().owner_id(), "cmp_1");
  EXPECT_EQ(t[0].amount(), 5000);
  EXPECT_EQ(t[1].id(), "p:abc:stock-0");
  EXPECT_EQ(t[1].debit().asset(), rpb::STOCK);
  EXPECT_EQ(t[1].debit().owner_kind(), rpb::TEMPLATE);
  EXPECT_EQ(t[1].debit().asset_ref(), "bt-c");
  EXPECT_EQ(t[2].credit().asset(), rpb::COUPON);
  EXPECT_EQ(t[2].credit().owner_id(), "cust-1");
  EXPECT_EQ(t[2].credit().asset_ref(), "bt-c");
}

TEST(RewardIssuerTest, ExchangeSpendsPointsInTheSameBatchAsTheItem) {
  IssueRequest r{.request_id = "p:x",
                 .org_id = "bank-a",
                 .campaign_id = "cmp_1",
                 .customer_id = "cust-1",
                 .spend_points = 800};
  r.rewards.push_back({.kind = cpb::REWARD_KIND_COUPON, .benefit_template_id = "bt-gift"});
  auto t = LedgerTransfersFor(r);
  ASSERT_EQ(t.size(), 3u);
  EXPECT_EQ(t[0].code(), rpb::SPEND);
  EXPECT_EQ(t[0].debit().asset(), rpb::POINTS);
  EXPECT_EQ(t[0].debit().owner_id(), "cust-1");
  EXPECT_EQ(t[0].amount(), 800);
}

TEST(RewardIssuerTest, PointsCarryAnExpiryAndFreeNoPrizeMovesNothing) {
  IssueRequest r{.request_id = "p:y", .org_id = "fed", .campaign_id = "cmp_2", .customer_id = "c"};
  EXPECT_TRUE(LedgerTransfersFor(r).empty());
  r.rewards.push_back({.kind = cpb::REWARD_KIND_POINTS,
                       .benefit_template_id = "bt-p",
                       .quantity = 100,
                       .points_valid_days = 30});
  auto t = LedgerTransfersFor(r);
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0].credit().asset(), rpb::POINTS);
  EXPECT_EQ(t[0].expiry().days_after_grant(), 30);
}

}  // namespace
}  // namespace mkt::campaigns
