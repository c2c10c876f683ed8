#include "services/campaigns/campaign_rules.h"

#include <algorithm>
#include <functional>
#include <string>
#include <utility>
#include <vector>

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

  // A lottery with one points prize (no kind set: the default), for the tests to change.
  pb::CampaignConfig OnePrizeLottery() {
    auto lottery = CompleteCoupon("Draw", now_, now_ + absl::Hours(1));
    lottery.set_type(pb::LOTTERY);
    lottery.clear_rewards();
    auto* prize = lottery.add_prizes();
    prize->set_name("top");
    prize->set_benefit_template_id("bt-points-100");
    prize->set_quantity(1);
    prize->set_probability_bp(1000);
    return lottery;
  }

  // An asset-growth task with one tier of one points reward (kind not set), to change.
  pb::CampaignConfig OneTierGrowthTask() {
    auto task = CompleteCoupon("Grow", now_, now_ + absl::Hours(1));
    task.set_type(pb::ASSET_GROWTH_TASK);
    task.clear_rewards();
    auto* tier = task.add_growth_tiers();
    tier->set_min_growth_fen(1'000'000);
    auto* reward = tier->add_rewards();
    reward->set_benefit_template_id("bt-points-100");
    reward->set_quantity(10);
    return task;
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

// A complete event campaign: the reward in the form the events service grants (the asset).
pb::CampaignConfig CompleteEvent(absl::Time start, absl::Time end) {
  auto c = CompleteCoupon("Deposit bonus", start, end);
  c.set_type(pb::EVENT_TRIGGER);
  c.set_trigger_expression("event.type == \"deposit\" && event.amount_fen >= 100000");
  c.mutable_rewards(0)->set_benefit_template_id("POINTS");
  c.mutable_rewards(0)->set_kind(pb::REWARD_KIND_POINTS);
  c.mutable_rewards(0)->set_quantity(200);
  return c;
}

TEST_F(CampaignRulesTest, EventCampaignsNeedAWellFormedTrigger) {
  auto c = CompleteEvent(now_, now_ + absl::Hours(1));
  c.clear_trigger_expression();
  EXPECT_TRUE(Has(ValidateStep(pb::STEP_RULES_REWARDS, c, context_), "trigger_expression",
                  "needs a trigger"));
  c.set_trigger_expression("(event.type == \"deposit\"");
  EXPECT_TRUE(
      Has(ValidateStep(pb::STEP_RULES_REWARDS, c, context_), "trigger_expression", "unbalanced"));
  c.set_trigger_expression("event.type == \"deposit\" && event.amount_fen >= 100000");
  EXPECT_TRUE(ValidateStep(pb::STEP_RULES_REWARDS, c, context_).empty());
  FieldErrors errors = ValidateForSubmission(c, context_);
  EXPECT_TRUE(errors.empty()) << errors.ToStatus();
}

// The event trigger is part of step 3: saving the step keeps it (and removing it from the step
// removes it), so a FIRST_TIME or tiered campaign is not silently every-match.
TEST_F(CampaignRulesTest, SavingStepThreeKeepsTheEventTrigger) {
  auto input = CompleteEvent(now_, now_ + absl::Hours(1));
  input.mutable_event_trigger()->set_kind(pb::TRIGGER_COUNT_AT_LEAST);
  input.mutable_event_trigger()->set_count_threshold(3);
  pb::CampaignConfig draft;
  MergeStep(pb::STEP_BASICS, input, &draft);
  EXPECT_FALSE(draft.has_event_trigger());  // not a basics field
  MergeStep(pb::STEP_RULES_REWARDS, input, &draft);
  ASSERT_TRUE(draft.has_event_trigger());
  EXPECT_EQ(draft.event_trigger().kind(), pb::TRIGGER_COUNT_AT_LEAST);
  EXPECT_EQ(draft.event_trigger().count_threshold(), 3);

  pb::CampaignConfig without = input;
  without.clear_event_trigger();
  MergeStep(pb::STEP_RULES_REWARDS, without, &draft);
  EXPECT_FALSE(draft.has_event_trigger());
}

// Decision 034: a client cannot set what a reward costs; submission prices an event campaign's
// rewards (CASH_FEN 1 fen per fen, POINTS the service's price, LOTTERY_CHANCE nothing) and leaves
// every other campaign's at 0.
TEST_F(CampaignRulesTest, ApprovalPricesEventRewardsAndClientsCannot) {
  auto input = CompleteEvent(now_, now_ + absl::Hours(1));
  input.mutable_rewards(0)->set_unit_cost_fen(0);
  input.mutable_event_trigger()->set_kind(pb::TRIGGER_CUMULATIVE_AMOUNT);
  input.clear_rewards();
  const std::pair<const char*, pb::RewardKind> assets[] = {
      {"POINTS", pb::REWARD_KIND_POINTS},
      {"CASH_FEN", pb::REWARD_KIND_CASH_FEN},
      {"LOTTERY_CHANCE", pb::REWARD_KIND_LOTTERY_CHANCE}};
  for (const auto& [asset, kind] : assets) {
    pb::TriggerTier* tier = input.mutable_event_trigger()->add_tiers();
    tier->set_threshold_fen(100000 * input.event_trigger().tiers_size());
    tier->mutable_reward()->set_benefit_template_id(asset);
    tier->mutable_reward()->set_kind(kind);
    tier->mutable_reward()->set_quantity(10);
    tier->mutable_reward()->set_unit_cost_fen(999);  // what a client sent
  }
  pb::CampaignConfig draft;
  MergeStep(pb::STEP_BASICS, input, &draft);
  MergeStep(pb::STEP_RULES_REWARDS, input, &draft);
  for (const auto& tier : draft.event_trigger().tiers()) {
    EXPECT_EQ(tier.reward().unit_cost_fen(), 0) << tier.reward().benefit_template_id();
  }
  PriceEventRewards(&draft, 3);
  ASSERT_EQ(draft.event_trigger().tiers_size(), 3);
  EXPECT_EQ(draft.event_trigger().tiers(0).reward().unit_cost_fen(), 3);  // POINTS
  EXPECT_EQ(draft.event_trigger().tiers(1).reward().unit_cost_fen(), 1);  // CASH_FEN
  EXPECT_EQ(draft.event_trigger().tiers(2).reward().unit_cost_fen(), 0);  // LOTTERY_CHANCE

  auto coupon = CompleteCoupon("Coupon", now_, now_ + absl::Hours(1));
  coupon.mutable_rewards(0)->set_unit_cost_fen(5);
  PriceEventRewards(&coupon, 3);
  EXPECT_EQ(coupon.rewards(0).unit_cost_fen(), 0);
  EXPECT_FALSE(coupon.has_event_trigger());
  ClearRewardUnitCosts(&draft);
  EXPECT_EQ(draft.event_trigger().tiers(0).reward().unit_cost_fen(), 0);
}

// With a copy of the events service's registry, a trigger the events service could not turn into
// a rule is refused when it is configured, not dead-lettered after approval.
TEST_F(CampaignRulesTest, TriggersAreCheckedAgainstTheEventTypeRegistryWhenThereIsOne) {
  class Clock final : public mkt::Clock {
   public:
    absl::Time Now() const override { return absl::FromUnixSeconds(1'800'000'000); }
  } clock;
  bool up = true;
  events::EventTypeCache registry(
      [&up]() -> absl::StatusOr<std::vector<::marketing::events::v1::EventType>> {
        if (!up) return absl::UnavailableError("events service down");
        return events::DefaultEventTypes();
      },
      clock);
  ValidationContext with_registry = context_;
  with_registry.event_types = &registry;
  auto errors_for = [&](const std::string& expression) {
    auto c = CompleteEvent(now_, now_ + absl::Hours(1));
    c.set_trigger_expression(expression);
    return ValidateStep(pb::STEP_RULES_REWARDS, c, with_registry);
  };
  EXPECT_TRUE(errors_for("event.type == \"loan.disbursed\" && event.amount_fen >= 1000000 && "
                         "event.tenor_months >= 12 && event.contract_id != \"\"")
                  .empty());
  EXPECT_TRUE(Has(errors_for("event.type == \"loan.disbursd\""), "trigger_expression",
                  "there is no event type \"loan.disbursd\""));
  EXPECT_TRUE(
      Has(errors_for("event.type == \"loan.cancelled\""), "trigger_expression", "a reversal type"));
  EXPECT_TRUE(Has(errors_for("event.type == \"loan.disbursed\" && event.colour == \"red\""),
                  "trigger_expression", "colour"));
  EXPECT_TRUE(Has(errors_for("event.type == \"loan.disbursed\" && event.tenor_months == \"12\""),
                  "trigger_expression", "tenor_months"));
  // The same campaign without a copy of the registry is left to the events service.
  up = false;
  events::EventTypeCache unavailable(
      []() -> absl::StatusOr<std::vector<::marketing::events::v1::EventType>> {
        return absl::UnavailableError("events service down");
      },
      clock);
  with_registry.event_types = &unavailable;
  EXPECT_TRUE(errors_for("event.type == \"loan.disbursd\"").empty());
}

// The JSON body "trigger_expression": "event.type == \"a\u0000\"" used to pass and then fail as
// jsonb (an INTERNAL error); it is a field error now, with the position.
TEST_F(CampaignRulesTest, ATriggerExpressionWithNulIsAFieldError) {
  auto c = CompleteEvent(now_, now_ + absl::Hours(1));
  c.set_trigger_expression(std::string("event.type == \"a\0\"", 18));
  FieldErrors errors = ValidateStep(pb::STEP_RULES_REWARDS, c, context_);
  EXPECT_TRUE(Has(errors, "trigger_expression", "control character U+0000")) << errors.ToStatus();
  EXPECT_TRUE(Has(errors, "trigger_expression", "at character 17"));
  EXPECT_EQ(errors.size(), 1u) << errors.ToStatus();
  EXPECT_EQ(errors.ToStatus().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FieldOf(errors.ToStatus()), "trigger_expression");
}

// Decision 031: an event campaign says which matching events grant; what the events service's
// CompileRule would refuse is refused on save, field by field.
TEST_F(CampaignRulesTest, EventTriggersAreCheckedAsTheEventsServiceCompilesThem) {
  auto c = CompleteEvent(now_, now_ + absl::Hours(1));
  auto valid = [&] {
    FieldErrors errors = ValidateStep(pb::STEP_RULES_REWARDS, c, context_);
    return errors.empty() ? std::string() : std::string(errors.ToStatus().message());
  };
  // Unset and TRIGGER_EVERY_MATCH are the same rule; FIRST_TIME keeps the one reward.
  c.mutable_event_trigger()->set_kind(pb::TRIGGER_FIRST_TIME);
  EXPECT_EQ(valid(), "");
  c.mutable_event_trigger()->set_window(pb::TRIGGER_WINDOW_CALENDAR_MONTH);
  EXPECT_TRUE(Has(ValidateStep(pb::STEP_RULES_REWARDS, c, context_), "event_trigger.window",
                  "leave it unset for TRIGGER_FIRST_TIME"));

  // The 3rd deposit of each month grants.
  c.mutable_event_trigger()->set_kind(pb::TRIGGER_COUNT_AT_LEAST);
  EXPECT_TRUE(Has(ValidateStep(pb::STEP_RULES_REWARDS, c, context_),
                  "event_trigger.count_threshold", "between 1 and 1000000"));
  c.mutable_event_trigger()->set_count_threshold(3);
  EXPECT_EQ(valid(), "");

  // Spend 1,000 and 3,000 yuan this month: each tier its reward, `rewards` empty.
  c.mutable_event_trigger()->set_kind(pb::TRIGGER_CUMULATIVE_AMOUNT);
  FieldErrors errors = ValidateStep(pb::STEP_RULES_REWARDS, c, context_);
  EXPECT_TRUE(
      Has(errors, "event_trigger.count_threshold", "applies only to TRIGGER_COUNT_AT_LEAST"))
      << errors.ToStatus();
  EXPECT_TRUE(Has(errors, "event_trigger.tiers", "needs 1 to 20 tiers"));
  EXPECT_TRUE(Has(errors, "rewards", "use event_trigger.tiers"));
  c.mutable_event_trigger()->set_count_threshold(0);
  c.clear_rewards();
  for (int64_t threshold : {100000, 300000}) {
    pb::TriggerTier* tier = c.mutable_event_trigger()->add_tiers();
    tier->set_threshold_fen(threshold);
    tier->mutable_reward()->set_benefit_template_id("POINTS");
    tier->mutable_reward()->set_kind(pb::REWARD_KIND_POINTS);
    tier->mutable_reward()->set_quantity(threshold / 1000);
  }
  EXPECT_EQ(valid(), "");
  EXPECT_TRUE(ValidateForSubmission(c, context_).empty())
      << ValidateForSubmission(c, context_).ToStatus();

  // Thresholds must increase; a tier's reward is an event reward (the asset, nothing else).
  c.mutable_event_trigger()->mutable_tiers(1)->set_threshold_fen(100000);
  c.mutable_event_trigger()->mutable_tiers(0)->mutable_reward()->set_benefit_template_id(
      "bt-coupon-50");
  errors = ValidateStep(pb::STEP_RULES_REWARDS, c, context_);
  EXPECT_TRUE(Has(errors, "event_trigger.tiers[1].threshold_fen",
                  "must be above the previous tier's 100000 fen"))
      << errors.ToStatus();
  EXPECT_TRUE(
      Has(errors, "event_trigger.tiers[0].reward.benefit_template_id", "not 'bt-coupon-50'"));
  EXPECT_EQ(errors.size(), 2u) << errors.ToStatus();
  c.mutable_event_trigger()->mutable_tiers(1)->set_threshold_fen(0);
  c.mutable_event_trigger()->mutable_tiers(1)->clear_reward();
  errors = ValidateStep(pb::STEP_RULES_REWARDS, c, context_);
  EXPECT_TRUE(Has(errors, "event_trigger.tiers[1].threshold_fen", "between 1 and"));
  EXPECT_TRUE(Has(errors, "event_trigger.tiers[1].reward", "is required"));

  // Tiers belong to cumulative campaigns, triggers to event campaigns, kinds to the list.
  c.mutable_event_trigger()->set_kind(pb::TRIGGER_EVERY_MATCH);
  EXPECT_TRUE(Has(ValidateStep(pb::STEP_RULES_REWARDS, c, context_), "event_trigger.tiers",
                  "apply only to TRIGGER_CUMULATIVE_AMOUNT"));
  c.mutable_event_trigger()->set_kind(static_cast<pb::TriggerKind>(42));
  EXPECT_TRUE(Has(ValidateStep(pb::STEP_RULES_REWARDS, c, context_), "event_trigger.kind",
                  "is not a trigger kind"));
  auto coupon = CompleteCoupon("Coupons", now_, now_ + absl::Hours(1));
  coupon.mutable_event_trigger()->set_kind(pb::TRIGGER_FIRST_TIME);
  EXPECT_TRUE(Has(ValidateStep(pb::STEP_RULES_REWARDS, coupon, context_), "event_trigger",
                  "only an event campaign"));
}

// The tags an event campaign's condition reads exist and are its bank's or the federation's
// (decision 032): a misspelt or foreign tag would leave the condition false for every customer.
TEST_F(CampaignRulesTest, AnEventConditionReadsOnlyTagsItsBankMayUse) {
  auto c = CompleteEvent(now_, now_ + absl::Hours(1));  // bank-a's
  c.set_trigger_expression(
      "event.type == 'deposit' && customer.tag('age') < 35 && customer.tags.vip == true");
  EXPECT_TRUE(ValidateStep(pb::STEP_RULES_REWARDS, c, context_).empty())
      << ValidateStep(pb::STEP_RULES_REWARDS, c, context_).ToStatus();

  for (const char* tag : {"agee", "b_level", "Age"}) {
    c.set_trigger_expression(std::string("event.type == 'deposit' && customer.tag('") + tag +
                             "') == 'x'");
    FieldErrors errors = ValidateStep(pb::STEP_RULES_REWARDS, c, context_);
    EXPECT_TRUE(Has(errors, "trigger_expression",
                    std::string("unknown tag '") + tag +
                        "': a condition reads the tags of the campaign's bank and the federation"))
        << tag << ": " << errors.ToStatus();
  }
  c.set_trigger_expression("event.type == 'deposit' && customer.tags.b_level == 'x'");
  EXPECT_TRUE(Has(ValidateStep(pb::STEP_RULES_REWARDS, c, context_), "trigger_expression",
                  "unknown tag 'b_level'"));

  // A directory that knows no tags (a catalog file without "tags") does not judge them.
  InMemorySegmentDirectory no_tags;
  ValidationContext without = context_;
  without.segments = &no_tags;
  c.set_trigger_expression("event.type == 'deposit' && customer.tag('anything') == 'x'");
  EXPECT_FALSE(Has(ValidateStep(pb::STEP_RULES_REWARDS, c, without), "trigger_expression", ""));
}

// What the events service compiles (services/events/events_service.cc RuleFromCampaign): the
// documented customer.tag("x") form, one pinned event type, and one reward naming the asset.
TEST_F(CampaignRulesTest, EventCampaignsAreCheckedAsTheEventsServiceCompilesThem) {
  auto c = CompleteEvent(now_, now_ + absl::Hours(1));
  c.set_trigger_expression(
      "event.type == \"loan.disbursed\" && customer.tag(\"age\") < 35 && amount_fen >= 1000000");
  EXPECT_TRUE(ValidateStep(pb::STEP_RULES_REWARDS, c, context_).empty())
      << ValidateStep(pb::STEP_RULES_REWARDS, c, context_).ToStatus();

  c.set_trigger_expression("event.amount_fen >= 1000000");  // which event type?
  EXPECT_TRUE(Has(ValidateStep(pb::STEP_RULES_REWARDS, c, context_), "trigger_expression",
                  "must require one event type"));
  c.set_trigger_expression("event.type == 'a' || event.type == 'b'");
  EXPECT_TRUE(Has(ValidateStep(pb::STEP_RULES_REWARDS, c, context_), "trigger_expression",
                  "must require one event type"));
  c.set_trigger_expression("event.type == 'deposit' && event.amount_fen > 'a lot'");
  EXPECT_TRUE(Has(ValidateStep(pb::STEP_RULES_REWARDS, c, context_), "trigger_expression",
                  "cannot compare number"));
  c.set_trigger_expression("event.type == 'deposit'");

  // A benefit template is not what an event campaign grants: the events service would skip it
  // and grant nothing.
  c.mutable_rewards(0)->set_benefit_template_id("bt-coupon-50");
  c.mutable_rewards(0)->set_kind(pb::REWARD_KIND_COUPON);
  FieldErrors errors = ValidateStep(pb::STEP_RULES_REWARDS, c, context_);
  EXPECT_TRUE(Has(errors, "rewards[0].benefit_template_id",
                  "POINTS, CASH_FEN or LOTTERY_CHANCE (the asset itself, not a benefit template), "
                  "not 'bt-coupon-50'"))
      << errors.ToStatus();
  EXPECT_EQ(errors.size(), 1u) << errors.ToStatus();

  // The asset, with a kind that says otherwise.
  c.mutable_rewards(0)->set_benefit_template_id("CASH_FEN");
  errors = ValidateStep(pb::STEP_RULES_REWARDS, c, context_);
  EXPECT_TRUE(Has(errors, "rewards[0].kind", "must be REWARD_KIND_CASH_FEN for a CASH_FEN reward"))
      << errors.ToStatus();
  c.mutable_rewards(0)->set_kind(pb::REWARD_KIND_CASH_FEN);
  EXPECT_TRUE(ValidateStep(pb::STEP_RULES_REWARDS, c, context_).empty());

  // Only the first item would be granted.
  auto* second = c.add_rewards();
  second->set_benefit_template_id("LOTTERY_CHANCE");
  second->set_kind(pb::REWARD_KIND_LOTTERY_CHANCE);
  second->set_quantity(1);
  errors = ValidateStep(pb::STEP_RULES_REWARDS, c, context_);
  EXPECT_TRUE(Has(errors, "rewards", "one reward item per matching event")) << errors.ToStatus();
  EXPECT_EQ(errors.size(), 1u) << errors.ToStatus();

  c.mutable_rewards()->RemoveLast();
  c.mutable_rewards(0)->set_quantity(0);
  EXPECT_TRUE(Has(ValidateStep(pb::STEP_RULES_REWARDS, c, context_), "rewards[0].quantity"));
}

// A points exchange spends an item's price_points only when it is positive: 0 or less would be a
// free exchange.
TEST_F(CampaignRulesTest, PointsExchangeItemsNeedAPrice) {
  auto c = CompleteCoupon("Exchange", now_, now_ + absl::Hours(1));
  c.set_type(pb::POINTS_EXCHANGE);
  auto* gift = c.add_rewards();
  gift->set_benefit_template_id("bt-a-gift");
  gift->set_quantity(1);
  gift->set_price_points(800);
  FieldErrors errors = ValidateStep(pb::STEP_RULES_REWARDS, c, context_);
  EXPECT_TRUE(Has(errors, "rewards[0].price_points", "at least 1")) << errors.ToStatus();
  EXPECT_EQ(errors.size(), 1u) << errors.ToStatus();

  for (int64_t price : {int64_t{-500}, int64_t{0}}) {
    c.mutable_rewards(0)->set_price_points(price);
    EXPECT_TRUE(Has(ValidateStep(pb::STEP_RULES_REWARDS, c, context_), "rewards[0].price_points",
                    "at least 1"))
        << price;
  }
  c.mutable_rewards(0)->set_price_points(kMaxPricePoints + 1);
  EXPECT_TRUE(Has(ValidateStep(pb::STEP_RULES_REWARDS, c, context_), "rewards[0].price_points",
                  "at most 1000000000"));
  for (int64_t price : {int64_t{1}, kMaxPricePoints}) {
    c.mutable_rewards(0)->set_price_points(price);
    errors = ValidateForSubmission(c, context_);
    EXPECT_TRUE(errors.empty()) << price << ": " << errors.ToStatus();
  }
}

// An exchange takes the first item with the chosen benefit template (item_id): a second item
// with the same template could never be exchanged, so it is refused, naming the earlier one.
TEST_F(CampaignRulesTest, PointsExchangeItemsHaveTheirOwnBenefitTemplate) {
  auto c = CompleteCoupon("Exchange", now_, now_ + absl::Hours(1));
  c.set_type(pb::POINTS_EXCHANGE);
  c.mutable_rewards(0)->set_price_points(5000);
  for (int64_t price : {800, 600}) {
    auto* gift = c.add_rewards();
    gift->set_benefit_template_id("bt-a-gift");
    gift->set_quantity(1);
    gift->set_price_points(price);
  }
  FieldErrors errors = ValidateStep(pb::STEP_RULES_REWARDS, c, context_);
  EXPECT_EQ(Fields(errors), std::vector<std::string>{"rewards[2].benefit_template_id"})
      << errors.ToStatus();
  EXPECT_TRUE(Has(errors, "rewards[2].benefit_template_id",
                  "benefit template 'bt-a-gift' is already offered by rewards[1]"))
      << errors.ToStatus();
  EXPECT_TRUE(Has(errors, "rewards[2].benefit_template_id", "could never be chosen"));
  EXPECT_EQ(FieldOf(errors.ToStatus()), "rewards[2].benefit_template_id");

  c.mutable_rewards(2)->set_benefit_template_id("bt-points-100");
  errors = ValidateForSubmission(c, context_);
  EXPECT_TRUE(errors.empty()) << errors.ToStatus();
}

// The benefits issuer grants at most one coupon per grant (reward_issuer.h CouponIssuePlanFor: an
// issued coupon cannot be taken back if the next one is refused) and refuses more with
// INVALID_ARGUMENT. Such a configuration used to be published, and then every claim, winning draw,
// exchange or recipient was refused; it is refused where it is configured, against the item.
// The rewards service issues coupon templates as coupons and grants the others as assets
// (points, cash, lottery chances); an item of the other kind would be refused at every grant.
TEST_F(CampaignRulesTest, ARewardsKindMustBeWhatItsTemplateGrants) {
  data_.benefits->Put("bt-a-coupon", {"bank-a", 500, pb::REWARD_KIND_COUPON, "COUPON_CASH"});
  data_.benefits->Put("bt-a-points", {"bank-a", 1, pb::REWARD_KIND_POINTS, "BENEFIT_POINTS"});

  auto claim = CompleteCoupon("Coupons", now_, now_ + absl::Hours(1));
  claim.mutable_rewards(0)->set_benefit_template_id("bt-a-coupon");  // kind: coupon (default)
  EXPECT_TRUE(ValidateForSubmission(claim, context_).empty());

  claim.mutable_rewards(0)->set_benefit_template_id("bt-a-points");
  FieldErrors errors = ValidateStep(pb::STEP_RULES_REWARDS, claim, context_);
  EXPECT_EQ(Fields(errors), std::vector<std::string>{"rewards[0].benefit_template_id"})
      << errors.ToStatus();
  EXPECT_TRUE(Has(errors, "rewards[0].benefit_template_id",
                  "benefit template 'bt-a-points' (BENEFIT_POINTS) grants points "
                  "(REWARD_KIND_POINTS), but this reward's kind is a coupon (REWARD_KIND_COUPON)"))
      << errors.ToStatus();
  EXPECT_TRUE(ValidateForSubmission(claim, context_).Mentions("rewards[0].benefit_template_id"));
  claim.mutable_rewards(0)->set_kind(pb::REWARD_KIND_POINTS);
  EXPECT_TRUE(ValidateForSubmission(claim, context_).empty());
  claim.mutable_rewards(0)->set_kind(pb::REWARD_KIND_CASH_FEN);
  EXPECT_TRUE(ValidateStep(pb::STEP_RULES_REWARDS, claim, context_)
                  .Mentions("rewards[0].benefit_template_id"));

  // A lottery's prizes and a growth task's tier rewards alike.
  auto lottery = OnePrizeLottery();
  lottery.mutable_prizes(0)->set_benefit_template_id("bt-a-points");  // kind: coupon
  EXPECT_TRUE(ValidateStep(pb::STEP_RULES_REWARDS, lottery, context_)
                  .Mentions("prizes[0].benefit_template_id"));
  lottery.mutable_prizes(0)->set_kind(pb::REWARD_KIND_POINTS);
  EXPECT_FALSE(ValidateStep(pb::STEP_RULES_REWARDS, lottery, context_)
                   .Mentions("prizes[0].benefit_template_id"));
  auto task = OneTierGrowthTask();
  task.mutable_growth_tiers(0)->mutable_rewards(0)->set_benefit_template_id("bt-a-coupon");
  task.mutable_growth_tiers(0)->mutable_rewards(0)->set_kind(pb::REWARD_KIND_POINTS);
  EXPECT_TRUE(ValidateStep(pb::STEP_RULES_REWARDS, task, context_)
                  .Mentions("growth_tiers[0].rewards[0].benefit_template_id"));

  // A catalog that does not say what a template grants leaves the kind unchecked.
  claim.mutable_rewards(0)->set_benefit_template_id("bt-points-100");
  claim.mutable_rewards(0)->set_kind(pb::REWARD_KIND_COUPON);
  EXPECT_TRUE(ValidateForSubmission(claim, context_).empty());
}

TEST(ReferenceDataTest, ABenefitsKindIsOptionalAndMustBeAKnownOne) {
  absl::StatusOr<ReferenceData> data = ParseReferenceData(
      R"({"benefits": [{"id": "p", "org": "fed", "unit_cost_fen": 1, "kind": "REWARD_KIND_POINTS"},
                       {"id": "c", "org": "fed", "unit_cost_fen": 1}]})");
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->benefits->Lookup("p")->kind, pb::REWARD_KIND_POINTS);
  EXPECT_EQ(data->benefits->Lookup("c")->kind, std::nullopt);
  absl::StatusOr<ReferenceData> bad = ParseReferenceData(
      R"({"benefits": [{"id": "p", "org": "fed", "unit_cost_fen": 1, "kind": "POINTS"}]})");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("unknown kind 'POINTS'"), std::string::npos)
      << bad.status();
}

TEST_F(CampaignRulesTest, AGrantCarriesAtMostOneCoupon) {
  // A coupon claim grants all of its items at once: one coupon, with points beside it, is fine.
  auto claim = CompleteCoupon("Coupons", now_, now_ + absl::Hours(1));
  auto* points = claim.add_rewards();
  points->set_benefit_template_id("bt-points-100");
  points->set_kind(pb::REWARD_KIND_POINTS);
  points->set_quantity(50);
  FieldErrors errors = ValidateForSubmission(claim, context_);
  EXPECT_TRUE(errors.empty()) << errors.ToStatus();

  // A second coupon item.
  pb::RewardItem gift;
  gift.set_benefit_template_id("bt-a-gift");
  gift.set_quantity(1);
  *claim.add_rewards() = gift;
  errors = ValidateStep(pb::STEP_RULES_REWARDS, claim, context_);
  EXPECT_EQ(Fields(errors), std::vector<std::string>{"rewards[2]"}) << errors.ToStatus();
  EXPECT_TRUE(Has(errors, "rewards[2]",
                  "a coupon claim grants at most one coupon and rewards[0] is one already"))
      << errors.ToStatus();
  EXPECT_EQ(errors.ToStatus().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FieldOf(errors.ToStatus()), "rewards[2]");
  EXPECT_TRUE(ValidateForSubmission(claim, context_).Mentions("rewards[2]"));
  // A third one is reported too, against the first coupon.
  *claim.add_rewards() = gift;
  errors = ValidateStep(pb::STEP_RULES_REWARDS, claim, context_);
  EXPECT_EQ(Fields(errors), (std::vector<std::string>{"rewards[2]", "rewards[3]"}))
      << errors.ToStatus();
  EXPECT_TRUE(Has(errors, "rewards[3]", "rewards[0] is one already"));

  // Two units of one coupon.
  claim.mutable_rewards()->RemoveLast();
  claim.mutable_rewards()->RemoveLast();
  claim.mutable_rewards(0)->set_quantity(2);
  errors = ValidateStep(pb::STEP_RULES_REWARDS, claim, context_);
  EXPECT_EQ(Fields(errors), std::vector<std::string>{"rewards[0].quantity"}) << errors.ToStatus();
  EXPECT_TRUE(Has(errors, "rewards[0].quantity", "a coupon reward grants one coupon: must be 1"))
      << errors.ToStatus();
  // An out-of-range quantity keeps its one error.
  claim.mutable_rewards(0)->set_quantity(2'000'000);
  errors = ValidateStep(pb::STEP_RULES_REWARDS, claim, context_);
  EXPECT_EQ(Fields(errors), std::vector<std::string>{"rewards[0].quantity"}) << errors.ToStatus();
  EXPECT_TRUE(Has(errors, "rewards[0].quantity", "at most 1000000"));

  // A batch grant gives each recipient all of its items: the same rule.
  auto batch = CompleteCoupon("Gifts", now_, now_ + absl::Hours(1));
  batch.set_type(pb::BATCH_GRANT);
  batch.mutable_limits()->Clear();
  *batch.add_rewards() = gift;
  errors = ValidateStep(pb::STEP_RULES_REWARDS, batch, context_);
  EXPECT_EQ(Fields(errors), std::vector<std::string>{"rewards[1]"}) << errors.ToStatus();
  EXPECT_TRUE(Has(errors, "rewards[1]",
                  "a batch grant gives each recipient at most one coupon and rewards[0] is one "
                  "already"))
      << errors.ToStatus();
  batch.mutable_rewards(1)->set_kind(pb::REWARD_KIND_POINTS);
  batch.mutable_rewards(1)->set_benefit_template_id("bt-points-100");
  errors = ValidateForSubmission(batch, context_);
  EXPECT_TRUE(errors.empty()) << errors.ToStatus();

  // An exchange grants the one item chosen: several coupons may be offered, one unit each.
  auto exchange = CompleteCoupon("Exchange", now_, now_ + absl::Hours(1));
  exchange.set_type(pb::POINTS_EXCHANGE);
  exchange.mutable_rewards(0)->set_price_points(500);
  *exchange.add_rewards() = gift;
  exchange.mutable_rewards(1)->set_price_points(800);
  errors = ValidateForSubmission(exchange, context_);
  EXPECT_TRUE(errors.empty()) << errors.ToStatus();
  exchange.mutable_rewards(1)->set_quantity(3);
  errors = ValidateStep(pb::STEP_RULES_REWARDS, exchange, context_);
  EXPECT_EQ(Fields(errors), std::vector<std::string>{"rewards[1].quantity"}) << errors.ToStatus();
  EXPECT_TRUE(Has(errors, "rewards[1].quantity", "a coupon reward grants one coupon: must be 1"));
  // Points are exchanged in any quantity.
  exchange.mutable_rewards(1)->set_kind(pb::REWARD_KIND_POINTS);
  exchange.mutable_rewards(1)->set_benefit_template_id("bt-points-100");
  errors = ValidateForSubmission(exchange, context_);
  EXPECT_TRUE(errors.empty()) << errors.ToStatus();

  // A draw wins one prize: several coupon prizes, one unit each.
  auto lottery = OnePrizeLottery();
  lottery.mutable_prizes(0)->set_benefit_template_id("bt-coupon-50");
  auto* second = lottery.add_prizes();
  second->set_name("gift");
  second->set_benefit_template_id("bt-a-gift");
  second->set_quantity(1);
  second->set_probability_bp(2000);
  second->set_fallback(true);
  errors = ValidateForSubmission(lottery, context_);
  EXPECT_TRUE(errors.empty()) << errors.ToStatus();
  second->set_quantity(2);
  errors = ValidateStep(pb::STEP_RULES_REWARDS, lottery, context_);
  EXPECT_EQ(Fields(errors), std::vector<std::string>{"prizes[1].quantity"}) << errors.ToStatus();
  EXPECT_TRUE(Has(errors, "prizes[1].quantity", "a coupon prize is one coupon: must be 1"))
      << errors.ToStatus();
  second->set_kind(pb::REWARD_KIND_POINTS);
  second->set_benefit_template_id("bt-points-100");
  errors = ValidateForSubmission(lottery, context_);
  EXPECT_TRUE(errors.empty()) << errors.ToStatus();
}

// A negative points_valid_days used to mean the default (365 days); more than ten years is
// refused by the ledger at every grant; on anything but points, and on an event campaign (the
// events service does not read it), it would be ignored. 0 keeps its meaning.
TEST_F(CampaignRulesTest, PointsValidDaysMayNotBeNegativeOrIgnored) {
  auto coupon = CompleteCoupon("Points", now_, now_ + absl::Hours(1));
  coupon.mutable_rewards(0)->set_benefit_template_id("bt-points-100");
  coupon.mutable_rewards(0)->set_kind(pb::REWARD_KIND_POINTS);
  for (int32_t days : {0, 1, 30, kMaxPointsValidDays}) {
    coupon.mutable_rewards(0)->set_points_valid_days(days);
    FieldErrors errors = ValidateForSubmission(coupon, context_);
    EXPECT_TRUE(errors.empty()) << days << ": " << errors.ToStatus();
  }
  coupon.mutable_rewards(0)->set_points_valid_days(-1);
  FieldErrors errors = ValidateStep(pb::STEP_RULES_REWARDS, coupon, context_);
  EXPECT_EQ(Fields(errors), std::vector<std::string>{"rewards[0].points_valid_days"})
      << errors.ToStatus();
  EXPECT_TRUE(
      Has(errors, "rewards[0].points_valid_days", "must not be negative (0 means 365 days)"));
  EXPECT_EQ(FieldOf(errors.ToStatus()), "rewards[0].points_valid_days");
  coupon.mutable_rewards(0)->set_points_valid_days(kMaxPointsValidDays + 1);
  EXPECT_TRUE(Has(ValidateStep(pb::STEP_RULES_REWARDS, coupon, context_),
                  "rewards[0].points_valid_days", "at most 3650"));
  coupon.mutable_rewards(0)->set_points_valid_days(30);
  coupon.mutable_rewards(0)->set_kind(pb::REWARD_KIND_COUPON);
  EXPECT_TRUE(Has(ValidateStep(pb::STEP_RULES_REWARDS, coupon, context_),
                  "rewards[0].points_valid_days",
                  "only points expire: leave it 0 for a REWARD_KIND_COUPON reward"));

  // The same for a lottery's prizes and an asset-growth tier's rewards.
  auto lottery = OnePrizeLottery();
  auto* prize = lottery.mutable_prizes(0);
  prize->set_kind(pb::REWARD_KIND_POINTS);
  prize->set_quantity(100);
  prize->set_points_valid_days(90);
  errors = ValidateForSubmission(lottery, context_);
  EXPECT_TRUE(errors.empty()) << errors.ToStatus();
  prize->set_points_valid_days(-30);
  EXPECT_TRUE(Has(ValidateStep(pb::STEP_RULES_REWARDS, lottery, context_),
                  "prizes[0].points_valid_days", "must not be negative"));

  auto task = OneTierGrowthTask();
  auto* tier_reward = task.mutable_growth_tiers(0)->mutable_rewards(0);
  tier_reward->set_kind(pb::REWARD_KIND_POINTS);
  tier_reward->set_points_valid_days(180);
  errors = ValidateForSubmission(task, context_);
  EXPECT_TRUE(errors.empty()) << errors.ToStatus();
  tier_reward->set_points_valid_days(-1);
  EXPECT_TRUE(Has(ValidateStep(pb::STEP_RULES_REWARDS, task, context_),
                  "growth_tiers[0].rewards[0].points_valid_days", "must not be negative"));

  auto event = CompleteEvent(now_, now_ + absl::Hours(1));
  event.mutable_rewards(0)->set_points_valid_days(30);
  errors = ValidateStep(pb::STEP_RULES_REWARDS, event, context_);
  EXPECT_TRUE(Has(errors, "rewards[0].points_valid_days", "valid 365 days")) << errors.ToStatus();
  EXPECT_EQ(errors.size(), 1u) << errors.ToStatus();
}

// Proto3 keeps a kind number it does not know, and the issuer would grant a coupon for it: an
// unknown kind is refused on items, prizes and tier rewards. Every named kind stays valid.
TEST_F(CampaignRulesTest, UnknownRewardKindsAreFieldErrors) {
  const auto unknown = static_cast<pb::RewardKind>(7);
  auto coupon = CompleteCoupon("Coupons", now_, now_ + absl::Hours(1));
  for (pb::RewardKind kind : {pb::REWARD_KIND_COUPON, pb::REWARD_KIND_POINTS,
                              pb::REWARD_KIND_CASH_FEN, pb::REWARD_KIND_LOTTERY_CHANCE}) {
    coupon.mutable_rewards(0)->set_kind(kind);
    FieldErrors errors = ValidateForSubmission(coupon, context_);
    EXPECT_TRUE(errors.empty()) << pb::RewardKind_Name(kind) << ": " << errors.ToStatus();
  }
  for (pb::CampaignType type : {pb::COUPON_CLAIM, pb::POINTS_EXCHANGE, pb::BATCH_GRANT}) {
    auto c = coupon;
    c.set_type(type);
    if (type == pb::POINTS_EXCHANGE) c.mutable_rewards(0)->set_price_points(100);
    if (type == pb::BATCH_GRANT) c.mutable_limits()->Clear();
    c.mutable_rewards(0)->set_kind(unknown);
    FieldErrors errors = ValidateStep(pb::STEP_RULES_REWARDS, c, context_);
    EXPECT_EQ(Fields(errors), std::vector<std::string>{"rewards[0].kind"})
        << pb::CampaignType_Name(type) << ": " << errors.ToStatus();
    EXPECT_TRUE(Has(errors, "rewards[0].kind",
                    "is not a reward kind (7): REWARD_KIND_COUPON (the default), "
                    "REWARD_KIND_POINTS, REWARD_KIND_CASH_FEN or REWARD_KIND_LOTTERY_CHANCE"))
        << errors.ToStatus();
    EXPECT_EQ(FieldOf(errors.ToStatus()), "rewards[0].kind");
  }

  auto lottery = OnePrizeLottery();
  lottery.mutable_prizes(0)->set_kind(unknown);
  FieldErrors errors = ValidateStep(pb::STEP_RULES_REWARDS, lottery, context_);
  EXPECT_EQ(Fields(errors), std::vector<std::string>{"prizes[0].kind"}) << errors.ToStatus();

  auto task = OneTierGrowthTask();
  task.mutable_growth_tiers(0)->mutable_rewards(0)->set_kind(static_cast<pb::RewardKind>(-1));
  errors = ValidateStep(pb::STEP_RULES_REWARDS, task, context_);
  EXPECT_EQ(Fields(errors), std::vector<std::string>{"growth_tiers[0].rewards[0].kind"})
      << errors.ToStatus();
  EXPECT_TRUE(Has(errors, "growth_tiers[0].rewards[0].kind", "is not a reward kind (-1)"));

  // An event campaign's kind must match its asset, which an unknown kind never does.
  auto event = CompleteEvent(now_, now_ + absl::Hours(1));
  event.mutable_rewards(0)->set_kind(unknown);
  EXPECT_TRUE(Has(ValidateStep(pb::STEP_RULES_REWARDS, event, context_), "rewards[0].kind",
                  "must be REWARD_KIND_POINTS"));
}

// Negative stock or daily caps used to mean "no limit", negative draw settings the defaults, and
// a second fallback prize was never used: each is a field error now; 0 keeps its meaning.
// Decision 036: a field the type never reads is refused on save, naming it, instead of being
// stored and ignored (an event campaign's daily limit, a coupon claim's price, a lottery's
// trigger condition, a batch grant's limits).
TEST_F(CampaignRulesTest, FieldsTheTypeNeverReadsAreRefused) {
  auto event = CompleteEvent(now_, now_ + absl::Hours(1));
  event.mutable_limits()->set_per_customer_total(1);  // the events service applies this one
  EXPECT_TRUE(ValidateForSubmission(event, context_).empty());
  event.mutable_limits()->set_per_customer_daily(1);
  event.mutable_limits()->set_per_customer_weekly(1);
  event.mutable_limits()->set_global_total(1000);
  event.mutable_limits()->set_per_org_total(10);
  event.mutable_limits()->set_free_draws_per_day(1);
  event.mutable_rewards(0)->set_price_points(500);
  event.set_exclusion_group("spring");
  FieldErrors errors = ValidateForSubmission(event, context_);
  EXPECT_EQ(Fields(errors),
            (std::vector<std::string>{"exclusion_group", "limits.per_customer_daily",
                                      "limits.per_customer_weekly", "limits.global_total",
                                      "limits.per_org_total", "limits.free_draws_per_day",
                                      "rewards[0].price_points"}))
      << errors.ToStatus();
  EXPECT_TRUE(Has(errors, "limits.per_customer_daily", "limits.per_customer_total"));
  EXPECT_TRUE(Has(errors, "exclusion_group", "not participations"));

  auto claim = CompleteCoupon("Coupons", now_, now_ + absl::Hours(1));
  claim.mutable_limits()->set_per_customer_daily(1);  // a claim applies every limit
  claim.mutable_limits()->set_global_total(100);
  claim.set_exclusion_group("spring");
  EXPECT_TRUE(ValidateForSubmission(claim, context_).empty());
  claim.mutable_rewards(0)->set_price_points(500);
  claim.mutable_limits()->set_chances_per_draw(2);
  claim.set_trigger_expression("event.type == \"deposit\"");
  errors = ValidateForSubmission(claim, context_);
  EXPECT_EQ(Fields(errors),
            (std::vector<std::string>{"limits.chances_per_draw", "trigger_expression",
                                      "rewards[0].price_points"}))
      << errors.ToStatus();
  EXPECT_TRUE(Has(errors, "rewards[0].price_points", "only a points exchange"));
  EXPECT_TRUE(Has(errors, "trigger_expression", "audience"));

  auto batch = CompleteCoupon("Gifts", now_, now_ + absl::Hours(1));
  batch.set_type(pb::BATCH_GRANT);
  EXPECT_TRUE(ValidateForSubmission(batch, context_).empty());
  batch.mutable_limits()->set_per_customer_total(2);
  batch.mutable_limits()->set_global_total(100);
  batch.set_exclusion_group("spring");
  errors = ValidateForSubmission(batch, context_);
  EXPECT_EQ(Fields(errors),
            (std::vector<std::string>{"exclusion_group", "limits.per_customer_total",
                                      "limits.global_total"}))
      << errors.ToStatus();
  EXPECT_TRUE(Has(errors, "limits.global_total", "narrow the audience"));

  auto task = OneTierGrowthTask();
  task.mutable_growth_tiers(0)->mutable_rewards(0)->set_price_points(1);
  EXPECT_TRUE(
      Has(ValidateForSubmission(task, context_), "growth_tiers[0].rewards[0].price_points"));
}

// Decision 036: an edit of a published campaign keeps what its history is counted by.
TEST_F(CampaignRulesTest, AnEditOfAPublishedCampaignKeepsWhatItsCountsAreKeptBy) {
  // A lottery: weights, stock, caps and new prizes at the end may change; a prize's place and
  // what it grants may not.
  auto live = OnePrizeLottery();
  auto* second = live.add_prizes();
  second->set_name("second");
  second->set_benefit_template_id("bt-points-100");
  second->set_quantity(5);
  second->set_probability_bp(2000);
  auto edit = live;
  edit.mutable_prizes(0)->set_probability_bp(500);
  edit.mutable_prizes(0)->set_stock(10);
  edit.mutable_prizes(1)->set_daily_release_cap(3);
  *edit.add_prizes() = live.prizes(0);
  edit.mutable_prizes(2)->set_name("third");
  EXPECT_TRUE(CheckEditOfLive(live, edit).empty()) << CheckEditOfLive(live, edit).ToStatus();
  edit = live;
  edit.mutable_prizes(1)->set_benefit_template_id("bt-coupon-5");  // another prize in place 1
  EXPECT_EQ(Fields(CheckEditOfLive(live, edit)),
            std::vector<std::string>{"prizes[1].benefit_template_id"});
  edit = live;
  edit.mutable_prizes()->SwapElements(0, 1);  // same templates, but kinds and places move
  edit.mutable_prizes(0)->set_kind(pb::REWARD_KIND_POINTS);
  EXPECT_FALSE(CheckEditOfLive(live, edit).empty());
  edit = live;
  edit.mutable_prizes()->RemoveLast();
  EXPECT_TRUE(Has(CheckEditOfLive(live, edit), "prizes", "keeps its 2 prizes"));

  // A batch grant keeps its rewards (a resent grant must be the same); its other fields may change.
  auto batch = CompleteCoupon("Gifts", now_, now_ + absl::Hours(1));
  batch.set_type(pb::BATCH_GRANT);
  auto batch_edit = batch;
  batch_edit.set_name("Gifts, renamed");
  batch_edit.mutable_rewards(0)->set_unit_cost_fen(
      5000);  // the price is the service's, not an edit
  EXPECT_TRUE(CheckEditOfLive(batch, batch_edit).empty());
  batch_edit.mutable_rewards(0)->set_quantity(2);
  EXPECT_EQ(Fields(CheckEditOfLive(batch, batch_edit)), std::vector<std::string>{"rewards"});
  auto claim = CompleteCoupon("Coupons", now_, now_ + absl::Hours(1));
  auto claim_edit = claim;
  claim_edit.mutable_rewards(0)->set_quantity(2);
  EXPECT_TRUE(CheckEditOfLive(claim, claim_edit).empty()) << "a claim's retries use its version";

  // The type never changes.
  edit = live;
  edit.set_type(pb::COUPON_CLAIM);
  EXPECT_TRUE(Has(CheckEditOfLive(live, edit), "type", "keeps its type (LOTTERY)"));

  // An asset-growth task: tiers keep their thresholds; higher ones may follow.
  auto task = OneTierGrowthTask();
  auto task_edit = task;
  task_edit.mutable_growth_tiers(0)->mutable_rewards(0)->set_quantity(20);
  task_edit.add_growth_tiers()->set_min_growth_fen(5'000'000);
  EXPECT_TRUE(CheckEditOfLive(task, task_edit).empty());
  task_edit = task;
  task_edit.mutable_growth_tiers(0)->set_min_growth_fen(500'000);  // a lower tier in place 0
  EXPECT_EQ(Fields(CheckEditOfLive(task, task_edit)),
            std::vector<std::string>{"growth_tiers[0].min_growth_fen"});
  task_edit.clear_growth_tiers();
  EXPECT_EQ(Fields(CheckEditOfLive(task, task_edit)), std::vector<std::string>{"growth_tiers"});

  // An event campaign: kind, window and tier thresholds stay.
  auto event = CompleteEvent(now_, now_ + absl::Hours(1));
  event.clear_rewards();
  event.mutable_event_trigger()->set_kind(pb::TRIGGER_CUMULATIVE_AMOUNT);
  event.mutable_event_trigger()->set_window(pb::TRIGGER_WINDOW_CALENDAR_MONTH);
  auto* tier = event.mutable_event_trigger()->add_tiers();
  tier->set_threshold_fen(100'000);
  tier->mutable_reward()->set_benefit_template_id("POINTS");
  tier->mutable_reward()->set_kind(pb::REWARD_KIND_POINTS);
  tier->mutable_reward()->set_quantity(100);
  auto event_edit = event;
  event_edit.mutable_event_trigger()->mutable_tiers(0)->mutable_reward()->set_quantity(150);
  *event_edit.mutable_event_trigger()->add_tiers() = event.event_trigger().tiers(0);
  event_edit.mutable_event_trigger()->mutable_tiers(1)->set_threshold_fen(300'000);
  EXPECT_TRUE(CheckEditOfLive(event, event_edit).empty());
  event_edit = event;
  event_edit.mutable_event_trigger()->mutable_tiers(0)->set_threshold_fen(50'000);
  EXPECT_EQ(Fields(CheckEditOfLive(event, event_edit)),
            std::vector<std::string>{"event_trigger.tiers[0].threshold_fen"});
  event_edit = event;
  event_edit.mutable_event_trigger()->set_window(pb::TRIGGER_WINDOW_CAMPAIGN);
  EXPECT_EQ(Fields(CheckEditOfLive(event, event_edit)),
            std::vector<std::string>{"event_trigger.window"});
  event_edit = event;
  event_edit.mutable_event_trigger()->set_kind(pb::TRIGGER_EVERY_MATCH);
  EXPECT_EQ(Fields(CheckEditOfLive(event, event_edit)),
            std::vector<std::string>{"event_trigger.kind"});
}

TEST_F(CampaignRulesTest, LotteryLimitsMayNotBeNegativeAndOneFallbackAtMost) {
  auto c = CompleteCoupon("Draw", now_, now_ + absl::Hours(1));
  c.set_type(pb::LOTTERY);
  c.clear_rewards();
  for (const char* name : {"top", "middle", "consolation"}) {
    auto* p = c.add_prizes();
    p->set_name(name);
    p->set_benefit_template_id("bt-points-100");
    p->set_quantity(1);
    p->set_probability_bp(1000);
  }
  c.mutable_prizes(0)->set_stock(20);
  c.mutable_prizes(0)->set_daily_release_cap(5);
  c.mutable_prizes(2)->set_fallback(true);
  c.mutable_limits()->set_free_draws_per_day(1);
  c.mutable_limits()->set_chances_per_draw(2);
  FieldErrors errors = ValidateForSubmission(c, context_);
  EXPECT_TRUE(errors.empty()) << errors.ToStatus();

  c.mutable_prizes(1)->set_stock(-1);
  c.mutable_prizes(1)->set_daily_release_cap(-5);
  c.mutable_prizes(1)->set_fallback(true);
  c.mutable_limits()->set_free_draws_per_day(-1);
  c.mutable_limits()->set_chances_per_draw(-2);
  errors = ValidateStep(pb::STEP_RULES_REWARDS, c, context_);
  EXPECT_EQ(Fields(errors),
            (std::vector<std::string>{"limits.free_draws_per_day", "limits.chances_per_draw",
                                      "prizes[1].stock", "prizes[1].daily_release_cap",
                                      "prizes[2].fallback"}))
      << errors.ToStatus();
  EXPECT_TRUE(Has(errors, "prizes[1].stock", "must not be negative (0 means no limit)"));
  EXPECT_TRUE(Has(errors, "prizes[1].daily_release_cap", "0 means no daily cap"));
  EXPECT_TRUE(Has(errors, "prizes[2].fallback", "prizes[1] is already the fallback"));
  EXPECT_TRUE(Has(errors, "limits.free_draws_per_day", "0 means no free draws"));
  EXPECT_TRUE(Has(errors, "limits.chances_per_draw", "0 means 1 chance"));
  EXPECT_EQ(FieldOf(errors.ToStatus()), "limits.free_draws_per_day");
}

// Every free-text field of a configuration ends up in the campaign's jsonb body, which cannot hold
// a NUL: each one, in every configuration shape, refuses it as a field error on that very field.
// Walks the message by reflection, so a string field added later without a check fails here.
TEST_F(CampaignRulesTest, EveryTextFieldRefusesNul) {
  auto coupon = CompleteCoupon("Coupons", now_, now_ + absl::Hours(1));
  coupon.set_plan_id("plan-1");
  coupon.set_description("All customers");
  coupon.set_exclusion_group("spring");
  coupon.mutable_audience()->add_exclude()->set_segment_id("seg-a2");

  const auto lottery = OnePrizeLottery();
  auto task = OneTierGrowthTask();
  task.mutable_growth_tiers(0)->mutable_rewards(0)->set_kind(pb::REWARD_KIND_POINTS);

  int checked = 0;
  for (const pb::CampaignConfig& base :
       {coupon, lottery, task, CompleteEvent(now_, now_ + absl::Hours(1))}) {
    ASSERT_TRUE(ValidateForSubmission(base, context_).empty())
        << ValidateForSubmission(base, context_).ToStatus();
    // Every string field of every message present in `base`, with its path as errors name it.
    std::vector<std::pair<std::string, std::function<void(pb::CampaignConfig&)>>> fields;
    std::function<void(const google::protobuf::Message&, const std::string&,
                       std::function<google::protobuf::Message*(pb::CampaignConfig&)>)>
        walk = [&](const google::protobuf::Message& m, const std::string& prefix,
                   std::function<google::protobuf::Message*(pb::CampaignConfig&)> locate) {
          const auto* d = m.GetDescriptor();
          const auto* r = m.GetReflection();
          for (int i = 0; i < d->field_count(); ++i) {
            const auto* f = d->field(i);
            const std::string path = prefix + f->name();
            if (f->type() == google::protobuf::FieldDescriptor::TYPE_STRING) {
              ASSERT_FALSE(f->is_repeated()) << path << ": a repeated string nobody checks yet";
              fields.emplace_back(path, [=](pb::CampaignConfig& c) {
                google::protobuf::Message* target = locate(c);
                const std::string value = target->GetReflection()->GetString(*target, f);
                target->GetReflection()->SetString(target, f, value + std::string("\0x", 2));
              });
            } else if (f->type() == google::protobuf::FieldDescriptor::TYPE_MESSAGE &&
                       f->message_type()->file() == d->file()) {
              if (f->is_repeated()) {
                for (int k = 0; k < r->FieldSize(m, f); ++k) {
                  walk(r->GetRepeatedMessage(m, f, k), path + "[" + std::to_string(k) + "].",
                       [=](pb::CampaignConfig& c) {
                         google::protobuf::Message* parent = locate(c);
                         return parent->GetReflection()->MutableRepeatedMessage(parent, f, k);
                       });
                }
              } else if (r->HasField(m, f)) {
                walk(r->GetMessage(m, f), path + ".", [=](pb::CampaignConfig& c) {
                  google::protobuf::Message* parent = locate(c);
                  return parent->GetReflection()->MutableMessage(parent, f);
                });
              }
            }
          }
        };
    walk(base, "", [](pb::CampaignConfig& c) { return &c; });
    for (const auto& [path, inject] : fields) {
      pb::CampaignConfig c = base;
      inject(c);
      FieldErrors errors = ValidateForSubmission(c, context_);
      EXPECT_TRUE(std::any_of(errors.entries().begin(), errors.entries().end(),
                              [&](const auto& e) { return e.field == path; }))
          << pb::CampaignType_Name(base.type()) << " " << path << ": " << errors.ToStatus();
      ++checked;
    }
  }
  // name, plan_id, department, description, exclusion_group, segment ids, trigger_expression,
  // benefit template ids, prize names, channel codes and contents, in the four shapes.
  EXPECT_GE(checked, 50);
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
