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

// The rewards service as participation's issuer sees it, with a switch: forward every grant, be
// unreachable (nothing reaches the rewards service), or grant and then lose the answer (a timeout
// after the rewards service committed: the outcome is unknown to the caller).
class FlakyIssuer final : public RewardIssuer {
 public:
  enum class Mode { kForward, kDown, kLoseAnswer };
  explicit FlakyIssuer(RewardIssuer& real, Mode mode) : real_(real), mode_(mode) {}
  void Set(Mode mode) { mode_ = mode; }
  absl::Status Issue(const IssueRequest& request) override {
    switch (mode_.load()) {
      case Mode::kDown:
        return Error(absl::StatusCode::kUnavailable, common::DEPENDENCY_UNAVAILABLE,
                     "the rewards service cannot be reached");
      case Mode::kLoseAnswer:
        if (absl::Status s = real_.Issue(request); !s.ok()) return s;
        return Error(absl::StatusCode::kDeadlineExceeded, common::DEADLINE_EXCEEDED,
                     "the rewards service answered after the deadline");
      default:
        return real_.Issue(request);
    }
  }

 private:
  RewardIssuer& real_;
  std::atomic<Mode> mode_;
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
    return Call(Request(campaign, customer, key, item, channel), replayed);
  }

  // Participate over gRPC with a request as given (another bank's customer, say).
  absl::StatusOr<pb::Participation> Call(const pb::ParticipateRequest& r,
                                         bool* replayed = nullptr) {
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

  std::string Text(const std::string& sql) {
    std::string v;
    EXPECT_TRUE(pg::WithTransaction(*pool_, [&](pqxx::work& tx) {
                  pqxx::result r = tx.exec(sql);
                  v = r.empty() || r[0][0].is_null() ? "" : r[0][0].as<std::string>();
                  return absl::OkStatus();
                }).ok());
    return v;
  }

  // The status of the participation stored under `key` in `campaign` ("" when none).
  std::string StatusOf(const std::string& campaign, const std::string& key) {
    return Text("SELECT status FROM participations WHERE campaign_id = '" + campaign +
                "' AND idempotency_key = '" + key + "'");
  }

  // Another service instance on the same database (a replica, or this one before a restart) whose
  // grants go through `issuer`.
  std::unique_ptr<ParticipationService> ServiceWith(RewardIssuer& issuer,
                                                    bool charge_budget = true) {
    return std::make_unique<ParticipationService>(
        *store_, *participation_store_, membership_, *pricing_, issuer, SystemClock(),
        ParticipationOptions{.customer_rate_per_s = 0, .charge_budget = charge_budget});
  }

  pb::ListEligibleResponse Eligible(const std::string& customer, bool explain,
                                    const std::string& org = "bank-a",
                                    const std::string& channel = "mobile_banking") {
    pb::ListEligibleRequest r;
    r.set_customer_id(customer);
    r.set_customer_org_id(org);
    r.set_channel(channel);
    r.set_explain(explain);
    grpc::ClientContext ctx;
    pb::ListEligibleResponse resp;
    grpc::Status s = stub_->ListEligible(&ctx, r, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp;
  }

  pb::ListCouponsResponse Coupons(const std::string& customer) {
    pb::ListCouponsRequest r;
    r.set_customer_id(customer);
    r.set_customer_org_id("bank-a");
    r.set_channel("mobile_banking");
    grpc::ClientContext ctx;
    pb::ListCouponsResponse resp;
    grpc::Status s = stub_->ListCoupons(&ctx, r, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp;
  }

  // A lottery of bank A that always wins 10 points, valid `valid_days`, one free draw a day.
  pb::CampaignConfig PointsDraw(const std::string& name, int valid_days) {
    pb::CampaignConfig config = Coupon(name);
    config.set_type(pb::LOTTERY);
    config.clear_rewards();
    config.mutable_limits()->set_per_customer_total(0);
    config.mutable_limits()->set_free_draws_per_day(1);
    auto* prize = config.add_prizes();
    prize->set_name("points");
    prize->set_benefit_template_id("bt-points-100");
    prize->set_kind(pb::REWARD_KIND_POINTS);
    prize->set_quantity(10);
    prize->set_probability_bp(10000);
    prize->set_points_valid_days(valid_days);
    return config;
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
  EXPECT_EQ(board->org_id(), "bank-a");  // a copy refuses only this org's customers
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

// Tenancy before anything else: a customer of another member bank is told that bank A's campaign
// does not exist exactly as for an unknown id (404 at the gateway), whether the campaign is
// online, sold out (refused from memory) or paused; it used to get NOT_ELIGIBLE naming bank-a,
// STOCK_EXHAUSTED or CAMPAIGN_NOT_ACTIVE. Bank A's own branches still get the real refusal.
TEST_F(ParticipationIntegrationTest, AnotherBanksCampaignAnswersAsAnUnknownOne) {
  const std::string paused = Online(Coupon("Bank A, paused later"));
  const std::string sold_out = Online(Coupon("Bank A, sold out"));
  ASSERT_FALSE(paused.empty());
  ASSERT_FALSE(sold_out.empty());
  ActivateCoupon("bt-coupon-50", 1, 5000);
  auto as = [&](const std::string& org, const std::string& campaign, const std::string& key) {
    pb::ParticipateRequest r = Request(campaign, "cust-" + org, key);
    r.set_customer_org_id(org);
    return Call(r);
  };
  const absl::StatusOr<pb::Participation> unknown = as("bank-b", "cmp-nowhere", "b-0");
  ASSERT_EQ(unknown.status().code(), absl::StatusCode::kNotFound) << Describe(unknown.status());
  EXPECT_EQ(HttpStatusFor(unknown.status()), 404);
  const std::string unknown_message(unknown.status().message());
  auto expect_unknown = [&](const absl::StatusOr<pb::Participation>& got,
                            const std::string& campaign, const char* when) {
    EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound)
        << when << ": " << Describe(got.status());
    EXPECT_EQ(ReasonOf(got.status()), ReasonOf(unknown.status())) << when;
    EXPECT_EQ(HttpStatusFor(got.status()), 404) << when;
    std::string shape(got.status().message());
    if (const size_t at = shape.find(campaign); at != std::string::npos) {
      shape.replace(at, campaign.size(), "cmp-nowhere");
    }
    EXPECT_EQ(shape, unknown_message) << when;
    EXPECT_THAT(std::string(got.status().message()), ::testing::Not(HasSubstr("bank-a"))) << when;
  };

  expect_unknown(as("bank-b", paused, "b-1"), paused, "online");
  // Bank A's customers take the only coupon and find it gone: the campaign is marked sold out.
  ASSERT_TRUE(Participate(sold_out, "cust-a1", "a-1").ok());
  EXPECT_EQ(ReasonOf(Participate(sold_out, "cust-a2", "a-2").status()), common::STOCK_EXHAUSTED);
  EXPECT_EQ(ReasonOf(Participate(sold_out, "cust-a3", "a-3").status()), common::STOCK_EXHAUSTED);
  expect_unknown(as("bank-b", sold_out, "b-2"), sold_out, "sold out");
  expect_unknown(as("fed", sold_out, "b-3"), sold_out, "sold out, a federation customer");
  EXPECT_EQ(ReasonOf(as("bank-a.branch-01", sold_out, "a-4").status()), common::STOCK_EXHAUSTED);

  ASSERT_TRUE(client_->Pause(planner_a_, paused).ok());
  absl::SleepFor(absl::Milliseconds(1100));  // campaigns are cached for a second
  expect_unknown(as("bank-b", paused, "b-4"), paused, "paused");
  EXPECT_EQ(ReasonOf(as("bank-a.branch-01", paused, "a-5").status()), common::CAMPAIGN_NOT_ACTIVE);
  EXPECT_EQ(Scalar("SELECT count(*) FROM participations WHERE customer_org <> 'bank-a'"), 0);
}

// The coupon centre decides the audience and the exclusion group first: a sold-out VIP-only
// coupon is not listed to a customer outside the VIP segment, and explain says NOT_ELIGIBLE, not
// STOCK_EXHAUSTED; a coupon of an exclusion group the customer already took part in elsewhere is
// not listed either. Members still see the sold-out coupon greyed out, and a claimed one.
TEST_F(ParticipationIntegrationTest, TheCouponCentreShowsNoCouponOutsideTheAudienceEvenSoldOut) {
  pb::CampaignConfig vip = Coupon("VIP only");
  vip.mutable_audience()->mutable_include(0)->set_segment_id("seg-a2");
  const std::string vip_id = Online(vip);
  pb::CampaignConfig first = Coupon("Spring, first");
  first.set_exclusion_group("spring");
  first.mutable_rewards(0)->set_benefit_template_id("bt-a-gift");
  pb::CampaignConfig second = first;
  second.set_name("Spring, second");
  const std::string first_id = Online(first);
  const std::string second_id = Online(second);
  ASSERT_FALSE(vip_id.empty());
  ASSERT_FALSE(first_id.empty());
  ASSERT_FALSE(second_id.empty());
  ActivateCoupon("bt-coupon-50", 1, 5000);
  ActivateCoupon("bt-a-gift", 1, 2000);
  membership_.Add("seg-a2", "vip-1");
  membership_.Add("seg-a2", "vip-2");
  ASSERT_TRUE(Participate(vip_id, "vip-1", "v-1").ok());
  EXPECT_EQ(ReasonOf(Participate(vip_id, "vip-2", "v-2").status()), common::STOCK_EXHAUSTED);
  // "plain" takes part in the first spring campaign; another customer finds the second sold out.
  ASSERT_TRUE(Participate(first_id, "plain", "p-1").ok());
  EXPECT_EQ(ReasonOf(Participate(second_id, "other", "o-1").status()), common::STOCK_EXHAUSTED);
  absl::SleepFor(absl::Milliseconds(1100));  // the online list is cached for a second

  auto listed = [](const pb::ListCouponsResponse& r, const std::string& id) {
    for (const auto& c : r.coupons()) {
      if (c.campaign_id() == id) return std::optional<pb::EligibleCampaign>(c);
    }
    return std::optional<pb::EligibleCampaign>();
  };
  const pb::ListCouponsResponse plain = Coupons("plain");
  EXPECT_FALSE(listed(plain, vip_id).has_value()) << plain.DebugString();
  EXPECT_FALSE(listed(plain, second_id).has_value()) << plain.DebugString();
  ASSERT_TRUE(listed(plain, first_id).has_value()) << plain.DebugString();
  EXPECT_TRUE(listed(plain, first_id)->claimed());

  std::map<std::string, pb::EligibleCampaign> explained;
  const pb::ListEligibleResponse plain_explained = Eligible("plain", true);
  for (const auto& e : plain_explained.campaigns()) explained[e.campaign_id()] = e;
  ASSERT_EQ(explained.count(vip_id), 1u);
  EXPECT_EQ(explained[vip_id].not_open_reason(), "NOT_ELIGIBLE");
  EXPECT_THAT(explained[vip_id].not_open_because(), HasSubstr("audience"));
  ASSERT_EQ(explained.count(second_id), 1u);
  EXPECT_EQ(explained[second_id].not_open_reason(), "NOT_ELIGIBLE");
  EXPECT_THAT(explained[second_id].not_open_because(), HasSubstr("exclusion group"));

  // A member who found it sold out sees it greyed out; the member who claimed it sees it claimed.
  const pb::ListCouponsResponse member = Coupons("vip-2");
  ASSERT_TRUE(listed(member, vip_id).has_value()) << member.DebugString();
  EXPECT_TRUE(listed(member, vip_id)->sold_out());
  EXPECT_EQ(listed(member, vip_id)->not_open_reason(), "STOCK_EXHAUSTED");
  const pb::ListCouponsResponse holder = Coupons("vip-1");
  ASSERT_TRUE(listed(holder, vip_id).has_value()) << holder.DebugString();
  EXPECT_TRUE(listed(holder, vip_id)->claimed());
}

// explain=true lists the online campaigns of the channel that are not open because of their
// window (one that starts later after an approved edit, one whose end passed before the scheduler
// ended it) with CAMPAIGN_NOT_ACTIVE and when, instead of dropping them. Without explain, in the
// coupon centre, for another bank and on another channel they stay out.
TEST_F(ParticipationIntegrationTest, ExplainSaysWhenAnOnlineCampaignOutsideItsWindowOpensOrClosed) {
  const absl::Time now = absl::Now();
  const std::string ended =
      Online(test::CompleteCoupon("Ends soon", now - absl::Minutes(1), now + absl::Seconds(3)));
  const std::string later = Online(Coupon("Starts later"));
  ASSERT_FALSE(ended.empty());
  ASSERT_FALSE(later.empty());
  // An approved edit moves the start of the running campaign to tomorrow.
  auto c = client_->Get(planner_a_, later);
  ASSERT_TRUE(c.ok()) << Describe(c.status());
  pb::CampaignConfig moved = c->draft();
  const absl::Time start = now + absl::Hours(24);
  *moved.mutable_start_time() = test::Ts(start);
  *moved.mutable_end_time() = test::Ts(start + absl::Hours(2));
  c = client_->SaveStep(planner_a_, later, pb::STEP_BASICS, moved, c->revision());
  ASSERT_TRUE(c.ok()) << Describe(c.status());
  ASSERT_TRUE(client_->Submit(planner_a_, later).ok());
  c = client_->Approve(approver_a_, later);
  ASSERT_TRUE(c.ok()) << Describe(c.status());
  ASSERT_EQ(c->state(), pb::ONLINE);
  ASSERT_EQ(c->live().start_time().seconds(), absl::ToUnixSeconds(start));
  absl::SleepFor(now + absl::Seconds(3) + absl::Milliseconds(1200) -
                 absl::Now());  // past the end, not cached

  std::map<std::string, pb::EligibleCampaign> explained;
  const pb::ListEligibleResponse eve_explained = Eligible("eve", true);
  for (const auto& e : eve_explained.campaigns()) explained[e.campaign_id()] = e;
  ASSERT_EQ(explained.count(ended), 1u);
  EXPECT_FALSE(explained[ended].open());
  EXPECT_EQ(explained[ended].not_open_reason(), "CAMPAIGN_NOT_ACTIVE");
  EXPECT_THAT(explained[ended].not_open_because(), HasSubstr("ended at "));
  ASSERT_EQ(explained.count(later), 1u);
  EXPECT_FALSE(explained[later].open());
  EXPECT_EQ(explained[later].not_open_reason(), "CAMPAIGN_NOT_ACTIVE");
  EXPECT_THAT(explained[later].not_open_because(), HasSubstr("starts at "));
  // The time in words: China Standard Time, to the second.
  EXPECT_THAT(
      explained[later].not_open_because(),
      HasSubstr(absl::FormatTime("%Y-%m-%d %H:%M:%S", start, absl::FixedTimeZone(8 * 3600))));

  EXPECT_EQ(Eligible("eve", false).campaigns_size(), 0);
  EXPECT_EQ(Coupons("eve").coupons_size(), 0);
  EXPECT_EQ(Eligible("bob-b", true, "bank-b").campaigns_size(), 0);
  EXPECT_EQ(Eligible("eve", true, "bank-a", "wecom").campaigns_size(), 0);
  // Taking part is refused with the same reason.
  EXPECT_EQ(ReasonOf(Participate(ended, "eve", "e-1").status()), common::CAMPAIGN_NOT_ACTIVE);
  EXPECT_EQ(ReasonOf(Participate(later, "eve", "e-2").status()), common::CAMPAIGN_NOT_ACTIVE);
}

// A claim whose grant timed out ("retry with the same idempotency key") and is retried after the
// campaign was paused, then ended, completes as the recovery sweep would complete it, instead of
// a final CAMPAIGN_NOT_ACTIVE; the same key from another customer is IDEMPOTENCY_KEY_REUSED; a new
// claim is still refused.
TEST_F(ParticipationIntegrationTest,
       AReplayCompletesItsPendingParticipationAfterTheCampaignClosed) {
  const std::string id = Online(Coupon("Timed out"));
  ASSERT_FALSE(id.empty());
  ActivateCoupon("bt-coupon-50", 5, 5000);
  FlakyIssuer down(*issuer_, FlakyIssuer::Mode::kDown);
  std::unique_ptr<ParticipationService> before = ServiceWith(down);
  for (const std::string customer : {"cust-t1", "cust-t2"}) {
    auto timed_out = before->Participate(Request(id, customer, "key-" + customer));
    EXPECT_EQ(timed_out.status().code(), absl::StatusCode::kUnavailable)
        << Describe(timed_out.status());
    EXPECT_EQ(StatusOf(id, "key-" + customer), "PENDING");
  }
  ASSERT_TRUE(client_->Pause(planner_a_, id).ok());
  absl::SleepFor(absl::Milliseconds(1100));  // campaigns are cached for a second

  auto reused = Participate(id, "cust-other", "key-cust-t1");
  EXPECT_EQ(ReasonOf(reused.status()), common::IDEMPOTENCY_KEY_REUSED) << Describe(reused.status());
  bool replayed = false;
  auto completed = Participate(id, "cust-t1", "key-cust-t1", "", "mobile_banking", &replayed);
  ASSERT_TRUE(completed.ok()) << Describe(completed.status());
  EXPECT_EQ(completed->status(), pb::GRANTED);
  EXPECT_TRUE(replayed);
  EXPECT_EQ(StatusOf(id, "key-cust-t1"), "GRANTED");
  EXPECT_EQ(WalletCoupons("cust-t1").size(), 1u);
  EXPECT_EQ(ReasonOf(Participate(id, "cust-t3", "key-cust-t3").status()),
            common::CAMPAIGN_NOT_ACTIVE);

  ASSERT_TRUE(client_->End(planner_a_, id).ok());
  absl::SleepFor(absl::Milliseconds(1100));
  auto after_end = Participate(id, "cust-t2", "key-cust-t2", "", "mobile_banking", &replayed);
  ASSERT_TRUE(after_end.ok()) << Describe(after_end.status());
  EXPECT_EQ(after_end->status(), pb::GRANTED);
  EXPECT_TRUE(replayed);
  // A replay of the completed one answers as stored.
  auto again = Participate(id, "cust-t1", "key-cust-t1");
  ASSERT_TRUE(again.ok()) << Describe(again.status());
  EXPECT_EQ(again->id(), completed->id());
  EXPECT_EQ(RewardsScalar("SELECT count(*) FROM coupons"), 2);
  EXPECT_EQ(Scalar("SELECT count(*) FROM participations WHERE status = 'PENDING'"), 0);
  EXPECT_TRUE(LedgerIntact());
}

// A grant whose answer was lost, retried after an approved edit changed the prize's points
// validity: the retry sends the grant of the version the participation was made under, which the
// ledger answers idempotently, so the participation is GRANTED (once), not REJECTED with
// IDEMPOTENCY_KEY_REUSED while the customer holds the points. Both the replay and the recovery
// sweep.
TEST_F(ParticipationIntegrationTest, ARetryAfterAnEditSendsTheGrantOfTheParticipationsVersion) {
  const std::string id = Online(PointsDraw("Points draw", 30));
  ASSERT_FALSE(id.empty());
  FlakyIssuer lossy(*issuer_, FlakyIssuer::Mode::kLoseAnswer);
  std::unique_ptr<ParticipationService> before = ServiceWith(lossy);
  for (const std::string customer : {"drawer-r", "drawer-s"}) {
    auto lost = before->Participate(Request(id, customer, "key-" + customer));
    EXPECT_EQ(lost.status().code(), absl::StatusCode::kDeadlineExceeded) << Describe(lost.status());
    EXPECT_EQ(StatusOf(id, "key-" + customer), "PENDING");
    EXPECT_EQ(Balance(rpb::POINTS, rpb::CUSTOMER, customer), 10);
  }

  auto c = client_->Get(planner_a_, id);
  ASSERT_TRUE(c.ok()) << Describe(c.status());
  pb::CampaignConfig edited = c->draft();
  edited.mutable_prizes(0)->set_points_valid_days(60);
  c = client_->SaveStep(planner_a_, id, pb::STEP_RULES_REWARDS, edited, c->revision());
  ASSERT_TRUE(c.ok()) << Describe(c.status());
  ASSERT_TRUE(client_->Submit(planner_a_, id).ok());
  c = client_->Approve(approver_a_, id);
  ASSERT_TRUE(c.ok()) << Describe(c.status());
  ASSERT_EQ(c->live().prizes(0).points_valid_days(), 60);
  ASSERT_GT(c->live_version(), 1);
  absl::SleepFor(absl::Milliseconds(1100));  // campaigns are cached for a second

  auto replay = Participate(id, "drawer-r", "key-drawer-r");
  ASSERT_TRUE(replay.ok()) << Describe(replay.status());
  EXPECT_EQ(replay->status(), pb::GRANTED);
  EXPECT_EQ(replay->campaign_version(), 1);
  auto recovered = participation_->RecoverPending(absl::ZeroDuration());
  ASSERT_TRUE(recovered.ok()) << Describe(recovered.status());
  EXPECT_EQ(*recovered, 1);
  EXPECT_EQ(StatusOf(id, "key-drawer-s"), "GRANTED");
  for (const std::string customer : {"drawer-r", "drawer-s"}) {
    EXPECT_EQ(Balance(rpb::POINTS, rpb::CUSTOMER, customer), 10) << customer;
  }
  // A draw made now is granted under the new version.
  auto fresh = Participate(id, "drawer-t", "key-drawer-t");
  ASSERT_TRUE(fresh.ok()) << Describe(fresh.status());
  EXPECT_EQ(fresh->campaign_version(), c->live_version());
  EXPECT_TRUE(LedgerIntact());
}

// The rewards service answering a retry with IDEMPOTENCY_KEY_REUSED means an earlier attempt sent
// other content under the same ids (here: the service started charging budgets in between), so the
// customer may well hold the reward: the participation stays PENDING for an operator, with its
// counters, instead of being REJECTED.
TEST_F(ParticipationIntegrationTest, AReusedKeyFromTheLedgerOnARetryLeavesTheParticipationPending) {
  const std::string id = Online(PointsDraw("Points draw, uncharged", 30));
  ASSERT_FALSE(id.empty());
  FlakyIssuer lossy(*issuer_, FlakyIssuer::Mode::kLoseAnswer);
  std::unique_ptr<ParticipationService> uncharged = ServiceWith(lossy, /*charge_budget=*/false);
  auto lost = uncharged->Participate(Request(id, "drawer-k", "key-k"));
  EXPECT_EQ(lost.status().code(), absl::StatusCode::kDeadlineExceeded) << Describe(lost.status());
  ASSERT_EQ(StatusOf(id, "key-k"), "PENDING");
  ASSERT_EQ(Balance(rpb::POINTS, rpb::CUSTOMER, "drawer-k"), 10);

  auto retried = Participate(id, "drawer-k", "key-k");
  EXPECT_FALSE(retried.ok());
  EXPECT_NE(ReasonOf(retried.status()), common::IDEMPOTENCY_KEY_REUSED)
      << Describe(retried.status());
  EXPECT_EQ(retried.status().code(), absl::StatusCode::kInternal) << Describe(retried.status());
  EXPECT_EQ(StatusOf(id, "key-k"), "PENDING");
  auto recovered = participation_->RecoverPending(absl::ZeroDuration());
  ASSERT_TRUE(recovered.ok()) << Describe(recovered.status());
  EXPECT_EQ(*recovered, 0);
  EXPECT_EQ(StatusOf(id, "key-k"), "PENDING");
  // Nothing given back: the counters the participation took are still taken.
  EXPECT_EQ(Scalar("SELECT n FROM participation_counters WHERE campaign_id = '" + id +
                   "' AND counter = 'c:drawer-k:all'"),
            1);
  EXPECT_EQ(Balance(rpb::POINTS, rpb::CUSTOMER, "drawer-k"), 10);
  EXPECT_TRUE(LedgerIntact());
}

// The benefits issuer, retried with a coupon whose request id the benefits service already holds
// for another coupon, answers IDEMPOTENCY_KEY_REUSED without voiding the payment hold: a coupon may
// have been issued under that id, so nothing is undone before an operator looked.
TEST_F(ParticipationIntegrationTest, AReusedCouponRequestIdDoesNotVoidTheHold) {
  ActivateCoupon("bt-a-gift", 5, 2000);
  ActivateCoupon("bt-coupon-50", 5, 5000);
  GrantPoints("holder", 800);
  Fund(rpb::BUDGET_FEN, "cmp-reuse", 100'000);
  IssueRequest r{.request_id = "p:reuse-1",
                 .org_id = "bank-a",
                 .campaign_id = "cmp-reuse",
                 .customer_id = "holder",
                 .participation_id = "par_reuse",
                 .spend_points = 800};
  r.rewards.push_back({.kind = pb::REWARD_KIND_COUPON, .benefit_template_id = "bt-a-gift"});
  auto broken =
      NewBenefitsRewardIssuer(rewards_.channel, rpc::Connect("127.0.0.1:1"), absl::Seconds(2));
  ASSERT_FALSE(broken->Issue(r).ok());
  ASSERT_EQ(Account(rpb::POINTS, rpb::CUSTOMER, "holder").debits_pending(), 800);
  // Another coupon already went out under the coupon's request id.
  auto plan = CouponIssuePlanFor(r);
  ASSERT_TRUE(plan.ok()) << Describe(plan.status());
  rpb::IssueCouponRequest other = plan->coupons[0];
  other.set_template_id("bt-coupon-50");
  ASSERT_TRUE(rewards_.benefits->IssueCoupon(other).ok());

  const absl::Status retried = issuer_->Issue(r);
  EXPECT_EQ(ReasonOf(retried), common::IDEMPOTENCY_KEY_REUSED) << Describe(retried);
  const rpb::Account points = Account(rpb::POINTS, rpb::CUSTOMER, "holder");
  EXPECT_EQ(points.debits_pending(), 800);
  EXPECT_EQ(points.balance(), 800);
  EXPECT_TRUE(LedgerIntact());
}

// PENDING participations the sweep cannot complete (here: their reward cannot be priced, for
// good) no longer fill every sweep: each failed attempt is recorded and the row waits, with a
// growing delay, so newer recoverable participations behind them are completed.
TEST_F(ParticipationIntegrationTest, TheRecoverySweepGetsPastParticipationsItCannotComplete) {
  const std::string id = Online(Coupon("Sweep"));
  ASSERT_FALSE(id.empty());
  ActivateCoupon("bt-coupon-50", 5, 5000);
  for (int i = 0; i < 3; ++i) {
    pb::Participation p;
    p.set_id("par_stuck" + std::to_string(i));
    p.set_campaign_id(id);
    p.set_org_id("bank-a");
    p.set_campaign_type(pb::COUPON_CLAIM);
    p.set_campaign_version(1);
    p.set_customer_id("stuck-" + std::to_string(i));
    p.set_customer_org_id("bank-a");
    p.set_channel("mobile_banking");
    p.set_idempotency_key("stuck-" + std::to_string(i));
    p.set_status(pb::PARTICIPATION_PENDING);
    p.set_ledger_request_id("p:stuck-" + std::to_string(i));
    pb::GrantedReward* reward = p.add_rewards();
    reward->set_benefit_template_id("bt-retired-long-ago");
    reward->set_quantity(1);
    ASSERT_TRUE(pg::WithTransaction(*pool_, [&](pqxx::work& tx) {
                  tx.exec_params(
                      "INSERT INTO participations (id, campaign_id, idempotency_key, "
                      "request_hash, customer_id, customer_org, channel, campaign_version, "
                      "status, counters, body, created_at) VALUES ($1, $2, $3, 'h', $4, "
                      "'bank-a', 'mobile_banking', 1, 'PENDING', '{}', $5::jsonb, "
                      "now() - interval '1 hour')",
                      p.id(), id, p.idempotency_key(), p.customer_id(), ToJson(p));
                  return absl::OkStatus();
                }).ok());
  }
  FlakyIssuer down(*issuer_, FlakyIssuer::Mode::kDown);
  auto interrupted = ServiceWith(down)->Participate(Request(id, "cust-s1", "key-s1"));
  EXPECT_EQ(interrupted.status().code(), absl::StatusCode::kUnavailable)
      << Describe(interrupted.status());
  ASSERT_EQ(StatusOf(id, "key-s1"), "PENDING");

  int completed = 0;
  for (int sweep = 0; sweep < 3; ++sweep) {
    auto done = participation_->RecoverPending(absl::ZeroDuration(), /*limit=*/3);
    ASSERT_TRUE(done.ok()) << Describe(done.status());
    completed += *done;
  }
  EXPECT_EQ(completed, 1);
  EXPECT_EQ(StatusOf(id, "key-s1"), "GRANTED");
  EXPECT_EQ(WalletCoupons("cust-s1").size(), 1u);
  // The stuck ones stay PENDING for an operator, each tried once in these three sweeps and
  // deferred, not retried at every sweep.
  EXPECT_EQ(Scalar("SELECT count(*) FROM participations WHERE status = 'PENDING'"), 3);
  EXPECT_EQ(Scalar("SELECT count(*) FROM participations WHERE status = 'PENDING' AND "
                   "recovery_attempts = 1 AND next_recovery_at > now()"),
            3);
}

}  // namespace
}  // namespace mkt::campaigns
