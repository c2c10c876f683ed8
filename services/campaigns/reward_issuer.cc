#include "services/campaigns/reward_issuer.h"

#include <grpcpp/grpcpp.h>

#include "libs/log/log.h"
#include "libs/rpc/client.h"
#include "libs/rpc/server.h"
#include "marketing/rewards/v1/ledger.grpc.pb.h"

namespace mkt::campaigns {
namespace {

namespace rpb = ::marketing::rewards::v1;
namespace cpb = ::marketing::campaigns::v1;

rpb::AccountRef Ref(const std::string& org, rpb::Asset asset, rpb::OwnerKind kind,
                    const std::string& owner, const std::string& asset_ref = "") {
  rpb::AccountRef ref;
  ref.set_org_id(org);
  ref.set_asset(asset);
  ref.set_asset_ref(asset_ref);
  ref.set_owner_kind(kind);
  ref.set_owner_id(owner);
  return ref;
}

rpb::Asset AssetOf(cpb::RewardKind kind) {
  switch (kind) {
    case cpb::REWARD_KIND_POINTS:
      return rpb::POINTS;
    case cpb::REWARD_KIND_CASH_FEN:
      return rpb::CASH_FEN;
    case cpb::REWARD_KIND_LOTTERY_CHANCE:
      return rpb::LOTTERY_CHANCE;
    default:
      return rpb::COUPON;
  }
}

class LedgerRewardIssuer final : public RewardIssuer {
 public:
  LedgerRewardIssuer(std::shared_ptr<grpc::Channel> channel, absl::Duration timeout)
      : stub_(rpb::Ledger::NewStub(std::move(channel))), timeout_(timeout) {}

  absl::Status Issue(const IssueRequest& request) override {
    std::vector<rpb::TransferSpec> transfers = LedgerTransfersFor(request);
    if (transfers.empty()) return absl::OkStatus();
    rpb::CreateTransfersRequest call;
    for (auto& t : transfers) *call.add_transfers() = std::move(t);
    grpc::ClientContext context;
    rpc::PrepareClientContext(context, timeout_, log::CurrentRequestId());
    rpb::CreateTransfersResponse response;
    return rpc::FromGrpcStatus(stub_->CreateTransfers(&context, call, &response));
  }

 private:
  std::unique_ptr<rpb::Ledger::Stub> stub_;
  const absl::Duration timeout_;
};

}  // namespace

std::vector<rpb::TransferSpec> LedgerTransfersFor(const IssueRequest& r) {
  std::vector<rpb::TransferSpec> out;
  const std::string& org = r.org_id;
  auto leg = [&](const std::string& suffix, rpb::TransferCode code, rpb::AccountRef debit,
                 rpb::AccountRef credit, int64_t amount) -> rpb::TransferSpec& {
    rpb::TransferSpec& spec = out.emplace_back();
    spec.set_id(r.request_id + ":" + suffix);
    spec.set_code(code);
    *spec.mutable_debit() = std::move(debit);
    *spec.mutable_credit() = std::move(credit);
    spec.set_amount(amount);
    spec.set_campaign_id(r.campaign_id);
    if (!r.participation_id.empty())
      (*spec.mutable_metadata())["participation"] = r.participation_id;
    return spec;
  };
  if (r.spend_points > 0) {
    leg("spend-points", rpb::SPEND, Ref(org, rpb::POINTS, rpb::CUSTOMER, r.customer_id),
        Ref(org, rpb::POINTS, rpb::SYSTEM, "redemption"), r.spend_points);
  }
  if (r.spend_chances > 0) {
    leg("spend-chances", rpb::SPEND, Ref(org, rpb::LOTTERY_CHANCE, rpb::CUSTOMER, r.customer_id),
        Ref(org, rpb::LOTTERY_CHANCE, rpb::SYSTEM, "redemption"), r.spend_chances);
  }
  for (size_t i = 0; i < r.rewards.size(); ++i) {
    const RewardGrant& g = r.rewards[i];
    const std::string n = std::to_string(i);
    if (g.cost_fen > 0) {
      leg("budget-" + n, rpb::GRANT, Ref(org, rpb::BUDGET_FEN, rpb::CAMPAIGN, r.campaign_id),
          Ref(org, rpb::BUDGET_FEN, rpb::SYSTEM, "expense"), g.cost_fen);
    }
    const rpb::Asset asset = AssetOf(g.kind);
    if (asset == rpb::COUPON) {
      const std::string& tmpl = g.benefit_template_id;
      leg("stock-" + n, rpb::GRANT, Ref(org, rpb::STOCK, rpb::TEMPLATE, tmpl, tmpl),
          Ref(org, rpb::STOCK, rpb::SYSTEM, "issuance", tmpl), g.quantity);
      leg("benefit-" + n, rpb::GRANT, Ref(org, rpb::COUPON, rpb::SYSTEM, "issuance", tmpl),
          Ref(org, rpb::COUPON, rpb::CUSTOMER, r.customer_id, tmpl), g.quantity);
    } else {
      rpb::TransferSpec& benefit =
          leg("benefit-" + n, rpb::GRANT, Ref(org, asset, rpb::SYSTEM, "issuance"),
              Ref(org, asset, rpb::CUSTOMER, r.customer_id), g.quantity);
      if (asset == rpb::POINTS) {
        benefit.mutable_expiry()->set_days_after_grant(g.points_valid_days > 0 ? g.points_valid_days
                                                                               : 365);
      }
    }
  }
  return out;
}

std::unique_ptr<RewardIssuer> NewLedgerRewardIssuer(std::shared_ptr<grpc::Channel> channel,
                                                    absl::Duration timeout) {
  return std::make_unique<LedgerRewardIssuer>(std::move(channel), timeout);
}

}  // namespace mkt::campaigns
