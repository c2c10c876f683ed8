#include "services/events/rules.h"

#include <cstdint>
#include <limits>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "libs/core/money.h"

namespace mkt::events {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

pb::TriggerRule Cumulative(std::vector<int64_t> thresholds) {
  pb::TriggerRule r;
  r.set_rule_id("r1");
  r.set_campaign_id("c1");
  r.set_org_id("bank-a");
  r.set_event_type("credit_card.spend");
  r.set_kind(pb::CUMULATIVE_AMOUNT);
  r.set_window(pb::CALENDAR_MONTH);
  r.set_active(true);
  for (int64_t t : thresholds) {
    auto* tier = r.add_tiers();
    tier->set_threshold_fen(t);
    tier->mutable_reward()->set_asset(::marketing::rewards::v1::POINTS);
    tier->mutable_reward()->set_quantity(t / 100);
  }
  return r;
}

TEST(ApplyMatchTest, TiersAreGrantedOnceEachWhateverTheOrder) {
  const pb::TriggerRule rule = Cumulative({100000, 300000});
  for (std::vector<int64_t> order :
       {std::vector<int64_t>{50000, 60000, 200000}, std::vector<int64_t>{200000, 60000, 50000},
        std::vector<int64_t>{60000, 200000, 50000}}) {
    Aggregate agg, grants;
    std::vector<int> granted;
    for (int64_t amount : order) {
      for (int t : ApplyMatch(rule, amount, agg, grants).grant_tiers) granted.push_back(t);
    }
    std::sort(granted.begin(), granted.end());
    EXPECT_THAT(granted, ElementsAre(0, 1));
    EXPECT_EQ(agg.amount_fen, 310000);
    EXPECT_EQ(agg.tiers_granted, 3);
    EXPECT_EQ(grants.count, 2);
  }
}

TEST(ApplyMatchTest, OneBigEventReachesSeveralTiersAtOnce) {
  Aggregate agg, grants;
  EXPECT_THAT(ApplyMatch(Cumulative({100, 200, 300}), 250, agg, grants).grant_tiers,
              ElementsAre(0, 1));
}

TEST(ApplyReversalTest, ARefundBelowAThresholdLosesThatTierOnly) {
  const pb::TriggerRule rule = Cumulative({100000, 300000});
  Aggregate agg, grants;
  ApplyMatch(rule, 320000, agg, grants);
  EXPECT_THAT(ApplyReversal(rule, 0, 30000, agg), ElementsAre(1));
  EXPECT_EQ(agg.amount_fen, 290000);
  EXPECT_EQ(agg.tiers_granted, 1);
  EXPECT_THAT(ApplyReversal(rule, 0, 200000, agg), ElementsAre(0));
  EXPECT_EQ(agg.tiers_granted, 0);
  // Spending again earns the tiers again.
  EXPECT_THAT(ApplyMatch(rule, 220000, agg, grants).grant_tiers, ElementsAre(0, 1));
}

TEST(ApplyMatchTest, FirstTimeGrantsOnlyTheFirst) {
  pb::TriggerRule rule = Cumulative({1});
  rule.set_kind(pb::FIRST_TIME);
  Aggregate agg, grants;
  EXPECT_THAT(ApplyMatch(rule, 0, agg, grants).grant_tiers, ElementsAre(0));
  EXPECT_THAT(ApplyMatch(rule, 0, agg, grants).grant_tiers, IsEmpty());
}

// Decision 010, amended: a loan cancelled in its cooling-off period takes its first-time grant
// with it; with no counted event left, the customer's next loan is the first.
TEST(ApplyReversalTest, CancellingTheOnlyFirstTimeEventMakesTheNextOneTheFirst) {
  pb::TriggerRule rule = Cumulative({1});
  rule.set_kind(pb::FIRST_TIME);
  Aggregate agg, grants;
  EXPECT_THAT(ApplyMatch(rule, 0, agg, grants).grant_tiers, ElementsAre(0));
  const std::vector<int> lost = ApplyReversal(rule, 1, 0, agg);
  EXPECT_THAT(lost, ElementsAre(0));
  EXPECT_EQ(agg.count, 0);
  EXPECT_EQ(agg.tiers_granted, 0);
  EXPECT_TRUE(ClawsBack(rule, /*cancelled=*/true, lost, /*grant_of_reversed_event=*/true, 0));
  grants.count = 0;  // given back by the clawback (EventStore)
  MatchEffect next = ApplyMatch(rule, 0, agg, grants);
  EXPECT_THAT(next.grant_tiers, ElementsAre(0));
  EXPECT_THAT(next.decision, ::testing::HasSubstr("first matching event"));

  // While another counted event is left, the next one is not the first.
  Aggregate two, two_grants;
  EXPECT_THAT(ApplyMatch(rule, 0, two, two_grants).grant_tiers, ElementsAre(0));
  EXPECT_THAT(ApplyMatch(rule, 0, two, two_grants).grant_tiers, IsEmpty());
  EXPECT_THAT(ApplyReversal(rule, 1, 0, two), IsEmpty());  // the first cancelled
  EXPECT_EQ(two.tiers_granted, 1);
  MatchEffect third = ApplyMatch(rule, 0, two, two_grants);
  EXPECT_THAT(third.grant_tiers, IsEmpty());
  EXPECT_THAT(third.decision, ::testing::HasSubstr("not the first"));
  // Once every counted event is cancelled, it is.
  EXPECT_THAT(ApplyReversal(rule, 1, 0, two), IsEmpty());
  EXPECT_THAT(ApplyReversal(rule, 1, 0, two), ElementsAre(0));
  EXPECT_THAT(ApplyMatch(rule, 0, two, two_grants).grant_tiers, ElementsAre(0));
}

// Decision 010, amended: a reversal claws back exactly the tiers whose thresholds no longer hold,
// whichever event crossed them; grants that belong to their event go with it when it is
// cancelled.
TEST(ClawsBackTest, TiersGoWhenTheirThresholdGoesAndEventGrantsWithTheirEvent) {
  const pb::TriggerRule tiers = Cumulative({100000});
  Aggregate agg, grants;
  EXPECT_THAT(ApplyMatch(tiers, 60000, agg, grants).grant_tiers, IsEmpty());       // A
  EXPECT_THAT(ApplyMatch(tiers, 60000, agg, grants).grant_tiers, ElementsAre(0));  // B crosses
  EXPECT_THAT(ApplyMatch(tiers, 60000, agg, grants).grant_tiers, IsEmpty());       // C
  // B refunded in full: 120000 still holds the tier, whose grant (B's) stays.
  std::vector<int> lost = ApplyReversal(tiers, 1, 60000, agg);
  EXPECT_THAT(lost, IsEmpty());
  EXPECT_FALSE(ClawsBack(tiers, true, lost, /*grant_of_reversed_event=*/true, 0));
  // A refunded in full: 60000 does not, and B's grant goes although A is the event reversed.
  lost = ApplyReversal(tiers, 1, 60000, agg);
  EXPECT_THAT(lost, ElementsAre(0));
  EXPECT_TRUE(ClawsBack(tiers, true, lost, /*grant_of_reversed_event=*/false, 0));

  pb::TriggerRule count = Cumulative({1});
  count.set_kind(pb::COUNT_AT_LEAST);
  count.set_count_threshold(2);
  EXPECT_FALSE(ClawsBack(count, true, {}, true, 0));
  EXPECT_TRUE(ClawsBack(count, false, {0}, false, 0));

  pb::TriggerRule every = Cumulative({1});
  every.set_kind(pb::EVERY_MATCH);
  EXPECT_TRUE(ClawsBack(every, true, {}, true, 0));
  EXPECT_FALSE(ClawsBack(every, false, {}, true, 0));  // a partial refund keeps it
  EXPECT_FALSE(ClawsBack(every, true, {}, false, 0));  // another event's grant
  // A rule whose definition is not known: the cancelled event's own grants.
  EXPECT_TRUE(ClawsBack(pb::TriggerRule(), true, {}, true, 0));
  EXPECT_FALSE(ClawsBack(pb::TriggerRule(), true, {0}, false, 0));
}

TEST(ApplyMatchTest, CountAtLeastGrantsAtTheNthOncePerWindow) {
  pb::TriggerRule rule = Cumulative({1});
  rule.set_kind(pb::COUNT_AT_LEAST);
  rule.set_count_threshold(3);
  Aggregate agg, grants;
  EXPECT_THAT(ApplyMatch(rule, 0, agg, grants).grant_tiers, IsEmpty());
  EXPECT_THAT(ApplyMatch(rule, 0, agg, grants).grant_tiers, IsEmpty());
  EXPECT_THAT(ApplyMatch(rule, 0, agg, grants).grant_tiers, ElementsAre(0));
  EXPECT_THAT(ApplyMatch(rule, 0, agg, grants).grant_tiers, IsEmpty());
  EXPECT_EQ(agg.count, 4);
}

TEST(ApplyMatchTest, PerCustomerTotalCapsGrants) {
  pb::TriggerRule rule = Cumulative({1});
  rule.set_kind(pb::EVERY_MATCH);
  rule.set_per_customer_total(2);
  Aggregate agg, grants;
  EXPECT_THAT(ApplyMatch(rule, 0, agg, grants).grant_tiers, ElementsAre(0));
  EXPECT_THAT(ApplyMatch(rule, 0, agg, grants).grant_tiers, ElementsAre(0));
  MatchEffect third = ApplyMatch(rule, 0, agg, grants);
  EXPECT_THAT(third.grant_tiers, IsEmpty());
  EXPECT_THAT(third.decision, ::testing::HasSubstr("limit 2 reached"));
}

// Signed overflow is undefined behaviour (and aborts under UBSan): sums hold at the int64 maximum.
TEST(ApplyMatchTest, SumsSaturateInsteadOfOverflowing) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  const pb::TriggerRule rule = Cumulative({100000, kMax});
  Aggregate agg, grants;
  EXPECT_THAT(ApplyMatch(rule, kMax, agg, grants).grant_tiers, ElementsAre(0, 1));
  MatchEffect second = ApplyMatch(rule, kMax, agg, grants);
  EXPECT_THAT(second.grant_tiers, IsEmpty());
  EXPECT_EQ(agg.amount_fen, kMax);
  EXPECT_EQ(agg.count, 2);
  EXPECT_THAT(second.decision, ::testing::HasSubstr("cumulative 9223372036854775807 fen"));

  // Aggregates stored before amounts were bounded, at the edge.
  Aggregate old{.count = kMax, .amount_fen = kMax - 5, .tiers_granted = 0};
  Aggregate many{.count = kMax, .amount_fen = 0, .tiers_granted = 0};
  pb::TriggerRule every = Cumulative({1});
  every.set_kind(pb::EVERY_MATCH);
  EXPECT_THAT(ApplyMatch(every, kMaxEventAmountFen, old, many).grant_tiers, ElementsAre(0));
  EXPECT_EQ(old.amount_fen, kMax);
  EXPECT_EQ(old.count, kMax);
  EXPECT_EQ(many.count, kMax);
}

TEST(ApplyReversalTest, TakesBackDownToZeroWhateverIsStored) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
  const pb::TriggerRule rule = Cumulative({100});
  Aggregate agg{.count = kMin, .amount_fen = kMin, .tiers_granted = 1};
  EXPECT_THAT(ApplyReversal(rule, kMax, kMax, agg), ElementsAre(0));
  EXPECT_EQ(agg.count, 0);
  EXPECT_EQ(agg.amount_fen, 0);
  agg = Aggregate{.count = 3, .amount_fen = kMax, .tiers_granted = 1};
  EXPECT_THAT(ApplyReversal(rule, 1, kMaxEventAmountFen, agg), IsEmpty());
  EXPECT_EQ(agg.count, 2);
  EXPECT_EQ(agg.amount_fen, kMax - kMaxEventAmountFen);
}

TEST(WindowKeyTest, MonthsAndDaysAreInChinaTime) {
  EventTypeRegistry types;
  types.Load(DefaultEventTypes());
  pb::TriggerRule rule = Cumulative({100});
  rule.mutable_start_time()->set_seconds(1'000'000'000);
  rule.mutable_end_time()->set_seconds(2'000'000'000);
  auto compiled = CompileRule(rule, types);
  ASSERT_TRUE(compiled.ok()) << compiled.status();
  // 2026-11-30T16:30:00Z is 2026-12-01 00:30 in China.
  absl::Time t;
  std::string err;
  ASSERT_TRUE(absl::ParseTime(absl::RFC3339_full, "2026-11-30T16:30:00Z", &t, &err));
  EXPECT_EQ(WindowKey(**compiled, t), "m:2026-12");
  EXPECT_EQ(WindowKey(**compiled, absl::FromUnixSeconds(999'999'999)), std::nullopt);
  EXPECT_EQ(WindowKey(**compiled, absl::FromUnixSeconds(2'000'000'000)), std::nullopt);
}

TEST(CompileRuleTest, ConditionErrorsKeepTheirPosition) {
  EventTypeRegistry types;
  types.Load(DefaultEventTypes());
  pb::TriggerRule rule = Cumulative({100});
  rule.set_condition("amount_fen >= 100 && merchant_categry == 'x'");
  auto compiled = CompileRule(rule, types);
  ASSERT_FALSE(compiled.ok());
  EXPECT_THAT(std::string(compiled.status().message()),
              ::testing::HasSubstr("unknown field 'merchant_categry' at character 22"));
  rule.set_condition("channel in ['QR', 'POS'] && customer.tag('age') < 35");
  EXPECT_TRUE(CompileRule(rule, types).ok());
  rule.set_event_type("credit_card.refunded");
  EXPECT_FALSE(CompileRule(rule, types).ok());
}

ValidatedEvent Spend(std::string org, std::string customer, absl::Time at) {
  ValidatedEvent e;
  e.event_type = "credit_card.spend";
  e.org_id = std::move(org);
  e.customer_id = std::move(customer);
  e.occurred_at = at;
  return e;
}

TEST(TagsToFetchTest, AsksPerRuleOrgForTheTagsOfTheRulesAnEventCanMatch) {
  EventTypeRegistry types;
  types.Load(DefaultEventTypes());
  RuleBook book;
  pb::TriggerRule young = Cumulative({100});
  young.set_condition("customer.tag('age') < 35 && customer.tags.vip");
  young.mutable_end_time()->set_seconds(2'000'000'000);
  ASSERT_TRUE(book.Upsert(*CompileRule(young, types)));
  pb::TriggerRule branch = Cumulative({100});
  branch.set_rule_id("r2");
  branch.set_org_id("fed");  // every bank's events
  branch.set_condition("channel == 'QR' || customer.tag('branch') == 'B01'");
  ASSERT_TRUE(book.Upsert(*CompileRule(branch, types)));
  pb::TriggerRule plain = Cumulative({100});
  plain.set_rule_id("r3");
  plain.set_event_type("deposit.made");
  plain.set_condition("amount_fen > 0");
  ASSERT_TRUE(book.Upsert(*CompileRule(plain, types)));

  const absl::Time now = absl::FromUnixSeconds(1'800'000'000);
  const absl::Time after_young = absl::FromUnixSeconds(2'100'000'000);
  ValidatedEvent refund = Spend("bank-a", "c-refund", now);
  refund.reversal = pb::REFUND;
  ValidatedEvent deposit = Spend("bank-a", "c-deposit", now);
  deposit.event_type = "deposit.made";
  const TagQueries queries = TagsToFetch({Spend("bank-a", "c-1", now), Spend("bank-a", "c-2", now),
                                          Spend("bank-b", "c-1", after_young), refund, deposit},
                                         *book.Snapshot());
  // Tags are read as each rule's org sees them: bank-a's `young` for bank-a's customers (its
  // window is over when bank-b's event occurs, and it never matches bank-b's events anyway), the
  // federation's `branch` for every bank's.
  ASSERT_EQ(queries.size(), 2u);
  EXPECT_THAT(queries.at("bank-a").customers, ElementsAre("c-1", "c-2"));
  EXPECT_THAT(queries.at("bank-a").tags, ElementsAre("age", "vip"));
  EXPECT_THAT(queries.at("fed").customers, ElementsAre("c-1", "c-2"));
  EXPECT_THAT(queries.at("fed").tags, ElementsAre("branch"));
  const TagQueries bank_b_only = TagsToFetch({Spend("bank-b", "c-3", now)}, *book.Snapshot());
  ASSERT_EQ(bank_b_only.size(), 1u);
  EXPECT_THAT(bank_b_only.at("fed").customers, ElementsAre("c-3"));
  // Rules without tags need no lookup at all.
  EXPECT_THAT(TagsToFetch({deposit}, *book.Snapshot()), IsEmpty());
}

TEST(AudiencesToCheckTest, AsksPerAudienceForTheCustomersOfTheOrgsItsRulesCover) {
  EventTypeRegistry types;
  types.Load(DefaultEventTypes());
  RuleBook book;
  pb::TriggerRule payroll = Cumulative({100});  // bank-a's
  payroll.mutable_audience()->add_include()->set_segment_id("seg-payroll");
  payroll.mutable_audience()->mutable_include(0)->set_version(2);
  payroll.mutable_audience()->add_exclude()->set_segment_id("seg-staff");
  ASSERT_TRUE(book.Upsert(*CompileRule(payroll, types)));
  pb::TriggerRule same = payroll;  // the same audience: one lookup for both
  same.set_rule_id("r2");
  ASSERT_TRUE(book.Upsert(*CompileRule(same, types)));
  pb::TriggerRule everyone = Cumulative({100});
  everyone.set_rule_id("r3");
  ASSERT_TRUE(book.Upsert(*CompileRule(everyone, types)));

  const absl::Time now = absl::FromUnixSeconds(1'800'000'000);
  const auto snapshot = book.Snapshot();
  const AudienceQueries queries = AudiencesToCheck(
      {Spend("bank-a", "c-1", now), Spend("bank-a", "c-2", now), Spend("bank-b", "c-3", now)},
      *snapshot);
  ASSERT_EQ(queries.size(), 1u);
  const auto& [key, query] = *queries.begin();
  EXPECT_EQ(key, "bank-a|+seg-payroll@2|-seg-staff@0");
  EXPECT_EQ(query.org_id, "bank-a");
  EXPECT_EQ(query.audience.include_size(), 1);
  // bank-b's customer is no concern of bank-a's rules.
  EXPECT_THAT(query.customers, ElementsAre("c-1", "c-2"));

  AudienceSnapshot answers;
  answers.Put(key, "c-1", true);
  answers.Put(key, "c-2", false);
  const CompiledRule& rule = *snapshot->by_id.at("r1");
  EXPECT_TRUE(InAudience(rule, Spend("bank-a", "c-1", now), &answers));
  EXPECT_FALSE(InAudience(rule, Spend("bank-a", "c-2", now), &answers));
  EXPECT_FALSE(InAudience(rule, Spend("bank-a", "c-9", now), &answers));  // unknown: not in
  EXPECT_FALSE(InAudience(rule, Spend("bank-a", "c-1", now), nullptr));
  EXPECT_TRUE(InAudience(*snapshot->by_id.at("r3"), Spend("bank-a", "c-9", now), nullptr));

  // A bank's rule never matches another bank's events; the federation's matches every bank's.
  EXPECT_TRUE(CoversEvent(rule, Spend("bank-a", "c-1", now)));
  EXPECT_TRUE(CoversEvent(rule, Spend("bank-a.branch-01", "c-1", now)));
  EXPECT_FALSE(CoversEvent(rule, Spend("bank-b", "c-1", now)));
  pb::TriggerRule fed = everyone;
  fed.set_org_id("fed");
  EXPECT_TRUE(CoversEvent(**CompileRule(fed, types), Spend("bank-b", "c-1", now)));

  // Segment references the segments service would refuse are refused when the rule is loaded.
  pb::TriggerRule bad = payroll;
  bad.mutable_audience()->mutable_exclude(0)->set_segment_id("");
  auto refused = CompileRule(bad, types);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()), ::testing::HasSubstr("1..64 printable"));
}

TEST(GrantIdTest, IsDeterministicAndFitsTheLedger) {
  EXPECT_EQ(GrantId("card:1", "r1", 0), GrantId("card:1", "r1", 0));
  EXPECT_NE(GrantId("card:1", "r1", 0), GrantId("card:1", "r1", 1));
  EXPECT_NE(GrantId("card:1", "r1", 0), GrantId("card:1", "r2", 0));
  EXPECT_EQ(GrantId("card:1", "r1", 0).size(), 44u);
  EXPECT_EQ(ReversalId(GrantId("x", "y", 0)).substr(0, 4), "evr-");
}

TEST(RuleBookTest, IndexesActiveRulesByTypeAndKeepsTheHighestRevision) {
  EventTypeRegistry types;
  types.Load(DefaultEventTypes());
  RuleBook book;
  pb::TriggerRule rule = Cumulative({100});
  rule.set_revision(2);
  ASSERT_TRUE(book.Upsert(*CompileRule(rule, types)));
  EXPECT_EQ(book.Snapshot()->by_type.at("credit_card.spend").size(), 1u);
  rule.set_revision(1);
  rule.set_active(false);
  EXPECT_FALSE(book.Upsert(*CompileRule(rule, types)));
  rule.set_revision(3);
  EXPECT_TRUE(book.Upsert(*CompileRule(rule, types)));
  EXPECT_EQ(book.active_count(), 0u);
  EXPECT_EQ(book.Snapshot()->by_id.count("r1"), 1u);
}

}  // namespace
}  // namespace mkt::events
