// The gRPC face of participation (marketing.campaigns.v1.Participations): the in-memory refusals
// run on the gRPC thread, so a grab's sold-out and rate-limited answers never wait for a worker;
// everything else runs on the participation worker pool (it blocks on PostgreSQL and the ledger).
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>

#include "libs/core/worker_pool.h"
#include "services/campaigns/participation_service.h"

namespace mkt::campaigns {

// Returns the service (callback API); `service` and `pool` must outlive the server.
std::unique_ptr<grpc::Service> NewParticipationsGrpcService(ParticipationService& service,
                                                            WorkerPool& pool);

}  // namespace mkt::campaigns
