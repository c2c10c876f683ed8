// The campaign lifecycle and who may drive it: the state machine (with the separate approval
// track of an edit to a published campaign), the roles each action needs, maker-checker, and
// the tenancy rule "an operator sees campaigns of their org and its descendants".
//
//   DRAFT → PENDING_APPROVAL → APPROVED → SCHEDULED → ONLINE ⇄ PAUSED → ENDED → ARCHIVED
//   PENDING_APPROVAL → REJECTED → (edit) DRAFT;   DRAFT, REJECTED → ARCHIVED (abandoned)
//   SCHEDULED → ONLINE at the window's start; SCHEDULED, ONLINE, PAUSED → ENDED at its end.
// A published campaign (SCHEDULED, ONLINE, PAUSED) keeps its state while an edit goes
// NO_CHANGE → CHANGE_DRAFT → CHANGE_PENDING_APPROVAL → NO_CHANGE (approved: the new version is
// published) or → CHANGE_REJECTED → (edit) CHANGE_DRAFT.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "libs/tenancy/tenancy.h"
#include "marketing/campaigns/v1/campaigns.pb.h"

namespace mkt::campaigns {

namespace pb = ::marketing::campaigns::v1;

enum class Action {
  kEdit,
  kSubmit,
  kApprove,
  kReject,
  kPublish,
  kStart,  // the scheduler, at the window's start
  kPause,
  kResume,
  kEnd,  // an operator, or the scheduler at the window's end
  kArchive,
};

std::string_view ActionName(Action action);

struct LifecycleState {
  pb::CampaignState state = pb::DRAFT;
  pb::ChangeState change = pb::NO_CHANGE;

  bool operator==(const LifecycleState&) const = default;
};

// True for SCHEDULED, ONLINE and PAUSED: a version is out and edits go through a change.
bool IsPublished(pb::CampaignState state);

// The state after `action`, or FAILED_PRECONDITION (reason CONFLICT) naming the current state.
absl::StatusOr<LifecycleState> Apply(const LifecycleState& current, Action action);

// True when the action makes the published configuration or its availability change, so a
// change event must be published (publish, an approved edit of a published campaign, start,
// pause, resume, end, archive).
bool EmitsChange(const LifecycleState& before, Action action);

// PERMISSION_DENIED unless the actor holds a role that may perform `action` (approve and reject:
// approver; everything else: planner or admin).
absl::Status CheckRole(const tenancy::Actor& actor, Action action);

// True when `actor` may see and act on what `owner_org` owns (its org or an ancestor).
bool CanSee(const tenancy::Actor& actor, std::string_view owner_org);

// Maker-checker for approve and reject: the actor is an approver, acts for the owning org or an
// ancestor, and is not the operator who submitted the version. PERMISSION_DENIED otherwise.
absl::Status CheckChecker(const tenancy::Actor& actor, std::string_view owner_org,
                          std::string_view submitted_by);

}  // namespace mkt::campaigns
