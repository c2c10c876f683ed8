#include "services/campaigns/reward_issuer.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>

#include "libs/auth/crypto.h"
#include "libs/core/status.h"
#include "libs/log/log.h"
#include "libs/rpc/actor.h"
#include "libs/rpc/client.h"
#include "libs/rpc/server.h"
#include "libs/tenancy/tenancy.h"
#include "marketing/rewards/v1/benefits.grpc.pb.h"
#include "marketing/rewards/v1/ledger.grpc.pb.h"
#include "spdlog/spdlog.h"

namespace mkt::campaigns {
namespace {

namespace rpb = ::marketing::rewards::v1;
namespace cpb = ::marketing::campaigns::v1;
namespace common = ::marketing::common::v1;

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

// A transfer of the participation, its id "<request_id>:<suffix>".
rpb::TransferSpec Leg(const IssueRequest& r, const std::string& suffix, rpb::TransferCode code,
                      rpb::AccountRef debit, rpb::AccountRef credit, int64_t amount) {
  rpb::TransferSpec spec;
  spec.set_id(r.request_id + ":" + suffix);
  spec.set_code(code);
  *spec.mutable_debit() = std::move(debit);
  *spec.mutable_credit() = std::move(credit);
  spec.set_amount(amount);
  spec.set_campaign_id(r.campaign_id);
  if (!r.participation_id.empty()) (*spec.mutable_metadata())["participation"] = r.participation_id;
  return spec;
}

// The benefit leg of a reward that is not a coupon (system issuance -> customer).
rpb::TransferSpec BenefitLeg(const IssueRequest& r, size_t i) {
  const RewardGrant& g = r.rewards[i];
  const rpb::Asset asset = AssetOf(g.kind);
  rpb::TransferSpec benefit = Leg(r, "benefit-" + std::to_string(i), rpb::GRANT,
                                  Ref(r.org_id, asset, rpb::SYSTEM, "issuance"),
                                  Ref(r.org_id, asset, rpb::CUSTOMER, r.customer_id), g.quantity);
  if (asset == rpb::POINTS) {
    benefit.mutable_expiry()->set_days_after_grant(g.points_valid_days > 0 ? g.points_valid_days
                                                                           : 365);
  }
  return benefit;
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

// The id voiding `hold` because of `reason`: the ledger keeps it, so a replay after a crash
// answers with the same refusal ("STOCK_EXHAUSTED" is spelt "STOCK-EXHAUSTED": ids take no "_").
std::string VoidId(const std::string& hold, ErrorReason reason) {
  std::string name = ReasonName(reason);
  std::replace(name.begin(), name.end(), '_', '-');
  return hold + ":void:" + name;
}

// IssueCoupon's refusals of the template itself (retired, validity over, unknown) are final:
// no coupon of it can be granted any more, which for the customer is a sold-out reward.
absl::Status AsRefusal(const absl::Status& s, const std::string& template_id) {
  if (FieldOf(s) != "template_id") return s;
  const std::string why =
      "benefit template " + template_id + " cannot be issued: " + std::string(s.message());
  if (ReasonOf(s) == common::CONFLICT) {
    return Error(absl::StatusCode::kFailedPrecondition, common::STOCK_EXHAUSTED, why);
  }
  if (ReasonOf(s) == common::NOT_FOUND) {
    return Error(absl::StatusCode::kFailedPrecondition, common::ACCOUNT_NOT_FOUND, why);
  }
  return s;
}

class BenefitsRewardIssuer final : public RewardIssuer {
 public:
  BenefitsRewardIssuer(std::shared_ptr<grpc::Channel> ledger,
                       std::shared_ptr<grpc::Channel> benefits, absl::Duration timeout)
      : ledger_(rpb::Ledger::NewStub(std::move(ledger))),
        benefits_(rpb::Benefits::NewStub(std::move(benefits))),
        timeout_(timeout),
        actor_(tenancy::SystemActor("campaigns")) {}

  absl::Status Issue(const IssueRequest& request) override {
    const bool has_coupon =
        std::any_of(request.rewards.begin(), request.rewards.end(),
                    [](const RewardGrant& g) { return AssetOf(g.kind) == rpb::COUPON; });
    if (!has_coupon) {
      std::vector<rpb::TransferSpec> transfers = LedgerTransfersFor(request);
      if (transfers.empty()) return absl::OkStatus();
      return Create(transfers).status();
    }
    MKT_ASSIGN_OR_RETURN(const CouponIssuePlan plan, CouponIssuePlanFor(request));
    if (!plan.holds.empty()) {
      // A refusal here (INSUFFICIENT_BALANCE...) holds nothing: the batch is all or nothing.
      MKT_ASSIGN_OR_RETURN(const rpb::CreateTransfersResponse held, Create(plan.holds));
      for (const rpb::Transfer& t : held.transfers()) {
        if (t.state() == rpb::VOIDED) return EarlierRefusal(plan, t.id());
      }
    }
    for (const rpb::IssueCouponRequest& c : plan.coupons) {
      absl::StatusOr<rpb::Coupon> coupon = IssueCoupon(c);
      if (coupon.ok()) continue;
      const absl::Status refusal = AsRefusal(coupon.status(), c.template_id());
      // Outcome unknown: the holds wait for the retry, which issues under the same request id.
      if (!IsBusinessRefusal(ReasonOf(refusal))) return refusal;
      // The request id is this participation's own, so "reused" means an earlier attempt issued
      // a coupon under it with other content: the customer may hold that coupon, so the holds
      // are not voided. The caller leaves the participation for an operator.
      if (ReasonOf(refusal) == common::IDEMPOTENCY_KEY_REUSED) return refusal;
      MKT_RETURN_IF_ERROR(Resolve(plan.holds, /*post=*/false, ReasonOf(refusal)));
      return refusal;
    }
    if (!plan.grants.empty()) {
      absl::StatusOr<rpb::CreateTransfersResponse> granted = Create(plan.grants);
      if (!granted.ok() && IsBusinessRefusal(ReasonOf(granted.status()))) {
        // Cannot happen by design (no stock or budget legs left, both held); the coupon is the
        // customer's, so the participation must not be rejected: it stays PENDING, loudly.
        spdlog::error("participation {}: coupon issued but the other rewards were refused: {}",
                      request.participation_id, granted.status());
        return Error(absl::StatusCode::kInternal, common::INTERNAL,
                     "the coupon was issued but the other rewards were refused: " +
                         std::string(granted.status().message()));
      }
      MKT_RETURN_IF_ERROR(granted.status());
    }
    return Resolve(plan.holds, /*post=*/true, common::ERROR_REASON_UNSPECIFIED);
  }

 private:
  absl::StatusOr<rpb::CreateTransfersResponse> Create(
      const std::vector<rpb::TransferSpec>& transfers) {
    rpb::CreateTransfersRequest call;
    for (const auto& t : transfers) *call.add_transfers() = t;
    grpc::ClientContext context;
    Prepare(context);
    rpb::CreateTransfersResponse response;
    MKT_RETURN_IF_ERROR(rpc::FromGrpcStatus(ledger_->CreateTransfers(&context, call, &response)));
    return response;
  }

  absl::StatusOr<rpb::Coupon> IssueCoupon(const rpb::IssueCouponRequest& request) {
    grpc::ClientContext context;
    Prepare(context);
    rpb::Coupon coupon;
    MKT_RETURN_IF_ERROR(rpc::FromGrpcStatus(benefits_->IssueCoupon(&context, request, &coupon)));
    return coupon;
  }

  absl::StatusOr<rpb::Transfer> ResolveOne(const std::string& id, const std::string& pending_id,
                                           bool post) {
    rpb::ResolvePendingRequest call;
    call.set_id(id);
    call.set_pending_id(pending_id);
    grpc::ClientContext context;
    Prepare(context);
    rpb::Transfer transfer;
    const grpc::Status s = post ? ledger_->PostPending(&context, call, &transfer)
                                : ledger_->VoidPending(&context, call, &transfer);
    MKT_RETURN_IF_ERROR(rpc::FromGrpcStatus(s));
    return transfer;
  }

  // Posts every hold, or voids it for `reason`; re-resolving the same way answers as the first.
  absl::Status Resolve(const std::vector<rpb::TransferSpec>& holds, bool post, ErrorReason reason) {
    for (const rpb::TransferSpec& h : holds) {
      MKT_RETURN_IF_ERROR(
          ResolveOne(post ? h.id() + ":post" : VoidId(h.id(), reason), h.id(), post).status());
    }
    return absl::OkStatus();
  }

  // A hold found voided on a retry: an earlier run was refused (its void id names the reason) and
  // crashed before the participation recorded it, or the hold timed out (the rewards service was
  // out for a day) and an operator has to settle it.
  absl::Status EarlierRefusal(const CouponIssuePlan& plan, const std::string& voided) {
    // Voiding a voided transfer creates nothing and answers with the voiding that happened.
    MKT_ASSIGN_OR_RETURN(const rpb::Transfer resolution,
                         ResolveOne(VoidId(voided, common::INTERNAL), voided, /*post=*/false));
    const std::string prefix = voided + ":void:";
    ErrorReason reason = common::ERROR_REASON_UNSPECIFIED;
    if (resolution.id().rfind(prefix, 0) == 0) {
      std::string name = resolution.id().substr(prefix.size());
      std::replace(name.begin(), name.end(), '-', '_');
      if (!::marketing::common::v1::ErrorReason_Parse(name, &reason)) {
        reason = common::ERROR_REASON_UNSPECIFIED;
      }
    }
    if (!IsBusinessRefusal(reason)) {
      spdlog::error(
          "participation hold {} was voided by {} before its coupon was granted; "
          "an operator must settle it",
          voided, resolution.id());
      return Error(absl::StatusCode::kInternal, common::INTERNAL,
                   "the payment hold " + voided + " was voided by " + resolution.id() +
                       " before the grant completed");
    }
    MKT_RETURN_IF_ERROR(Resolve(plan.holds, /*post=*/false, reason));
    return Error(absl::StatusCode::kFailedPrecondition, reason,
                 "the grant was refused (" + ReasonName(reason) + ")");
  }

  void Prepare(grpc::ClientContext& context) {
    rpc::PrepareClientContext(context, timeout_, log::CurrentRequestId());
    rpc::AttachActor(context, actor_);
  }

  std::unique_ptr<rpb::Ledger::Stub> ledger_;
  std::unique_ptr<rpb::Benefits::Stub> benefits_;
  const absl::Duration timeout_;
  const tenancy::Actor actor_;
};

}  // namespace

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

bool IsBusinessRefusal(common::ErrorReason reason) {
  switch (reason) {
    case common::STOCK_EXHAUSTED:
    case common::BUDGET_EXHAUSTED:
    case common::INSUFFICIENT_BALANCE:
    case common::ACCOUNT_NOT_FOUND:
    case common::IDEMPOTENCY_KEY_REUSED:
    case common::INVALID_ARGUMENT:
      return true;
    default:
      return false;
  }
}

std::vector<rpb::TransferSpec> LedgerTransfersFor(const IssueRequest& r) {
  std::vector<rpb::TransferSpec> out;
  const std::string& org = r.org_id;
  if (r.spend_points > 0) {
    out.push_back(Leg(r, "spend-points", rpb::SPEND,
                      Ref(org, rpb::POINTS, rpb::CUSTOMER, r.customer_id),
                      Ref(org, rpb::POINTS, rpb::SYSTEM, "redemption"), r.spend_points));
  }
  if (r.spend_chances > 0) {
    out.push_back(Leg(r, "spend-chances", rpb::SPEND,
                      Ref(org, rpb::LOTTERY_CHANCE, rpb::CUSTOMER, r.customer_id),
                      Ref(org, rpb::LOTTERY_CHANCE, rpb::SYSTEM, "redemption"), r.spend_chances));
  }
  for (size_t i = 0; i < r.rewards.size(); ++i) {
    const RewardGrant& g = r.rewards[i];
    const std::string n = std::to_string(i);
    if (g.cost_fen > 0) {
      out.push_back(Leg(r, "budget-" + n, rpb::GRANT,
                        Ref(org, rpb::BUDGET_FEN, rpb::CAMPAIGN, r.campaign_id),
                        Ref(org, rpb::BUDGET_FEN, rpb::SYSTEM, "expense"), g.cost_fen));
    }
    if (AssetOf(g.kind) == rpb::COUPON) {
      const std::string& tmpl = g.benefit_template_id;
      out.push_back(Leg(r, "stock-" + n, rpb::GRANT,
                        Ref(org, rpb::STOCK, rpb::TEMPLATE, tmpl, tmpl),
                        Ref(org, rpb::STOCK, rpb::SYSTEM, "issuance", tmpl), g.quantity));
      out.push_back(Leg(r, "benefit-" + n, rpb::GRANT,
                        Ref(org, rpb::COUPON, rpb::SYSTEM, "issuance", tmpl),
                        Ref(org, rpb::COUPON, rpb::CUSTOMER, r.customer_id, tmpl), g.quantity));
    } else {
      out.push_back(BenefitLeg(r, i));
    }
  }
  return out;
}

absl::StatusOr<CouponIssuePlan> CouponIssuePlanFor(const IssueRequest& r) {
  CouponIssuePlan plan;
  const std::string& org = r.org_id;
  auto hold = [&](const std::string& suffix, rpb::TransferCode code, rpb::AccountRef debit,
                  rpb::AccountRef credit, int64_t amount) {
    rpb::TransferSpec spec =
        Leg(r, "hold-" + suffix, code, std::move(debit), std::move(credit), amount);
    spec.set_pending(true);
    spec.set_timeout_seconds(kHoldTimeoutSeconds);
    plan.holds.push_back(std::move(spec));
  };
  if (r.spend_points > 0) {
    hold("points", rpb::SPEND, Ref(org, rpb::POINTS, rpb::CUSTOMER, r.customer_id),
         Ref(org, rpb::POINTS, rpb::SYSTEM, "redemption"), r.spend_points);
  }
  if (r.spend_chances > 0) {
    hold("chances", rpb::SPEND, Ref(org, rpb::LOTTERY_CHANCE, rpb::CUSTOMER, r.customer_id),
         Ref(org, rpb::LOTTERY_CHANCE, rpb::SYSTEM, "redemption"), r.spend_chances);
  }
  int64_t coupon_units = 0;
  for (size_t i = 0; i < r.rewards.size(); ++i) {
    const RewardGrant& g = r.rewards[i];
    const std::string n = std::to_string(i);
    if (AssetOf(g.kind) != rpb::COUPON) {
      if (g.cost_fen > 0) {
        hold("budget-" + n, rpb::GRANT, Ref(org, rpb::BUDGET_FEN, rpb::CAMPAIGN, r.campaign_id),
             Ref(org, rpb::BUDGET_FEN, rpb::SYSTEM, "expense"), g.cost_fen);
      }
      plan.grants.push_back(BenefitLeg(r, i));
      continue;
    }
    coupon_units += std::max<int64_t>(g.quantity, 0);
    for (int64_t unit = 0; unit < g.quantity && coupon_units <= 1; ++unit) {
      rpb::IssueCouponRequest& c = plan.coupons.emplace_back();
      std::string id = r.request_id + ":coupon-" + n + "-" + std::to_string(unit);
      // The benefits service takes 64 characters; a digest keeps longer ids deterministic.
      if (id.size() > 64) id = "pc." + auth::Sha256Hex(id).substr(0, 48);
      c.set_request_id(id);
      c.set_template_id(g.benefit_template_id);
      c.set_customer_id(r.customer_id);
      c.set_campaign_id(r.campaign_id);
      c.set_budget_org_id(r.org_id);  // the campaign's budget pays, whoever owns the template
    }
  }
  if (coupon_units > 1) {
    return InvalidArgument("rewards",
                           "a participation grants at most one coupon (one coupon reward of "
                           "quantity 1): an issued coupon cannot be taken back if a later one is "
                           "refused");
  }
  return plan;
}

std::unique_ptr<RewardIssuer> NewLedgerRewardIssuer(std::shared_ptr<grpc::Channel> channel,
                                                    absl::Duration timeout) {
  return std::make_unique<LedgerRewardIssuer>(std::move(channel), timeout);
}

std::unique_ptr<RewardIssuer> NewBenefitsRewardIssuer(
    std::shared_ptr<grpc::Channel> ledger_channel, std::shared_ptr<grpc::Channel> benefits_channel,
    absl::Duration timeout) {
  return std::make_unique<BenefitsRewardIssuer>(std::move(ledger_channel),
                                                std::move(benefits_channel), timeout);
}

}  // namespace mkt::campaigns
