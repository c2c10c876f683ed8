// How a participation's rewards reach the customer: the seam between campaigns and the rewards
// service. Every id sent derives from the participation's deterministic request id, so a retry
// after a crash (a replay, the recovery sweep) never grants twice.
//
// Two issuers (decision 013):
// - NewLedgerRewardIssuer: the participation is one linked ledger batch (all legs or none): what
//   the customer pays (points for an exchange, chances for a draw) and, per reward, the campaign
//   budget's cost, the template's stock (coupons) and the benefit. A coupon is only a unit of the
//   ledger's COUPON asset: it has no code and cannot be used (kept for tests and the ledger-only
//   stack).
// - NewBenefitsRewardIssuer (what the service runs): a coupon reward becomes a real coupon
//   instance through Benefits.IssueCoupon (a code, in the wallet, usable at checkout and by QR),
//   which moves the template's unit cost, its stock and the customer's holding itself. What the
//   customer pays and the budget of the other rewards are reserved first as pending ledger
//   transfers, posted once the coupon is issued and voided when it is refused; the other rewards
//   follow as one linked batch. See CouponIssuePlanFor.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "marketing/campaigns/v1/campaigns.pb.h"
#include "marketing/common/v1/errors.pb.h"
#include "marketing/rewards/v1/benefits.pb.h"
#include "marketing/rewards/v1/ledger.pb.h"

namespace grpc {
class Channel;
}  // namespace grpc

namespace mkt::campaigns {

struct RewardGrant {
  ::marketing::campaigns::v1::RewardKind kind = ::marketing::campaigns::v1::REWARD_KIND_COUPON;
  std::string benefit_template_id;
  int64_t quantity = 1;
  // Taken from the campaign's budget (BUDGET_FEN); 0: no budget leg. The benefits issuer ignores
  // it for coupons: IssueCoupon charges the template's own unit cost.
  int64_t cost_fen = 0;
  int32_t points_valid_days = 365;
};

struct IssueRequest {
  // Deterministic per participation (campaign + idempotency key): the ledger's idempotency key.
  std::string request_id;
  // The org whose ledger accounts are used (the campaign's owner).
  std::string org_id;
  std::string campaign_id;
  std::string customer_id;
  std::string participation_id;
  int64_t spend_points = 0;
  int64_t spend_chances = 0;
  std::vector<RewardGrant> rewards;
};

class RewardIssuer {
 public:
  virtual ~RewardIssuer() = default;
  // Grants the request, all of it or nothing. Business refusals carry the rewards service's
  // reason (STOCK_EXHAUSTED, BUDGET_EXHAUSTED, INSUFFICIENT_BALANCE, ACCOUNT_NOT_FOUND,
  // INVALID_ARGUMENT); any other failure (UNAVAILABLE, DEADLINE_EXCEEDED...) means the outcome is
  // unknown and the same request must be retried: every step is idempotent.
  virtual absl::Status Issue(const IssueRequest& request) = 0;
};

// Reasons of the rewards service that settle a grant as refused for good (stock or budget out,
// not enough points, a reused request id, bad input); anything else leaves the outcome unknown,
// to be retried under the same request id. Participation does not settle on a reused request id:
// its ids are its own, so the reuse is an earlier attempt of the same participation that sent
// other content and may have granted (ParticipationService leaves it PENDING for an operator).
bool IsBusinessRefusal(::marketing::common::v1::ErrorReason reason);

// The ledger asset a reward kind is granted in (coupon instances are COUPON).
::marketing::rewards::v1::Asset AssetOf(::marketing::campaigns::v1::RewardKind kind);

// Returns the ledger transfers of `request`, in order (spends first); empty when there is
// nothing to move (a free draw that won nothing).
std::vector<::marketing::rewards::v1::TransferSpec> LedgerTransfersFor(const IssueRequest& request);

// A RewardIssuer calling marketing.rewards.v1.Ledger/CreateTransfers.
std::unique_ptr<RewardIssuer> NewLedgerRewardIssuer(std::shared_ptr<grpc::Channel> channel,
                                                    absl::Duration timeout);

// How a request with coupon rewards is granted by the benefits issuer, in order:
struct CouponIssuePlan {
  // 1. One linked batch of PENDING transfers (timeout kHoldTimeoutSeconds): the points or chances
  //    the customer pays ("<request>:hold-points", "<request>:hold-chances") and the budget of the
  //    rewards that are not coupons ("<request>:hold-budget-<i>"). Posted as "<hold>:post" in
  //    step 4, voided as "<hold>:void:<REASON>" when the coupon is refused (the id keeps the
  //    refusal, so a replay after a crash answers with it).
  std::vector<::marketing::rewards::v1::TransferSpec> holds;
  // 2. Benefits.IssueCoupon per coupon unit, request id "<request>:coupon-<i>-<unit>" (a hash of
  //    it when longer than 64 characters).
  std::vector<::marketing::rewards::v1::IssueCouponRequest> coupons;
  // 3. The rewards that are not coupons, one linked batch of posted transfers (the benefit legs of
  //    LedgerTransfersFor, same ids). It cannot be refused for stock or budget: both are held.
  std::vector<::marketing::rewards::v1::TransferSpec> grants;
};

// How long a hold may wait for its coupon before the ledger voids it by itself (the ledger's
// maximum, so only an outage of the rewards service longer than a day reaches it).
inline constexpr int kHoldTimeoutSeconds = 86400;

// The plan of `request`. A coupon issued cannot be taken back (benefits.proto has no void of an
// instance), so a later unit refused after an earlier one was issued could not be compensated:
// a request with more than one coupon unit (two coupon rewards, or quantity > 1) is refused with
// INVALID_ARGUMENT (field "rewards") before anything moves. Campaign validation (campaign_rules.cc)
// refuses configurations that would ask for more, so only a hand-built request meets this.
absl::StatusOr<CouponIssuePlan> CouponIssuePlanFor(const IssueRequest& request);

// A RewardIssuer granting coupons as instances (Benefits.IssueCoupon) and everything else through
// the ledger; requests without coupons are one linked batch, as NewLedgerRewardIssuer's. Both
// channels reach the rewards service; calls carry tenancy::SystemActor("campaigns").
std::unique_ptr<RewardIssuer> NewBenefitsRewardIssuer(
    std::shared_ptr<grpc::Channel> ledger_channel, std::shared_ptr<grpc::Channel> benefits_channel,
    absl::Duration timeout);

}  // namespace mkt::campaigns
