// Participation use cases (issue 8): claim a coupon, draw a lottery, exchange points — each the
// same pipeline: in-memory refusals (input, rate limits, sold-out board), the campaign online on
// the channel, the customer's org and audience, then a reservation in the database (limits,
// exclusion group, prize stock, the PENDING record), the grant through the RewardIssuer under a
// request id derived from (campaign, idempotency key), and the recorded outcome with its
// mkt.participations.v1 fact. An asset-growth task's participation is its enrolment: the same
// checks and reservation, the baseline recorded instead of a grant (asset_growth_service.h grants
// the tiers later). Plus what is open to a customer on a channel, the coupon centre,
// and the recovery of participations whose grant outcome was left unknown by a crash.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "libs/core/ids.h"
#include "marketing/campaigns/v1/participation.pb.h"
#include "services/campaigns/asset_growth_store.h"
#include "services/campaigns/audience.h"
#include "services/campaigns/participation_guards.h"
#include "services/campaigns/participation_store.h"
#include "services/campaigns/pg_campaign_store.h"
#include "services/campaigns/reference_data.h"
#include "services/campaigns/reward_issuer.h"

namespace mkt::campaigns {

struct ParticipationOptions {
  // Token buckets; a rate of 0 turns the bucket off.
  double customer_rate_per_s = 5;
  double customer_burst = 10;
  double campaign_rate_per_s = 0;
  double campaign_burst = 1000;
  // How long a campaign read from the database is trusted (its state, window, configuration).
  absl::Duration campaign_cache_ttl = absl::Seconds(1);
  // How long a sold-out mark refuses claims from memory before the ledger is asked again.
  absl::Duration sold_out_ttl = absl::Seconds(10);
  // Take each reward's cost (BenefitCatalog unit cost × quantity) from the campaign's budget.
  bool charge_budget = true;
};

// The campaigns read on every participation, cached for a short time.
class CampaignCache {
 public:
  CampaignCache(PgCampaignStore& store, const Clock& clock, absl::Duration ttl)
      : store_(store), clock_(clock), ttl_(ttl) {}
  // nullptr when the campaign does not exist.
  absl::StatusOr<std::shared_ptr<const pb::Campaign>> Get(const std::string& id);
  // The campaign as last read, however long ago, without reading the database; nullptr when it
  // is not cached. Only for what never changes, such as its org.
  std::shared_ptr<const pb::Campaign> Peek(const std::string& id);
  // Every ONLINE campaign.
  absl::StatusOr<std::shared_ptr<const std::vector<pb::Campaign>>> Online();

 private:
  struct Entry {
    std::shared_ptr<const pb::Campaign> campaign;
    absl::Time loaded;
  };
  PgCampaignStore& store_;
  const Clock& clock_;
  const absl::Duration ttl_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<const std::vector<pb::Campaign>> online_ ABSL_GUARDED_BY(mu_);
  absl::Time online_loaded_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

class ParticipationService {
 public:
  ParticipationService(PgCampaignStore& campaigns, PgParticipationStore& store,
                       AudienceMembership& audience, const BenefitCatalog& benefits,
                       RewardIssuer& issuer, const Clock& clock, ParticipationOptions options = {});

  // The refusals that need neither the database nor a neighbour: malformed input, a rate limit,
  // a sold-out campaign. Cheap enough for the gRPC thread, so a grab is refused before it queues.
  absl::Status Screen(const pb::ParticipateRequest& request);

  // Claims, draws or exchanges by the campaign's type; see participation.proto. A campaign whose
  // org does not cover the customer's is NOT_FOUND, as an unknown one, before anything else. The
  // idempotency key is the request's: a participation stored under it is answered as stored
  // (*replayed set to true; a PENDING one is completed first), whatever the campaign's state or
  // window is now; a different request under it is IDEMPOTENCY_KEY_REUSED, and a refusal that
  // stored nothing (input, limits, sold out, not open) is decided again.
  absl::StatusOr<pb::Participation> Participate(const pb::ParticipateRequest& request,
                                                bool* replayed = nullptr);
  absl::StatusOr<pb::Participation> GetParticipation(const pb::GetParticipationRequest& request);
  absl::StatusOr<pb::ListEligibleResponse> ListEligible(const pb::ListEligibleRequest& request);
  absl::StatusOr<pb::ListCouponsResponse> ListCoupons(const pb::ListCouponsRequest& request);
  absl::StatusOr<pb::DrawStats> GetDrawStats(const pb::GetDrawStatsRequest& request);
  // The campaign's sold-out board for a gateway to copy (decision 023): sold_out only when this
  // replica refuses every key not in the filter from memory; see SoldOutBoard::Board.
  absl::StatusOr<pb::SoldOutBoard> GetSoldOutBoard(const pb::GetSoldOutBoardRequest& request);
  // The filter's false-positive rate: a stored key always passes; about 1 in 100 others does too
  // and is sent on to this service, which refuses it itself.
  static constexpr double kBoardFalsePositiveRate = 0.01;

  // Completes PENDING participations older than `older_than` (a crash or a ledger outage between
  // reservation and outcome): re-issues the same grant (idempotent at the ledger) and records
  // the outcome. Returns how many were completed. One that cannot be completed now waits before
  // it is tried again (RecoveryDelay), so it does not hold back the others; past
  // kRecoveryAttemptsBeforeOperator attempts it is logged as an error for an operator.
  absl::StatusOr<int> RecoverPending(absl::Duration older_than, int limit = 200);
  // How long a participation the sweep could not complete waits after its `attempts`-th attempt:
  // 30 s, doubling, at most an hour.
  static absl::Duration RecoveryDelay(int attempts);
  static constexpr int kRecoveryAttemptsBeforeOperator = 6;

 private:
  absl::StatusOr<pb::Participation> Complete(pb::Participation pending,
                                             const pb::Campaign& campaign);
  absl::Status CheckOpen(const pb::Campaign& campaign, const std::string& customer_org,
                         const std::string& channel, absl::Time now) const;
  // The grant of `p`, from the campaign version it was made under (not the live one), so every
  // retry sends the first attempt's request.
  absl::StatusOr<IssueRequest> IssueFor(const pb::Participation& p, const pb::Campaign& campaign);
  // For a request the campaign refuses now: the participation stored under its key (completed
  // when PENDING), else `refusal`.
  absl::StatusOr<pb::Participation> ReplayOrRefuse(const pb::ParticipateRequest& request,
                                                   const pb::Campaign& campaign,
                                                   absl::Status refusal, bool* replayed);
  // Marks a coupon campaign sold out, with the keys of its stored participations.
  void MarkSoldOut(const std::string& campaign_id);

  PgCampaignStore& campaigns_;
  PgParticipationStore& store_;
  AudienceMembership& audience_;
  const BenefitCatalog& benefits_;
  RewardIssuer& issuer_;
  const Clock& clock_;
  const ParticipationOptions options_;
  CampaignCache cache_;
  RateLimiter customer_limiter_;
  RateLimiter campaign_limiter_;
  SoldOutBoard sold_out_;
  // Baselines at enrolment and progress in the eligibility list (asset-growth tasks).
  PgAssetGrowthStore growth_;
};

// The request's outcome as the caller sees it: the participation, or for a REJECTED one an error
// with its reason.
absl::StatusOr<pb::Participation> AnswerFor(const pb::Participation& p);

// Day and week keys of `t` in China Standard Time ("2026-11-26", the week's Monday "2026-11-23").
std::string DayKey(absl::Time t);
std::string WeekKey(absl::Time t);

}  // namespace mkt::campaigns
