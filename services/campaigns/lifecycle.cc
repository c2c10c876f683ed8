#include "services/campaigns/lifecycle.h"

#include "libs/core/status.h"

namespace mkt::campaigns {
namespace {

absl::Status NotAllowed(const LifecycleState& s, Action action) {
  std::string what = "cannot " + std::string(ActionName(action)) + " a campaign in state " +
                     pb::CampaignState_Name(s.state);
  if (IsPublished(s.state)) what += " (edit: " + pb::ChangeState_Name(s.change) + ")";
  return Error(absl::StatusCode::kFailedPrecondition, ::marketing::common::v1::CONFLICT, what);
}

}  // namespace

std::string_view ActionName(Action action) {
  switch (action) {
    case Action::kEdit:
      return "edit";
    case Action::kSubmit:
      return "submit";
    case Action::kApprove:
      return "approve";
    case Action::kReject:
      return "reject";
    case Action::kPublish:
      return "publish";
    case Action::kStart:
      return "start";
    case Action::kPause:
      return "pause";
    case Action::kResume:
      return "resume";
    case Action::kEnd:
      return "end";
    case Action::kArchive:
      return "archive";
  }
  return "?";
}

bool IsPublished(pb::CampaignState state) {
  return state == pb::SCHEDULED || state == pb::ONLINE || state == pb::PAUSED;
}

absl::StatusOr<LifecycleState> Apply(const LifecycleState& s, Action action) {
  LifecycleState next = s;
  const bool published = IsPublished(s.state);
  switch (action) {
    case Action::kEdit:
      if (s.state == pb::DRAFT || s.state == pb::REJECTED) {
        next.state = pb::DRAFT;
        return next;
      }
      if (published && s.change != pb::CHANGE_PENDING_APPROVAL) {
        next.change = pb::CHANGE_DRAFT;
        return next;
      }
      break;
    case Action::kSubmit:
      if (s.state == pb::DRAFT) {
        next.state = pb::PENDING_APPROVAL;
        return next;
      }
      if (published && s.change == pb::CHANGE_DRAFT) {
        next.change = pb::CHANGE_PENDING_APPROVAL;
        return next;
      }
      break;
    case Action::kApprove:
    case Action::kReject:
      if (s.state == pb::PENDING_APPROVAL) {
        next.state = action == Action::kApprove ? pb::APPROVED : pb::REJECTED;
        return next;
      }
      if (published && s.change == pb::CHANGE_PENDING_APPROVAL) {
        next.change = action == Action::kApprove ? pb::NO_CHANGE : pb::CHANGE_REJECTED;
        return next;
      }
      break;
    case Action::kPublish:
      if (s.state == pb::APPROVED) {
        next.state = pb::SCHEDULED;
        return next;
      }
      break;
    case Action::kStart:
      if (s.state == pb::SCHEDULED) {
        next.state = pb::ONLINE;
        return next;
      }
      break;
    case Action::kPause:
      if (s.state == pb::ONLINE) {
        next.state = pb::PAUSED;
        return next;
      }
      break;
    case Action::kResume:
      if (s.state == pb::PAUSED) {
        next.state = pb::ONLINE;
        return next;
      }
      break;
    case Action::kEnd:
      if (published || s.state == pb::APPROVED) {
        // An edit still in progress has nothing left to change.
        next.state = pb::ENDED;
        next.change = pb::NO_CHANGE;
        return next;
      }
      break;
    case Action::kArchive:
      if (s.state == pb::ENDED || s.state == pb::DRAFT || s.state == pb::REJECTED) {
        next.state = pb::ARCHIVED;
        next.change = pb::NO_CHANGE;
        return next;
      }
      break;
  }
  return NotAllowed(s, action);
}

bool EmitsChange(const LifecycleState& before, Action action) {
  switch (action) {
    case Action::kPublish:
    case Action::kStart:
    case Action::kPause:
    case Action::kResume:
    case Action::kEnd:
      return true;
    case Action::kArchive:
      return before.state == pb::ENDED;
    case Action::kApprove:
      return IsPublished(before.state);
    default:
      return false;
  }
}

absl::Status CheckRole(const tenancy::Actor& actor, Action action) {
  using tenancy::Role;
  if (action == Action::kApprove || action == Action::kReject) {
    if (actor.Has(Role::kApprover)) return absl::OkStatus();
    return Error(absl::StatusCode::kPermissionDenied, ::marketing::common::v1::PERMISSION_DENIED,
                 "only an approver may " + std::string(ActionName(action)) + " a campaign");
  }
  if (actor.Has(Role::kPlanner) || actor.Has(Role::kAdmin)) return absl::OkStatus();
  return Error(absl::StatusCode::kPermissionDenied, ::marketing::common::v1::PERMISSION_DENIED,
               "only a planner or an admin may " + std::string(ActionName(action)) + " a campaign");
}

bool CanSee(const tenancy::Actor& actor, std::string_view owner_org) {
  return tenancy::Covers(actor.org_id, owner_org);
}

absl::Status CheckChecker(const tenancy::Actor& actor, std::string_view owner_org,
                          std::string_view submitted_by) {
  auto denied = [](const std::string& why) {
    return Error(absl::StatusCode::kPermissionDenied, ::marketing::common::v1::PERMISSION_DENIED,
                 why);
  };
  if (!actor.Has(tenancy::Role::kApprover))
    return denied("only an approver may decide on a campaign");
  if (!CanSee(actor, owner_org)) {
    return denied("an approver of " + actor.org_id + " cannot decide on a campaign of " +
                  std::string(owner_org) + "; it needs the owning org or an ancestor");
  }
  if (actor.operator_id == submitted_by) {
    return denied(
        "maker-checker: the operator who submitted a campaign cannot approve or "
        "reject it");
  }
  return absl::OkStatus();
}

}  // namespace mkt::campaigns
