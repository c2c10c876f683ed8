// The pure parts of asset-growth tasks: averages with carry-forward, the baseline at enrolment,
// tier selection, request ids, the balance report an asset_balance event carries, and the bank a
// customer's org makes them a customer of.
#include "services/campaigns/asset_growth.h"

#include "gtest/gtest.h"
#include "services/campaigns/asset_growth_service.h"

namespace mkt::campaigns {
namespace {

namespace epb = ::marketing::events::v1;

const absl::CivilDay kDay(2026, 11, 26);

TEST(AverageDailyBalanceTest, CarriesTheLastKnownBalanceForward) {
  // 100 on day 0, nothing on days 1-2 (carried: 100), 400 on day 3, nothing on day 4 (400).
  std::vector<DayBalance> b = {{kDay, 100}, {kDay + 3, 400}};
  EXPECT_EQ(AverageDailyBalance(b, kDay, kDay + 4), (100 + 100 + 100 + 400 + 400) / 5);
  // A balance before the range is carried into it.
  EXPECT_EQ(AverageDailyBalance(b, kDay + 1, kDay + 2), 100);
  EXPECT_EQ(AverageDailyBalance(b, kDay + 4, kDay + 6), 400);
  // One day.
  EXPECT_EQ(AverageDailyBalance(b, kDay + 3, kDay + 3), 400);
}

TEST(AverageDailyBalanceTest, DaysBeforeTheFirstKnownBalanceAreNotCounted) {
  std::vector<DayBalance> b = {{kDay + 2, 300}};
  // Days 0 and 1 are unknown: the average is over days 2..3 only.
  EXPECT_EQ(AverageDailyBalance(b, kDay, kDay + 3), 300);
  // Nothing known at all in or before the range: 0.
  EXPECT_EQ(AverageDailyBalance(b, kDay - 10, kDay - 1), 0);
  EXPECT_EQ(AverageDailyBalance({}, kDay, kDay + 30), 0);
  // An empty (inverted) range: 0.
  EXPECT_EQ(AverageDailyBalance(b, kDay + 3, kDay + 2), 0);
}

TEST(AverageDailyBalanceTest, RoundsDownAndHandlesNegativeAndHugeBalances) {
  std::vector<DayBalance> b = {{kDay, 1}, {kDay + 1, 2}};
  EXPECT_EQ(AverageDailyBalance(b, kDay, kDay + 1), 1);  // 1.5 → 1
  std::vector<DayBalance> negative = {{kDay, -1}, {kDay + 1, -2}};
  EXPECT_EQ(AverageDailyBalance(negative, kDay, kDay + 1), -2);  // -1.5 → -2 (floor)
  const int64_t big = int64_t{4'000'000'000'000'000'000};
  std::vector<DayBalance> huge = {{kDay, big}, {kDay + 1, big}};
  EXPECT_EQ(AverageDailyBalance(huge, kDay, kDay + 1), big);  // no overflow of the sum
}

TEST(BaselineTest, AveragesTheDaysBeforeEnrolment) {
  // 30-day baseline before kDay: 20 days at 1,000 (carried from kDay-40), then 10 days at 4,000.
  std::vector<DayBalance> b = {{kDay - 40, 1000}, {kDay - 10, 4000}, {kDay, 99999}};
  EXPECT_EQ(BaselineAt(b, kDay, 0), (20 * 1000 + 10 * 4000) / 30);
  EXPECT_EQ(BaselineAt(b, kDay, 30), BaselineAt(b, kDay, 0));
  // The enrolment day itself is not part of the baseline.
  EXPECT_EQ(BaselineAt(b, kDay, 5), 4000);
  EXPECT_EQ(BaselineAt({}, kDay, 30), 0);
  EXPECT_EQ(EffectiveBaselineDays(0), kDefaultBaselineDays);
  EXPECT_EQ(EffectiveBaselineDays(7), 7);
}

TEST(TiersTest, GrantsEveryReachedTierNotGrantedBefore) {
  google::protobuf::RepeatedPtrField<pb::GrowthTier> tiers;
  for (int64_t min : {100'000, 500'000, 1'000'000}) tiers.Add()->set_min_growth_fen(min);
  EXPECT_TRUE(TiersToGrant(tiers, 0, {}).empty());
  EXPECT_TRUE(TiersToGrant(tiers, -5'000'000, {}).empty());
  EXPECT_TRUE(TiersToGrant(tiers, 99'999, {}).empty());
  EXPECT_EQ(TiersToGrant(tiers, 100'000, {}), std::vector<int>({0}));
  // Jumping over two thresholds at once grants both.
  EXPECT_EQ(TiersToGrant(tiers, 600'000, {}), std::vector<int>({0, 1}));
  // Once granted, never again.
  EXPECT_EQ(TiersToGrant(tiers, 600'000, {0}), std::vector<int>({1}));
  EXPECT_TRUE(TiersToGrant(tiers, 600'000, {0, 1}).empty());
  EXPECT_EQ(TiersToGrant(tiers, 2'000'000, {1}), std::vector<int>({0, 2}));
}

TEST(TiersTest, RequestIdsAreDeterministicPerParticipationAndTier) {
  EXPECT_EQ(TierRequestId("par_1", 0), TierRequestId("par_1", 0));
  EXPECT_NE(TierRequestId("par_1", 0), TierRequestId("par_1", 1));
  EXPECT_NE(TierRequestId("par_1", 0), TierRequestId("par_2", 0));
  EXPECT_EQ(TierRequestId("par_1", 0).size(), 42u);
  EXPECT_EQ(TierRequestId("par_1", 0).substr(0, 2), "g:");
}

TEST(DaysTest, ChinaDaysAndWindowEnds) {
  // 2026-11-26 16:30 UTC is 2026-11-27 00:30 in China.
  const absl::Time t =
      absl::FromCivil(absl::CivilSecond(2026, 11, 26, 16, 30, 0), absl::UTCTimeZone());
  EXPECT_EQ(ChinaDay(t), absl::CivilDay(2026, 11, 27));
  // A window ending at midnight China time ends with the day before.
  const absl::Time midnight =
      absl::FromCivil(absl::CivilSecond(2026, 12, 1, 0, 0, 0), absl::FixedTimeZone(8 * 3600));
  EXPECT_EQ(LastDayBefore(midnight), absl::CivilDay(2026, 11, 30));
  absl::CivilDay day;
  EXPECT_TRUE(ParseAsOfDay("2026-11-20", &day));
  EXPECT_EQ(day, absl::CivilDay(2026, 11, 20));
  EXPECT_TRUE(ParseAsOfDay("2026-11-20T18:00:00Z", &day));
  EXPECT_EQ(day, absl::CivilDay(2026, 11, 21));
  EXPECT_FALSE(ParseAsOfDay("20/11/2026", &day));
  EXPECT_FALSE(ParseAsOfDay("", &day));
}

TEST(BalanceReportTest, ReadsTheBalanceAndTheDayOfAnEvent) {
  epb::BusinessEvent e;
  e.set_source("core-banking");
  e.set_source_event_id("BAL-1");
  e.set_event_type("asset_balance");
  e.set_customer_id("c1");
  e.set_org_id("bank-a.branch-01");
  e.mutable_occurred_at()->set_seconds(absl::ToUnixSeconds(
      absl::FromCivil(absl::CivilSecond(2026, 11, 26, 20, 0, 0), absl::UTCTimeZone())));
  (*e.mutable_attributes())["balance_fen"] = "12345600";
  auto report = BalanceReportOf(e);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->customer_id, "c1");
  EXPECT_EQ(report->customer_org_id, "bank-a.branch-01");
  EXPECT_EQ(report->balance_fen, 12345600);
  EXPECT_EQ(report->event_key, "core-banking:BAL-1");
  // Without as_of_date: the China day of occurred_at (20:00 UTC is the next day in China).
  EXPECT_EQ(report->day, absl::CivilDay(2026, 11, 27));

  (*e.mutable_attributes())["as_of_date"] = "2026-11-25";
  report = BalanceReportOf(e);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->day, absl::CivilDay(2026, 11, 25));

  (*e.mutable_attributes())["as_of_date"] = "yesterday";
  EXPECT_FALSE(BalanceReportOf(e).ok());
  (*e.mutable_attributes())["as_of_date"] = "2026-11-25";
  (*e.mutable_attributes())["balance_fen"] = "12.50";
  EXPECT_FALSE(BalanceReportOf(e).ok());
  e.mutable_attributes()->erase("balance_fen");
  EXPECT_FALSE(BalanceReportOf(e).ok());
}

TEST(BalanceReportTest, RefusesAReportNamingNoValidOrg) {
  epb::BusinessEvent e;
  e.set_source("core-banking");
  e.set_source_event_id("BAL-2");
  e.set_event_type("asset_balance");
  e.set_customer_id("c1");
  (*e.mutable_attributes())["balance_fen"] = "100";
  for (const char* org : {"", "Bank A", "bank-a..branch", "bank_a"}) {
    e.set_org_id(org);
    auto report = BalanceReportOf(e);
    EXPECT_EQ(report.status().code(), absl::StatusCode::kInvalidArgument) << "org " << org;
  }
  e.set_org_id("fed");
  EXPECT_TRUE(BalanceReportOf(e).ok());
}

TEST(CustomerBankTest, ACustomerIsOfTheMemberBankOfTheirOrg) {
  EXPECT_EQ(CustomerBank("bank-a"), "bank-a");
  EXPECT_EQ(CustomerBank("bank-a.branch-01"), "bank-a");
  EXPECT_EQ(CustomerBank("bank-a.branch-01.sub-3"), "bank-a");
  EXPECT_EQ(CustomerBank("bank-b"), "bank-b");
  EXPECT_EQ(CustomerBank("fed"), "fed");
}

}  // namespace
}  // namespace mkt::campaigns
