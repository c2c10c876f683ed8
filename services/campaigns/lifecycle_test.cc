#include "services/campaigns/lifecycle.h"

#include "gtest/gtest.h"
#include "libs/core/status.h"

namespace mkt::campaigns {
namespace {

using tenancy::Actor;
using tenancy::Role;

LifecycleState S(pb::CampaignState state, pb::ChangeState change = pb::NO_CHANGE) {
  return {state, change};
}

LifecycleState Must(const LifecycleState& s, Action a) {
  auto next = Apply(s, a);
  EXPECT_TRUE(next.ok()) << next.status();
  return next.ok() ? *next : s;
}

TEST(CampaignLifecycleTest, TheHappyPathFromDraftToArchive) {
  LifecycleState s = S(pb::DRAFT);
  s = Must(s, Action::kEdit);
  EXPECT_EQ(s, S(pb::DRAFT));
  s = Must(s, Action::kSubmit);
  EXPECT_EQ(s, S(pb::PENDING_APPROVAL));
  s = Must(s, Action::kApprove);
  EXPECT_EQ(s, S(pb::APPROVED));
  s = Must(s, Action::kPublish);
  EXPECT_EQ(s, S(pb::SCHEDULED));
  s = Must(s, Action::kStart);
  EXPECT_EQ(s, S(pb::ONLINE));
  s = Must(s, Action::kPause);
  EXPECT_EQ(s, S(pb::PAUSED));
  s = Must(s, Action::kResume);
  EXPECT_EQ(s, S(pb::ONLINE));
  s = Must(s, Action::kEnd);
  EXPECT_EQ(s, S(pb::ENDED));
  s = Must(s, Action::kArchive);
  EXPECT_EQ(s, S(pb::ARCHIVED));
}

TEST(CampaignLifecycleTest, RejectionGoesBackToDraftThroughAnEdit) {
  LifecycleState s = Must(S(pb::PENDING_APPROVAL), Action::kReject);
  EXPECT_EQ(s, S(pb::REJECTED));
  EXPECT_FALSE(Apply(s, Action::kSubmit).ok());  // edit first
  s = Must(s, Action::kEdit);
  EXPECT_EQ(s, S(pb::DRAFT));
  EXPECT_EQ(Must(s, Action::kSubmit), S(pb::PENDING_APPROVAL));
}

TEST(CampaignLifecycleTest, EditsOfAPublishedCampaignHaveTheirOwnApprovalTrack) {
  LifecycleState s = Must(S(pb::ONLINE), Action::kEdit);
  EXPECT_EQ(s, S(pb::ONLINE, pb::CHANGE_DRAFT));
  s = Must(s, Action::kSubmit);
  EXPECT_EQ(s, S(pb::ONLINE, pb::CHANGE_PENDING_APPROVAL));
  EXPECT_FALSE(Apply(s, Action::kEdit).ok());  // frozen while the checker looks at it
  // Pausing and resuming still work: the live version keeps running meanwhile.
  s = Must(s, Action::kPause);
  EXPECT_EQ(s, S(pb::PAUSED, pb::CHANGE_PENDING_APPROVAL));
  s = Must(s, Action::kResume);
  LifecycleState rejected = Must(s, Action::kReject);
  EXPECT_EQ(rejected, S(pb::ONLINE, pb::CHANGE_REJECTED));
  EXPECT_EQ(Must(rejected, Action::kEdit), S(pb::ONLINE, pb::CHANGE_DRAFT));
  EXPECT_EQ(Must(s, Action::kApprove), S(pb::ONLINE, pb::NO_CHANGE));
  EXPECT_TRUE(EmitsChange(s, Action::kApprove));
  EXPECT_FALSE(EmitsChange(S(pb::PENDING_APPROVAL), Action::kApprove));
  // Nothing to submit without an edit.
  EXPECT_FALSE(Apply(S(pb::ONLINE), Action::kSubmit).ok());
}

TEST(CampaignLifecycleTest, IllegalTransitionsAreConflictsNamingTheState) {
  struct Case {
    LifecycleState from;
    Action action;
  };
  for (const Case& c :
       {Case{S(pb::DRAFT), Action::kApprove}, Case{S(pb::DRAFT), Action::kPublish},
        Case{S(pb::PENDING_APPROVAL), Action::kEdit}, Case{S(pb::APPROVED), Action::kStart},
        Case{S(pb::SCHEDULED), Action::kPause}, Case{S(pb::ONLINE), Action::kResume},
        Case{S(pb::ENDED), Action::kResume}, Case{S(pb::ONLINE), Action::kArchive},
        Case{S(pb::ARCHIVED), Action::kEdit}, Case{S(pb::ENDED), Action::kEnd}}) {
    auto next = Apply(c.from, c.action);
    ASSERT_FALSE(next.ok()) << ActionName(c.action) << " from "
                            << pb::CampaignState_Name(c.from.state);
    EXPECT_EQ(next.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(ReasonOf(next.status()), ::marketing::common::v1::CONFLICT);
    EXPECT_NE(std::string(next.status().message()).find(pb::CampaignState_Name(c.from.state)),
              std::string::npos);
  }
}

TEST(CampaignLifecycleTest, EndingDropsAPendingEdit) {
  EXPECT_EQ(Must(S(pb::ONLINE, pb::CHANGE_PENDING_APPROVAL), Action::kEnd), S(pb::ENDED));
}

Actor A(std::string org, std::string op, std::vector<Role> roles) {
  return Actor{std::move(org), std::move(op), std::move(roles)};
}

TEST(CampaignMakerCheckerTest, TheSubmitterCannotApprove) {
  Actor both = A("bank-a", "alice", {Role::kPlanner, Role::kApprover});
  absl::Status s = CheckChecker(both, "bank-a", "alice");
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(std::string(s.message()).find("maker-checker"), std::string::npos);
  EXPECT_TRUE(CheckChecker(A("bank-a", "bob", {Role::kApprover}), "bank-a", "alice").ok());
}

TEST(CampaignMakerCheckerTest, ApprovalNeedsTheOwningOrgOrAnAncestor) {
  EXPECT_TRUE(CheckChecker(A("fed", "fed-boss", {Role::kApprover}), "bank-a", "alice").ok());
  EXPECT_TRUE(
      CheckChecker(A("fed", "fed-boss", {Role::kApprover}), "bank-a.branch-01", "alice").ok());
  EXPECT_EQ(CheckChecker(A("bank-b", "bob", {Role::kApprover}), "bank-a", "alice").code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(
      CheckChecker(A("bank-a.branch-01", "carol", {Role::kApprover}), "bank-a", "alice").code(),
      absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(CheckChecker(A("bank-a", "dave", {Role::kPlanner}), "bank-a", "alice").code(),
            absl::StatusCode::kPermissionDenied);
}

TEST(CampaignRolesTest, PlannersDriveApproversDecide) {
  Actor planner = A("bank-a", "p", {Role::kPlanner});
  Actor approver = A("bank-a", "q", {Role::kApprover});
  Actor analyst = A("bank-a", "r", {Role::kAnalyst});
  EXPECT_TRUE(CheckRole(planner, Action::kSubmit).ok());
  EXPECT_TRUE(CheckRole(planner, Action::kPause).ok());
  EXPECT_FALSE(CheckRole(planner, Action::kApprove).ok());
  EXPECT_TRUE(CheckRole(approver, Action::kReject).ok());
  EXPECT_FALSE(CheckRole(approver, Action::kEdit).ok());
  EXPECT_FALSE(CheckRole(analyst, Action::kEdit).ok());
}

TEST(CampaignVisibilityTest, AnOrgSeesItselfAndItsDescendantsNeverASibling) {
  EXPECT_TRUE(CanSee(A("fed", "x", {}), "bank-b.branch-02"));
  EXPECT_TRUE(CanSee(A("bank-a", "x", {}), "bank-a.branch-01"));
  EXPECT_FALSE(CanSee(A("bank-a", "x", {}), "bank-b"));
  EXPECT_FALSE(CanSee(A("bank-a", "x", {}), "bank-ab"));
  EXPECT_FALSE(CanSee(A("bank-a.branch-01", "x", {}), "bank-a"));
}

}  // namespace
}  // namespace mkt::campaigns
