#include "libs/tenancy/tenancy.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "libs/core/status.h"

namespace mkt::tenancy {
namespace {

constexpr size_t kMaxSegmentLength = 32;
constexpr int kMaxDepth = 4;

bool IsValidSegment(std::string_view segment) {
  if (segment.empty() || segment.size() > kMaxSegmentLength) return false;
  if (segment.front() == '-') return false;
  return std::all_of(segment.begin(), segment.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
}

}  // namespace

std::string_view RoleName(Role role) {
  switch (role) {
    case Role::kAdmin:
      return "admin";
    case Role::kPlanner:
      return "planner";
    case Role::kApprover:
      return "approver";
    case Role::kAnalyst:
      return "analyst";
    case Role::kAuditor:
      return "auditor";
  }
  return "unknown";
}

absl::StatusOr<Role> ParseRole(std::string_view name) {
  for (Role role :
       {Role::kAdmin, Role::kPlanner, Role::kApprover, Role::kAnalyst, Role::kAuditor}) {
    if (RoleName(role) == name) return role;
  }
  return InvalidArgument("roles", std::string("unknown role \"") + std::string(name) +
                                      "\" (admin, planner, approver, analyst, auditor)");
}

bool Actor::Has(Role role) const {
  return std::find(roles.begin(), roles.end(), role) != roles.end();
}

Actor SystemActor(std::string_view component) {
  return Actor{kFederation,
               "system:" + std::string(component),
               {Role::kAdmin, Role::kPlanner, Role::kApprover, Role::kAnalyst, Role::kAuditor}};
}

bool IsValidOrgId(std::string_view org_id) {
  if (org_id == kFederation) return true;
  if (org_id.empty() || org_id.size() > kMaxOrgIdLength) return false;
  int depth = 0;
  size_t start = 0;
  while (true) {
    size_t dot = org_id.find('.', start);
    std::string_view segment =
        org_id.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (!IsValidSegment(segment) || ++depth > kMaxDepth) return false;
    if (depth == 1 && segment == kFederation) return false;
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

std::string OrgIdPattern() {
  const std::string segment = absl::StrCat("[a-z0-9][a-z0-9-]{0,", kMaxSegmentLength - 1, "}");
  return absl::StrCat("^(", kFederation, "|", segment, "(\\.", segment, "){0,", kMaxDepth - 1,
                      "})$");
}

std::string ParentOf(std::string_view org_id) {
  if (org_id == kFederation || org_id.empty()) return "";
  size_t dot = org_id.rfind('.');
  if (dot == std::string_view::npos) return kFederation;
  return std::string(org_id.substr(0, dot));
}

std::vector<std::string> SelfAndAncestors(std::string_view org_id) {
  std::vector<std::string> chain;
  std::string current(org_id);
  while (!current.empty()) {
    chain.push_back(current);
    current = ParentOf(current);
  }
  return chain;
}

bool Covers(std::string_view actor_org, std::string_view owner_org) {
  if (actor_org.empty() || owner_org.empty()) return false;
  if (actor_org == owner_org || actor_org == kFederation) return true;
  return owner_org.size() > actor_org.size() &&
         owner_org.substr(0, actor_org.size()) == actor_org && owner_org[actor_org.size()] == '.';
}

std::string MemberBankOf(std::string_view org_id) {
  if (org_id == kFederation) return kFederation;
  return std::string(org_id.substr(0, org_id.find('.')));
}

}  // namespace mkt::tenancy
