// Asset-growth tasks (资产提升, issue 8 item 6) end to end in process: the campaigns service
// (configuration and participation gRPC APIs, its own fresh database) enrols customers with a
// baseline, the asset-growth consumer reads asset_balance business events from a fresh topic on
// the real Kafka broker, and tiers are granted through a real rewards service (Ledger and Benefits
// gRPC APIs, its own fresh database) with the benefits issuer. Checks that each tier reaches the
// ledger exactly once — with events published again and out of order, and after a grant whose
// outcome was lost — that nothing is granted below the threshold or to customers not enrolled,
// that customers of two member banks sharing a customer id never share balances or tiers, and
// that the ledger stays consistent after every scenario. Also checks that the migration keying
// balances by the customer's bank (V005) carries a V004 database's rows over.
#include <algorithm>
#include <atomic>
#include <functional>
#include <random>
#include <thread>

#include "absl/time/civil_time.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "libs/core/ids.h"
#include "libs/core/status.h"
#include "libs/core/worker_pool.h"
#include "libs/kafka/kafka.h"
#include "libs/kafka/outbox.h"
#include "libs/pg/migrations.h"
#include "libs/pg/pool.h"
#include "libs/rpc/client.h"
#include "libs/rpc/server.h"
#include "libs/testing/testing.h"
#include "marketing/campaigns/v1/participation.grpc.pb.h"
#include "marketing/events/v1/business_event.pb.h"
#include "marketing/rewards/v1/ledger.grpc.pb.h"
#include "services/campaigns/asset_growth.h"
#include "services/campaigns/asset_growth_service.h"
#include "services/campaigns/asset_growth_store.h"
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
namespace epb = ::marketing::events::v1;
using tenancy::Actor;
using tenancy::Role;

constexpr int64_t kBudget = 1'000'000'000;

std::string Describe(const absl::Status& s) {
  return s.ToString() + " [" + ReasonName(ReasonOf(s)) + "]";
}

// The real issuer behind a switch that makes the rewards service "unreachable" (the outcome of a
// grant is unknown, as after a crash or a timeout).
class SwitchableIssuer final : public RewardIssuer {
 public:
  explicit SwitchableIssuer(RewardIssuer& real) : real_(real) {}
  void SetDown(bool down) { down_ = down; }
  absl::Status Issue(const IssueRequest& request) override {
    if (down_) return absl::UnavailableError("rewards service unreachable");
    return real_.Issue(request);
  }

 private:
  RewardIssuer& real_;
  std::atomic<bool> down_{false};
};

// One asset_balance event as a core system sends it.
struct Balance {
  std::string id;
  std::string customer;
  absl::CivilDay day;
  int64_t balance_fen;
  absl::Time occurred_at;
  // The org serving the customer (member bank or branch): with `customer`, who the customer is.
  std::string org = "bank-a";
};

class AssetGrowthIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The rewards service.
    const absl::Status started = rewards_.Start(
        rewards_db_.dsn(), {.pool_size = 8,
                            .workers = 8,
                            .queue = 1000,
                            .qr_key = "asset-growth-test-qr-key-of-32-bytes-or-more"});
    ASSERT_TRUE(started.ok()) << started;
    ledger_stub_ = rpb::Ledger::NewStub(rewards_.channel);

    // The campaigns service.
    auto cpool = pg::Pool::Connect({.dsn = campaigns_db_.dsn(), .size = 8});
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
    real_issuer_ = NewBenefitsRewardIssuer(rewards_.channel, rewards_.channel, absl::Seconds(20));
    issuer_ = std::make_unique<SwitchableIssuer>(*real_issuer_);
    reserve_ = std::make_unique<GroupCommitter>(*pool_, GroupCommitter::Options{});
    finish_ = std::make_unique<GroupCommitter>(*pool_, GroupCommitter::Options{});
    participation_store_ = std::make_unique<PgParticipationStore>(*pool_, *reserve_, *finish_);
    participation_ = std::make_unique<ParticipationService>(
        *store_, *participation_store_, membership_, *reference_.benefits, *issuer_, SystemClock(),
        ParticipationOptions{.customer_rate_per_s = 0, .campaign_cache_ttl = absl::Seconds(1)});
    workers_ = std::make_unique<WorkerPool>("campaigns-test", 4, 1000);
    participation_workers_ = std::make_unique<WorkerPool>("participation-test", 8, 1000);
    grpc_service_ = NewCampaignsGrpcService(*service_, *workers_);
    participation_grpc_ = NewParticipationsGrpcService(*participation_, *participation_workers_);
    auto server = rpc::Server::Start(
        {.service_name = "campaigns_test", .address = "127.0.0.1:0", .access_log = false},
        {grpc_service_.get(), participation_grpc_.get()});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    const std::string target = "127.0.0.1:" + std::to_string(server_->port());
    client_ = std::make_unique<test::CampaignsClient>(target);
    stub_ = pb::Participations::NewStub(rpc::Connect(target));
    ASSERT_TRUE(client_->CreateOrg(root_, "bank-a", "Bank A").ok());

    // The asset-growth consumer on a fresh topic of the real broker.
    growth_store_ = std::make_unique<PgAssetGrowthStore>(*pool_);
    growth_ = std::make_unique<AssetGrowthService>(
        *store_, *growth_store_, *reference_.benefits, *issuer_, SystemClock(),
        AssetGrowthOptions{.retry_after = absl::ZeroDuration(),
                           .campaign_cache_ttl = absl::Milliseconds(100)});
    topic_ = testing::NewTopic("asset-growth-events", 3);
    auto producer = kafka::Producer::Create(
        {.bootstrap_servers = testing::KafkaBootstrap(), .client_id = "asset-growth-test"});
    ASSERT_TRUE(producer.ok()) << producer.status();
    producer_ = *std::move(producer);
    auto consumer = kafka::Consumer::Create(
        {.client = {.bootstrap_servers = testing::KafkaBootstrap(),
                    .client_id = "asset-growth-test"},
         .group_id = "asset-growth-test-" + RandomHex(6),
         .topics = {topic_},
         .metrics_name = "asset_growth_integration_test",
         .dead_letter_topic = testing::NewTopic("asset-growth-dead-letters", 1)},
        producer_.get());
    ASSERT_TRUE(consumer.ok()) << consumer.status();
    consumer_ = *std::move(consumer);
    consumer_thread_ = std::thread([this] {
      consumer_->Run([this](const kafka::IncomingMessage& m) { return growth_->HandleMessage(m); });
    });
  }

  void TearDown() override {
    if (consumer_) consumer_->Stop();
    if (consumer_thread_.joinable()) consumer_thread_.join();
    consumer_.reset();
    if (server_) server_->Shutdown(absl::Seconds(1));
    participation_workers_.reset();
    workers_.reset();
    reserve_.reset();
    finish_.reset();
    rewards_.Stop();
  }

  // A running task of bank A (or B): 100 points from 2,000 yuan of growth, 500 more from 10,000
  // yuan, baseline over 30 days. Its budget is funded.
  std::string OnlineTask(const std::string& bank = "bank-a") {
    const bool a = bank == "bank-a";
    const Actor& planner = a ? planner_a_ : planner_b_;
    const Actor& approver = a ? approver_a_ : approver_b_;
    pb::CampaignConfig c =
        test::CompleteCoupon("Grow your savings", absl::Now() - absl::Minutes(1),
                             absl::Now() + absl::Hours(48), a ? "seg-a1" : "seg-b1");
    c.set_type(pb::ASSET_GROWTH_TASK);
    c.clear_rewards();
    c.set_baseline_days(30);
    for (auto [min, points] : {std::pair<int64_t, int64_t>{200'000, 100}, {1'000'000, 500}}) {
      pb::GrowthTier* tier = c.add_growth_tiers();
      tier->set_min_growth_fen(min);
      pb::RewardItem* reward = tier->add_rewards();
      reward->set_benefit_template_id("bt-points-100");
      reward->set_kind(pb::REWARD_KIND_POINTS);
      reward->set_quantity(points);
    }
    auto created = client_->Create(planner, c);
    EXPECT_TRUE(created.ok()) << Describe(created.status());
    if (!created.ok()) return "";
    const std::string id = created->id();
    EXPECT_TRUE(client_->Submit(planner, id).ok());
    EXPECT_TRUE(client_->Approve(approver, id).ok());
    auto published = client_->Publish(planner, id);
    EXPECT_TRUE(published.ok()) << Describe(published.status());
    EXPECT_TRUE(service_->AdvanceDue().ok());
    auto got = client_->Get(planner, id);
    EXPECT_TRUE(got.ok() && got->state() == pb::ONLINE);
    rpb::FundRequest r;
    r.set_request_id("fund-" + RandomHex(8));
    r.set_org_id(bank);
    r.set_asset(rpb::BUDGET_FEN);
    r.set_owner_id(id);
    r.set_amount(kBudget);
    grpc::ClientContext ctx;
    rpc::PrepareClientContext(ctx, absl::Seconds(10), "");
    rpb::FundResponse resp;
    grpc::Status s = ledger_stub_->Fund(&ctx, r, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return id;
  }

  void Publish(const std::vector<Balance>& balances) {
    std::vector<kafka::OutgoingMessage> out;
    for (const Balance& b : balances) {
      epb::BusinessEvent e;
      e.set_source("core-banking");
      e.set_source_event_id(b.id);
      e.set_event_type("asset_balance");
      e.set_customer_id(b.customer);
      e.set_org_id(b.org);
      e.mutable_occurred_at()->set_seconds(absl::ToUnixSeconds(b.occurred_at));
      (*e.mutable_attributes())["balance_fen"] = std::to_string(b.balance_fen);
      (*e.mutable_attributes())["as_of_date"] = absl::FormatCivilTime(b.day);
      auto envelope = kafka::MakeEnvelope("events.BusinessEvent", b.org, "", e);
      out.push_back({topic_, b.customer, envelope.SerializeAsString(), {}});
    }
    ASSERT_TRUE(producer_->Publish(out, absl::Seconds(10)).ok());
  }

  // Publishes a marker balance of `customer` for a day long before any task and waits until it is
  // stored: messages of one customer share a partition, so everything published for the customer
  // before it has been handled too.
  void Drain(const std::string& customer, const std::string& bank = "bank-a") {
    static int n = 0;
    const absl::CivilDay marker_day = today_ - 400 - (++n);
    Publish({{"marker-" + RandomHex(6), customer, marker_day, 1,
              absl::Now() - absl::Hours(24 * 400), bank}});
    const std::string sql = "SELECT count(*) FROM asset_balances WHERE customer_bank = '" + bank +
                            "' AND customer_id = '" + customer + "' AND day = '" +
                            absl::FormatCivilTime(marker_day) + "'";
    ASSERT_TRUE(WaitFor([&] { return Scalar(sql) == 1; })) << "marker of " << customer;
  }

  bool WaitFor(const std::function<bool()>& done, absl::Duration timeout = absl::Seconds(30)) {
    const absl::Time until = absl::Now() + timeout;
    while (absl::Now() < until) {
      if (done()) return true;
      absl::SleepFor(absl::Milliseconds(50));
    }
    return done();
  }

  int64_t Scalar(const std::string& sql) {
    int64_t v = -1;
    EXPECT_TRUE(pg::WithTransaction(*pool_, [&](pqxx::work& tx) {
                  v = tx.exec(sql)[0][0].as<int64_t>();
                  return absl::OkStatus();
                }).ok());
    return v;
  }

  int64_t LedgerBalance(rpb::Asset asset, rpb::OwnerKind kind, const std::string& owner,
                        const std::string& bank = "bank-a") {
    rpb::GetAccountRequest r;
    r.mutable_ref()->set_org_id(bank);
    r.mutable_ref()->set_asset(asset);
    r.mutable_ref()->set_owner_kind(kind);
    r.mutable_ref()->set_owner_id(owner);
    grpc::ClientContext ctx;
    rpc::PrepareClientContext(ctx, absl::Seconds(10), "");
    rpb::Account account;
    grpc::Status s = ledger_stub_->GetAccount(&ctx, r, &account);
    return s.ok() ? account.balance() : 0;
  }
  int64_t Points(const std::string& customer, const std::string& bank = "bank-a") {
    return LedgerBalance(rpb::POINTS, rpb::CUSTOMER, customer, bank);
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

  absl::StatusOr<pb::Participation> Participate(const std::string& campaign,
                                                const std::string& customer, const std::string& key,
                                                const std::string& customer_org = "bank-a") {
    pb::ParticipateRequest r;
    r.set_campaign_id(campaign);
    r.set_customer_id(customer);
    r.set_customer_org_id(customer_org);
    r.set_channel("mobile_banking");
    r.set_idempotency_key(key);
    grpc::ClientContext ctx;
    rpc::PrepareClientContext(ctx, absl::Seconds(30), "");
    pb::Participation out;
    grpc::Status s = stub_->Participate(&ctx, r, &out);
    if (!s.ok()) return rpc::FromGrpcStatus(s);
    return out;
  }

  pb::EligibleCampaign Eligible(const std::string& campaign, const std::string& customer,
                                const std::string& customer_org = "bank-a") {
    pb::ListEligibleRequest r;
    r.set_customer_id(customer);
    r.set_customer_org_id(customer_org);
    r.set_channel("mobile_banking");
    r.set_explain(true);
    grpc::ClientContext ctx;
    rpc::PrepareClientContext(ctx, absl::Seconds(10), "");
    pb::ListEligibleResponse resp;
    grpc::Status s = stub_->ListEligible(&ctx, r, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    for (const auto& e : resp.campaigns()) {
      if (e.campaign_id() == campaign) return e;
    }
    ADD_FAILURE() << "campaign " << campaign << " not listed for " << customer;
    return {};
  }

  int64_t Grants(const std::string& customer, const std::string& state) {
    return Scalar("SELECT count(*) FROM asset_growth_grants WHERE customer_id = '" + customer +
                  "' AND state = '" + state + "'");
  }
  // By enrolment, for customers whose id another bank's customer shares.
  int64_t GrantsOf(const std::string& participation, const std::string& state) {
    return Scalar("SELECT count(*) FROM asset_growth_grants WHERE participation_id = '" +
                  participation + "' AND state = '" + state + "'");
  }
  int64_t GrowthOf(const std::string& participation) {
    return Scalar("SELECT growth_fen FROM asset_growth_enrolments WHERE participation_id = '" +
                  participation + "'");
  }
  int64_t Growth(const std::string& customer) {
    return Scalar(
        "SELECT coalesce(max(growth_fen), -1) FROM asset_growth_enrolments WHERE customer_id = '" +
        customer + "'");
  }

  const Actor root_{"fed", "root", {Role::kAdmin}};
  const Actor planner_a_{"bank-a", "alice", {Role::kPlanner}};
  const Actor approver_a_{"bank-a", "bob", {Role::kApprover}};
  const Actor planner_b_{"bank-b", "carol", {Role::kPlanner}};
  const Actor approver_b_{"bank-b", "dave", {Role::kApprover}};
  const absl::CivilDay today_ = ChinaDay(absl::Now());
  testing::TestDatabase rewards_db_;
  testing::TestDatabase campaigns_db_;
  testing::InProcessRewards rewards_;
  std::unique_ptr<rpb::Ledger::Stub> ledger_stub_;
  std::unique_ptr<pg::Pool> pool_;
  ReferenceData reference_;
  std::unique_ptr<PgCampaignStore> store_;
  std::unique_ptr<CampaignService> service_;
  InMemoryMembership membership_;
  std::unique_ptr<RewardIssuer> real_issuer_;
  std::unique_ptr<SwitchableIssuer> issuer_;
  std::unique_ptr<GroupCommitter> reserve_;
  std::unique_ptr<GroupCommitter> finish_;
  std::unique_ptr<PgParticipationStore> participation_store_;
  std::unique_ptr<ParticipationService> participation_;
  std::unique_ptr<WorkerPool> workers_;
  std::unique_ptr<WorkerPool> participation_workers_;
  std::unique_ptr<grpc::Service> grpc_service_;
  std::unique_ptr<grpc::Service> participation_grpc_;
  std::unique_ptr<rpc::Server> server_;
  std::unique_ptr<test::CampaignsClient> client_;
  std::unique_ptr<pb::Participations::Stub> stub_;
  std::unique_ptr<PgAssetGrowthStore> growth_store_;
  std::unique_ptr<AssetGrowthService> growth_;
  std::string topic_;
  std::unique_ptr<kafka::Producer> producer_;
  std::unique_ptr<kafka::Consumer> consumer_;
  std::thread consumer_thread_;
};

// Enrolment records the baseline (the history's carried balance); growth below the first
// threshold grants nothing; crossing it grants tier 0 once; the same events again and older
// reports of the same day change nothing; crossing the second threshold grants tier 1 once; a
// customer who never enrolled gets nothing however much their balance grows.
TEST_F(AssetGrowthIntegrationTest, EachTierReachesTheLedgerExactlyOnce) {
  const std::string id = OnlineTask();
  ASSERT_FALSE(id.empty());
  const absl::Time now = absl::Now();

  // History: 1,000 yuan since 40 days ago, carried through the 30 baseline days.
  const Balance history{"h-1", "grower", today_ - 40, 100'000, now - absl::Hours(24 * 40)};
  Publish({history});
  Drain("grower");

  auto enrolled = Participate(id, "grower", "enrol-1");
  ASSERT_TRUE(enrolled.ok()) << Describe(enrolled.status());
  EXPECT_EQ(enrolled->status(), pb::ENROLLED);
  EXPECT_EQ(enrolled->campaign_type(), pb::ASSET_GROWTH_TASK);
  EXPECT_EQ(enrolled->asset_growth().baseline_fen(), 100'000);
  EXPECT_EQ(enrolled->asset_growth().baseline_days(), 30);
  EXPECT_EQ(enrolled->asset_growth().enrolled_on(), absl::FormatCivilTime(today_));
  EXPECT_EQ(enrolled->rewards_size(), 0);
  // A replay answers with the same enrolment; a second enrolment is refused.
  auto replay = Participate(id, "grower", "enrol-1");
  ASSERT_TRUE(replay.ok()) << Describe(replay.status());
  EXPECT_EQ(replay->id(), enrolled->id());
  EXPECT_EQ(replay->asset_growth().baseline_fen(), 100'000);
  auto again = Participate(id, "grower", "enrol-2");
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(ReasonOf(again.status()), ::marketing::common::v1::LIMIT_REACHED);
  // The enrolment is published like every participation.
  EXPECT_EQ(Scalar("SELECT count(*) FROM outbox WHERE topic = 'mkt.participations.v1'"), 1);

  // Today 2,500 yuan: growth 1,500 yuan, below the first tier's 2,000.
  const Balance b2{"b-2", "grower", today_, 250'000, now - absl::Hours(3)};
  Publish({b2});
  ASSERT_TRUE(WaitFor([&] { return Growth("grower") == 150'000; })) << Growth("grower");
  EXPECT_EQ(Grants("grower", "GRANTED") + Grants("grower", "PENDING"), 0);
  EXPECT_EQ(Points("grower"), 0);

  // A later report of today, 3,500 yuan: growth 2,500 yuan reaches tier 0.
  const Balance b3{"b-3", "grower", today_, 350'000, now - absl::Hours(2)};
  Publish({b3});
  ASSERT_TRUE(WaitFor([&] { return Grants("grower", "GRANTED") == 1; }));
  EXPECT_EQ(Points("grower"), 100);
  EXPECT_TRUE(LedgerIntact());

  // The same events again, and an older report of today arriving late: nothing changes.
  const Balance stale{"b-1", "grower", today_, 50'000, now - absl::Hours(5)};
  Publish({b3, stale, b2, history, b3});
  Drain("grower");
  EXPECT_EQ(
      Scalar("SELECT balance_fen FROM asset_balances WHERE customer_id = 'grower' AND day = '" +
             absl::FormatCivilTime(today_) + "'"),
      350'000);
  EXPECT_EQ(Growth("grower"), 250'000);
  EXPECT_EQ(Grants("grower", "GRANTED"), 1);
  EXPECT_EQ(Points("grower"), 100);

  // 12,000 yuan: growth 11,000 yuan reaches tier 1, granted once.
  const Balance b4{"b-4", "grower", today_, 1'200'000, now - absl::Hours(1)};
  Publish({b4});
  ASSERT_TRUE(WaitFor([&] { return Grants("grower", "GRANTED") == 2; }));
  EXPECT_EQ(Points("grower"), 600);
  // Everything again, shuffled.
  std::vector<Balance> all = {history, b2, b3, stale, b4, b4, b3};
  std::shuffle(all.begin(), all.end(), std::mt19937(42));
  Publish(all);
  Drain("grower");
  EXPECT_EQ(Grants("grower", "GRANTED"), 2);
  EXPECT_EQ(Points("grower"), 600);
  EXPECT_EQ(Growth("grower"), 1'100'000);
  // The budget paid the catalog's unit cost (100 fen) for each of the 600 points.
  EXPECT_EQ(LedgerBalance(rpb::BUDGET_FEN, rpb::CAMPAIGN, id), kBudget - 600 * 100);
  // A sweep re-evaluates and grants nothing more.
  ASSERT_TRUE(growth_->Sweep().ok());
  EXPECT_EQ(Points("grower"), 600);

  // What the customer sees: the participation with both tiers, the task enrolled in.
  pb::GetParticipationRequest get;
  get.set_campaign_id(id);
  get.set_idempotency_key("enrol-1");
  grpc::ClientContext ctx;
  pb::Participation stored;
  ASSERT_TRUE(stub_->GetParticipation(&ctx, get, &stored).ok());
  EXPECT_EQ(stored.status(), pb::ENROLLED);
  EXPECT_EQ(stored.asset_growth().growth_fen(), 1'100'000);
  EXPECT_EQ(stored.asset_growth().tiers_reached_size(), 2);
  EXPECT_EQ(stored.rewards_size(), 2);
  pb::EligibleCampaign listed = Eligible(id, "grower");
  EXPECT_TRUE(listed.enrolled());
  EXPECT_TRUE(listed.open());
  EXPECT_EQ(listed.type(), pb::ASSET_GROWTH_TASK);
  EXPECT_EQ(listed.asset_growth().baseline_fen(), 100'000);
  EXPECT_EQ(listed.asset_growth().tiers_reached_size(), 2);
  EXPECT_EQ(listed.growth_tiers_size(), 2);
  // The tier facts follow the enrolment's on mkt.participations.v1.
  EXPECT_EQ(Scalar("SELECT count(*) FROM outbox WHERE topic = 'mkt.participations.v1'"), 3);

  // A customer who never enrolled: a big jump in balance grants nothing.
  Publish({{"x-1", "bystander", today_ - 10, 10'000, now - absl::Hours(240)},
           {"x-2", "bystander", today_, 90'000'000, now - absl::Hours(1)}});
  Drain("bystander");
  EXPECT_EQ(Scalar("SELECT count(*) FROM asset_growth_enrolments WHERE customer_id = 'bystander'"),
            0);
  EXPECT_EQ(Grants("bystander", "GRANTED") + Grants("bystander", "PENDING"), 0);
  EXPECT_EQ(Points("bystander"), 0);
  pb::EligibleCampaign open = Eligible(id, "bystander");
  EXPECT_FALSE(open.enrolled());
  EXPECT_TRUE(open.open());
  EXPECT_EQ(open.remaining_total(), 1);
  EXPECT_TRUE(LedgerIntact());
}

// A grant whose outcome is lost (the rewards service unreachable when the tier is reached) stays
// marked PENDING; the sweep issues it again under the same request id and it lands exactly once,
// however often the sweep runs.
TEST_F(AssetGrowthIntegrationTest, AGrantLeftPendingIsCompletedOnceByTheSweep) {
  const std::string id = OnlineTask();
  ASSERT_FALSE(id.empty());
  auto enrolled = Participate(id, "saver", "enrol-saver");
  ASSERT_TRUE(enrolled.ok()) << Describe(enrolled.status());
  EXPECT_EQ(enrolled->asset_growth().baseline_fen(), 0);  // no history: 0

  issuer_->SetDown(true);
  Publish({{"s-1", "saver", today_, 300'000, absl::Now() - absl::Minutes(5)}});
  ASSERT_TRUE(WaitFor([&] { return Grants("saver", "PENDING") == 1; }));
  EXPECT_EQ(Points("saver"), 0);
  // Still down: the sweep leaves it pending.
  ASSERT_TRUE(growth_->Sweep().ok());
  EXPECT_EQ(Grants("saver", "PENDING"), 1);

  issuer_->SetDown(false);
  auto settled = growth_->Sweep();
  ASSERT_TRUE(settled.ok()) << settled.status();
  EXPECT_EQ(*settled, 1);
  EXPECT_EQ(Grants("saver", "GRANTED"), 1);
  EXPECT_EQ(Points("saver"), 100);
  // Issuing the same request again (a crash after the ledger applied it but before the mark was
  // settled) is answered idempotently by the ledger.
  ASSERT_TRUE(pg::WithTransaction(*pool_, [](pqxx::work& tx) {
                tx.exec("UPDATE asset_growth_grants SET state = 'PENDING'");
                return absl::OkStatus();
              }).ok());
  ASSERT_TRUE(growth_->Sweep().ok());
  ASSERT_TRUE(growth_->Sweep().ok());
  EXPECT_EQ(Grants("saver", "GRANTED"), 1);
  EXPECT_EQ(Points("saver"), 100);
  EXPECT_TRUE(LedgerIntact());
}

// A report whose occurred_at no clock can have (1e13 s overflows the stored timestamp) is
// refused permanently, naming occurred_at, so the consumer dead-letters it and goes on: the
// customer's next report is applied. Nanos out of range and times before 2000 or more than a
// day ahead are refused the same way.
TEST_F(AssetGrowthIntegrationTest, AnImpossibleOccurredAtIsRefusedAndTheConsumerGoesOn) {
  auto message = [&](const std::string& id, int64_t seconds, int32_t nanos) {
    epb::BusinessEvent e;
    e.set_source("core-banking");
    e.set_source_event_id(id);
    e.set_event_type("asset_balance");
    e.set_customer_id("clockless");
    e.set_org_id("bank-a");
    e.mutable_occurred_at()->set_seconds(seconds);
    e.mutable_occurred_at()->set_nanos(nanos);
    (*e.mutable_attributes())["balance_fen"] = "100";
    auto envelope = kafka::MakeEnvelope("events.BusinessEvent", "bank-a", "", e);
    return kafka::OutgoingMessage{topic_, "clockless", envelope.SerializeAsString(), {}};
  };
  const int64_t now = absl::ToUnixSeconds(absl::Now());
  for (auto [seconds, nanos] : std::vector<std::pair<int64_t, int32_t>>{
           {10'000'000'000'000, 0},
           {now, -1},
           {now, 1'000'000'000},
           {absl::ToUnixSeconds(absl::FromCivil(absl::CivilDay(1999, 12, 31), absl::UTCTimeZone())),
            0},
           {now + 2 * 86400, 0}}) {
    kafka::OutgoingMessage m = message("bad-" + std::to_string(seconds), seconds, nanos);
    kafka::IncomingMessage in;
    in.topic = m.topic;
    in.key = m.key;
    in.value = m.value;
    absl::Status s = growth_->HandleMessage(in);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << seconds << " " << nanos << ": " << s;
    EXPECT_TRUE(kafka::IsPermanent(s));
    EXPECT_EQ(FieldOf(s), "occurred_at") << s;
  }
  // A day of clock skew is accepted.
  kafka::IncomingMessage skewed;
  skewed.value = message("skewed", now + 3600, 0).value;
  EXPECT_TRUE(growth_->HandleMessage(skewed).ok());

  // Through the consumer: the bad report, then a good one of the same customer (same partition).
  ASSERT_TRUE(
      producer_->Publish({message("bad-consumed", 10'000'000'000'000, 0)}, absl::Seconds(10)).ok());
  Drain("clockless");
  EXPECT_EQ(Scalar("SELECT count(*) FROM asset_balances WHERE customer_id = 'clockless' AND "
                   "event_key LIKE '%bad%'"),
            0);
}

// Days without a report carry the last balance forward, so the average keeps moving as days
// pass (the periodic sweep evaluates without any new event), and only the window's days count:
// a balance reported for a day after the window's end is not averaged in.
TEST_F(AssetGrowthIntegrationTest, CarriedDaysCountAndTheWindowEndStopsTheAverage) {
  const std::string id = OnlineTask();  // ends 48 hours from now: its last day is today + 2
  ASSERT_FALSE(id.empty());
  const absl::Time now = absl::Now();
  Publish({{"st-0", "steady", today_ - 40, 100'000, now - absl::Hours(24 * 40)}});
  Drain("steady");
  auto enrolled = Participate(id, "steady", "enrol-steady");
  ASSERT_TRUE(enrolled.ok()) << Describe(enrolled.status());
  ASSERT_EQ(enrolled->asset_growth().baseline_fen(), 100'000);
  // Reported ahead: 5,000 yuan from tomorrow, 500,000 yuan the day after the window.
  Publish({{"st-1", "steady", today_ + 1, 500'000, now},
           {"st-2", "steady", today_ + 4, 50'000'000, now}});
  Drain("steady");
  // Today only (the future days are not counted yet): the carried 1,000 yuan, growth 0.
  EXPECT_EQ(Growth("steady"), 0);
  EXPECT_EQ(Points("steady"), 0);

  testing::ManualClock clock(now);
  AssetGrowthService later(*store_, *growth_store_, *reference_.benefits, *issuer_, clock,
                           AssetGrowthOptions{.retry_after = absl::ZeroDuration(),
                                              .campaign_cache_ttl = absl::ZeroDuration()});
  // Tomorrow, without any new event: average (1,000 + 5,000) / 2 = 3,000 yuan, growth 2,000
  // yuan: tier 0.
  clock.Advance(absl::Hours(24));
  ASSERT_TRUE(later.Sweep().ok());
  EXPECT_EQ(Growth("steady"), 200'000);
  EXPECT_EQ(Grants("steady", "GRANTED"), 1);
  EXPECT_EQ(Points("steady"), 100);
  // Four days on, the window has ended after today + 2: (1,000 + 5,000 + 5,000) / 3 yuan; the
  // 500,000 yuan of today + 4 would have reached tier 1 had it been counted.
  clock.Advance(absl::Hours(72));
  ASSERT_TRUE(later.Sweep().ok());
  EXPECT_EQ(Growth("steady"), 1'100'000 / 3 - 100'000);
  EXPECT_EQ(Grants("steady", "GRANTED"), 1);
  EXPECT_EQ(Points("steady"), 100);
  EXPECT_TRUE(LedgerIntact());
}

// A task an operator ends early stops measuring at its end: growth reported for the days after it
// grants no tier, by a balance event or by the sweep, even though the task's configured window runs
// on; what grew before the end is still evaluated in the final evaluation.
TEST_F(AssetGrowthIntegrationTest, AnEarlyEndStopsTheAverageAtTheEnd) {
  const std::string id = OnlineTask();  // its window runs 48 hours on
  ASSERT_FALSE(id.empty());
  const absl::Time now = absl::Now();
  Publish({{"q-0", "quitter", today_ - 40, 100'000, now - absl::Hours(24 * 40)}});
  Drain("quitter");
  auto enrolled = Participate(id, "quitter", "enrol-quitter");
  ASSERT_TRUE(enrolled.ok()) << Describe(enrolled.status());
  ASSERT_EQ(enrolled->asset_growth().baseline_fen(), 100'000);

  auto ended = client_->End(planner_a_, id);
  ASSERT_TRUE(ended.ok()) << Describe(ended.status());
  ASSERT_EQ(ended->state(), pb::ENDED);
  // 500,000 yuan from tomorrow, after the end: it would reach both tiers.
  Publish({{"q-1", "quitter", today_ + 1, 50'000'000, now}});
  Drain("quitter");

  testing::ManualClock clock(now);
  AssetGrowthService later(*store_, *growth_store_, *reference_.benefits, *issuer_, clock,
                           AssetGrowthOptions{.retry_after = absl::ZeroDuration(),
                                              .campaign_cache_ttl = absl::ZeroDuration()});
  clock.Advance(absl::Hours(24));
  ASSERT_TRUE(later.Sweep().ok());
  ASSERT_TRUE(later.EvaluateCustomer("bank-a", "quitter").ok());
  EXPECT_EQ(Grants("quitter", "GRANTED") + Grants("quitter", "PENDING"), 0);
  EXPECT_EQ(Points("quitter"), 0);
  EXPECT_EQ(Growth("quitter"), 0) << "measured past the end";
  EXPECT_TRUE(LedgerIntact());
}

// Decision 036: an approved extension of a running task moves the window end of the customers who
// enrolled before it, so the sweep keeps evaluating them until the new end (not only those who
// enrol afterwards); an edit still waiting for approval moves nothing.
TEST_F(AssetGrowthIntegrationTest, AnApprovedExtensionKeepsEarlierEnrolmentsInTheTask) {
  const std::string id = OnlineTask();
  ASSERT_FALSE(id.empty());
  auto enrolled = Participate(id, "early", "enrol-early");
  ASSERT_TRUE(enrolled.ok()) << Describe(enrolled.status());
  auto c = client_->Get(planner_a_, id);
  ASSERT_TRUE(c.ok()) << Describe(c.status());
  const absl::Time old_end = absl::FromUnixSeconds(c->live().end_time().seconds());
  const absl::Time new_end = old_end + absl::Hours(24 * 30);
  auto window_ends = [&](absl::Time ended_after) {
    std::vector<absl::Time> ends;
    auto active = growth_store_->ActiveEnrolments(ended_after, "", 100);
    EXPECT_TRUE(active.ok()) << active.status();
    for (const auto& e : active.value_or(std::vector<Enrolment>{})) ends.push_back(e.window_end);
    return ends;
  };
  ASSERT_EQ(window_ends(absl::Now()), std::vector<absl::Time>{old_end});

  pb::CampaignConfig extended = c->live();
  *extended.mutable_end_time() = test::Ts(new_end);
  c = client_->SaveStep(planner_a_, id, pb::STEP_BASICS, extended, c->revision());
  ASSERT_TRUE(c.ok()) << Describe(c.status());
  ASSERT_TRUE(client_->Submit(planner_a_, id).ok());
  EXPECT_EQ(window_ends(absl::Now()), std::vector<absl::Time>{old_end});
  ASSERT_TRUE(client_->Approve(approver_a_, id).ok());
  // A sweep three days after the old end, past its grace, still finds the early enrolment.
  EXPECT_EQ(window_ends(old_end + absl::Hours(73)), std::vector<absl::Time>{new_end});
  EXPECT_TRUE(LedgerIntact());
}

// Bank-a and bank-b each have a customer "twin" (one core-system id in two member banks), each
// enrolled in their own bank's task. Balances and enrolments are the customer's bank's: the other
// twin's history moves no baseline, their reports move no average and grant no tier (either way
// round), a branch of bank-a reports for bank-a's twin, the eligibility list shows each twin their
// own enrolment, and a report naming no valid org is refused without holding up the consumer.
TEST_F(AssetGrowthIntegrationTest, CustomersOfTwoBanksWithTheSameIdNeverShareBalancesOrTiers) {
  ASSERT_TRUE(client_->CreateOrg(root_, "bank-b", "Bank B").ok());
  membership_.SetOpen("seg-b1");
  const std::string task_a = OnlineTask("bank-a");
  const std::string task_b = OnlineTask("bank-b");
  ASSERT_FALSE(task_a.empty());
  ASSERT_FALSE(task_b.empty());
  const absl::Time now = absl::Now();

  // History: bank-a's twin 1,000 yuan, bank-b's twin 50,000 yuan, both since 40 days ago (kept
  // by customer id and day alone, bank-b's later report would replace bank-a's).
  Publish({{"ta-h", "twin", today_ - 40, 100'000, now - absl::Hours(24 * 40), "bank-a"},
           {"tb-h", "twin", today_ - 40, 5'000'000, now - absl::Hours(24 * 39), "bank-b"}});
  Drain("twin", "bank-a");
  auto a = Participate(task_a, "twin", "enrol-twin-a", "bank-a");
  ASSERT_TRUE(a.ok()) << Describe(a.status());
  EXPECT_EQ(a->asset_growth().baseline_fen(), 100'000);
  auto b = Participate(task_b, "twin", "enrol-twin-b", "bank-b");
  ASSERT_TRUE(b.ok()) << Describe(b.status());
  EXPECT_EQ(b->asset_growth().baseline_fen(), 5'000'000);
  EXPECT_EQ(Scalar("SELECT count(*) FROM asset_growth_enrolments WHERE customer_id = 'twin' AND "
                   "customer_org_id = customer_bank"),
            2);

  // Bank-b's twin reports 90,000 yuan today: growth 40,000 yuan, both of task B's tiers. Had it
  // counted for bank-a's twin (baseline 1,000 yuan), it would have granted both of task A's.
  Publish({{"tb-1", "twin", today_, 9'000'000, now - absl::Hours(2), "bank-b"}});
  ASSERT_TRUE(WaitFor([&] { return GrantsOf(b->id(), "GRANTED") == 2; }));
  EXPECT_EQ(GrowthOf(b->id()), 4'000'000);
  EXPECT_EQ(Points("twin", "bank-b"), 600);
  Drain("twin", "bank-a");
  ASSERT_TRUE(growth_->Sweep().ok());  // evaluates bank-a's twin on their own (carried) balance
  EXPECT_EQ(GrowthOf(a->id()), 0);
  EXPECT_EQ(GrantsOf(a->id(), "GRANTED") + GrantsOf(a->id(), "PENDING"), 0);
  EXPECT_EQ(Points("twin", "bank-a"), 0);

  // Vice versa, through a branch of bank-a and later in the day than bank-b's report: bank-a's
  // twin grows 2,500 yuan (tier 0 of task A); bank-b's twin keeps their own report of today.
  Publish({{"ta-1", "twin", today_, 350'000, now - absl::Hours(1), "bank-a.branch-01"}});
  ASSERT_TRUE(WaitFor([&] { return GrantsOf(a->id(), "GRANTED") == 1; }));
  EXPECT_EQ(GrowthOf(a->id()), 250'000);
  EXPECT_EQ(Points("twin", "bank-a"), 100);
  Drain("twin", "bank-b");
  ASSERT_TRUE(growth_->Sweep().ok());
  EXPECT_EQ(GrowthOf(b->id()), 4'000'000);
  EXPECT_EQ(GrowthOf(a->id()), 250'000);
  EXPECT_EQ(GrantsOf(a->id(), "GRANTED"), 1);
  EXPECT_EQ(GrantsOf(b->id(), "GRANTED"), 2);
  EXPECT_EQ(Points("twin", "bank-a"), 100);
  EXPECT_EQ(Points("twin", "bank-b"), 600);
  EXPECT_EQ(Scalar("SELECT count(*) FROM asset_balances WHERE customer_id = 'twin' AND day = '" +
                   absl::FormatCivilTime(today_) + "'"),
            2);

  // What each twin sees: their own enrolment and progress. A federation-wide list of tasks would
  // hold both campaigns; each twin is enrolled only in their own bank's.
  pb::EligibleCampaign listed_a = Eligible(task_a, "twin", "bank-a");
  EXPECT_TRUE(listed_a.enrolled());
  EXPECT_EQ(listed_a.asset_growth().baseline_fen(), 100'000);
  pb::EligibleCampaign listed_b = Eligible(task_b, "twin", "bank-b");
  EXPECT_TRUE(listed_b.enrolled());
  EXPECT_EQ(listed_b.asset_growth().baseline_fen(), 5'000'000);
  auto of_a = growth_store_->EnrolmentsIn("bank-a.branch-01", "twin", {task_a, task_b});
  ASSERT_TRUE(of_a.ok()) << of_a.status();
  ASSERT_EQ(of_a->size(), 1u);
  EXPECT_EQ((*of_a)[0].participation_id, a->id());
  EXPECT_EQ((*of_a)[0].customer_org_id, "bank-a");
  auto of_b = growth_store_->EnrolmentsIn("bank-b", "twin", {task_a});
  ASSERT_TRUE(of_b.ok()) << of_b.status();
  EXPECT_TRUE(of_b->empty());

  // A report naming no valid org belongs to nobody: refused (logged, not stored), and the
  // consumer goes on with the next message.
  Publish({{"tx-1", "twin", today_, 90'000'000, now, "Bank B!"},
           {"tx-2", "twin", today_, 90'000'000, now, ""}});
  Drain("twin", "bank-a");
  EXPECT_EQ(Scalar("SELECT count(*) FROM asset_balances WHERE event_key LIKE 'core-banking:tx-%'"),
            0);
  EXPECT_EQ(GrowthOf(a->id()), 250'000);
  EXPECT_EQ(GrowthOf(b->id()), 4'000'000);
  EXPECT_TRUE(LedgerIntact());
}

// V005 on a database that already had V004 data: enrolments take the customer's org from their
// participation (the campaign's org when that were missing), balances the bank of every
// participation of their customer id, and balances of ids never seen stay keyed to no bank; the
// store then reads and writes per bank.
TEST(AssetGrowthMigrationTest, KeysV004RowsByTheCustomersBank) {
  testing::TestDatabase db;
  auto connected = pg::Pool::Connect({.dsn = db.dsn(), .size = 2});
  ASSERT_TRUE(connected.ok()) << connected.status();
  std::unique_ptr<pg::Pool> pool = *std::move(connected);
  pg::MigrationSet through_v004 = CampaignsMigrations();
  std::erase_if(through_v004.migrations, [](const pg::Migration& m) { return m.version > 4; });
  ASSERT_EQ(through_v004.migrations.size(), 4u);
  ASSERT_TRUE(pg::ApplyMigrations(*pool, {&kafka::OutboxMigrations(), &through_v004}).ok());
  const absl::CivilDay day = ChinaDay(absl::Now()) - 1;
  const std::string d = "'" + absl::FormatCivilTime(day) + "'";
  ASSERT_TRUE(pg::WithTransaction(*pool, [&](pqxx::work& tx) {
                tx.exec(
                    "INSERT INTO orgs (id, parent_id, display_name) VALUES "
                    "('bank-a', 'fed', 'A'), ('bank-b', 'fed', 'B')");
                tx.exec(
                    "INSERT INTO campaigns (id, org_id, state, type, revision, body, created_at, "
                    "updated_at) VALUES "
                    "('cmp-a', 'bank-a', 'ONLINE', 'ASSET_GROWTH_TASK', 1, '{}', now(), now()), "
                    "('cmp-fed', 'fed', 'ONLINE', 'COUPON_CLAIM', 1, '{}', now(), now())");
                tx.exec(
                    "INSERT INTO participations (id, campaign_id, idempotency_key, request_hash, "
                    "customer_id, customer_org, channel, campaign_version, status, counters, body) "
                    "VALUES "
                    "('par-a', 'cmp-a', 'k1', 'h', 'c1', 'bank-a.branch-01', 'app', 1, 'ENROLLED', "
                    " '{}', '{}'), "
                    "('par-x', 'cmp-fed', 'k2', 'h', 'shared', 'bank-a', 'app', 1, 'GRANTED', "
                    " '{}', '{}'), "
                    "('par-y', 'cmp-fed', 'k3', 'h', 'shared', 'bank-b', 'app', 1, 'GRANTED', "
                    " '{}', '{}')");
                tx.exec(
                    "INSERT INTO asset_growth_enrolments (participation_id, campaign_id, org_id, "
                    "customer_id, enrolled_on, baseline_fen, baseline_days, window_end) VALUES "
                    "('par-a', 'cmp-a', 'bank-a', 'c1', " +
                    d +
                    ", 100, 30, now() + interval '1 day'), "
                    "('par-lost', 'cmp-a', 'bank-a', 'c3', " +
                    d + ", 0, 30, now() + interval '1 day')");
                tx.exec(
                    "INSERT INTO asset_growth_grants (participation_id, tier, campaign_id, "
                    "customer_id, request_id, tier_config, growth_fen, state) VALUES "
                    "('par-a', 0, 'cmp-a', 'c1', 'g:1', '{}', 1, 'PENDING')");
                tx.exec(
                    "INSERT INTO asset_balances (customer_id, day, balance_fen, as_of, event_key) "
                    "VALUES ('c1', " +
                    d + ", 100, now(), 'k:1'), ('shared', " + d +
                    ", 300, now(), 'k:3'), ('nobody', " + d + ", 400, now(), 'k:4')");
                return absl::OkStatus();
              }).ok());

  // Only V005 is applied: V001..V004 are recorded with their checksums.
  absl::Status migrated =
      pg::ApplyMigrations(*pool, {&kafka::OutboxMigrations(), &CampaignsMigrations()});
  ASSERT_TRUE(migrated.ok()) << migrated;
  auto rows = [&](const std::string& sql) {
    std::vector<std::string> out;
    EXPECT_TRUE(pg::WithTransaction(*pool, [&](pqxx::work& tx) {
                  out.clear();
                  for (const auto& row : tx.exec(sql)) out.push_back(row[0].as<std::string>());
                  return absl::OkStatus();
                }).ok());
    return out;
  };
  EXPECT_EQ(rows("SELECT participation_id || ' ' || customer_org_id || ' ' || customer_bank "
                 "FROM asset_growth_enrolments ORDER BY 1"),
            std::vector<std::string>({"par-a bank-a.branch-01 bank-a", "par-lost bank-a bank-a"}));
  EXPECT_EQ(rows("SELECT customer_bank || '/' || customer_id || ' ' || balance_fen "
                 "FROM asset_balances ORDER BY 1"),
            std::vector<std::string>(
                {"/nobody 400", "bank-a/c1 100", "bank-a/shared 300", "bank-b/shared 300"}));

  PgAssetGrowthStore store(*pool);
  auto balances = store.DailyBalances("bank-a.branch-01", "c1", day, day);
  ASSERT_TRUE(balances.ok()) << balances.status();
  ASSERT_EQ(balances->size(), 1u);
  EXPECT_EQ((*balances)[0].balance_fen, 100);
  auto elsewhere = store.DailyBalances("bank-b", "c1", day, day);
  ASSERT_TRUE(elsewhere.ok());
  EXPECT_TRUE(elsewhere->empty());
  // Bank-b's c1 gets a row of their own for the same day; bank-a's c1 keeps theirs.
  BalanceReport report{.customer_org_id = "bank-b",
                       .customer_id = "c1",
                       .day = day,
                       .balance_fen = 999,
                       .as_of = absl::Now(),
                       .event_key = "k:9"};
  auto recorded = store.RecordBalance(report);
  ASSERT_TRUE(recorded.ok()) << recorded.status();
  EXPECT_TRUE(*recorded);
  EXPECT_EQ((*store.DailyBalances("bank-a", "c1", day, day))[0].balance_fen, 100);
  EXPECT_EQ((*store.DailyBalances("bank-b", "c1", day, day))[0].balance_fen, 999);
  report.customer_org_id = "";
  EXPECT_EQ(store.RecordBalance(report).status().code(), absl::StatusCode::kInvalidArgument);
  auto enrolments = store.EnrolmentsOf("bank-a", "c1", absl::Now());
  ASSERT_TRUE(enrolments.ok()) << enrolments.status();
  ASSERT_EQ(enrolments->size(), 1u);
  EXPECT_EQ((*enrolments)[0].customer_org_id, "bank-a.branch-01");
  EXPECT_EQ((*enrolments)[0].tiers_marked, std::set<int>({0}));
  EXPECT_TRUE(store.EnrolmentsOf("bank-b", "c1", absl::Now())->empty());
  auto pending = store.PendingGrants(absl::Now() + absl::Hours(1), 10);
  ASSERT_TRUE(pending.ok()) << pending.status();
  ASSERT_EQ(pending->size(), 1u);
  EXPECT_EQ((*pending)[0].org_id, "bank-a");
}

}  // namespace
}  // namespace mkt::campaigns
