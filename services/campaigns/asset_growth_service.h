// Asset-growth tasks at run time (资产提升, decision 014): reads asset_balance business events
// from mkt.business-events.v1 (its own consumer group), keeps customers' end-of-day balances,
// and after every balance change of an enrolled customer (and periodically, so days carried
// forward and the window's end count too) evaluates the enrolment: the average daily balance
// from the enrolment day to today inside the window, minus the baseline recorded at enrolment.
// Every tier the growth reaches is marked once and granted through the RewardIssuer under a
// request id derived from (participation, tier); a tier once reached is kept.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "libs/core/ids.h"
#include "libs/kafka/kafka.h"
#include "marketing/events/v1/business_event.pb.h"
#include "services/campaigns/asset_growth.h"
#include "services/campaigns/asset_growth_store.h"
#include "services/campaigns/participation_service.h"
#include "services/campaigns/pg_campaign_store.h"
#include "services/campaigns/reference_data.h"
#include "services/campaigns/reward_issuer.h"

namespace mkt::campaigns {

inline constexpr char kBusinessEventsTopic[] = "mkt.business-events.v1";
inline constexpr char kBusinessEventEnvelopeType[] = "events.BusinessEvent";
inline constexpr char kAssetBalanceEventType[] = "asset_balance";
inline constexpr char kAssetGrowthConsumerGroup[] = "campaigns-asset-growth";

// "g:" + 40 hex of SHA-256(participation id, tier): the same for every evaluation, replay and
// recovery, so the ledger answers a second issue of a tier idempotently.
std::string TierRequestId(const std::string& participation_id, int tier);

// The balance report an asset_balance event carries (balance_fen; as_of_date "YYYY-MM-DD" or
// RFC 3339, else the China day of occurred_at) for the customer (org_id, customer_id).
// INVALID_ARGUMENT when it carries none, or no valid org id (the customer would be nobody's),
// or a time outside 2000-01-01 .. `now` + 1 day (occurred_at, nanos out of range, or an
// as_of_date), field "occurred_at" or "attributes.as_of_date".
absl::StatusOr<BalanceReport> BalanceReportOf(const ::marketing::events::v1::BusinessEvent& event,
                                              absl::Time now = absl::Now());

struct AssetGrowthOptions {
  // Enrolments are still evaluated this long after their window ended (late balance reports of
  // the window's last days, the final evaluation).
  absl::Duration grace = absl::Hours(72);
  // A PENDING grant untouched this long is issued again by the sweep.
  absl::Duration retry_after = absl::Seconds(30);
  absl::Duration campaign_cache_ttl = absl::Seconds(1);
  // Take each reward's cost (catalog unit cost × quantity) from the campaign's budget.
  bool charge_budget = true;
};

class AssetGrowthService {
 public:
  AssetGrowthService(PgCampaignStore& campaigns, PgAssetGrowthStore& store,
                     const BenefitCatalog& benefits, RewardIssuer& issuer, const Clock& clock,
                     AssetGrowthOptions options = {});

  // The consumer's handler: asset_balance events are recorded and their customer evaluated;
  // every other message is skipped (the events service dead-letters what is malformed), and so
  // is an asset_balance event without a customer, valid org or balance. An impossible time
  // (see BalanceReportOf) is refused INVALID_ARGUMENT, permanent: the consumer dead-letters it
  // and goes on. Other errors are transient (the message is retried).
  absl::Status HandleMessage(const kafka::IncomingMessage& message);
  absl::Status ApplyBalanceEvent(const ::marketing::events::v1::BusinessEvent& event);

  // Evaluates every enrolment of a customer (of the member bank of `customer_org_id`) whose
  // window has not ended more than `grace` ago.
  absl::Status EvaluateCustomer(const std::string& customer_org_id, const std::string& customer_id);
  // Evaluates one enrolment and grants the tiers it newly reached; returns the tiers marked.
  absl::StatusOr<std::vector<int>> Evaluate(const Enrolment& enrolment);

  // Evaluates every active enrolment and issues again the grants left PENDING; returns how many
  // grants were settled.
  absl::StatusOr<int> Sweep(int page = 500);

 private:
  // Issues a PENDING grant and settles it; a transport failure leaves it PENDING for the sweep.
  absl::StatusOr<bool> Issue(const TierGrant& grant);

  PgCampaignStore& campaigns_;
  PgAssetGrowthStore& store_;
  const BenefitCatalog& benefits_;
  RewardIssuer& issuer_;
  const Clock& clock_;
  const AssetGrowthOptions options_;
  CampaignCache cache_;
};

}  // namespace mkt::campaigns
