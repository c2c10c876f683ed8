// Third-party benefit fulfilment against the real PostgreSQL and Kafka (decision 011): the
// success path (coupon REDEEMED, command on the outbox with its deterministic event id);
// retryable failures retried after an exponential backoff on a fake clock; a permanent failure,
// attempts running out, and a failure after the coupon expired, each compensated (budget, stock
// and the customer's holding back); duplicate and stale results changing nothing; and crashes
// (before the first attempt, between command and result through a real Kafka round trip with
// the component restarted, and between the compensation's commit and its ledger transfers).
// After every scenario: CheckIntegrity, no unapplied coupon intent, and the customer's COUPON
// account holds exactly their ISSUED coupons.
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "libs/core/status.h"
#include "libs/core/text.h"
#include "libs/kafka/kafka.h"
#include "libs/kafka/outbox.h"
#include "libs/pg/migrations.h"
#include "libs/pg/pool.h"
#include "libs/testing/testing.h"
#include "services/rewards/batcher.h"
#include "services/rewards/benefits.h"
#include "services/rewards/fulfilment.h"
#include "services/rewards/ledger_service.h"
#include "services/rewards/pg_ledger_store.h"
#include "tests/integration/switchable_ledger.h"

namespace mkt::rewards {
namespace {

namespace cpb = ::marketing::common::v1;

constexpr char kOrg[] = "bank-a";
constexpr char kCampaign[] = "camp-1";
constexpr char kTpl[] = "tpl-phone-credit";
constexpr char kCustomer[] = "cust-1";
constexpr int64_t kBudget = 100'000;
constexpr int64_t kStock = 50;
constexpr int64_t kCost = 1'000;

using FakeClock = testing::ManualClock;

class FulfilmentTest : public ::testing::Test {
 protected:
  FulfilmentTest() : clock_(absl::FromUnixSeconds(absl::ToUnixSeconds(absl::Now()))) {}

  void SetUp() override {
    auto pool = pg::Pool::Connect({.dsn = db_.dsn(), .size = 8});
    ASSERT_TRUE(pool.ok()) << pool.status();
    pool_ = *std::move(pool);
    ASSERT_TRUE(
        pg::ApplyMigrations(*pool_, {&kafka::OutboxMigrations(), &RewardsMigrations()}).ok());
    store_ = std::make_unique<PgLedgerStore>(*pool_, clock_);
    ledger_ = std::make_unique<SwitchableLedger>(*store_);
    batcher_ = std::make_unique<GrantBatcher>(*store_, BatcherOptions{});
    ledger_service_ = std::make_unique<LedgerService>(*batcher_, *store_, clock_);
    benefits_ = std::make_unique<Benefits>(
        *pool_, *ledger_, clock_,
        BenefitsOptions{.qr_key = "test-qr-signing-key-of-at-least-32-bytes!",
                        .repair_grace = absl::Seconds(10)});
    supplier_ = std::make_unique<KafkaSupplierAdapter>(
        KafkaSupplierOptions{.commands_topic = commands_topic_});
    StartFulfilments();

    pb::FundRequest f;
    f.set_request_id("fund-budget");
    f.set_org_id(kOrg);
    f.set_asset(pb::BUDGET_FEN);
    f.set_owner_id(kCampaign);
    f.set_amount(kBudget);
    ASSERT_TRUE(ledger_service_->Fund(f).ok());
    pb::BenefitTemplate t;
    t.set_id(kTpl);
    t.set_org_id(kOrg);
    t.set_type(pb::THIRD_PARTY);
    t.set_name("10 yuan of phone credit");
    t.set_supplier_id("telco-1");
    t.set_supplier_sku("topup-10");
    t.set_unit_cost_fen(kCost);
    t.set_total_stock(kStock);
    t.mutable_validity()->set_days_after_grant(7);
    ASSERT_TRUE(benefits_->CreateTemplate(t).ok());
    ASSERT_TRUE(benefits_->ActivateTemplate(kTpl).ok());
  }

  void TearDown() override {
    if (!HasFailure()) ExpectBooksBalanced();
  }

  // (Re)creates the component, as a process start does.
  void StartFulfilments() {
    fulfilments_.reset();
    fulfilments_ = std::make_unique<Fulfilments>(*pool_, *benefits_, *supplier_, clock_, options_);
  }

  void ExpectBooksBalanced() {
    auto integrity = store_->CheckIntegrity();
    ASSERT_TRUE(integrity.ok()) << integrity.status();
    EXPECT_TRUE(integrity->ok()) << integrity->DebugString();
    EXPECT_EQ(Count("SELECT count(*) FROM coupon_events WHERE NOT applied"), 0);
    EXPECT_EQ(Holding().balance(),
              Count("SELECT count(*) FROM coupons WHERE state = 1 AND customer_id = 'cust-1'"));
  }

  int64_t Count(const std::string& sql) {
    int64_t n = -1;
    EXPECT_TRUE(pg::WithTransaction(*pool_, [&](pqxx::work& tx) {
                  n = tx.exec(sql)[0][0].as<int64_t>();
                  return absl::OkStatus();
                }).ok());
    return n;
  }
  int64_t Commands(const std::string& fulfilment_id, int attempt) {
    return Count(absl::StrCat("SELECT count(*) FROM outbox WHERE topic = '", commands_topic_,
                              "' AND event_id = 'fulfilment-command:", fulfilment_id, ":", attempt,
                              "'"));
  }
  int64_t AllCommands() {
    return Count(absl::StrCat("SELECT count(*) FROM outbox WHERE topic = '", commands_topic_, "'"));
  }

  absl::StatusOr<pb::Coupon> Issue(const std::string& request) {
    pb::IssueCouponRequest r;
    r.set_request_id(request);
    r.set_template_id(kTpl);
    r.set_customer_id(kCustomer);
    r.set_campaign_id(kCampaign);
    return benefits_->IssueCoupon(r);
  }

  pb::Fulfilment Get(const pb::Coupon& c) {
    pb::GetFulfilmentRequest r;
    r.set_coupon_code(c.code());
    auto f = fulfilments_->GetFulfilment(r);
    EXPECT_TRUE(f.ok()) << f.status();
    return f.ok() ? *f : pb::Fulfilment();
  }

  absl::Status Reply(const std::string& event_id, const std::string& fulfilment_id,
                     pb::FulfilmentOutcome outcome, int attempt) {
    pb::FulfilmentResult r;
    r.set_fulfilment_id(fulfilment_id);
    r.set_outcome(outcome);
    r.set_attempt(attempt);
    r.set_supplier_reference(outcome == pb::SUCCEEDED ? "telco-ref-42" : "");
    r.set_message(outcome == pb::SUCCEEDED ? "" : "supplier says no");
    return fulfilments_->HandleResult(event_id, r);
  }

  pb::Account Account(const pb::AccountRef& ref) {
    auto a = store_->GetAccount(ref);
    EXPECT_TRUE(a.ok()) << a.status();
    return a.ok() ? *a : pb::Account();
  }
  pb::Account Holding() { return Account(CustomerCoupons(kOrg, kTpl, kCustomer)); }
  pb::Account Budget() {
    pb::AccountRef ref;
    ref.set_org_id(kOrg);
    ref.set_asset(pb::BUDGET_FEN);
    ref.set_owner_kind(pb::CAMPAIGN);
    ref.set_owner_id(kCampaign);
    return Account(ref);
  }
  pb::Account Stock() {
    pb::AccountRef ref;
    ref.set_org_id(kOrg);
    ref.set_asset(pb::STOCK);
    ref.set_asset_ref(kTpl);
    ref.set_owner_kind(pb::TEMPLATE);
    ref.set_owner_id(kTpl);
    return Account(ref);
  }

  void ExpectCompensated(const pb::Coupon& c) {
    EXPECT_EQ(Get(c).state(), pb::FULFILMENT_FAILED);
    EXPECT_EQ(benefits_->GetCoupon(c.code())->state(), pb::COUPON_VOIDED);
    EXPECT_EQ(Budget().balance(), kBudget);
    EXPECT_EQ(Stock().balance(), kStock);
    EXPECT_EQ(Holding().balance(), 0);
  }

  const std::string commands_topic_ = "mkt.fulfilment-commands.test";
  FakeClock clock_;
  FulfilmentOptions options_{.backoff_base = absl::Seconds(10),
                             .backoff_max = absl::Seconds(35),
                             .max_attempts = 4,
                             .result_timeout = absl::Minutes(5)};
  testing::TestDatabase db_;
  std::unique_ptr<pg::Pool> pool_;
  std::unique_ptr<PgLedgerStore> store_;
  std::unique_ptr<SwitchableLedger> ledger_;
  std::unique_ptr<GrantBatcher> batcher_;
  std::unique_ptr<LedgerService> ledger_service_;
  std::unique_ptr<Benefits> benefits_;
  std::unique_ptr<KafkaSupplierAdapter> supplier_;
  std::unique_ptr<Fulfilments> fulfilments_;
};

TEST_F(FulfilmentTest, SuccessDeliversOnceAndDuplicatesChangeNothing) {
  auto c = Issue("issue-1");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->state(), pb::COUPON_ISSUED);
  EXPECT_EQ(c->fulfilment_state(), pb::FULFILMENT_SUBMITTED);
  const std::string id = c->fulfilment_id();
  ASSERT_FALSE(id.empty());
  pb::Fulfilment f = Get(*c);
  EXPECT_EQ(f.state(), pb::FULFILMENT_SUBMITTED);
  EXPECT_EQ(f.attempt(), 1);
  EXPECT_EQ(f.supplier_id(), "telco-1");
  EXPECT_EQ(f.sku(), "topup-10");
  EXPECT_EQ(Commands(id, 1), 1);
  EXPECT_EQ(Holding().balance(), 1);
  EXPECT_EQ(Budget().balance(), kBudget - kCost);
  EXPECT_EQ(Stock().balance(), kStock - 1);

  // A replayed issue: the same coupon, no second fulfilment or command.
  auto again = Issue("issue-1");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->code(), c->code());
  EXPECT_EQ(AllCommands(), 1);
  EXPECT_EQ(Count("SELECT count(*) FROM fulfilments"), 1);
  EXPECT_EQ(fulfilments_->RunDue(100).value(), 0);  // nothing is due: no resend
  ExpectBooksBalanced();

  ASSERT_TRUE(Reply("sup-ev-1", id, pb::SUCCEEDED, 1).ok());
  f = Get(*c);
  EXPECT_EQ(f.state(), pb::FULFILMENT_FULFILLED);
  EXPECT_EQ(f.supplier_reference(), "telco-ref-42");
  EXPECT_EQ(benefits_->GetCoupon(c->code())->state(), pb::COUPON_REDEEMED);
  EXPECT_EQ(Holding().balance(), 0);
  EXPECT_EQ(Account(SystemCoupons(kOrg, kTpl, pb::ROLE_REDEMPTION)).balance(), 1);
  ExpectBooksBalanced();

  // The same event again, another success, a late failure: nothing moves.
  const int64_t events = f.events_size();
  ASSERT_TRUE(Reply("sup-ev-1", id, pb::SUCCEEDED, 1).ok());
  ASSERT_TRUE(Reply("sup-ev-2", id, pb::SUCCEEDED, 1).ok());
  ASSERT_TRUE(Reply("sup-ev-3", id, pb::FAILED_PERMANENT, 1).ok());
  ASSERT_TRUE(Reply("sup-ev-4", id, pb::FAILED_RETRYABLE, 1).ok());
  f = Get(*c);
  EXPECT_EQ(f.state(), pb::FULFILMENT_FULFILLED);
  EXPECT_EQ(f.events_size(), events);
  EXPECT_EQ(Budget().balance(), kBudget - kCost);
  EXPECT_EQ(Stock().balance(), kStock - 1);
  EXPECT_EQ(Account(SystemCoupons(kOrg, kTpl, pb::ROLE_REDEMPTION)).balance(), 1);

  // Who, what, when: issue → submit → succeeded.
  ASSERT_EQ(f.events_size(), 3);
  EXPECT_EQ(f.events(0).cause(), "issue");
  EXPECT_EQ(f.events(1).to_state(), pb::FULFILMENT_SUBMITTED);
  EXPECT_EQ(f.events(1).actor(), "issuer");
  EXPECT_EQ(f.events(2).to_state(), pb::FULFILMENT_FULFILLED);
  EXPECT_EQ(f.events(2).actor(), "supplier:telco-1");
  EXPECT_GT(f.events(2).at().seconds(), 0);

  // The wallet shows the delivery.
  pb::GetWalletRequest w;
  w.set_org_id(kOrg);
  w.set_customer_id(kCustomer);
  auto wallet = benefits_->GetWallet(w);
  ASSERT_TRUE(wallet.ok());
  ASSERT_EQ(wallet->coupons_size(), 1);
  EXPECT_EQ(wallet->coupons(0).coupons(0).fulfilment_state(), pb::FULFILMENT_FULFILLED);

  // Malformed and unknown results are permanent errors (dead-lettered by the consumer).
  EXPECT_TRUE(kafka::IsPermanent(Reply("sup-ev-9", "ful-999999", pb::SUCCEEDED, 1)));
  EXPECT_TRUE(kafka::IsPermanent(Reply("sup-ev-10", id, pb::FULFILMENT_OUTCOME_UNSPECIFIED, 1)));
  kafka::IncomingMessage garbage;
  garbage.value = "not an envelope";
  EXPECT_TRUE(kafka::IsPermanent(KafkaSupplierAdapter::HandleMessage(
      garbage, [](const std::string&, const pb::FulfilmentResult&) { return absl::OkStatus(); })));
}

TEST_F(FulfilmentTest, RetryableFailuresAreRetriedWithExponentialBackoff) {
  EXPECT_EQ(fulfilments_->BackoffAfter(1), absl::Seconds(10));
  EXPECT_EQ(fulfilments_->BackoffAfter(2), absl::Seconds(20));
  EXPECT_EQ(fulfilments_->BackoffAfter(3), absl::Seconds(35));  // capped
  auto c = Issue("issue-r");
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string id = c->fulfilment_id();

  ASSERT_TRUE(Reply("r-1", id, pb::FAILED_RETRYABLE, 1).ok());
  pb::Fulfilment f = Get(*c);
  EXPECT_EQ(f.state(), pb::FULFILMENT_RETRYING);
  EXPECT_EQ(f.next_attempt_at().seconds(), absl::ToUnixSeconds(clock_.Now() + absl::Seconds(10)));
  EXPECT_EQ(fulfilments_->RunDue(100).value(), 0);
  clock_.Advance(absl::Seconds(9));
  EXPECT_EQ(fulfilments_->RunDue(100).value(), 0);  // still backing off
  EXPECT_EQ(Commands(id, 2), 0);
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(fulfilments_->RunDue(100).value(), 1);
  EXPECT_EQ(Commands(id, 2), 1);
  f = Get(*c);
  EXPECT_EQ(f.state(), pb::FULFILMENT_SUBMITTED);
  EXPECT_EQ(f.attempt(), 2);

  // A late retryable failure of attempt 1 is superseded by attempt 2: ignored.
  ASSERT_TRUE(Reply("r-1-late", id, pb::FAILED_RETRYABLE, 1).ok());
  EXPECT_EQ(Get(*c).state(), pb::FULFILMENT_SUBMITTED);

  // Attempt 2 fails too: twice the wait.
  ASSERT_TRUE(Reply("r-2", id, pb::FAILED_RETRYABLE, 2).ok());
  clock_.Advance(absl::Seconds(19));
  EXPECT_EQ(fulfilments_->RunDue(100).value(), 0);
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(fulfilments_->RunDue(100).value(), 1);
  EXPECT_EQ(Commands(id, 3), 1);
  EXPECT_EQ(fulfilments_->RunDue(100).value(), 0);  // re-running changes nothing

  ASSERT_TRUE(Reply("r-3", id, pb::SUCCEEDED, 3).ok());
  f = Get(*c);
  EXPECT_EQ(f.state(), pb::FULFILMENT_FULFILLED);
  EXPECT_EQ(f.attempt(), 3);
  EXPECT_EQ(benefits_->GetCoupon(c->code())->state(), pb::COUPON_REDEEMED);
  EXPECT_EQ(Budget().balance(), kBudget - kCost);
  EXPECT_EQ(AllCommands(), 3);
}

TEST_F(FulfilmentTest, PermanentFailureIsCompensatedOnce) {
  auto c = Issue("issue-p");
  ASSERT_TRUE(c.ok()) << c.status();
  auto other = Issue("issue-other");  // untouched by the compensation of the first
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(Holding().balance(), 2);
  ASSERT_TRUE(Reply("p-1", c->fulfilment_id(), pb::FAILED_PERMANENT, 1).ok());
  EXPECT_EQ(Get(*c).failure_reason(), "supplier says no");
  EXPECT_EQ(Get(*c).state(), pb::FULFILMENT_FAILED);
  EXPECT_EQ(benefits_->GetCoupon(c->code())->state(), pb::COUPON_VOIDED);
  EXPECT_EQ(Budget().balance(), kBudget - kCost);  // only the other's cost stays spent
  EXPECT_EQ(Stock().balance(), kStock - 1);
  EXPECT_EQ(Holding().balance(), 1);
  auto reversal =
      store_->GetTransfer(absl::StrCat("cpn.", c->fulfilment_id().substr(4), ".compensate:budget"));
  ASSERT_TRUE(reversal.ok()) << reversal.status();
  EXPECT_EQ(reversal->code(), pb::REVERSE);
  ExpectBooksBalanced();

  // Duplicates and contradicting late results: no second reversal; a late success is recorded.
  ASSERT_TRUE(Reply("p-1", c->fulfilment_id(), pb::FAILED_PERMANENT, 1).ok());
  ASSERT_TRUE(Reply("p-2", c->fulfilment_id(), pb::FAILED_PERMANENT, 1).ok());
  ASSERT_TRUE(Reply("p-3", c->fulfilment_id(), pb::SUCCEEDED, 1).ok());
  EXPECT_EQ(Get(*c).state(), pb::FULFILMENT_FAILED);
  EXPECT_EQ(Get(*c).events().rbegin()->cause(), "late-success");
  EXPECT_EQ(Budget().balance(), kBudget - kCost);
  EXPECT_EQ(Stock().balance(), kStock - 1);
  EXPECT_EQ(Holding().balance(), 1);
  clock_.Advance(absl::Hours(1));
  EXPECT_EQ(fulfilments_->RunDue(100).value(), 1);  // only the other's overdue attempt
  EXPECT_EQ(benefits_->RepairLedger(100).value(), 0);
  ASSERT_TRUE(Reply("p-4", other->fulfilment_id(), pb::FAILED_PERMANENT, 2).ok());
  ExpectCompensated(*other);
}

// A supplier's text is cut on a character boundary and made valid UTF-8 before it is stored
// (decision 026): cut byte-wise, 200 three-byte characters end mid-character at byte 500,
// PostgreSQL refuses the row (22021) and the consumer retries the result for ever.
TEST_F(FulfilmentTest, SupplierTextIsCutOnACharacterBoundaryAndTheResultApplied) {
  std::string long_text;
  for (int i = 0; i < 200; ++i) long_text += "失";  // 600 bytes
  auto failed = Issue("issue-u1");
  ASSERT_TRUE(failed.ok()) << failed.status();
  pb::FulfilmentResult r;
  r.set_fulfilment_id(failed->fulfilment_id());
  r.set_outcome(pb::FAILED_PERMANENT);
  r.set_attempt(1);
  r.set_message(long_text);
  const absl::Status s1 = fulfilments_->HandleResult("u-1", r);
  ASSERT_TRUE(s1.ok()) << s1;
  pb::Fulfilment f = Get(*failed);
  EXPECT_EQ(f.state(), pb::FULFILMENT_FAILED);
  EXPECT_EQ(f.failure_reason(), long_text.substr(0, 498));  // 166 whole characters
  EXPECT_TRUE(IsWellFormedUtf8(f.events().rbegin()->detail()));
  EXPECT_LE(f.events().rbegin()->detail().size(), 500u);
  ExpectCompensated(*failed);

  // A success whose reference is too long and carries a NUL and a malformed byte.
  auto delivered = Issue("issue-u2");
  ASSERT_TRUE(delivered.ok()) << delivered.status();
  std::string reference = std::string("ref\0\xff-", 6);
  for (int i = 0; i < 100; ++i) reference += "券";  // 300 more bytes
  r.set_fulfilment_id(delivered->fulfilment_id());
  r.set_outcome(pb::SUCCEEDED);
  r.set_supplier_reference(reference);
  r.set_message(std::string("ok\xe5\xa4", 4));  // ends in a truncated character
  const absl::Status s2 = fulfilments_->HandleResult("u-2", r);
  ASSERT_TRUE(s2.ok()) << s2;
  f = Get(*delivered);
  EXPECT_EQ(f.state(), pb::FULFILMENT_FULFILLED);
  EXPECT_TRUE(IsWellFormedUtf8(f.supplier_reference()));
  EXPECT_LE(f.supplier_reference().size(), 200u);
  EXPECT_EQ(f.supplier_reference().substr(0, 10), "ref\uFFFD\uFFFD-");
  EXPECT_TRUE(IsWellFormedUtf8(f.events().rbegin()->detail()));
  EXPECT_EQ(benefits_->GetCoupon(delivered->code())->state(), pb::COUPON_REDEEMED);

  // The same success again (a late duplicate) on the failed one: its late-success row is stored.
  r.set_fulfilment_id(failed->fulfilment_id());
  const absl::Status s3 = fulfilments_->HandleResult("u-3", r);
  ASSERT_TRUE(s3.ok()) << s3;
  f = Get(*failed);
  EXPECT_EQ(f.events().rbegin()->cause(), "late-success");
  EXPECT_TRUE(IsWellFormedUtf8(f.events().rbegin()->detail()));
}

TEST_F(FulfilmentTest, UnansweredAttemptsRunOutAndAreCompensated) {
  auto c = Issue("issue-t");
  ASSERT_TRUE(c.ok()) << c.status();
  for (int attempt = 2; attempt <= options_.max_attempts; ++attempt) {
    clock_.Advance(options_.result_timeout - absl::Seconds(1));
    EXPECT_EQ(fulfilments_->RunDue(100).value(), 0);
    clock_.Advance(absl::Seconds(1));
    EXPECT_EQ(fulfilments_->RunDue(100).value(), 1);
    EXPECT_EQ(Get(*c).attempt(), attempt);
    EXPECT_EQ(Commands(c->fulfilment_id(), attempt), 1);
  }
  EXPECT_EQ(Holding().balance(), 1);
  clock_.Advance(options_.result_timeout);
  EXPECT_EQ(fulfilments_->RunDue(100).value(), 1);
  ExpectCompensated(*c);
  EXPECT_EQ(Get(*c).events().rbegin()->cause(), "attempts-exhausted");
  EXPECT_EQ(AllCommands(), options_.max_attempts);
}

TEST_F(FulfilmentTest, FailureAfterTheBenefitExpiredGivesBackTheExpiredUnitToo) {
  auto c = Issue("issue-e");
  ASSERT_TRUE(c.ok()) << c.status();
  auto expired = benefits_->RunCouponExpiry(clock_.Now() + absl::Hours(24 * 8), 100);
  ASSERT_TRUE(expired.ok());
  EXPECT_EQ(expired->coupons_expired(), 1);
  EXPECT_EQ(Holding().balance(), 0);
  ASSERT_TRUE(Reply("e-1", c->fulfilment_id(), pb::FAILED_PERMANENT, 1).ok());
  ExpectCompensated(*c);
  EXPECT_EQ(Account(SystemCoupons(kOrg, kTpl, pb::ROLE_EXPIRY)).balance(), 0);
}

TEST_F(FulfilmentTest, CrashBeforeTheFirstAttemptIsResumedByTheScheduler) {
  fulfilments_.reset();  // the process dies right after the issue commits
  auto c = Issue("issue-c");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->fulfilment_state(), pb::FULFILMENT_PENDING);
  EXPECT_EQ(AllCommands(), 0);
  StartFulfilments();
  EXPECT_EQ(fulfilments_->RunDue(100).value(), 1);
  EXPECT_EQ(Commands(c->fulfilment_id(), 1), 1);
  EXPECT_EQ(fulfilments_->RunDue(100).value(), 0);
  EXPECT_EQ(Get(*c).events(1).actor(), "job:fulfilment-scheduler");
}

// A benefit never sent (the process died before its first attempt, and stayed down) whose coupon
// expired meanwhile will not be delivered: the scheduler fails it and gives the issue back
// (budget, stock, and the unit the expiry moved), instead of leaving it PENDING for ever.
TEST_F(FulfilmentTest, ABenefitThatExpiredBeforeItWasEverSentIsFailedAndCompensated) {
  fulfilments_.reset();  // the process dies right after the issue commits
  auto c = Issue("issue-x");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->fulfilment_state(), pb::FULFILMENT_PENDING);
  auto expired = benefits_->RunCouponExpiry(clock_.Now() + absl::Hours(24 * 8), 100);
  ASSERT_TRUE(expired.ok()) << expired.status();
  EXPECT_EQ(expired->coupons_expired(), 1);
  EXPECT_EQ(benefits_->GetCoupon(c->code())->state(), pb::COUPON_EXPIRED);
  EXPECT_EQ(Budget().balance(), kBudget - kCost);
  EXPECT_EQ(Stock().balance(), kStock - 1);

  clock_.Advance(absl::Hours(24 * 8));
  StartFulfilments();
  EXPECT_EQ(fulfilments_->RunDue(100).value(), 1);
  ExpectCompensated(*c);
  EXPECT_EQ(Account(SystemCoupons(kOrg, kTpl, pb::ROLE_EXPIRY)).balance(), 0);
  const pb::Fulfilment f = Get(*c);
  EXPECT_EQ(f.attempt(), 0);
  EXPECT_EQ(f.events().rbegin()->cause(), "expired-unsent");
  EXPECT_EQ(f.events().rbegin()->actor(), "job:fulfilment-scheduler");
  EXPECT_EQ(AllCommands(), 0);  // nothing went to the supplier
  EXPECT_EQ(fulfilments_->RunDue(100).value(), 0);
  ExpectBooksBalanced();
}

TEST_F(FulfilmentTest, CrashBetweenCompensationAndLedgerIsRepaired) {
  auto c = Issue("issue-l");
  ASSERT_TRUE(c.ok()) << c.status();
  ledger_->down = true;
  ASSERT_TRUE(Reply("l-1", c->fulfilment_id(), pb::FAILED_PERMANENT, 1).ok());
  EXPECT_EQ(Get(*c).state(), pb::FULFILMENT_FAILED);
  EXPECT_EQ(Budget().balance(), kBudget - kCost);  // the ledger has not followed yet
  EXPECT_EQ(Count("SELECT count(*) FROM coupon_events WHERE NOT applied"), 1);
  ledger_->down = false;
  clock_.Advance(absl::Seconds(11));
  EXPECT_EQ(benefits_->RepairLedger(100).value(), 1);
  ExpectCompensated(*c);
  EXPECT_EQ(benefits_->RepairLedger(100).value(), 0);
}

// The whole loop through the real broker: the relay publishes the command, a supplier consumes
// it and answers on the results topic, and the adapter's consumer applies the answer. The
// component is stopped between the command and the result and a new one picks the answer up.
TEST_F(FulfilmentTest, CrashBetweenCommandAndResultIsResumedThroughKafka) {
  const std::string commands = testing::NewTopic("mkt.fulfilment-commands.test", 1);
  const std::string results = testing::NewTopic("mkt.fulfilment-results.test", 1);
  const std::string dead = testing::NewTopic("mkt.dead-letters.test", 1);
  const kafka::ClientOptions client{.bootstrap_servers = testing::KafkaBootstrap(),
                                    .client_id = "fulfilment-test"};
  auto producer = kafka::Producer::Create(client);
  ASSERT_TRUE(producer.ok()) << producer.status();
  fulfilments_.reset();
  supplier_ = std::make_unique<KafkaSupplierAdapter>(
      KafkaSupplierOptions{.client = client,
                           .commands_topic = commands,
                           .results_topic = results,
                           .group_id = "fulfilment-test-" + RandomHex(4),
                           .dead_letter_topic = dead,
                           .dead_letters = producer->get()});
  StartFulfilments();
  auto c = Issue("issue-k");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(Get(*c).state(), pb::FULFILMENT_SUBMITTED);
  // Crash: the component goes away with the command in the outbox and no result yet.
  supplier_->Stop();
  fulfilments_.reset();

  // Only the command goes to the broker: the ledger's facts would land on the shared topic.
  Count(absl::StrCat("WITH s AS (UPDATE outbox SET sent_at = now() WHERE topic <> '", commands,
                     "' RETURNING 1) SELECT count(*) FROM s"));
  kafka::OutboxRelay relay(*pool_, **producer);
  ASSERT_EQ(relay.RelayOnce().value(), 1);

  // The supplier: takes each command once and answers it (twice: at-least-once delivery).
  auto supplier_consumer = kafka::Consumer::Create({.client = client,
                                                    .group_id = "supplier-" + RandomHex(4),
                                                    .topics = {commands},
                                                    .metrics_name = "supplier_test",
                                                    .dead_letter_topic = dead},
                                                   producer->get());
  ASSERT_TRUE(supplier_consumer.ok()) << supplier_consumer.status();
  std::atomic<int> commands_seen{0};
  std::string seen_event_id;
  std::thread supplier_thread([&] {
    (*supplier_consumer)->Run([&](const kafka::IncomingMessage& m) -> absl::Status {
      MKT_ASSIGN_OR_RETURN(const cpb::Envelope env, kafka::ParseEnvelope(m));
      pb::FulfilmentCommand command;
      if (!env.payload().UnpackTo(&command)) return InvalidArgument("payload", "no command");
      seen_event_id = env.event_id();
      pb::FulfilmentResult r;
      r.set_fulfilment_id(command.fulfilment_id());
      r.set_attempt(command.attempt());
      r.set_outcome(pb::SUCCEEDED);
      r.set_supplier_reference("telco-" + command.fulfilment_id());
      auto reply = kafka::MakeEnvelope("telco.FulfilmentResult", command.org_id(), "t", r);
      const std::string value = reply.SerializeAsString();
      MKT_RETURN_IF_ERROR((*producer)->Publish(
          {{results, m.key, value, {}}, {results, m.key, value, {}}}, absl::Seconds(10)));
      ++commands_seen;
      return absl::OkStatus();
    });
  });

  // Restart: a new component and adapter consume the answers.
  supplier_ = std::make_unique<KafkaSupplierAdapter>(
      KafkaSupplierOptions{.client = client,
                           .commands_topic = commands,
                           .results_topic = results,
                           .group_id = "fulfilment-test-" + RandomHex(4),
                           .dead_letter_topic = dead,
                           .dead_letters = producer->get()});
  StartFulfilments();
  std::atomic<int> handled{0};
  ASSERT_TRUE(supplier_
                  ->Start([&](const std::string& event_id, const pb::FulfilmentResult& r) {
                    absl::Status s = fulfilments_->HandleResult(event_id, r);
                    ++handled;
                    return s;
                  })
                  .ok());
  const absl::Time deadline = absl::Now() + absl::Seconds(40);
  while (handled < 2 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(50));
  supplier_->Stop();
  (*supplier_consumer)->Stop();
  supplier_thread.join();
  ASSERT_EQ(commands_seen, 1);
  EXPECT_EQ(seen_event_id, absl::StrCat("fulfilment-command:", c->fulfilment_id(), ":1"));
  ASSERT_EQ(handled, 2);
  pb::Fulfilment f = Get(*c);
  EXPECT_EQ(f.state(), pb::FULFILMENT_FULFILLED);
  EXPECT_EQ(f.supplier_reference(), "telco-" + c->fulfilment_id());
  EXPECT_EQ(f.events_size(), 3);  // issue, submit, succeeded: the duplicate changed nothing
  EXPECT_EQ(benefits_->GetCoupon(c->code())->state(), pb::COUPON_REDEEMED);
  EXPECT_EQ(Holding().balance(), 0);
}

}  // namespace
}  // namespace mkt::rewards
