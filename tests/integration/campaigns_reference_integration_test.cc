// The campaigns service's reference data from the real neighbours: the segments service and the
// rewards Benefits API run in process on their own fresh databases behind real gRPC servers, and
// the campaigns service (its own fresh database, its gRPC API) looks segments and benefit
// templates up through GrpcSegmentDirectory and GrpcBenefitCatalog. Proves the lookups carry the
// neighbours' facts (owner, current version, the current version's size, unit cost), that unknown,
// archived and retired ids are NOT_FOUND and a stopped neighbour UNAVAILABLE, that answers are
// cached for the configured time only, and that a campaign naming the real segment validates with
// a forecast built from the real audience size and unit cost while an unknown one is refused
// against its field.
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "libs/core/ids.h"
#include "libs/core/status.h"
#include "libs/core/worker_pool.h"
#include "libs/kafka/outbox.h"
#include "libs/pg/migrations.h"
#include "libs/pg/pool.h"
#include "libs/rpc/client.h"
#include "libs/rpc/server.h"
#include "libs/testing/testing.h"
#include "services/campaigns/campaign_service.h"
#include "services/campaigns/campaigns_grpc.h"
#include "services/campaigns/campaigns_test_client.h"
#include "services/campaigns/pg_campaign_store.h"
#include "services/campaigns/remote_reference.h"
#include "services/campaigns/test_configs.h"
#include "services/segments/pg_segment_store.h"
#include "services/segments/segment_service.h"
#include "services/segments/segments_grpc.h"
#include "services/segments/tag_index.h"
#include "tests/integration/in_process_rewards.h"

namespace mkt::campaigns {
namespace {

namespace spb = ::marketing::segments::v1;
namespace rpb = ::marketing::rewards::v1;
namespace common = ::marketing::common::v1;
using tenancy::Actor;
using tenancy::Role;

using ManualClock = testing::ManualClock;

std::string Describe(const absl::Status& s) {
  return s.ToString() + " [" + ReasonName(ReasonOf(s)) + "] field=" + FieldOf(s);
}

spb::Condition AgeAtLeast(int64_t years) {
  spb::Condition c;
  c.mutable_compare()->set_tag("age");
  c.mutable_compare()->set_op(spb::GE);
  c.mutable_compare()->mutable_value()->set_int_value(years);
  return c;
}

std::unique_ptr<rpc::Server> StartServer(const std::string& name, grpc::Service* service) {
  auto server = rpc::Server::Start(
      {.service_name = name, .address = "127.0.0.1:0", .access_log = false}, {service});
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? *std::move(server) : nullptr;
}

std::string Target(const rpc::Server& server) {
  return "127.0.0.1:" + std::to_string(server.port());
}

class CampaignsReferenceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StartSegments();
    StartRewards();
    ASSERT_FALSE(HasFatalFailure());
    SeedSegments();
    SeedTemplates();
    ASSERT_FALSE(HasFatalFailure());

    const RemoteReferenceOptions options{.timeout = absl::Seconds(2),
                                         .cache_ttl = absl::Seconds(10)};
    segments_ =
        std::make_unique<GrpcSegmentDirectory>(rpc::Connect(segments_target_), options, clock_);
    benefits_ = std::make_unique<GrpcBenefitCatalog>(rewards_.channel, options,
                                                     /*hide_retired=*/true, clock_);

    // The campaigns service, configured through its gRPC API.
    auto cpool = pg::Pool::Connect({.dsn = campaigns_db_.dsn(), .size = 4});
    ASSERT_TRUE(cpool.ok()) << cpool.status();
    campaigns_pool_ = *std::move(cpool);
    ASSERT_TRUE(
        pg::ApplyMigrations(*campaigns_pool_, {&kafka::OutboxMigrations(), &CampaignsMigrations()})
            .ok());
    campaign_store_ = std::make_unique<PgCampaignStore>(*campaigns_pool_);
    campaigns_ =
        std::make_unique<CampaignService>(*campaign_store_, *segments_, *benefits_, SystemClock(),
                                          CampaignServiceOptions{.default_uptake_bp = 1000});
    campaign_workers_ = std::make_unique<WorkerPool>("campaigns-test", 4, 1000);
    campaigns_grpc_ = NewCampaignsGrpcService(*campaigns_, *campaign_workers_);
    campaigns_server_ = StartServer("campaigns_test", campaigns_grpc_.get());
    ASSERT_NE(campaigns_server_, nullptr);
    client_ = std::make_unique<test::CampaignsClient>(Target(*campaigns_server_));
    ASSERT_TRUE(client_->CreateOrg(root_, "bank-a", "Bank A").ok());
    ASSERT_TRUE(client_->CreateOrg(root_, "bank-b", "Bank B").ok());
  }

  void TearDown() override {
    if (campaigns_server_) campaigns_server_->Shutdown(absl::Seconds(1));
    campaign_workers_.reset();
    StopSegments();
    StopRewards();
  }

  void StartSegments() {
    auto pool = pg::Pool::Connect({.dsn = segments_db_.dsn(), .size = 4});
    ASSERT_TRUE(pool.ok()) << pool.status();
    segments_pool_ = *std::move(pool);
    ASSERT_TRUE(pg::ApplyMigrations(*segments_pool_,
                                    {&kafka::OutboxMigrations(), &segments::SegmentsMigrations()})
                    .ok());
    segment_store_ = std::make_unique<segments::PgSegmentStore>(*segments_pool_);
    segment_service_ =
        std::make_unique<segments::SegmentService>(*segment_store_, index_, SystemClock());
    ASSERT_TRUE(segment_service_->Rebuild().ok());
    segment_workers_ = std::make_unique<WorkerPool>("segments-test", 4, 1000);
    segments_grpc_ = segments::NewSegmentsGrpcService(*segment_service_, *segment_workers_);
    segments_server_ = StartServer("segments_test", segments_grpc_.get());
    ASSERT_NE(segments_server_, nullptr);
    segments_target_ = Target(*segments_server_);
  }

  void StopSegments() {
    if (segments_server_) segments_server_->Shutdown(absl::Seconds(1));
    segments_server_.reset();
    segment_workers_.reset();
  }

  void StartRewards() {
    const absl::Status started =
        rewards_.Start(rewards_db_.dsn(), {.pool_size = 4,
                                           .workers = 4,
                                           .queue = 1000,
                                           .qr_key = "test-qr-signing-key-of-at-least-32-bytes!"});
    ASSERT_TRUE(started.ok()) << started;
  }

  void StopRewards() { rewards_.Stop(); }

  // Bank A: four customers with an age; a rule segment at version 2 (age >= 40: two customers,
  // where its version 1, age >= 30, had three), a list of five, an archived list. Bank B: a list.
  void SeedSegments() {
    // "age" is one of the federation tags the segments service seeds.
    spb::ImportTagValuesRequest import;
    import.set_csv("customer_id,age\na-1,25\na-2,35\na-3,45\na-4,55\n");
    import.set_org_id("bank-a");  // the customers' home org; the federation writes its own tag
    auto imported = segment_service_->ImportTagValues(root_, import);
    ASSERT_TRUE(imported.ok()) << imported.status();
    ASSERT_EQ(imported->rows_imported(), 4);

    spb::CreateSegmentRequest rule;
    rule.set_name("thirty and over");
    *rule.mutable_definition()->mutable_rule() = AgeAtLeast(30);
    auto created = segment_service_->CreateSegment(bank_a_admin_, rule);
    ASSERT_TRUE(created.ok()) << created.status();
    rule_segment_ = created->id();
    spb::UpdateSegmentRequest update;
    update.set_segment_id(rule_segment_);
    update.set_name("forty and over");
    *update.mutable_definition()->mutable_rule() = AgeAtLeast(40);
    update.set_expected_version(1);
    auto updated = segment_service_->UpdateSegment(bank_a_admin_, update);
    ASSERT_TRUE(updated.ok()) << updated.status();
    ASSERT_EQ(updated->version(), 2);

    list_segment_ = CreateList(bank_a_admin_, {"a-1", "a-2", "a-5", "a-6", "a-7"});
    archived_segment_ = CreateList(bank_a_admin_, {"a-1"});
    spb::ArchiveSegmentRequest archive;
    archive.set_segment_id(archived_segment_);
    ASSERT_TRUE(segment_service_->ArchiveSegment(bank_a_admin_, archive).ok());
    bank_b_segment_ = CreateList(bank_b_admin_, {"b-1", "b-2"});
  }

  std::string CreateList(const Actor& actor, const std::vector<std::string>& customers) {
    spb::CreateSegmentRequest list;
    list.set_name("list of " + actor.org_id);
    for (const auto& c : customers) list.mutable_definition()->mutable_list()->add_customer_ids(c);
    auto created = segment_service_->CreateSegment(actor, list);
    EXPECT_TRUE(created.ok()) << created.status();
    return created.ok() ? created->id() : "";
  }

  // Bank A's active coupon (15 yuan a unit) and a retired one; a federation points template.
  void SeedTemplates() {
    Template("bt-a-coupon", "bank-a", 1500, rpb::TEMPLATE_ACTIVE);
    Template("bt-a-retired", "bank-a", 900, rpb::TEMPLATE_RETIRED);
    Template("bt-fed-points", "fed", 100, rpb::TEMPLATE_ACTIVE, rpb::BENEFIT_POINTS);
  }

  void Template(const std::string& id, const std::string& org, int64_t unit_cost_fen,
                rpb::TemplateStatus status, rpb::BenefitType type = rpb::COUPON_CASH) {
    rpb::BenefitTemplate t;
    t.set_id(id);
    t.set_org_id(org);
    t.set_type(type);
    t.set_name("template " + id);
    t.set_face_value(2000);
    t.set_unit_cost_fen(unit_cost_fen);
    t.set_total_stock(100);
    t.mutable_validity()->set_days_after_grant(30);
    auto created = rewards_.benefits->CreateTemplate(t);
    ASSERT_TRUE(created.ok()) << created.status();
    auto active = rewards_.benefits->ActivateTemplate(id);
    ASSERT_TRUE(active.ok()) << active.status();
    if (status == rpb::TEMPLATE_RETIRED) {
      auto retired = rewards_.benefits->RetireTemplate(id);
      ASSERT_TRUE(retired.ok()) << retired.status();
      ASSERT_EQ(retired->status(), rpb::TEMPLATE_RETIRED);
    }
  }

  // A complete coupon campaign of bank A on `segments` (version 0: the current one, pinned by
  // the service) granting one `template_id` coupon per participation (a claim grants at most one
  // coupon, campaign_rules.cc).
  test::pb::CampaignConfig Coupon(const std::vector<std::string>& segments,
                                  const std::string& template_id) {
    const absl::Time start = absl::Now() + absl::Hours(1);
    test::pb::CampaignConfig c =
        test::CompleteCoupon("Payroll coupon", start, start + absl::Hours(24), segments.front());
    for (size_t i = 1; i < segments.size(); ++i) {
      c.mutable_audience()->add_include()->set_segment_id(segments[i]);
    }
    c.mutable_rewards(0)->set_benefit_template_id(template_id);
    c.set_expected_uptake_bp(5000);
    return c;
  }

  ManualClock clock_;
  const Actor root_{"fed", "root", {Role::kAdmin}};
  const Actor bank_a_admin_{"bank-a", "aadmin", {Role::kAdmin}};
  const Actor bank_b_admin_{"bank-b", "badmin", {Role::kAdmin}};
  const Actor planner_a_{"bank-a", "alice", {Role::kPlanner}};

  testing::TestDatabase segments_db_, rewards_db_, campaigns_db_;
  // The segments service.
  std::unique_ptr<pg::Pool> segments_pool_;
  segments::TagIndex index_;
  std::unique_ptr<segments::PgSegmentStore> segment_store_;
  std::unique_ptr<segments::SegmentService> segment_service_;
  std::unique_ptr<WorkerPool> segment_workers_;
  std::unique_ptr<grpc::Service> segments_grpc_;
  std::unique_ptr<rpc::Server> segments_server_;
  std::string segments_target_;
  std::string rule_segment_, list_segment_, archived_segment_, bank_b_segment_;
  // The rewards service.
  testing::InProcessRewards rewards_;
  // The campaigns service and its seam.
  std::unique_ptr<GrpcSegmentDirectory> segments_;
  std::unique_ptr<GrpcBenefitCatalog> benefits_;
  std::unique_ptr<pg::Pool> campaigns_pool_;
  std::unique_ptr<PgCampaignStore> campaign_store_;
  std::unique_ptr<CampaignService> campaigns_;
  std::unique_ptr<WorkerPool> campaign_workers_;
  std::unique_ptr<grpc::Service> campaigns_grpc_;
  std::unique_ptr<rpc::Server> campaigns_server_;
  std::unique_ptr<test::CampaignsClient> client_;
};

TEST_F(CampaignsReferenceTest, LookupsCarryTheNeighboursFacts) {
  // A rule segment: the owner, the current version and the size of that version (not version 1's).
  auto rule = segments_->Lookup(rule_segment_);
  ASSERT_TRUE(rule.ok()) << Describe(rule.status());
  EXPECT_EQ(rule->owner_org, "bank-a");
  EXPECT_EQ(rule->version, 2);
  EXPECT_EQ(rule->size, 2);  // a-3 and a-4
  // A list: its stored size, unknown customers included.
  auto list = segments_->Lookup(list_segment_);
  ASSERT_TRUE(list.ok()) << Describe(list.status());
  EXPECT_EQ(list->owner_org, "bank-a");
  EXPECT_EQ(list->version, 1);
  EXPECT_EQ(list->size, 5);
  // Another bank's segment is found with its real owner: hiding it is the campaign rules' job.
  auto other = segments_->Lookup(bank_b_segment_);
  ASSERT_TRUE(other.ok()) << Describe(other.status());
  EXPECT_EQ(other->owner_org, "bank-b");
  EXPECT_EQ(other->size, 2);

  for (const std::string id : {"seg-00000000", "not a segment id", ""}) {
    EXPECT_EQ(segments_->Lookup(id).status().code(), absl::StatusCode::kNotFound) << id;
  }
  EXPECT_EQ(segments_->Lookup(archived_segment_).status().code(), absl::StatusCode::kNotFound);

  // Tags (event conditions, decision 032): the owner; unknown and malformed names alike.
  auto age = segments_->LookupTag("age");
  ASSERT_TRUE(age.ok()) << Describe(age.status());
  EXPECT_EQ(age->owner_org, "fed");
  for (const std::string name : {"no_such_tag", "Not A Name", ""}) {
    EXPECT_EQ(segments_->LookupTag(name).status().code(), absl::StatusCode::kNotFound) << name;
  }

  auto coupon = benefits_->Lookup("bt-a-coupon");
  ASSERT_TRUE(coupon.ok()) << Describe(coupon.status());
  EXPECT_EQ(coupon->owner_org, "bank-a");
  EXPECT_EQ(coupon->unit_cost_fen, 1500);
  EXPECT_EQ(coupon->kind, test::pb::REWARD_KIND_COUPON);
  EXPECT_EQ(coupon->type, "COUPON_CASH");
  auto points = benefits_->Lookup("bt-fed-points");
  ASSERT_TRUE(points.ok()) << Describe(points.status());
  EXPECT_EQ(points->owner_org, "fed");
  EXPECT_EQ(points->unit_cost_fen, 100);
  EXPECT_EQ(points->kind, test::pb::REWARD_KIND_POINTS);
  EXPECT_EQ(points->type, "BENEFIT_POINTS");
  EXPECT_EQ(benefits_->Lookup("bt-nowhere").status().code(), absl::StatusCode::kNotFound);

  // Retired: gone for configuring campaigns, still priced for charging running ones.
  EXPECT_EQ(benefits_->Lookup("bt-a-retired").status().code(), absl::StatusCode::kNotFound);
  GrpcBenefitCatalog charging(rewards_.channel, {}, /*hide_retired=*/false);
  auto retired = charging.Lookup("bt-a-retired");
  ASSERT_TRUE(retired.ok()) << Describe(retired.status());
  EXPECT_EQ(retired->unit_cost_fen, 900);
}

TEST_F(CampaignsReferenceTest, AStoppedNeighbourIsUnavailableAndAnswersAreCachedForTheTtlOnly) {
  // Warm the cache with one segment and one template, then stop both neighbours.
  ASSERT_TRUE(segments_->Lookup(rule_segment_).ok());
  ASSERT_TRUE(benefits_->Lookup("bt-a-coupon").ok());
  StopSegments();
  StopRewards();

  // Within the TTL the cached answers stand; anything not cached cannot be answered.
  auto cached = segments_->Lookup(rule_segment_);
  ASSERT_TRUE(cached.ok()) << Describe(cached.status());
  EXPECT_EQ(cached->size, 2);
  EXPECT_TRUE(benefits_->Lookup("bt-a-coupon").ok());
  const absl::Time start = absl::Now();
  EXPECT_EQ(segments_->Lookup(list_segment_).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(benefits_->Lookup("bt-fed-points").status().code(), absl::StatusCode::kUnavailable);
  // An unknown id is not NOT_FOUND when nobody can say so.
  EXPECT_EQ(segments_->Lookup("seg-00000000").status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(segments_->LookupTag("age").status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(benefits_->Lookup("bt-nowhere").status().code(), absl::StatusCode::kUnavailable);
  EXPECT_LT(absl::Now() - start, absl::Seconds(9))
      << "each failed lookup is bounded by its deadline";

  // Past the TTL the cached answers are asked for again, and fail.
  clock_.Advance(absl::Seconds(11));
  EXPECT_EQ(segments_->Lookup(rule_segment_).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(benefits_->Lookup("bt-a-coupon").status().code(), absl::StatusCode::kUnavailable);

  // Without a cache a stopped neighbour shows at once; so does a server without the API.
  const RemoteReferenceOptions uncached{.timeout = absl::Seconds(1),
                                        .cache_ttl = absl::ZeroDuration()};
  EXPECT_EQ(GrpcSegmentDirectory(rpc::Connect(segments_target_), uncached)
                .Lookup(rule_segment_)
                .status()
                .code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(GrpcBenefitCatalog(rpc::Connect(Target(*campaigns_server_)), uncached, true)
                .Lookup("bt-a-coupon")
                .status()
                .code(),
            absl::StatusCode::kUnavailable);

  // Through the campaigns API: the audience step cannot be checked, against its field.
  auto saved = client_->Create(planner_a_, Coupon({list_segment_}, "bt-a-coupon"));
  ASSERT_EQ(saved.status().code(), absl::StatusCode::kInvalidArgument) << Describe(saved.status());
  EXPECT_NE(std::string(saved.status().message()).find("cannot be checked now"), std::string::npos)
      << saved.status();
}

TEST_F(CampaignsReferenceTest, ACampaignOnTheRealSegmentValidatesAndForecastsFromTheRealFacts) {
  auto created = client_->Create(planner_a_, Coupon({rule_segment_, list_segment_}, "bt-a-coupon"));
  ASSERT_TRUE(created.ok()) << Describe(created.status());
  // Version 0 is pinned to the segment's current version.
  EXPECT_EQ(created->draft().audience().include(0).version(), 2);
  EXPECT_EQ(created->draft().audience().include(1).version(), 1);

  auto validated = client_->Validate(planner_a_, created->id());
  ASSERT_TRUE(validated.ok()) << Describe(validated.status());
  EXPECT_EQ(validated->errors_size(), 0) << validated->DebugString();
  const auto& f = validated->forecast();
  EXPECT_EQ(f.audience_size(), 2 + 5);
  EXPECT_EQ(f.uptake_bp(), 5000);
  EXPECT_EQ(f.expected_participations(), 4);  // ceil(7 × 50%) × 1 per customer
  EXPECT_EQ(f.cost_per_participation_fen(), 1500);
  EXPECT_EQ(f.forecast_cost_fen(), 4 * 1500);
  // Only the note that two segments are summed; nothing was "unavailable".
  EXPECT_EQ(f.notes_size(), 1) << f.DebugString();

  // The whole draft goes through submission on the real facts.
  EXPECT_TRUE(client_->Submit(planner_a_, created->id()).ok());
}

TEST_F(CampaignsReferenceTest, UnknownForeignArchivedAndRetiredReferencesAreFieldErrors) {
  struct Case {
    std::string segment, template_id, field;
  };
  const std::vector<Case> cases = {
      {"seg-00000000", "bt-a-coupon", "audience.include[0].segment_id"},
      {bank_b_segment_, "bt-a-coupon", "audience.include[0].segment_id"},
      {archived_segment_, "bt-a-coupon", "audience.include[0].segment_id"},
      {list_segment_, "bt-nowhere", "rewards[0].benefit_template_id"},
      {list_segment_, "bt-a-retired", "rewards[0].benefit_template_id"},
      // A points template as the claim's coupon: rewards would refuse every claim.
      {list_segment_, "bt-fed-points", "rewards[0].benefit_template_id"},
  };
  for (const Case& c : cases) {
    auto created = client_->Create(planner_a_, Coupon({c.segment}, c.template_id));
    EXPECT_EQ(created.status().code(), absl::StatusCode::kInvalidArgument)
        << c.segment << " " << c.template_id;
    EXPECT_EQ(FieldOf(created.status()), c.field) << Describe(created.status());
    EXPECT_EQ(ReasonOf(created.status()), common::INVALID_ARGUMENT);
  }
  // A version beyond the current one.
  test::pb::CampaignConfig pinned = Coupon({rule_segment_}, "bt-a-coupon");
  pinned.mutable_audience()->mutable_include(0)->set_version(3);
  auto created = client_->Create(planner_a_, pinned);
  EXPECT_EQ(FieldOf(created.status()), "audience.include[0].version") << Describe(created.status());
  // None of them was stored.
  auto listed = client_->List(planner_a_);
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->campaigns_size(), 0);
}

}  // namespace
}  // namespace mkt::campaigns
