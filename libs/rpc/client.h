// Client side of service-to-service gRPC: channels to other services and per-call contexts
// with a deadline and the caller's request id.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace mkt::rpc {

// Returns a channel to `target` (host:port), insecure on the local stack; keepalive on.
std::shared_ptr<grpc::Channel> Connect(const std::string& target);

// Sets the deadline (now + `timeout`) and the request id metadata on `context`.
void PrepareClientContext(grpc::ClientContext& context, absl::Duration timeout,
                          std::string_view request_id);

// Returns the fully qualified names of the services `channel`'s server lists through gRPC server
// reflection (grpc.reflection.v1alpha), for probes and tests.
absl::StatusOr<std::vector<std::string>> ListServices(const std::shared_ptr<grpc::Channel>& channel,
                                                      absl::Duration timeout);

}  // namespace mkt::rpc
