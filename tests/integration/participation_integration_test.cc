// Participation end to end in process: the campaigns service (configuration and participation
// gRPC APIs, its own fresh database) granting through a real rewards service (the Ledger and
// Benefits gRPC APIs, its own fresh database, group commit) with the benefits issuer, so every
// coupon won or claimed is a real coupon instance (a code, in the wallet, usable at checkout).
// Real threads make real concurrent gRPC calls: a coupon grab with 2,000 customers, concurrent
// lottery draws against per-prize stock, concurrent points exchanges with exactly enough points
// for one item, replays by idempotency key, retries of an interrupted grant, and the eligibility
// list.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "libs/core/bloom_filter.h"
#include "libs/core/ids.h"
#include "libs/core/status.h"
#include "libs/core/worker_pool.h"
#include "libs/kafka/outbox.h"
#include "libs/pg/migrations.h"
#include "libs/pg/pool.h"
#include "libs/rpc/client.h"
#include "libs/rpc/server.h"
#include "libs/testing/testing.h"
#include "marketing/campaigns/v1/participation.grpc.pb.h"
#include "marketing/rewards/v1/benefits.grpc.pb.h"
#include "marketing/rewards/v1/ledger.grpc.pb.h"
#include "services/campaigns/audience.h"
#include "services/campaigns/campaign_service.h"
#include "services/campaigns/campaigns_grpc.h"
#include "services/campaigns/campaigns_test_client.h"
#include "services/campaigns/participation_grpc.h"
#include "services/campaigns/participation_service.h"
#include "services/campaigns/participation_store.h"
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
using ::testing::HasSubstr;

std::string Describe(const absl::Status& s) {
  return s.ToString() + " [" + ReasonName(ReasonOf(s)) + "]";
}

bool IsRefusalForTest(const absl::Status& s) {
  const auto reason = ReasonOf(s);
  return reason == common::STOCK_EXHAUSTED || reason == common::BUDGET_EXHAUSTED ||
         reason == common::INSUFFICIENT_BALANCE || reason == common::ACCOUNT_NOT_FOUND ||
         reason == common::INVALID_ARGUMENT || reason == common::IDEMPOTENCY_KEY_REUSED;
}

// The benefit catalog as participation sees it, with a switch that makes it unreachable (the
// rewards service down while a claim is priced).
class SwitchableCatalog final : public BenefitCatalog {
 public:
  explicit SwitchableCatalog(const BenefitCatalog& real) : real_(real) {}
  void SetDown(bool down) { down_ = down; }
  absl::StatusOr<BenefitInfo> Lookup(std::string_view template_id) const override {
    if (down_) return absl::UnavailableError("benefit templates cannot be read");
    return real_.Lookup(template_id);
  }

 private:
  const BenefitCatalog& real_;
  std::atomic<bool> down_{false};
};

class ParticipationIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const absl::Status started = rewards_.Start(
        rewards_db_.dsn(), {.pool_size = 12,
                            .workers = 16,
                            .queue = 20000,
                            .qr_key = "participation-test-qr-key-of-32-bytes-or-more"});
    ASSERT_TRUE(started.ok()) << started;
    ledger_stub_ = rpb::Ledger::NewStub(rewards_.channel);

    // The campaigns service.
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
    membership_.SetOpen("seg-a1");
    issuer_ = NewBenefitsRewardIssuer(rewards_.channel, rewards_.channel, absl::Seconds(20));
    reserve_ = std::make_unique<GroupCommitter>(*pool_, GroupCommitter::Options{});
    finish_ = std::make_unique<GroupCommitter>(*pool_, GroupCommitter::Options{});
    participation_store_ = std::make_unique<PgParticipationStore>(*pool_, *reserve_, *finish_);
    pricing_ = std::make_unique<SwitchableCatalog>(*reference_.benefits);
    participation_ = std::make_unique<ParticipationService>(
        *store_, *participation_store_, membership_, *pricing_, *issuer_, SystemClock(),
        ParticipationOptions{.customer_rate_per_s = 0, .campaign_cache_ttl = absl::Seconds(1)});
    workers_ = std::make_unique<WorkerPool>("campaigns-test", 4, 1000);
    participation_workers_ = std::make_unique<WorkerPool>("participation-test", 64, 50000);
    grpc_service_ = NewCampaignsGrpcService(*service_, *workers_);
    participation_grpc_ = NewParticipationsGrpcService(*participation_, *participation_workers_);
    auto server = rpc::Server::Start(
        {.service_name = "campaigns_test", .address = "127.0.0.1:0", .access_log = false},
        {grpc_service_.get(), participation_grpc_.get()});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    const std::string target = "127.0.0.1:" + std::to_string(server_->port());
    client_ = std::make_unique<test::CampaignsClient>(target);
    channel_ = rpc::Connect(target);
    stub_ = pb::Participations::NewStub(channel_);
    ASSERT_TRUE(client_->CreateOrg(root_, "bank-a", "Bank A").ok());
    ASSERT_TRUE(client_->CreateOrg(root_, "bank-b", "Bank B").ok());
  }

  void TearDown() override {
    if (server_) server_->Shutdown(absl::Seconds(1));
    participation_workers_.reset();
    workers_.reset();
    reserve_.reset();
    finish_.reset();
    rewards_.Stop();
  }

  // Creates, approves, publishes and starts a campaign of bank A; funds its budget.
  std::string Online(pb::CampaignConfig config) {
    auto created = client_->Create(planner_a_, config);
    EXPECT_TRUE(created.ok()) << Describe(created.status());
    if (!created.ok()) return "";
    const std::string id = created->id();
    EXPECT_TRUE(client_->Submit(planner_a_, id).ok());
    EXPECT_TRUE(client_->Approve(approver_a_, id).ok());
    auto published = client_->Publish(planner_a_, id);
    EXPECT_TRUE(published.ok()) << Describe(published.status());
    EXPECT_TRUE(service_->AdvanceDue().ok());
    auto c = client_->Get(planner_a_, id);
    EXPECT_TRUE(c.ok() && c->state() == pb::ONLINE);
    Fund(rpb::BUDGET_FEN, id, 1'000'000'000);
    return id;
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

  // Creates and activates a coupon template of bank A in the rewards service: activation funds its
  // stock with `stock`. Ids and unit costs are the campaigns catalog's (test::kReferenceJson).
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
    auto created = rewards_.benefits->CreateTemplate(t);
    ASSERT_TRUE(created.ok()) << created.status();
    auto active = rewards_.benefits->ActivateTemplate(id);
    ASSERT_TRUE(active.ok()) << active.status();
    ASSERT_EQ(active->status(), rpb::TEMPLATE_ACTIVE);
  }

  // The customer's coupons in `state`, as the wallet shows them.
  std::vector<rpb::Coupon> WalletCoupons(const std::string& customer,
                                         rpb::CouponState state = rpb::COUPON_ISSUED) {
    rpb::GetWalletRequest r;
    r.set_org_id("bank-a");
    r.set_customer_id(customer);
    auto wallet = rewards_.benefits->GetWallet(r);
    EXPECT_TRUE(wallet.ok()) << wallet.status();
    std::vector<rpb::Coupon> out;
    if (!wallet.ok()) return out;
    for (const auto& group : wallet->coupons()) {
      if (group.state() != state) continue;
      for (const auto& c : group.coupons()) out.push_back(c);
    }
    return out;
  }

  int64_t RewardsScalar(const std::string& sql) {
    int64_t v = -1;
    EXPECT_TRUE(pg::WithTransaction(*rewards_.pool, [&](pqxx::work& tx) {
                  v = tx.exec(sql)[0][0].as<int64_t>();
                  return absl::OkStatus();
                }).ok());
    return v;
  }

  void GrantPoints(const std::string& customer, int64_t points) {
    rpb::GrantRequest g;
    g.set_request_id("seed-points-" + customer);
    g.set_org_id("bank-a");
    g.set_customer_id(customer);
    g.set_asset(rpb::POINTS);
    g.set_quantity(points);
    g.mutable_expiry()->set_days_after_grant(30);
    grpc::ClientContext ctx;
    rpc::PrepareClientContext(ctx, absl::Seconds(10), "");
    rpb::GrantResponse resp;
    grpc::Status s = ledger_stub_->Grant(&ctx, g, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  rpb::Account Account(rpb::Asset asset, rpb::OwnerKind kind, const std::string& owner,
                       const std::string& asset_ref = "") {
    rpb::GetAccountRequest r;
    r.mutable_ref()->set_org_id("bank-a");
    r.mutable_ref()->set_asset(asset);
    r.mutable_ref()->set_owner_kind(kind);
    r.mutable_ref()->set_owner_id(owner);
    r.mutable_ref()->set_asset_ref(asset_ref);
    grpc::ClientContext ctx;
    rpc::PrepareClientContext(ctx, absl::Seconds(10), "");
    rpb::Account account;
    grpc::Status s = ledger_stub_->GetAccount(&ctx, r, &account);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return account;
  }

  int64_t Balance(rpb::Asset asset, rpb::OwnerKind kind, const std::string& owner,
                  const std::string& asset_ref = "") {
    rpb::GetAccountRequest r;
    r.mutable_ref()->set_org_id("bank-a");
    r.mutable_ref()->set_asset(asset);
    r.mutable_ref()->set_owner_kind(kind);
    r.mutable_ref()->set_owner_id(owner);
    r.mutable_ref()->set_asset_ref(asset_ref);
    grpc::ClientContext ctx;
    rpc::PrepareClientContext(ctx, absl::Seconds(10), "");
    rpb::Account account;
    grpc::Status s = ledger_stub_->GetAccount(&ctx, r, &account);
    return s.ok() ? account.balance() : 0;
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

  static pb::ParticipateRequest Request(const std::string& campaign, const std::string& customer,
                                        const std::string& key, const std::string& item = "",
                                        const std::string& channel = "mobile_banking") {
    pb::ParticipateRequest r;
    r.set_campaign_id(campaign);
    r.set_customer_id(customer);
    r.set_customer_org_id("bank-a");
    r.set_channel(channel);
    r.set_idempotency_key(key);
    r.set_item_id(item);
    return r;
  }

  // Participates over gRPC; *replayed (when given) is whether the service said, in its trailer,
  // that it answered from a stored participation.
  absl::StatusOr<pb::Participation> Participate(const std::string& campaign,
                                                const std::string& customer, const std::string& key,
                                                const std::string& item = "",
                                                const std::string& channel = "mobile_banking",
                                                bool* replayed = nullptr) {
    const pb::ParticipateRequest r = Request(campaign, customer, key, item, channel);
    grpc::ClientContext ctx;
    rpc::PrepareClientContext(ctx, absl::Seconds(30), "");
    pb::Participation out;
    grpc::Status s = stub_->Participate(&ctx, r, &out);
    if (replayed != nullptr) {
      const auto& trailers = ctx.GetServerTrailingMetadata();
      auto it = trailers.find(rpc::kIdempotentReplayedKey);
      *replayed = it != trailers.end() && it->second == "true";
    }
    if (!s.ok()) return rpc::FromGrpcStatus(s);
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

  pb::CampaignConfig Coupon(const std::string& name) {
    return test::CompleteCoupon(name, absl::Now() - absl::Minutes(1), absl::Now() + absl::Hours(2));
  }

  const Actor root_{"fed", "root", {Role::kAdmin}};
  const Actor planner_a_{"bank-a", "alice", {Role::kPlanner}};
  const Actor approver_a_{"bank-a", "bob", {Role::kApprover}};
  testing::TestDatabase rewards_db_;
  testing::TestDatabase campaigns_db_;
  testing::InProcessRewards rewards_;
  std::unique_ptr<rpb::Ledger::Stub> ledger_stub_;
  std::unique_ptr<pg::Pool> pool_;
  ReferenceData reference_;
  std::unique_ptr<PgCampaignStore> store_;
  std::unique_ptr<CampaignService> service_;
  InMemoryMembership membership_;
  std::unique_ptr<RewardIssuer> issuer_;
  std::unique_ptr<GroupCommitter> reserve_;
  std::unique_ptr<GroupCommitter> finish_;
  std::unique_ptr<PgParticipationStore> participation_store_;
  std::unique_ptr<SwitchableCatalog> pricing_;
  std::unique_ptr<ParticipationService> participation_;
  std::unique_ptr<WorkerPool> workers_;
  std::unique_ptr<WorkerPool> participation_workers_;
  std::unique_ptr<grpc::Service> grpc_service_;
  std::unique_ptr<grpc::Service> participation_grpc_;
  std::unique_ptr<rpc::Server> server_;
  std::unique_ptr<test::CampaignsClient> client_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::Participations::Stub> stub_;
};

// 2,000 customers, 20,000 attempts from 100 threads, stock 1,000, one per customer: exactly
// 1,000 claims, nobody twice, 1,000 coupon instances with distinct codes (one ISSUED coupon in
// each winner's wallet), the ledger's stock, holdings and budget agree with the participation
// records, and every refusal carries the reason that fits it.
TEST_F(ParticipationIntegrationTest, CouponGrabGrantsExactlyTheStockOncePerCustomer) {
  const std::string id = Online(Coupon("Grab"));
  ASSERT_FALSE(id.empty());
  ActivateCoupon("bt-coupon-50", 1000, 5000);

  constexpr int kCustomers = 2000;
  constexpr int kAttempts = 20000;
  std::atomic<int> next{0};
  std::mutex mu;
  std::map<std::string, int> wins;
  std::map<std::string, std::set<std::string>> refusals;  // customer -> reasons
  std::map<std::string, int> reason_counts;
  std::vector<std::thread> threads;
  for (int t = 0; t < 100; ++t) {
    threads.emplace_back([&] {
      for (int i = next++; i < kAttempts; i = next++) {
        // Four adjacent attempts per customer, so a customer's attempts are in flight together.
        const std::string customer = "cust-" + std::to_string((i / 4) % kCustomers);
        auto r = Participate(id, customer, "grab-" + std::to_string(i));
        std::lock_guard<std::mutex> lock(mu);
        if (r.ok()) {
          EXPECT_EQ(r->status(), pb::GRANTED);
          ++wins[customer];
        } else {
          const std::string reason = ReasonName(ReasonOf(r.status()));
          refusals[customer].insert(reason);
          ++reason_counts[reason];
        }
      }
    });
  }
  const absl::Time started = absl::Now();
  for (auto& t : threads) t.join();
  std::string summary;
  for (const auto& [reason, n] : reason_counts) summary += " " + reason + "=" + std::to_string(n);
  std::printf("grab: %d attempts in %.1f s; refusals:%s\n", kAttempts,
              absl::ToDoubleSeconds(absl::Now() - started), summary.c_str());

  int claims = 0;
  for (const auto& [customer, n] : wins) {
    EXPECT_EQ(n, 1) << customer << " claimed more than once";
    claims += n;
  }
  EXPECT_EQ(claims, 1000);
  for (const auto& [reason, n] : reason_counts) {
    EXPECT_TRUE(reason == "STOCK_EXHAUSTED" || reason == "LIMIT_REACHED")
        << n << " refusals with " << reason;
  }
  // LIMIT_REACHED only for a customer who holds a claim, or whose other attempt was in flight
  // and then found the stock gone.
  for (const auto& [customer, reasons] : refusals) {
    if (reasons.count("LIMIT_REACHED") > 0) {
      EXPECT_TRUE(wins.count(customer) > 0 || reasons.count("STOCK_EXHAUSTED") > 0) << customer;
    }
  }
  EXPECT_EQ(Balance(rpb::STOCK, rpb::TEMPLATE, "bt-coupon-50", "bt-coupon-50"), 0);
  int64_t coupons = 0;
  for (const auto& [customer, n] : wins) {
    coupons += Balance(rpb::COUPON, rpb::CUSTOMER, customer, "bt-coupon-50");
  }
  EXPECT_EQ(coupons, 1000);
  // Real coupons: each winner's wallet shows exactly one ISSUED coupon of the campaign, with its
  // own code; nobody else holds one.
  std::set<std::string> codes;
  for (const auto& [customer, n] : wins) {
    const std::vector<rpb::Coupon> held = WalletCoupons(customer);
    ASSERT_EQ(held.size(), 1u) << customer;
    EXPECT_EQ(held[0].template_id(), "bt-coupon-50");
    EXPECT_EQ(held[0].campaign_id(), id);
    EXPECT_FALSE(held[0].code().empty());
    codes.insert(held[0].code());
  }
  EXPECT_EQ(codes.size(), 1000u);
  EXPECT_EQ(RewardsScalar("SELECT count(*) FROM coupons"), 1000);
  EXPECT_EQ(RewardsScalar("SELECT count(DISTINCT customer_id) FROM coupons WHERE state = 1"), 1000);
  // The unit cost is charged once per coupon (by the issue itself, not again by participation).
  EXPECT_EQ(Balance(rpb::BUDGET_FEN, rpb::CAMPAIGN, id), 1'000'000'000 - 1000 * 5000);
  EXPECT_EQ(Scalar("SELECT count(*) FROM participations WHERE status = 'GRANTED'"), 1000);
  EXPECT_EQ(Scalar("SELECT count(*) FROM participations WHERE status = 'PENDING'"), 0);
  EXPECT_EQ(Scalar("SELECT count(DISTINCT customer_id) FROM participations "
                   "WHERE status = 'GRANTED'"),
            1000);
  // The counters were given back for every refused participation.
  EXPECT_EQ(Scalar("SELECT coalesce(sum(n), 0) FROM participation_counters "
                   "WHERE counter LIKE 'c:%:all'"),
            1000);
  // Every recorded participation has its fact in the outbox.
  EXPECT_EQ(Scalar("SELECT count(*) FROM outbox WHERE topic = 'mkt.participations.v1'"),
            Scalar("SELECT count(*) FROM participations"));
  EXPECT_TRUE(LedgerIntact());
}

TEST_F(ParticipationIntegrationTest, ReplaysReturnTheFirstOutcome) {
  const std::string id = Online(Coupon("Replay"));
  ASSERT_FALSE(id.empty());
  ActivateCoupon("bt-coupon-50", 1, 5000);
  auto first = Participate(id, "cust-r1", "key-1");
  ASSERT_TRUE(first.ok()) << Describe(first.status());
  EXPECT_EQ(first->status(), pb::GRANTED);
  const std::vector<rpb::Coupon> issued = WalletCoupons("cust-r1");
  ASSERT_EQ(issued.size(), 1u);
  // Concurrent replays of the same key: all answer with the same participation, one grant.
  std::vector<std::thread> threads;
  std::atomic<int> same{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      auto again = Participate(id, "cust-r1", "key-1");
      if (again.ok() && again->id() == first->id() && again->status() == pb::GRANTED) ++same;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(same.load(), 8);
  EXPECT_EQ(Balance(rpb::COUPON, rpb::CUSTOMER, "cust-r1", "bt-coupon-50"), 1);
  // Still the one coupon, with the same code.
  const std::vector<rpb::Coupon> after = WalletCoupons("cust-r1");
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(after[0].code(), issued[0].code());
  // The same key with a different request.
  auto reused = Participate(id, "cust-r1", "key-1", "", "wecom");
  EXPECT_EQ(ReasonOf(reused.status()), common::IDEMPOTENCY_KEY_REUSED) << Describe(reused.status());
  // Another customer finds the stock gone; a replay of that refusal is refused the same way,
  // and the first customer's replay still gets its coupon although the campaign is sold out.
  auto second = Participate(id, "cust-r2", "key-2");
  EXPECT_EQ(ReasonOf(second.status()), common::STOCK_EXHAUSTED);
  auto second_again = Participate(id, "cust-r2", "key-2");
  EXPECT_EQ(ReasonOf(second_again.status()), common::STOCK_EXHAUSTED);
  auto first_again = Participate(id, "cust-r1", "key-1");
  ASSERT_TRUE(first_again.ok()) << Describe(first_again.status());
  EXPECT_EQ(first_again->id(), first->id());
  // A second claim by the first customer with a new key hits the limit of one.
  auto over = Participate(id, "cust-r1", "key-3");
  EXPECT_TRUE(ReasonOf(over.status()) == common::LIMIT_REACHED ||
              ReasonOf(over.status()) == common::STOCK_EXHAUSTED)
      << Describe(over.status());
  EXPECT_EQ(RewardsScalar("SELECT count(*) FROM coupons"), 1);
  EXPECT_TRUE(WalletCoupons("cust-r2").empty());
  EXPECT_TRUE(LedgerIntact());
}

// The service says which answers are replays (the gateway's Idempotent-Replayed header), and a
// replica that saw the sell-out itself still answers a replay of a success another replica
// granted: its sold-out board holds the keys stored in the database when it marked the campaign.
TEST_F(ParticipationIntegrationTest, AnotherReplicaAnswersAReplayOfASuccessAfterTheSellOut) {
  const std::string id = Online(Coupon("Replica"));
  ASSERT_FALSE(id.empty());
  ActivateCoupon("bt-coupon-50", 1, 5000);
  bool replayed = true;
  auto first = Participate(id, "cust-m1", "key-m1", "", "mobile_banking", &replayed);
  ASSERT_TRUE(first.ok()) << Describe(first.status());
  EXPECT_EQ(first->status(), pb::GRANTED);
  EXPECT_FALSE(replayed);
  auto again = Participate(id, "cust-m1", "key-m1", "", "mobile_banking", &replayed);
  ASSERT_TRUE(again.ok()) << Describe(again.status());
  EXPECT_EQ(again->id(), first->id());
  EXPECT_TRUE(replayed);

  // A second replica on the same database, called as its gRPC handler calls it.
  GroupCommitter reserve(*pool_, GroupCommitter::Options{});
  GroupCommitter finish(*pool_, GroupCommitter::Options{});
  PgParticipationStore store(*pool_, reserve, finish);
  ParticipationService other(*store_, store, membership_, *pricing_, *issuer_, SystemClock(),
                             ParticipationOptions{.customer_rate_per_s = 0});
  auto call_other = [&](const std::string& customer,
                        const std::string& key) -> absl::StatusOr<pb::Participation> {
    const pb::ParticipateRequest r = Request(id, customer, key);
    replayed = false;
    MKT_RETURN_IF_ERROR(other.Screen(r));
    return other.Participate(r, &replayed);
  };
  // It learns of the sell-out from the ledger, and marks the campaign.
  auto sold_out = call_other("cust-m2", "key-m2");
  EXPECT_EQ(ReasonOf(sold_out.status()), common::STOCK_EXHAUSTED) << Describe(sold_out.status());
  const int64_t rows = Scalar("SELECT count(*) FROM participations");
  // A new claim is refused from memory: no reservation, no new row.
  auto refused = call_other("cust-m3", "key-m3");
  EXPECT_EQ(ReasonOf(refused.status()), common::STOCK_EXHAUSTED) << Describe(refused.status());
  EXPECT_FALSE(replayed);
  EXPECT_EQ(Scalar("SELECT count(*) FROM participations"), rows);
  // The first replica's success, replayed here: the stored participation, not a refusal.
  auto replay = call_other("cust-m1", "key-m1");
  ASSERT_TRUE(replay.ok()) << Describe(replay.status());
  EXPECT_EQ(replay->id(), first->id());
  EXPECT_EQ(replay->status(), pb::GRANTED);
  EXPECT_TRUE(replayed);
  // The same key for another customer is still a reused key, not a sold-out refusal.
  auto reused = call_other("cust-m4", "key-m1");
  EXPECT_EQ(ReasonOf(reused.status()), common::IDEMPOTENCY_KEY_REUSED) << Describe(reused.status());
  // The refusal the ledger gave cust-m2 is stored: its replay answers it, as a replay.
  auto refused_again = call_other("cust-m2", "key-m2");
  EXPECT_EQ(ReasonOf(refused_again.status()), common::STOCK_EXHAUSTED);
  EXPECT_TRUE(replayed);
  EXPECT_EQ(Scalar("SELECT count(*) FROM participations"), rows);
  EXPECT_EQ(RewardsScalar("SELECT count(*) FROM coupons"), 1);
  EXPECT_TRUE(LedgerIntact());

  // What a gateway copies (decision 023): the replica that marked the campaign hands out its
  // board, whose filter holds every stored key, for as long as its mark; the replica that did not
  // mark it hands out nothing, so nothing is refused on its behalf.
  pb::GetSoldOutBoardRequest board_request;
  board_request.set_campaign_id(id);
  auto board = other.GetSoldOutBoard(board_request);
  ASSERT_TRUE(board.ok()) << Describe(board.status());
  EXPECT_EQ(board->campaign_id(), id);
  EXPECT_TRUE(board->sold_out());
  EXPECT_GT(board->valid_ms(), 0);
  EXPECT_LE(board->valid_ms(), 10'000);
  std::optional<BloomFilter> stored =
      BloomFilter::FromBytes(board->filter(), board->filter_hashes());
  ASSERT_TRUE(stored.has_value());
  EXPECT_TRUE(stored->MayContain("key-m1"));
  EXPECT_TRUE(stored->MayContain("key-m2"));
  auto unmarked = participation_->GetSoldOutBoard(board_request);
  ASSERT_TRUE(unmarked.ok()) << Describe(unmarked.status());
  EXPECT_FALSE(unmarked->sold_out());
  EXPECT_TRUE(unmarked->filter().empty());
  board_request.set_campaign_id("not a key");
  EXPECT_EQ(other.GetSoldOutBoard(board_request).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// A refusal by one limit gives back every other counter the attempt took and leaves no record:
// the counters and the participations are exactly those of the granted claims.
TEST_F(ParticipationIntegrationTest, ARefusalByOneLimitTakesNothingElse) {
  pb::CampaignConfig config = Coupon("Limits");
  config.mutable_limits()->set_per_customer_total(3);
  config.mutable_limits()->set_per_customer_daily(1);
  config.mutable_limits()->set_global_total(2);
  const std::string id = Online(config);
  ASSERT_FALSE(id.empty());
  ActivateCoupon("bt-coupon-50", 10, 5000);
  auto counter = [&](const std::string& key) {
    return Scalar("SELECT coalesce(sum(n), 0) FROM participation_counters WHERE campaign_id = '" +
                  id + "' AND counter = '" + key + "'");
  };

  auto first = Participate(id, "cust-l1", "l-1");
  ASSERT_TRUE(first.ok()) << Describe(first.status());
  // The daily limit refuses the second claim of the day; the total and global counters it had
  // taken in the same statement are given back.
  auto again_today = Participate(id, "cust-l1", "l-2");
  EXPECT_EQ(ReasonOf(again_today.status()), common::LIMIT_REACHED)
      << Describe(again_today.status());
  EXPECT_THAT(std::string(again_today.status().message()), HasSubstr("today"));
  EXPECT_EQ(counter("c:cust-l1:all"), 1);
  EXPECT_EQ(counter("g:all"), 1);

  auto second = Participate(id, "cust-l2", "l-3");
  ASSERT_TRUE(second.ok()) << Describe(second.status());
  // The global limit refuses a third customer, whose own counters stay at 0.
  auto third = Participate(id, "cust-l3", "l-4");
  EXPECT_EQ(ReasonOf(third.status()), common::LIMIT_REACHED) << Describe(third.status());
  EXPECT_THAT(std::string(third.status().message()), HasSubstr("participations are used up"));
  EXPECT_EQ(counter("c:cust-l3:all"), 0);
  EXPECT_EQ(counter("g:all"), 2);
  // The refused attempts left nothing behind; a replay of one is refused again, not granted.
  EXPECT_EQ(Scalar("SELECT count(*) FROM participations WHERE campaign_id = '" + id + "'"), 2);
  auto third_again = Participate(id, "cust-l3", "l-4");
  EXPECT_EQ(ReasonOf(third_again.status()), common::LIMIT_REACHED);
  EXPECT_EQ(RewardsScalar("SELECT count(*) FROM coupons"), 2);
  EXPECT_TRUE(LedgerIntact());
}

// A claim that cannot be priced (the benefit catalog unreachable) is never granted uncharged:
// it fails as retryable, nothing reaches the ledger, and the replay once the catalog answers
// grants it and charges the budget the template's unit cost.
TEST_F(ParticipationIntegrationTest, ClaimIsNeverGrantedWithoutItsCost) {
  const std::string id = Online(Coupon("Priced"));
  ASSERT_FALSE(id.empty());
  ActivateCoupon("bt-coupon-50", 5, 5000);
  const int64_t budget = Balance(rpb::BUDGET_FEN, rpb::CAMPAIGN, id);
  ASSERT_GT(budget, 0);
  pricing_->SetDown(true);
  auto refused = Participate(id, "cust-p1", "priced-1");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable) << Describe(refused.status());
  EXPECT_EQ(ReasonOf(refused.status()), common::DEPENDENCY_UNAVAILABLE);
  EXPECT_EQ(Balance(rpb::COUPON, rpb::CUSTOMER, "cust-p1", "bt-coupon-50"), 0);
  EXPECT_EQ(Balance(rpb::BUDGET_FEN, rpb::CAMPAIGN, id), budget);
  pricing_->SetDown(false);
  auto granted = Participate(id, "cust-p1", "priced-1");
  ASSERT_TRUE(granted.ok()) << Describe(granted.status());
  EXPECT_EQ(granted->status(), pb::GRANTED);
  EXPECT_EQ(Balance(rpb::COUPON, rpb::CUSTOMER, "cust-p1", "bt-coupon-50"), 1);
  EXPECT_EQ(WalletCoupons("cust-p1").size(), 1u);
  EXPECT_EQ(Balance(rpb::BUDGET_FEN, rpb::CAMPAIGN, id), budget - 5000);
  EXPECT_TRUE(LedgerIntact());
}

// Lottery: 600 customers draw once each (free) at the same time against a prize with a stock
// of 20 and a fallback: the stock is never exceeded, the fallback takes the overflow, every draw
// is logged with its random value, and the table's shares hold for what was drawn.
TEST_F(ParticipationIntegrationTest, LotteryNeverExceedsPrizeStockAndFallsBack) {
  pb::CampaignConfig config = Coupon("Lucky draw");
  config.set_type(pb::LOTTERY);
  config.clear_rewards();
  config.mutable_limits()->set_per_customer_total(0);
  config.mutable_limits()->set_free_draws_per_day(1);
  auto* top = config.add_prizes();
  top->set_name("top");
  top->set_benefit_template_id("bt-coupon-50");
  top->set_kind(pb::REWARD_KIND_COUPON);
  top->set_quantity(1);
  top->set_probability_bp(2000);
  top->set_stock(20);
  auto* consolation = config.add_prizes();
  consolation->set_name("consolation");
  consolation->set_benefit_template_id("bt-points-100");
  consolation->set_kind(pb::REWARD_KIND_POINTS);
  consolation->set_quantity(10);
  consolation->set_probability_bp(3000);
  consolation->set_fallback(true);
  const std::string id = Online(config);
  ASSERT_FALSE(id.empty());
  ActivateCoupon("bt-coupon-50", 100, 5000);

  constexpr int kCustomers = 600;
  std::atomic<int> next{0};
  std::atomic<int> top_won{0}, consolation_won{0}, nothing{0}, errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 50; ++t) {
    threads.emplace_back([&] {
      for (int i = next++; i < kCustomers; i = next++) {
        auto r = Participate(id, "drawer-" + std::to_string(i), "draw-" + std::to_string(i));
        if (!r.ok()) {
          ++errors;
          ADD_FAILURE() << Describe(r.status());
          continue;
        }
        EXPECT_TRUE(r->draw().free_draw());
        if (r->status() == pb::NO_PRIZE) {
          ++nothing;
        } else if (r->rewards(0).prize_name() == "top") {
          ++top_won;
        } else {
          ++consolation_won;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_LE(top_won.load(), 20);
  pb::GetDrawStatsRequest sr;
  sr.set_campaign_id(id);
  grpc::ClientContext ctx;
  pb::DrawStats stats;
  ASSERT_TRUE(stub_->GetDrawStats(&ctx, sr, &stats).ok());
  EXPECT_EQ(stats.draws(), kCustomers);
  EXPECT_EQ(stats.awarded(0), top_won.load());
  EXPECT_EQ(stats.awarded(1), consolation_won.load());
  EXPECT_EQ(stats.drawn_no_prize(), nothing.load());
  // 600 draws at 20% select "top" ~120 times: far beyond its stock of 20, so it sells out and the
  // overflow gets the fallback.
  EXPECT_EQ(top_won.load(), 20);
  EXPECT_EQ(stats.fallbacks(), stats.drawn(0) - 20);
  EXPECT_EQ(stats.awarded(1), stats.drawn(1) + stats.fallbacks());
  // Shares drawn stay near the table's (20% / 30% / 50%) — a coarse sanity bound here; the
  // chi-square over 100,000 draws is in lottery_test.cc.
  EXPECT_NEAR(stats.drawn(0) / 600.0, 0.2, 0.08);
  EXPECT_NEAR(stats.drawn_no_prize() / 600.0, 0.5, 0.09);
  EXPECT_EQ(Scalar("SELECT count(*) FROM lottery_draws WHERE random_value < 0 OR "
                   "random_value >= 10000"),
            0);
  int64_t points = 0;
  for (int i = 0; i < kCustomers; ++i) {
    points += Balance(rpb::POINTS, rpb::CUSTOMER, "drawer-" + std::to_string(i));
  }
  EXPECT_EQ(points, 10 * consolation_won.load());
  // The top prize is a coupon: one instance per winner, in the winner's wallet.
  EXPECT_EQ(RewardsScalar("SELECT count(*) FROM coupons WHERE state = 1"), top_won.load());
  EXPECT_EQ(RewardsScalar("SELECT count(DISTINCT customer_id) FROM coupons"), top_won.load());
  int64_t wallets = 0;
  for (int i = 0; i < kCustomers; ++i) {
    wallets += static_cast<int64_t>(WalletCoupons("drawer-" + std::to_string(i)).size());
  }
  EXPECT_EQ(wallets, top_won.load());
  EXPECT_EQ(Balance(rpb::STOCK, rpb::TEMPLATE, "bt-coupon-50", "bt-coupon-50"),
            100 - top_won.load());

  // The free draw of the day is used: the next draw costs a chance the customer does not have;
  // it is refused and leaves nothing taken.
  auto paid = Participate(id, "drawer-0", "draw-paid");
  EXPECT_EQ(ReasonOf(paid.status()), common::INSUFFICIENT_BALANCE) << Describe(paid.status());
  EXPECT_TRUE(LedgerIntact());
}

// Exactly 800 points and ten concurrent exchanges of an 800-point coupon: one succeeds, the
// points are spent once and exactly one coupon is issued, the others are INSUFFICIENT_BALANCE
// (their holds were refused, nothing held). Then the stock is gone: another saver's exchange is
// refused STOCK_EXHAUSTED and the points it held are given back (the hold voided).
TEST_F(ParticipationIntegrationTest, PointsExchangeUnderConcurrencySucceedsOnce) {
  pb::CampaignConfig config = Coupon("Exchange");
  config.set_type(pb::POINTS_EXCHANGE);
  config.mutable_limits()->set_per_customer_total(0);
  config.mutable_rewards(0)->set_benefit_template_id("bt-a-gift");
  config.mutable_rewards(0)->set_price_points(800);
  const std::string id = Online(config);
  ASSERT_FALSE(id.empty());
  ActivateCoupon("bt-a-gift", 1, 2000);
  GrantPoints("saver", 800);
  std::atomic<int> ok{0}, insufficient{0}, other{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 10; ++i) {
    threads.emplace_back([&, i] {
      auto r = Participate(id, "saver", "ex-" + std::to_string(i));
      if (r.ok()) {
        ++ok;
      } else if (ReasonOf(r.status()) == common::INSUFFICIENT_BALANCE) {
        ++insufficient;
      } else {
        ++other;
        ADD_FAILURE() << Describe(r.status());
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 1);
  EXPECT_EQ(insufficient.load(), 9);
  EXPECT_EQ(Balance(rpb::POINTS, rpb::CUSTOMER, "saver"), 0);
  EXPECT_EQ(Account(rpb::POINTS, rpb::CUSTOMER, "saver").debits_pending(), 0);
  EXPECT_EQ(Balance(rpb::COUPON, rpb::CUSTOMER, "saver", "bt-a-gift"), 1);
  EXPECT_EQ(Balance(rpb::STOCK, rpb::TEMPLATE, "bt-a-gift", "bt-a-gift"), 0);
  ASSERT_EQ(WalletCoupons("saver").size(), 1u);
  EXPECT_EQ(WalletCoupons("saver")[0].template_id(), "bt-a-gift");
  EXPECT_EQ(RewardsScalar("SELECT count(*) FROM coupons"), 1);

  GrantPoints("late-saver", 800);
  auto late = Participate(id, "late-saver", "late-1");
  EXPECT_EQ(ReasonOf(late.status()), common::STOCK_EXHAUSTED) << Describe(late.status());
  const rpb::Account points = Account(rpb::POINTS, rpb::CUSTOMER, "late-saver");
  EXPECT_EQ(points.balance(), 800);
  EXPECT_EQ(points.available(), 800);
  EXPECT_EQ(points.debits_pending(), 0);
  EXPECT_TRUE(WalletCoupons("late-saver").empty());
  // Its replay answers with the same refusal and still takes nothing.
  auto late_again = Participate(id, "late-saver", "late-1");
  EXPECT_EQ(ReasonOf(late_again.status()), common::STOCK_EXHAUSTED);
  EXPECT_EQ(Account(rpb::POINTS, rpb::CUSTOMER, "late-saver").available(), 800);
  EXPECT_TRUE(LedgerIntact());
}

// A claimed coupon is a real, usable coupon: it can be locked at checkout against an order and
// the redemption confirmed, after which the wallet shows it REDEEMED.
TEST_F(ParticipationIntegrationTest, ClaimedCouponIsUsableAtCheckout) {
  const std::string id = Online(Coupon("Usable"));
  ASSERT_FALSE(id.empty());
  ActivateCoupon("bt-coupon-50", 3, 5000);
  auto claimed = Participate(id, "shopper", "shop-1");
  ASSERT_TRUE(claimed.ok()) << Describe(claimed.status());
  const std::vector<rpb::Coupon> held = WalletCoupons("shopper");
  ASSERT_EQ(held.size(), 1u);
  rpb::LockCouponRequest lock;
  lock.set_coupon_code(held[0].code());
  lock.set_customer_id("shopper");
  lock.mutable_order()->set_order_id("order-1");
  lock.mutable_order()->set_amount_fen(20000);
  lock.mutable_order()->set_channel("mobile_banking");
  auto locked = rewards_.benefits->LockCoupon(lock);
  ASSERT_TRUE(locked.ok()) << locked.status();
  EXPECT_EQ(locked->state(), rpb::REDEMPTION_LOCKED);
  EXPECT_EQ(locked->discount_fen(), 5000);
  EXPECT_EQ(WalletCoupons("shopper", rpb::COUPON_LOCKED).size(), 1u);
  rpb::RedemptionRequest confirm;
  confirm.set_redemption_id(locked->id());
  auto confirmed = rewards_.benefits->ConfirmRedemption(confirm);
  ASSERT_TRUE(confirmed.ok()) << confirmed.status();
  EXPECT_EQ(confirmed->state(), rpb::REDEMPTION_CONFIRMED);
  const std::vector<rpb::Coupon> used = WalletCoupons("shopper", rpb::COUPON_REDEEMED);
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].code(), held[0].code());
  EXPECT_TRUE(WalletCoupons("shopper").empty());
  EXPECT_TRUE(LedgerIntact());
}

// A grant interrupted after its payment was held (the benefits API unreachable: outcome unknown)
// is completed by the retry the replay or the recovery sweep makes with the same request, exactly
// once even when several retries race: one coupon, the points spent once, the other reward
// granted once, the budget charged once (the coupon's unit cost by the issue, the points' cost
// by the held budget).
TEST_F(ParticipationIntegrationTest, InterruptedGrantCompletesExactlyOnceOnRetry) {
  ActivateCoupon("bt-a-gift", 5, 2000);
  GrantPoints("retrier", 800);
  Fund(rpb::BUDGET_FEN, "cmp-retry", 100'000);
  IssueRequest r{.request_id = "p:retry-1",
                 .org_id = "bank-a",
                 .campaign_id = "cmp-retry",
                 .customer_id = "retrier",
                 .participation_id = "par_retry",
                 .spend_points = 800};
  r.rewards.push_back({.kind = pb::REWARD_KIND_COUPON, .benefit_template_id = "bt-a-gift"});
  r.rewards.push_back({.kind = pb::REWARD_KIND_POINTS,
                       .benefit_template_id = "bt-points-100",
                       .quantity = 10,
                       .cost_fen = 100});

  auto broken =
      NewBenefitsRewardIssuer(rewards_.channel, rpc::Connect("127.0.0.1:1"), absl::Seconds(2));
  const absl::Status interrupted = broken->Issue(r);
  ASSERT_FALSE(interrupted.ok());
  EXPECT_TRUE(interrupted.code() == absl::StatusCode::kUnavailable ||
              interrupted.code() == absl::StatusCode::kDeadlineExceeded)
      << Describe(interrupted);
  // Held, not spent: the points are still the customer's, but cannot be spent twice.
  rpb::Account points = Account(rpb::POINTS, rpb::CUSTOMER, "retrier");
  EXPECT_EQ(points.balance(), 800);
  EXPECT_EQ(points.available(), 0);
  EXPECT_TRUE(WalletCoupons("retrier").empty());

  std::vector<std::thread> retries;
  std::atomic<int> ok{0};
  for (int i = 0; i < 4; ++i) {
    retries.emplace_back([&] {
      const absl::Status s = issuer_->Issue(r);
      if (s.ok()) {
        ++ok;
      } else {
        // A racing retry may find another one resolving the hold; it is retried again below.
        EXPECT_FALSE(IsRefusalForTest(s)) << Describe(s);
      }
    });
  }
  for (auto& t : retries) t.join();
  EXPECT_GE(ok.load(), 1);
  ASSERT_TRUE(issuer_->Issue(r).ok());
  points = Account(rpb::POINTS, rpb::CUSTOMER, "retrier");
  EXPECT_EQ(points.balance(), 10);  // 800 spent once, 10 granted once
  EXPECT_EQ(points.debits_pending(), 0);
  EXPECT_EQ(WalletCoupons("retrier").size(), 1u);
  EXPECT_EQ(RewardsScalar("SELECT count(*) FROM coupons"), 1);
  EXPECT_EQ(Balance(rpb::BUDGET_FEN, rpb::CAMPAIGN, "cmp-retry"), 100'000 - 2000 - 100);
  EXPECT_EQ(Account(rpb::BUDGET_FEN, rpb::CAMPAIGN, "cmp-retry").debits_pending(), 0);
  EXPECT_TRUE(LedgerIntact());
}

// A refused coupon gives the held payment back, and a retry of the same request (a crash before
// the participation recorded the refusal) answers with the same refusal, even once stock is back.
TEST_F(ParticipationIntegrationTest, RefusedGrantReleasesTheHoldAndStaysRefused) {
  ActivateCoupon("bt-a-gift", 1, 2000);
  GrantPoints("first", 800);
  GrantPoints("second", 800);
  Fund(rpb::BUDGET_FEN, "cmp-refuse", 100'000);
  auto request = [](const std::string& customer) {
    IssueRequest r{.request_id = "p:refuse-" + customer,
                   .org_id = "bank-a",
                   .campaign_id = "cmp-refuse",
                   .customer_id = customer,
                   .spend_points = 800};
    r.rewards.push_back({.kind = pb::REWARD_KIND_COUPON, .benefit_template_id = "bt-a-gift"});
    return r;
  };
  ASSERT_TRUE(issuer_->Issue(request("first")).ok());
  const absl::Status refused = issuer_->Issue(request("second"));
  EXPECT_EQ(ReasonOf(refused), common::STOCK_EXHAUSTED) << Describe(refused);
  rpb::Account points = Account(rpb::POINTS, rpb::CUSTOMER, "second");
  EXPECT_EQ(points.balance(), 800);
  EXPECT_EQ(points.available(), 800);
  Fund(rpb::STOCK, "bt-a-gift", 1);
  const absl::Status again = issuer_->Issue(request("second"));
  EXPECT_EQ(ReasonOf(again), common::STOCK_EXHAUSTED) << Describe(again);
  EXPECT_EQ(Account(rpb::POINTS, rpb::CUSTOMER, "second").available(), 800);
  EXPECT_TRUE(WalletCoupons("second").empty());
  // More than one coupon unit is refused before anything is held.
  IssueRequest two = request("second");
  two.request_id = "p:two-units";
  two.rewards[0].quantity = 2;
  EXPECT_EQ(ReasonOf(issuer_->Issue(two)), common::INVALID_ARGUMENT);
  EXPECT_EQ(Account(rpb::POINTS, rpb::CUSTOMER, "second").available(), 800);
  EXPECT_TRUE(LedgerIntact());
}

// The benefits issuer grants at most one coupon per participation (an issued coupon cannot be
// taken back if the next one is refused) and refuses more with INVALID_ARGUMENT before anything
// moves. A coupon claim of two coupons, or of two units of one, used to pass create, validation,
// submission and publishing, and then every claim was refused: it is refused where it is
// configured, against the item (create, SaveStep, and Validate and Submit of a draft stored
// before the rule). A coupon with points beside it is claimed as before, both granted.
TEST_F(ParticipationIntegrationTest, ACouponClaimOfMoreThanOneCouponIsRefusedWhenConfigured) {
  ActivateCoupon("bt-coupon-50", 10, 5000);
  ActivateCoupon("bt-a-gift", 10, 2000);
  pb::CampaignConfig two = Coupon("Two coupons");
  auto* gift = two.add_rewards();
  gift->set_benefit_template_id("bt-a-gift");
  gift->set_quantity(1);

  auto created = client_->Create(planner_a_, two);
  ASSERT_EQ(created.status().code(), absl::StatusCode::kInvalidArgument)
      << Describe(created.status());
  EXPECT_EQ(ReasonOf(created.status()), common::INVALID_ARGUMENT);
  EXPECT_EQ(FieldOf(created.status()), "rewards[1]");
  EXPECT_THAT(std::string(created.status().message()),
              HasSubstr("rewards[1]: a coupon claim grants at most one coupon and rewards[0] is "
                        "one already"));
  pb::CampaignConfig pair = Coupon("Two units");
  pair.mutable_rewards(0)->set_quantity(2);
  created = client_->Create(planner_a_, pair);
  ASSERT_EQ(created.status().code(), absl::StatusCode::kInvalidArgument)
      << Describe(created.status());
  EXPECT_EQ(FieldOf(created.status()), "rewards[0].quantity");

  // Saving the rules step of a draft.
  auto draft = client_->Create(planner_a_, Coupon("One coupon"));
  ASSERT_TRUE(draft.ok()) << Describe(draft.status());
  auto saved =
      client_->SaveStep(planner_a_, draft->id(), pb::STEP_RULES_REWARDS, two, draft->revision());
  ASSERT_EQ(saved.status().code(), absl::StatusCode::kInvalidArgument) << Describe(saved.status());
  EXPECT_EQ(FieldOf(saved.status()), "rewards[1]");
  auto unchanged = client_->Get(planner_a_, draft->id());
  ASSERT_TRUE(unchanged.ok());
  EXPECT_EQ(unchanged->draft().rewards_size(), 1);

  // A draft stored before the rule existed: Validate lists the item and Submit refuses it.
  ASSERT_TRUE(store_
                  ->UpdateCampaign(draft->id(),
                                   [&](const pb::Campaign&, CampaignUpdate* update) {
                                     *update->after.mutable_draft()->mutable_rewards() =
                                         two.rewards();
                                     update->audit.action = "test.stored_before_the_rule";
                                     return absl::OkStatus();
                                   })
                  .ok());
  auto validated = client_->Validate(planner_a_, draft->id());
  ASSERT_TRUE(validated.ok()) << Describe(validated.status());
  ASSERT_EQ(validated->errors_size(), 1) << validated->DebugString();
  EXPECT_EQ(validated->errors(0).field(), "rewards[1]");
  auto submitted = client_->Submit(planner_a_, draft->id());
  ASSERT_EQ(submitted.status().code(), absl::StatusCode::kInvalidArgument)
      << Describe(submitted.status());
  EXPECT_EQ(FieldOf(submitted.status()), "rewards[1]");

  // One coupon with points beside it: published and claimed, both granted.
  pb::CampaignConfig bonus = Coupon("Coupon and points");
  auto* points = bonus.add_rewards();
  points->set_benefit_template_id("bt-points-100");
  points->set_kind(pb::REWARD_KIND_POINTS);
  points->set_quantity(30);
  const std::string id = Online(bonus);
  ASSERT_FALSE(id.empty());
  auto claimed = Participate(id, "bonus-1", "bonus-key-1");
  ASSERT_TRUE(claimed.ok()) << Describe(claimed.status());
  EXPECT_EQ(claimed->status(), pb::GRANTED);
  EXPECT_EQ(claimed->rewards_size(), 2);
  const std::vector<rpb::Coupon> held = WalletCoupons("bonus-1");
  ASSERT_EQ(held.size(), 1u);
  EXPECT_EQ(held[0].template_id(), "bt-coupon-50");
  EXPECT_EQ(Balance(rpb::POINTS, rpb::CUSTOMER, "bonus-1"), 30);
  EXPECT_TRUE(LedgerIntact());
}

TEST_F(ParticipationIntegrationTest, EligibleCampaignsAreRankedAndExplained) {
  pb::CampaignConfig low = Coupon("Low priority");
  low.set_priority(5);
  pb::CampaignConfig high = Coupon("High priority");
  high.set_priority(50);
  pb::CampaignConfig other_segment = Coupon("Payroll only");
  other_segment.set_priority(99);
  other_segment.mutable_audience()->mutable_include(0)->set_segment_id("seg-a2");
  const std::string low_id = Online(low);
  const std::string high_id = Online(high);
  const std::string seg_id = Online(other_segment);
  ActivateCoupon("bt-coupon-50", 10, 5000);
  auto claimed = Participate(low_id, "eve", "eve-1");
  ASSERT_TRUE(claimed.ok()) << Describe(claimed.status());
  absl::SleepFor(absl::Milliseconds(1100));  // the online list is cached for a second

  pb::ListEligibleRequest r;
  r.set_customer_id("eve");
  r.set_customer_org_id("bank-a");
  r.set_channel("mobile_banking");
  r.set_explain(true);
  grpc::ClientContext ctx;
  pb::ListEligibleResponse resp;
  ASSERT_TRUE(stub_->ListEligible(&ctx, r, &resp).ok());
  ASSERT_EQ(resp.campaigns_size(), 3);
  EXPECT_EQ(resp.campaigns(0).campaign_id(), high_id);
  EXPECT_TRUE(resp.campaigns(0).open());
  EXPECT_EQ(resp.campaigns(0).remaining_total(), 1);
  EXPECT_FALSE(resp.campaigns(0).claimed());
  // Not open: ranked after the open ones, each with its failing check.
  std::map<std::string, pb::EligibleCampaign> closed;
  for (int i = 1; i < 3; ++i) closed[resp.campaigns(i).campaign_id()] = resp.campaigns(i);
  EXPECT_FALSE(closed[low_id].open());
  EXPECT_TRUE(closed[low_id].claimed());
  EXPECT_EQ(closed[low_id].not_open_reason(), "LIMIT_REACHED");
  EXPECT_EQ(closed[seg_id].not_open_reason(), "NOT_ELIGIBLE");
  EXPECT_NE(closed[seg_id].not_open_because().find("audience"), std::string::npos);

  // Without explain, only the open one; on another channel, none; the coupon centre shows the
  // claimed coupon too.
  r.set_explain(false);
  grpc::ClientContext ctx2;
  ASSERT_TRUE(stub_->ListEligible(&ctx2, r, &resp).ok());
  ASSERT_EQ(resp.campaigns_size(), 1);
  r.set_channel("wecom");
  grpc::ClientContext ctx3;
  ASSERT_TRUE(stub_->ListEligible(&ctx3, r, &resp).ok());
  EXPECT_EQ(resp.campaigns_size(), 0);
  pb::ListCouponsRequest cr;
  cr.set_customer_id("eve");
  cr.set_customer_org_id("bank-a");
  cr.set_channel("mobile_banking");
  grpc::ClientContext ctx4;
  pb::ListCouponsResponse coupons;
  ASSERT_TRUE(stub_->ListCoupons(&ctx4, cr, &coupons).ok());
  EXPECT_EQ(coupons.coupons_size(), 2);

  // A customer outside the audience is refused with the reason.
  auto refused = Participate(seg_id, "eve", "eve-2");
  EXPECT_EQ(ReasonOf(refused.status()), common::NOT_ELIGIBLE);
  // A customer of another bank does not see bank A's campaigns at all.
  pb::ListEligibleRequest b;
  b.set_customer_id("bob-b");
  b.set_customer_org_id("bank-b");
  b.set_channel("mobile_banking");
  b.set_explain(true);
  grpc::ClientContext ctx5;
  ASSERT_TRUE(stub_->ListEligible(&ctx5, b, &resp).ok());
  EXPECT_EQ(resp.campaigns_size(), 0);
}

}  // namespace
}  // namespace mkt::campaigns
