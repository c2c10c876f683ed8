// The cost forecast shown on the review step before approval: audience size (from the segment
// directory) × expected uptake (the operator's estimate in basis points) × reward cost of one
// participation (from the benefit catalog), compared with the budget cap. Integer fen throughout;
// products that would overflow saturate at INT64_MAX rather than wrap.
#pragma once

#include <cstdint>

#include "marketing/campaigns/v1/campaigns.pb.h"
#include "services/campaigns/reference_data.h"

namespace mkt::campaigns {

namespace pb = ::marketing::campaigns::v1;

// `uptake_override_bp` > 0 replaces the configuration's expected uptake; when both are 0 the
// service default `default_uptake_bp` applies. Segments or benefits the directories cannot
// resolve count as 0 and are named in the forecast's notes. An EVENT_TRIGGER campaign's rewards
// name an asset, not a template: they are priced as submission prices them (EventRewardUnitCostFen,
// with `points_unit_cost_fen` per point).
pb::CostForecast ForecastCost(const pb::CampaignConfig& config, const SegmentDirectory& segments,
                              const BenefitCatalog& benefits, int32_t default_uptake_bp,
                              int32_t uptake_override_bp = 0, int64_t points_unit_cost_fen = 1);

}  // namespace mkt::campaigns
