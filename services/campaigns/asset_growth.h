// The arithmetic of asset-growth tasks (资产提升, decision 014), without I/O: the average daily
// balance over a range of days from a customer's end-of-day balances (a day without a balance
// event carries the last known balance forward), the baseline at enrolment, which tiers a growth
// reaches, and the validation of a task's tiers.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "marketing/campaigns/v1/campaigns.pb.h"
#include "services/campaigns/field_errors.h"

namespace mkt::campaigns {

namespace pb = ::marketing::campaigns::v1;

inline constexpr int kDefaultBaselineDays = 30;
inline constexpr int kMaxBaselineDays = 366;
inline constexpr int kMaxGrowthTiers = 10;
inline constexpr int kMaxTierRewards = 10;

// One end-of-day balance.
struct DayBalance {
  absl::CivilDay day;
  int64_t balance_fen = 0;
};

// The average daily balance over [from, to] (both included) of `balances` (sorted by day, days
// before `from` allowed: the last of them is carried into `from`). Days before the first known
// balance are not counted; without any known day in the range the average is 0. Rounded down.
int64_t AverageDailyBalance(const std::vector<DayBalance>& balances, absl::CivilDay from,
                            absl::CivilDay to);

// The baseline of an enrolment on `enrolled_on`: the average over the `baseline_days` days before
// it (0 means kDefaultBaselineDays).
int64_t BaselineAt(const std::vector<DayBalance>& balances, absl::CivilDay enrolled_on,
                   int baseline_days);
int EffectiveBaselineDays(int baseline_days);

// Indexes of the tiers whose threshold `growth_fen` reaches and that are not in `granted`, in
// order. A growth of 0 or less reaches nothing.
std::vector<int> TiersToGrant(const google::protobuf::RepeatedPtrField<pb::GrowthTier>& tiers,
                              int64_t growth_fen, const std::set<int>& granted);

// China (UTC+8) day of `t`, and the last day of a window ending (exclusively) at `end`.
absl::CivilDay ChinaDay(absl::Time t);
absl::CivilDay LastDayBefore(absl::Time end);

// Parses "2026-11-26" or an RFC 3339 timestamp (its China day); false when neither.
bool ParseAsOfDay(const std::string& text, absl::CivilDay* day);

// Checks growth_tiers and baseline_days: for ASSET_GROWTH_TASK at least one tier, thresholds
// strictly increasing and above 0, every tier with 1..kMaxTierRewards rewards of valid quantity
// and at most one coupon unit; for any other type both must be unset. Reward templates are
// checked by the caller (they need the catalog).
void CheckGrowthTiers(const pb::CampaignConfig& config, FieldErrors& errors);

}  // namespace mkt::campaigns
