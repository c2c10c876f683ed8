#include "services/events/events_grpc.h"

#include "libs/rpc/actor.h"
#include "libs/rpc/server.h"
#include "marketing/events/v1/events.grpc.pb.h"

namespace mkt::events {
namespace {

using grpc::CallbackServerContext;
using grpc::ServerUnaryReactor;

class EventsAdminService final : public pb::EventsAdmin::CallbackService {
 public:
  EventsAdminService(EventsService& service, WorkerPool& pool) : service_(service), pool_(pool) {}

  ServerUnaryReactor* ListEventTypes(CallbackServerContext* ctx, const pb::ListEventTypesRequest*,
                                     pb::ListEventTypesResponse* resp) override {
    return Run(ctx, resp,
               [this](const tenancy::Actor&) -> absl::StatusOr<pb::ListEventTypesResponse> {
                 pb::ListEventTypesResponse r;
                 for (auto& t : service_.ListEventTypes()) *r.add_event_types() = std::move(t);
                 return r;
               });
  }
  ServerUnaryReactor* UpsertEventType(CallbackServerContext* ctx, const pb::EventType* req,
                                      pb::EventType* resp) override {
    return Run(ctx, resp,
               [=, this](const tenancy::Actor& a) { return service_.UpsertEventType(a, *req); });
  }
  ServerUnaryReactor* UpsertRule(CallbackServerContext* ctx, const pb::TriggerRule* req,
                                 pb::UpsertRuleResponse* resp) override {
    return Run(ctx, resp,
               [=, this](const tenancy::Actor& a) { return service_.UpsertRule(a, *req); });
  }
  ServerUnaryReactor* ListRules(CallbackServerContext* ctx, const pb::ListRulesRequest* req,
                                pb::ListRulesResponse* resp) override {
    return Run(ctx, resp,
               [=, this](const tenancy::Actor& a) { return service_.ListRules(a, *req); });
  }
  ServerUnaryReactor* ListCustomerEvents(CallbackServerContext* ctx,
                                         const pb::ListCustomerEventsRequest* req,
                                         pb::ListCustomerEventsResponse* resp) override {
    return Run(ctx, resp,
               [=, this](const tenancy::Actor& a) { return service_.ListCustomerEvents(a, *req); });
  }
  ServerUnaryReactor* Explain(CallbackServerContext* ctx, const pb::ExplainRequest* req,
                              pb::ExplainResponse* resp) override {
    return Run(ctx, resp, [=, this](const tenancy::Actor& a) { return service_.Explain(a, *req); });
  }

 private:
  template <class Response, class Call>
  ServerUnaryReactor* Run(CallbackServerContext* ctx, Response* response, Call call) {
    absl::StatusOr<tenancy::Actor> actor = rpc::ActorOf(*ctx);
    if (!actor.ok()) {
      ServerUnaryReactor* reactor = ctx->DefaultReactor();
      reactor->Finish(rpc::ToGrpcStatus(actor.status()));
      return reactor;
    }
    return rpc::RunBlockingInto(ctx, pool_, response,
                                [call = std::move(call), a = *actor]() { return call(a); });
  }

  EventsService& service_;
  WorkerPool& pool_;
};

}  // namespace

std::unique_ptr<grpc::Service> NewEventsAdminService(EventsService& service, WorkerPool& pool) {
  return std::make_unique<EventsAdminService>(service, pool);
}

}  // namespace mkt::events
