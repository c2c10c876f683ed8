#include "services/campaigns/participation_grpc.h"

#include "libs/rpc/server.h"
#include "marketing/campaigns/v1/participation.grpc.pb.h"

namespace mkt::campaigns {
namespace {

using grpc::CallbackServerContext;
using grpc::ServerUnaryReactor;

class ParticipationsGrpcService final : public pb::Participations::CallbackService {
 public:
  ParticipationsGrpcService(ParticipationService& service, WorkerPool& pool)
      : service_(service), pool_(pool) {}

  ServerUnaryReactor* Participate(CallbackServerContext* ctx, const pb::ParticipateRequest* req,
                                  pb::Participation* resp) override {
    if (absl::Status screened = service_.Screen(*req); !screened.ok()) {
      ServerUnaryReactor* reactor = ctx->DefaultReactor();
      reactor->Finish(rpc::ToGrpcStatus(screened));
      return reactor;
    }
    return rpc::RunBlockingInto(ctx, pool_, resp, [=, this] {
      bool replayed = false;
      absl::StatusOr<pb::Participation> answer = service_.Participate(*req, &replayed);
      // Before the reactor finishes (RunBlocking finishes it after this returns).
      if (replayed) ctx->AddTrailingMetadata(rpc::kIdempotentReplayedKey, "true");
      return answer;
    });
  }
  ServerUnaryReactor* GetParticipation(CallbackServerContext* ctx,
                                       const pb::GetParticipationRequest* req,
                                       pb::Participation* resp) override {
    return rpc::RunBlockingInto(ctx, pool_, resp,
                                [=, this] { return service_.GetParticipation(*req); });
  }
  ServerUnaryReactor* ListEligible(CallbackServerContext* ctx, const pb::ListEligibleRequest* req,
                                   pb::ListEligibleResponse* resp) override {
    return rpc::RunBlockingInto(ctx, pool_, resp,
                                [=, this] { return service_.ListEligible(*req); });
  }
  ServerUnaryReactor* ListCoupons(CallbackServerContext* ctx, const pb::ListCouponsRequest* req,
                                  pb::ListCouponsResponse* resp) override {
    return rpc::RunBlockingInto(ctx, pool_, resp, [=, this] { return service_.ListCoupons(*req); });
  }
  ServerUnaryReactor* GetDrawStats(CallbackServerContext* ctx, const pb::GetDrawStatsRequest* req,
                                   pb::DrawStats* resp) override {
    return rpc::RunBlockingInto(ctx, pool_, resp,
                                [=, this] { return service_.GetDrawStats(*req); });
  }

  ServerUnaryReactor* GetSoldOutBoard(CallbackServerContext* ctx,
                                      const pb::GetSoldOutBoardRequest* req,
                                      pb::SoldOutBoard* resp) override {
    return rpc::RunBlockingInto(ctx, pool_, resp,
                                [=, this] { return service_.GetSoldOutBoard(*req); });
  }

 private:
  ParticipationService& service_;
  WorkerPool& pool_;
};

}  // namespace

std::unique_ptr<grpc::Service> NewParticipationsGrpcService(ParticipationService& service,
                                                            WorkerPool& pool) {
  return std::make_unique<ParticipationsGrpcService>(service, pool);
}

}  // namespace mkt::campaigns
