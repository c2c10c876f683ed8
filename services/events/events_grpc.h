// The gRPC face of the events service (EventsAdmin): calls run on a worker pool because they
// block on PostgreSQL; the acting operator comes from the call's metadata.
#pragma once

#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/codegen/service_type.h>

#include <memory>

#include "libs/core/worker_pool.h"
#include "services/events/events_service.h"

namespace mkt::events {

// Returns the service (callback API) serving `service`; both must outlive the server.
std::unique_ptr<grpc::Service> NewEventsAdminService(EventsService& service, WorkerPool& pool);

}  // namespace mkt::events
