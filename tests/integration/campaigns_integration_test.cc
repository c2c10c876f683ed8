// The campaigns service through its gRPC API, in process, against a fresh PostgreSQL database
// and (for the change events) the real Kafka broker, with an injectable clock: the whole
// lifecycle with rejection, re-submission, automatic start and end, pause/resume and versioned
// edits; maker-checker; tenant isolation; copies from a federation template; field-level errors
// on bad input; optimistic concurrency; the audit trail; and a consumer that rebuilds the set of
// online campaigns from mkt.campaign-changes.v1.
#include <algorithm>
#include <atomic>
#include <map>
#include <set>
#include <thread>

#include "absl/strings/str_replace.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "libs/core/ids.h"
#include "libs/core/status.h"
#include "libs/core/worker_pool.h"
#include "libs/kafka/kafka.h"
#include "libs/kafka/outbox.h"
#include "libs/pg/migrations.h"
#include "libs/pg/pool.h"
#include "libs/rpc/server.h"
#include "libs/testing/testing.h"
#include "marketing/common/v1/envelope.pb.h"
#include "services/campaigns/campaign_scheduler.h"
#include "services/campaigns/campaign_service.h"
#include "services/campaigns/campaigns_grpc.h"
#include "services/campaigns/campaigns_test_client.h"
#include "services/campaigns/pg_campaign_store.h"
#include "services/campaigns/test_configs.h"

namespace mkt::campaigns {
namespace {

using ::marketing::common::v1::ErrorReason;
using tenancy::Actor;
using tenancy::Role;
namespace common = ::marketing::common::v1;

using FakeClock = testing::ManualClock;

std::string Describe(const absl::Status& s) {
  return s.ToString() + " [reason " + ReasonName(ReasonOf(s)) + ", field \"" + FieldOf(s) + "\"]";
}
template <class T>
std::string Describe(const absl::StatusOr<T>& r) {
  return r.ok() ? "OK" : Describe(r.status());
}

class CampaignsIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pool = pg::Pool::Connect({.dsn = database_.dsn(), .size = 8});
    ASSERT_TRUE(pool.ok()) << pool.status();
    pool_ = *std::move(pool);
    ASSERT_TRUE(
        pg::ApplyMigrations(*pool_, {&kafka::OutboxMigrations(), &CampaignsMigrations()}).ok());
    std::string json = absl::StrReplaceAll(
        test::kReferenceJson,
        {{"\"bank-a\"", "\"" + bank_a_ + "\""}, {"\"bank-b\"", "\"" + bank_b_ + "\""}});
    auto data = ParseReferenceData(json);
    ASSERT_TRUE(data.ok()) << data.status();
    reference_ = *std::move(data);
    store_ = std::make_unique<PgCampaignStore>(*pool_);
    service_ = std::make_unique<CampaignService>(*store_, *reference_.segments,
                                                 *reference_.benefits, clock_,
                                                 CampaignServiceOptions{.default_uptake_bp = 1000});
    workers_ = std::make_unique<WorkerPool>("campaigns-test", 4, 1000);
    grpc_service_ = NewCampaignsGrpcService(*service_, *workers_);
    auto server = rpc::Server::Start(
        {.service_name = "campaigns_test", .address = "127.0.0.1:0", .access_log = false},
        {grpc_service_.get()});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    client_ =
        std::make_unique<test::CampaignsClient>("127.0.0.1:" + std::to_string(server_->port()));
    ASSERT_TRUE(client_->CreateOrg(root_, bank_a_, "Bank A").ok());
    ASSERT_TRUE(client_->CreateOrg(root_, bank_b_, "Bank B").ok());
    ASSERT_TRUE(client_->CreateOrg(root_, bank_a_ + ".branch-01", "Bank A branch 1").ok());
  }

  void TearDown() override {
    if (server_) server_->Shutdown(absl::Seconds(1));
    workers_.reset();
  }

  Actor A(const std::string& org, const std::string& op, std::vector<Role> roles) {
    return Actor{org, op, std::move(roles)};
  }

  // A complete coupon campaign of bank A in the window [start, end), created in one call.
  pb::Campaign CreateComplete(const std::string& name, absl::Time start, absl::Time end) {
    auto created = client_->Create(planner_a_, test::CompleteCoupon(name, start, end));
    EXPECT_TRUE(created.ok()) << Describe(created);
    return created.ok() ? *created : pb::Campaign();
  }

  // Takes a complete draft through submit, approve (bank A's approver) and publish.
  pb::Campaign Publish(const std::string& id) {
    EXPECT_TRUE(client_->Submit(planner_a_, id).ok());
    EXPECT_TRUE(client_->Approve(approver_a_, id).ok());
    auto published = client_->Publish(planner_a_, id);
    EXPECT_TRUE(published.ok()) << Describe(published);
    return published.ok() ? *published : pb::Campaign();
  }

  pb::CampaignState StateOf(const std::string& id) {
    auto c = client_->Get(fed_approver_, id);
    return c.ok() ? c->state() : pb::CAMPAIGN_STATE_UNSPECIFIED;
  }

  const absl::Time t0_ = absl::FromUnixSeconds(absl::ToUnixSeconds(absl::Now()));
  FakeClock clock_{t0_};
  const std::string bank_a_ = "bank-" + RandomHex(3);
  const std::string bank_b_ = "bank-" + RandomHex(3) + "b";
  const Actor root_{"fed", "root", {Role::kAdmin}};
  const Actor planner_a_{bank_a_, "alice", {Role::kPlanner}};
  const Actor approver_a_{bank_a_, "bob", {Role::kApprover}};
  const Actor planner_b_{bank_b_, "beth", {Role::kPlanner}};
  const Actor approver_b_{bank_b_, "bert", {Role::kApprover}};
  const Actor fed_approver_{"fed", "fiona", {Role::kApprover}};
  const Actor fed_planner_{"fed", "fred", {Role::kPlanner}};
  testing::TestDatabase database_;
  std::unique_ptr<pg::Pool> pool_;
  ReferenceData reference_;
  std::unique_ptr<PgCampaignStore> store_;
  std::unique_ptr<CampaignService> service_;
  std::unique_ptr<WorkerPool> workers_;
  std::unique_ptr<grpc::Service> grpc_service_;
  std::unique_ptr<rpc::Server> server_;
  std::unique_ptr<test::CampaignsClient> client_;
};

// ---- The lifecycle -----------------------------------------------------------------------------

TEST_F(CampaignsIntegrationTest, FullLifecycleWithRejectionScheduleAndVersionedEdits) {
  const absl::Time start = t0_ + absl::Hours(1);
  const absl::Time end = t0_ + absl::Hours(48);
  const pb::CampaignConfig full = test::CompleteCoupon("Spring coupons", start, end);

  // Step by step: basics, audience, rules & rewards, channels & content, review.
  auto c =
      client_->Create(planner_a_, test::Basics("Spring coupons", pb::COUPON_CLAIM, start, end));
  ASSERT_TRUE(c.ok()) << Describe(c);
  EXPECT_EQ(c->state(), pb::DRAFT);
  EXPECT_EQ(c->revision(), 1);
  EXPECT_EQ(c->org_id(), bank_a_);
  const std::string id = c->id();
  auto validation = client_->Validate(planner_a_, id);
  ASSERT_TRUE(validation.ok());
  EXPECT_FALSE(validation->errors().empty());  // steps 2-4 missing
  for (pb::Step step : {pb::STEP_AUDIENCE, pb::STEP_RULES_REWARDS, pb::STEP_CHANNELS_CONTENT}) {
    c = client_->SaveStep(planner_a_, id, step, full, c->revision());
    ASSERT_TRUE(c.ok()) << pb::Step_Name(step) << ": " << Describe(c);
  }
  pb::CampaignConfig review;
  review.set_expected_uptake_bp(500);
  c = client_->SaveStep(planner_a_, id, pb::STEP_REVIEW, review, c->revision());
  ASSERT_TRUE(c.ok()) << Describe(c);
  EXPECT_EQ(c->revision(), 5);
  EXPECT_EQ(c->draft().audience().include(0).version(), 3);  // pinned on save

  validation = client_->Validate(planner_a_, id);
  ASSERT_TRUE(validation.ok());
  EXPECT_TRUE(validation->errors().empty()) << validation->DebugString();
  EXPECT_EQ(validation->forecast().audience_size(), 10000);
  EXPECT_EQ(validation->forecast().uptake_bp(), 500);
  EXPECT_EQ(validation->forecast().forecast_cost_fen(), 500 * 5000);
  EXPECT_FALSE(validation->forecast().exceeds_budget());

  // Submit; the checker rejects; the maker edits and submits again.
  c = client_->Submit(planner_a_, id);
  ASSERT_TRUE(c.ok()) << Describe(c);
  EXPECT_EQ(c->state(), pb::PENDING_APPROVAL);
  EXPECT_EQ(c->pending_version(), 1);
  EXPECT_EQ(client_->SaveStep(planner_a_, id, pb::STEP_BASICS, full, c->revision()).status().code(),
            absl::StatusCode::kFailedPrecondition);  // frozen while pending
  EXPECT_EQ(client_->Reject(approver_a_, id, "").status().code(),
            absl::StatusCode::kInvalidArgument);  // a reason is required
  c = client_->Reject(approver_a_, id, "budget too high for spring");
  ASSERT_TRUE(c.ok()) << Describe(c);
  EXPECT_EQ(c->state(), pb::REJECTED);
  EXPECT_EQ(c->rejection_comment(), "budget too high for spring");
  EXPECT_EQ(ReasonOf(client_->Submit(planner_a_, id).status()), common::CONFLICT);
  pb::CampaignConfig cheaper = full;
  cheaper.set_budget_cap_fen(5'000'000);
  c = client_->SaveStep(planner_a_, id, pb::STEP_RULES_REWARDS, cheaper, c->revision());
  ASSERT_TRUE(c.ok()) << Describe(c);
  EXPECT_EQ(c->state(), pb::DRAFT);
  c = client_->Submit(planner_a_, id);
  ASSERT_TRUE(c.ok()) << Describe(c);
  EXPECT_EQ(c->pending_version(), 2);

  // The federation's approver approves; publishing schedules it.
  c = client_->Approve(fed_approver_, id);
  ASSERT_TRUE(c.ok()) << Describe(c);
  EXPECT_EQ(c->state(), pb::APPROVED);
  EXPECT_EQ(c->live_version(), 2);
  EXPECT_EQ(c->live().budget_cap_fen(), 5'000'000);
  c = client_->Publish(planner_a_, id);
  ASSERT_TRUE(c.ok()) << Describe(c);
  EXPECT_EQ(c->state(), pb::SCHEDULED);

  // The scheduler loop starts it at the window's start, not before.
  CampaignScheduler scheduler(*service_, absl::Hours(1));
  scheduler.Poke();
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(StateOf(id), pb::SCHEDULED);
  clock_.Set(start);
  scheduler.Poke();
  for (int i = 0; i < 100 && StateOf(id) != pb::ONLINE; ++i) absl::SleepFor(absl::Milliseconds(50));
  ASSERT_EQ(StateOf(id), pb::ONLINE);

  // Pause and resume.
  c = client_->Pause(planner_a_, id);
  ASSERT_TRUE(c.ok()) << Describe(c);
  EXPECT_EQ(c->state(), pb::PAUSED);
  EXPECT_EQ(ReasonOf(client_->Pause(planner_a_, id).status()), common::CONFLICT);
  c = client_->Resume(planner_a_, id);
  ASSERT_TRUE(c.ok()) << Describe(c);
  EXPECT_EQ(c->state(), pb::ONLINE);

  // Decision 036: an edit of the published campaign may not change its type (what it has done is
  // counted as a coupon claim); the refusal changes nothing.
  pb::CampaignConfig retyped = full;
  retyped.set_type(pb::BATCH_GRANT);
  const int64_t revision = c->revision();
  absl::StatusOr<pb::Campaign> refused =
      client_->SaveStep(planner_a_, id, pb::STEP_BASICS, retyped, revision);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << Describe(refused);
  EXPECT_NE(refused.status().message().find("keeps its type (COUPON_CLAIM)"), std::string::npos)
      << refused.status();
  c = client_->Get(planner_a_, id);
  ASSERT_TRUE(c.ok()) << Describe(c);
  EXPECT_EQ(c->revision(), revision);
  EXPECT_EQ(c->change_state(), pb::NO_CHANGE);
  EXPECT_EQ(c->draft().type(), pb::COUPON_CLAIM);

  // A versioned edit: the online version keeps running until the new one is approved.
  pb::CampaignConfig renamed = full;
  renamed.set_name("Spring coupons, extended");
  *renamed.mutable_end_time() = test::Ts(end + absl::Hours(24));
  c = client_->SaveStep(planner_a_, id, pb::STEP_BASICS, renamed, c->revision());
  ASSERT_TRUE(c.ok()) << Describe(c);
  EXPECT_EQ(c->state(), pb::ONLINE);
  EXPECT_EQ(c->change_state(), pb::CHANGE_DRAFT);
  EXPECT_EQ(c->live().name(), "Spring coupons");
  EXPECT_EQ(c->draft().name(), "Spring coupons, extended");
  c = client_->Submit(planner_a_, id);
  ASSERT_TRUE(c.ok()) << Describe(c);
  EXPECT_EQ(c->change_state(), pb::CHANGE_PENDING_APPROVAL);
  EXPECT_EQ(c->live_version(), 2);
  c = client_->Approve(approver_a_, id);
  ASSERT_TRUE(c.ok()) << Describe(c);
  EXPECT_EQ(c->state(), pb::ONLINE);
  EXPECT_EQ(c->change_state(), pb::NO_CHANGE);
  EXPECT_EQ(c->live_version(), 3);
  EXPECT_EQ(c->live().name(), "Spring coupons, extended");

  // Versions are kept as submitted.
  auto versions = client_->Versions(approver_a_, id);
  ASSERT_TRUE(versions.ok());
  ASSERT_EQ(versions->versions_size(), 3);
  EXPECT_EQ(versions->versions(0).decision(), "REJECTED");
  EXPECT_EQ(versions->versions(0).config().budget_cap_fen(), 10'000'000);
  EXPECT_EQ(versions->versions(1).decision(), "APPROVED");
  EXPECT_EQ(versions->versions(1).config().name(), "Spring coupons");
  EXPECT_EQ(versions->versions(1).decided_by(), "fiona");
  EXPECT_EQ(versions->versions(2).config().name(), "Spring coupons, extended");
  // ...and the database itself refuses to change one.
  absl::Status tamper = pg::WithTransaction(*pool_, [&](pqxx::work& tx) {
    tx.exec_params("UPDATE campaign_versions SET config = '{}' WHERE campaign_id = $1", id);
    return absl::OkStatus();
  });
  EXPECT_FALSE(tamper.ok());

  // The old end passes: still online (the approved edit extended it); the new end ends it.
  clock_.Set(end + absl::Minutes(1));
  ASSERT_TRUE(service_->AdvanceDue().ok());
  EXPECT_EQ(StateOf(id), pb::ONLINE);
  clock_.Set(end + absl::Hours(24));
  scheduler.Poke();
  for (int i = 0; i < 100 && StateOf(id) != pb::ENDED; ++i) absl::SleepFor(absl::Milliseconds(50));
  ASSERT_EQ(StateOf(id), pb::ENDED);
  c = client_->Archive(planner_a_, id);
  ASSERT_TRUE(c.ok()) << Describe(c);
  EXPECT_EQ(c->state(), pb::ARCHIVED);

  // Every change is in the audit trail, with who and the before/after.
  auto audit = client_->Audit(approver_a_, id);
  ASSERT_TRUE(audit.ok()) << Describe(audit);
  std::vector<std::string> actions;
  for (auto it = audit->entries().rbegin(); it != audit->entries().rend(); ++it) {
    actions.push_back(it->action());
  }
  EXPECT_EQ(actions,
            (std::vector<std::string>{
                "campaign.create", "campaign.save_step", "campaign.save_step", "campaign.save_step",
                "campaign.save_step", "campaign.submit", "campaign.reject", "campaign.save_step",
                "campaign.submit", "campaign.approve", "campaign.publish", "campaign.start",
                "campaign.pause", "campaign.resume", "campaign.save_step", "campaign.submit",
                "campaign.approve", "campaign.end", "campaign.archive"}));
  const pb::AuditEntry& reject = audit->entries(audit->entries_size() - 7);
  EXPECT_EQ(reject.action(), "campaign.reject");
  EXPECT_EQ(reject.actor_operator(), "bob");
  EXPECT_EQ(reject.comment(), "budget too high for spring");
  EXPECT_NE(reject.before_json().find("PENDING_APPROVAL"), std::string::npos);
  EXPECT_NE(reject.after_json().find("REJECTED"), std::string::npos);
  const pb::AuditEntry& start_entry = audit->entries(audit->entries_size() - 12);
  EXPECT_EQ(start_entry.action(), "campaign.start");
  EXPECT_EQ(start_entry.actor_operator(), "system:scheduler");
  EXPECT_EQ(start_entry.at().seconds(), absl::ToUnixSeconds(start));

  // Filtered by actor.
  auto by_bob = client_->Audit(approver_a_, "", "bob");
  ASSERT_TRUE(by_bob.ok());
  EXPECT_EQ(by_bob->entries_size(), 2);  // the rejection and the approval of the edit
  // Filtered by time (the service's clock stamps the entries): from the start to the old end.
  pb::ListAuditRequest window;
  window.set_campaign_id(id);
  *window.mutable_since() = test::Ts(start);
  *window.mutable_until() = test::Ts(end);
  auto in_window = client_->Call(approver_a_, &pb::Campaigns::Stub::ListAudit, window);
  ASSERT_TRUE(in_window.ok()) << Describe(in_window);
  std::vector<std::string> window_actions;
  for (const auto& e : in_window->entries())
    window_actions.insert(window_actions.begin(), e.action());
  EXPECT_EQ(window_actions, (std::vector<std::string>{"campaign.start", "campaign.pause",
                                                      "campaign.resume", "campaign.save_step",
                                                      "campaign.submit", "campaign.approve"}));
}

// ---- Orgs --------------------------------------------------------------------------------------

TEST_F(CampaignsIntegrationTest, OrgsAreReferenceDataScopedByTheTree) {
  const Actor admin_a{bank_a_, "ada", {Role::kAdmin}};
  auto listed = client_->Call(admin_a, &pb::Campaigns::Stub::ListOrgs, pb::ListOrgsRequest());
  ASSERT_TRUE(listed.ok()) << Describe(listed);
  std::vector<std::string> ids;
  for (const auto& o : listed->orgs()) ids.push_back(o.id());
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(ids, (std::vector<std::string>{bank_a_, bank_a_ + ".branch-01", "fed"}));

  pb::GetOrgRequest get;
  get.set_id(bank_a_);
  auto own = client_->Call(admin_a, &pb::Campaigns::Stub::GetOrg, get);
  ASSERT_TRUE(own.ok());
  EXPECT_EQ(own->display_name(), "Bank A");
  EXPECT_EQ(own->parent_id(), "fed");
  get.set_id(bank_b_);
  EXPECT_EQ(client_->Call(admin_a, &pb::Campaigns::Stub::GetOrg, get).status().code(),
            absl::StatusCode::kNotFound);

  EXPECT_TRUE(client_->CreateOrg(admin_a, bank_a_ + ".branch-02", "Branch 2").ok());
  EXPECT_EQ(client_->CreateOrg(admin_a, bank_b_ + ".branch-09", "Not mine").status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(client_->CreateOrg(planner_a_, bank_a_ + ".branch-03", "No role").status().code(),
            absl::StatusCode::kPermissionDenied);
  auto orphan = client_->CreateOrg(root_, "bank-nope.branch-01", "Orphan");
  EXPECT_EQ(orphan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FieldOf(orphan.status()), "id");
  EXPECT_EQ(client_->CreateOrg(root_, bank_a_, "Again").status().code(),
            absl::StatusCode::kAlreadyExists);
  auto bad = client_->CreateOrg(root_, "Bank_C!", "");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(bad.status().message()).find("display_name"), std::string::npos);
}

// ---- Maker-checker -----------------------------------------------------------------------------

TEST_F(CampaignsIntegrationTest, MakerCheckerRefusesSelfApprovalAndSiblingApprovers) {
  pb::Campaign c = CreateComplete("Checked", t0_ + absl::Hours(1), t0_ + absl::Hours(5));
  const Actor maker_and_checker{bank_a_, "alice", {Role::kPlanner, Role::kApprover}};
  ASSERT_TRUE(client_->Submit(maker_and_checker, c.id()).ok());

  auto self = client_->Approve(maker_and_checker, c.id());
  EXPECT_EQ(self.status().code(), absl::StatusCode::kPermissionDenied) << Describe(self);
  EXPECT_NE(std::string(self.status().message()).find("maker-checker"), std::string::npos);
  EXPECT_EQ(client_->Reject(maker_and_checker, c.id(), "no").status().code(),
            absl::StatusCode::kPermissionDenied);

  // A sibling bank's approver cannot even see it.
  auto sibling = client_->Approve(approver_b_, c.id());
  EXPECT_EQ(sibling.status().code(), absl::StatusCode::kNotFound) << Describe(sibling);
  // A branch approver is below the owner, not above it.
  const Actor branch_approver{bank_a_ + ".branch-01", "carl", {Role::kApprover}};
  EXPECT_EQ(client_->Approve(branch_approver, c.id()).status().code(), absl::StatusCode::kNotFound);
  // A planner of the owning bank lacks the role.
  const Actor other_planner{bank_a_, "dora", {Role::kPlanner}};
  EXPECT_EQ(client_->Approve(other_planner, c.id()).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(StateOf(c.id()), pb::PENDING_APPROVAL);

  // The federation's approver may approve a member bank's campaign.
  auto fed = client_->Approve(fed_approver_, c.id());
  ASSERT_TRUE(fed.ok()) << Describe(fed);
  EXPECT_EQ(fed->state(), pb::APPROVED);

  // A call without an actor is refused outright.
  grpc::ClientContext context;
  pb::GetCampaignRequest get;
  get.set_campaign_id(c.id());
  pb::Campaign out;
  auto stub = pb::Campaigns::NewStub(rpc::Connect("127.0.0.1:" + std::to_string(server_->port())));
  EXPECT_EQ(stub->GetCampaign(&context, get, &out).error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

// ---- Tenancy -----------------------------------------------------------------------------------

TEST_F(CampaignsIntegrationTest, AMemberBankCannotSeeCopyOrChangeAnotherBanksCampaigns) {
  pb::Campaign a = CreateComplete("Bank A only", t0_ + absl::Hours(1), t0_ + absl::Hours(5));
  auto b = client_->Create(planner_b_, test::CompleteCoupon("Bank B only", t0_ + absl::Hours(1),
                                                            t0_ + absl::Hours(5), "seg-b1"));
  ASSERT_TRUE(b.ok()) << Describe(b);

  // Read.
  EXPECT_EQ(client_->Get(planner_b_, a.id()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client_->Validate(planner_b_, a.id()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client_->Versions(planner_b_, a.id()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client_->Audit(planner_b_, a.id()).status().code(), absl::StatusCode::kNotFound);
  // List.
  auto listed_b = client_->List(planner_b_);
  ASSERT_TRUE(listed_b.ok());
  ASSERT_EQ(listed_b->campaigns_size(), 1);
  EXPECT_EQ(listed_b->campaigns(0).id(), b->id());
  pb::ListCampaignsRequest other_subtree;
  other_subtree.set_org_id(bank_a_);
  EXPECT_EQ(
      client_->Call(planner_b_, &pb::Campaigns::Stub::ListCampaigns, other_subtree).status().code(),
      absl::StatusCode::kPermissionDenied);
  auto audit_b = client_->Audit(planner_b_, "");
  ASSERT_TRUE(audit_b.ok());
  for (const auto& e : audit_b->entries()) EXPECT_NE(e.entity_id(), a.id());
  // Update.
  auto saved = client_->SaveStep(
      planner_b_, a.id(), pb::STEP_BASICS,
      test::Basics("hijack", pb::COUPON_CLAIM, t0_, t0_ + absl::Hours(1)), a.revision());
  EXPECT_EQ(saved.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client_->Submit(planner_b_, a.id()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client_->Archive(planner_b_, a.id()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client_
                ->Create(planner_b_, test::Basics("x", pb::COUPON_CLAIM, t0_, t0_ + absl::Hours(1)),
                         bank_a_)
                .status()
                .code(),
            absl::StatusCode::kPermissionDenied);
  // Copy, directly or through a template of bank A.
  EXPECT_EQ(client_->Copy(planner_b_, a.id()).status().code(), absl::StatusCode::kNotFound);
  auto tmpl = client_->SaveAsTemplate(planner_a_, a.id(), "A's template");
  ASSERT_TRUE(tmpl.ok()) << Describe(tmpl);
  auto from_tmpl = client_->FromTemplate(planner_b_, tmpl->id());
  EXPECT_EQ(from_tmpl.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FieldOf(from_tmpl.status()), "template_id");
  auto templates_b = client_->ListTemplates(planner_b_);
  ASSERT_TRUE(templates_b.ok());
  EXPECT_EQ(templates_b->templates_size(), 0);

  // Nothing of bank A changed; the federation sees both; bank A's branch sees neither.
  auto still = client_->Get(planner_a_, a.id());
  ASSERT_TRUE(still.ok());
  EXPECT_EQ(still->revision(), a.revision());
  EXPECT_EQ(still->draft().name(), "Bank A only");
  auto fed_list = client_->List(fed_planner_);
  ASSERT_TRUE(fed_list.ok());
  EXPECT_EQ(fed_list->campaigns_size(), 2);
  const Actor branch{bank_a_ + ".branch-01", "bea", {Role::kPlanner}};
  auto branch_list = client_->List(branch);
  ASSERT_TRUE(branch_list.ok());
  EXPECT_EQ(branch_list->campaigns_size(), 0);
  // A copy by bank A's own planner works and belongs to bank A.
  auto own_copy = client_->Copy(planner_a_, a.id());
  ASSERT_TRUE(own_copy.ok()) << Describe(own_copy);
  EXPECT_EQ(own_copy->org_id(), bank_a_);
}

// ---- Templates ---------------------------------------------------------------------------------

TEST_F(CampaignsIntegrationTest, ACopyOfAFederationTemplateIsValidOnceTheFlaggedFieldsAreFilled) {
  // The federation designs a lottery and saves it as a template.
  pb::CampaignConfig lottery = test::CompleteCoupon("New year lottery", t0_ + absl::Hours(1),
                                                    t0_ + absl::Hours(10), "seg-fed");
  lottery.set_type(pb::LOTTERY);
  lottery.clear_rewards();
  auto* prize = lottery.add_prizes();
  prize->set_name("coupon");
  prize->set_benefit_template_id("bt-coupon-50");
  prize->set_quantity(1);
  prize->set_probability_bp(2000);
  auto fed_campaign = client_->Create(fed_planner_, lottery);
  ASSERT_TRUE(fed_campaign.ok()) << Describe(fed_campaign);
  auto tmpl = client_->SaveAsTemplate(fed_planner_, fed_campaign->id(), "Lottery template");
  ASSERT_TRUE(tmpl.ok()) << Describe(tmpl);
  EXPECT_EQ(tmpl->org_id(), "fed");
  EXPECT_EQ(tmpl->type(), pb::LOTTERY);

  // Every member bank sees it.
  for (const Actor* planner : {&planner_a_, &planner_b_}) {
    auto listed = client_->ListTemplates(*planner);
    ASSERT_TRUE(listed.ok());
    ASSERT_EQ(listed->templates_size(), 1);
    EXPECT_EQ(listed->templates(0).id(), tmpl->id());
  }

  // Bank A copies it: the window, budget and segments are flagged and empty.
  auto copy = client_->FromTemplate(planner_a_, tmpl->id(), "Bank A new year lottery");
  ASSERT_TRUE(copy.ok()) << Describe(copy);
  EXPECT_EQ(copy->org_id(), bank_a_);
  EXPECT_EQ(copy->state(), pb::DRAFT);
  EXPECT_EQ(copy->source_template_id(), tmpl->id());
  EXPECT_EQ(std::vector<std::string>(copy->flagged_fields().begin(), copy->flagged_fields().end()),
            (std::vector<std::string>{"start_time", "end_time", "budget_cap_fen",
                                      "audience.include", "audience.exclude"}));
  EXPECT_EQ(copy->draft().name(), "Bank A new year lottery");
  EXPECT_EQ(copy->draft().prizes_size(), 1);
  EXPECT_FALSE(copy->draft().has_start_time());

  auto validation = client_->Validate(planner_a_, copy->id());
  ASSERT_TRUE(validation.ok());
  std::set<std::string> blocking;
  for (const auto& e : validation->errors()) blocking.insert(e.field());
  EXPECT_EQ(blocking,
            (std::set<std::string>{"start_time", "end_time", "budget_cap_fen", "audience.include"}))
      << validation->DebugString();
  auto early = client_->Submit(planner_a_, copy->id());
  EXPECT_EQ(early.status().code(), absl::StatusCode::kInvalidArgument);
  for (const char* f : {"start_time", "end_time", "budget_cap_fen", "audience.include"}) {
    EXPECT_NE(std::string(early.status().message()).find(f), std::string::npos)
        << early.status().message();
  }

  // Filling them in (own window, own segment, own budget) makes a valid draft.
  pb::CampaignConfig own = copy->draft();
  *own.mutable_start_time() = test::Ts(t0_ + absl::Hours(2));
  *own.mutable_end_time() = test::Ts(t0_ + absl::Hours(20));
  own.mutable_audience()->add_include()->set_segment_id("seg-a2");
  own.set_budget_cap_fen(2'000'000);
  auto c = client_->SaveStep(planner_a_, copy->id(), pb::STEP_BASICS, own, copy->revision());
  ASSERT_TRUE(c.ok()) << Describe(c);
  c = client_->SaveStep(planner_a_, c->id(), pb::STEP_AUDIENCE, own, c->revision());
  ASSERT_TRUE(c.ok()) << Describe(c);
  c = client_->SaveStep(planner_a_, c->id(), pb::STEP_RULES_REWARDS, own, c->revision());
  ASSERT_TRUE(c.ok()) << Describe(c);
  EXPECT_TRUE(c->flagged_fields().empty());
  validation = client_->Validate(planner_a_, c->id());
  ASSERT_TRUE(validation.ok());
  EXPECT_TRUE(validation->errors().empty()) << validation->DebugString();
  EXPECT_TRUE(validation->warnings().empty()) << validation->DebugString();
  EXPECT_TRUE(client_->Submit(planner_a_, c->id()).ok());

  // Unknown templates are a field error.
  auto unknown = client_->FromTemplate(planner_a_, "tpl_doesnotexist");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FieldOf(unknown.status()), "template_id");
}

// ---- Bad input ---------------------------------------------------------------------------------

TEST_F(CampaignsIntegrationTest, BadInputGivesFieldLevelErrorsAndSavesNothing) {
  // Inverted window on create: nothing is created.
  auto inverted = client_->Create(
      planner_a_, test::Basics("Backwards", pb::COUPON_CLAIM, t0_ + absl::Hours(5), t0_));
  EXPECT_EQ(inverted.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FieldOf(inverted.status()), "end_time");
  auto listed = client_->List(planner_a_);
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->campaigns_size(), 0);

  pb::Campaign c = CreateComplete("Good", t0_ + absl::Hours(1), t0_ + absl::Hours(5));

  // Several errors in one step: all are listed, against their fields.
  pb::CampaignConfig bad = c.draft();
  bad.mutable_audience()->mutable_include(0)->set_segment_id("seg-unknown");
  auto saved = client_->SaveStep(planner_a_, c.id(), pb::STEP_AUDIENCE, bad, c.revision());
  EXPECT_EQ(saved.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FieldOf(saved.status()), "audience.include[0].segment_id");
  EXPECT_EQ(ReasonOf(saved.status()), common::INVALID_ARGUMENT);

  bad = c.draft();
  bad.mutable_limits()->set_per_customer_total(-1);
  bad.mutable_limits()->set_global_total(-3);
  bad.set_type(pb::LOTTERY);  // type is step 1: ignored by step 3 ...
  saved = client_->SaveStep(planner_a_, c.id(), pb::STEP_RULES_REWARDS, bad, c.revision());
  ASSERT_EQ(saved.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(saved.status().message());
  EXPECT_NE(message.find("2 invalid fields"), std::string::npos) << message;
  EXPECT_NE(message.find("limits.per_customer_total"), std::string::npos) << message;
  EXPECT_NE(message.find("limits.global_total"), std::string::npos) << message;

  // A prize table above 100% on a lottery.
  pb::CampaignConfig lottery =
      test::CompleteCoupon("Lottery", t0_ + absl::Hours(1), t0_ + absl::Hours(5));
  lottery.set_type(pb::LOTTERY);
  lottery.clear_rewards();
  for (int bp : {7000, 3500}) {
    auto* p = lottery.add_prizes();
    p->set_name("p" + std::to_string(bp));
    p->set_benefit_template_id("bt-points-100");
    p->set_quantity(1);
    p->set_probability_bp(bp);
  }
  auto over = client_->Create(planner_a_, lottery);
  EXPECT_EQ(over.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FieldOf(over.status()), "prizes");
  EXPECT_NE(std::string(over.status().message()).find("10500 bp"), std::string::npos);

  // Oversized content: a 5000-character rules text and a 70-character title.
  bad = c.draft();
  bad.mutable_channels(0)->mutable_content()->set_rules_text(std::string(5000, 'r'));
  bad.mutable_channels(0)->mutable_content()->set_title(std::string(70, 't'));
  saved = client_->SaveStep(planner_a_, c.id(), pb::STEP_CHANNELS_CONTENT, bad, c.revision());
  EXPECT_EQ(saved.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(saved.status().message()).find("channels[0].content.title"),
            std::string::npos);
  EXPECT_NE(std::string(saved.status().message()).find("channels[0].content.rules_text"),
            std::string::npos);
  // A configuration too large to store at all.
  bad = c.draft();
  bad.set_description(std::string(70 * 1024, 'd'));
  saved = client_->SaveStep(planner_a_, c.id(), pb::STEP_BASICS, bad, c.revision());
  EXPECT_EQ(saved.status().code(), absl::StatusCode::kInvalidArgument);

  // Unknown org, unknown step.
  EXPECT_EQ(FieldOf(client_->Create(fed_planner_, c.draft(), "bank-nowhere").status()), "org_id");
  EXPECT_EQ(
      FieldOf(client_->SaveStep(planner_a_, c.id(), pb::STEP_UNSPECIFIED, c.draft(), c.revision())
                  .status()),
      "step");

  // None of it was saved.
  auto after = client_->Get(planner_a_, c.id());
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->revision(), c.revision());
  EXPECT_EQ(after->draft().SerializeAsString(), c.draft().SerializeAsString());
  listed = client_->List(planner_a_);
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->campaigns_size(), 1);
}

// A NUL in a trigger expression used to be accepted and then refused by PostgreSQL when the body
// was cast to jsonb (22P05), which answered INTERNAL; a NUL in an approval's comment would have
// been cut off silently in the text columns. Both are field errors now, and nothing changes.
TEST_F(CampaignsIntegrationTest, NulInATriggerExpressionOrACommentIsAFieldErrorThatSavesNothing) {
  pb::CampaignConfig event =
      test::CompleteCoupon("Deposit bonus", t0_ + absl::Hours(1), t0_ + absl::Hours(5));
  event.set_type(pb::EVENT_TRIGGER);
  event.mutable_rewards(0)->set_benefit_template_id("POINTS");
  event.mutable_rewards(0)->set_kind(pb::REWARD_KIND_POINTS);
  event.mutable_rewards(0)->set_quantity(100);
  pb::CampaignConfig nul = event;
  nul.set_trigger_expression(std::string("event.type == \"a\0\"", 18));
  auto refused = client_->Create(planner_a_, nul);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << Describe(refused);
  EXPECT_EQ(FieldOf(refused.status()), "trigger_expression");
  EXPECT_EQ(ReasonOf(refused.status()), common::INVALID_ARGUMENT);
  EXPECT_NE(std::string(refused.status().message()).find("U+0000"), std::string::npos)
      << refused.status().message();
  auto listed = client_->List(planner_a_);
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->campaigns_size(), 0);

  event.set_trigger_expression("event.type == \"deposit\" && customer.tag(\"vip\") == true");
  auto created = client_->Create(planner_a_, event);
  ASSERT_TRUE(created.ok()) << Describe(created);
  auto saved = client_->SaveStep(planner_a_, created->id(), pb::STEP_RULES_REWARDS, nul,
                                 created->revision());
  EXPECT_EQ(saved.status().code(), absl::StatusCode::kInvalidArgument) << Describe(saved);
  EXPECT_EQ(FieldOf(saved.status()), "trigger_expression");

  auto submitted = client_->Submit(planner_a_, created->id());
  ASSERT_TRUE(submitted.ok()) << Describe(submitted);
  auto approved = client_->Act(approver_a_, &pb::Campaigns::Stub::ApproveCampaign, created->id(),
                               std::string("fine\0 but not this", 19));
  EXPECT_EQ(approved.status().code(), absl::StatusCode::kInvalidArgument) << Describe(approved);
  EXPECT_EQ(FieldOf(approved.status()), "comment");

  auto after = client_->Get(planner_a_, created->id());
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->state(), pb::PENDING_APPROVAL);
  EXPECT_EQ(after->revision(), submitted->revision());
  EXPECT_EQ(after->draft().trigger_expression(), event.trigger_expression());
  EXPECT_TRUE(client_->Approve(approver_a_, created->id()).ok());
}

// An event campaign's trigger (decision 031) is kept through create and step 3, so a FIRST_TIME or
// count campaign is not silently every-match; a price sent by a client is dropped, and submission
// prices the version's reward (decision 034: 1 fen a point here). The stored version keeps the
// price, so the change events that carry the live configuration to the events service do too.
TEST_F(CampaignsIntegrationTest, AnEventCampaignKeepsItsTriggerAndSubmissionPricesItsReward) {
  pb::CampaignConfig event =
      test::CompleteCoupon("First deposit", t0_ + absl::Hours(1), t0_ + absl::Hours(5));
  event.set_type(pb::EVENT_TRIGGER);
  event.set_trigger_expression("event.type == \"deposit\" && event.amount_fen >= 100000");
  event.mutable_rewards(0)->set_benefit_template_id("POINTS");
  event.mutable_rewards(0)->set_kind(pb::REWARD_KIND_POINTS);
  event.mutable_rewards(0)->set_quantity(200);
  event.mutable_rewards(0)->set_unit_cost_fen(999);
  event.mutable_event_trigger()->set_kind(pb::TRIGGER_FIRST_TIME);
  auto created = client_->Create(planner_a_, event);
  ASSERT_TRUE(created.ok()) << Describe(created);
  EXPECT_EQ(created->draft().event_trigger().kind(), pb::TRIGGER_FIRST_TIME);
  EXPECT_EQ(created->draft().rewards(0).unit_cost_fen(), 0);

  event.mutable_event_trigger()->set_kind(pb::TRIGGER_COUNT_AT_LEAST);
  event.mutable_event_trigger()->set_count_threshold(2);
  auto saved = client_->SaveStep(planner_a_, created->id(), pb::STEP_RULES_REWARDS, event,
                                 created->revision());
  ASSERT_TRUE(saved.ok()) << Describe(saved);
  EXPECT_EQ(saved->draft().event_trigger().kind(), pb::TRIGGER_COUNT_AT_LEAST);
  EXPECT_EQ(saved->draft().event_trigger().count_threshold(), 2);
  EXPECT_EQ(saved->draft().rewards(0).unit_cost_fen(), 0);

  // The forecast prices a point as submission will (no "template unavailable" note).
  auto validation = client_->Validate(planner_a_, created->id());
  ASSERT_TRUE(validation.ok()) << Describe(validation);
  EXPECT_EQ(validation->forecast().cost_per_participation_fen(), 200);
  for (const std::string& note : validation->forecast().notes()) {
    EXPECT_EQ(note.find("unavailable"), std::string::npos) << note;
  }

  ASSERT_TRUE(client_->Submit(planner_a_, created->id()).ok());
  ASSERT_TRUE(client_->Approve(approver_a_, created->id()).ok());
  auto published = client_->Publish(planner_a_, created->id());
  ASSERT_TRUE(published.ok()) << Describe(published);
  EXPECT_EQ(published->state(), pb::SCHEDULED);
  // Read back from the database: the live configuration is the stored version's.
  auto stored = client_->Get(planner_a_, created->id());
  ASSERT_TRUE(stored.ok()) << Describe(stored);
  EXPECT_EQ(stored->live().event_trigger().kind(), pb::TRIGGER_COUNT_AT_LEAST);
  EXPECT_EQ(stored->live().rewards(0).unit_cost_fen(), 1);
  auto versions = client_->Versions(planner_a_, created->id());
  ASSERT_TRUE(versions.ok()) << Describe(versions);
  ASSERT_EQ(versions->versions_size(), 1);
  EXPECT_EQ(versions->versions(0).config().event_trigger().count_threshold(), 2);
  EXPECT_EQ(versions->versions(0).config().rewards(0).unit_cost_fen(), 1);

  // The publication's change event, as it waits in the outbox for the relay.
  std::string value;
  ASSERT_TRUE(pg::WithTransaction(*pool_, [&](pqxx::work& tx) {
                pqxx::result r = tx.exec_params(
                    "SELECT msg_value FROM outbox WHERE topic = $1 AND msg_key = $2 "
                    "ORDER BY id DESC LIMIT 1",
                    kCampaignChangesTopic, pqxx::binarystring(created->id()));
                if (r.empty()) return absl::NotFoundError("no change in the outbox");
                value = pqxx::binarystring(r[0][0]).str();
                return absl::OkStatus();
              }).ok());
  common::Envelope envelope;
  ASSERT_TRUE(envelope.ParseFromString(value));
  pb::CampaignChanged change;
  ASSERT_TRUE(envelope.payload().UnpackTo(&change));
  EXPECT_EQ(change.state(), pb::SCHEDULED);
  EXPECT_EQ(change.config().rewards(0).unit_cost_fen(), 1);
  EXPECT_EQ(change.config().event_trigger().kind(), pb::TRIGGER_COUNT_AT_LEAST);
}

// ---- Optimistic concurrency --------------------------------------------------------------------

TEST_F(CampaignsIntegrationTest, ConcurrentEditsOfOneRevisionLetExactlyOneWin) {
  pb::Campaign c = CreateComplete("Contended", t0_ + absl::Hours(1), t0_ + absl::Hours(5));
  constexpr int kWriters = 6;
  std::atomic<int> won{0};
  std::atomic<int> conflicted{0};
  std::vector<std::thread> writers;
  for (int i = 0; i < kWriters; ++i) {
    writers.emplace_back([&, i] {
      pb::CampaignConfig basics = c.draft();
      basics.set_name("writer " + std::to_string(i));
      auto r = client_->SaveStep(planner_a_, c.id(), pb::STEP_BASICS, basics, c.revision());
      if (r.ok()) {
        ++won;
      } else if (r.status().code() == absl::StatusCode::kAborted &&
                 ReasonOf(r.status()) == common::CONFLICT) {
        ++conflicted;
      }
    });
  }
  for (auto& t : writers) t.join();
  EXPECT_EQ(won.load(), 1);
  EXPECT_EQ(conflicted.load(), kWriters - 1);
  auto after = client_->Get(planner_a_, c.id());
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->revision(), c.revision() + 1);
}

// ---- Change events -----------------------------------------------------------------------------

TEST_F(CampaignsIntegrationTest, AConsumerRebuildsTheOnlineSetExactlyFromTheTopic) {
  const kafka::ClientOptions kafka_options{.bootstrap_servers = testing::KafkaBootstrap(),
                                           .client_id = "campaigns-it"};
  ASSERT_TRUE(kafka::EnsureTopic(kafka_options, kCampaignChangesTopic, 3).ok());
  auto producer = kafka::Producer::Create(kafka_options);
  ASSERT_TRUE(producer.ok()) << producer.status();
  const absl::Time since = absl::Now() - absl::Seconds(2);

  const absl::Time start = t0_ + absl::Hours(1);
  const absl::Time end = t0_ + absl::Hours(10);
  // online; paused; online then ended by an operator; scheduled only; online with an approved
  // edit; online then paused then resumed; and bank B's online campaign.
  std::map<std::string, std::string> ids;
  for (const char* name : {"online", "paused", "ended", "scheduled", "edited", "resumed"}) {
    ids[name] =
        CreateComplete(name, name == std::string("scheduled") ? end - absl::Hours(1) : start, end)
            .id();
    Publish(ids[name]);
  }
  auto b = client_->Create(planner_b_, test::CompleteCoupon("bank b", start, end, "seg-b1"));
  ASSERT_TRUE(b.ok()) << Describe(b);
  ids["bank-b"] = b->id();
  ASSERT_TRUE(client_->Submit(planner_b_, b->id()).ok());
  ASSERT_TRUE(client_->Approve(approver_b_, b->id()).ok());
  ASSERT_TRUE(client_->Publish(planner_b_, b->id()).ok());

  clock_.Set(start);
  auto advanced = service_->AdvanceDue();
  ASSERT_TRUE(advanced.ok()) << advanced.status();
  EXPECT_EQ(*advanced, 6);  // all but "scheduled"
  ASSERT_TRUE(client_->Pause(planner_a_, ids["paused"]).ok());
  ASSERT_TRUE(client_->End(planner_a_, ids["ended"]).ok());
  ASSERT_TRUE(client_->Pause(planner_a_, ids["resumed"]).ok());
  ASSERT_TRUE(client_->Resume(planner_a_, ids["resumed"]).ok());
  auto edited = client_->Get(planner_a_, ids["edited"]);
  ASSERT_TRUE(edited.ok());
  pb::CampaignConfig renamed = edited->draft();
  renamed.set_name("edited v2");
  ASSERT_TRUE(
      client_->SaveStep(planner_a_, ids["edited"], pb::STEP_BASICS, renamed, edited->revision())
          .ok());
  ASSERT_TRUE(client_->Submit(planner_a_, ids["edited"]).ok());
  ASSERT_TRUE(client_->Approve(approver_a_, ids["edited"]).ok());

  // Relay what the outbox holds.
  kafka::OutboxRelay relay(*pool_, **producer);
  int relayed = 0;
  for (int round = 0; round < 20; ++round) {
    auto n = relay.RelayOnce();
    ASSERT_TRUE(n.ok()) << n.status();
    if (*n == 0) break;
    relayed += *n;
  }
  // publish ×7, start ×6, pause ×2, resume, end, edit's publish.
  EXPECT_EQ(relayed, 18);

  // The consumer: last state per campaign by revision; online = state ONLINE.
  std::vector<common::Envelope> envelopes =
      test::ReadChanges({bank_a_, bank_b_}, since, 18, absl::Seconds(30));
  struct Cached {
    int64_t revision = 0;
    pb::CampaignState state = pb::CAMPAIGN_STATE_UNSPECIFIED;
    int64_t version = 0;
    std::string name;
  };
  std::map<std::string, Cached> cache;
  std::set<std::string> event_ids;
  for (const auto& envelope : envelopes) {
    EXPECT_EQ(envelope.type(), kCampaignChangedType);
    event_ids.insert(envelope.event_id());
    pb::CampaignChanged change;
    ASSERT_TRUE(envelope.payload().UnpackTo(&change));
    EXPECT_EQ(change.org_id(), envelope.org_id());
    Cached& entry = cache[change.campaign_id()];
    if (change.revision() > entry.revision) {
      entry = {change.revision(), change.state(), change.version(), change.config().name()};
    }
  }
  EXPECT_EQ(envelopes.size(), 18u);
  EXPECT_EQ(event_ids.size(), envelopes.size());
  std::map<std::string, std::pair<int64_t, std::string>> rebuilt;
  for (const auto& [id, entry] : cache) {
    if (entry.state == pb::ONLINE) rebuilt[id] = {entry.version, entry.name};
  }

  auto online = client_->List(fed_approver_, {pb::ONLINE});
  ASSERT_TRUE(online.ok());
  std::map<std::string, std::pair<int64_t, std::string>> expected;
  for (const auto& c : online->campaigns()) {
    expected[c.id()] = {c.live_version(), c.live().name()};
  }
  EXPECT_EQ(rebuilt, expected);
  EXPECT_EQ(expected.size(), 4u);  // online, edited, resumed, bank-b
  EXPECT_EQ(rebuilt[ids["edited"]], (std::pair<int64_t, std::string>{2, "edited v2"}));
  EXPECT_EQ(cache[ids["scheduled"]].state, pb::SCHEDULED);
  EXPECT_EQ(cache[ids["ended"]].state, pb::ENDED);
}

}  // namespace
}  // namespace mkt::campaigns
