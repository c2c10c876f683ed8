// The events service's defence against an event whose data the database refuses (a value
// validation did not foresee): the batch is applied in parts until that event stands alone, it is
// set aside for the dead-letter topic, and the rest of the batch is applied in order. Transient
// failures are never taken for refusals.
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "libs/core/status.h"
#include "services/events/event_store.h"
#include "services/events/events_service.h"

namespace mkt::events {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::IsEmpty;

// A store stand-in over events 0..n-1: a range holding a poisoned event fails with a data
// exception (as PostgreSQL's 22P02 would), `transient_at` fails the n-th call with ABORTED.
struct FakeBatches {
  std::set<size_t> poisoned;
  int transient_at = -1;
  int calls = 0;
  std::vector<size_t> applied;
  std::vector<size_t> refused;
  std::vector<std::string> reasons;

  absl::Status Apply(size_t begin, size_t end) {
    if (calls++ == transient_at) {
      return absl::AbortedError("transaction aborted by a concurrent one: deadlock detected");
    }
    for (size_t i = begin; i < end; ++i) {
      if (poisoned.count(i) > 0) {
        return DataException("22P02", "PostgreSQL error 22P02: malformed array literal");
      }
    }
    for (size_t i = begin; i < end; ++i) applied.push_back(i);
    return absl::OkStatus();
  }

  absl::Status Run(size_t count) {
    return ApplyIsolatingRefusedEvents(
        count, [this](size_t b, size_t e) { return Apply(b, e); },
        [this](size_t i, const absl::Status& s) {
          refused.push_back(i);
          reasons.emplace_back(s.message());
        });
  }
};

std::vector<size_t> AllBut(size_t n, const std::set<size_t>& skip) {
  std::vector<size_t> out;
  for (size_t i = 0; i < n; ++i) {
    if (skip.count(i) == 0) out.push_back(i);
  }
  return out;
}

TEST(ApplyIsolatingRefusedEventsTest, AGoodBatchIsOneTransaction) {
  FakeBatches f;
  EXPECT_TRUE(f.Run(500).ok());
  EXPECT_EQ(f.calls, 1);
  EXPECT_EQ(f.applied.size(), 500u);
  EXPECT_THAT(f.refused, IsEmpty());
}

TEST(ApplyIsolatingRefusedEventsTest, OneRefusedEventIsSetAsideAndTheOthersAppliedOnceInOrder) {
  for (size_t bad : {size_t{0}, size_t{1}, size_t{250}, size_t{499}}) {
    FakeBatches f;
    f.poisoned = {bad};
    ASSERT_TRUE(f.Run(500).ok());
    EXPECT_THAT(f.refused, ElementsAre(bad));
    EXPECT_THAT(f.reasons, ElementsAre("PostgreSQL error 22P02: malformed array literal"));
    EXPECT_THAT(f.applied, ElementsAreArray(AllBut(500, {bad})));
    // Bisection: two transactions per level, not one per event.
    EXPECT_LE(f.calls, 1 + 2 * 9);
  }
}

TEST(ApplyIsolatingRefusedEventsTest, SeveralRefusedEventsEvenAll) {
  FakeBatches f;
  f.poisoned = {3, 4, 17, 18, 19, 31};
  ASSERT_TRUE(f.Run(32).ok());
  EXPECT_THAT(f.refused, ElementsAre(3, 4, 17, 18, 19, 31));
  EXPECT_THAT(f.applied, ElementsAreArray(AllBut(32, f.poisoned)));

  FakeBatches all;
  for (size_t i = 0; i < 7; ++i) all.poisoned.insert(i);
  ASSERT_TRUE(all.Run(7).ok());
  EXPECT_THAT(all.refused, ElementsAre(0, 1, 2, 3, 4, 5, 6));
  EXPECT_THAT(all.applied, IsEmpty());

  FakeBatches single;
  single.poisoned = {0};
  ASSERT_TRUE(single.Run(1).ok());
  EXPECT_THAT(single.refused, ElementsAre(0));
  EXPECT_EQ(single.calls, 1);
}

TEST(ApplyIsolatingRefusedEventsTest, TransientFailuresAreReturnedNeverRefused) {
  // At once: the whole batch is retried by the consumer, nothing is set aside.
  FakeBatches first;
  first.transient_at = 0;
  absl::Status s = first.Run(10);
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted);
  EXPECT_THAT(first.refused, IsEmpty());
  EXPECT_THAT(first.applied, IsEmpty());

  // In the middle of the search: what was applied stays (a retry finds it deduplicated), the
  // failure is returned, and the part that failed is not taken for refused data.
  FakeBatches middle;
  middle.poisoned = {7};
  middle.transient_at = 2;  // 0: whole batch (refused), 1: [0,5) applied, 2: [5,10) aborted
  s = middle.Run(10);
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted);
  EXPECT_THAT(middle.applied, ElementsAre(0, 1, 2, 3, 4));
  EXPECT_THAT(middle.refused, IsEmpty());

  // Errors that are not data exceptions (INTERNAL, UNAVAILABLE) are never bisected either.
  int calls = 0;
  std::vector<size_t> refused;
  for (absl::Status failure : {Internal("PostgreSQL error 42P01: relation does not exist"),
                               Unavailable("lost the connection to PostgreSQL")}) {
    EXPECT_EQ(ApplyIsolatingRefusedEvents(
                  8,
                  [&](size_t, size_t) {
                    ++calls;
                    return failure;
                  },
                  [&](size_t i, const absl::Status&) { refused.push_back(i); }),
              failure);
  }
  EXPECT_EQ(calls, 2);
  EXPECT_THAT(refused, IsEmpty());
}

TEST(DataExceptionTest, CarriesItsSqlState) {
  absl::Status s = DataException("22P05", "unsupported Unicode escape sequence");
  EXPECT_TRUE(IsDataException(s));
  EXPECT_EQ(DataExceptionSqlState(s), "22P05");
  EXPECT_FALSE(IsDataException(Internal("PostgreSQL error 22P02: malformed array literal")));
  EXPECT_FALSE(IsDataException(absl::InvalidArgumentError("x")));
  EXPECT_FALSE(IsDataException(absl::OkStatus()));
}

// Decision 034: a campaign's rule charges its budget quantity × the unit cost set on its submitted
// version on each reward; a cost no grant can carry makes the change unusable, naming the field.
TEST(RuleFromCampaignTest, RewardsChargeTheirApprovedUnitCost) {
  namespace cpb = ::marketing::campaigns::v1;
  cpb::CampaignChanged change;
  change.set_campaign_id("cmp-1");
  change.set_org_id("bank-a");
  change.set_revision(4);
  change.set_state(cpb::ONLINE);
  cpb::CampaignConfig* config = change.mutable_config();
  config->set_type(cpb::EVENT_TRIGGER);
  config->set_trigger_expression("event.type == \"deposit.made\"");
  config->mutable_event_trigger()->set_kind(cpb::TRIGGER_CUMULATIVE_AMOUNT);
  for (const auto& [asset, quantity, unit] :
       {std::tuple<std::string, int64_t, int64_t>{"POINTS", 200, 2},
        {"CASH_FEN", 888, 1},
        {"LOTTERY_CHANCE", 1, 0}}) {
    cpb::TriggerTier* tier = config->mutable_event_trigger()->add_tiers();
    tier->set_threshold_fen(100000 * config->event_trigger().tiers_size());
    tier->mutable_reward()->set_benefit_template_id(asset);
    tier->mutable_reward()->set_quantity(quantity);
    tier->mutable_reward()->set_unit_cost_fen(unit);
  }
  absl::StatusOr<std::optional<pb::TriggerRule>> rule = RuleFromCampaign(change);
  ASSERT_TRUE(rule.ok()) << rule.status();
  ASSERT_TRUE(rule->has_value());
  ASSERT_EQ((*rule)->tiers_size(), 3);
  EXPECT_EQ((*rule)->kind(), pb::CUMULATIVE_AMOUNT);
  EXPECT_EQ((*rule)->tiers(0).reward().budget_cost_fen(), 400);
  EXPECT_EQ((*rule)->tiers(1).reward().budget_cost_fen(), 888);
  EXPECT_EQ((*rule)->tiers(2).reward().budget_cost_fen(), 0);

  // A version approved before decision 034 carries no unit cost and charges nothing.
  config->mutable_event_trigger()->mutable_tiers(0)->mutable_reward()->clear_unit_cost_fen();
  rule = RuleFromCampaign(change);
  ASSERT_TRUE(rule.ok()) << rule.status();
  EXPECT_EQ((*rule)->tiers(0).reward().budget_cost_fen(), 0);

  for (int64_t unit : {int64_t{-1}, int64_t{9'000'000'000'000'000}}) {
    config->mutable_event_trigger()->mutable_tiers(0)->mutable_reward()->set_unit_cost_fen(unit);
    rule = RuleFromCampaign(change);
    EXPECT_EQ(rule.status().code(), absl::StatusCode::kInvalidArgument) << unit;
    EXPECT_THAT(std::string(rule.status().message()),
                ::testing::HasSubstr("quantity times unit cost must be 0.."));
    EXPECT_EQ(FieldOf(rule.status()), "event_trigger.tiers[0].reward.unit_cost_fen");
  }

  // An every-match campaign: its one reward item.
  config->clear_event_trigger();
  cpb::RewardItem* item = config->add_rewards();
  item->set_benefit_template_id("POINTS");
  item->set_quantity(300);
  item->set_unit_cost_fen(1);
  rule = RuleFromCampaign(change);
  ASSERT_TRUE(rule.ok()) << rule.status();
  EXPECT_EQ((*rule)->reward().budget_cost_fen(), 300);
  EXPECT_EQ((*rule)->reward().quantity(), 300);
}

}  // namespace
}  // namespace mkt::events
