#include "services/rewards/benefits_grpc.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "libs/core/status.h"
#include "libs/log/log.h"
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

// The customer-facing calls' tenancy (decision 011, "Tenancy of the customer-facing calls"): an
// object is visible to an actor when it belongs to the actor's lineage, i.e. the actor's org covers
// the object's (a bank's or branch's own coupons) or the object's org covers the actor's (a
// federation or parent-bank coupon used through a member bank's or branch's channel). Siblings
// are not in it.
bool InLineage(const tenancy::Actor& actor, const std::string& org) {
  return tenancy::Covers(actor.org_id, org) || tenancy::Covers(org, actor.org_id);
}

// Whether the caller named an actor at all (an internal caller of IssueCoupon may not).
bool NamesActor(const CallbackServerContext& ctx) {
  const auto& md = ctx.client_metadata();
  return md.find(rpc::kActorOrgKey) != md.end() || md.find(rpc::kActorOperatorKey) != md.end();
}

// The org of the coupon (redemption, token) a call acts on, refused exactly as a missing one when
// it lies outside the actor's lineage. A failed lookup is returned as is rather than left to the
// acting call: otherwise a missing id and a sibling's id could be told apart by the order in which
// the acting call checks its other fields.
absl::Status Visible(const tenancy::Actor& actor, const absl::StatusOr<std::string>& org,
                     const absl::Status& as_if_missing) {
  if (!org.ok()) return org.status();
  return InLineage(actor, *org) ? absl::OkStatus() : as_if_missing;
}

// A request that names its org (wallet, payout) must name one in the actor's lineage; the same
// refusal as the gateway's scope check, since the caller asked about another bank explicitly.
absl::Status ScopeInLineage(const tenancy::Actor& actor, const std::string& org) {
  if (org.empty() || InLineage(actor, org)) return absl::OkStatus();
  return Error(absl::StatusCode::kPermissionDenied, cpb::PERMISSION_DENIED,
               "org \"" + org + "\" is outside your organisation (" + actor.org_id + ")", "org_id");
}

// Keeps only the wallet's coupons in the actor's lineage (today the wallet reads one org, so this
// is a guard against a future cross-org wallet rather than a filter that bites).
void KeepLineage(const tenancy::Actor& actor, pb::Wallet& wallet) {
  auto* groups = wallet.mutable_coupons();
  for (pb::Wallet::CouponGroup& group : *groups) {
    auto* coupons = group.mutable_coupons();
    coupons->erase(
        std::remove_if(coupons->begin(), coupons->end(),
                       [&](const pb::Coupon& c) { return !InLineage(actor, c.org_id()); }),
        coupons->end());
  }
  groups->erase(
      std::remove_if(groups->begin(), groups->end(),
                     [](const pb::Wallet::CouponGroup& g) { return g.coupons().empty(); }),
      groups->end());
}

// One read of a GetWallets answer: the wallet, or the status GetWallet would have answered.
void SetRead(pb::WalletRead& out, absl::StatusOr<pb::Wallet> wallet) {
  if (wallet.ok()) {
    *out.mutable_wallet() = *std::move(wallet);
  } else {
    SetItemStatus(wallet.status(), out);
  }
}

// The most reads one GetWallets call may carry (benefits.proto).
constexpr int kMaxWalletReads = 256;

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
    return Run(ctx, resp, [=, this]() -> absl::StatusOr<pb::Coupon> {
      // Grants come from internal callers (campaigns, events, tools) that may name nobody; one
      // that names an actor is held to its lineage like the customer-facing calls: the template,
      // and the org whose campaign budget pays and whose wallet holds the coupon (budget_org_id;
      // the template's org when empty). A federation template is in every bank's lineage, but
      // another bank's budget is not (decision 011, amended 2026-11-29).
      if (NamesActor(*ctx)) {
        MKT_ASSIGN_OR_RETURN(const tenancy::Actor actor, rpc::ActorOf(*ctx));
        const absl::StatusOr<std::string> template_org = b_.OrgOfTemplate(req->template_id());
        MKT_RETURN_IF_ERROR(Visible(actor, template_org, NoSuchTemplate(req->template_id())));
        // The paying org must be of the caller's member bank (its branches act for it): the
        // federation's budget is not a member bank's to spend, though its templates are the
        // bank's to use, and another bank's budget is not either.
        const std::string& payer =
            req->budget_org_id().empty() ? *template_org : req->budget_org_id();
        if (!tenancy::Covers(tenancy::MemberBankOf(actor.org_id), payer)) {
          return Error(absl::StatusCode::kPermissionDenied, cpb::PERMISSION_DENIED,
                       "the campaign budgets of org \"" + payer + "\" are not yours (" +
                           actor.org_id + ") to spend; name your own org in budget_org_id",
                       "budget_org_id");
        }
      }
      return b_.IssueCoupon(*req);
    });
  }
  ServerUnaryReactor* LockCoupon(CallbackServerContext* ctx, const pb::LockCouponRequest* req,
                                 pb::Redemption* resp) override {
    return Run(ctx, resp, [=, this]() -> absl::StatusOr<pb::Redemption> {
      MKT_ASSIGN_OR_RETURN(const tenancy::Actor actor, rpc::ActorOf(*ctx));
      MKT_RETURN_IF_ERROR(Visible(actor, b_.OrgOfCoupon(req->coupon_code()), NoSuchCoupon()));
      return b_.LockCoupon(*req);
    });
  }
  ServerUnaryReactor* ConfirmRedemption(CallbackServerContext* ctx,
                                        const pb::RedemptionRequest* req,
                                        pb::Redemption* resp) override {
    return Run(ctx, resp, [=, this]() -> absl::StatusOr<pb::Redemption> {
      MKT_RETURN_IF_ERROR(RedemptionVisible(*ctx, req->redemption_id()));
      return b_.ConfirmRedemption(*req);
    });
  }
  ServerUnaryReactor* CancelRedemption(CallbackServerContext* ctx, const pb::RedemptionRequest* req,
                                       pb::Redemption* resp) override {
    return Run(ctx, resp, [=, this]() -> absl::StatusOr<pb::Redemption> {
      MKT_RETURN_IF_ERROR(RedemptionVisible(*ctx, req->redemption_id()));
      return b_.CancelRedemption(*req);
    });
  }
  ServerUnaryReactor* ReverseRedemption(CallbackServerContext* ctx,
                                        const pb::RedemptionRequest* req,
                                        pb::Redemption* resp) override {
    return Run(ctx, resp, [=, this]() -> absl::StatusOr<pb::Redemption> {
      MKT_RETURN_IF_ERROR(RedemptionVisible(*ctx, req->redemption_id()));
      return b_.ReverseRedemption(*req);
    });
  }
  ServerUnaryReactor* IssueQrToken(CallbackServerContext* ctx, const pb::IssueQrTokenRequest* req,
                                   pb::QrToken* resp) override {
    return Run(ctx, resp, [=, this]() -> absl::StatusOr<pb::QrToken> {
      MKT_ASSIGN_OR_RETURN(const tenancy::Actor actor, rpc::ActorOf(*ctx));
      MKT_RETURN_IF_ERROR(Visible(actor, b_.OrgOfCoupon(req->coupon_code()), NoSuchCoupon()));
      return b_.IssueQrToken(*req);
    });
  }
  ServerUnaryReactor* RedeemQrToken(CallbackServerContext* ctx, const pb::RedeemQrTokenRequest* req,
                                    pb::Redemption* resp) override {
    return Run(ctx, resp, [=, this]() -> absl::StatusOr<pb::Redemption> {
      MKT_ASSIGN_OR_RETURN(const tenancy::Actor actor, rpc::ActorOf(*ctx));
      MKT_RETURN_IF_ERROR(Visible(actor, b_.OrgOfQrToken(req->token()), UnknownQrToken()));
      return b_.RedeemQrToken(*req);
    });
  }
  ServerUnaryReactor* MarkCollected(CallbackServerContext* ctx, const pb::MarkCollectedRequest* req,
                                    pb::Coupon* resp) override {
    return Run(ctx, resp, [=, this]() -> absl::StatusOr<pb::Coupon> {
      MKT_ASSIGN_OR_RETURN(const tenancy::Actor actor, rpc::ActorOf(*ctx));
      MKT_RETURN_IF_ERROR(Visible(actor, b_.OrgOfCoupon(req->coupon_code()), NoSuchCoupon()));
      return b_.MarkCollected(*req);
    });
  }
  ServerUnaryReactor* GetWallet(CallbackServerContext* ctx, const pb::GetWalletRequest* req,
                                pb::Wallet* resp) override {
    // A wallet read moments ago (an app polling it) is answered here, on gRPC's thread, without
    // the hand-off to a worker and back (P3); one 3/4 of its TTL old is read again meanwhile, in
    // a batch with the others due, on a worker. Anything else, refusals included, takes the
    // worker.
    absl::StatusOr<tenancy::Actor> actor = rpc::ActorOf(*ctx);
    if (actor.ok() && ScopeInLineage(*actor, req->org_id()).ok()) {
      if (std::optional<pb::Wallet> wallet = b_.CachedWallet(
              *req,
              [this](std::function<void()> task) { return pool_.TrySubmit(std::move(task)); })) {
        KeepLineage(*actor, *wallet);
        *resp = *std::move(wallet);
        ServerUnaryReactor* reactor = ctx->DefaultReactor();
        reactor->Finish(grpc::Status::OK);
        return reactor;
      }
    }
    return Run(ctx, resp, [=, this, actor = std::move(actor)]() -> absl::StatusOr<pb::Wallet> {
      MKT_RETURN_IF_ERROR(actor.status());
      MKT_RETURN_IF_ERROR(ScopeInLineage(*actor, req->org_id()));
      MKT_ASSIGN_OR_RETURN(pb::Wallet wallet, b_.GetWallet(*req));
      KeepLineage(*actor, wallet);
      return wallet;
    });
  }
  ServerUnaryReactor* GetWallets(CallbackServerContext* ctx, const pb::GetWalletsRequest* req,
                                 pb::GetWalletsResponse* resp) override {
    // Each read as GetWallet would answer it: the cached ones here, on gRPC's thread; the others
    // (misses and refusals) on one worker task for the whole call, in order.
    // The call's one reactor, when it is answered here rather than by RunBlocking.
    auto finish = [ctx](const absl::Status& status) {
      ServerUnaryReactor* reactor = ctx->DefaultReactor();
      reactor->Finish(rpc::ToGrpcStatus(status));
      return reactor;
    };
    if (req->reads_size() > kMaxWalletReads) {
      return finish(Error(absl::StatusCode::kInvalidArgument, cpb::INVALID_ARGUMENT,
                          absl::StrCat("at most ", kMaxWalletReads, " wallet reads per call, not ",
                                       req->reads_size()),
                          "reads"));
    }
    absl::StatusOr<tenancy::Actor> actor = rpc::ActorOf(*ctx);
    if (!actor.ok()) return finish(actor.status());
    std::vector<int> rest;
    resp->mutable_reads()->Reserve(req->reads_size());
    for (int i = 0; i < req->reads_size(); ++i) {
      pb::WalletRead* out = resp->add_reads();
      const pb::GetWalletRequest& read = req->reads(i);
      if (ScopeInLineage(*actor, read.org_id()).ok()) {
        if (std::optional<pb::Wallet> wallet = b_.CachedWallet(
                read,
                [this](std::function<void()> task) { return pool_.TrySubmit(std::move(task)); })) {
          KeepLineage(*actor, *wallet);
          *out->mutable_wallet() = *std::move(wallet);
          continue;
        }
      }
      rest.push_back(i);
    }
    if (rest.empty()) return finish(absl::OkStatus());
    // The rest on one worker task. A failure there is each remaining read's own, so the reads
    // answered from memory above keep their wallets whatever happens to the others.
    ServerUnaryReactor* reactor = ctx->DefaultReactor();
    auto work = [this, ctx, req, resp, reactor, request_id = rpc::RequestIdOf(*ctx),
                 actor = *std::move(actor), rest]() {
      log::ScopedRequestId scoped(request_id);
      for (int i : rest) {
        const pb::GetWalletRequest& read = req->reads(i);
        absl::StatusOr<pb::Wallet> wallet = [&]() -> absl::StatusOr<pb::Wallet> {
          // The caller gave up (its deadline): the rest are not read for nobody.
          if (ctx->IsCancelled()) {
            return Error(absl::StatusCode::kCancelled, cpb::DEADLINE_EXCEEDED,
                         "the call ended before this wallet was read");
          }
          MKT_RETURN_IF_ERROR(ScopeInLineage(actor, read.org_id()));
          MKT_ASSIGN_OR_RETURN(pb::Wallet w, b_.GetWallet(read));
          KeepLineage(actor, w);
          return w;
        }();
        SetRead(*resp->mutable_reads(i), std::move(wallet));
      }
      reactor->Finish(grpc::Status::OK);
    };
    if (!pool_.TrySubmit(std::move(work))) {
      // Every worker busy and the queue full: what needed one is refused, the rest is answered.
      for (int i : rest) {
        SetRead(*resp->mutable_reads(i),
                Error(absl::StatusCode::kResourceExhausted, cpb::DEPENDENCY_UNAVAILABLE,
                      "server overloaded: too many requests queued, retry later"));
      }
      reactor->Finish(grpc::Status::OK);
    }
    return reactor;
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
    return Run(ctx, resp, [=, this]() -> absl::StatusOr<pb::Payout> {
      MKT_ASSIGN_OR_RETURN(const tenancy::Actor actor, rpc::ActorOf(*ctx));
      MKT_RETURN_IF_ERROR(ScopeInLineage(actor, req->org_id()));
      return payouts_.RequestPayout(*req);
    });
  }
  ServerUnaryReactor* GetFulfilment(CallbackServerContext* ctx, const pb::GetFulfilmentRequest* req,
                                    pb::Fulfilment* resp) override {
    return Run(ctx, resp, [=, this]() -> absl::StatusOr<pb::Fulfilment> {
      MKT_ASSIGN_OR_RETURN(const tenancy::Actor actor, rpc::ActorOf(*ctx));
      if (fulfilments_ == nullptr) {
        return Error(absl::StatusCode::kUnavailable, cpb::DEPENDENCY_UNAVAILABLE,
                     "third-party fulfilment is not running in this process");
      }
      MKT_ASSIGN_OR_RETURN(pb::Fulfilment f, fulfilments_->GetFulfilment(*req));
      // Judged by the org holding its coupon, as every other call on a coupon: the fulfilment's
      // org_id is the template's, and a bank's benefit of a federation template is not a
      // sibling bank's to see.
      const absl::StatusOr<std::string> holder = b_.OrgOfCoupon(f.coupon_code());
      if (!holder.ok() && !absl::IsNotFound(holder.status())) return holder.status();
      if (!holder.ok() || !InLineage(actor, *holder)) {
        // Word for word what Fulfilments::GetFulfilment answers for a missing one.
        return Error(absl::StatusCode::kNotFound, cpb::NOT_FOUND, "there is no such fulfilment",
                     req->fulfilment_id().empty() ? "coupon_code" : "fulfilment_id");
      }
      return f;
    });
  }

 private:
  absl::Status RedemptionVisible(const CallbackServerContext& ctx, const std::string& id) {
    MKT_ASSIGN_OR_RETURN(const tenancy::Actor actor, rpc::ActorOf(ctx));
    return Visible(actor, b_.OrgOfRedemption(id), NoSuchRedemption(id));
  }

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
