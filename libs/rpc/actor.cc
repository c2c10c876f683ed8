#include "libs/rpc/actor.h"

#include <string>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "libs/core/status.h"

namespace mkt::rpc {
namespace {

std::string Metadata(const grpc::ServerContextBase& context, const char* key) {
  const auto& md = context.client_metadata();
  auto it = md.find(key);
  if (it == md.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

}  // namespace

void AttachActor(grpc::ClientContext& context, const tenancy::Actor& actor) {
  context.AddMetadata(kActorOrgKey, actor.org_id);
  context.AddMetadata(kActorOperatorKey, actor.operator_id);
  std::string roles;
  for (tenancy::Role role : actor.roles) {
    if (!roles.empty()) roles += ',';
    roles += std::string(tenancy::RoleName(role));
  }
  // No roles (a channel acting for its org) is no header: ActorOf reads an absent one as none.
  if (!roles.empty()) context.AddMetadata(kActorRolesKey, roles);
}

absl::StatusOr<tenancy::Actor> ActorOf(const grpc::ServerContextBase& context) {
  tenancy::Actor actor;
  actor.org_id = Metadata(context, kActorOrgKey);
  actor.operator_id = Metadata(context, kActorOperatorKey);
  if (actor.org_id.empty() || actor.operator_id.empty()) {
    return Error(absl::StatusCode::kUnauthenticated, ::marketing::common::v1::CREDENTIALS_MISSING,
                 "the call names no acting operator (metadata x-mkt-org and x-mkt-operator)");
  }
  if (!tenancy::IsValidOrgId(actor.org_id)) {
    return InvalidArgument("x-mkt-org", "\"" + actor.org_id + "\" is not an organisation id");
  }
  for (absl::string_view name :
       absl::StrSplit(Metadata(context, kActorRolesKey), ',', absl::SkipWhitespace())) {
    MKT_ASSIGN_OR_RETURN(tenancy::Role role,
                         tenancy::ParseRole(std::string_view(name.data(), name.size())));
    actor.roles.push_back(role);
  }
  return actor;
}

}  // namespace mkt::rpc
