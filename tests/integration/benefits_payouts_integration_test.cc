// Red-envelope payouts against the real PostgreSQL and Kafka (decision 011): the reservation and
// the command leave together; success posts and failure voids the reservation; a duplicate reply
// (same event, or a second reply for a settled payout) changes nothing; the ledger's invariants
// hold after each step. One scenario runs core banking's replies through a real kafka::Consumer.
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "libs/core/status.h"
#include "libs/core/text.h"
#include "libs/kafka/kafka.h"
#include "libs/kafka/outbox.h"
#include "libs/pg/migrations.h"
#include "libs/pg/pool.h"
#include "libs/testing/testing.h"
#include "services/rewards/batcher.h"
#include "services/rewards/ledger_service.h"
#include "services/rewards/payouts.h"
#include "services/rewards/pg_ledger_store.h"
#include "tests/integration/switchable_ledger.h"

namespace mkt::rewards {
namespace {

namespace cpb = ::marketing::common::v1;
constexpr char kOrg[] = "bank-a";

// The real store, with hooks around each payout reservation it is asked for (numbered from 1),
// so that a test can interleave two calls with the same request_id exactly.
class InterleavingLedger final : public ForwardingLedgerStore {
 public:
  using ForwardingLedgerStore::ForwardingLedgerStore;
  std::function<void(int reservation)> before;
  std::function<void(int reservation)> after;

  absl::StatusOr<std::vector<BatchResult>> Apply(const std::vector<LinkedBatch>& b) override {
    const int n = b.size() == 1 && absl::EndsWith(b[0].batch_id, ".reserve") ? ++reservations_ : 0;
    if (n > 0 && before) before(n);
    auto results = real_.Apply(b);
    if (n > 0 && after) after(n);
    return results;
  }

 private:
  std::atomic<int> reservations_{0};
};

class PayoutsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pool = pg::Pool::Connect({.dsn = db_.dsn(), .size = 6});
    ASSERT_TRUE(pool.ok()) << pool.status();
    pool_ = *std::move(pool);
    ASSERT_TRUE(
        pg::ApplyMigrations(*pool_, {&kafka::OutboxMigrations(), &RewardsMigrations()}).ok());
    store_ = std::make_unique<PgLedgerStore>(*pool_, SystemClock());
    batcher_ = std::make_unique<GrantBatcher>(*store_, BatcherOptions{});
    ledger_ = std::make_unique<LedgerService>(*batcher_, *store_, SystemClock());
    payouts_ = std::make_unique<Payouts>(*pool_, *store_, SystemClock());
    // A red envelope: 1000 fen credited to the customer's CASH_FEN account.
    pb::GrantRequest g;
    g.set_request_id("red-envelope-1");
    g.set_org_id(kOrg);
    g.set_campaign_id("camp-1");
    g.set_customer_id("cust-1");
    g.set_asset(pb::CASH_FEN);
    g.set_quantity(1000);
    ASSERT_TRUE(ledger_->Grant(g).ok());
  }

  void TearDown() override { ExpectBalanced(); }

  void ExpectBalanced() {
    auto integrity = store_->CheckIntegrity();
    ASSERT_TRUE(integrity.ok()) << integrity.status();
    EXPECT_TRUE(integrity->ok()) << integrity->DebugString();
  }

  absl::StatusOr<pb::Payout> Request(const std::string& id, int64_t fen) {
    pb::RequestPayoutRequest r;
    r.set_request_id(id);
    r.set_org_id(kOrg);
    r.set_customer_id("cust-1");
    r.set_amount_fen(fen);
    r.set_bank_account("6222020200112233");
    return payouts_->RequestPayout(r);
  }

  static kafka::IncomingMessage Reply(const std::string& event_id, const std::string& payout,
                                      bool success) {
    pb::PayoutResult result;
    result.set_payout_id(payout);
    result.set_success(success);
    result.set_failure_reason(success ? "" : "account closed");
    auto envelope = kafka::MakeEnvelope("core.PayoutResult", kOrg, "t", result);
    envelope.set_event_id(event_id);
    kafka::IncomingMessage m;
    m.topic = kPayoutResultsTopic;
    m.key = "cust-1";
    m.value = envelope.SerializeAsString();
    return m;
  }

  int64_t Count(const std::string& sql) {
    int64_t n = -1;
    EXPECT_TRUE(pg::WithTransaction(*pool_, [&](pqxx::work& tx) {
                  n = tx.exec(sql)[0][0].as<int64_t>();
                  return absl::OkStatus();
                }).ok());
    return n;
  }
  int64_t CommandsOf(const std::string& payout) {
    return Count(absl::StrCat("SELECT count(*) FROM outbox WHERE topic = '", kPayoutCommandsTopic,
                              "' AND event_id = 'payout-command:", payout, "'"));
  }
  // Waits (up to 5 s) until `payout` has no unreserved row (state 0) any more: deleted, or moved
  // on by another call.
  void AwaitUnreservedRowGone(const std::string& payout) {
    const std::string sql =
        "SELECT count(*) FROM payouts WHERE state = 0 AND id = '" + payout + "'";
    const absl::Time deadline = absl::Now() + absl::Seconds(5);
    while (Count(sql) > 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(10));
  }
  void GrantCash(const std::string& request_id, int64_t fen) {
    pb::GrantRequest g;
    g.set_request_id(request_id);
    g.set_org_id(kOrg);
    g.set_campaign_id("camp-1");
    g.set_customer_id("cust-1");
    g.set_asset(pb::CASH_FEN);
    g.set_quantity(fen);
    auto granted = ledger_->Grant(g);
    ASSERT_TRUE(granted.ok()) << granted.status();
  }

  // Two calls with one request_id: A's reservation is refused (the customer holds 1000 fen of
  // the 1500 asked for), then cash arrives and B's is accepted. `cleanup_first`: A's clean-up of
  // its refused payout runs after B read the row but before B's reservation; otherwise after B's
  // reservation was accepted and before B marks the payout REQUESTED. Whatever the order, a hold
  // of the customer's cash comes with a REQUESTED payout and its one command (else it would stay
  // held for ever: holds have no timeout), and B is answered with that payout.
  void RefusedAndAcceptedReservationsOfOneRequest(const std::string& id, bool cleanup_first) {
    InterleavingLedger hooked(*store_);
    Payouts payouts(*pool_, hooked, SystemClock());
    pb::RequestPayoutRequest req;
    req.set_request_id(id);
    req.set_org_id(kOrg);
    req.set_customer_id("cust-1");
    req.set_amount_fen(1500);
    req.set_bank_account("6222020200112233");
    absl::Notification b_reached;
    absl::StatusOr<pb::Payout> b_answer = Internal("B did not run");
    std::thread b;
    hooked.before = [&](int n) {
      if (n != 2) return;
      b_reached.Notify();
      if (cleanup_first) AwaitUnreservedRowGone(id);  // A deletes its row now
    };
    hooked.after = [&](int n) {
      if (n == 1) {  // A's reservation was refused
        GrantCash("cash-arrives-" + id, 1000);
        b = std::thread([&] { b_answer = payouts.RequestPayout(req); });
        b_reached.WaitForNotification();
        if (!cleanup_first) {
          // Let B's reservation be applied before A cleans up.
          for (int i = 0; i < 500 && !store_->GetTransfer(ReserveOf(id)).ok(); ++i) {
            absl::SleepFor(absl::Milliseconds(10));
          }
        }
      } else if (n == 2 && !cleanup_first) {
        AwaitUnreservedRowGone(id);  // B marks it REQUESTED after A's clean-up
      }
    };
    absl::StatusOr<pb::Payout> a_answer = payouts.RequestPayout(req);
    b.join();

    auto hold = store_->GetTransfer(ReserveOf(id));
    ASSERT_TRUE(hold.ok()) << "B's reservation was accepted: " << hold.status();
    EXPECT_EQ(hold->state(), pb::PENDING);
    auto row = payouts.GetPayout(id);
    ASSERT_TRUE(row.ok()) << "a hold without its payout: " << row.status();
    EXPECT_EQ(row->state(), pb::PAYOUT_REQUESTED);
    EXPECT_EQ(row->amount_fen(), 1500);
    EXPECT_EQ(CommandsOf(id), 1);
    ASSERT_TRUE(b_answer.ok()) << b_answer.status();
    EXPECT_EQ(b_answer->state(), pb::PAYOUT_REQUESTED);
    if (a_answer.ok()) {
      EXPECT_EQ(a_answer->state(), pb::PAYOUT_REQUESTED);
    } else {
      EXPECT_EQ(ReasonOf(a_answer.status()), cpb::INSUFFICIENT_BALANCE) << a_answer.status();
    }
    EXPECT_EQ(Cash().debits_pending(), 1500);
    EXPECT_EQ(Count("SELECT count(*) FROM payouts WHERE NOT intent_applied"), 0);
    // Core banking's answer settles it as any other payout.
    ASSERT_TRUE(payouts.HandleResult(Reply("ev-" + id, id, true)).ok());
    EXPECT_EQ(payouts.GetPayout(id)->state(), pb::PAYOUT_SUCCEEDED);
    EXPECT_EQ(Cash().debits_pending(), 0);
    EXPECT_EQ(PayoutAccount().balance(), 1500);
  }

  static std::string ReserveOf(const std::string& id) { return "pay." + id + ".reserve"; }

  pb::Account Cash() { return *store_->GetAccount(CustomerAccount(kOrg, pb::CASH_FEN, "cust-1")); }
  pb::Account PayoutAccount() {
    return *store_->GetAccount(SystemAccount(kOrg, pb::CASH_FEN, pb::ROLE_PAYOUT));
  }

  int64_t Commands() {
    int64_t n = 0;
    EXPECT_TRUE(pg::WithTransaction(*pool_, [&](pqxx::work& tx) {
                  n = tx.exec_params("SELECT count(*) FROM outbox WHERE topic = $1",
                                     std::string(kPayoutCommandsTopic))[0][0]
                          .as<int64_t>();
                  return absl::OkStatus();
                }).ok());
    return n;
  }

  testing::TestDatabase db_;
  std::unique_ptr<pg::Pool> pool_;
  std::unique_ptr<PgLedgerStore> store_;
  std::unique_ptr<GrantBatcher> batcher_;
  std::unique_ptr<LedgerService> ledger_;
  std::unique_ptr<Payouts> payouts_;
};

TEST_F(PayoutsTest, SuccessPostsFailureVoidsDuplicatesChangeNothing) {
  auto p = Request("pay-1", 600);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->state(), pb::PAYOUT_REQUESTED);
  EXPECT_EQ(Cash().available(), 400);
  EXPECT_EQ(Cash().debits_pending(), 600);
  EXPECT_EQ(Commands(), 1);
  ASSERT_TRUE(Request("pay-1", 600).ok());  // replay: no second reservation or command
  EXPECT_EQ(Commands(), 1);
  EXPECT_EQ(ReasonOf(Request("pay-1", 601).status()), cpb::IDEMPOTENCY_KEY_REUSED);
  EXPECT_EQ(ReasonOf(Request("pay-2", 401).status()), cpb::INSUFFICIENT_BALANCE);
  EXPECT_EQ(ReasonOf(payouts_->GetPayout("pay-2").status()), cpb::NOT_FOUND);
  EXPECT_EQ(ReasonOf(Request("pay-3", -5).status()), cpb::INVALID_ARGUMENT);
  ExpectBalanced();

  ASSERT_TRUE(payouts_->HandleResult(Reply("ev-1", "pay-1", true)).ok());
  EXPECT_EQ(payouts_->GetPayout("pay-1")->state(), pb::PAYOUT_SUCCEEDED);
  EXPECT_EQ(Cash().balance(), 400);
  EXPECT_EQ(Cash().debits_pending(), 0);
  EXPECT_EQ(PayoutAccount().balance(), 600);
  ExpectBalanced();
  // The same reply again, and a contradicting late reply: nothing changes.
  ASSERT_TRUE(payouts_->HandleResult(Reply("ev-1", "pay-1", true)).ok());
  ASSERT_TRUE(payouts_->HandleResult(Reply("ev-2", "pay-1", false)).ok());
  EXPECT_EQ(payouts_->GetPayout("pay-1")->state(), pb::PAYOUT_SUCCEEDED);
  EXPECT_EQ(Cash().balance(), 400);
  EXPECT_EQ(PayoutAccount().balance(), 600);
  ExpectBalanced();

  auto q = Request("pay-4", 300);
  ASSERT_TRUE(q.ok()) << q.status();
  ASSERT_TRUE(payouts_->HandleResult(Reply("ev-3", "pay-4", false)).ok());
  auto failed = payouts_->GetPayout("pay-4");
  EXPECT_EQ(failed->state(), pb::PAYOUT_FAILED);
  EXPECT_EQ(failed->failure_reason(), "account closed");
  EXPECT_EQ(Cash().available(), 400);  // the cash is back
  EXPECT_EQ(PayoutAccount().balance(), 600);
  ASSERT_TRUE(payouts_->HandleResult(Reply("ev-3", "pay-4", false)).ok());
  EXPECT_EQ(Cash().available(), 400);

  // Garbage and unknown payouts are permanent errors (dead-lettered by the consumer).
  kafka::IncomingMessage garbage;
  garbage.value = "not an envelope";
  EXPECT_TRUE(kafka::IsPermanent(payouts_->HandleResult(garbage)));
  EXPECT_TRUE(kafka::IsPermanent(payouts_->HandleResult(Reply("ev-9", "pay-unknown", true))));
}

// Core banking's text is cut on a character boundary and made valid UTF-8 before it is stored
// (decision 026): a reason of 200 three-byte characters cut at byte 500 would end mid-character,
// PostgreSQL would refuse it (22021) and the consumer would retry the message for ever.
TEST_F(PayoutsTest, TextFromCoreBankingIsCutOnACharacterBoundaryAndTheResultApplied) {
  ASSERT_TRUE(Request("pay-u", 600).ok());
  std::string reason;
  for (int i = 0; i < 200; ++i) reason += "失";  // 600 bytes
  pb::PayoutResult result;
  result.set_payout_id("pay-u");
  result.set_success(false);
  result.set_failure_reason(reason);
  std::string reference_in = std::string("ref-\0", 5);  // NUL: valid UTF-8, refused as text
  for (int i = 0; i < 40; ++i) reference_in += "号";
  result.set_core_reference(reference_in);
  auto envelope = kafka::MakeEnvelope("core.PayoutResult", kOrg, "t", result);
  envelope.set_event_id("ev-utf8");
  kafka::IncomingMessage m;
  m.topic = kPayoutResultsTopic;
  m.key = "cust-1";
  m.value = envelope.SerializeAsString();
  const absl::Status handled = payouts_->HandleResult(m);
  ASSERT_TRUE(handled.ok()) << handled;
  auto p = payouts_->GetPayout("pay-u");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->state(), pb::PAYOUT_FAILED);
  EXPECT_TRUE(IsWellFormedUtf8(p->failure_reason()));
  EXPECT_EQ(p->failure_reason(), reason.substr(0, 498));  // 166 whole characters
  std::string reference;
  ASSERT_TRUE(pg::WithTransaction(*pool_, [&](pqxx::work& tx) {
                reference = tx.exec("SELECT core_reference FROM payouts WHERE id = 'pay-u'")[0][0]
                                .as<std::string>();
                return absl::OkStatus();
              }).ok());
  // The NUL replaced by U+FFFD, then cut to 100 bytes on a character boundary.
  EXPECT_EQ(reference, "ref-\uFFFD" + reference_in.substr(5, 93));
  EXPECT_TRUE(IsWellFormedUtf8(reference));
  EXPECT_EQ(Cash().available(), 1000);  // the void was applied: the cash is back
  EXPECT_EQ(Cash().debits_pending(), 0);
}

// Core banking may answer a payout days later. Its cash hold has no timeout (decision 011,
// amended): the ledger's sweeper of timed-out reservations never gives the cash back to the
// customer while the payout is REQUESTED, so a late success posts it (the customer is paid once).
TEST_F(PayoutsTest, AHoldOutlivesTheTimeoutSweeperAndALateSuccessMovesTheCash) {
  auto p = Request("pay-late", 600);
  ASSERT_TRUE(p.ok()) << p.status();
  auto hold = store_->GetTransfer("pay.pay-late.reserve");
  ASSERT_TRUE(hold.ok()) << hold.status();
  EXPECT_EQ(hold->state(), pb::PENDING);
  EXPECT_FALSE(hold->has_timeout_at());
  // Two days of the generic sweeper (main.cc runs it with the wall clock).
  EXPECT_EQ(*store_->VoidTimedOutPending(absl::Now() + absl::Hours(48), 100), 0);
  EXPECT_EQ(store_->GetTransfer("pay.pay-late.reserve")->state(), pb::PENDING);
  EXPECT_EQ(Cash().available(), 400);  // still held: not the customer's to spend again
  EXPECT_EQ(ReasonOf(Request("pay-again", 401).status()), cpb::INSUFFICIENT_BALANCE);

  ASSERT_TRUE(payouts_->HandleResult(Reply("ev-late", "pay-late", true)).ok());
  EXPECT_EQ(payouts_->GetPayout("pay-late")->state(), pb::PAYOUT_SUCCEEDED);
  auto posting = store_->GetTransfer("pay.pay-late.post");
  ASSERT_TRUE(posting.ok()) << posting.status();
  EXPECT_EQ(posting->state(), pb::POSTED);
  EXPECT_EQ(Cash().balance(), 400);
  EXPECT_EQ(Cash().debits_pending(), 0);
  EXPECT_EQ(PayoutAccount().balance(), 600);
  int64_t behind = -1;  // nothing left for the repair loop to retry
  ASSERT_TRUE(
      pg::WithTransaction(*pool_, [&](pqxx::work& tx) {
        behind =
            tx.exec("SELECT count(*) FROM payouts WHERE NOT intent_applied")[0][0].as<int64_t>();
        return absl::OkStatus();
      }).ok());
  EXPECT_EQ(behind, 0);
  ExpectBalanced();
}

TEST_F(PayoutsTest, ARefusedCallDoesNotDeleteThePayoutOfAConcurrentAcceptedOne) {
  RefusedAndAcceptedReservationsOfOneRequest("pay-race", /*cleanup_first=*/false);
}

TEST_F(PayoutsTest, AReservationAcceptedAfterTheRefusedCallsCleanUpWritesItsPayoutAgain) {
  RefusedAndAcceptedReservationsOfOneRequest("pay-race", /*cleanup_first=*/true);
}

TEST_F(PayoutsTest, RepliesThroughARealKafkaConsumerAreAppliedOnce) {
  ASSERT_TRUE(Request("pay-k", 700).ok());
  const std::string topic = testing::NewTopic("mkt.payout-results.test", 1);
  const std::string dead = testing::NewTopic("mkt.dead-letters.test", 1);
  const kafka::ClientOptions client{.bootstrap_servers = testing::KafkaBootstrap(),
                                    .client_id = "payouts-test"};
  auto producer = kafka::Producer::Create(client);
  ASSERT_TRUE(producer.ok());
  const kafka::IncomingMessage reply = Reply("core-ev-1", "pay-k", true);
  // Core banking delivers its reply twice (at-least-once).
  ASSERT_TRUE(
      (*producer)
          ->Publish({{topic, "cust-1", reply.value, {}}, {topic, "cust-1", reply.value, {}}},
                    absl::Seconds(10))
          .ok());
  auto consumer = kafka::Consumer::Create({.client = client,
                                           .group_id = "payouts-test-" + RandomHex(4),
                                           .topics = {topic},
                                           .metrics_name = "payouts_test",
                                           .dead_letter_topic = dead},
                                          producer->get());
  ASSERT_TRUE(consumer.ok()) << consumer.status();
  std::atomic<int> handled{0};
  std::thread runner([&] {
    (*consumer)->Run([&](const kafka::IncomingMessage& m) {
      absl::Status s = payouts_->HandleResult(m);
      ++handled;
      return s;
    });
  });
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (handled < 2 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(50));
  (*consumer)->Stop();
  runner.join();
  ASSERT_EQ(handled, 2);
  EXPECT_EQ(payouts_->GetPayout("pay-k")->state(), pb::PAYOUT_SUCCEEDED);
  EXPECT_EQ(Cash().balance(), 300);
  EXPECT_EQ(PayoutAccount().balance(), 700);
}

}  // namespace
}  // namespace mkt::rewards
