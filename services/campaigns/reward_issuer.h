// How a participation's rewards reach the customer: the seam between campaigns and the rewards
// ledger. A participation becomes one linked ledger batch (all legs or none): what the customer
// pays (points for an exchange, chances for a draw) and, per reward, the campaign budget's cost,
// the template's stock (coupons) and the benefit itself. The batch's transfer ids derive from the
// participation's deterministic request id, so a retry after a crash never grants twice.
// Coupons go through the ledger's COUPON asset today; when the rewards service's benefit
// templates serve coupon instances, another RewardIssuer plugs in here.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "marketing/campaigns/v1/campaigns.pb.h"
#include "marketing/rewards/v1/ledger.pb.h"

namespace grpc {
class Channel;
}  // namespace grpc

namespace mkt::campaigns {

struct RewardGrant {
  ::marketing::campaigns::v1::RewardKind kind = ::marketing::campaigns::v1::REWARD_KIND_COUPON;
  std::string benefit_template_id;
  int64_t quantity = 1;
  // Taken from the campaign's budget (BUDGET_FEN); 0: no budget leg.
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
  // Applies the request as one linked batch. Business refusals carry the ledger's reason
  // (STOCK_EXHAUSTED, BUDGET_EXHAUSTED, INSUFFICIENT_BALANCE, ACCOUNT_NOT_FOUND); UNAVAILABLE or
  // DEADLINE_EXCEEDED mean the outcome is unknown and the same request may be retried.
  virtual absl::Status Issue(const IssueRequest& request) = 0;
};

// Returns the ledger transfers of `request`, in order (spends first); empty when there is
// nothing to move (a free draw that won nothing).
std::vector<::marketing::rewards::v1::TransferSpec> LedgerTransfersFor(const IssueRequest& request);

// A RewardIssuer calling marketing.rewards.v1.Ledger/CreateTransfers.
std::unique_ptr<RewardIssuer> NewLedgerRewardIssuer(std::shared_ptr<grpc::Channel> channel,
                                                    absl::Duration timeout);

}  // namespace mkt::campaigns
