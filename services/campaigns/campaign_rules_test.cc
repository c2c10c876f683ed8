#include "services/campaigns/campaign_rules.h"

#include <algorithm>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "libs/core/status.h"
#include "services/campaigns/test_configs.h"

namespace mkt::campaigns {
namespace {

using test::CompleteCoupon;
using test::Ts;

class CampaignRulesTest : public ::testing::Test {
 protected:
  CampaignRulesTest() : data_(*ParseReferenceData(test::kReferenceJson)) {
    context_.segments = data_.segments.get();
    context_.benefits = data_.benefits.get();
    context_.owner_org = "bank-a";
    context_.now = now_;
  }

  std::vector<std::string> Fields(const FieldErrors& errors) {
    std::vector<std::string> fields;
    for (const auto& e : errors.entries()) fields.push_back(e.field);
    return fields;
  }

  bool Has(const FieldErrors& errors, const std::string& field, const std::string& part = "") {
    return std::any_of(errors.entries().begin(), errors.entries().end(), [&](const auto& e) {
      return e.field == field && e.message.find(part) != std::string::npos;
    });
  }

  const absl::Time now_ = absl::FromUnixSeconds(1'800'000'000);
  ReferenceData data_;
  ValidationContext context_;
};

TEST_F(CampaignRulesTest, ACompleteConfigurationIsReadyToSubmit) {
  auto config = CompleteCoupon("Spring coupons", now_ + absl::Hours(1), now_ + absl::Hours(48));
  FieldErrors errors = ValidateForSubmission(config, context_);
  EXPECT_TRUE(errors.empty()) << errors.ToStatus();
}

TEST_F(CampaignRulesTest, BasicsListEveryErrorAgainstItsField) {
  pb::CampaignConfig c;
  c.set_name(std::string(100, 'x'));
  *c.mutable_start_time() = Ts(now_ + absl::Hours(5));
  *c.mutable_end_time() = Ts(now_ + absl::Hours(1));  // inverted
  c.set_priority(-1);
  c.set_exclusion_group("Has Spaces");
  FieldErrors errors = ValidateStep(pb::STEP_BASICS, c, context_);
  EXPECT_TRUE(Has(errors, "name", "at most 64")) << errors.ToStatus();
  EXPECT_TRUE(Has(errors, "type", "is required"));
  EXPECT_TRUE(Has(errors, "end_time", "inverted"));
  EXPECT_TRUE(Has(errors, "priority"));
  EXPECT_TRUE(Has(errors, "exclusion_group"));
  EXPECT_EQ(errors.size(), 5u) << errors.ToStatus();

  absl::Status status = errors.ToStatus();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FieldOf(status), "name");
  for (const char* f : {"name:", "type:", "end_time:", "priority:", "exclusion_group:"}) {
    EXPECT_NE(std::string(status.message()).find(f), std::string::npos) << status.message();
  }
}

TEST_F(CampaignRulesTest, MissingWindowAndControlCharactersAreRefused) {
  pb::CampaignConfig c;
  c.set_name("bad\x01name");
  c.set_type(pb::LOTTERY);
  FieldErrors errors = ValidateStep(pb::STEP_BASICS, c, context_);
  EXPECT_TRUE(Has(errors, "name", "printable"));
  EXPECT_TRUE(Has(errors, "start_time", "required"));
  EXPECT_TRUE(Has(errors, "end_time", "required"));
}

TEST_F(CampaignRulesTest, AudienceNeedsKnownSegmentsOfTheOwnerOrItsAncestors) {
  pb::CampaignConfig c;
  c.mutable_audience()->add_include()->set_segment_id("seg-a1");
  c.mutable_audience()->add_include()->set_segment_id("seg-fed");   // the federation's: usable
  c.mutable_audience()->add_include()->set_segment_id("seg-b1");    // a sibling bank's
  c.mutable_audience()->add_include()->set_segment_id("seg-nope");  // unknown
  auto* pinned = c.mutable_audience()->add_exclude();
  pinned->set_segment_id("seg-a2");
  pinned->set_version(7);                                         // only version 1 exists
  c.mutable_audience()->add_exclude()->set_segment_id("seg-a1");  // included and excluded
  FieldErrors errors = ValidateStep(pb::STEP_AUDIENCE, c, context_);
  EXPECT_EQ(Fields(errors), (std::vector<std::string>{
                                "audience.include[2].segment_id", "audience.include[3].segment_id",
                                "audience.exclude[0].version", "audience.exclude[1].segment_id"}))
      << errors.ToStatus();
  EXPECT_TRUE(Has(errors, "audience.include[2].segment_id", "unknown segment 'seg-b1'"));
  EXPECT_TRUE(Has(errors, "audience.include[3].segment_id", "unknown segment 'seg-nope'"));

  pb::CampaignConfig empty;
  EXPECT_TRUE(Has(ValidateStep(pb::STEP_AUDIENCE, empty, context_), "audience.include"));
}

TEST_F(CampaignRulesTest, PinningFillsTheCurrentVersionOfUnpinnedSegments) {
  pb::CampaignConfig c;
  c.mutable_audience()->add_include()->set_segment_id("seg-a1");
  auto* pinned = c.mutable_audience()->add_include();
  pinned->set_segment_id("seg-b1");
  pinned->set_version(1);
  PinSegmentVersions(&c, *data_.segments);
  EXPECT_EQ(c.audience().include(0).version(), 3);
  EXPECT_EQ(c.audience().include(1).version(), 1);
}

TEST_F(CampaignRulesTest, NegativeLimitsAndUnknownBenefitsAreFieldErrors) {
  auto c = CompleteCoupon("x", now_, now_ + absl::Hours(1));
  c.mutable_limits()->set_per_customer_daily(-1);
  c.mutable_limits()->set_global_total(-5);
  c.mutable_rewards(0)->set_benefit_template_id("bt-b-gift");  // bank-b's template
  c.mutable_rewards(0)->set_quantity(0);
  c.set_budget_cap_fen(-100);
  FieldErrors errors = ValidateStep(pb::STEP_RULES_REWARDS, c, context_);
  EXPECT_TRUE(Has(errors, "limits.per_customer_daily", "negative"));
  EXPECT_TRUE(Has(errors, "limits.global_total", "negative"));
  EXPECT_TRUE(Has(errors, "rewards[0].benefit_template_id", "unknown benefit template"));
  EXPECT_TRUE(Has(errors, "rewards[0].quantity"));
  EXPECT_TRUE(Has(errors, "budget_cap_fen"));
  EXPECT_EQ(errors.size(), 5u) << errors.ToStatus();
}

TEST_F(CampaignRulesTest, EventCampaignsNeedAWellFormedTrigger) {
  auto c = CompleteCoupon("x", now_, now_ + absl::Hours(1));
  c.set_type(pb::EVENT_TRIGGER);
  EXPECT_TRUE(Has(ValidateStep(pb::STEP_RULES_REWARDS, c, context_), "trigger_expression",
                  "needs a trigger"));
  c.set_trigger_expression("(event.type == \"deposit\"");
  EXPECT_TRUE(
      Has(ValidateStep(pb::STEP_RULES_REWARDS, c, context_), "trigger_expression", "unbalanced"));
  c.set_trigger_expression("event.type == \"deposit\" && event.amount_fen >= 100000");
  EXPECT_TRUE(ValidateStep(pb::STEP_RULES_REWARDS, c, context_).empty());
}

TEST_F(CampaignRulesTest, APrizeTableMayNotExceedOneHundredPercent) {
  auto c = CompleteCoupon("x", now_, now_ + absl::Hours(1));
  c.set_type(pb::LOTTERY);
  c.clear_rewards();
  for (auto [name, bp] : {std::pair{"first", 6000}, std::pair{"second", 4500}}) {
    auto* p = c.add_prizes();
    p->set_name(name);
    p->set_benefit_template_id("bt-points-100");
    p->set_quantity(1);
    p->set_probability_bp(bp);
  }
  FieldErrors errors = ValidateStep(pb::STEP_RULES_REWARDS, c, context_);
  EXPECT_TRUE(Has(errors, "prizes", "10500 bp")) << errors.ToStatus();
  EXPECT_EQ(errors.size(), 1u);

  c.mutable_prizes(1)->set_probability_bp(4000);
  EXPECT_TRUE(ValidateStep(pb::STEP_RULES_REWARDS, c, context_).empty());
  c.mutable_prizes(1)->set_probability_bp(0);
  EXPECT_TRUE(Has(ValidateStep(pb::STEP_RULES_REWARDS, c, context_), "prizes[1].probability_bp"));

  c.add_rewards()->set_benefit_template_id("bt-coupon-50");
  EXPECT_TRUE(Has(ValidateStep(pb::STEP_RULES_REWARDS, c, context_), "rewards", "prize table"));
}

TEST_F(CampaignRulesTest, OversizedOrMalformedChannelContentIsRefused) {
  auto c = CompleteCoupon("x", now_, now_ + absl::Hours(1));
  auto* content = c.mutable_channels(0)->mutable_content();
  content->set_title(std::string(65, 'T'));
  content->set_rules_text(std::string(4001, 'r'));
  content->set_image_url("javascript:alert(1)");
  c.add_channels()->set_channel("mobile_banking");  // duplicate, and no title
  FieldErrors errors = ValidateStep(pb::STEP_CHANNELS_CONTENT, c, context_);
  EXPECT_TRUE(Has(errors, "channels[0].content.title", "at most 64"));
  EXPECT_TRUE(Has(errors, "channels[0].content.rules_text", "at most 4000"));
  EXPECT_TRUE(Has(errors, "channels[0].content.image_url", "http"));
  EXPECT_TRUE(Has(errors, "channels[1].channel", "twice"));
  EXPECT_TRUE(Has(errors, "channels[1].content.title", "required"));
  EXPECT_EQ(errors.size(), 5u) << errors.ToStatus();
}

TEST_F(CampaignRulesTest, ChineseTextCountsCodePointsNotBytes) {
  auto c = CompleteCoupon("x", now_, now_ + absl::Hours(1));
  std::string title;
  for (int i = 0; i < 64; ++i) title += "\xE7\xA6\x8F";  // 福, 3 bytes each
  c.mutable_channels(0)->mutable_content()->set_title(title);
  EXPECT_TRUE(ValidateStep(pb::STEP_CHANNELS_CONTENT, c, context_).empty());
  c.mutable_channels(0)->mutable_content()->set_title(title + "\xE7\xA6\x8F");
  EXPECT_FALSE(ValidateStep(pb::STEP_CHANNELS_CONTENT, c, context_).empty());
}

TEST_F(CampaignRulesTest, SubmissionRefusesAWindowThatHasEnded) {
  auto c = CompleteCoupon("x", now_ - absl::Hours(5), now_ - absl::Hours(1));
  FieldErrors errors = ValidateForSubmission(c, context_);
  EXPECT_TRUE(Has(errors, "end_time", "already ended")) << errors.ToStatus();
}

TEST_F(CampaignRulesTest, MergeStepTakesOnlyTheStepsFields) {
  auto draft = CompleteCoupon("old", now_, now_ + absl::Hours(1));
  pb::CampaignConfig input;
  input.set_name("new");
  input.set_budget_cap_fen(1);  // a step-3 field: ignored by step 1
  MergeStep(pb::STEP_BASICS, input, &draft);
  EXPECT_EQ(draft.name(), "new");
  EXPECT_FALSE(draft.has_start_time());  // step 1 owns the window: cleared
  EXPECT_EQ(draft.budget_cap_fen(), 10'000'000);
  EXPECT_EQ(draft.rewards_size(), 1);
}

TEST_F(CampaignRulesTest, ACopyMustSetItsWindowBudgetAndSegments) {
  auto c = CompleteCoupon("x", now_ + absl::Hours(1), now_ + absl::Hours(2));
  ClearFlaggedFields(&c);
  FieldErrors errors = ValidateForSubmission(c, context_);
  for (const char* f : {"start_time", "end_time", "budget_cap_fen", "audience.include"}) {
    EXPECT_TRUE(errors.Mentions(f)) << f << ": " << errors.ToStatus();
  }
  EXPECT_EQ(errors.size(), 4u) << errors.ToStatus();
}

// An asset-growth task grants its tiers' rewards: tiers are required, strictly increasing, each
// with valid rewards and at most one coupon unit; other types may not carry tiers.
TEST_F(CampaignRulesTest, AssetGrowthTiersAreValidatedAndOnlyForTasks) {
  auto c = CompleteCoupon("Grow", now_ + absl::Hours(1), now_ + absl::Hours(48));
  c.set_type(pb::ASSET_GROWTH_TASK);
  FieldErrors errors = ValidateForSubmission(c, context_);
  EXPECT_TRUE(Has(errors, "rewards", "growth_tiers")) << errors.ToStatus();
  EXPECT_TRUE(Has(errors, "growth_tiers", "at least one tier"));

  c.clear_rewards();
  auto* t0 = c.add_growth_tiers();
  t0->set_min_growth_fen(1'000'000);
  auto* r0 = t0->add_rewards();
  r0->set_benefit_template_id("bt-points-100");
  r0->set_kind(pb::REWARD_KIND_POINTS);
  r0->set_quantity(500);
  auto* t1 = c.add_growth_tiers();
  t1->set_min_growth_fen(5'000'000);
  auto* r1 = t1->add_rewards();
  r1->set_benefit_template_id("bt-coupon-50");
  r1->set_quantity(1);
  c.set_baseline_days(60);
  errors = ValidateForSubmission(c, context_);
  EXPECT_TRUE(errors.empty()) << errors.ToStatus();

  // Saved with step 3 like the other rules.
  pb::CampaignConfig merged;
  MergeStep(pb::STEP_RULES_REWARDS, c, &merged);
  EXPECT_EQ(merged.growth_tiers_size(), 2);
  EXPECT_EQ(merged.baseline_days(), 60);

  t1->set_min_growth_fen(1'000'000);  // not above tier 0
  r1->set_quantity(2);                // two coupon units
  r0->set_benefit_template_id("bt-unknown");
  c.set_baseline_days(400);
  auto* t2 = c.add_growth_tiers();
  t2->set_min_growth_fen(0);
  errors = ValidateStep(pb::STEP_RULES_REWARDS, c, context_);
  EXPECT_TRUE(Has(errors, "growth_tiers[1].min_growth_fen", "previous")) << errors.ToStatus();
  EXPECT_TRUE(Has(errors, "growth_tiers[1].rewards", "one coupon unit"));
  EXPECT_TRUE(Has(errors, "growth_tiers[0].rewards[0].benefit_template_id", "unknown"));
  EXPECT_TRUE(Has(errors, "growth_tiers[2].min_growth_fen", "more than 0"));
  EXPECT_TRUE(Has(errors, "growth_tiers[2].rewards", "at least one reward"));
  EXPECT_TRUE(Has(errors, "baseline_days"));

  auto coupon = CompleteCoupon("Coupons", now_ + absl::Hours(1), now_ + absl::Hours(48));
  *coupon.add_growth_tiers() = c.growth_tiers(0);
  coupon.set_baseline_days(10);
  errors = ValidateStep(pb::STEP_RULES_REWARDS, coupon, context_);
  EXPECT_TRUE(Has(errors, "growth_tiers", "only an asset-growth task")) << errors.ToStatus();
  EXPECT_TRUE(Has(errors, "baseline_days", "only an asset-growth task"));
}

}  // namespace
}  // namespace mkt::campaigns
