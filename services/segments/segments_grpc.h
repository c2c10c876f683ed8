// The gRPC face of the segments service (marketing.segments.v1.Segments). Admin calls take the
// actor from metadata (libs/rpc/actor.h); every call runs on the worker pool because some reach
// PostgreSQL (membership calls only on a segment-cache miss).
#pragma once

#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/codegen/service_type.h>

#include <memory>

#include "libs/core/worker_pool.h"
#include "services/segments/segment_service.h"

namespace mkt::segments {

// Returns the gRPC service (callback API) serving `service`; both must outlive the server.
std::unique_ptr<grpc::Service> NewSegmentsGrpcService(SegmentService& service, WorkerPool& pool);

}  // namespace mkt::segments
