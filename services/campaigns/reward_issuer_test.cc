#include "services/campaigns/reward_issuer.h"

#include "gtest/gtest.h"
#include "libs/core/status.h"

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

// The benefits issuer: a claimed coupon is one IssueCoupon (which charges the template's own unit
// cost, stock and holding), so nothing else moves for a free claim.
TEST(CouponIssuePlanTest, FreeClaimIsOneIssueCouponAndNoLedgerLegs) {
  IssueRequest r{.request_id = "p:abc",
                 .org_id = "bank-a",
                 .campaign_id = "cmp_1",
                 .customer_id = "cust-1",
                 .participation_id = "par_1"};
  r.rewards.push_back({.kind = cpb::REWARD_KIND_COUPON,
                       .benefit_template_id = "bt-c",
                       .quantity = 1,
                       .cost_fen = 5000});
  auto plan = CouponIssuePlanFor(r);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_TRUE(plan->holds.empty());
  EXPECT_TRUE(plan->grants.empty());
  ASSERT_EQ(plan->coupons.size(), 1u);
  EXPECT_EQ(plan->coupons[0].request_id(), "p:abc:coupon-0-0");
  EXPECT_EQ(plan->coupons[0].template_id(), "bt-c");
  EXPECT_EQ(plan->coupons[0].customer_id(), "cust-1");
  EXPECT_EQ(plan->coupons[0].campaign_id(), "cmp_1");
  // The campaign's org pays, whoever owns the template.
  EXPECT_EQ(plan->coupons[0].budget_org_id(), r.org_id);
  // Deterministic: a retry sends the same ids.
  EXPECT_EQ(CouponIssuePlanFor(r)->coupons[0].request_id(), plan->coupons[0].request_id());
}

// An exchange holds the points as a pending spend (posted after the coupon, voided if it is
// refused); other rewards hold their budget and are granted after the coupon.
TEST(CouponIssuePlanTest, PaymentAndOtherBudgetsAreHeldPending) {
  IssueRequest r{.request_id = "p:x",
                 .org_id = "bank-a",
                 .campaign_id = "cmp_1",
                 .customer_id = "cust-1",
                 .spend_points = 800,
                 .spend_chances = 2};
  r.rewards.push_back({.kind = cpb::REWARD_KIND_COUPON, .benefit_template_id = "bt-gift"});
  r.rewards.push_back({.kind = cpb::REWARD_KIND_POINTS,
                       .benefit_template_id = "bt-p",
                       .quantity = 50,
                       .cost_fen = 100,
                       .points_valid_days = 30});
  auto plan = CouponIssuePlanFor(r);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->holds.size(), 3u);
  for (const auto& h : plan->holds) {
    EXPECT_TRUE(h.pending()) << h.id();
    EXPECT_EQ(h.timeout_seconds(), kHoldTimeoutSeconds);
  }
  EXPECT_EQ(plan->holds[0].id(), "p:x:hold-points");
  EXPECT_EQ(plan->holds[0].code(), rpb::SPEND);
  EXPECT_EQ(plan->holds[0].debit().asset(), rpb::POINTS);
  EXPECT_EQ(plan->holds[0].debit().owner_id(), "cust-1");
  EXPECT_EQ(plan->holds[0].amount(), 800);
  EXPECT_EQ(plan->holds[1].id(), "p:x:hold-chances");
  EXPECT_EQ(plan->holds[1].debit().asset(), rpb::LOTTERY_CHANCE);
  EXPECT_EQ(plan->holds[2].id(), "p:x:hold-budget-1");
  EXPECT_EQ(plan->holds[2].debit().asset(), rpb::BUDGET_FEN);
  EXPECT_EQ(plan->holds[2].amount(), 100);
  ASSERT_EQ(plan->coupons.size(), 1u);
  EXPECT_EQ(plan->coupons[0].request_id(), "p:x:coupon-0-0");
  // The points reward: the same benefit leg (and id) as the one-batch issuer's, posted.
  ASSERT_EQ(plan->grants.size(), 1u);
  EXPECT_EQ(plan->grants[0].id(), "p:x:benefit-1");
  EXPECT_FALSE(plan->grants[0].pending());
  EXPECT_EQ(plan->grants[0].credit().asset(), rpb::POINTS);
  EXPECT_EQ(plan->grants[0].expiry().days_after_grant(), 30);
}

// An issued coupon cannot be taken back, so a second unit that might be refused after the first
// was issued is refused up front.
TEST(CouponIssuePlanTest, MoreThanOneCouponUnitIsRefusedBeforeAnythingMoves) {
  IssueRequest r{.request_id = "p:y", .org_id = "bank-a", .campaign_id = "c", .customer_id = "u"};
  r.rewards.push_back(
      {.kind = cpb::REWARD_KIND_COUPON, .benefit_template_id = "bt-c", .quantity = 2});
  auto two = CouponIssuePlanFor(r);
  EXPECT_EQ(ReasonOf(two.status()), ::marketing::common::v1::INVALID_ARGUMENT);
  EXPECT_EQ(FieldOf(two.status()), "rewards");
  r.rewards[0].quantity = 1;
  r.rewards.push_back(
      {.kind = cpb::REWARD_KIND_COUPON, .benefit_template_id = "bt-d", .quantity = 1});
  EXPECT_EQ(ReasonOf(CouponIssuePlanFor(r).status()), ::marketing::common::v1::INVALID_ARGUMENT);
}

// IssueCoupon takes request ids of up to 64 characters: a longer one becomes a stable digest.
TEST(CouponIssuePlanTest, LongRequestIdsAreHashedDeterministically) {
  IssueRequest r{.request_id = "p:" + std::string(70, 'a'),
                 .org_id = "bank-a",
                 .campaign_id = "c",
                 .customer_id = "u"};
  r.rewards.push_back({.kind = cpb::REWARD_KIND_COUPON, .benefit_template_id = "bt-c"});
  auto plan = CouponIssuePlanFor(r);
  ASSERT_TRUE(plan.ok()) << plan.status();
  const std::string id = plan->coupons[0].request_id();
  EXPECT_LE(id.size(), 64u);
  EXPECT_EQ(id.rfind("pc.", 0), 0u) << id;
  EXPECT_EQ(CouponIssuePlanFor(r)->coupons[0].request_id(), id);
  r.request_id = "p:" + std::string(70, 'b');
  EXPECT_NE(CouponIssuePlanFor(r)->coupons[0].request_id(), id);
}

TEST(RewardIssuerTest, OnlyBusinessRefusalsSettleAGrantAsRefused) {
  namespace common = ::marketing::common::v1;
  for (auto reason :
       {common::STOCK_EXHAUSTED, common::BUDGET_EXHAUSTED, common::INSUFFICIENT_BALANCE,
        common::ACCOUNT_NOT_FOUND, common::IDEMPOTENCY_KEY_REUSED, common::INVALID_ARGUMENT}) {
    EXPECT_TRUE(IsBusinessRefusal(reason)) << common::ErrorReason_Name(reason);
  }
  // Outcomes that are not known yet are retried under the same request id.
  for (auto reason : {common::DEPENDENCY_UNAVAILABLE, common::RATE_LIMITED,
                      common::ERROR_REASON_UNSPECIFIED, common::CONFLICT}) {
    EXPECT_FALSE(IsBusinessRefusal(reason)) << common::ErrorReason_Name(reason);
  }
}

TEST(RewardIssuerTest, EachRewardKindHasItsLedgerAsset) {
  EXPECT_EQ(AssetOf(cpb::REWARD_KIND_POINTS), rpb::POINTS);
  EXPECT_EQ(AssetOf(cpb::REWARD_KIND_CASH_FEN), rpb::CASH_FEN);
  EXPECT_EQ(AssetOf(cpb::REWARD_KIND_LOTTERY_CHANCE), rpb::LOTTERY_CHANCE);
  EXPECT_EQ(AssetOf(cpb::REWARD_KIND_COUPON), rpb::COUPON);
}

}  // namespace
}  // namespace mkt::campaigns
