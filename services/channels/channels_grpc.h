// The gRPC face of the channel registry: ChannelRegistry calls run on a worker pool because
// they block on PostgreSQL.
#pragma once

#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/codegen/service_type.h>

#include <memory>

#include "libs/core/worker_pool.h"
#include "services/channels/channel_registry.h"

namespace mkt::channels {

// Returns the gRPC service (callback API) that serves `registry`; both must outlive the server.
std::unique_ptr<grpc::Service> NewChannelRegistryService(ChannelRegistry& registry,
                                                         WorkerPool& pool);

}  // namespace mkt::channels
