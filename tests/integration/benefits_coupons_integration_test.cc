// Coupons against the real PostgreSQL (decision 011): issuing (budget + stock + holding in one
// linked batch), the checkout state machine (lock/confirm/cancel/reverse/timeout), real races
// (two checkouts on one coupon, two terminals on one QR token), the QR token's refusals, expiry,
// gift vouchers, the wallet, bad input, and the crash window between a coupon's commit and its
// ledger transfers. After every scenario: the ledger's CheckIntegrity, and the books explain the
// coupons (each customer's COUPON account holds exactly their ISSUED + LOCKED coupons).
#include <atomic>
#include <barrier>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "libs/core/status.h"
#include "libs/kafka/outbox.h"
#include "libs/pg/migrations.h"
#include "libs/pg/pool.h"
#include "libs/testing/testing.h"
#include "services/rewards/batcher.h"
#include "services/rewards/benefits.h"
#include "services/rewards/ledger_service.h"
#include "services/rewards/pg_ledger_store.h"
#include "tests/integration/switchable_ledger.h"

namespace mkt::rewards {
namespace {

namespace cpb = ::marketing::common::v1;

constexpr char kOrg[] = "bank-a";
constexpr char kCampaign[] = "camp-1";
constexpr char kKey[] = "test-qr-signing-key-of-at-least-32-bytes!";

using FakeClock = testing::ManualClock;

class BenefitsTest : public ::testing::Test {
 protected:
  BenefitsTest() : clock_(absl::FromUnixSeconds(absl::ToUnixSeconds(absl::Now()))) {}

  void SetUp() override {
    auto pool = pg::Pool::Connect({.dsn = db_.dsn(), .size = 12});
    ASSERT_TRUE(pool.ok()) << pool.status();
    pool_ = *std::move(pool);
    ASSERT_TRUE(
        pg::ApplyMigrations(*pool_, {&kafka::OutboxMigrations(), &RewardsMigrations()}).ok());
    store_ = std::make_unique<PgLedgerStore>(*pool_, clock_);
    ledger_ = std::make_unique<SwitchableLedger>(*store_);
    batcher_ = std::make_unique<GrantBatcher>(*store_, BatcherOptions{});
    ledger_service_ = std::make_unique<LedgerService>(*batcher_, *store_, clock_);
    benefits_ = std::make_unique<Benefits>(*pool_, *ledger_, clock_,
                                           BenefitsOptions{.lock_ttl = absl::Minutes(15),
                                                           .qr_ttl = absl::Seconds(60),
                                                           .qr_key = kKey,
                                                           .repair_grace = absl::Seconds(10)});
    FundBudget(kCampaign, 1'000'000);
  }

  void TearDown() override {
    if (!HasFailure()) ExpectBooksBalanced();
  }

  void FundBudget(const std::string& campaign, int64_t fen) {
    pb::FundRequest f;
    f.set_request_id("fund-" + campaign);
    f.set_org_id(kOrg);
    f.set_asset(pb::BUDGET_FEN);
    f.set_owner_id(campaign);
    f.set_amount(fen);
    auto r = ledger_service_->Fund(f);
    ASSERT_TRUE(r.ok()) << r.status();
  }

  pb::BenefitTemplate Template(const std::string& id, pb::BenefitType type, int64_t stock = 100) {
    pb::BenefitTemplate t;
    t.set_id(id);
    t.set_org_id(kOrg);
    t.set_type(type);
    t.set_name("template " + id);
    t.set_face_value(type == pb::GIFT_VOUCHER ? 0 : 500);
    if (type == pb::GIFT_VOUCHER) t.set_gift_sku("umbrella");
    t.set_unit_cost_fen(300);
    t.set_total_stock(stock);
    t.mutable_validity()->set_days_after_grant(7);
    return t;
  }

  void Activate(const pb::BenefitTemplate& t) {
    auto created = benefits_->CreateTemplate(t);
    ASSERT_TRUE(created.ok()) << created.status();
    auto active = benefits_->ActivateTemplate(t.id());
    ASSERT_TRUE(active.ok()) << active.status();
    ASSERT_EQ(active->status(), pb::TEMPLATE_ACTIVE);
  }

  absl::StatusOr<pb::Coupon> Issue(const std::string& request, const std::string& tpl,
                                   const std::string& customer,
                                   const std::string& campaign = kCampaign) {
    pb::IssueCouponRequest r;
    r.set_request_id(request);
    r.set_template_id(tpl);
    r.set_customer_id(customer);
    r.set_campaign_id(campaign);
    return benefits_->IssueCoupon(r);
  }

  pb::Coupon MustIssue(const std::string& tpl, const std::string& customer) {
    auto c = Issue("req-" + std::to_string(++issued_), tpl, customer);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *c : pb::Coupon();
  }

  absl::StatusOr<pb::Redemption> Lock(const pb::Coupon& c, const std::string& order, int64_t amount,
                                      const std::string& customer = "") {
    pb::LockCouponRequest r;
    r.set_coupon_code(c.code());
    r.set_customer_id(customer.empty() ? c.customer_id() : customer);
    r.mutable_order()->set_order_id(order);
    r.mutable_order()->set_amount_fen(amount);
    r.mutable_order()->set_channel("mobile");
    return benefits_->LockCoupon(r);
  }

  pb::RedemptionRequest Rdm(const std::string& id) {
    pb::RedemptionRequest r;
    r.set_redemption_id(id);
    return r;
  }

  pb::CouponState StateOf(const pb::Coupon& c) {
    auto got = benefits_->GetCoupon(c.code());
    EXPECT_TRUE(got.ok()) << got.status();
    return got.ok() ? got->state() : pb::COUPON_STATE_UNSPECIFIED;
  }

  int64_t Count(const std::string& sql) {
    int64_t n = 0;
    EXPECT_TRUE(pg::WithTransaction(*pool_, [&](pqxx::work& tx) {
                  n = tx.exec(sql)[0][0].as<int64_t>();
                  return absl::OkStatus();
                }).ok());
    return n;
  }

  // The ledger's invariants, and that it explains every customer's coupons: the COUPON account of
  // (customer, template) has balance = ISSUED + LOCKED coupons and available = ISSUED ones.
  void ExpectBooksBalanced() {
    auto integrity = store_->CheckIntegrity();
    ASSERT_TRUE(integrity.ok()) << integrity.status();
    EXPECT_TRUE(integrity->ok()) << integrity->DebugString();
    EXPECT_EQ(Count("SELECT count(*) FROM coupon_events WHERE NOT applied"), 0);
    std::vector<std::tuple<std::string, std::string, std::string, int64_t, int64_t>> expected;
    ASSERT_TRUE(pg::WithTransaction(*pool_, [&](pqxx::work& tx) {
                  for (const auto& r :
                       tx.exec("SELECT org_id, customer_id, template_id, "
                               "count(*) FILTER (WHERE state IN (1, 2)), "
                               "count(*) FILTER (WHERE state = 1) FROM coupons WHERE state > 0 "
                               "GROUP BY 1, 2, 3")) {
                    expected.emplace_back(r[0].as<std::string>(), r[1].as<std::string>(),
                                          r[2].as<std::string>(), r[3].as<int64_t>(),
                                          r[4].as<int64_t>());
                  }
                  return absl::OkStatus();
                }).ok());
    for (const auto& [org, customer, tpl, held, available] : expected) {
      auto account = store_->GetAccount(CustomerCoupons(org, tpl, customer));
      ASSERT_TRUE(account.ok()) << account.status();
      EXPECT_EQ(account->balance(), held) << customer << " " << tpl;
      EXPECT_EQ(account->available(), available) << customer << " " << tpl;
    }
  }

  testing::TestDatabase db_;
  FakeClock clock_;
  std::unique_ptr<pg::Pool> pool_;
  std::unique_ptr<PgLedgerStore> store_;
  std::unique_ptr<SwitchableLedger> ledger_;
  std::unique_ptr<GrantBatcher> batcher_;
  std::unique_ptr<LedgerService> ledger_service_;
  std::unique_ptr<Benefits> benefits_;
  int issued_ = 0;
};

// ---- Issuing.

TEST_F(BenefitsTest, IssueMovesBudgetStockAndHoldingTogetherAndStopsAtStock) {
  Activate(Template("cash", pb::COUPON_CASH, /*stock=*/2));
  auto a = Issue("r1", "cash", "cust-1");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->state(), pb::COUPON_ISSUED);
  EXPECT_GE(a->code().size(), 20u);  // 80 random bits
  auto replay = Issue("r1", "cash", "cust-1");
  ASSERT_TRUE(replay.ok());
  EXPECT_EQ(replay->code(), a->code());
  EXPECT_EQ(ReasonOf(Issue("r1", "cash", "cust-2").status()), cpb::IDEMPOTENCY_KEY_REUSED);
  ASSERT_TRUE(Issue("r2", "cash", "cust-2").ok());

  auto none = Issue("r3", "cash", "cust-3");
  EXPECT_EQ(ReasonOf(none.status()), cpb::STOCK_EXHAUSTED) << none.status();
  EXPECT_EQ(Count("SELECT count(*) FROM coupons"), 2);  // nothing left of the refused grant

  pb::AccountRef budget;
  budget.set_org_id(kOrg);
  budget.set_asset(pb::BUDGET_FEN);
  budget.set_owner_kind(pb::CAMPAIGN);
  budget.set_owner_id(kCampaign);
  EXPECT_EQ(store_->GetAccount(budget)->balance(), 1'000'000 - 2 * 300);
}

// The issue answers the coupon exactly as it is stored, ISSUED in the ledger batch's transaction
// (decision 017), its issue event applied; through the batcher as the service runs too.
TEST_F(BenefitsTest, AnIssuedCouponIsAnsweredAsStored) {
  Activate(Template("cash", pb::COUPON_CASH, /*stock=*/3));
  clock_.Advance(absl::Nanoseconds(123'456'789));  // sub-microsecond digits the database drops
  for (bool batched : {false, true}) {
    if (batched) benefits_->AttachBatcher(batcher_.get());
    auto issued = Issue(batched ? "s2" : "s1", "cash", batched ? "cust-2" : "cust-1");
    ASSERT_TRUE(issued.ok()) << issued.status();
    auto stored = benefits_->GetCoupon(issued->code());
    ASSERT_TRUE(stored.ok()) << stored.status();
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*issued, *stored))
        << issued->DebugString() << " vs " << stored->DebugString();
    EXPECT_EQ(stored->state(), pb::COUPON_ISSUED);
  }
  EXPECT_EQ(Count("SELECT count(*) FROM coupons WHERE state = 1"), 2);
  EXPECT_EQ(Count("SELECT count(*) FROM coupon_events WHERE applied"), 2);
}

TEST_F(BenefitsTest, IssueStopsAtTheBudgetAndRefusesInactiveTemplates) {
  FundBudget("poor", 500);
  Activate(Template("cash", pb::COUPON_CASH));
  ASSERT_TRUE(Issue("p1", "cash", "cust-1", "poor").ok());
  EXPECT_EQ(ReasonOf(Issue("p2", "cash", "cust-1", "poor").status()), cpb::BUDGET_EXHAUSTED);
  EXPECT_EQ(ReasonOf(Issue("p3", "cash", "cust-1", "never-funded").status()),
            cpb::ACCOUNT_NOT_FOUND);
  ASSERT_TRUE(benefits_->CreateTemplate(Template("draft", pb::COUPON_CASH)).ok());
  EXPECT_EQ(ReasonOf(Issue("p4", "draft", "cust-1").status()), cpb::CONFLICT);
  EXPECT_EQ(ReasonOf(Issue("p5", "nope", "cust-1").status()), cpb::NOT_FOUND);
  EXPECT_EQ(Count("SELECT count(*) FROM coupons"), 1);
}

// Issues through the batcher (as the service runs): concurrent issues share group commits on the
// template's stock row, and the stock still bounds them exactly.
TEST_F(BenefitsTest, ConcurrentIssuesThroughTheBatcherTakeExactlyTheStock) {
  benefits_->AttachBatcher(batcher_.get());
  Activate(Template("hot", pb::COUPON_CASH, /*stock=*/100));
  constexpr int kThreads = 16;
  constexpr int kPerThread = 20;
  std::atomic<int> issued{0}, sold_out{0}, other{0};
  std::mutex mu;
  std::vector<std::pair<std::string, std::string>> codes;  // (request, code)
  std::barrier start(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      for (int i = 0; i < kPerThread; ++i) {
        const std::string request = absl::StrCat("hot-", t, "-", i);
        auto c = Issue(request, "hot", absl::StrCat("cust-", t, "-", i));
        if (c.ok()) {
          ++issued;
          std::lock_guard<std::mutex> lock(mu);
          codes.emplace_back(request, c->code());
        } else if (ReasonOf(c.status()) == cpb::STOCK_EXHAUSTED) {
          ++sold_out;
        } else {
          ++other;
          ADD_FAILURE() << c.status();
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(issued.load(), 100);
  EXPECT_EQ(sold_out.load(), kThreads * kPerThread - 100);
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(Count("SELECT count(*) FROM coupons"), 100);
  EXPECT_EQ(Count("SELECT count(*) FROM coupons WHERE state = 1"), 100);
  // A replay answers the coupon its request issued.
  for (size_t i = 0; i < codes.size(); i += 10) {
    const auto& [request, code] = codes[i];
    auto replay = Issue(request, "hot", "cust-" + request.substr(4));
    ASSERT_TRUE(replay.ok()) << replay.status();
    EXPECT_EQ(replay->code(), code);
  }
}

// A member bank's campaign granting a federation template pays from the bank's own campaign
// budget; a template of another bank is not available to it.
TEST_F(BenefitsTest, ABankCampaignGrantingAFederationTemplatePaysFromTheBanksBudget) {
  pb::BenefitTemplate fed = Template("fed-cash", pb::COUPON_CASH);
  fed.set_org_id("fed");
  Activate(fed);
  pb::IssueCouponRequest r;
  r.set_request_id("fed-1");
  r.set_template_id("fed-cash");
  r.set_customer_id("cust-1");
  r.set_campaign_id(kCampaign);
  r.set_budget_org_id(kOrg);
  auto c = benefits_->IssueCoupon(r);
  ASSERT_TRUE(c.ok()) << c.status();
  pb::AccountRef budget;
  budget.set_org_id(kOrg);
  budget.set_asset(pb::BUDGET_FEN);
  budget.set_owner_kind(pb::CAMPAIGN);
  budget.set_owner_id(kCampaign);
  EXPECT_EQ(store_->GetAccount(budget)->balance(), 1'000'000 - 300);
  // The federation's coupon is held in the bank that granted it: it is in the bank customer's
  // wallet.
  pb::GetWalletRequest w;
  w.set_org_id(kOrg);
  w.set_customer_id("cust-1");
  auto wallet = benefits_->GetWallet(w);
  ASSERT_TRUE(wallet.ok()) << wallet.status();
  ASSERT_EQ(wallet->coupons_size(), 1);
  ASSERT_EQ(wallet->coupons(0).coupons_size(), 1);
  EXPECT_EQ(wallet->coupons(0).coupons(0).code(), c->code());
  w.set_org_id("bank-b");  // a sibling bank's customer of the same id does not see it
  EXPECT_EQ(benefits_->GetWallet(w)->coupons_size(), 0);
  // Without budget_org_id the template's org pays: the federation has no budget for camp-1.
  r.set_request_id("fed-2");
  r.clear_budget_org_id();
  EXPECT_EQ(ReasonOf(benefits_->IssueCoupon(r).status()), cpb::ACCOUNT_NOT_FOUND);
  // A bank's template does not reach a sibling bank.
  Activate(Template("a-cash", pb::COUPON_CASH));
  r.set_request_id("sib-1");
  r.set_template_id("a-cash");
  r.set_budget_org_id("bank-b");
  auto refused = benefits_->IssueCoupon(r);
  EXPECT_EQ(ReasonOf(refused.status()), cpb::INVALID_ARGUMENT) << refused.status();
  EXPECT_EQ(FieldOf(refused.status()), "budget_org_id");
  EXPECT_EQ(Count("SELECT count(*) FROM coupons WHERE state > 0"), 1);
}

// A request id names one grant: resent with the same fields it answers the coupon it issued;
// resent with another campaign or another paying org it is a reused key, and nothing is charged.
TEST_F(BenefitsTest, AReplayWithAnotherCampaignOrBudgetOrgIsIdempotencyKeyReused) {
  Activate(Template("cash", pb::COUPON_CASH));
  FundBudget("camp-2", 10'000);
  auto first = Issue("grant-1", "cash", "cust-1");
  ASSERT_TRUE(first.ok()) << first.status();
  auto same = Issue("grant-1", "cash", "cust-1");
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_EQ(same->code(), first->code());
  // Naming the org that paid by default is the same request.
  pb::IssueCouponRequest r;
  r.set_request_id("grant-1");
  r.set_template_id("cash");
  r.set_customer_id("cust-1");
  r.set_campaign_id(kCampaign);
  r.set_budget_org_id(kOrg);
  auto named = benefits_->IssueCoupon(r);
  ASSERT_TRUE(named.ok()) << named.status();
  EXPECT_EQ(named->code(), first->code());

  auto other_campaign = Issue("grant-1", "cash", "cust-1", "camp-2");
  EXPECT_EQ(other_campaign.status().code(), absl::StatusCode::kAlreadyExists)
      << other_campaign.status();
  EXPECT_EQ(ReasonOf(other_campaign.status()), cpb::IDEMPOTENCY_KEY_REUSED);
  EXPECT_EQ(FieldOf(other_campaign.status()), "request_id");
  r.set_budget_org_id("bank-a.branch-01");
  auto other_org = benefits_->IssueCoupon(r);
  EXPECT_EQ(ReasonOf(other_org.status()), cpb::IDEMPOTENCY_KEY_REUSED) << other_org.status();
  EXPECT_EQ(FieldOf(other_org.status()), "request_id");
  // Also through the staged path (THIRD_PARTY and inactive templates, decision 017).
  ASSERT_TRUE(benefits_->RetireTemplate("cash").ok());
  auto retired = Issue("grant-1", "cash", "cust-1", "camp-2");
  EXPECT_EQ(ReasonOf(retired.status()), cpb::IDEMPOTENCY_KEY_REUSED) << retired.status();

  EXPECT_EQ(Count("SELECT count(*) FROM coupons"), 1);
  pb::AccountRef budget2;
  budget2.set_org_id(kOrg);
  budget2.set_asset(pb::BUDGET_FEN);
  budget2.set_owner_kind(pb::CAMPAIGN);
  budget2.set_owner_id("camp-2");
  EXPECT_EQ(store_->GetAccount(budget2)->balance(), 10'000);
}

// The template cache never hides a status change made through the same service.
TEST_F(BenefitsTest, ARetiredTemplateIsRefusedAtOnceDespiteTheCache) {
  Activate(Template("cash", pb::COUPON_CASH));
  ASSERT_TRUE(Issue("c1", "cash", "cust-1").ok());  // the template is cached now
  ASSERT_TRUE(benefits_->RetireTemplate("cash").ok());
  EXPECT_EQ(ReasonOf(Issue("c2", "cash", "cust-2").status()), cpb::CONFLICT);
  EXPECT_EQ(Count("SELECT count(*) FROM coupons"), 1);
}

// ---- Online checkout.

TEST_F(BenefitsTest, LockConfirmReverseRestoresCouponAndLedger) {
  Activate(Template("cash", pb::COUPON_CASH));
  pb::Coupon c = MustIssue("cash", "cust-1");
  auto lock = Lock(c, "order-1", 10000);
  ASSERT_TRUE(lock.ok()) << lock.status();
  EXPECT_EQ(lock->discount_fen(), 500);
  EXPECT_EQ(StateOf(c), pb::COUPON_LOCKED);
  // Idempotent by order + coupon.
  auto again = Lock(c, "order-1", 10000);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->id(), lock->id());
  // Another amount for the same order is a conflict naming the amount, not a key reuse.
  auto other_amount = Lock(c, "order-1", 999);
  EXPECT_EQ(ReasonOf(other_amount.status()), cpb::CONFLICT);
  EXPECT_EQ(FieldOf(other_amount.status()), "order.amount_fen");
  EXPECT_NE(other_amount.status().message().find("10000 fen"), std::string_view::npos);
  ExpectBooksBalanced();

  auto confirmed = benefits_->ConfirmRedemption(Rdm(lock->id()));
  ASSERT_TRUE(confirmed.ok()) << confirmed.status();
  EXPECT_EQ(confirmed->state(), pb::REDEMPTION_CONFIRMED);
  EXPECT_EQ(StateOf(c), pb::COUPON_REDEEMED);
  EXPECT_TRUE(benefits_->ConfirmRedemption(Rdm(lock->id())).ok());  // replay
  auto cancel = benefits_->CancelRedemption(Rdm(lock->id()));
  EXPECT_EQ(ReasonOf(cancel.status()), cpb::CONFLICT);
  EXPECT_EQ(FieldOf(cancel.status()), "redemption_id");
  ExpectBooksBalanced();

  auto reversed = benefits_->ReverseRedemption(Rdm(lock->id()));
  ASSERT_TRUE(reversed.ok()) << reversed.status();
  EXPECT_EQ(reversed->state(), pb::REDEMPTION_REVERSED);
  EXPECT_EQ(StateOf(c), pb::COUPON_ISSUED);
  auto held = store_->GetAccount(CustomerCoupons(kOrg, "cash", "cust-1"));
  EXPECT_EQ(held->available(), 1);
  EXPECT_TRUE(store_->GetTransfer(lock->id() + ".reverse").ok());
  // The coupon is usable again, by a new order.
  EXPECT_TRUE(Lock(c, "order-2", 10000).ok());
}

TEST_F(BenefitsTest, ConfirmAfterCancelIsRefusedAndCancelReleasesTheCoupon) {
  Activate(Template("cash", pb::COUPON_CASH));
  pb::Coupon c = MustIssue("cash", "cust-1");
  auto lock = Lock(c, "order-1", 10000);
  ASSERT_TRUE(lock.ok());
  ASSERT_TRUE(benefits_->CancelRedemption(Rdm(lock->id())).ok());
  EXPECT_EQ(StateOf(c), pb::COUPON_ISSUED);
  auto confirm = benefits_->ConfirmRedemption(Rdm(lock->id()));
  EXPECT_EQ(ReasonOf(confirm.status()), cpb::CONFLICT);
  EXPECT_NE(confirm.status().message().find("CANCELLED"), std::string_view::npos);
  EXPECT_EQ(ReasonOf(benefits_->ReverseRedemption(Rdm(lock->id())).status()), cpb::CONFLICT);
  EXPECT_EQ(store_->GetTransfer(lock->id() + ".lock")->state(), pb::VOIDED);
  // Locking again for the cancelled order is a conflict that says so (not the cancelled
  // redemption answered as if it were locked); a new order id locks the released coupon.
  auto relock = Lock(c, "order-1", 10000);
  EXPECT_EQ(ReasonOf(relock.status()), cpb::CONFLICT);
  EXPECT_EQ(FieldOf(relock.status()), "order.order_id");
  EXPECT_NE(relock.status().message().find("REDEMPTION_CANCELLED"), std::string_view::npos);
  EXPECT_EQ(StateOf(c), pb::COUPON_ISSUED);
  auto fresh = Lock(c, "order-2", 10000);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(fresh->state(), pb::REDEMPTION_LOCKED);
}

TEST_F(BenefitsTest, LockTimeoutReleasesTheCoupon) {
  Activate(Template("cash", pb::COUPON_CASH));
  pb::Coupon c = MustIssue("cash", "cust-1");
  auto lock = Lock(c, "order-1", 10000);
  ASSERT_TRUE(lock.ok());
  auto early = benefits_->RunCouponExpiry(clock_.Now(), 100);
  ASSERT_TRUE(early.ok());
  EXPECT_EQ(early->locks_released(), 0);
  clock_.Advance(absl::Minutes(15) + absl::Seconds(1));
  auto run = benefits_->RunCouponExpiry(clock_.Now(), 100);
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->locks_released(), 1);
  EXPECT_EQ(StateOf(c), pb::COUPON_ISSUED);
  auto confirm = benefits_->ConfirmRedemption(Rdm(lock->id()));
  EXPECT_EQ(ReasonOf(confirm.status()), cpb::CONFLICT);
  auto cancelled = benefits_->CancelRedemption(Rdm(lock->id()));  // answers with the timeout
  ASSERT_TRUE(cancelled.ok());
  EXPECT_TRUE(cancelled->timed_out());
  EXPECT_EQ(benefits_->RunCouponExpiry(clock_.Now(), 100)->locks_released(), 0);
}

TEST_F(BenefitsTest, ConfirmAfterTheLockExpiredIsRefusedEvenBeforeTheSweep) {
  Activate(Template("cash", pb::COUPON_CASH));
  pb::Coupon c = MustIssue("cash", "cust-1");
  auto lock = Lock(c, "order-1", 10000);
  ASSERT_TRUE(lock.ok());
  clock_.Advance(absl::Minutes(16));
  EXPECT_EQ(ReasonOf(benefits_->ConfirmRedemption(Rdm(lock->id())).status()), cpb::CONFLICT);
  EXPECT_EQ(benefits_->RunCouponExpiry(clock_.Now(), 100)->locks_released(), 1);
}

TEST_F(BenefitsTest, TwoCheckoutsRacingForOneCouponExactlyOneWins) {
  Activate(Template("cash", pb::COUPON_CASH));
  pb::Coupon c = MustIssue("cash", "cust-1");
  constexpr int kRounds = 50;
  for (int round = 0; round < kRounds; ++round) {
    std::barrier start(2);
    absl::StatusOr<pb::Redemption> results[2] = {Internal("unset"), Internal("unset")};
    std::vector<std::thread> threads;
    for (int i = 0; i < 2; ++i) {
      threads.emplace_back([&, i] {
        start.arrive_and_wait();
        results[i] = Lock(c, absl::StrCat("order-", round, "-", i), 10000);
      });
    }
    for (auto& t : threads) t.join();
    const int wins = results[0].ok() + results[1].ok();
    ASSERT_EQ(wins, 1) << "round " << round << ": " << results[0].status() << " / "
                       << results[1].status();
    const auto& loser = results[0].ok() ? results[1] : results[0];
    EXPECT_EQ(ReasonOf(loser.status()), cpb::COUPON_NOT_USABLE) << loser.status();
    const auto& winner = results[0].ok() ? results[0] : results[1];
    ASSERT_TRUE(benefits_->CancelRedemption(Rdm(winner->id())).ok());
  }
  EXPECT_EQ(Count("SELECT count(*) FROM redemptions"), kRounds);
}

// ---- Offline QR.

absl::StatusOr<pb::QrToken> Qr(Benefits& b, const pb::Coupon& c, const std::string& customer) {
  pb::IssueQrTokenRequest r;
  r.set_coupon_code(c.code());
  r.set_customer_id(customer);
  return b.IssueQrToken(r);
}

pb::RedeemQrTokenRequest Redeem(const std::string& token, const std::string& terminal = "t-1") {
  pb::RedeemQrTokenRequest r;
  r.set_token(token);
  r.set_merchant_id("m-1");
  r.set_terminal_id(terminal);
  r.set_order_amount_fen(10000);
  return r;
}

TEST_F(BenefitsTest, QrTokenRefusalsEachHaveTheirOwnCode) {
  Activate(Template("cash", pb::COUPON_CASH));
  pb::Coupon mine = MustIssue("cash", "cust-1");
  pb::Coupon theirs = MustIssue("cash", "cust-2");

  // Another customer's coupon: no token for it.
  auto stolen = Qr(*benefits_, theirs, "cust-1");
  EXPECT_EQ(ReasonOf(stolen.status()), cpb::PERMISSION_DENIED);

  auto token = Qr(*benefits_, mine, "cust-1");
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_LE(absl::FromUnixSeconds(token->expires_at().seconds()) - clock_.Now(),
            absl::Seconds(120));

  // Forged: one character of the claims changed; or signed with another key.
  std::string forged = token->token();
  forged[5] = forged[5] == 'a' ? 'b' : 'a';
  auto f = benefits_->RedeemQrToken(Redeem(forged));
  EXPECT_EQ(ReasonOf(f.status()), cpb::TOKEN_INVALID);
  EXPECT_EQ(FieldOf(f.status()), "token");
  QrTokenSigner other("another-key-another-key-another-key!!");
  auto f2 = benefits_->RedeemQrToken(
      Redeem(other.Sign({.jti = "x",
                         .coupon_code = mine.code(),
                         .customer_id = "cust-1",
                         .expires_at = clock_.Now() + absl::Seconds(60)})));
  EXPECT_EQ(ReasonOf(f2.status()), cpb::TOKEN_INVALID);

  // Presented for another customer.
  pb::RedeemQrTokenRequest wrong_customer = Redeem(token->token());
  wrong_customer.set_customer_id("cust-2");
  auto w = benefits_->RedeemQrToken(wrong_customer);
  EXPECT_EQ(ReasonOf(w.status()), cpb::PERMISSION_DENIED);
  EXPECT_EQ(FieldOf(w.status()), "customer_id");

  // Wrong merchant for a merchant-bound coupon is refused without using the token.
  pb::BenefitTemplate bound = Template("bound", pb::COUPON_CASH);
  bound.mutable_usage()->add_merchants("m-9");
  Activate(bound);
  pb::Coupon b = MustIssue("bound", "cust-1");
  auto bt = Qr(*benefits_, b, "cust-1");
  ASSERT_TRUE(bt.ok());
  auto wm = benefits_->RedeemQrToken(Redeem(bt->token()));
  EXPECT_EQ(ReasonOf(wm.status()), cpb::COUPON_NOT_USABLE);
  EXPECT_EQ(FieldOf(wm.status()), "order.merchant_id");
  EXPECT_EQ(StateOf(b), pb::COUPON_ISSUED);

  // Valid: redeems once; replayed: refused.
  auto ok = benefits_->RedeemQrToken(Redeem(token->token()));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->discount_fen(), 500);
  EXPECT_EQ(StateOf(mine), pb::COUPON_REDEEMED);
  auto replay = benefits_->RedeemQrToken(Redeem(token->token(), "t-2"));
  EXPECT_EQ(ReasonOf(replay.status()), cpb::TOKEN_ALREADY_USED);
  EXPECT_EQ(FieldOf(replay.status()), "token");

  // Expired.
  pb::Coupon later = MustIssue("cash", "cust-1");
  auto late = Qr(*benefits_, later, "cust-1");
  ASSERT_TRUE(late.ok());
  clock_.Advance(absl::Seconds(61));
  auto e = benefits_->RedeemQrToken(Redeem(late->token()));
  EXPECT_EQ(ReasonOf(e.status()), cpb::TOKEN_EXPIRED);
  EXPECT_EQ(FieldOf(e.status()), "token.expires_at");
  EXPECT_EQ(StateOf(later), pb::COUPON_ISSUED);
}

// A terminal that lost the answer to a redemption sends it again: the same token from the same
// terminal for the same order gets the redemption it made (even once the token has expired), not
// TOKEN_ALREADY_USED; another terminal or another order is still refused.
TEST_F(BenefitsTest, AQrRedemptionRetriedByTheSameTerminalAnswersTheStoredRedemption) {
  Activate(Template("cash", pb::COUPON_CASH));
  for (const std::string order : {"", "pos-order-1"}) {  // the order named by the token, or not
    pb::Coupon c = MustIssue("cash", "cust-1");
    auto token = Qr(*benefits_, c, "cust-1");
    ASSERT_TRUE(token.ok()) << token.status();
    pb::RedeemQrTokenRequest req = Redeem(token->token(), "t-7");
    req.set_order_id(order);
    auto first = benefits_->RedeemQrToken(req);
    ASSERT_TRUE(first.ok()) << first.status();
    auto retried = benefits_->RedeemQrToken(req);
    ASSERT_TRUE(retried.ok()) << retried.status();
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*retried, *first))
        << retried->DebugString() << " vs " << first->DebugString();

    auto other_terminal = benefits_->RedeemQrToken(Redeem(token->token(), "t-8"));
    EXPECT_EQ(ReasonOf(other_terminal.status()), cpb::TOKEN_ALREADY_USED)
        << other_terminal.status();
    pb::RedeemQrTokenRequest other_order = req;
    other_order.set_order_id("pos-order-2");
    EXPECT_EQ(ReasonOf(benefits_->RedeemQrToken(other_order).status()), cpb::TOKEN_ALREADY_USED);
    pb::RedeemQrTokenRequest other_amount = req;
    other_amount.set_order_amount_fen(20'000);
    // The same order for another amount: a conflict, as for an online lock.
    auto changed = benefits_->RedeemQrToken(other_amount);
    EXPECT_EQ(ReasonOf(changed.status()), cpb::CONFLICT) << changed.status();
    EXPECT_EQ(FieldOf(changed.status()), "order.amount_fen") << changed.status();

    // Past the token's expiry the retry still gets its redemption.
    clock_.Advance(absl::Seconds(61));
    auto late = benefits_->RedeemQrToken(req);
    ASSERT_TRUE(late.ok()) << late.status();
    EXPECT_EQ(late->id(), first->id());
    EXPECT_EQ(ReasonOf(benefits_->RedeemQrToken(Redeem(token->token(), "t-8")).status()),
              cpb::TOKEN_EXPIRED);
    EXPECT_EQ(StateOf(c), pb::COUPON_REDEEMED);
  }
  EXPECT_EQ(Count("SELECT count(*) FROM redemptions"), 2);
  EXPECT_EQ(store_->GetAccount(SystemCoupons(kOrg, "cash", pb::ROLE_REDEMPTION))->balance(), 2);
}

TEST_F(BenefitsTest, TwoTerminalsSubmittingOneTokenRedeemItExactlyOnce) {
  Activate(Template("cash", pb::COUPON_CASH));
  constexpr int kRounds = 50;
  for (int round = 0; round < kRounds; ++round) {
    pb::Coupon c = MustIssue("cash", "cust-1");
    auto token = Qr(*benefits_, c, "cust-1");
    ASSERT_TRUE(token.ok());
    std::barrier start(2);
    absl::StatusOr<pb::Redemption> results[2] = {Internal("unset"), Internal("unset")};
    std::vector<std::thread> threads;
    for (int i = 0; i < 2; ++i) {
      threads.emplace_back([&, i] {
        start.arrive_and_wait();
        results[i] = benefits_->RedeemQrToken(Redeem(token->token(), absl::StrCat("t-", i)));
      });
    }
    for (auto& t : threads) t.join();
    ASSERT_EQ(results[0].ok() + results[1].ok(), 1)
        << results[0].status() << " / " << results[1].status();
    const auto& loser = results[0].ok() ? results[1] : results[0];
    EXPECT_EQ(ReasonOf(loser.status()), cpb::TOKEN_ALREADY_USED) << loser.status();
  }
  EXPECT_EQ(Count("SELECT count(*) FROM redemptions"), kRounds);
  EXPECT_EQ(store_->GetAccount(SystemCoupons(kOrg, "cash", pb::ROLE_REDEMPTION))->balance(),
            kRounds);
}

TEST_F(BenefitsTest, OfflineRedemptionCanBeReversedWhileValid) {
  Activate(Template("cash", pb::COUPON_CASH));
  pb::Coupon c = MustIssue("cash", "cust-1");
  auto token = Qr(*benefits_, c, "cust-1");
  auto used = benefits_->RedeemQrToken(Redeem(token->token()));
  ASSERT_TRUE(used.ok());
  ASSERT_TRUE(benefits_->ReverseRedemption(Rdm(used->id())).ok());
  EXPECT_EQ(StateOf(c), pb::COUPON_ISSUED);
}

// ---- Gift vouchers.

TEST_F(BenefitsTest, GiftVoucherRedeemedAtACounterAndCollected) {
  Activate(Template("gift", pb::GIFT_VOUCHER));
  pb::Coupon byqr = MustIssue("gift", "cust-1");
  auto token = Qr(*benefits_, byqr, "cust-1");
  ASSERT_TRUE(token.ok());
  ASSERT_TRUE(benefits_->RedeemQrToken(Redeem(token->token(), "counter-7")).ok());
  pb::MarkCollectedRequest m;
  m.set_coupon_code(byqr.code());
  m.set_terminal_id("counter-7");
  auto collected = benefits_->MarkCollected(m);
  ASSERT_TRUE(collected.ok()) << collected.status();
  EXPECT_TRUE(collected->has_collected_at());
  EXPECT_EQ(collected->state(), pb::COUPON_REDEEMED);

  pb::Coupon bycode = MustIssue("gift", "cust-1");
  m.set_coupon_code(bycode.code());
  m.set_customer_id("cust-2");
  EXPECT_EQ(ReasonOf(benefits_->MarkCollected(m).status()), cpb::PERMISSION_DENIED);
  m.set_customer_id("cust-1");
  auto direct = benefits_->MarkCollected(m);
  ASSERT_TRUE(direct.ok()) << direct.status();
  EXPECT_EQ(direct->state(), pb::COUPON_REDEEMED);
  EXPECT_TRUE(direct->has_collected_at());
  // A gift voucher has no online checkout.
  pb::Coupon third = MustIssue("gift", "cust-1");
  EXPECT_EQ(ReasonOf(Lock(third, "o", 100).status()), cpb::COUPON_NOT_USABLE);
}

// The gift of a collected voucher was handed over: reversing its redemption would give the voucher
// back and let it be collected again. The reversal is refused (and nothing moves); a voucher not
// collected yet is still reversed like any coupon; a collection recorded for an earlier redemption
// (a reversal made before this rule) is not taken as this one's.
TEST_F(BenefitsTest, ACollectedGiftVoucherIsNotReversedSoItsGiftIsHandedOverOnce) {
  Activate(Template("gift", pb::GIFT_VOUCHER));
  pb::Coupon v = MustIssue("gift", "cust-1");
  auto token = Qr(*benefits_, v, "cust-1");
  ASSERT_TRUE(token.ok()) << token.status();
  auto used = benefits_->RedeemQrToken(Redeem(token->token(), "counter-7"));
  ASSERT_TRUE(used.ok()) << used.status();
  pb::MarkCollectedRequest m;
  m.set_coupon_code(v.code());
  m.set_terminal_id("counter-7");
  ASSERT_TRUE(benefits_->MarkCollected(m).ok());
  const int64_t transfers = Count("SELECT count(*) FROM transfers");
  const int64_t events = Count("SELECT count(*) FROM coupon_events");

  auto reversed = benefits_->ReverseRedemption(Rdm(used->id()));
  EXPECT_EQ(reversed.status().code(), absl::StatusCode::kFailedPrecondition) << reversed.status();
  EXPECT_EQ(ReasonOf(reversed.status()), cpb::CONFLICT) << reversed.status();
  EXPECT_EQ(FieldOf(reversed.status()), "redemption_id");
  EXPECT_NE(reversed.status().message().find("collected"), std::string_view::npos)
      << reversed.status();
  EXPECT_EQ(StateOf(v), pb::COUPON_REDEEMED);
  EXPECT_EQ(Count(absl::StrCat("SELECT count(*) FROM redemptions WHERE id = '", used->id(),
                               "' AND state = ", static_cast<int>(pb::REDEMPTION_CONFIRMED))),
            1);
  EXPECT_FALSE(store_->GetTransfer(used->id() + ".reverse").ok());
  EXPECT_EQ(Count("SELECT count(*) FROM transfers"), transfers);
  EXPECT_EQ(Count("SELECT count(*) FROM coupon_events"), events);
  EXPECT_EQ(store_->GetAccount(SystemCoupons(kOrg, "gift", pb::ROLE_REDEMPTION))->balance(), 1);
  // The counter retrying its collection (a lost answer) is still answered as done.
  auto again = benefits_->MarkCollected(m);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->has_collected_at());

  // Not collected yet: the refund gives the voucher back, as for any coupon.
  pb::Coupon w = MustIssue("gift", "cust-1");
  auto wt = Qr(*benefits_, w, "cust-1");
  ASSERT_TRUE(wt.ok()) << wt.status();
  auto wused = benefits_->RedeemQrToken(Redeem(wt->token(), "counter-7"));
  ASSERT_TRUE(wused.ok()) << wused.status();
  auto wreversed = benefits_->ReverseRedemption(Rdm(wused->id()));
  ASSERT_TRUE(wreversed.ok()) << wreversed.status();
  EXPECT_EQ(StateOf(w), pb::COUPON_ISSUED);

  // Rows left by a reversal of a collected voucher made before the rule: a voucher given back
  // with its collection recorded, and one redeemed again whose recorded collection names the
  // earlier redemption. Neither is handed over again.
  ASSERT_TRUE(pg::WithTransaction(*pool_, [&](pqxx::work& tx) {
                tx.exec_params("UPDATE coupons SET collected_at = now() WHERE code = $1", w.code());
                return absl::OkStatus();
              }).ok());
  m.set_coupon_code(w.code());
  m.set_customer_id("cust-1");
  auto given_back = benefits_->MarkCollected(m);
  EXPECT_EQ(ReasonOf(given_back.status()), cpb::CONFLICT) << given_back.status();
  EXPECT_EQ(FieldOf(given_back.status()), "coupon_code");
  EXPECT_EQ(StateOf(w), pb::COUPON_ISSUED);
  ASSERT_TRUE(pg::WithTransaction(*pool_, [&](pqxx::work& tx) {
                tx.exec_params(
                    "UPDATE coupon_events SET redemption_id = 'rdm-earlier' WHERE cause = "
                    "'collected' AND coupon_id = (SELECT id FROM coupons WHERE code = $1)",
                    v.code());
                return absl::OkStatus();
              }).ok());
  m.set_coupon_code(v.code());
  auto redeemed_again = benefits_->MarkCollected(m);
  EXPECT_EQ(ReasonOf(redeemed_again.status()), cpb::CONFLICT) << redeemed_again.status();
}

// ---- Expiry.

TEST_F(BenefitsTest, ExpiryJobExpiresOnceAndMovesTheHoldingToExpiry) {
  Activate(Template("cash", pb::COUPON_CASH));
  pb::Coupon a = MustIssue("cash", "cust-1");
  pb::Coupon b = MustIssue("cash", "cust-1");
  ASSERT_TRUE(Lock(b, "o-b", 10000).ok());
  clock_.Advance(absl::Hours(24 * 7) + absl::Seconds(1));
  auto run = benefits_->RunCouponExpiry(clock_.Now(), 100);
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->locks_released(), 1);
  EXPECT_EQ(run->coupons_expired(), 2);  // b: released first, then expired
  EXPECT_EQ(StateOf(a), pb::COUPON_EXPIRED);
  EXPECT_EQ(StateOf(b), pb::COUPON_EXPIRED);
  auto again = benefits_->RunCouponExpiry(clock_.Now(), 100);
  EXPECT_EQ(again->coupons_expired(), 0);
  EXPECT_EQ(store_->GetAccount(SystemCoupons(kOrg, "cash", pb::ROLE_EXPIRY))->balance(), 2);
  EXPECT_EQ(ReasonOf(Lock(a, "o-late", 10000).status()), cpb::COUPON_NOT_USABLE);
}

// ---- Bad input.

TEST_F(BenefitsTest, BadInputIsRefusedClearlyAndChangesNothing) {
  pb::BenefitTemplate t = Template("thr", pb::COUPON_THRESHOLD);
  t.set_threshold_fen(10000);
  t.set_face_value(2000);
  t.mutable_usage()->add_merchants("m-1");
  Activate(t);
  pb::Coupon c = MustIssue("thr", "cust-1");
  const int64_t events = Count("SELECT count(*) FROM coupon_events");
  const int64_t transfers = Count("SELECT count(*) FROM transfers");

  pb::Coupon unknown = c;
  unknown.set_code("CNOSUCHCODE");
  EXPECT_EQ(ReasonOf(Lock(unknown, "o1", 10000).status()), cpb::NOT_FOUND);
  unknown.set_code("bad code!");
  EXPECT_EQ(ReasonOf(Lock(unknown, "o1", 10000).status()), cpb::INVALID_ARGUMENT);
  auto negative = Lock(c, "o1", -1);
  EXPECT_EQ(ReasonOf(negative.status()), cpb::INVALID_ARGUMENT);
  EXPECT_EQ(FieldOf(negative.status()), "order.amount_fen");
  EXPECT_EQ(ReasonOf(Lock(c, "o1", int64_t{1} << 62).status()), cpb::INVALID_ARGUMENT);
  EXPECT_EQ(ReasonOf(Lock(c, "", 10000).status()), cpb::INVALID_ARGUMENT);
  EXPECT_EQ(ReasonOf(Lock(c, "o1", 10000, "cust-2").status()), cpb::PERMISSION_DENIED);
  EXPECT_EQ(ReasonOf(Lock(c, "o1", 9999).status()), cpb::COUPON_NOT_USABLE);  // below threshold
  pb::LockCouponRequest wrong_merchant;
  wrong_merchant.set_coupon_code(c.code());
  wrong_merchant.set_customer_id("cust-1");
  wrong_merchant.mutable_order()->set_order_id("o1");
  wrong_merchant.mutable_order()->set_amount_fen(10000);
  wrong_merchant.mutable_order()->set_merchant_id("m-2");
  auto wm = benefits_->LockCoupon(wrong_merchant);
  EXPECT_EQ(ReasonOf(wm.status()), cpb::COUPON_NOT_USABLE);
  EXPECT_EQ(FieldOf(wm.status()), "order.merchant_id");
  EXPECT_EQ(ReasonOf(benefits_->ConfirmRedemption(Rdm("rdm-nope")).status()), cpb::NOT_FOUND);
  EXPECT_EQ(ReasonOf(benefits_->ConfirmRedemption(Rdm("")).status()), cpb::INVALID_ARGUMENT);
  pb::BenefitTemplate bad = Template("bad", pb::COUPON_CASH);
  bad.set_face_value(-100);
  EXPECT_EQ(ReasonOf(benefits_->CreateTemplate(bad).status()), cpb::INVALID_ARGUMENT);

  EXPECT_EQ(StateOf(c), pb::COUPON_ISSUED);
  EXPECT_EQ(Count("SELECT count(*) FROM coupon_events"), events);
  EXPECT_EQ(Count("SELECT count(*) FROM transfers"), transfers);
  EXPECT_EQ(Count("SELECT count(*) FROM redemptions"), 0);

  // At the right merchant and exactly at the threshold: usable, 2000 off.
  pb::LockCouponRequest exact_request = wrong_merchant;
  exact_request.mutable_order()->set_merchant_id("m-1");
  auto exact = benefits_->LockCoupon(exact_request);
  ASSERT_TRUE(exact.ok()) << exact.status();
  EXPECT_EQ(exact->discount_fen(), 2000);
}

// ---- The crash window (decision 011): coupon committed, ledger not yet.

TEST_F(BenefitsTest, CrashBetweenCouponCommitAndLedgerIsRepairedIdempotently) {
  Activate(Template("cash", pb::COUPON_CASH));
  pb::Coupon c = MustIssue("cash", "cust-1");
  ledger_->down = true;
  auto lock = Lock(c, "order-1", 10000);
  ASSERT_TRUE(lock.ok()) << lock.status();  // the coupon row is the truth
  auto confirmed = benefits_->ConfirmRedemption(Rdm(lock->id()));
  ASSERT_TRUE(confirmed.ok()) << confirmed.status();
  EXPECT_EQ(StateOf(c), pb::COUPON_REDEEMED);
  EXPECT_FALSE(store_->GetTransfer(lock->id() + ".lock").ok());
  EXPECT_EQ(Count("SELECT count(*) FROM coupon_events WHERE NOT applied"), 2);
  ledger_->down = false;

  // Young intents are left to their caller; after the grace the sweeper applies them, in order.
  EXPECT_EQ(*benefits_->RepairLedger(100), 0);
  clock_.Advance(absl::Seconds(11));
  EXPECT_EQ(*benefits_->RepairLedger(100), 1);
  EXPECT_EQ(store_->GetTransfer(lock->id() + ".lock")->state(), pb::POSTED);
  EXPECT_TRUE(store_->GetTransfer(lock->id() + ".confirm").ok());
  // A second sweeper (another replica) re-applying changes nothing.
  ASSERT_TRUE(pg::WithTransaction(*pool_, [&](pqxx::work& tx) {
                tx.exec("UPDATE coupon_events SET applied = false");
                return absl::OkStatus();
              }).ok());
  const int64_t transfers = Count("SELECT count(*) FROM transfers");
  EXPECT_GE(*benefits_->RepairLedger(100), 1);
  EXPECT_EQ(Count("SELECT count(*) FROM transfers"), transfers);

  // An issue whose ledger batch never ran leaves nothing: the batch writes the coupon
  // (decision 017). The retry issues it, once.
  ledger_->down = true;
  auto pending = Issue("crash-issue", "cash", "cust-2");
  EXPECT_EQ(pending.status().code(), absl::StatusCode::kUnavailable);
  ledger_->down = false;
  EXPECT_EQ(Count("SELECT count(*) FROM coupons WHERE issue_request_id = 'crash-issue'"), 0);
  clock_.Advance(absl::Seconds(11));
  EXPECT_EQ(*benefits_->RepairLedger(100), 0);
  auto done = Issue("crash-issue", "cash", "cust-2");
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->state(), pb::COUPON_ISSUED);
  // An issue committed whose answer was lost: the retry answers the coupon it issued, and moves
  // nothing again.
  ledger_->lose_answers = true;
  auto lost = Issue("lost-answer", "cash", "cust-3");
  EXPECT_EQ(lost.status().code(), absl::StatusCode::kUnavailable);
  ledger_->lose_answers = false;
  const int64_t moved = Count("SELECT count(*) FROM transfers");
  auto again = Issue("lost-answer", "cash", "cust-3");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->state(), pb::COUPON_ISSUED);
  EXPECT_EQ(Count("SELECT count(*) FROM coupons WHERE issue_request_id = 'lost-answer'"), 1);
  EXPECT_EQ(Count("SELECT count(*) FROM transfers"), moved);
  auto wallet_code = benefits_->GetCoupon(again->code());
  ASSERT_TRUE(wallet_code.ok()) << wallet_code.status();
  EXPECT_EQ(wallet_code->customer_id(), "cust-3");
}

// A confirm committed while the ledger was unreachable is posted whenever the ledger comes back:
// the lock's hold has no timeout of the ledger's own (the coupon's lock timeout releases it), so
// the ledger's sweeper of timed-out reservations, run first after an outage longer than the lock
// TTL + 1 h, does not void the hold that the confirm still has to post.
TEST_F(BenefitsTest, AConfirmAppliedAfterTheLedgersBackstopTimeoutIsStillPosted) {
  Activate(Template("cash", pb::COUPON_CASH));
  pb::Coupon c = MustIssue("cash", "cust-1");
  auto lock = Lock(c, "order-1", 10000);
  ASSERT_TRUE(lock.ok()) << lock.status();
  auto hold = store_->GetTransfer(lock->id() + ".lock");
  ASSERT_TRUE(hold.ok()) << hold.status();
  EXPECT_EQ(hold->state(), pb::PENDING);
  EXPECT_FALSE(hold->has_timeout_at());
  ledger_->down = true;
  auto confirmed = benefits_->ConfirmRedemption(Rdm(lock->id()));
  ASSERT_TRUE(confirmed.ok()) << confirmed.status();
  EXPECT_EQ(StateOf(c), pb::COUPON_REDEEMED);
  EXPECT_EQ(Count("SELECT count(*) FROM coupon_events WHERE NOT applied"), 1);

  // The service comes back after lock TTL (15 min) + 1 h; the housekeeping sweeps first.
  clock_.Advance(absl::Minutes(15) + absl::Hours(1) + absl::Minutes(5));
  ledger_->down = false;
  auto voided = store_->VoidTimedOutPending(clock_.Now(), 100);
  ASSERT_TRUE(voided.ok()) << voided.status();
  EXPECT_EQ(*voided, 0);
  EXPECT_EQ(store_->GetTransfer(lock->id() + ".lock")->state(), pb::PENDING);
  EXPECT_EQ(benefits_->RunCouponExpiry(clock_.Now(), 100)->locks_released(), 0);
  auto repaired = benefits_->RepairLedger(100);
  ASSERT_TRUE(repaired.ok()) << repaired.status();
  EXPECT_EQ(*repaired, 1);
  EXPECT_EQ(store_->GetTransfer(lock->id() + ".lock")->state(), pb::POSTED);
  EXPECT_TRUE(store_->GetTransfer(lock->id() + ".confirm").ok());
  EXPECT_EQ(StateOf(c), pb::COUPON_REDEEMED);
  EXPECT_EQ(store_->GetAccount(CustomerCoupons(kOrg, "cash", "cust-1"))->balance(), 0);
  EXPECT_EQ(store_->GetAccount(SystemCoupons(kOrg, "cash", pb::ROLE_REDEMPTION))->balance(), 1);
  ExpectBooksBalanced();

  // A lock left alone is still released by the coupon's own timeout, which voids its hold.
  pb::Coupon d = MustIssue("cash", "cust-1");
  auto idle = Lock(d, "order-2", 10000);
  ASSERT_TRUE(idle.ok()) << idle.status();
  clock_.Advance(absl::Minutes(16));
  EXPECT_EQ(benefits_->RunCouponExpiry(clock_.Now(), 100)->locks_released(), 1);
  EXPECT_EQ(store_->GetTransfer(idle->id() + ".lock")->state(), pb::VOIDED);
  EXPECT_EQ(StateOf(d), pb::COUPON_ISSUED);
}

// ---- Wallet.

TEST_F(BenefitsTest, WalletShowsPointsExpiringCashChancesAndCouponsByState) {
  auto grant = [&](const std::string& id, pb::Asset asset, int64_t qty, int days) {
    pb::GrantRequest g;
    g.set_request_id(id);
    g.set_org_id(kOrg);
    g.set_campaign_id(kCampaign);
    g.set_customer_id("cust-1");
    g.set_asset(asset);
    g.set_quantity(qty);
    if (asset == pb::POINTS) g.mutable_expiry()->set_days_after_grant(days);
    auto r = ledger_service_->Grant(g);
    ASSERT_TRUE(r.ok()) << r.status();
  };
  grant("g1", pb::POINTS, 100, 10);
  grant("g2", pb::POINTS, 50, 365);
  grant("g3", pb::CASH_FEN, 888, 0);
  grant("g4", pb::LOTTERY_CHANCE, 3, 0);
  Activate(Template("cash", pb::COUPON_CASH));
  pb::Coupon a = MustIssue("cash", "cust-1");
  MustIssue("cash", "cust-1");
  ASSERT_TRUE(Lock(a, "o-1", 10000).ok());

  pb::GetWalletRequest r;
  r.set_org_id(kOrg);
  r.set_customer_id("cust-1");
  auto w = benefits_->GetWallet(r);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->points(), 150);
  EXPECT_EQ(w->points_expiring_30d(), 100);
  EXPECT_EQ(w->cash_fen(), 888);
  EXPECT_EQ(w->lottery_chances(), 3);
  ASSERT_EQ(w->coupons_size(), 2);
  EXPECT_EQ(w->coupons(0).state(), pb::COUPON_ISSUED);
  EXPECT_EQ(w->coupons(0).coupons_size(), 1);
  EXPECT_EQ(w->coupons(1).state(), pb::COUPON_LOCKED);
  EXPECT_EQ(w->coupons(1).coupons(0).code(), a.code());
  EXPECT_EQ(w->coupons(1).coupons(0).face_value(), 500);
  r.set_customer_id("");
  EXPECT_EQ(ReasonOf(benefits_->GetWallet(r).status()), cpb::INVALID_ARGUMENT);
}

// Points past their lot's expiry are not the customer's any more, even before the expiry job
// turns them over: the wallet leaves them out of the points and of what expires soon, as a spend
// leaves them out of what it may take (decision 006, amended).
TEST_F(BenefitsTest, WalletLeavesOutPointsPastTheirExpiryBeforeTheJobRuns) {
  for (const auto& [id, days] : {std::pair<std::string, int>{"g1", 10}, {"g2", 20}}) {
    pb::GrantRequest g;
    g.set_request_id(id);
    g.set_org_id(kOrg);
    g.set_campaign_id(kCampaign);
    g.set_customer_id("cust-1");
    g.set_asset(pb::POINTS);
    g.set_quantity(id == "g1" ? 100 : 50);
    g.mutable_expiry()->set_days_after_grant(days);
    auto r = ledger_service_->Grant(g);
    ASSERT_TRUE(r.ok()) << r.status();
  }
  pb::GetWalletRequest r;
  r.set_org_id(kOrg);
  r.set_customer_id("cust-1");
  auto before = benefits_->GetWallet(r);
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_EQ(before->points(), 150);
  EXPECT_EQ(before->points_expiring_30d(), 150);
  clock_.Advance(absl::Hours(24 * 12));  // g1's lot has expired; no expiry job has run
  auto after = benefits_->GetWallet(r);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->points(), 50);
  EXPECT_EQ(after->points_expiring_30d(), 50);
  // Once the job has run, the same figures.
  ASSERT_TRUE(store_->ExpireLots(clock_.Now(), 100).ok());
  auto swept = benefits_->GetWallet(r);
  ASSERT_TRUE(swept.ok()) << swept.status();
  EXPECT_EQ(swept->points(), 50);
  EXPECT_EQ(swept->points_expiring_30d(), 50);
}

}  // namespace
}  // namespace mkt::rewards

namespace mkt::rewards {
namespace {

// The wallet cache as the service wires it: the store's change listener invalidates, so every
// change through this process shows at once; a change through another replica (a second store
// without the listener) shows once the entry is older than the TTL.
TEST_F(BenefitsTest, CachedWalletShowsEveryChangeOfThisProcessAtOnce) {
  benefits_ = std::make_unique<Benefits>(
      *pool_, *ledger_, clock_,
      BenefitsOptions{.qr_key = kKey, .wallet_cache_ttl = absl::Seconds(2)});
  Benefits* benefits = benefits_.get();
  store_->OnCustomerChanged([benefits](const std::string&, const std::string& customer) {
    benefits->InvalidateWallet(customer);
  });
  auto points_of = [&]() -> int64_t {
    pb::GetWalletRequest r;
    r.set_org_id(kOrg);
    r.set_customer_id("cust-1");
    auto w = benefits_->GetWallet(r);
    EXPECT_TRUE(w.ok()) << w.status();
    return w.ok() ? w->points() : -1;
  };
  auto grant = [&](LedgerService& via, const std::string& id, int64_t points) {
    pb::GrantRequest g;
    g.set_request_id(id);
    g.set_org_id(kOrg);
    g.set_campaign_id(kCampaign);
    g.set_customer_id("cust-1");
    g.set_asset(pb::POINTS);
    g.set_quantity(points);
    g.mutable_expiry()->set_days_after_grant(365);
    auto r = via.Grant(g);
    ASSERT_TRUE(r.ok()) << r.status();
  };
  EXPECT_EQ(points_of(), 0);
  grant(*ledger_service_, "g1", 100);
  EXPECT_EQ(points_of(), 100);  // not the cached 0
  Activate(Template("cash", pb::COUPON_CASH));
  pb::Coupon c = MustIssue("cash", "cust-1");
  pb::GetWalletRequest r;
  r.set_org_id(kOrg);
  r.set_customer_id("cust-1");
  ASSERT_EQ(benefits_->GetWallet(r)->coupons_size(), 1);
  ASSERT_TRUE(Lock(c, "o-1", 10000).ok());
  const absl::Time cached_at = absl::Now();
  auto w = benefits_->GetWallet(r);
  ASSERT_TRUE(w.ok());
  ASSERT_EQ(w->coupons_size(), 1);
  EXPECT_EQ(w->coupons(0).state(), pb::COUPON_LOCKED);

  // Another replica: its own store and batcher, no listener here.
  PgLedgerStore other_store(*pool_, clock_);
  GrantBatcher other_batcher(other_store, BatcherOptions{});
  LedgerService other(other_batcher, other_store, clock_);
  grant(other, "g2", 5);
  const int64_t seen = points_of();
  if (absl::Now() - cached_at < absl::Seconds(2)) {
    EXPECT_EQ(seen, 100);  // cached: the other replica's change is not seen yet
  }
  absl::SleepFor(absl::Milliseconds(2100));
  EXPECT_EQ(points_of(), 105);
  store_->OnCustomerChanged(nullptr);
}

pb::GetWalletRequest WalletOf(const std::string& customer) {
  pb::GetWalletRequest r;
  r.set_org_id(kOrg);
  r.set_customer_id(customer);
  return r;
}

// Wallets handed out to be read ahead of their expiry are read together, by one background task
// per batch, and what it keeps is what a fresh read gives for each customer (points, what
// expires, coupons grouped by state), changes made through another replica meanwhile included.
// What does not fit in one batch goes to the next task: a task reads one batch.
TEST_F(BenefitsTest, WalletRefreshesAreReadTogetherAndMatchAFreshRead) {
  const absl::Duration ttl = absl::Seconds(6);
  benefits_ = std::make_unique<Benefits>(*pool_, *ledger_, clock_,
                                         BenefitsOptions{.qr_key = kKey, .wallet_cache_ttl = ttl});
  Activate(Template("cash", pb::COUPON_CASH));
  Activate(Template("gift", pb::GIFT_VOUCHER));
  // Another replica: its changes do not reach this process's cache.
  PgLedgerStore other_store(*pool_, clock_);
  GrantBatcher other_batcher(other_store, BatcherOptions{});
  LedgerService other(other_batcher, other_store, clock_);
  auto grant = [&](const std::string& id, const std::string& customer, int64_t points) {
    pb::GrantRequest g;
    g.set_request_id(id);
    g.set_org_id(kOrg);
    g.set_campaign_id(kCampaign);
    g.set_customer_id(customer);
    g.set_asset(pb::POINTS);
    g.set_quantity(points);
    g.mutable_expiry()->set_days_after_grant(id == "g1" ? 10 : 365);
    auto r = other.Grant(g);
    ASSERT_TRUE(r.ok()) << r.status();
  };
  grant("g1", "cust-1", 100);
  grant("g2", "cust-2", 7);
  MustIssue("cash", "cust-2");
  MustIssue("gift", "cust-2");
  MustIssue("cash", "cust-2");
  MustIssue("cash", "cust-3");
  // Four customers to compare, then a batch's worth more, so that the last is in a second batch.
  std::vector<std::string> customers = {"cust-1", "cust-2", "cust-3", "cust-4"};
  for (size_t i = 0; i < Benefits::kWalletRefreshBatch; ++i) {
    customers.push_back(absl::StrCat("filler-", i));
  }
  const std::string last = customers.back();
  const absl::Time priming = absl::Now();
  for (const std::string& c : customers) ASSERT_TRUE(benefits_->GetWallet(WalletOf(c)).ok()) << c;
  const absl::Time primed = absl::Now();
  grant("g3", "cust-1", 5);
  grant("g4", "cust-4", 9);
  grant("g5", last, 3);

  absl::SleepFor(primed + ttl * 3 / 4 + absl::Milliseconds(50) - absl::Now());
  std::vector<std::function<void()>> tasks;
  auto background = [&](std::function<void()> task) {
    tasks.push_back(std::move(task));
    return true;
  };
  for (const std::string& c : customers) {
    auto cached = benefits_->CachedWallet(WalletOf(c), background);
    ASSERT_TRUE(cached.has_value()) << c;
  }
  if (absl::Now() - priming >= ttl) GTEST_SKIP() << "the machine stalled past the TTL";
  ASSERT_EQ(tasks.size(), 1u) << "one task for all the refreshes";
  EXPECT_EQ(benefits_->CachedWallet(WalletOf("cust-1"))->points(), 100) << "not read yet";

  const absl::Time before = absl::Now();
  tasks[0]();
  EXPECT_GE(absl::Now() - before, benefits_->WalletRefreshLinger()) << "it waits for others first";
  ASSERT_EQ(tasks.size(), 2u) << "what did not fit in the batch went to a new task";
  EXPECT_EQ(benefits_->CachedWallet(WalletOf(last))->points(), 0) << "not in the first batch";
  tasks[1]();
  ASSERT_EQ(tasks.size(), 2u) << "nothing left for a third";
  EXPECT_EQ(benefits_->CachedWallet(WalletOf(last))->points(), 3);
  Benefits fresh(*pool_, *ledger_, clock_, BenefitsOptions{.qr_key = kKey});
  for (const std::string c : {"cust-1", "cust-2", "cust-3", "cust-4"}) {
    auto cached = benefits_->CachedWallet(WalletOf(c));
    ASSERT_TRUE(cached.has_value()) << c;
    auto read = fresh.GetWallet(WalletOf(c));
    ASSERT_TRUE(read.ok()) << read.status();
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*cached, *read))
        << c << ": refreshed " << cached->ShortDebugString() << ", read "
        << read->ShortDebugString();
  }
  EXPECT_EQ(benefits_->CachedWallet(WalletOf("cust-1"))->points(), 105);
  EXPECT_EQ(benefits_->CachedWallet(WalletOf("cust-1"))->points_expiring_30d(), 100);
  EXPECT_EQ(benefits_->CachedWallet(WalletOf("cust-2"))->coupons_size(), 1);
  EXPECT_EQ(benefits_->CachedWallet(WalletOf("cust-2"))->coupons(0).coupons_size(), 3);
  EXPECT_EQ(benefits_->CachedWallet(WalletOf("cust-4"))->points(), 9);
}

// A refresh nobody can read (the background refuses the task) is dropped, so the customer's next
// poll hands it out again; the entry is answered meanwhile.
TEST_F(BenefitsTest, AWalletRefreshTheBackgroundRefusesIsHandedOutAgain) {
  const absl::Duration ttl = absl::Seconds(2);
  benefits_ = std::make_unique<Benefits>(*pool_, *ledger_, clock_,
                                         BenefitsOptions{.qr_key = kKey, .wallet_cache_ttl = ttl});
  ASSERT_TRUE(benefits_->GetWallet(WalletOf("cust-1")).ok());
  const absl::Time cached_at = absl::Now();
  absl::SleepFor(ttl * 3 / 4 + absl::Milliseconds(50));
  int refused = 0;
  EXPECT_TRUE(benefits_
                  ->CachedWallet(WalletOf("cust-1"),
                                 [&](std::function<void()>) {
                                   ++refused;
                                   return false;
                                 })
                  .has_value());
  std::vector<std::function<void()>> tasks;
  EXPECT_TRUE(benefits_
                  ->CachedWallet(WalletOf("cust-1"),
                                 [&](std::function<void()> task) {
                                   tasks.push_back(std::move(task));
                                   return true;
                                 })
                  .has_value());
  if (absl::Now() - cached_at >= ttl) GTEST_SKIP() << "the machine stalled past the TTL";
  EXPECT_EQ(refused, 1);
  ASSERT_EQ(tasks.size(), 1u);
  tasks[0]();
}

}  // namespace
}  // namespace mkt::rewards
