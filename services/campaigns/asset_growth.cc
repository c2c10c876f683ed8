#include "services/campaigns/asset_growth.h"

#include <algorithm>

namespace mkt::campaigns {
namespace {

const absl::TimeZone& China() {
  static const absl::TimeZone* zone = new absl::TimeZone(absl::FixedTimeZone(8 * 3600));
  return *zone;
}

// floor(a / b) for b > 0.
int64_t FloorDiv(__int128 a, int64_t b) {
  __int128 q = a / b;
  if (a % b != 0 && a < 0) --q;
  return static_cast<int64_t>(q);
}

}  // namespace

int64_t AverageDailyBalance(const std::vector<DayBalance>& balances, absl::CivilDay from,
                            absl::CivilDay to) {
  if (to < from) return 0;
  size_t next = 0;
  bool known = false;
  int64_t current = 0;
  // The last balance before the range is carried into it.
  while (next < balances.size() && balances[next].day < from) {
    current = balances[next].balance_fen;
    known = true;
    ++next;
  }
  __int128 sum = 0;
  int64_t days = 0;
  for (absl::CivilDay d = from; d <= to; ++d) {
    while (next < balances.size() && balances[next].day <= d) {
      current = balances[next].balance_fen;
      known = true;
      ++next;
    }
    if (!known) continue;
    sum += current;
    ++days;
  }
  return days == 0 ? 0 : FloorDiv(sum, days);
}

int EffectiveBaselineDays(int baseline_days) {
  return baseline_days > 0 ? baseline_days : kDefaultBaselineDays;
}

int64_t BaselineAt(const std::vector<DayBalance>& balances, absl::CivilDay enrolled_on,
                   int baseline_days) {
  const int days = EffectiveBaselineDays(baseline_days);
  return AverageDailyBalance(balances, enrolled_on - days, enrolled_on - 1);
}

std::vector<int> TiersToGrant(const google::protobuf::RepeatedPtrField<pb::GrowthTier>& tiers,
                              int64_t growth_fen, const std::set<int>& granted) {
  std::vector<int> out;
  if (growth_fen <= 0) return out;
  for (int i = 0; i < tiers.size(); ++i) {
    if (tiers[i].min_growth_fen() > 0 && tiers[i].min_growth_fen() <= growth_fen &&
        granted.count(i) == 0) {
      out.push_back(i);
    }
  }
  return out;
}

absl::CivilDay ChinaDay(absl::Time t) { return absl::ToCivilDay(t, China()); }

absl::CivilDay LastDayBefore(absl::Time end) { return ChinaDay(end - absl::Nanoseconds(1)); }

bool ParseAsOfDay(const std::string& text, absl::CivilDay* day) {
  if (text.size() == 10) {
    absl::CivilDay parsed;
    // ParseCivilTime accepts "2026-11-26" only in that exact shape.
    if (!absl::ParseCivilTime(text, &parsed)) return false;
    *day = parsed;
    return true;
  }
  absl::Time t;
  std::string err;
  if (!absl::ParseTime(absl::RFC3339_full, text, &t, &err)) return false;
  *day = ChinaDay(t);
  return true;
}

void CheckGrowthTiers(const pb::CampaignConfig& c, FieldErrors& errors) {
  if (c.type() != pb::ASSET_GROWTH_TASK) {
    if (!c.growth_tiers().empty()) {
      errors.Add("growth_tiers", "only an asset-growth task has growth tiers");
    }
    if (c.baseline_days() != 0) {
      errors.Add("baseline_days", "only an asset-growth task has a baseline");
    }
    return;
  }
  if (c.baseline_days() < 0 || c.baseline_days() > kMaxBaselineDays) {
    errors.Add("baseline_days",
               "must be between 0 and " + std::to_string(kMaxBaselineDays) + " (0: 30 days)");
  }
  if (c.growth_tiers().empty()) {
    errors.Add("growth_tiers", "an asset-growth task needs at least one tier");
    return;
  }
  if (c.growth_tiers().size() > kMaxGrowthTiers) {
    errors.Add("growth_tiers", "at most " + std::to_string(kMaxGrowthTiers) + " tiers");
    return;
  }
  int64_t previous = 0;
  for (int i = 0; i < c.growth_tiers().size(); ++i) {
    const pb::GrowthTier& tier = c.growth_tiers(i);
    const std::string prefix = "growth_tiers[" + std::to_string(i) + "]";
    if (tier.min_growth_fen() <= 0) {
      errors.Add(prefix + ".min_growth_fen", "must be more than 0 fen");
    } else if (i > 0 && tier.min_growth_fen() <= previous) {
      errors.Add(prefix + ".min_growth_fen",
                 "must be more than the previous tier's " + std::to_string(previous) + " fen");
    }
    previous = std::max(previous, tier.min_growth_fen());
    if (tier.rewards().empty()) {
      errors.Add(prefix + ".rewards", "a tier needs at least one reward");
    } else if (tier.rewards().size() > kMaxTierRewards) {
      errors.Add(prefix + ".rewards",
                 "at most " + std::to_string(kMaxTierRewards) + " rewards per tier");
    }
    int64_t coupon_units = 0;
    for (const pb::RewardItem& r : tier.rewards()) {
      if (r.kind() == pb::REWARD_KIND_COUPON) coupon_units += std::max<int64_t>(r.quantity(), 1);
    }
    if (coupon_units > 1) {
      errors.Add(prefix + ".rewards",
                 "at most one coupon unit per tier (an issued coupon cannot be taken back if a "
                 "later unit is refused)");
    }
  }
}

}  // namespace mkt::campaigns
