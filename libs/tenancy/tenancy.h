// Who is acting, and for which organisation: the org tree (federation → member banks → branches)
// and the rule every service applies to tenant data, "an operator acting for org X sees X and its
// descendants, never a sibling". The tree is encoded in the ids themselves (decision 007), so a
// service can decide visibility without asking anyone.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace mkt::tenancy {

// The root of the tree. Member banks are "bank-a", "bank-b"; a branch of bank-a is
// "bank-a.branch-01"; a sub-branch "bank-a.branch-01.sub-3".
inline constexpr char kFederation[] = "fed";

// Operator roles (ARCHITECTURE.md "Tenancy and roles").
enum class Role { kAdmin, kPlanner, kApprover, kAnalyst, kAuditor };

// "admin", "planner", ... (lowercase, as carried in metadata and stored in audit rows).
std::string_view RoleName(Role role);
absl::StatusOr<Role> ParseRole(std::string_view name);

// The operator on whose behalf a call is made. Set by the gateway from the admin session and
// carried between services as gRPC metadata (libs/rpc/actor.h). Service-to-service calls made on
// nobody's behalf use SystemActor().
struct Actor {
  std::string org_id;
  std::string operator_id;
  std::vector<Role> roles;

  bool Has(Role role) const;
};

// The platform itself (housekeeping, consumers): the federation org, every role.
Actor SystemActor(std::string_view component);

// True for "fed" and for dot-separated segments of [a-z0-9-] (1..32 chars each, starting with a
// letter or digit), at most 4 levels and 64 characters.
bool IsValidOrgId(std::string_view org_id);
inline constexpr size_t kMaxOrgIdLength = 64;
// The same rule as a regular expression, for API documents (with kMaxOrgIdLength as the maximum
// length). It cannot say that a member bank's first segment is not "fed" ("fed.x" matches and is
// still refused).
std::string OrgIdPattern();

// The parent of `org_id`: "bank-a.branch-01" → "bank-a", "bank-a" → "fed", "fed" → "".
std::string ParentOf(std::string_view org_id);

// `org_id` first, then each ancestor up to and including the federation.
std::vector<std::string> SelfAndAncestors(std::string_view org_id);

// True when `actor_org` is `owner_org` or one of its ancestors: the actor may see and act on data
// owned by `owner_org`. Siblings and descendants-looking-up are false.
bool Covers(std::string_view actor_org, std::string_view owner_org);

// The member bank `org_id` belongs to ("bank-a.branch-01" → "bank-a"); "fed" for the federation.
std::string MemberBankOf(std::string_view org_id);

}  // namespace mkt::tenancy
