// Carries the acting operator (libs/tenancy) between services as gRPC metadata. The gateway sets
// it after authenticating an admin session; services trust it because only the gateway and other
// services reach their ports (decision 007).
#pragma once

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "libs/tenancy/tenancy.h"

namespace mkt::rpc {

inline constexpr char kActorOrgKey[] = "x-mkt-org";
inline constexpr char kActorOperatorKey[] = "x-mkt-operator";
// Comma-separated role names, e.g. "planner,approver".
inline constexpr char kActorRolesKey[] = "x-mkt-roles";

// Adds `actor` to an outgoing call.
void AttachActor(grpc::ClientContext& context, const tenancy::Actor& actor);

// The actor of an incoming call. UNAUTHENTICATED (reason CREDENTIALS_MISSING) when the org or the
// operator is missing; INVALID_ARGUMENT when the org id or a role is malformed.
absl::StatusOr<tenancy::Actor> ActorOf(const grpc::ServerContextBase& context);

}  // namespace mkt::rpc
