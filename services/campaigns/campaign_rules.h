// The rules of a campaign's configuration: which fields each of the five set-up steps owns, how
// each step is validated on its own (every error against its field), what blocks submission, and
// which fields a copy from a template or another campaign must fill in itself.
#pragma once

#include <string>
#include <vector>

#include "absl/time/time.h"
#include "marketing/campaigns/v1/campaigns.pb.h"
#include "services/campaigns/field_errors.h"
#include "services/campaigns/reference_data.h"
#include "services/events/event_type_cache.h"

namespace mkt::campaigns {

namespace pb = ::marketing::campaigns::v1;

// Size limits of operator-entered content (code points unless said otherwise).
inline constexpr int kMaxNameLength = 64;
inline constexpr int kMaxDescriptionLength = 2000;
inline constexpr int kMaxTitleLength = 64;
inline constexpr int kMaxChannelDescriptionLength = 500;
inline constexpr int kMaxRulesTextLength = 4000;
inline constexpr int kMaxImageUrlBytes = 512;
inline constexpr int kMaxSegmentsPerList = 20;
inline constexpr int kMaxRewardItems = 20;
inline constexpr int kMaxPrizes = 50;
// EVENT_TRIGGER (decision 031): a count threshold, the tiers of a cumulative campaign and their
// thresholds (the events service keeps tiers in a 62-bit mask and sums in int64).
inline constexpr int64_t kMaxTriggerCount = 1'000'000;
inline constexpr int kMaxTriggerTiers = 20;
inline constexpr int64_t kMaxTierThresholdFen = 1'000'000'000'000'000;
inline constexpr int kMaxChannels = 10;
inline constexpr int kMaxPriority = 1000;
inline constexpr int32_t kFullProbabilityBp = 10000;
// POINTS_EXCHANGE: the highest price of one item, in points.
inline constexpr int64_t kMaxPricePoints = 1'000'000'000;
// REWARD_KIND_POINTS: the longest validity of granted points, in days (the ledger's limit,
// services/rewards/points_expiry.h kMaxExpiryDays).
inline constexpr int32_t kMaxPointsValidDays = 3650;
// The whole configuration as stored (protobuf bytes); guards the database and the change topic.
inline constexpr size_t kMaxConfigBytes = 64 * 1024;

// What the checks of a configuration need besides the configuration.
struct ValidationContext {
  const SegmentDirectory* segments = nullptr;
  const BenefitCatalog* benefits = nullptr;
  // The owning org: segments and benefit templates must be its own or an ancestor's.
  std::string owner_org;
  absl::Time now;
  // A copy of the events service's registry: trigger expressions are checked against the pinned
  // event type's attributes (null: not checked here, the events service checks it).
  events::EventTypeCache* event_types = nullptr;
};

// Copies the fields `step` owns from `from` into `to`, leaving the other steps' fields alone.
void MergeStep(pb::Step step, const pb::CampaignConfig& from, pb::CampaignConfig* to);

// Checks the fields `step` owns. STEP_REVIEW checks only its own input (expected uptake).
FieldErrors ValidateStep(pb::Step step, const pb::CampaignConfig& config,
                         const ValidationContext& context);

// Everything that would block submission: all steps, and a window that has not ended yet.
FieldErrors ValidateForSubmission(const pb::CampaignConfig& config,
                                  const ValidationContext& context);

// Decision 036: what an edit of a published campaign (one with a live version) may not change,
// because what the campaign has done so far is counted by it: its type; a lottery's prizes,
// which keep their places and what they grant (stock and daily release are counted by place);
// an asset-growth task's tiers and an event campaign's tiers, which keep their places and
// thresholds (a tier reached is counted by place); an event campaign's trigger kind and window.
// Weights, stock, caps, rewards and new prizes or tiers at the end may change.
FieldErrors CheckEditOfLive(const pb::CampaignConfig& live, const pb::CampaignConfig& draft);

// Pins every segment reference with version 0 to the segment's current version (references the
// directory does not know are left for validation to report).
void PinSegmentVersions(pb::CampaignConfig* config, const SegmentDirectory& segments);

// Decision 034: what one unit of an EVENT_TRIGGER campaign's reward costs its budget. CASH_FEN
// costs 1 fen per fen, POINTS `points_unit_cost_fen` per point (the worth of a point to the
// bank, as a BENEFIT_POINTS template's unit cost), LOTTERY_CHANCE nothing: the lottery that
// draws the chance pays for its prize. Other kinds cost 0.
int64_t EventRewardUnitCostFen(pb::RewardKind kind, int64_t points_unit_cost_fen);

// Sets unit_cost_fen on every reward of an EVENT_TRIGGER configuration (its items and its tiers'
// rewards) as EventRewardUnitCostFen prices it; clears it on the rewards of any other type.
void PriceEventRewards(pb::CampaignConfig* config, int64_t points_unit_cost_fen);
// Clears unit_cost_fen on every reward: a client cannot set a price (saving step 3 and copying
// clear it; submission sets it again).
void ClearRewardUnitCosts(pb::CampaignConfig* config);

// The fields every copy must set for itself: the window, the budget, its own segments.
const std::vector<std::string>& CopyFlaggedFields();
// Clears CopyFlaggedFields() in `config`.
void ClearFlaggedFields(pb::CampaignConfig* config);
// The flagged fields `step` sets (removed from a campaign's flags when the step is saved).
std::vector<std::string> FlaggedFieldsOfStep(pb::Step step);

}  // namespace mkt::campaigns
