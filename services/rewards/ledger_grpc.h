// The gRPC face of the ledger: every call runs on a worker pool, because writes wait for their
// group commit and reads block on PostgreSQL.
#pragma once

#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/codegen/service_type.h>

#include <memory>

#include "libs/core/worker_pool.h"
#include "services/rewards/ledger_service.h"

namespace mkt::rewards {

// Returns the gRPC service (callback API) that serves `ledger`; both must outlive the server.
std::unique_ptr<grpc::Service> NewLedgerGrpcService(LedgerService& ledger, WorkerPool& pool);

}  // namespace mkt::rewards
