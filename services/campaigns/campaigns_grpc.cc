#include "services/campaigns/campaigns_grpc.h"

#include "libs/rpc/actor.h"
#include "libs/rpc/server.h"
#include "marketing/campaigns/v1/campaigns.grpc.pb.h"

namespace mkt::campaigns {
namespace {

using grpc::CallbackServerContext;
using grpc::ServerUnaryReactor;

class CampaignsGrpcService final : public pb::Campaigns::CallbackService {
 public:
  CampaignsGrpcService(CampaignService& service, WorkerPool& pool)
      : service_(service), pool_(pool) {}

#define MKT_READ(Method, Request, Response, Call)                                      \
  ServerUnaryReactor* Method(CallbackServerContext* ctx, const pb::Request* req,       \
                             pb::Response* resp) override {                            \
    return Run(ctx, resp, [=, this](const tenancy::Actor& actor, const std::string&) { \
      return service_.Call(actor, *req);                                               \
    });                                                                                \
  }
#define MKT_WRITE(Method, Request, Response, Call)                                        \
  ServerUnaryReactor* Method(CallbackServerContext* ctx, const pb::Request* req,          \
                             pb::Response* resp) override {                               \
    return Run(ctx, resp, [=, this](const tenancy::Actor& actor, const std::string& id) { \
      return service_.Call(actor, *req, id);                                              \
    });                                                                                   \
  }
#define MKT_ACT(Method, ActionValue)                                                           \
  ServerUnaryReactor* Method(CallbackServerContext* ctx, const pb::CampaignActionRequest* req, \
                             pb::Campaign* resp) override {                                    \
    return Run(ctx, resp, [=, this](const tenancy::Actor& actor, const std::string& id) {      \
      return service_.Act(actor, ActionValue, *req, id);                                       \
    });                                                                                        \
  }

  MKT_WRITE(CreateOrg, CreateOrgRequest, Org, CreateOrg)
  MKT_READ(GetOrg, GetOrgRequest, Org, GetOrg)
  MKT_READ(ListOrgs, ListOrgsRequest, ListOrgsResponse, ListOrgs)
  MKT_WRITE(CreateCampaign, CreateCampaignRequest, Campaign, CreateCampaign)
  MKT_WRITE(SaveStep, SaveStepRequest, Campaign, SaveStep)
  MKT_READ(GetCampaign, GetCampaignRequest, Campaign, GetCampaign)
  MKT_READ(ListCampaigns, ListCampaignsRequest, ListCampaignsResponse, ListCampaigns)
  MKT_READ(ValidateCampaign, ValidateCampaignRequest, ValidateCampaignResponse, Validate)
  MKT_READ(ForecastCost, ForecastCostRequest, CostForecast, Forecast)
  MKT_READ(ListVersions, ListVersionsRequest, ListVersionsResponse, ListVersions)
  MKT_ACT(SubmitCampaign, Action::kSubmit)
  MKT_ACT(ApproveCampaign, Action::kApprove)
  MKT_ACT(RejectCampaign, Action::kReject)
  MKT_ACT(PublishCampaign, Action::kPublish)
  MKT_ACT(PauseCampaign, Action::kPause)
  MKT_ACT(ResumeCampaign, Action::kResume)
  MKT_ACT(EndCampaign, Action::kEnd)
  MKT_ACT(ArchiveCampaign, Action::kArchive)
  MKT_WRITE(SaveAsTemplate, SaveAsTemplateRequest, Template, SaveAsTemplate)
  MKT_READ(GetTemplate, GetTemplateRequest, Template, GetTemplate)
  MKT_READ(ListTemplates, ListTemplatesRequest, ListTemplatesResponse, ListTemplates)
  MKT_WRITE(CreateFromTemplate, CreateFromTemplateRequest, Campaign, CreateFromTemplate)
  MKT_WRITE(CopyCampaign, CopyCampaignRequest, Campaign, CopyCampaign)
  MKT_READ(ListAudit, ListAuditRequest, ListAuditResponse, ListAudit)

#undef MKT_READ
#undef MKT_WRITE
#undef MKT_ACT

 private:
  // Resolves the actor on the gRPC thread (cheap), then runs `call` on the worker pool.
  template <class Response, class Call>
  ServerUnaryReactor* Run(CallbackServerContext* ctx, Response* response, Call call) {
    absl::StatusOr<tenancy::Actor> actor = rpc::ActorOf(*ctx);
    std::string request_id = rpc::RequestIdOf(*ctx);
    return rpc::RunBlockingInto(ctx, pool_, response,
                                [actor = std::move(actor), request_id = std::move(request_id),
                                 call = std::move(call)]() -> absl::StatusOr<Response> {
                                  if (!actor.ok()) return actor.status();
                                  return call(*actor, request_id);
                                });
  }

  CampaignService& service_;
  WorkerPool& pool_;
};

}  // namespace

std::unique_ptr<grpc::Service> NewCampaignsGrpcService(CampaignService& service, WorkerPool& pool) {
  return std::make_unique<CampaignsGrpcService>(service, pool);
}

}  // namespace mkt::campaigns
