#include "services/rewards/ledger_grpc.h"

#include "libs/rpc/server.h"
#include "marketing/rewards/v1/ledger.grpc.pb.h"

namespace mkt::rewards {
namespace {

using grpc::CallbackServerContext;
using grpc::ServerUnaryReactor;

class LedgerGrpcService final : public pb::Ledger::CallbackService {
 public:
  LedgerGrpcService(LedgerService& ledger, WorkerPool& pool) : ledger_(ledger), pool_(pool) {}

  ServerUnaryReactor* CreateTransfers(CallbackServerContext* ctx,
                                      const pb::CreateTransfersRequest* req,
                                      pb::CreateTransfersResponse* resp) override {
    return Run(ctx, resp, [=, this] { return ledger_.CreateTransfers(*req); });
  }
  ServerUnaryReactor* PostPending(CallbackServerContext* ctx, const pb::ResolvePendingRequest* req,
                                  pb::Transfer* resp) override {
    return Run(ctx, resp, [=, this] { return ledger_.ResolvePending(*req, /*post=*/true); });
  }
  ServerUnaryReactor* VoidPending(CallbackServerContext* ctx, const pb::ResolvePendingRequest* req,
                                  pb::Transfer* resp) override {
    return Run(ctx, resp, [=, this] { return ledger_.ResolvePending(*req, /*post=*/false); });
  }
  ServerUnaryReactor* Grant(CallbackServerContext* ctx, const pb::GrantRequest* req,
                            pb::GrantResponse* resp) override {
    // Asynchronous: a grant waits for its group commit without holding a worker thread, so the
    // batch size follows the load instead of the worker count.
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    ledger_.GrantAsync(*req, pool_,
                       [reactor, resp, request_id = rpc::RequestIdOf(*ctx)](
                           absl::StatusOr<pb::GrantResponse> result) {
                         log::ScopedRequestId scoped(request_id);
                         if (result.ok()) *resp = *std::move(result);
                         reactor->Finish(rpc::ToGrpcStatus(result.status()));
                       });
    return reactor;
  }
  ServerUnaryReactor* GrantMany(CallbackServerContext* ctx, const pb::GrantManyRequest* req,
                                pb::GrantManyResponse* resp) override {
    // Asynchronous like Grant: the call ends when its last grant's group commit did.
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    ledger_.GrantManyAsync(*req, pool_,
                           [reactor, resp, request_id = rpc::RequestIdOf(*ctx)](
                               absl::StatusOr<pb::GrantManyResponse> result) {
                             log::ScopedRequestId scoped(request_id);
                             if (result.ok()) *resp = *std::move(result);
                             reactor->Finish(rpc::ToGrpcStatus(result.status()));
                           });
    return reactor;
  }
  ServerUnaryReactor* Spend(CallbackServerContext* ctx, const pb::SpendRequest* req,
                            pb::SpendResponse* resp) override {
    return Run(ctx, resp, [=, this] { return ledger_.Spend(*req); });
  }
  ServerUnaryReactor* Reverse(CallbackServerContext* ctx, const pb::ReverseRequest* req,
                              pb::ReverseResponse* resp) override {
    return Run(ctx, resp, [=, this] { return ledger_.Reverse(*req); });
  }
  ServerUnaryReactor* Fund(CallbackServerContext* ctx, const pb::FundRequest* req,
                           pb::FundResponse* resp) override {
    return Run(ctx, resp, [=, this] { return ledger_.Fund(*req); });
  }
  ServerUnaryReactor* GetBalances(CallbackServerContext* ctx, const pb::GetBalancesRequest* req,
                                  pb::GetBalancesResponse* resp) override {
    return Run(ctx, resp, [=, this] { return ledger_.GetBalances(*req); });
  }
  ServerUnaryReactor* GetAccount(CallbackServerContext* ctx, const pb::GetAccountRequest* req,
                                 pb::Account* resp) override {
    return Run(ctx, resp, [=, this] { return ledger_.GetAccount(*req); });
  }
  ServerUnaryReactor* GetCampaignBudget(CallbackServerContext* ctx,
                                        const pb::GetCampaignBudgetRequest* req,
                                        pb::CampaignBudget* resp) override {
    return Run(ctx, resp, [=, this] { return ledger_.GetCampaignBudget(*req); });
  }
  ServerUnaryReactor* ListExpiringLots(CallbackServerContext* ctx,
                                       const pb::ListExpiringLotsRequest* req,
                                       pb::ListExpiringLotsResponse* resp) override {
    return Run(ctx, resp, [=, this] { return ledger_.ListExpiringLots(*req); });
  }
  ServerUnaryReactor* ListHistory(CallbackServerContext* ctx, const pb::ListHistoryRequest* req,
                                  pb::ListHistoryResponse* resp) override {
    return Run(ctx, resp, [=, this] { return ledger_.ListHistory(*req); });
  }
  ServerUnaryReactor* GetStatement(CallbackServerContext* ctx, const pb::GetStatementRequest* req,
                                   pb::GetStatementResponse* resp) override {
    return Run(ctx, resp, [=, this] { return ledger_.GetStatement(*req); });
  }
  ServerUnaryReactor* RunExpiry(CallbackServerContext* ctx, const pb::RunExpiryRequest* req,
                                pb::RunExpiryResponse* resp) override {
    return Run(ctx, resp, [=, this] { return ledger_.RunExpiry(*req); });
  }
  ServerUnaryReactor* CheckIntegrity(CallbackServerContext* ctx, const pb::CheckIntegrityRequest*,
                                     pb::CheckIntegrityResponse* resp) override {
    return Run(ctx, resp, [this] { return ledger_.CheckIntegrity(); });
  }

 private:
  template <class Response, class Call>
  ServerUnaryReactor* Run(CallbackServerContext* ctx, Response* response, Call call) {
    return rpc::RunBlockingInto(ctx, pool_, response, std::move(call));
  }

  LedgerService& ledger_;
  WorkerPool& pool_;
};

}  // namespace

std::unique_ptr<grpc::Service> NewLedgerGrpcService(LedgerService& ledger, WorkerPool& pool) {
  return std::make_unique<LedgerGrpcService>(ledger, pool);
}

}  // namespace mkt::rewards
