// The gRPC face of the campaigns service: takes the actor from the call's metadata, runs the
// use case on the worker pool (it blocks on PostgreSQL) and maps the status.
#pragma once

#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/codegen/service_type.h>

#include <memory>

#include "libs/core/worker_pool.h"
#include "services/campaigns/campaign_service.h"

namespace mkt::campaigns {

// Returns the gRPC service (callback API) serving `service`; both must outlive the server.
std::unique_ptr<grpc::Service> NewCampaignsGrpcService(CampaignService& service, WorkerPool& pool);

}  // namespace mkt::campaigns
