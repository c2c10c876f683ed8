// Batch grants (issue 8 item 7) in process: the campaigns service (configuration API and the
// BatchGrants API on a fresh database, the background runner) granting through a real rewards
// service (Ledger and Benefits gRPC APIs, group commit, its own fresh database). The audience
// comes from an in-memory snapshot source standing in for the segments service (the e2e kill test
// uses the real one). Proves: nothing is granted before maker-checker approval and going online;
// each recipient is granted exactly once, also when the work is sent again after a crash;
// exclusions hold; refusals are recorded with the ledger's reason and listed; a cancellation
// stops the rest; ending the campaign stops it; another bank sees nothing (NOT_FOUND); and the
// ledger's invariants hold after every scenario.
#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "libs/core/ids.h"
#include "libs/core/status.h"
#include "libs/core/worker_pool.h"
#include "libs/kafka/outbox.h"
#include "libs/pg/migrations.h"
#include "libs/pg/pool.h"
#include "libs/rpc/actor.h"
#include "libs/rpc/client.h"
#include "libs/rpc/server.h"
#include "libs/testing/testing.h"
#include "marketing/campaigns/v1/batch_grants.grpc.pb.h"
#include "marketing/rewards/v1/ledger.grpc.pb.h"
#include "services/campaigns/batch_grant_runner.h"
#include "services/campaigns/batch_grant_service.h"
#include "services/campaigns/batch_grant_store.h"
#include "services/campaigns/campaign_service.h"
#include "services/campaigns/campaigns_grpc.h"
#include "services/campaigns/campaigns_test_client.h"
#include "services/campaigns/pg_campaign_store.h"
#include "services/campaigns/reward_issuer.h"
#include "services/campaigns/test_configs.h"
#include "services/rewards/batcher.h"
#include "services/rewards/benefits.h"
#include "services/rewards/benefits_grpc.h"
#include "services/rewards/ledger_grpc.h"
#include "services/rewards/ledger_service.h"
#include "services/rewards/payouts.h"
#include "services/rewards/pg_ledger_store.h"
#include "tests/integration/in_process_rewards.h"

namespace mkt::campaigns {
namespace {

namespace rpb = ::marketing::rewards::v1;
namespace common = ::marketing::common::v1;
using tenancy::Actor;
using tenancy::Role;

std::vector<std::string> Customers(const std::string& prefix, int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) out.push_back(absl::StrCat(prefix, "-", 10000 + i));
  return out;
}

class BatchGrantIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const absl::Status started = rewards_.Start(
        rewards_db_.dsn(), {.pool_size = 12,
                            .workers = 32,
                            .queue = 20000,
                            .qr_key = "batch-grant-test-qr-key-of-32-bytes-or-more"});
    ASSERT_TRUE(started.ok()) << started;
    ledger_stub_ = rpb::Ledger::NewStub(rewards_.channel);

    auto cpool = pg::Pool::Connect({.dsn = campaigns_db_.dsn(), .size = 12});
    ASSERT_TRUE(cpool.ok()) << cpool.status();
    pool_ = *std::move(cpool);
    ASSERT_TRUE(
        pg::ApplyMigrations(*pool_, {&kafka::OutboxMigrations(), &CampaignsMigrations()}).ok());
    auto data = ParseReferenceData(test::kReferenceJson);
    ASSERT_TRUE(data.ok()) << data.status();
    reference_ = *std::move(data);
    store_ = std::make_unique<PgCampaignStore>(*pool_);
    service_ = std::make_unique<CampaignService>(*store_, *reference_.segments,
                                                 *reference_.benefits, SystemClock());
    batch_store_ = std::make_unique<PgBatchGrantStore>(*pool_);
    batch_service_ = std::make_unique<BatchGrantService>(*store_, *batch_store_);
    issuer_ = NewBenefitsRewardIssuer(rewards_.channel, rewards_.channel, absl::Seconds(20));
    workers_ = std::make_unique<WorkerPool>("campaigns-test", 4, 1000);
    grpc_service_ = NewCampaignsGrpcService(*service_, *workers_);
    batch_grpc_ = NewBatchGrantsGrpcService(*batch_service_, *workers_);
    auto server = rpc::Server::Start(
        {.service_name = "campaigns_test", .address = "127.0.0.1:0", .access_log = false},
        {grpc_service_.get(), batch_grpc_.get()});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    const std::string target = "127.0.0.1:" + std::to_string(server_->port());
    client_ = std::make_unique<test::CampaignsClient>(target);
    batch_stub_ = pb::BatchGrants::NewStub(rpc::Connect(target));
    ASSERT_TRUE(client_->CreateOrg(root_, "bank-a", "Bank A").ok());
    ASSERT_TRUE(client_->CreateOrg(root_, "bank-b", "Bank B").ok());
  }

  void TearDown() override {
    runner_.reset();
    if (server_) server_->Shutdown(absl::Seconds(1));
    workers_.reset();
    rewards_.Stop();
  }

  std::unique_ptr<BatchGrantRunner> NewRunner(int in_flight = 64, int chunk = 1000) {
    return std::make_unique<BatchGrantRunner>(
        *store_, *batch_store_, snapshots_, *reference_.benefits, *issuer_, rewards_.channel,
        BatchGrantRunnerOptions{.owner = "test-runner-" + RandomHex(3),
                                .lease = absl::Seconds(30),
                                .poll = absl::Milliseconds(100),
                                .max_in_flight = in_flight,
                                .issuer_threads = 8,
                                .chunk = chunk,
                                .snapshot_page = 700});
  }

  // A runner of its own owner, polling every 100 ms, over `snapshots` and `issuer` (fakes that
  // answer or act as a test needs).
  std::unique_ptr<BatchGrantRunner> RunnerWith(RewardIssuer& issuer, AudienceSnapshots& snapshots,
                                               BatchGrantRunnerOptions options) {
    options.owner = "test-runner-" + RandomHex(3);
    options.poll = absl::Milliseconds(100);
    return std::make_unique<BatchGrantRunner>(*store_, *batch_store_, snapshots,
                                              *reference_.benefits, issuer, rewards_.channel,
                                              std::move(options));
  }

  // Waits up to 30 s for the batch of `id` to satisfy `done`; returns its last progress.
  absl::StatusOr<pb::BatchGrant> WaitForBatch(
      const std::string& id, const std::function<bool(const pb::BatchGrant&)>& done) {
    const absl::Time until = absl::Now() + absl::Seconds(30);
    absl::StatusOr<pb::BatchGrant> p = GetBatch(planner_a_, id);
    while (absl::Now() < until && !(p.ok() && done(*p))) {
      absl::SleepFor(absl::Milliseconds(50));
      p = GetBatch(planner_a_, id);
    }
    return p;
  }

  // A BATCH_GRANT campaign of bank A: `quantity` points of bt-points-100 (unit cost 100 fen) to
  // seg-a1 minus seg-a2.
  pb::CampaignConfig PointsBatch(const std::string& name, int64_t quantity) {
    pb::CampaignConfig c =
        test::CompleteCoupon(name, absl::Now() - absl::Minutes(1), absl::Now() + absl::Hours(2));
    c.set_type(pb::BATCH_GRANT);
    c.mutable_limits()->Clear();
    c.mutable_audience()->add_exclude()->set_segment_id("seg-a2");
    c.clear_rewards();
    auto* reward = c.add_rewards();
    reward->set_benefit_template_id("bt-points-100");
    reward->set_quantity(quantity);
    reward->set_kind(pb::REWARD_KIND_POINTS);
    return c;
  }

  // A BATCH_GRANT campaign of bank A: one coupon of bt-a-gift to each recipient.
  pb::CampaignConfig CouponBatch(const std::string& name) {
    pb::CampaignConfig c = PointsBatch(name, 1);
    c.clear_rewards();
    auto* reward = c.add_rewards();
    reward->set_benefit_template_id("bt-a-gift");
    reward->set_quantity(1);
    reward->set_kind(pb::REWARD_KIND_COUPON);
    return c;
  }

  std::string Submitted(const pb::CampaignConfig& config) {
    auto created = client_->Create(planner_a_, config);
    EXPECT_TRUE(created.ok()) << created.status();
    if (!created.ok()) return "";
    EXPECT_TRUE(client_->Submit(planner_a_, created->id()).ok());
    return created->id();
  }

  void GoOnline(const std::string& id, int64_t budget_fen) {
    ASSERT_TRUE(client_->Approve(approver_a_, id).ok());
    ASSERT_TRUE(client_->Publish(planner_a_, id).ok());
    ASSERT_TRUE(service_->AdvanceDue().ok());
    auto c = client_->Get(planner_a_, id);
    ASSERT_TRUE(c.ok() && c->state() == pb::ONLINE);
    if (budget_fen > 0) Fund(rpb::BUDGET_FEN, id, budget_fen);
  }

  void Fund(rpb::Asset asset, const std::string& owner, int64_t amount) {
    rpb::FundRequest r;
    r.set_request_id("fund-" + RandomHex(8));
    r.set_org_id("bank-a");
    r.set_asset(asset);
    r.set_owner_id(owner);
    r.set_amount(amount);
    grpc::ClientContext ctx;
    rpc::PrepareClientContext(ctx, absl::Seconds(10), "");
    rpb::FundResponse resp;
    grpc::Status s = ledger_stub_->Fund(&ctx, r, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  void ActivateCoupon(const std::string& id, int64_t stock, int64_t unit_cost_fen) {
    rpb::BenefitTemplate t;
    t.set_id(id);
    t.set_org_id("bank-a");
    t.set_type(rpb::COUPON_CASH);
    t.set_name("coupon " + id);
    t.set_face_value(unit_cost_fen);
    t.set_unit_cost_fen(unit_cost_fen);
    t.set_total_stock(stock);
    t.mutable_validity()->set_days_after_grant(30);
    ASSERT_TRUE(rewards_.benefits->CreateTemplate(t).ok());
    auto active = rewards_.benefits->ActivateTemplate(id);
    ASSERT_TRUE(active.ok()) << active.status();
  }

  absl::StatusOr<pb::BatchGrant> GetBatch(const Actor& actor, const std::string& id) {
    pb::GetBatchGrantRequest r;
    r.set_campaign_id(id);
    grpc::ClientContext ctx;
    rpc::PrepareClientContext(ctx, absl::Seconds(10), "");
    rpc::AttachActor(ctx, actor);
    pb::BatchGrant out;
    grpc::Status s = batch_stub_->GetBatchGrant(&ctx, r, &out);
    if (!s.ok()) return rpc::FromGrpcStatus(s);
    return out;
  }

  absl::StatusOr<pb::ListBatchGrantFailuresResponse> Failures(const Actor& actor,
                                                              const std::string& id, int size,
                                                              const std::string& token = "") {
    pb::ListBatchGrantFailuresRequest r;
    r.set_campaign_id(id);
    r.mutable_page()->set_page_size(size);
    r.mutable_page()->set_page_token(token);
    grpc::ClientContext ctx;
    rpc::PrepareClientContext(ctx, absl::Seconds(10), "");
    rpc::AttachActor(ctx, actor);
    pb::ListBatchGrantFailuresResponse out;
    grpc::Status s = batch_stub_->ListBatchGrantFailures(&ctx, r, &out);
    if (!s.ok()) return rpc::FromGrpcStatus(s);
    return out;
  }

  absl::StatusOr<pb::BatchGrant> Cancel(const Actor& actor, const std::string& id,
                                        const std::string& reason = "wrong list") {
    pb::CancelBatchGrantRequest r;
    r.set_campaign_id(id);
    r.set_reason(reason);
    grpc::ClientContext ctx;
    rpc::PrepareClientContext(ctx, absl::Seconds(10), "");
    rpc::AttachActor(ctx, actor);
    pb::BatchGrant out;
    grpc::Status s = batch_stub_->CancelBatchGrant(&ctx, r, &out);
    if (!s.ok()) return rpc::FromGrpcStatus(s);
    return out;
  }

  absl::StatusOr<pb::ListBatchGrantStuckResponse> ListStuck(const Actor& actor,
                                                            const std::string& id, int size) {
    pb::ListBatchGrantStuckRequest r;
    r.set_campaign_id(id);
    r.mutable_page()->set_page_size(size);
    grpc::ClientContext ctx;
    rpc::PrepareClientContext(ctx, absl::Seconds(10), "");
    rpc::AttachActor(ctx, actor);
    pb::ListBatchGrantStuckResponse out;
    grpc::Status s = batch_stub_->ListBatchGrantStuck(&ctx, r, &out);
    if (!s.ok()) return rpc::FromGrpcStatus(s);
    return out;
  }

  absl::StatusOr<pb::BatchGrant> Settle(const Actor& actor, const std::string& id,
                                        const std::string& customer,
                                        pb::BatchGrantSettlement settlement,
                                        const std::string& note = "checked the ledger") {
    pb::SettleBatchGrantItemRequest r;
    r.set_campaign_id(id);
    r.set_customer_id(customer);
    r.set_settlement(settlement);
    r.set_note(note);
    grpc::ClientContext ctx;
    rpc::PrepareClientContext(ctx, absl::Seconds(10), "");
    rpc::AttachActor(ctx, actor);
    pb::BatchGrant out;
    grpc::Status s = batch_stub_->SettleBatchGrantItem(&ctx, r, &out);
    if (!s.ok()) return rpc::FromGrpcStatus(s);
    return out;
  }

  int64_t Points(const std::string& customer) {
    rpb::GetAccountRequest r;
    r.mutable_ref()->set_org_id("bank-a");
    r.mutable_ref()->set_asset(rpb::POINTS);
    r.mutable_ref()->set_owner_kind(rpb::CUSTOMER);
    r.mutable_ref()->set_owner_id(customer);
    grpc::ClientContext ctx;
    rpc::PrepareClientContext(ctx, absl::Seconds(10), "");
    rpb::Account account;
    grpc::Status s = ledger_stub_->GetAccount(&ctx, r, &account);
    return s.ok() ? account.balance() : 0;
  }

  // Benefit legs the ledger holds for this batch, per customer.
  std::map<std::string, int> LedgerGrantsOf(const std::string& campaign_id) {
    std::map<std::string, int> out;
    EXPECT_TRUE(pg::WithTransaction(*rewards_.pool, [&](pqxx::work& tx) {
                  for (const auto& row : tx.exec_params(
                           "SELECT a.owner_id, count(*) FROM transfers t JOIN accounts a ON "
                           "a.id = t.credit_account_id WHERE t.id LIKE $1 AND t.id LIKE "
                           "'%:benefit' AND a.owner_kind = 1 GROUP BY a.owner_id",
                           "batch:" + campaign_id + ":%")) {
                    out[row[0].as<std::string>()] = row[1].as<int>();
                  }
                  return absl::OkStatus();
                }).ok());
    return out;
  }

  // Coupons the benefits service issued for this batch, per customer.
  std::map<std::string, int> CouponsOf(const std::string& campaign_id) {
    std::map<std::string, int> out;
    EXPECT_TRUE(pg::WithTransaction(*rewards_.pool, [&](pqxx::work& tx) {
                  for (const auto& row : tx.exec_params(
                           "SELECT customer_id, count(*) FROM coupons WHERE issue_request_id "
                           "LIKE $1 GROUP BY customer_id",
                           "batch:" + campaign_id + ":%")) {
                    out[row[0].as<std::string>()] = row[1].as<int>();
                  }
                  return absl::OkStatus();
                }).ok());
    return out;
  }

  int64_t Scalar(const std::string& sql) {
    int64_t v = -1;
    EXPECT_TRUE(pg::WithTransaction(*pool_, [&](pqxx::work& tx) {
                  v = tx.exec(sql)[0][0].as<int64_t>();
                  return absl::OkStatus();
                }).ok());
    return v;
  }

  bool LedgerIntact() {
    grpc::ClientContext ctx;
    rpc::PrepareClientContext(ctx, absl::Seconds(60), "");
    rpb::CheckIntegrityResponse resp;
    grpc::Status s = ledger_stub_->CheckIntegrity(&ctx, {}, &resp);
    if (!s.ok()) return false;
    for (const auto& c : resp.checks()) {
      if (!c.ok()) ADD_FAILURE() << c.name() << ": " << c.detail();
    }
    return resp.ok();
  }

  const Actor root_{"fed", "root", {Role::kAdmin}};
  const Actor planner_a_{"bank-a", "alice", {Role::kPlanner}};
  const Actor approver_a_{"bank-a", "bob", {Role::kApprover}};
  const Actor admin_b_{"bank-b", "eve", {Role::kAdmin, Role::kApprover}};
  testing::TestDatabase rewards_db_;
  testing::TestDatabase campaigns_db_;
  testing::InProcessRewards rewards_;
  std::unique_ptr<rpb::Ledger::Stub> ledger_stub_;
  std::unique_ptr<pg::Pool> pool_;
  ReferenceData reference_;
  std::unique_ptr<PgCampaignStore> store_;
  std::unique_ptr<CampaignService> service_;
  std::unique_ptr<PgBatchGrantStore> batch_store_;
  std::unique_ptr<BatchGrantService> batch_service_;
  std::unique_ptr<RewardIssuer> issuer_;
  InMemorySnapshots snapshots_;
  std::unique_ptr<WorkerPool> workers_;
  std::unique_ptr<grpc::Service> grpc_service_;
  std::unique_ptr<grpc::Service> batch_grpc_;
  std::unique_ptr<rpc::Server> server_;
  std::unique_ptr<test::CampaignsClient> client_;
  std::unique_ptr<pb::BatchGrants::Stub> batch_stub_;
  std::unique_ptr<BatchGrantRunner> runner_;
};

TEST_F(BatchGrantIntegrationTest, NothingBeforeApprovalThenEachRecipientOnceEvenWhenResent) {
  std::vector<std::string> included = Customers("inc", 1200);
  std::vector<std::string> excluded(included.begin(), included.begin() + 100);
  excluded.push_back("only-excluded");
  snapshots_.Set("seg-a1", included);
  snapshots_.Set("seg-a2", excluded);
  const std::string id = Submitted(PointsBatch("batch points", 7));
  ASSERT_FALSE(id.empty());

  // Submitted, not approved: the runner does nothing.
  runner_ = NewRunner();
  ASSERT_TRUE(runner_->RunOnce().ok());
  auto before = GetBatch(planner_a_, id);
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_EQ(before->state(), pb::BATCH_GRANT_NOT_STARTED);
  EXPECT_TRUE(LedgerGrantsOf(id).empty());
  // Approved but not published (not online): still nothing.
  ASSERT_TRUE(client_->Approve(approver_a_, id).ok());
  ASSERT_TRUE(runner_->RunOnce().ok());
  EXPECT_EQ(GetBatch(planner_a_, id)->state(), pb::BATCH_GRANT_NOT_STARTED);
  EXPECT_TRUE(LedgerGrantsOf(id).empty());
  ASSERT_TRUE(client_->Publish(planner_a_, id).ok());
  ASSERT_TRUE(service_->AdvanceDue().ok());
  Fund(rpb::BUDGET_FEN, id, 1'000'000'000);

  ASSERT_TRUE(runner_->RunOnce().ok());
  auto done = GetBatch(planner_a_, id);
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->state(), pb::BATCH_GRANT_COMPLETED) << done->last_error();
  EXPECT_EQ(done->total(), 1100);
  EXPECT_EQ(done->granted(), 1100);
  EXPECT_EQ(done->failed(), 0);
  EXPECT_EQ(done->pending(), 0);
  EXPECT_TRUE(done->has_finished_at());
  EXPECT_EQ(done->snapshot_ids_size(), 2);
  std::map<std::string, int> grants = LedgerGrantsOf(id);
  EXPECT_EQ(grants.size(), 1100u);
  for (const auto& [customer, n] : grants) EXPECT_EQ(n, 1) << customer;
  for (const auto& c : excluded) EXPECT_EQ(grants.count(c), 0u) << c;
  EXPECT_EQ(Points(included[100]), 7);
  EXPECT_EQ(Points(included.back()), 7);
  EXPECT_EQ(Points(included[0]), 0);

  // A crash after the grants reached the ledger but before their outcomes were recorded: the
  // items are PENDING again and the run RUNNING. A new runner sends them again with the same ids;
  // the ledger answers idempotently and nobody gets a second grant.
  ASSERT_EQ(
      Scalar("WITH u AS (UPDATE batch_grant_items SET state = 'PENDING' WHERE campaign_id = '" +
             id +
             "' AND state = 'GRANTED' AND customer_id < 'inc-11000' RETURNING 1) "
             "SELECT count(*) FROM u"),
      900);
  ASSERT_EQ(Scalar("WITH u AS (UPDATE batch_grant_runs SET state = 'RUNNING', granted = 200, "
                   "finished_at = NULL WHERE campaign_id = '" +
                   id + "' RETURNING 1) SELECT count(*) FROM u"),
            1);
  runner_ = NewRunner();
  ASSERT_TRUE(runner_->RunOnce().ok());
  done = GetBatch(planner_a_, id);
  EXPECT_EQ(done->state(), pb::BATCH_GRANT_COMPLETED);
  EXPECT_EQ(done->granted(), 1100);
  grants = LedgerGrantsOf(id);
  EXPECT_EQ(grants.size(), 1100u);
  for (const auto& [customer, n] : grants) ASSERT_EQ(n, 1) << customer;
  EXPECT_EQ(Points(included[100]), 7);
  // A completed batch is not run again.
  ASSERT_TRUE(runner_->RunOnce().ok());
  EXPECT_EQ(LedgerGrantsOf(id).size(), 1100u);
  EXPECT_TRUE(LedgerIntact());
}

TEST_F(BatchGrantIntegrationTest, MaterialisationResumesAfterASegmentsOutage) {
  snapshots_.Set("seg-a1", Customers("m", 1500));
  snapshots_.Set("seg-a2", {});
  const std::string id = Submitted(PointsBatch("batch resume", 1));
  GoOnline(id, 1'000'000'000);
  runner_ = NewRunner();
  // Segments goes down after the (empty) exclude snapshot and two pages (700 each) of the
  // include snapshot were read.
  snapshots_.SetDown(false, /*reads_left=*/3);
  EXPECT_FALSE(runner_->RunOnce().ok());
  auto failed = GetBatch(planner_a_, id);
  ASSERT_TRUE(failed.ok());
  EXPECT_EQ(failed->state(), pb::BATCH_GRANT_MATERIALISING);
  EXPECT_NE(failed->last_error(), "");
  EXPECT_EQ(Scalar("SELECT count(*) FROM batch_grant_items WHERE campaign_id = '" + id + "'"),
            1400);
  EXPECT_TRUE(LedgerGrantsOf(id).empty()) << "granting before every page was in";
  const auto snapshot_ids = failed->snapshot_ids();
  snapshots_.SetDown(false);
  ASSERT_TRUE(runner_->RunOnce().ok());
  auto done = GetBatch(planner_a_, id);
  EXPECT_EQ(done->state(), pb::BATCH_GRANT_COMPLETED);
  EXPECT_EQ(done->total(), 1500);
  EXPECT_EQ(done->granted(), 1500);
  EXPECT_EQ(done->last_error(), "");
  // Resumed from the cursor on the same snapshots (not materialised again).
  ASSERT_EQ(done->snapshot_ids_size(), snapshot_ids.size());
  for (int i = 0; i < snapshot_ids.size(); ++i) EXPECT_EQ(done->snapshot_ids(i), snapshot_ids[i]);
  EXPECT_EQ(LedgerGrantsOf(id).size(), 1500u);
  EXPECT_TRUE(LedgerIntact());
}

TEST_F(BatchGrantIntegrationTest, RefusalsAreRecordedWithTheLedgersReasonAndListed) {
  // Points: the budget pays for 30 recipients of 10 points (1,000 fen each).
  snapshots_.Set("seg-a1", Customers("f", 80));
  snapshots_.Set("seg-a2", {});
  const std::string id = Submitted(PointsBatch("batch budget", 10));
  GoOnline(id, 30 * 1000);
  runner_ = NewRunner(/*in_flight=*/16, /*chunk=*/25);
  ASSERT_TRUE(runner_->RunOnce().ok());
  auto done = GetBatch(approver_a_, id);
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->state(), pb::BATCH_GRANT_COMPLETED);
  EXPECT_EQ(done->total(), 80);
  EXPECT_EQ(done->granted(), 30);
  EXPECT_EQ(done->failed(), 50);
  EXPECT_EQ(LedgerGrantsOf(id).size(), 30u);
  // The failure report, in pages.
  std::set<std::string> listed;
  std::string token;
  int pages = 0;
  do {
    auto page = Failures(planner_a_, id, 20, token);
    ASSERT_TRUE(page.ok()) << page.status();
    for (const auto& f : page->failures()) {
      EXPECT_EQ(f.reason(), "BUDGET_EXHAUSTED") << f.message();
      EXPECT_TRUE(f.has_failed_at());
      EXPECT_TRUE(listed.insert(f.customer_id()).second);
    }
    token = page->page().next_page_token();
    ++pages;
  } while (!token.empty() && pages < 10);
  EXPECT_EQ(listed.size(), 50u);
  EXPECT_EQ(pages, 3);
  for (const auto& c : listed) EXPECT_EQ(Points(c), 0) << c;

  // Coupons (the RewardIssuer path, real coupon instances): stock for 5 of 8 recipients.
  ActivateCoupon("bt-a-gift", 5, 2000);
  snapshots_.Set("seg-a1", Customers("cpn", 8));
  pb::CampaignConfig coupons = PointsBatch("batch coupons", 1);
  coupons.clear_rewards();
  auto* reward = coupons.add_rewards();
  reward->set_benefit_template_id("bt-a-gift");
  reward->set_quantity(1);
  reward->set_kind(pb::REWARD_KIND_COUPON);
  const std::string cid = Submitted(coupons);
  GoOnline(cid, 1'000'000);
  ASSERT_TRUE(runner_->RunOnce().ok());
  auto cdone = GetBatch(planner_a_, cid);
  ASSERT_TRUE(cdone.ok());
  EXPECT_EQ(cdone->state(), pb::BATCH_GRANT_COMPLETED);
  EXPECT_EQ(cdone->granted(), 5);
  EXPECT_EQ(cdone->failed(), 3);
  auto cfail = Failures(planner_a_, cid, 100);
  ASSERT_TRUE(cfail.ok());
  ASSERT_EQ(cfail->failures_size(), 3);
  for (const auto& f : cfail->failures()) EXPECT_EQ(f.reason(), "STOCK_EXHAUSTED");
  EXPECT_TRUE(LedgerIntact());
}

TEST_F(BatchGrantIntegrationTest, CancelStopsTheRestAndKeepsWhatWasGranted) {
  snapshots_.Set("seg-a1", Customers("c", 6000));
  snapshots_.Set("seg-a2", {});
  // Cancelled before it ever ran: it never starts.
  const std::string early = Submitted(PointsBatch("batch early cancel", 1));
  auto denied = Cancel(planner_a_, early);
  EXPECT_EQ(denied.status().code(), absl::StatusCode::kPermissionDenied);
  auto cancelled_early = Cancel(approver_a_, early);
  ASSERT_TRUE(cancelled_early.ok()) << cancelled_early.status();
  EXPECT_EQ(cancelled_early->state(), pb::BATCH_GRANT_CANCELLED);
  GoOnline(early, 1'000'000'000);

  const std::string id = Submitted(PointsBatch("batch cancel", 1));
  GoOnline(id, 1'000'000'000);
  runner_ = NewRunner(/*in_flight=*/4, /*chunk=*/200);
  runner_->Start();
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  int64_t granted = 0;
  while (absl::Now() < deadline) {
    auto p = GetBatch(planner_a_, id);
    if (p.ok()) granted = p->granted();
    if (granted >= 300) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_GE(granted, 300);
  auto cancelled = Cancel(root_, id);  // the federation's admin may cancel a bank's batch
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->state(), pb::BATCH_GRANT_CANCELLED);
  EXPECT_EQ(cancelled->cancel_reason(), "wrong list");
  EXPECT_LT(cancelled->granted(), 6000);
  EXPECT_EQ(Cancel(approver_a_, id).status().code(), absl::StatusCode::kFailedPrecondition);
  absl::SleepFor(absl::Seconds(3));  // grants in flight at the cancellation land and are recorded
  auto after = GetBatch(planner_a_, id);
  absl::SleepFor(absl::Seconds(2));
  auto later = GetBatch(planner_a_, id);
  ASSERT_TRUE(after.ok() && later.ok());
  EXPECT_EQ(after->granted(), later->granted()) << "granting went on after the cancellation";
  EXPECT_EQ(later->granted() + later->cancelled() + later->failed(), 6000);
  EXPECT_GT(later->cancelled(), 0);
  EXPECT_EQ(later->pending(), 0);
  EXPECT_EQ(static_cast<int64_t>(LedgerGrantsOf(id).size()), later->granted());
  EXPECT_TRUE(LedgerGrantsOf(early).empty());
  EXPECT_EQ(GetBatch(planner_a_, early)->granted(), 0);
  EXPECT_TRUE(LedgerIntact());
}

// The reason is stored in a text column: a NUL used to be cut off there silently. A NUL and an
// over-long reason are INVALID_ARGUMENT on "reason" now, and the batch is not cancelled; a reason
// of exactly 500 bytes is kept whole. Malformed UTF-8 cannot arrive over gRPC (protobuf refuses to
// parse such a string field), so the service is asked directly, as an in-process caller could.
TEST_F(BatchGrantIntegrationTest, CancelRefusesAReasonItCannotStore) {
  snapshots_.Set("seg-a1", Customers("r", 10));
  snapshots_.Set("seg-a2", {});
  const std::string id = Submitted(PointsBatch("batch cancel reason", 1));
  const std::pair<std::string, std::string> bad[] = {
      {std::string("wrong list\0 and more", 20), "must be well-formed UTF-8 without NUL"},
      {std::string(501, 'x'), "is 501 bytes; at most 500 bytes"},
  };
  for (const auto& [reason, message] : bad) {
    auto refused = Cancel(approver_a_, id, reason);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
    EXPECT_EQ(FieldOf(refused.status()), "reason") << refused.status();
    EXPECT_NE(refused.status().message().find(message), std::string::npos) << refused.status();
  }
  pb::CancelBatchGrantRequest malformed;
  malformed.set_campaign_id(id);
  malformed.set_reason("wrong \xC3\x28 list");
  auto refused = batch_service_->Cancel(approver_a_, malformed);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
  EXPECT_EQ(FieldOf(refused.status()), "reason") << refused.status();

  auto untouched = GetBatch(planner_a_, id);
  ASSERT_TRUE(untouched.ok()) << untouched.status();
  EXPECT_NE(untouched->state(), pb::BATCH_GRANT_CANCELLED);
  EXPECT_EQ(untouched->cancel_reason(), "");

  std::string reason;
  while (reason.size() + 3 <= 500) reason += "\xE5\x90\x8D";  // 名, three bytes each
  reason += std::string(500 - reason.size(), '.');
  auto cancelled = Cancel(approver_a_, id, reason);
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->state(), pb::BATCH_GRANT_CANCELLED);
  EXPECT_EQ(cancelled->cancel_reason(), reason);
}

TEST_F(BatchGrantIntegrationTest, EndingTheCampaignStopsGranting) {
  snapshots_.Set("seg-a1", Customers("e", 6000));
  snapshots_.Set("seg-a2", {});
  const std::string id = Submitted(PointsBatch("batch end", 1));
  GoOnline(id, 1'000'000'000);
  runner_ = NewRunner(/*in_flight=*/4, /*chunk=*/200);
  runner_->Start();
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (absl::Now() < deadline) {
    auto p = GetBatch(planner_a_, id);
    if (p.ok() && p->granted() >= 200) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_TRUE(client_->End(planner_a_, id).ok());
  absl::SleepFor(absl::Seconds(4));
  auto after = GetBatch(planner_a_, id);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->state(), pb::BATCH_GRANT_CANCELLED);
  EXPECT_EQ(after->cancelled_by(), "system");
  EXPECT_LT(after->granted(), 6000);
  EXPECT_EQ(after->granted() + after->cancelled(), 6000);
  EXPECT_EQ(static_cast<int64_t>(LedgerGrantsOf(id).size()), after->granted());
  EXPECT_TRUE(LedgerIntact());
}

// The real issuer, except for some recipients (of one campaign, when set) it answers as told: an
// INTERNAL that never goes away (a voided hold, a coupon issued while other rewards were refused),
// IDEMPOTENCY_KEY_REUSED (the campaign's rewards were edited while the batch ran), UNIMPLEMENTED;
// instead of granting, or after granting (the ledger holds the grant, the answer was lost).
class AnsweringIssuer final : public RewardIssuer {
 public:
  enum When { kInsteadOfGranting, kAfterGranting };
  AnsweringIssuer(RewardIssuer& real, std::map<std::string, absl::Status> answers,
                  When when = kInsteadOfGranting)
      : real_(real), answers_(std::move(answers)), when_(when) {}
  void SetCampaign(const std::string& id) {
    std::lock_guard<std::mutex> lock(mu_);
    campaign_ = id;
  }
  int Calls(const std::string& customer) {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_[customer];
  }
  absl::Status Issue(const IssueRequest& request) override {
    std::optional<absl::Status> answer;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (campaign_.empty() || request.campaign_id == campaign_) {
        ++calls_[request.customer_id];
        if (auto it = answers_.find(request.customer_id); it != answers_.end()) answer = it->second;
      }
    }
    if (!answer) return real_.Issue(request);
    if (when_ == kAfterGranting) (void)real_.Issue(request);
    return *answer;
  }

 private:
  RewardIssuer& real_;
  const std::map<std::string, absl::Status> answers_;
  const When when_;
  std::mutex mu_;
  std::string campaign_;
  std::map<std::string, int> calls_;
};

// One recipient whose grant keeps failing with INTERNAL must not hold the batch, nor the runner:
// the rest of the batch is granted, the next batch runs, and the item stays PENDING (it may have
// been granted), reported as stuck. IDEMPOTENCY_KEY_REUSED is stuck at once, never FAILED; an
// UNIMPLEMENTED (nothing granted) ends FAILED after the attempts.
TEST_F(BatchGrantIntegrationTest, AnUnconfirmedGrantIsPutOffAndReportedWithoutHoldingTheRunner) {
  ActivateCoupon("bt-a-gift", 100, 100);
  snapshots_.Set("seg-a1", Customers("stk", 8));
  snapshots_.Set("seg-a2", {});
  const std::string first = Submitted(CouponBatch("batch stuck"));
  GoOnline(first, 1'000'000);
  const std::string second = Submitted(CouponBatch("batch after the stuck one"));
  GoOnline(second, 1'000'000);

  AnsweringIssuer issuer(
      *issuer_,
      {{"stk-10002", Error(absl::StatusCode::kInternal, common::INTERNAL,
                           "the payment hold h-1 was voided before the grant completed")},
       {"stk-10004", Error(absl::StatusCode::kFailedPrecondition, common::IDEMPOTENCY_KEY_REUSED,
                           "request_id was used for a different transfer")},
       {"stk-10006", absl::UnimplementedError("no such method")}});
  issuer.SetCampaign(first);
  runner_ = RunnerWith(issuer, snapshots_,
                       {.issuer_threads = 4,
                        .unconfirmed_backoff = absl::Milliseconds(20),
                        .unconfirmed_max_backoff = absl::Minutes(1),
                        .unconfirmed_attempts = 3});
  // One pass must end (it used to work the first batch for ever).
  std::atomic<bool> returned{false};
  absl::Status pass;
  std::thread once([&] {
    pass = runner_->RunOnce();
    returned = true;
  });
  const absl::Time until = absl::Now() + absl::Seconds(60);
  while (!returned && absl::Now() < until) absl::SleepFor(absl::Milliseconds(50));
  const bool ended_by_itself = returned;
  if (!ended_by_itself) runner_->Stop();
  once.join();
  ASSERT_TRUE(ended_by_itself) << "RunOnce never returned: the stuck item held the runner";
  EXPECT_TRUE(pass.ok()) << pass;

  auto later = GetBatch(planner_a_, second);
  ASSERT_TRUE(later.ok()) << later.status();
  EXPECT_EQ(later->state(), pb::BATCH_GRANT_COMPLETED) << later->last_error();
  EXPECT_EQ(later->granted(), 8);

  auto stuck = GetBatch(planner_a_, first);
  ASSERT_TRUE(stuck.ok()) << stuck.status();
  EXPECT_EQ(stuck->state(), pb::BATCH_GRANT_RUNNING);
  EXPECT_EQ(stuck->granted(), 5);
  EXPECT_EQ(stuck->failed(), 1);
  EXPECT_EQ(stuck->pending(), 2);
  EXPECT_NE(stuck->last_error().find("2 recipients stuck"), std::string::npos)
      << stuck->last_error();
  EXPECT_EQ(issuer.Calls("stk-10002"), 3);
  EXPECT_EQ(issuer.Calls("stk-10004"), 1);
  EXPECT_EQ(issuer.Calls("stk-10006"), 3);
  auto listed = batch_store_->Stuck(first, "", 10);
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->size(), 2u);
  EXPECT_EQ((*listed)[0].customer_id, "stk-10002");
  EXPECT_EQ((*listed)[0].reason, "STUCK");
  EXPECT_NE((*listed)[0].message.find("voided"), std::string::npos) << (*listed)[0].message;
  EXPECT_EQ((*listed)[1].customer_id, "stk-10004");
  auto failures = Failures(planner_a_, first, 10);
  ASSERT_TRUE(failures.ok()) << failures.status();
  ASSERT_EQ(failures->failures_size(), 1);
  EXPECT_EQ(failures->failures(0).customer_id(), "stk-10006");
  EXPECT_NE(failures->failures(0).message().find("no such method"), std::string::npos);

  // The next pass leaves the put-off items alone until they are due, and still ends.
  ASSERT_TRUE(runner_->RunOnce().ok());
  EXPECT_EQ(issuer.Calls("stk-10002"), 3);
  EXPECT_EQ(GetBatch(planner_a_, first)->pending(), 2);
  EXPECT_EQ(GetBatch(planner_a_, first)->granted(), 5);

  // Operators see the stuck items through the API, with the ledger request id to look up.
  EXPECT_EQ(GetBatch(planner_a_, first)->stuck(), 2);
  EXPECT_EQ(GetBatch(planner_a_, second)->stuck(), 0);
  auto api_listed = ListStuck(planner_a_, first, 10);
  ASSERT_TRUE(api_listed.ok()) << api_listed.status();
  ASSERT_EQ(api_listed->items_size(), 2);
  EXPECT_EQ(api_listed->items(0).customer_id(), "stk-10002");
  EXPECT_EQ(api_listed->items(0).grant_request_id(), "batch:" + first + ":stk-10002");
  EXPECT_NE(api_listed->items(0).message().find("voided"), std::string::npos);
  EXPECT_GT(api_listed->items(0).stuck_since().seconds(), 0);
  EXPECT_EQ(api_listed->items(1).customer_id(), "stk-10004");
  EXPECT_EQ(ListStuck(admin_b_, first, 10).status().code(), absl::StatusCode::kNotFound);

  // Settling is the checker's: refused to a planner, to another bank, for an item that is not
  // stuck or not a recipient, and without a settlement or a note; a refusal changes nothing.
  const auto code = [](const absl::StatusOr<pb::BatchGrant>& r) { return r.status().code(); };
  EXPECT_EQ(code(Settle(planner_a_, first, "stk-10002", pb::BATCH_GRANT_SETTLED_NOT_GRANTED)),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(code(Settle(admin_b_, first, "stk-10002", pb::BATCH_GRANT_SETTLED_NOT_GRANTED)),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(code(Settle(approver_a_, first, "stk-10001", pb::BATCH_GRANT_SETTLED_NOT_GRANTED)),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(code(Settle(approver_a_, first, "stk-10006", pb::BATCH_GRANT_SETTLED_GRANTED)),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(code(Settle(approver_a_, first, "nobody", pb::BATCH_GRANT_SETTLED_NOT_GRANTED)),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(code(Settle(approver_a_, first, "stk-10002", pb::BATCH_GRANT_SETTLEMENT_UNSPECIFIED)),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Settle(approver_a_, first, "stk-10002", pb::BATCH_GRANT_SETTLED_NOT_GRANTED, "")),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Settle(approver_a_, first, "stk-10002", pb::BATCH_GRANT_SETTLED_NOT_GRANTED,
                        std::string("bad\0note", 8))),
            absl::StatusCode::kInvalidArgument);
  // Bytes that are no text (the service is also called in-process, not only through gRPC).
  pb::SettleBatchGrantItemRequest bad_id;
  bad_id.set_campaign_id(first);
  bad_id.set_customer_id("stk-\xff\xfe");
  bad_id.set_settlement(pb::BATCH_GRANT_SETTLED_NOT_GRANTED);
  bad_id.set_note("checked");
  EXPECT_EQ(batch_service_->Settle(approver_a_, bad_id).status().code(),
            absl::StatusCode::kInvalidArgument);
  pb::ListBatchGrantStuckRequest bad_token;
  bad_token.set_campaign_id(first);
  bad_token.mutable_page()->set_page_token("\xc3");
  EXPECT_EQ(batch_service_->ListStuck(planner_a_, bad_token).status().code(),
            absl::StatusCode::kInvalidArgument);
  pb::ListBatchGrantFailuresRequest bad_failures_token;
  bad_failures_token.set_campaign_id(first);
  bad_failures_token.mutable_page()->set_page_token("\xc3");
  EXPECT_EQ(batch_service_->ListFailures(planner_a_, bad_failures_token).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GetBatch(planner_a_, first)->stuck(), 2);

  // Neither grant is in the ledger (the issuer refused before granting): both settled not granted.
  ASSERT_TRUE(LedgerGrantsOf(first).count("stk-10002") == 0);
  auto one = Settle(approver_a_, first, "stk-10002", pb::BATCH_GRANT_SETTLED_NOT_GRANTED,
                    "no transfer under the request id");
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(one->state(), pb::BATCH_GRANT_RUNNING);
  EXPECT_EQ(one->stuck(), 1);
  EXPECT_EQ(one->failed(), 2);
  EXPECT_EQ(code(Settle(approver_a_, first, "stk-10002", pb::BATCH_GRANT_SETTLED_GRANTED)),
            absl::StatusCode::kFailedPrecondition);
  auto two = Settle(approver_a_, first, "stk-10004", pb::BATCH_GRANT_SETTLED_NOT_GRANTED);
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(two->state(), pb::BATCH_GRANT_COMPLETED) << "the last pending item was settled";
  EXPECT_EQ(two->stuck(), 0);
  EXPECT_EQ(two->pending(), 0);
  EXPECT_EQ(two->granted(), 5);
  EXPECT_EQ(two->failed(), 3);
  auto report = Failures(planner_a_, first, 10);
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_EQ(report->failures_size(), 3);
  EXPECT_EQ(report->failures(0).customer_id(), "stk-10002");
  EXPECT_EQ(report->failures(0).reason(), "SETTLED_NOT_GRANTED");
  EXPECT_EQ(report->failures(0).message(),
            "settled by bank-a/bob: no transfer under the request id");
  // A settled item is never sent again.
  ASSERT_TRUE(runner_->RunOnce().ok());
  EXPECT_EQ(issuer.Calls("stk-10002"), 3);
  EXPECT_EQ(issuer.Calls("stk-10004"), 1);
  EXPECT_TRUE(LedgerIntact());
}

// Grants that land while their answer is lost: the runner hears INTERNAL every time.
AnsweringIssuer LostAnswers(RewardIssuer& real, const std::vector<std::string>& customers) {
  std::map<std::string, absl::Status> answers;
  for (const auto& c : customers) {
    answers[c] = Error(absl::StatusCode::kInternal, common::INTERNAL, "the answer was lost");
  }
  return AnsweringIssuer(real, std::move(answers), AnsweringIssuer::kAfterGranting);
}

// An item settled while the runner is still working its batch (sending its stuck items again every
// few hundred milliseconds) is never sent again, and the batch completes once the last one is
// settled: the operator found the grants in the ledger, so they count granted, once.
TEST_F(BatchGrantIntegrationTest, AStuckItemSettledDuringTheRunIsNeverSentAgain) {
  ActivateCoupon("bt-a-gift", 100, 100);
  snapshots_.Set("seg-a1", Customers("lost", 5));
  snapshots_.Set("seg-a2", {});
  const std::string id = Submitted(CouponBatch("batch with lost answers"));
  GoOnline(id, 1'000'000);

  AnsweringIssuer issuer = LostAnswers(*issuer_, {"lost-10001", "lost-10003"});
  runner_ = RunnerWith(issuer, snapshots_,
                       {.issuer_threads = 2,
                        .unconfirmed_backoff = absl::Milliseconds(20),
                        .unconfirmed_max_backoff = absl::Milliseconds(200),
                        .unconfirmed_attempts = 3});
  // Put off for less than a second, stuck items keep the pass going: it ends only when they are
  // settled.
  std::atomic<bool> returned{false};
  absl::Status pass;
  std::thread once([&] {
    pass = runner_->RunOnce();
    returned = true;
  });
  ASSERT_EQ(WaitForBatch(id, [](const pb::BatchGrant& b) { return b.stuck() == 2; })->stuck(), 2);
  EXPECT_EQ(CouponsOf(id)["lost-10001"], 1) << "sent again under one id, issued once";

  auto first = Settle(approver_a_, id, "lost-10001", pb::BATCH_GRANT_SETTLED_GRANTED,
                      "transfer found under the request id");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->state(), pb::BATCH_GRANT_RUNNING);
  EXPECT_EQ(first->stuck(), 1);
  const int first_at_settlement = issuer.Calls("lost-10001");
  const int other_at_settlement = issuer.Calls("lost-10003");
  absl::SleepFor(absl::Milliseconds(1500));
  EXPECT_FALSE(returned) << "the other stuck item keeps the pass going";
  EXPECT_GE(issuer.Calls("lost-10003"), other_at_settlement + 3) << "the other is still sent";
  // At most the call in flight when it was settled.
  EXPECT_LE(issuer.Calls("lost-10001"), first_at_settlement + 1) << "a settled item was sent again";

  auto last = Settle(approver_a_, id, "lost-10003", pb::BATCH_GRANT_SETTLED_GRANTED,
                     "transfer found under the request id");
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_EQ(last->state(), pb::BATCH_GRANT_COMPLETED);
  const absl::Time until = absl::Now() + absl::Seconds(10);
  while (!returned && absl::Now() < until) absl::SleepFor(absl::Milliseconds(20));
  const bool ended_by_itself = returned;
  if (!ended_by_itself) runner_->Stop();
  once.join();
  ASSERT_TRUE(ended_by_itself) << "the pass went on after its batch completed";
  EXPECT_TRUE(pass.ok()) << pass;

  auto done = GetBatch(planner_a_, id);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->state(), pb::BATCH_GRANT_COMPLETED);
  EXPECT_EQ(done->granted(), 5);
  EXPECT_EQ(done->failed(), 0);
  EXPECT_EQ(done->stuck(), 0);
  const std::map<std::string, int> ledger = CouponsOf(id);
  EXPECT_EQ(ledger.size(), 5u);
  for (const auto& [customer, n] : ledger) EXPECT_EQ(n, 1) << customer;
  EXPECT_TRUE(LedgerIntact());
}

// A runner that did not mark an item stuck (a restart, another replica, a pause in between) knows
// it is stuck from the database: it still asks whether the item was settled before each resend.
TEST_F(BatchGrantIntegrationTest, AStuckItemIsNeverSentAgainAfterSettlementByARunnerThatForgotIt) {
  ActivateCoupon("bt-a-gift", 100, 100);
  snapshots_.Set("seg-a1", Customers("forgot", 3));
  snapshots_.Set("seg-a2", {});
  const std::string id = Submitted(CouponBatch("batch stuck before a restart"));
  GoOnline(id, 1'000'000);
  AnsweringIssuer issuer = LostAnswers(*issuer_, {"forgot-10001"});
  // The first runner marks it stuck at its first unconfirmed answer, then is gone.
  runner_ = RunnerWith(issuer, snapshots_,
                       {.issuer_threads = 2,
                        .unconfirmed_backoff = absl::Milliseconds(20),
                        .unconfirmed_max_backoff = absl::Minutes(1),
                        .unconfirmed_attempts = 1});
  ASSERT_TRUE(runner_->RunOnce().ok());
  ASSERT_EQ(GetBatch(planner_a_, id)->stuck(), 1);
  runner_.reset();

  // The next one would give it a fresh round of quick attempts if it did not know.
  runner_ = RunnerWith(issuer, snapshots_,
                       {.issuer_threads = 2,
                        .unconfirmed_backoff = absl::Milliseconds(20),
                        .unconfirmed_max_backoff = absl::Milliseconds(200),
                        .unconfirmed_attempts = 50});
  const int before = issuer.Calls("forgot-10001");
  std::atomic<bool> returned{false};
  std::thread once([&] {
    ASSERT_TRUE(runner_->RunOnce().ok());
    returned = true;
  });
  const absl::Time sent_by = absl::Now() + absl::Seconds(30);
  while (issuer.Calls("forgot-10001") == before && absl::Now() < sent_by) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_GT(issuer.Calls("forgot-10001"), before) << "the new runner never sent it";
  auto settled = Settle(approver_a_, id, "forgot-10001", pb::BATCH_GRANT_SETTLED_GRANTED,
                        "coupon found under the request id");
  ASSERT_TRUE(settled.ok()) << settled.status();
  const int at_settlement = issuer.Calls("forgot-10001");
  const absl::Time until = absl::Now() + absl::Seconds(10);
  while (!returned && absl::Now() < until) absl::SleepFor(absl::Milliseconds(20));
  absl::SleepFor(absl::Milliseconds(500));
  const bool ended_by_itself = returned;
  if (!ended_by_itself) runner_->Stop();
  once.join();
  EXPECT_LE(issuer.Calls("forgot-10001"), at_settlement + 1) << "a settled item was sent again";
  EXPECT_TRUE(ended_by_itself) << "the pass went on after its batch completed";
  auto done = GetBatch(planner_a_, id);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->state(), pb::BATCH_GRANT_COMPLETED);
  EXPECT_EQ(done->granted(), 3);
  EXPECT_EQ(done->stuck(), 0);
  for (const auto& [customer, n] : CouponsOf(id)) EXPECT_EQ(n, 1) << customer;
  EXPECT_TRUE(LedgerIntact());
}

// The rewards service funds a campaign's budget when its own consumer of the campaign changes
// gets there, which may be after the batch starts (a restart, a rebalance): the grants refused
// for the missing budget account meanwhile are put off, not failed, and granted once it exists.
TEST_F(BatchGrantIntegrationTest, RecipientsRefusedBeforeTheBudgetIsFundedAreGrantedOnceItIs) {
  snapshots_.Set("seg-a1", Customers("early", 6));
  snapshots_.Set("seg-a2", {});
  const std::string id = Submitted(PointsBatch("batch before its budget", 2));
  GoOnline(id, /*budget_fen=*/0);  // ONLINE, and rewards has not funded it yet
  runner_ = RunnerWith(*issuer_, snapshots_,
                       {.issuer_threads = 2,
                        .unconfirmed_backoff = absl::Milliseconds(50),
                        .unconfirmed_max_backoff = absl::Milliseconds(300),
                        .unconfirmed_attempts = 1000});
  runner_->Start();
  auto waiting = WaitForBatch(id, [](const pb::BatchGrant& b) {
    return b.last_error().find("ACCOUNT_NOT_FOUND") != std::string::npos;
  });
  ASSERT_TRUE(waiting.ok()) << waiting.status();
  EXPECT_NE(waiting->last_error().find("ACCOUNT_NOT_FOUND"), std::string::npos)
      << waiting->last_error();
  absl::SleepFor(absl::Milliseconds(500));  // several attempts each
  waiting = GetBatch(planner_a_, id);
  EXPECT_EQ(waiting->failed(), 0) << "refused for good before the budget existed";
  EXPECT_EQ(waiting->granted(), 0);
  EXPECT_EQ(waiting->pending(), 6);

  Fund(rpb::BUDGET_FEN, id, 1'000'000);
  auto done = WaitForBatch(
      id, [](const pb::BatchGrant& b) { return b.state() == pb::BATCH_GRANT_COMPLETED; });
  runner_->Stop();
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->state(), pb::BATCH_GRANT_COMPLETED) << done->last_error();
  EXPECT_EQ(done->granted(), 6);
  EXPECT_EQ(done->failed(), 0);
  for (const auto& customer : Customers("early", 6)) EXPECT_EQ(Points(customer), 2) << customer;
  EXPECT_TRUE(LedgerIntact());
}

// Reads the audience through `inner`, and runs `on_first_read` once, before the first page: an
// operator acting while the runner materialises.
class ActingDuringMaterialisation final : public AudienceSnapshots {
 public:
  ActingDuringMaterialisation(AudienceSnapshots& inner, std::function<void()> on_first_read)
      : inner_(inner), on_first_read_(std::move(on_first_read)) {}
  absl::StatusOr<std::string> Materialize(const std::string& org_id, const pb::SegmentRef& seg,
                                          const std::string& purpose) override {
    return inner_.Materialize(org_id, seg, purpose);
  }
  absl::StatusOr<SnapshotPage> Read(const std::string& org_id, const std::string& snapshot_id,
                                    const std::string& page_token, int page_size) override {
    if (on_first_read_) std::exchange(on_first_read_, nullptr)();
    return inner_.Read(org_id, snapshot_id, page_token, page_size);
  }

 private:
  AudienceSnapshots& inner_;
  std::function<void()> on_first_read_;
};

// A campaign paused while its audience is being read sends no grant: the runner reads the
// campaign again before it sends the first one. Resumed, every recipient is granted once.
TEST_F(BatchGrantIntegrationTest, PausedWhileMaterialisingSendsNothing) {
  snapshots_.Set("seg-a1", Customers("pz", 40));
  snapshots_.Set("seg-a2", {});
  const std::string id = Submitted(PointsBatch("batch paused early", 3));
  GoOnline(id, 1'000'000);
  ActingDuringMaterialisation acting(snapshots_, [&] {
    auto paused = client_->Pause(planner_a_, id);
    ASSERT_TRUE(paused.ok()) << paused.status();
  });
  runner_ = RunnerWith(*issuer_, acting, {.max_in_flight = 16, .issuer_threads = 2});
  ASSERT_TRUE(runner_->RunOnce().ok());
  EXPECT_TRUE(LedgerGrantsOf(id).empty()) << "granted after the campaign was paused";
  auto paused = GetBatch(planner_a_, id);
  ASSERT_TRUE(paused.ok()) << paused.status();
  EXPECT_EQ(paused->granted(), 0);

  ASSERT_TRUE(client_->Resume(planner_a_, id).ok());
  const absl::Time until = absl::Now() + absl::Seconds(30);
  absl::StatusOr<pb::BatchGrant> done;
  while (absl::Now() < until) {
    ASSERT_TRUE(runner_->RunOnce().ok());
    done = GetBatch(planner_a_, id);
    if (done.ok() && done->state() == pb::BATCH_GRANT_COMPLETED) break;
  }
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->state(), pb::BATCH_GRANT_COMPLETED);
  EXPECT_EQ(done->granted(), 40);
  const std::map<std::string, int> ledger = LedgerGrantsOf(id);
  EXPECT_EQ(ledger.size(), 40u);
  for (const auto& [customer, n] : ledger) EXPECT_EQ(n, 1) << customer;
  EXPECT_TRUE(LedgerIntact());
}

TEST_F(BatchGrantIntegrationTest, AnotherBankSeesNothing) {
  snapshots_.Set("seg-a1", Customers("t", 10));
  snapshots_.Set("seg-a2", {});
  const std::string id = Submitted(PointsBatch("batch tenancy", 1));
  GoOnline(id, 1'000'000);
  runner_ = NewRunner();
  ASSERT_TRUE(runner_->RunOnce().ok());
  EXPECT_EQ(GetBatch(admin_b_, id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Failures(admin_b_, id, 10).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Cancel(admin_b_, id).status().code(), absl::StatusCode::kNotFound);
  // Exactly like a campaign that does not exist.
  EXPECT_EQ(GetBatch(admin_b_, "cmp_0000000000000000").status().code(),
            absl::StatusCode::kNotFound);
  // Its own org and the federation see it; a call without an actor is refused.
  EXPECT_EQ(GetBatch(root_, id)->granted(), 10);
  EXPECT_EQ(GetBatch(planner_a_, id)->state(), pb::BATCH_GRANT_COMPLETED);
  {
    pb::GetBatchGrantRequest r;
    r.set_campaign_id(id);
    grpc::ClientContext ctx;
    rpc::PrepareClientContext(ctx, absl::Seconds(10), "");
    pb::BatchGrant out;
    EXPECT_EQ(batch_stub_->GetBatchGrant(&ctx, r, &out).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  // Not a batch: refused.
  pb::CampaignConfig coupon = test::CompleteCoupon("not a batch", absl::Now() - absl::Minutes(1),
                                                   absl::Now() + absl::Hours(2));
  const std::string other = Submitted(coupon);
  EXPECT_EQ(GetBatch(planner_a_, other).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(LedgerIntact());
}

}  // namespace
}  // namespace mkt::campaigns
