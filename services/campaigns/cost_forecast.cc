#include "services/campaigns/cost_forecast.h"

#include <algorithm>
#include <limits>
#include <string>

#include "services/campaigns/campaign_rules.h"

namespace mkt::campaigns {
namespace {

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

int64_t Saturate(__int128 v) { return v > kMax ? kMax : static_cast<int64_t>(v); }

// ceil(a * b / c) for non-negative a, b and positive c, saturating.
int64_t MulDivCeil(int64_t a, int64_t b, int64_t c) {
  const __int128 product = static_cast<__int128>(a) * b;
  return Saturate((product + c - 1) / c);
}

}  // namespace

pb::CostForecast ForecastCost(const pb::CampaignConfig& config, const SegmentDirectory& segments,
                              const BenefitCatalog& benefits, int32_t default_uptake_bp,
                              int32_t uptake_override_bp, int64_t points_unit_cost_fen) {
  pb::CostForecast f;
  __int128 audience = 0;
  for (const pb::SegmentRef& ref : config.audience().include()) {
    auto info = segments.Lookup(ref.segment_id());
    if (!info.ok()) {
      f.add_notes("segment '" + ref.segment_id() + "' unavailable: counted as 0 customers");
      continue;
    }
    audience += std::max<int64_t>(info->size, 0);
  }
  f.set_audience_size(Saturate(audience));
  if (config.audience().include_size() > 1) {
    f.add_notes("audience is the sum of the included segments (overlaps and exclusions ignored)");
  }

  int32_t uptake = uptake_override_bp > 0 ? uptake_override_bp : config.expected_uptake_bp();
  if (uptake <= 0) {
    uptake = default_uptake_bp;
    f.add_notes("expected uptake not set: the default " + std::to_string(default_uptake_bp) +
                " bp applies");
  }
  uptake = std::clamp<int32_t>(uptake, 0, 10000);
  f.set_uptake_bp(uptake);

  const int64_t per_customer =
      config.limits().per_customer_total() > 0 ? config.limits().per_customer_total() : 1;
  f.set_participations_per_customer(per_customer);
  int64_t participations = MulDivCeil(f.audience_size(), uptake, 10000);
  participations = Saturate(static_cast<__int128>(participations) * per_customer);
  if (config.limits().global_total() > 0) {
    participations = std::min(participations, config.limits().global_total());
  }
  f.set_expected_participations(participations);

  auto unit_cost = [&](const std::string& id) -> int64_t {
    auto info = benefits.Lookup(id);
    if (!info.ok()) {
      f.add_notes("benefit template '" + id + "' unavailable: counted as 0 fen");
      return 0;
    }
    return std::max<int64_t>(info->unit_cost_fen, 0);
  };
  // An event campaign's reward names its asset and is priced as its submission will price it.
  const bool event = config.type() == pb::EVENT_TRIGGER;
  auto item_cost = [&](const pb::RewardItem& r) -> __int128 {
    const int64_t unit = event ? EventRewardUnitCostFen(r.kind(), points_unit_cost_fen)
                               : unit_cost(r.benefit_template_id());
    return static_cast<__int128>(unit) * std::max<int64_t>(r.quantity(), 0);
  };
  __int128 cost = 0;
  if (config.type() == pb::LOTTERY) {
    // Expected cost of one draw: each prize's cost weighted by its probability.
    __int128 weighted = 0;
    for (const pb::Prize& p : config.prizes()) {
      weighted += static_cast<__int128>(unit_cost(p.benefit_template_id())) *
                  std::max<int64_t>(p.quantity(), 0) * std::max(p.probability_bp(), 0);
    }
    cost = (weighted + 9999) / 10000;
  } else if (config.type() == pb::ASSET_GROWTH_TASK) {
    // An upper bound: every participant reaches every tier.
    f.add_notes("asset-growth task: every enrolled customer is assumed to reach every tier");
    for (const pb::GrowthTier& tier : config.growth_tiers()) {
      for (const pb::RewardItem& r : tier.rewards()) cost += item_cost(r);
    }
  } else if (config.type() == pb::EVENT_TRIGGER &&
             config.event_trigger().kind() == pb::TRIGGER_CUMULATIVE_AMOUNT) {
    // An upper bound, as for growth tiers: every participant reaches every tier.
    f.add_notes("cumulative event campaign: every participant is assumed to reach every tier");
    for (const pb::TriggerTier& tier : config.event_trigger().tiers()) {
      cost += item_cost(tier.reward());
    }
  } else if (event) {
    // The events service grants the first item only.
    if (config.rewards_size() > 0) cost += item_cost(config.rewards(0));
  } else {
    for (const pb::RewardItem& r : config.rewards()) cost += item_cost(r);
  }
  f.set_cost_per_participation_fen(Saturate(cost));
  f.set_forecast_cost_fen(
      Saturate(static_cast<__int128>(participations) * f.cost_per_participation_fen()));
  f.set_budget_cap_fen(config.budget_cap_fen());
  f.set_exceeds_budget(config.budget_cap_fen() > 0 &&
                       f.forecast_cost_fen() > config.budget_cap_fen());
  return f;
}

}  // namespace mkt::campaigns
