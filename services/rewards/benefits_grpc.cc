#include "services/rewards/benefits_grpc.h"

#include "absl/time/clock.h"
#include "libs/core/status.h"
#include "libs/rpc/actor.h"
#include "libs/rpc/server.h"
#include "libs/tenancy/tenancy.h"
#include "marketing/rewards/v1/benefits.grpc.pb.h"

namespace mkt::rewards {
namespace {

namespace cpb = ::marketing::common::v1;
using grpc::CallbackServerContext;
using grpc::ServerUnaryReactor;

// An operator of an org covering `owner_org`, with a role that may manage benefits.
absl::Status MayManage(const CallbackServerContext& ctx, const std::string& owner_org) {
  MKT_ASSIGN_OR_RETURN(const tenancy::Actor actor, rpc::ActorOf(ctx));
  if (!actor.Has(tenancy::Role::kAdmin) && !actor.Has(tenancy::Role::kPlanner)) {
    return Error(absl::StatusCode::kPermissionDenied, cpb::PERMISSION_DENIED,
                 "managing benefit templates needs the admin or planner role");
  }
  if (!tenancy::Covers(actor.org_id, owner_org)) {
    return Error(absl::StatusCode::kPermissionDenied, cpb::PERMISSION_DENIED,
                 "the template belongs to an organisation outside yours");
  }
  return absl::OkStatus();
}

class BenefitsGrpcService final : public pb::Benefits::CallbackService {
 public:
  BenefitsGrpcService(Benefits& benefits, Payouts& payouts, WorkerPool& pool,
                      Fulfilments* fulfilments)
      : b_(benefits), payouts_(payouts), pool_(pool), fulfilments_(fulfilments) {}

  ServerUnaryReactor* CreateTemplate(CallbackServerContext* ctx,
                                     const pb::CreateTemplateRequest* req,
                                     pb::BenefitTemplate* resp) override {
    return Run(ctx, resp, [=, this]() -> absl::StatusOr<pb::BenefitTemplate> {
      MKT_RETURN_IF_ERROR(MayManage(*ctx, req->template_().org_id()));
      return b_.CreateTemplate(req->template_());
    });
  }
  ServerUnaryReactor* ActivateTemplate(CallbackServerContext* ctx,
                                       const pb::ActivateTemplateRequest* req,
                                       pb::BenefitTemplate* resp) override {
    return Run(ctx, resp, [=, this]() -> absl::StatusOr<pb::BenefitTemplate> {
      MKT_ASSIGN_OR_RETURN(const pb::BenefitTemplate t, b_.GetTemplate(req->template_id()));
      MKT_RETURN_IF_ERROR(MayManage(*ctx, t.org_id()));
      return b_.ActivateTemplate(req->template_id());
    });
  }
  ServerUnaryReactor* RetireTemplate(CallbackServerContext* ctx,
                                     const pb::RetireTemplateRequest* req,
                                     pb::BenefitTemplate* resp) override {
    return Run(ctx, resp, [=, this]() -> absl::StatusOr<pb::BenefitTemplate> {
      MKT_ASSIGN_OR_RETURN(const pb::BenefitTemplate t, b_.GetTemplate(req->template_id()));
      MKT_RETURN_IF_ERROR(MayManage(*ctx, t.org_id()));
      return b_.RetireTemplate(req->template_id());
    });
  }
  ServerUnaryReactor* GetTemplate(CallbackServerContext* ctx, const pb::GetTemplateRequest* req,
                                  pb::BenefitTemplate* resp) override {
    return Run(ctx, resp, [=, this] { return b_.GetTemplate(req->template_id()); });
  }
  ServerUnaryReactor* IssueCoupon(CallbackServerContext* ctx, const pb::IssueCouponRequest* req,
                                  pb::Coupon* resp) override {
    return Run(ctx, resp, [=, this] { return b_.IssueCoupon(*req); });
  }
  ServerUnaryReactor* LockCoupon(CallbackServerContext* ctx, const pb::LockCouponRequest* req,
                                 pb::Redemption* resp) override {
    return Run(ctx, resp, [=, this] { return b_.LockCoupon(*req); });
  }
  ServerUnaryReactor* ConfirmRedemption(CallbackServerContext* ctx,
                                        const pb::RedemptionRequest* req,
                                        pb::Redemption* resp) override {
    return Run(ctx, resp, [=, this] { return b_.ConfirmRedemption(*req); });
  }
  ServerUnaryReactor* CancelRedemption(CallbackServerContext* ctx, const pb::RedemptionRequest* req,
                                       pb::Redemption* resp) override {
    return Run(ctx, resp, [=, this] { return b_.CancelRedemption(*req); });
  }
  ServerUnaryReactor* ReverseRedemption(CallbackServerContext* ctx,
                                        const pb::RedemptionRequest* req,
                                        pb::Redemption* resp) override {
    return Run(ctx, resp, [=, this] { return b_.ReverseRedemption(*req); });
  }
  ServerUnaryReactor* IssueQrToken(CallbackServerContext* ctx, const pb::IssueQrTokenRequest* req,
                                   pb::QrToken* resp) override {
    return Run(ctx, resp, [=, this] { return b_.IssueQrToken(*req); });
  }
  ServerUnaryReactor* RedeemQrToken(CallbackServerContext* ctx, const pb::RedeemQrTokenRequest* req,
                                    pb::Redemption* resp) override {
    return Run(ctx, resp, [=, this] { return b_.RedeemQrToken(*req); });
  }
  ServerUnaryReactor* MarkCollected(CallbackServerContext* ctx, const pb::MarkCollectedRequest* req,
                                    pb::Coupon* resp) override {
    return Run(ctx, resp, [=, this] { return b_.MarkCollected(*req); });
  }
  ServerUnaryReactor* GetWallet(CallbackServerContext* ctx, const pb::GetWalletRequest* req,
                                pb::Wallet* resp) override {
    return Run(ctx, resp, [=, this] { return b_.GetWallet(*req); });
  }
  ServerUnaryReactor* RunCouponExpiry(CallbackServerContext* ctx,
                                      const pb::RunCouponExpiryRequest* req,
                                      pb::RunCouponExpiryResponse* resp) override {
    return Run(ctx, resp, [=, this]() -> absl::StatusOr<pb::RunCouponExpiryResponse> {
      MKT_ASSIGN_OR_RETURN(const tenancy::Actor actor, rpc::ActorOf(*ctx));
      if (!actor.Has(tenancy::Role::kAdmin) || actor.org_id != "fed") {
        return Error(absl::StatusCode::kPermissionDenied, cpb::PERMISSION_DENIED,
                     "running the expiry job needs a federation admin");
      }
      const absl::Time as_of =
          req->has_as_of() ? absl::FromUnixSeconds(req->as_of().seconds()) : absl::Now();
      return b_.RunCouponExpiry(as_of, 10000);
    });
  }
  ServerUnaryReactor* RequestPayout(CallbackServerContext* ctx, const pb::RequestPayoutRequest* req,
                                    pb::Payout* resp) override {
    return Run(ctx, resp, [=, this] { return payouts_.RequestPayout(*req); });
  }
  ServerUnaryReactor* GetFulfilment(CallbackServerContext* ctx, const pb::GetFulfilmentRequest* req,
                                    pb::Fulfilment* resp) override {
    return Run(ctx, resp, [=, this]() -> absl::StatusOr<pb::Fulfilment> {
      if (fulfilments_ == nullptr) {
        return Error(absl::StatusCode::kUnavailable, cpb::DEPENDENCY_UNAVAILABLE,
                     "third-party fulfilment is not running in this process");
      }
      return fulfilments_->GetFulfilment(*req);
    });
  }

 private:
  template <class Response, class Call>
  ServerUnaryReactor* Run(CallbackServerContext* ctx, Response* response, Call call) {
    return rpc::RunBlockingInto(ctx, pool_, response, std::move(call));
  }

  Benefits& b_;
  Payouts& payouts_;
  WorkerPool& pool_;
  Fulfilments* fulfilments_;
};

}  // namespace

std::unique_ptr<grpc::Service> NewBenefitsGrpcService(Benefits& benefits, Payouts& payouts,
                                                      WorkerPool& pool, Fulfilments* fulfilments) {
  return std::make_unique<BenefitsGrpcService>(benefits, payouts, pool, fulfilments);
}

}  // namespace mkt::rewards
