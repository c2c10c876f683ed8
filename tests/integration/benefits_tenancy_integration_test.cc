// The Benefits API re-checks the caller's org (issue 9, defence in depth; decision 011 "Tenancy of
// the customer-facing calls"), over real gRPC to the service in process on a fresh database:
// a sibling bank's coupon, redemption or QR token is answered exactly like a missing one and
// nothing changes; the owning bank, its branches and (for a federation coupon) any member bank
// may use it; the wallet never shows another bank's coupons; calls naming no actor are refused.
#include <functional>
#include <memory>
#include <string>

#include "absl/cleanup/cleanup.h"
#include "absl/synchronization/notification.h"
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
#include "libs/tenancy/tenancy.h"
#include "libs/testing/testing.h"
#include "marketing/rewards/v1/benefits.grpc.pb.h"
#include "services/rewards/benefits.h"
#include "services/rewards/benefits_grpc.h"
#include "services/rewards/fulfilment.h"
#include "services/rewards/ledger_service.h"
#include "services/rewards/payouts.h"
#include "services/rewards/pg_ledger_store.h"

namespace mkt::rewards {
namespace {

namespace cpb = ::marketing::common::v1;
using tenancy::Actor;

constexpr char kKey[] = "test-qr-signing-key-of-at-least-32-bytes!";
constexpr char kCustomer[] = "cust-1";

// What the gateway attaches for a channel of `org` (services/gateway/api.cc).
Actor Channel(const std::string& org) { return Actor{org, "channel:ch-" + org, {}}; }

std::string Describe(const absl::Status& s) {
  return s.ToString() + " [" + ReasonName(ReasonOf(s)) + "] field=" + FieldOf(s);
}

// Same code, message, reason and field: indistinguishable to the caller.
void ExpectSameAnswer(const absl::Status& got, const absl::Status& want) {
  EXPECT_EQ(got.code(), want.code()) << Describe(got);
  EXPECT_EQ(got.message(), want.message()) << Describe(got);
  EXPECT_EQ(ReasonOf(got), ReasonOf(want)) << Describe(got);
  EXPECT_EQ(FieldOf(got), FieldOf(want)) << Describe(got);
}

class BenefitsTenancyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pool = pg::Pool::Connect({.dsn = db_.dsn(), .size = 6});
    ASSERT_TRUE(pool.ok()) << pool.status();
    pool_ = *std::move(pool);
    ASSERT_TRUE(
        pg::ApplyMigrations(*pool_, {&kafka::OutboxMigrations(), &RewardsMigrations()}).ok());
    store_ = std::make_unique<PgLedgerStore>(*pool_, SystemClock());
    benefits_ = std::make_unique<Benefits>(
        *pool_, *store_, SystemClock(),
        BenefitsOptions{.qr_key = kKey, .wallet_cache_ttl = wallet_cache_ttl_});
    // Third-party benefits' commands only go to the outbox here (the adapter is not started).
    supplier_ = std::make_unique<KafkaSupplierAdapter>(KafkaSupplierOptions{});
    fulfilments_ = std::make_unique<Fulfilments>(*pool_, *benefits_, *supplier_, SystemClock(),
                                                 FulfilmentOptions{});
    payouts_ = std::make_unique<Payouts>(*pool_, *store_, SystemClock());
    workers_ = std::make_unique<WorkerPool>("benefits-tenancy", worker_threads_, max_queued_);
    grpc_ = NewBenefitsGrpcService(*benefits_, *payouts_, *workers_, fulfilments_.get());
    auto server = rpc::Server::Start(
        {.service_name = "benefits_tenancy", .address = "127.0.0.1:0", .access_log = false},
        {grpc_.get()});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    stub_ = pb::Benefits::NewStub(rpc::Connect("127.0.0.1:" + std::to_string(server_->port())));
    for (const char* org : {"fed", "bank-a", "bank-b", "bank-a.branch-01"}) {
      Activate(std::string("tpl-") + org, org);
    }
  }

  void TearDown() override {
    auto integrity = store_->CheckIntegrity();
    ASSERT_TRUE(integrity.ok()) << integrity.status();
    EXPECT_TRUE(integrity->ok()) << integrity->DebugString();
  }

  void Activate(const std::string& id, const std::string& org) {
    pb::BenefitTemplate t;
    t.set_id(id);
    t.set_org_id(org);
    t.set_type(pb::COUPON_CASH);
    t.set_name("cash " + org);
    t.set_face_value(500);
    t.set_total_stock(20);
    t.mutable_validity()->set_days_after_grant(7);
    ASSERT_TRUE(benefits_->CreateTemplate(t).ok());
    auto active = benefits_->ActivateTemplate(id);
    ASSERT_TRUE(active.ok()) << active.status();
  }

  // Issued in process (an internal grant): a coupon of org `org`'s template.
  pb::Coupon Issue(const std::string& org) {
    pb::IssueCouponRequest r;
    r.set_request_id("iss-" + std::to_string(++issued_));
    r.set_template_id("tpl-" + org);
    r.set_customer_id(kCustomer);
    auto c = benefits_->IssueCoupon(r);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *c : pb::Coupon();
  }

  // Calls `method` on the stub as `actor` (none when null).
  template <class Req, class Resp, class Method>
  absl::StatusOr<Resp> Call(const Actor* actor, Method method, const Req& req) {
    grpc::ClientContext ctx;
    rpc::PrepareClientContext(ctx, absl::Seconds(10), "");
    if (actor != nullptr) rpc::AttachActor(ctx, *actor);
    Resp resp;
    grpc::Status s = (stub_.get()->*method)(&ctx, req, &resp);
    if (!s.ok()) return rpc::FromGrpcStatus(s);
    return resp;
  }

  absl::StatusOr<pb::Redemption> Lock(const Actor& a, const std::string& code,
                                      const std::string& order) {
    pb::LockCouponRequest r;
    r.set_coupon_code(code);
    r.set_customer_id(kCustomer);
    r.mutable_order()->set_order_id(order);
    r.mutable_order()->set_amount_fen(10'000);
    r.mutable_order()->set_channel("mobile");
    return Call<pb::LockCouponRequest, pb::Redemption>(&a, &pb::Benefits::Stub::LockCoupon, r);
  }
  absl::StatusOr<pb::Redemption> Resolve(const Actor& a, const std::string& op,
                                         const std::string& id) {
    pb::RedemptionRequest r;
    r.set_redemption_id(id);
    auto m = op == "confirm"  ? &pb::Benefits::Stub::ConfirmRedemption
             : op == "cancel" ? &pb::Benefits::Stub::CancelRedemption
                              : &pb::Benefits::Stub::ReverseRedemption;
    return Call<pb::RedemptionRequest, pb::Redemption>(&a, m, r);
  }
  absl::StatusOr<pb::QrToken> Qr(const Actor& a, const std::string& code) {
    pb::IssueQrTokenRequest r;
    r.set_coupon_code(code);
    r.set_customer_id(kCustomer);
    return Call<pb::IssueQrTokenRequest, pb::QrToken>(&a, &pb::Benefits::Stub::IssueQrToken, r);
  }
  absl::StatusOr<pb::Redemption> RedeemQr(const Actor& a, const std::string& token) {
    pb::RedeemQrTokenRequest r;
    r.set_token(token);
    r.set_merchant_id("m-1");
    r.set_terminal_id("t-1");
    r.set_order_amount_fen(10'000);
    return Call<pb::RedeemQrTokenRequest, pb::Redemption>(&a, &pb::Benefits::Stub::RedeemQrToken,
                                                          r);
  }
  absl::StatusOr<pb::Wallet> Wallet(const Actor* a, const std::string& org) {
    pb::GetWalletRequest r;
    r.set_org_id(org);
    r.set_customer_id(kCustomer);
    return Call<pb::GetWalletRequest, pb::Wallet>(a, &pb::Benefits::Stub::GetWallet, r);
  }

  pb::CouponState StateOf(const std::string& code) {
    auto c = benefits_->GetCoupon(code);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? c->state() : pb::COUPON_STATE_UNSPECIFIED;
  }

  int64_t Count(const std::string& sql) {
    int64_t n = -1;
    EXPECT_TRUE(pg::WithTransaction(*pool_, [&](pqxx::work& tx) {
                  n = tx.exec(sql)[0][0].as<int64_t>();
                  return absl::OkStatus();
                }).ok());
    return n;
  }

  testing::TestDatabase db_;
  std::unique_ptr<pg::Pool> pool_;
  std::unique_ptr<PgLedgerStore> store_;
  // Set by a derived fixture's constructor to run the same service otherwise.
  absl::Duration wallet_cache_ttl_ = absl::ZeroDuration();
  // A bank's own traffic on three of its coupons: one locked (r1), one locked and confirmed
  // (r2), one with a QR token.
  struct Traffic {
    pb::Coupon locked, redeemed, fresh;
    pb::Redemption r1, r2;
    pb::QrToken token;
  };
  Traffic TrafficOf(const Actor& a, const std::function<pb::Coupon()>& issue) {
    Traffic t{.locked = issue(), .redeemed = issue(), .fresh = issue()};
    auto r1 = Lock(a, t.locked.code(), "o-1");
    EXPECT_TRUE(r1.ok()) << r1.status();
    auto r2 = Lock(a, t.redeemed.code(), "o-2");
    EXPECT_TRUE(r2.ok()) << r2.status();
    if (r2.ok()) {
      EXPECT_TRUE(Resolve(a, "confirm", r2->id()).ok());
    }
    auto token = Qr(a, t.fresh.code());
    EXPECT_TRUE(token.ok()) << token.status();
    t.r1 = r1.value_or(pb::Redemption());
    t.r2 = r2.value_or(pb::Redemption());
    t.token = token.value_or(pb::QrToken());
    return t;
  }

  // Every call of sibling `b` on `t` answers exactly as for a missing coupon or redemption.
  void ExpectSiblingSeesNone(const Actor& b, const Traffic& t, const absl::Status& missing_coupon) {
    ExpectSameAnswer(Lock(b, t.fresh.code(), "o-3").status(), missing_coupon);
    ExpectSameAnswer(Qr(b, t.fresh.code()).status(), missing_coupon);
    ExpectSameAnswer(Resolve(b, "confirm", t.r1.id()).status(), NoSuchRedemption(t.r1.id()));
    ExpectSameAnswer(Resolve(b, "cancel", t.r1.id()).status(), NoSuchRedemption(t.r1.id()));
    ExpectSameAnswer(Resolve(b, "reverse", t.r2.id()).status(), NoSuchRedemption(t.r2.id()));
    ExpectSameAnswer(RedeemQr(b, t.token.token()).status(), UnknownQrToken());
    pb::MarkCollectedRequest collect;
    collect.set_coupon_code(t.fresh.code());
    collect.set_terminal_id("t-1");
    collect.set_customer_id(kCustomer);
    ExpectSameAnswer(
        Call<pb::MarkCollectedRequest, pb::Coupon>(&b, &pb::Benefits::Stub::MarkCollected, collect)
            .status(),
        missing_coupon);
  }

  int worker_threads_ = 4;
  size_t max_queued_ = 1000;
  std::unique_ptr<Benefits> benefits_;
  std::unique_ptr<KafkaSupplierAdapter> supplier_;
  std::unique_ptr<Fulfilments> fulfilments_;
  std::unique_ptr<Payouts> payouts_;
  std::unique_ptr<WorkerPool> workers_;
  std::unique_ptr<grpc::Service> grpc_;
  std::unique_ptr<rpc::Server> server_;
  std::unique_ptr<pb::Benefits::Stub> stub_;
  int issued_ = 0;
};

TEST_F(BenefitsTenancyTest, SiblingBankGetsTheMissingAnswerAndChangesNothing) {
  const Actor a = Channel("bank-a");
  const Actor b = Channel("bank-b");
  // Bank-a's own traffic: one coupon locked, one redeemed, one untouched, and a QR token.
  const Traffic t = TrafficOf(a, [&] { return Issue("bank-a"); });
  ASSERT_FALSE(HasFailure());
  const int64_t events = Count("SELECT count(*) FROM coupon_events");
  const int64_t redemptions = Count("SELECT count(*) FROM redemptions");

  // What a missing coupon / redemption answers, through the same sibling channel.
  const absl::Status missing_coupon = Lock(b, "CNOSUCHCOUPON1", "o-9").status();
  ASSERT_EQ(missing_coupon.code(), absl::StatusCode::kNotFound) << Describe(missing_coupon);
  ExpectSameAnswer(Qr(b, "CNOSUCHCOUPON1").status(), missing_coupon);
  ExpectSameAnswer(Resolve(b, "confirm", "rdm-missing").status(), NoSuchRedemption("rdm-missing"));
  ASSERT_EQ(NoSuchRedemption("x").code(), absl::StatusCode::kNotFound);

  // Bank-b probing bank-a's ids.
  ExpectSiblingSeesNone(b, t, missing_coupon);
  // A grant naming bank-b may not draw on bank-a's template either.
  pb::IssueCouponRequest issue;
  issue.set_request_id("iss-b");
  issue.set_template_id("tpl-bank-a");
  issue.set_customer_id(kCustomer);
  ExpectSameAnswer(
      Call<pb::IssueCouponRequest, pb::Coupon>(&b, &pb::Benefits::Stub::IssueCoupon, issue)
          .status(),
      NoSuchTemplate("tpl-bank-a"));

  // Nothing moved.
  EXPECT_EQ(StateOf(t.locked.code()), pb::COUPON_LOCKED);
  EXPECT_EQ(StateOf(t.redeemed.code()), pb::COUPON_REDEEMED);
  EXPECT_EQ(StateOf(t.fresh.code()), pb::COUPON_ISSUED);
  EXPECT_EQ(Count("SELECT count(*) FROM coupon_events"), events);
  EXPECT_EQ(Count("SELECT count(*) FROM redemptions"), redemptions);
  EXPECT_EQ(Count("SELECT count(*) FROM coupons WHERE issue_request_id = 'iss-b'"), 0);

  // ...and bank-a can still finish all of it: the refusals were not side effects.
  EXPECT_TRUE(Resolve(a, "cancel", t.r1.id()).ok());
  EXPECT_TRUE(Resolve(a, "reverse", t.r2.id()).ok());
  auto used = RedeemQr(a, t.token.token());
  EXPECT_TRUE(used.ok()) << used.status();
  EXPECT_EQ(StateOf(t.fresh.code()), pb::COUPON_REDEEMED);
}

TEST_F(BenefitsTenancyTest, TheOwningBankAndItsBranchesUseTheBanksCoupons) {
  const pb::Coupon c1 = Issue("bank-a");
  const pb::Coupon c2 = Issue("bank-a");
  // A branch channel of bank-a: lock, confirm, reverse.
  const Actor branch = Channel("bank-a.branch-01");
  auto r = Lock(branch, c1.code(), "o-1");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(Resolve(branch, "confirm", r->id()).ok());
  EXPECT_TRUE(Resolve(branch, "reverse", r->id()).ok());
  EXPECT_EQ(StateOf(c1.code()), pb::COUPON_ISSUED);
  // QR issued by the bank's channel, redeemed at the branch's counter.
  auto token = Qr(Channel("bank-a"), c2.code());
  ASSERT_TRUE(token.ok()) << token.status();
  auto used = RedeemQr(branch, token->token());
  ASSERT_TRUE(used.ok()) << used.status();
  EXPECT_EQ(StateOf(c2.code()), pb::COUPON_REDEEMED);

  // A branch's own coupon: its bank covers it, a sibling branch does not.
  const pb::Coupon own = Issue("bank-a.branch-01");
  auto by_bank = Lock(Channel("bank-a"), own.code(), "o-2");
  ASSERT_TRUE(by_bank.ok()) << by_bank.status();
  EXPECT_TRUE(Resolve(Channel("bank-a"), "cancel", by_bank->id()).ok());
  const absl::Status sibling = Lock(Channel("bank-a.branch-02"), own.code(), "o-3").status();
  EXPECT_EQ(sibling.code(), absl::StatusCode::kNotFound) << Describe(sibling);
  EXPECT_EQ(StateOf(own.code()), pb::COUPON_ISSUED);
}

TEST_F(BenefitsTenancyTest, AFederationCouponIsUsableThroughAnyMemberBank) {
  const pb::Coupon fed1 = Issue("fed");
  const pb::Coupon fed2 = Issue("fed");
  auto r = Lock(Channel("bank-a"), fed1.code(), "o-1");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(Resolve(Channel("bank-a"), "confirm", r->id()).ok());
  EXPECT_EQ(StateOf(fed1.code()), pb::COUPON_REDEEMED);
  auto token = Qr(Channel("bank-b.branch-07"), fed2.code());
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_TRUE(RedeemQr(Channel("bank-b"), token->token()).ok());
  // The platform itself sees everything.
  auto as_system = Resolve(tenancy::SystemActor("test"), "reverse", r->id());
  EXPECT_TRUE(as_system.ok()) << as_system.status();
}

// A bank's campaign granting a federation template gives the coupon to the bank (holder_org_id):
// the federation's template is in a sibling bank's lineage, the coupon is not. Through the sibling
// every call on it, its redemptions, its QR token and its fulfilment answers as for a missing one
// and nothing changes; through the bank (and the federation) it works.
TEST_F(BenefitsTenancyTest, ABanksCouponOfAFederationTemplateIsNotASiblingBanks) {
  pb::BenefitTemplate third_party;
  third_party.set_id("tpl-fed-3p");
  third_party.set_org_id("fed");
  third_party.set_type(pb::THIRD_PARTY);
  third_party.set_name("phone credit");
  third_party.set_supplier_id("telco-1");
  third_party.set_supplier_sku("topup-10");
  third_party.set_total_stock(5);
  third_party.mutable_validity()->set_days_after_grant(7);
  ASSERT_TRUE(benefits_->CreateTemplate(third_party).ok());
  ASSERT_TRUE(benefits_->ActivateTemplate(third_party.id()).ok());
  // Granted by bank-a's campaigns: the template's org is the federation, the holder bank-a.
  auto held_by_a = [&](const std::string& tpl) {
    pb::IssueCouponRequest r;
    r.set_request_id("iss-a-" + std::to_string(++issued_));
    r.set_template_id(tpl);
    r.set_customer_id(kCustomer);
    r.set_budget_org_id("bank-a");
    auto c = benefits_->IssueCoupon(r);
    EXPECT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c.ok() ? c->org_id() : "", "fed");
    return c.ok() ? *c : pb::Coupon();
  };
  const Actor a = Channel("bank-a");
  const Actor b = Channel("bank-b");
  const Traffic t = TrafficOf(a, [&] { return held_by_a("tpl-fed"); });
  const pb::Coupon benefit = held_by_a("tpl-fed-3p");
  ASSERT_FALSE(HasFailure());
  const int64_t events = Count("SELECT count(*) FROM coupon_events");
  const int64_t redemptions = Count("SELECT count(*) FROM redemptions");
  const int64_t transfers = Count("SELECT count(*) FROM transfers");

  auto fulfilment = [&](const Actor& who, const std::string& code) {
    pb::GetFulfilmentRequest r;
    r.set_coupon_code(code);
    return Call<pb::GetFulfilmentRequest, pb::Fulfilment>(&who, &pb::Benefits::Stub::GetFulfilment,
                                                          r);
  };
  const absl::Status missing_coupon = Lock(b, "CNOSUCHCOUPON1", "o-9").status();
  ASSERT_EQ(missing_coupon.code(), absl::StatusCode::kNotFound) << Describe(missing_coupon);
  const absl::Status missing_fulfilment = fulfilment(b, "CNOSUCHCOUPON1").status();
  ASSERT_EQ(missing_fulfilment.code(), absl::StatusCode::kNotFound) << Describe(missing_fulfilment);

  // Bank-b's channel on bank-a's coupons of the federation's template.
  ExpectSiblingSeesNone(b, t, missing_coupon);
  ExpectSameAnswer(fulfilment(b, benefit.code()).status(), missing_fulfilment);
  ExpectSameAnswer(fulfilment(Channel("bank-b.branch-01"), benefit.code()).status(),
                   missing_fulfilment);

  // Nothing moved.
  EXPECT_EQ(StateOf(t.locked.code()), pb::COUPON_LOCKED);
  EXPECT_EQ(StateOf(t.redeemed.code()), pb::COUPON_REDEEMED);
  EXPECT_EQ(StateOf(t.fresh.code()), pb::COUPON_ISSUED);
  EXPECT_EQ(Count("SELECT count(*) FROM coupon_events"), events);
  EXPECT_EQ(Count("SELECT count(*) FROM redemptions"), redemptions);
  EXPECT_EQ(Count("SELECT count(*) FROM transfers"), transfers);

  // The holding bank (and its branch, and the federation above it) see and use them.
  for (const Actor& who : {a, Channel("bank-a.branch-01"), Channel("fed")}) {
    auto seen = fulfilment(who, benefit.code());
    ASSERT_TRUE(seen.ok()) << Describe(seen.status());
    EXPECT_EQ(seen->coupon_code(), benefit.code());
  }
  EXPECT_TRUE(Resolve(Channel("bank-a.branch-01"), "cancel", t.r1.id()).ok());
  EXPECT_TRUE(Resolve(a, "reverse", t.r2.id()).ok());
  auto used = RedeemQr(a, t.token.token());
  EXPECT_TRUE(used.ok()) << Describe(used.status());
  EXPECT_EQ(StateOf(t.locked.code()), pb::COUPON_ISSUED);
  EXPECT_EQ(StateOf(t.redeemed.code()), pb::COUPON_ISSUED);
  EXPECT_EQ(StateOf(t.fresh.code()), pb::COUPON_REDEEMED);
}

TEST_F(BenefitsTenancyTest, TheWalletShowsOnlyTheCallersLineage) {
  const pb::Coupon mine_a = Issue("bank-a");
  const pb::Coupon mine_b = Issue("bank-b");
  const Actor a = Channel("bank-a");
  const Actor b = Channel("bank-b");

  auto at_b = Wallet(&b, "bank-b");
  ASSERT_TRUE(at_b.ok()) << at_b.status();
  int seen = 0;
  for (const auto& group : at_b->coupons()) {
    for (const auto& c : group.coupons()) {
      EXPECT_EQ(c.org_id(), "bank-b") << c.code();
      EXPECT_NE(c.code(), mine_a.code());
      ++seen;
    }
  }
  EXPECT_EQ(seen, 1);

  // Asking bank-b's channel for bank-a's wallet is refused outright, like the gateway does.
  const absl::Status refused = Wallet(&b, "bank-a").status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kPermissionDenied) << Describe(refused);
  EXPECT_EQ(FieldOf(refused), "org_id");

  // Bank-a's wallet, through bank-a and through its branch.
  for (const Actor& who : {a, Channel("bank-a.branch-01")}) {
    auto at_a = Wallet(&who, "bank-a");
    ASSERT_TRUE(at_a.ok()) << at_a.status();
    ASSERT_EQ(at_a->coupons_size(), 1) << at_a->DebugString();
    ASSERT_EQ(at_a->coupons(0).coupons_size(), 1);
    EXPECT_EQ(at_a->coupons(0).coupons(0).code(), mine_a.code());
  }

  // A payout for another bank's customer account is refused the same way; nothing is kept.
  pb::RequestPayoutRequest payout;
  payout.set_request_id("pay-1");
  payout.set_org_id("bank-a");
  payout.set_customer_id(kCustomer);
  payout.set_amount_fen(100);
  payout.set_bank_account("6222000011112222");
  const absl::Status p =
      Call<pb::RequestPayoutRequest, pb::Payout>(&b, &pb::Benefits::Stub::RequestPayout, payout)
          .status();
  EXPECT_EQ(p.code(), absl::StatusCode::kPermissionDenied) << Describe(p);
  EXPECT_EQ(Count("SELECT count(*) FROM payouts"), 0);
}

// With the wallet cache on (as the service runs), a wallet read moments ago is answered on gRPC's
// own thread, not a worker's, and only after the same tenancy checks as every other read.
class BenefitsTenancyCachedWalletTest : public BenefitsTenancyTest {
 protected:
  BenefitsTenancyCachedWalletTest() {
    wallet_cache_ttl_ = absl::Minutes(5);
    worker_threads_ = 1;
    max_queued_ = 1;
  }

  // Makes the one worker wait and fills the queue, so a call that needs a worker is turned away;
  // the returned function lets the worker go.
  std::function<void()> OccupyEveryWorker() {
    // Shared with the worker, which may still be waking up when the test returns.
    auto started = std::make_shared<absl::Notification>();
    auto release = std::make_shared<absl::Notification>();
    EXPECT_TRUE(workers_->TrySubmit([started, release] {
      started->Notify();
      release->WaitForNotification();
    }));
    started->WaitForNotification();
    EXPECT_TRUE(workers_->TrySubmit([] {}));
    return [release] { release->Notify(); };
  }

  // A GetWallets request of (org, customer) reads.
  static pb::GetWalletsRequest WalletsOf(
      const std::vector<std::pair<std::string, std::string>>& reads) {
    pb::GetWalletsRequest batch;
    for (const auto& [org, customer] : reads) {
      pb::GetWalletRequest* r = batch.add_reads();
      r->set_org_id(org);
      r->set_customer_id(customer);
    }
    return batch;
  }
};

TEST_F(BenefitsTenancyCachedWalletTest, ACachedWalletIsAnsweredWithoutAWorkerAfterTheSameChecks) {
  Issue("bank-a");
  const Actor a = Channel("bank-a");
  const Actor b = Channel("bank-b");
  auto first = Wallet(&a, "bank-a");  // from the database; now in memory
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->coupons_size(), 1);

  // The cached wallet is no way around the checks: another bank, or no actor, is refused as before.
  const absl::Status refused = Wallet(&b, "bank-a").status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kPermissionDenied) << Describe(refused);
  EXPECT_EQ(Wallet(nullptr, "bank-a").status().code(), absl::StatusCode::kUnauthenticated);

  // Every worker busy and the queue full: a read that needs the database is turned away...
  const absl::Cleanup unblock = OccupyEveryWorker();  // also when an ASSERT returns
  const absl::Status busy = Wallet(&b, "bank-b").status();
  EXPECT_EQ(busy.code(), absl::StatusCode::kResourceExhausted) << Describe(busy);
  // ...while the cached one is answered, to the bank and to its branch, as it was read.
  for (const Actor& who : {a, Channel("bank-a.branch-01")}) {
    auto again = Wallet(&who, "bank-a");
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(again->SerializeAsString(), first->SerializeAsString());
  }
}

int CouponsIn(const pb::Wallet& w) {
  int n = 0;
  for (const auto& group : w.coupons()) n += group.coupons_size();
  return n;
}

// GetWallets (the gateway's batched wallet reads, decision 029) answers each read as GetWallet
// would, cached or not, refused or not, under the same checks; a call without an actor or with
// too many reads is refused whole.
TEST_F(BenefitsTenancyCachedWalletTest, GetWalletsAnswersEachReadAsGetWalletWould) {
  Issue("bank-a");
  Issue("bank-b");
  const Actor a = Channel("bank-a");
  const Actor b = Channel("bank-b");
  ASSERT_TRUE(Wallet(&a, "bank-a").ok());  // cached now; the branch's wallet is not
  // Bank-b's wallet of the customer is cached too, read by bank-b: a cached wallet is no way
  // round the org check.
  ASSERT_TRUE(Wallet(&b, "bank-b").ok());
  const std::vector<std::pair<std::string, std::string>> reads = {{"bank-a", kCustomer},
                                                                  {"bank-b", kCustomer},
                                                                  {"bank-a", ""},
                                                                  {"bank-a.branch-01", kCustomer},
                                                                  {"bank-a", kCustomer}};
  const pb::GetWalletsRequest batch = WalletsOf(reads);
  auto answered = Call<pb::GetWalletsRequest, pb::GetWalletsResponse>(
      &a, &pb::Benefits::Stub::GetWallets, batch);
  ASSERT_TRUE(answered.ok()) << answered.status();
  ASSERT_EQ(answered->reads_size(), static_cast<int>(reads.size()));
  for (size_t i = 0; i < reads.size(); ++i) {
    const pb::WalletRead& got = answered->reads(static_cast<int>(i));
    auto alone = Call<pb::GetWalletRequest, pb::Wallet>(&a, &pb::Benefits::Stub::GetWallet,
                                                        batch.reads(static_cast<int>(i)));
    EXPECT_EQ(got.code(), static_cast<int>(alone.status().code())) << i << ": " << got.message();
    if (alone.ok()) {
      EXPECT_EQ(got.wallet().SerializeAsString(), alone->SerializeAsString()) << i;
    } else {
      EXPECT_EQ(got.error().reason(), ReasonOf(alone.status())) << i;
      EXPECT_EQ(got.error().field(), FieldOf(alone.status())) << i;
      EXPECT_EQ(got.message(), alone.status().message()) << i;
    }
  }
  EXPECT_EQ(answered->reads(0).code(), 0);
  EXPECT_EQ(CouponsIn(answered->reads(0).wallet()), 1);
  EXPECT_EQ(answered->reads(1).code(), static_cast<int>(absl::StatusCode::kPermissionDenied));
  EXPECT_EQ(answered->reads(1).error().field(), "org_id");
  EXPECT_EQ(answered->reads(2).code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(answered->reads(2).error().field(), "customer_id");
  EXPECT_EQ(answered->reads(3).code(), 0);

  const absl::Status anonymous = Call<pb::GetWalletsRequest, pb::GetWalletsResponse>(
                                     nullptr, &pb::Benefits::Stub::GetWallets, batch)
                                     .status();
  EXPECT_EQ(anonymous.code(), absl::StatusCode::kUnauthenticated) << Describe(anonymous);
  pb::GetWalletsRequest too_many;
  for (int i = 0; i < 257; ++i) *too_many.add_reads() = batch.reads(0);
  const absl::Status refused = Call<pb::GetWalletsRequest, pb::GetWalletsResponse>(
                                   &a, &pb::Benefits::Stub::GetWallets, too_many)
                                   .status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument) << Describe(refused);
  EXPECT_EQ(FieldOf(refused), "reads");
}

// Every worker busy and the queue full: the reads that need the database are refused each on its
// own, and the cached ones of the same call are still answered.
TEST_F(BenefitsTenancyCachedWalletTest, GetWalletsWithNoWorkerFreeStillAnswersTheCachedReads) {
  Issue("bank-a");
  const Actor a = Channel("bank-a");
  auto first = Wallet(&a, "bank-a");
  ASSERT_TRUE(first.ok()) << first.status();
  const absl::Cleanup unblock = OccupyEveryWorker();

  const pb::GetWalletsRequest batch =
      WalletsOf({{"bank-a", kCustomer}, {"bank-a.branch-01", kCustomer}});
  auto answered = Call<pb::GetWalletsRequest, pb::GetWalletsResponse>(
      &a, &pb::Benefits::Stub::GetWallets, batch);
  ASSERT_TRUE(answered.ok()) << answered.status();
  ASSERT_EQ(answered->reads_size(), 2);
  EXPECT_EQ(answered->reads(0).code(), 0) << answered->reads(0).message();
  EXPECT_EQ(answered->reads(0).wallet().SerializeAsString(), first->SerializeAsString());
  EXPECT_EQ(answered->reads(1).code(), static_cast<int>(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(answered->reads(1).error().reason(), cpb::DEPENDENCY_UNAVAILABLE);
}

class BenefitsTenancyRefreshedWalletTest : public BenefitsTenancyTest {
 protected:
  BenefitsTenancyRefreshedWalletTest() { wallet_cache_ttl_ = absl::Seconds(4); }
};

// A change made through another replica reaches this one's cache only by a read. A wallet polled
// past 3/4 of its TTL is answered from memory at once and read again behind the answer, so the
// change shows before the entry would have expired, and no call waited for the database.
TEST_F(BenefitsTenancyRefreshedWalletTest, APolledWalletIsReadAgainAheadOfItsExpiry) {
  Issue("bank-a");
  const Actor a = Channel("bank-a");
  const absl::Time read_at = absl::Now();
  auto first = Wallet(&a, "bank-a");
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(CouponsIn(*first), 1);

  PgLedgerStore other_store(*pool_, SystemClock());
  Benefits other(*pool_, other_store, SystemClock(),
                 BenefitsOptions{.qr_key = kKey, .wallet_cache_ttl = wallet_cache_ttl_});
  pb::IssueCouponRequest issue;
  issue.set_request_id("iss-other-replica");
  issue.set_template_id("tpl-bank-a");
  issue.set_customer_id(kCustomer);
  ASSERT_TRUE(other.IssueCoupon(issue).ok());

  // Younger than 3/4 of the TTL: answered from memory, without the other replica's coupon.
  auto cached = Wallet(&a, "bank-a");
  ASSERT_TRUE(cached.ok()) << cached.status();
  EXPECT_EQ(CouponsIn(*cached), 1);

  absl::SleepFor(read_at + wallet_cache_ttl_ * 3 / 4 + absl::Milliseconds(200) - absl::Now());
  // 3/4 of the TTL old: still the entry (nobody waits for the re-read)...
  auto answered = Wallet(&a, "bank-a");
  ASSERT_TRUE(answered.ok()) << answered.status();
  EXPECT_EQ(CouponsIn(*answered), 1);
  // ...and the re-read lands well before the entry would have expired.
  int seen = 1;
  while (seen == 1 && absl::Now() < read_at + wallet_cache_ttl_) {
    absl::SleepFor(absl::Milliseconds(20));
    auto polled = Wallet(&a, "bank-a");
    ASSERT_TRUE(polled.ok()) << polled.status();
    seen = CouponsIn(*polled);
  }
  EXPECT_EQ(seen, 2);
  EXPECT_LT(absl::Now(), read_at + wallet_cache_ttl_) << "the change showed only by expiry";
}

// A grant charges the budget of budget_org_id's campaign and the coupon is held in that org.
// A caller naming an actor may name only an org in its lineage: a federation template is in
// every bank's lineage, but bank-a's campaign budget and wallet are not in bank-b's.
TEST_F(BenefitsTenancyTest, AGrantChargesOnlyABudgetInTheCallersLineage) {
  pb::BenefitTemplate t;
  t.set_id("tpl-fed-cost");
  t.set_org_id("fed");
  t.set_type(pb::COUPON_CASH);
  t.set_name("federation cash");
  t.set_face_value(500);
  t.set_unit_cost_fen(300);
  t.set_total_stock(20);
  t.mutable_validity()->set_days_after_grant(7);
  ASSERT_TRUE(benefits_->CreateTemplate(t).ok());
  ASSERT_TRUE(benefits_->ActivateTemplate(t.id()).ok());
  pb::TransferSpec fund;
  fund.set_id("fund-camp-a");
  *fund.mutable_debit() = SystemAccount("bank-a", pb::BUDGET_FEN, pb::ROLE_FUNDING);
  *fund.mutable_credit() = CampaignBudgetAccount("bank-a", "camp-a");
  fund.set_amount(10'000);
  fund.set_code(pb::FUND);
  auto funded = store_->Apply({LinkedBatch{.batch_id = "fund-camp-a", .transfers = {fund}}});
  ASSERT_TRUE(funded.ok() && funded->at(0).ok());
  auto budget = [&] {
    return store_->GetAccount(CampaignBudgetAccount("bank-a", "camp-a"))->balance();
  };

  pb::IssueCouponRequest issue;
  issue.set_request_id("iss-cross");
  issue.set_template_id("tpl-fed-cost");
  issue.set_customer_id(kCustomer);
  issue.set_campaign_id("camp-a");
  issue.set_budget_org_id("bank-a");
  const Actor b = Channel("bank-b");
  const absl::Status refused =
      Call<pb::IssueCouponRequest, pb::Coupon>(&b, &pb::Benefits::Stub::IssueCoupon, issue)
          .status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kPermissionDenied) << Describe(refused);
  EXPECT_EQ(ReasonOf(refused), cpb::PERMISSION_DENIED) << Describe(refused);
  EXPECT_EQ(FieldOf(refused), "budget_org_id") << Describe(refused);
  // Nothing changed: bank-a's budget, the template's stock, bank-a's wallet.
  EXPECT_EQ(budget(), 10'000);
  EXPECT_EQ(Count("SELECT count(*) FROM coupons"), 0);
  const Actor a = Channel("bank-a");
  const Actor& a_channel = a;
  auto at_a = Wallet(&a, "bank-a");
  ASSERT_TRUE(at_a.ok()) << at_a.status();
  EXPECT_EQ(at_a->coupons_size(), 0);

  // Nor the federation's budget: a member bank uses the federation's templates, not its money
  // (the template's org pays when budget_org_id is empty).
  for (const std::string& payer : {std::string("fed"), std::string()}) {
    pb::IssueCouponRequest on_fed = issue;
    on_fed.set_request_id("iss-fed-" + payer);
    on_fed.set_budget_org_id(payer);
    const absl::Status not_yours = Call<pb::IssueCouponRequest, pb::Coupon>(
                                       &a_channel, &pb::Benefits::Stub::IssueCoupon, on_fed)
                                       .status();
    EXPECT_EQ(not_yours.code(), absl::StatusCode::kPermissionDenied) << Describe(not_yours);
    EXPECT_EQ(FieldOf(not_yours), "budget_org_id") << Describe(not_yours);
  }
  EXPECT_EQ(Count("SELECT count(*) FROM coupons"), 0);

  // Bank-a's own channel, and its branch, may grant on bank-a's budget; so may an internal caller
  // naming nobody.
  for (const Actor& who : {a, Channel("bank-a.branch-01")}) {
    issue.set_request_id("iss-" + who.org_id);
    auto granted =
        Call<pb::IssueCouponRequest, pb::Coupon>(&who, &pb::Benefits::Stub::IssueCoupon, issue);
    EXPECT_TRUE(granted.ok()) << Describe(granted.status());
  }
  issue.set_request_id("iss-internal");
  auto internal =
      Call<pb::IssueCouponRequest, pb::Coupon>(nullptr, &pb::Benefits::Stub::IssueCoupon, issue);
  EXPECT_TRUE(internal.ok()) << Describe(internal.status());
  EXPECT_EQ(budget(), 10'000 - 3 * 300);
  at_a = Wallet(&a, "bank-a");
  ASSERT_TRUE(at_a.ok()) << at_a.status();
  ASSERT_EQ(at_a->coupons_size(), 1);
  EXPECT_EQ(at_a->coupons(0).coupons_size(), 3);
}

TEST_F(BenefitsTenancyTest, CustomerCallsNamingNoActorAreRefusedButInternalGrantsAreNot) {
  const pb::Coupon c = Issue("bank-a");
  pb::LockCouponRequest lock;
  lock.set_coupon_code(c.code());
  lock.set_customer_id(kCustomer);
  lock.mutable_order()->set_order_id("o-1");
  lock.mutable_order()->set_amount_fen(10'000);
  const absl::Status s =
      Call<pb::LockCouponRequest, pb::Redemption>(nullptr, &pb::Benefits::Stub::LockCoupon, lock)
          .status();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated) << Describe(s);
  EXPECT_EQ(ReasonOf(s), cpb::CREDENTIALS_MISSING);
  const absl::Status w = Wallet(nullptr, "bank-a").status();
  EXPECT_EQ(w.code(), absl::StatusCode::kUnauthenticated) << Describe(w);
  EXPECT_EQ(StateOf(c.code()), pb::COUPON_ISSUED);

  // A grant from an internal caller that names nobody (decision 011) still works.
  pb::IssueCouponRequest issue;
  issue.set_request_id("iss-internal");
  issue.set_template_id("tpl-bank-a");
  issue.set_customer_id(kCustomer);
  auto granted =
      Call<pb::IssueCouponRequest, pb::Coupon>(nullptr, &pb::Benefits::Stub::IssueCoupon, issue);
  EXPECT_TRUE(granted.ok()) << granted.status();
}

}  // namespace
}  // namespace mkt::rewards
