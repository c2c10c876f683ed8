#include "services/campaigns/cost_forecast.h"

#include <limits>
#include <tuple>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/campaigns/test_configs.h"

namespace mkt::campaigns {
namespace {

class CampaignCostForecastTest : public ::testing::Test {
 protected:
  CampaignCostForecastTest() : data_(*ParseReferenceData(test::kReferenceJson)) {}
  pb::CostForecast Forecast(const pb::CampaignConfig& c, int32_t override_bp = 0) {
    return ForecastCost(c, *data_.segments, *data_.benefits, 1000, override_bp);
  }
  ReferenceData data_;
  absl::Time t_ = absl::FromUnixSeconds(1'800'000'000);
};

TEST_F(CampaignCostForecastTest, AudienceTimesUptakeTimesRewardCost) {
  auto c = test::CompleteCoupon("x", t_, t_ + absl::Hours(1));  // seg-a1: 10000, 50-yuan coupon
  c.set_expected_uptake_bp(2500);
  pb::CostForecast f = Forecast(c);
  EXPECT_EQ(f.audience_size(), 10000);
  EXPECT_EQ(f.uptake_bp(), 2500);
  EXPECT_EQ(f.expected_participations(), 2500);
  EXPECT_EQ(f.cost_per_participation_fen(), 5000);
  EXPECT_EQ(f.forecast_cost_fen(), 12'500'000);
  EXPECT_EQ(f.budget_cap_fen(), 10'000'000);
  EXPECT_TRUE(f.exceeds_budget());

  EXPECT_FALSE(Forecast(c, 1000).exceeds_budget());  // 1000 × 5000 = 5,000,000
  EXPECT_EQ(Forecast(c, 1000).forecast_cost_fen(), 5'000'000);
}

TEST_F(CampaignCostForecastTest, TheDefaultUptakeAppliesWhenTheOperatorGaveNone) {
  auto c = test::CompleteCoupon("x", t_, t_ + absl::Hours(1));
  pb::CostForecast f = Forecast(c);
  EXPECT_EQ(f.uptake_bp(), 1000);
  EXPECT_EQ(f.expected_participations(), 1000);
  EXPECT_FALSE(f.notes().empty());
}

TEST_F(CampaignCostForecastTest, LimitsScaleAndCapParticipations) {
  auto c = test::CompleteCoupon("x", t_, t_ + absl::Hours(1));
  c.set_expected_uptake_bp(10000);
  c.mutable_limits()->set_per_customer_total(3);
  EXPECT_EQ(Forecast(c).expected_participations(), 30000);
  c.mutable_limits()->set_global_total(500);
  EXPECT_EQ(Forecast(c).expected_participations(), 500);
  EXPECT_EQ(Forecast(c).forecast_cost_fen(), 500 * 5000);
}

TEST_F(CampaignCostForecastTest, ALotteryCostsItsProbabilityWeightedPrizes) {
  auto c = test::CompleteCoupon("x", t_, t_ + absl::Hours(1));
  c.set_type(pb::LOTTERY);
  c.clear_rewards();
  auto* big = c.add_prizes();
  big->set_benefit_template_id("bt-coupon-50");  // 5000 fen
  big->set_quantity(1);
  big->set_probability_bp(100);  // 1%: 50 fen expected
  auto* small = c.add_prizes();
  small->set_benefit_template_id("bt-points-100");  // 100 fen
  small->set_quantity(2);
  small->set_probability_bp(5000);  // 50%: 100 fen expected
  EXPECT_EQ(Forecast(c).cost_per_participation_fen(), 150);
}

// Decision 031: a cumulative event campaign grants its tiers, not `rewards`; as with growth tiers,
// every participant is assumed to reach every tier.
// Decision 034: an event campaign's reward names an asset and is priced as submission prices it:
// a point at the service's price, a fen at 1, a lottery chance at nothing.
TEST_F(CampaignCostForecastTest, ACumulativeEventCampaignCostsAllItsTiers) {
  auto c = test::CompleteCoupon("x", t_, t_ + absl::Hours(1));
  c.set_type(pb::EVENT_TRIGGER);
  c.clear_rewards();
  c.mutable_event_trigger()->set_kind(pb::TRIGGER_CUMULATIVE_AMOUNT);
  for (const auto& [asset, kind, quantity] :
       {std::tuple<std::string, pb::RewardKind, int64_t>{"POINTS", pb::REWARD_KIND_POINTS, 200},
        {"CASH_FEN", pb::REWARD_KIND_CASH_FEN, 500},
        {"LOTTERY_CHANCE", pb::REWARD_KIND_LOTTERY_CHANCE, 3}}) {
    pb::TriggerTier* tier = c.mutable_event_trigger()->add_tiers();
    tier->set_threshold_fen(100000 * c.event_trigger().tiers_size());
    tier->mutable_reward()->set_benefit_template_id(asset);
    tier->mutable_reward()->set_kind(kind);
    tier->mutable_reward()->set_quantity(quantity);
  }
  c.set_expected_uptake_bp(1000);
  pb::CostForecast f = Forecast(c);
  EXPECT_EQ(f.cost_per_participation_fen(), 200 + 500);
  EXPECT_EQ(f.forecast_cost_fen(), 1000 * 700);
  EXPECT_THAT(f.notes(), ::testing::Contains(::testing::HasSubstr("every tier")));
  EXPECT_THAT(f.notes(), ::testing::Not(::testing::Contains(::testing::HasSubstr("unavailable"))));
  // Points worth 2 fen each.
  EXPECT_EQ(
      ForecastCost(c, *data_.segments, *data_.benefits, 1000, 0, 2).cost_per_participation_fen(),
      2 * 200 + 500);
}

TEST_F(CampaignCostForecastTest, AnEventCampaignCostsItsOneRewardPerMatch) {
  auto c = test::CompleteCoupon("x", t_, t_ + absl::Hours(1));  // seg-a1: 10000 customers
  c.set_type(pb::EVENT_TRIGGER);
  c.mutable_rewards(0)->set_benefit_template_id("POINTS");
  c.mutable_rewards(0)->set_kind(pb::REWARD_KIND_POINTS);
  c.mutable_rewards(0)->set_quantity(200);
  c.mutable_limits()->set_per_customer_total(1);
  c.set_expected_uptake_bp(5000);
  pb::CostForecast f = Forecast(c);
  EXPECT_EQ(f.cost_per_participation_fen(), 200);
  EXPECT_EQ(f.forecast_cost_fen(), 5000 * 200);
  EXPECT_EQ(f.notes_size(), 0) << f.DebugString();
}

TEST_F(CampaignCostForecastTest, UnknownReferencesCountAsZeroWithANote) {
  auto c = test::CompleteCoupon("x", t_, t_ + absl::Hours(1), "seg-missing");
  c.mutable_rewards(0)->set_benefit_template_id("bt-missing");
  pb::CostForecast f = Forecast(c);
  EXPECT_EQ(f.audience_size(), 0);
  EXPECT_EQ(f.forecast_cost_fen(), 0);
  EXPECT_GE(f.notes_size(), 2);
}

TEST_F(CampaignCostForecastTest, HugeNumbersSaturateInsteadOfWrapping) {
  data_.segments->Put("seg-huge", {"bank-a", 1, std::numeric_limits<int64_t>::max()});
  data_.benefits->Put("bt-huge", {"fed", std::numeric_limits<int64_t>::max()});
  auto c = test::CompleteCoupon("x", t_, t_ + absl::Hours(1), "seg-huge");
  c.mutable_rewards(0)->set_benefit_template_id("bt-huge");
  c.mutable_rewards(0)->set_quantity(1000);
  c.set_expected_uptake_bp(10000);
  pb::CostForecast f = Forecast(c);
  EXPECT_EQ(f.forecast_cost_fen(), std::numeric_limits<int64_t>::max());
  EXPECT_TRUE(f.exceeds_budget());
}

}  // namespace
}  // namespace mkt::campaigns
