// Campaign budgets funded up to their published caps (decision 034), against the real PostgreSQL
// ledger: only a published version with a cap funds; a replayed change funds nothing; raising the
// cap funds the difference, lowering it takes nothing back; money funded by hand counts towards
// the cap; a change of a campaign whose window is over funds nothing; a long campaign id still
// gets a valid request id; a message that is not a change is
// refused; and changes of one campaign handled at the same time by two replicas never fund past
// the highest cap. Decision 035: an ended campaign's unspent budget goes back to the org once the
// release delay has passed, and what comes back into it later goes too. After every scenario the
// ledger's integrity check holds.
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "libs/kafka/outbox.h"
#include "libs/pg/migrations.h"
#include "libs/pg/pool.h"
#include "libs/testing/testing.h"
#include "services/rewards/batcher.h"
#include "services/rewards/campaign_budgets.h"
#include "services/rewards/ledger_service.h"
#include "services/rewards/pg_ledger_store.h"

namespace mkt::rewards {
namespace {

namespace cpb = ::marketing::campaigns::v1;

constexpr char kOrg[] = "bank-a";

cpb::CampaignChanged Change(const std::string& campaign, cpb::CampaignState state,
                            int64_t cap_fen) {
  cpb::CampaignChanged change;
  change.set_campaign_id(campaign);
  change.set_org_id(kOrg);
  change.set_state(state);
  change.mutable_config()->set_type(cpb::EVENT_TRIGGER);
  change.mutable_config()->set_budget_cap_fen(cap_fen);
  return change;
}

class CampaignBudgetsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pool = pg::Pool::Connect({.dsn = db_.dsn(), .size = 8});
    ASSERT_TRUE(pool.ok()) << pool.status();
    pool_ = *std::move(pool);
    ASSERT_TRUE(
        pg::ApplyMigrations(*pool_, {&kafka::OutboxMigrations(), &RewardsMigrations()}).ok());
    store_ = std::make_unique<PgLedgerStore>(*pool_, SystemClock());
    batcher_ = std::make_unique<GrantBatcher>(*store_, BatcherOptions{});
    ledger_ = std::make_unique<LedgerService>(*batcher_, *store_, SystemClock());
    auto lock_pool = pg::Pool::Connect({.dsn = db_.dsn(), .size = 1});
    ASSERT_TRUE(lock_pool.ok()) << lock_pool.status();
    lock_pool_ = *std::move(lock_pool);
    budgets_ = std::make_unique<CampaignBudgets>(*lock_pool_, *ledger_);
  }

  void TearDown() override {
    auto integrity = store_->CheckIntegrity();
    ASSERT_TRUE(integrity.ok()) << integrity.status();
    EXPECT_TRUE(integrity->ok()) << integrity->DebugString();
  }

  int64_t Apply(const cpb::CampaignChanged& change) {
    absl::StatusOr<int64_t> funded = budgets_->Apply(change);
    EXPECT_TRUE(funded.ok()) << funded.status();
    return funded.value_or(-1);
  }

  // The campaign's budget account balance (nothing is granted from it here, so what is funded).
  static pb::AccountRef BudgetRef(const std::string& campaign) {
    return CampaignBudgetAccount(kOrg, campaign);
  }

  int64_t Balance(const std::string& campaign) {
    absl::StatusOr<pb::Account> account = store_->GetAccount(BudgetRef(campaign));
    if (absl::IsNotFound(account.status())) return 0;
    EXPECT_TRUE(account.ok()) << account.status();
    return account.ok() ? account->balance() : -1;
  }

  testing::TestDatabase db_;
  std::unique_ptr<pg::Pool> pool_;
  std::unique_ptr<pg::Pool> lock_pool_;  // the budgets' own (campaign_budgets.h)
  std::unique_ptr<PgLedgerStore> store_;
  std::unique_ptr<GrantBatcher> batcher_;
  std::unique_ptr<LedgerService> ledger_;
  std::unique_ptr<CampaignBudgets> budgets_;
};

TEST_F(CampaignBudgetsTest, APublishedCapFundsTheBudgetOnceAndARaiseFundsTheDifference) {
  const std::string c = "cmp_0123456789abcdef";
  // Not published yet, or without a cap: nothing is funded.
  for (cpb::CampaignState state : {cpb::DRAFT, cpb::PENDING_APPROVAL, cpb::APPROVED}) {
    EXPECT_EQ(Apply(Change(c, state, 100'000)), 0) << cpb::CampaignState_Name(state);
  }
  EXPECT_EQ(Apply(Change(c, cpb::ONLINE, 0)), 0);
  EXPECT_EQ(Balance(c), 0);

  EXPECT_EQ(Apply(Change(c, cpb::SCHEDULED, 100'000)), 100'000);
  EXPECT_EQ(Balance(c), 100'000);
  // The same change again (a redelivery), and the next state of the same version.
  EXPECT_EQ(Apply(Change(c, cpb::SCHEDULED, 100'000)), 0);
  EXPECT_EQ(Apply(Change(c, cpb::ONLINE, 100'000)), 0);
  EXPECT_EQ(Balance(c), 100'000);

  // An approved edit raises the cap: the difference; lowering it takes nothing back.
  EXPECT_EQ(Apply(Change(c, cpb::PAUSED, 150'000)), 50'000);
  EXPECT_EQ(Apply(Change(c, cpb::ONLINE, 120'000)), 0);
  EXPECT_EQ(Balance(c), 150'000);
  absl::StatusOr<pb::Transfer> raise = store_->GetTransfer("budget-cap:" + c + ":150000:fund");
  ASSERT_TRUE(raise.ok()) << raise.status();
  EXPECT_EQ(raise->amount(), 50'000);
  EXPECT_EQ(raise->code(), pb::FUND);

  // An operator's own top-up counts towards the cap.
  pb::FundRequest by_hand;
  by_hand.set_request_id("ops-top-up-1");
  by_hand.set_org_id(kOrg);
  by_hand.set_asset(pb::BUDGET_FEN);
  by_hand.set_owner_id(c);
  by_hand.set_amount(30'000);
  ASSERT_TRUE(ledger_->Fund(by_hand).ok());
  EXPECT_EQ(Apply(Change(c, cpb::ONLINE, 170'000)), 0);
  EXPECT_EQ(Apply(Change(c, cpb::ONLINE, 200'000)), 20'000);
  EXPECT_EQ(Balance(c), 200'000);
  absl::StatusOr<BudgetFlows> flows = store_->GetBudgetFlows(BudgetRef(c));
  ASSERT_TRUE(flows.ok()) << flows.status();
  EXPECT_EQ(flows->funded, 200'000);
  EXPECT_EQ(flows->released, 0);

  // What operators read (Ledger.GetCampaignBudget): a grant charges 30,000, its reversal gives
  // them back.
  pb::GrantRequest grant;
  grant.set_request_id("grant-1");
  grant.set_org_id(kOrg);
  grant.set_campaign_id(c);
  grant.set_customer_id("cust-1");
  grant.set_asset(pb::CASH_FEN);
  grant.set_quantity(30'000);
  grant.set_budget_cost_fen(30'000);
  absl::StatusOr<pb::GrantResponse> granted = ledger_->Grant(grant);
  ASSERT_TRUE(granted.ok()) << granted.status();
  pb::GetCampaignBudgetRequest ask;
  ask.set_org_id(kOrg);
  ask.set_campaign_id(c);
  absl::StatusOr<pb::CampaignBudget> budget = ledger_->GetCampaignBudget(ask);
  ASSERT_TRUE(budget.ok()) << budget.status();
  EXPECT_EQ(budget->funded_fen(), 200'000);
  EXPECT_EQ(budget->spent_fen(), 30'000);
  EXPECT_EQ(budget->returned_fen(), 0);
  EXPECT_EQ(budget->available_fen(), 170'000);
  pb::ReverseRequest reverse;
  reverse.set_request_id("reverse-1");
  reverse.set_batch_id("grant-1");
  reverse.set_reason("test");
  ASSERT_TRUE(ledger_->Reverse(reverse).ok());
  budget = ledger_->GetCampaignBudget(ask);
  ASSERT_TRUE(budget.ok()) << budget.status();
  EXPECT_EQ(budget->funded_fen(), 200'000);
  EXPECT_EQ(budget->spent_fen(), 30'000);
  EXPECT_EQ(budget->returned_fen(), 30'000);
  EXPECT_EQ(budget->available_fen(), 200'000);
  // A top-up counts FUND transfers only: a reversal's credit does not fill the cap.
  EXPECT_EQ(Apply(Change(c, cpb::ONLINE, 200'000)), 0);
  ask.set_campaign_id("cmp-never-funded");
  EXPECT_EQ(ledger_->GetCampaignBudget(ask).status().code(), absl::StatusCode::kNotFound);
  ask.set_campaign_id("");
  EXPECT_EQ(ledger_->GetCampaignBudget(ask).status().code(), absl::StatusCode::kInvalidArgument);

  // Ended campaigns keep what they have.
  EXPECT_EQ(Apply(Change(c, cpb::ENDED, 900'000)), 0);
  EXPECT_EQ(Balance(c), 200'000);  // 200,000 funded, 30,000 spent and given back

  // An old change of a campaign whose window is over (read again from the topic's start) funds
  // nothing; one whose window is still open does.
  cpb::CampaignChanged over = Change("cmp-over", cpb::ONLINE, 10'000);
  over.mutable_config()->mutable_end_time()->set_seconds(
      absl::ToUnixSeconds(absl::Now() - absl::Hours(1)));
  EXPECT_EQ(Apply(over), 0);
  EXPECT_EQ(Balance("cmp-over"), 0);
  over.mutable_config()->mutable_end_time()->set_seconds(
      absl::ToUnixSeconds(absl::Now() + absl::Hours(1)));
  EXPECT_EQ(Apply(over), 10'000);
}

TEST_F(CampaignBudgetsTest, LongIdsBadMessagesAndBadCaps) {
  const std::string long_id(64, 'x');
  EXPECT_GT(BudgetCapRequestId(long_id, 5'000).size(), 0u);
  EXPECT_LE(BudgetCapRequestId(long_id, 5'000).size(), 64u);
  EXPECT_NE(BudgetCapRequestId(long_id, 5'000), BudgetCapRequestId(long_id, 5'001));
  EXPECT_EQ(Apply(Change(long_id, cpb::ONLINE, 5'000)), 5'000);
  EXPECT_EQ(Apply(Change(long_id, cpb::ONLINE, 5'000)), 0);
  EXPECT_EQ(Balance(long_id), 5'000);

  // Through the consumer's handler: a change funds; something else is refused (dead-lettered).
  const cpb::CampaignChanged change = Change("cmp-kafka", cpb::ONLINE, 7'000);
  kafka::IncomingMessage message;
  message.topic = "mkt.campaign-changes.v1";
  message.key = change.campaign_id();
  message.value =
      kafka::MakeEnvelope("campaigns.CampaignChanged", kOrg, "", change).SerializeAsString();
  ASSERT_TRUE(budgets_->HandleChange(message).ok());
  EXPECT_EQ(Balance("cmp-kafka"), 7'000);
  message.value =
      kafka::MakeEnvelope("rewards.Account", kOrg, "", pb::Account()).SerializeAsString();
  EXPECT_EQ(budgets_->HandleChange(message).code(), absl::StatusCode::kInvalidArgument);
  message.value = "not protobuf at all";
  EXPECT_TRUE(kafka::IsPermanent(budgets_->HandleChange(message)));

  cpb::CampaignChanged no_org = Change("cmp-no-org", cpb::ONLINE, 1'000);
  no_org.clear_org_id();
  EXPECT_EQ(budgets_->Apply(no_org).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(budgets_->Apply(Change("cmp-huge", cpb::ONLINE, int64_t{1} << 62)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Balance("cmp-no-org"), 0);
  EXPECT_EQ(Balance("cmp-huge"), 0);
}

TEST_F(CampaignBudgetsTest, AnEndedCampaignReleasesWhatItLeftUnspentAfterTheDelay) {
  testing::ManualClock clock(absl::Now());
  CampaignBudgets budgets(*lock_pool_, *ledger_, clock);
  const absl::Duration delay = absl::Hours(72);
  const std::string c = "cmp-ends";
  auto at = [](absl::Time t) {
    google::protobuf::Timestamp ts;
    ts.set_seconds(absl::ToUnixSeconds(t));
    return ts;
  };
  auto release = [&] {
    absl::StatusOr<CampaignBudgets::ReleaseRun> run = budgets.ReleaseEnded(delay, 100);
    EXPECT_TRUE(run.ok()) << run.status();
    EXPECT_EQ(run.value_or(CampaignBudgets::ReleaseRun{}).failed, 0);
    return run.value_or(CampaignBudgets::ReleaseRun{}).released;
  };
  auto budget_of = [&](const std::string& campaign) {
    pb::GetCampaignBudgetRequest ask;
    ask.set_org_id(kOrg);
    ask.set_campaign_id(campaign);
    absl::StatusOr<pb::CampaignBudget> budget = ledger_->GetCampaignBudget(ask);
    EXPECT_TRUE(budget.ok()) << budget.status();
    return budget.value_or(pb::CampaignBudget{});
  };

  // Published for ten days with a cap of 100,000; a grant spends 30,000, a participation in
  // progress holds 5,000.
  cpb::CampaignChanged online = Change(c, cpb::ONLINE, 100'000);
  *online.mutable_config()->mutable_end_time() = at(clock.Now() + absl::Hours(240));
  ASSERT_EQ(budgets.Apply(online).value_or(-1), 100'000);
  pb::GrantRequest grant;
  grant.set_request_id("ends-grant-1");
  grant.set_org_id(kOrg);
  grant.set_campaign_id(c);
  grant.set_customer_id("cust-1");
  grant.set_asset(pb::CASH_FEN);
  grant.set_quantity(30'000);
  grant.set_budget_cost_fen(30'000);
  ASSERT_TRUE(ledger_->Grant(grant).ok());
  pb::CreateTransfersRequest hold;
  pb::TransferSpec* spec = hold.add_transfers();
  spec->set_id("ends-hold-1");
  *spec->mutable_debit() = BudgetRef(c);
  *spec->mutable_credit() = SystemAccount(kOrg, pb::BUDGET_FEN, pb::ROLE_EXPENSE);
  spec->set_amount(5'000);
  spec->set_code(pb::GRANT);
  spec->set_pending(true);
  spec->set_timeout_seconds(3600);
  ASSERT_TRUE(ledger_->CreateTransfers(hold).ok());

  // Running, or ended less than the delay ago: nothing is released.
  EXPECT_EQ(release(), 0);
  cpb::CampaignChanged ended = Change(c, cpb::ENDED, 100'000);
  *ended.mutable_config()->mutable_end_time() = at(clock.Now() + absl::Hours(240));
  *ended.mutable_changed_at() = at(clock.Now());  // ended early, by an operator
  ASSERT_EQ(budgets.Apply(ended).value_or(-1), 0);
  // A published change read again after the end (a replay) neither funds nor moves the end.
  ASSERT_EQ(budgets.Apply(online).value_or(-1), 0);
  clock.Advance(delay - absl::Minutes(1));
  EXPECT_EQ(release(), 0);

  // Past the delay: what is neither spent nor held goes back, as one RELEASE transfer.
  clock.Advance(absl::Minutes(2));
  EXPECT_EQ(release(), 65'000);
  pb::CampaignBudget budget = budget_of(c);
  EXPECT_EQ(budget.funded_fen(), 100'000);
  EXPECT_EQ(budget.spent_fen(), 30'000);
  EXPECT_EQ(budget.held_fen(), 5'000);
  EXPECT_EQ(budget.released_fen(), 65'000);
  EXPECT_EQ(budget.available_fen(), 0);
  absl::StatusOr<pb::Transfer> first = store_->GetTransfer("budget-release:" + c + ":0:release");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->code(), pb::RELEASE);
  EXPECT_EQ(first->amount(), 65'000);
  EXPECT_EQ(first->credit().owner_id(), "funding");
  EXPECT_EQ(release(), 0);  // nothing left to release

  // The participation fails and its hold is voided; the grant is reversed: both come back into
  // the budget, and the next runs release them.
  pb::ResolvePendingRequest void_hold;
  void_hold.set_id("ends-hold-1-void");
  void_hold.set_pending_id("ends-hold-1");
  ASSERT_TRUE(ledger_->ResolvePending(void_hold, /*post=*/false).ok());
  EXPECT_EQ(release(), 5'000);
  EXPECT_TRUE(store_->GetTransfer("budget-release:" + c + ":65000:release").ok());
  pb::ReverseRequest reverse;
  reverse.set_request_id("ends-reverse-1");
  reverse.set_batch_id("ends-grant-1");
  reverse.set_reason("refund");
  ASSERT_TRUE(ledger_->Reverse(reverse).ok());
  EXPECT_EQ(release(), 30'000);
  budget = budget_of(c);
  EXPECT_EQ(budget.funded_fen(), 100'000);
  EXPECT_EQ(budget.spent_fen(), 30'000);
  EXPECT_EQ(budget.returned_fen(), 30'000);
  EXPECT_EQ(budget.held_fen(), 0);
  EXPECT_EQ(budget.released_fen(), 100'000);
  EXPECT_EQ(budget.available_fen(), 0);
  // The org's funding account has every fen back.
  absl::StatusOr<pb::Account> funding =
      store_->GetAccount(SystemAccount(kOrg, pb::BUDGET_FEN, pb::ROLE_FUNDING));
  ASSERT_TRUE(funding.ok()) << funding.status();
  EXPECT_EQ(funding->credits_posted(), 100'000);
  EXPECT_EQ(release(), 0);

  // A campaign whose window closed without an ENDED change heard of (the scheduler's change
  // still on its way) is released once its window's end is past the delay; one that ended less
  // than the delay ago keeps its budget.
  cpb::CampaignChanged closing = Change("cmp-window", cpb::ONLINE, 8'000);
  *closing.mutable_config()->mutable_end_time() = at(clock.Now() + absl::Hours(1));
  ASSERT_EQ(budgets.Apply(closing).value_or(-1), 8'000);
  cpb::CampaignChanged recent = Change("cmp-recent", cpb::ONLINE, 9'000);
  *recent.mutable_config()->mutable_end_time() = at(clock.Now() + absl::Hours(240));
  ASSERT_EQ(budgets.Apply(recent).value_or(-1), 9'000);
  clock.Advance(delay + absl::Hours(2));
  recent.set_state(cpb::ENDED);
  *recent.mutable_changed_at() = at(clock.Now());
  ASSERT_EQ(budgets.Apply(recent).value_or(-1), 0);
  EXPECT_EQ(release(), 8'000);
  EXPECT_EQ(budget_of("cmp-window").released_fen(), 8'000);
  EXPECT_EQ(budget_of("cmp-recent").released_fen(), 0);
  EXPECT_EQ(budget_of("cmp-recent").available_fen(), 9'000);

  // Released budgets refuse what would spend them: a late grant is BUDGET_EXHAUSTED.
  grant.set_request_id("ends-grant-late");
  grant.set_campaign_id("cmp-window");
  grant.set_quantity(100);
  grant.set_budget_cost_fen(100);
  EXPECT_EQ(ledger_->Grant(grant).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_GT(BudgetReleaseRequestId(std::string(64, 'x'), 5).size(), 0u);
  EXPECT_LE(BudgetReleaseRequestId(std::string(64, 'x'), 5).size(), 64u);
}

// Two replicas (a consumer-group rebalance hands a partition over while the old owner is still
// busy) handle changes of the same campaign at once: the campaign ends funded with exactly its
// highest cap, never with the sum of two top-ups from the same total.
TEST_F(CampaignBudgetsTest, ConcurrentChangesNeverFundPastTheHighestCap) {
  // Another replica: its own connection, the same database.
  auto other_pool = pg::Pool::Connect({.dsn = db_.dsn(), .size = 1});
  ASSERT_TRUE(other_pool.ok()) << other_pool.status();
  CampaignBudgets other(**other_pool, *ledger_);
  for (int round = 0; round < 5; ++round) {
    const std::string c = absl::StrCat("cmp-race-", round);
    std::vector<std::thread> threads;
    for (int i = 0; i < 8; ++i) {
      CampaignBudgets* replica = i % 2 == 0 ? budgets_.get() : &other;
      threads.emplace_back([replica, c, i] {
        // Caps 10,000 .. 80,000 in an order that varies per thread.
        for (int k = 0; k < 8; ++k) {
          const int64_t cap = 10'000 * (1 + (i + k) % 8);
          absl::StatusOr<int64_t> funded = replica->Apply(Change(c, cpb::ONLINE, cap));
          EXPECT_TRUE(funded.ok()) << funded.status();
        }
      });
    }
    for (std::thread& t : threads) t.join();
    EXPECT_EQ(Balance(c), 80'000) << c;
  }
}

}  // namespace
}  // namespace mkt::rewards
