#include "services/rewards/ledger_service.h"

#include <deque>
#include <functional>
#include <future>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/civil_time.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"
#include "libs/core/status.h"
#include "libs/core/worker_pool.h"

namespace mkt::rewards {
namespace {

using ::google::protobuf::util::TimeUtil;
using ::testing::ElementsAre;
using ::testing::IsEmpty;
namespace cpb = ::marketing::common::v1;

// An in-memory ledger store that records the batches it gets and answers each with transfers
// made from the specs (no balances: the rules above storage are what these tests are about).
class FakeLedgerStore final : public LedgerStore {
 public:
  absl::StatusOr<std::vector<BatchResult>> Apply(const std::vector<LinkedBatch>& batches) override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<BatchResult> results;
    for (const LinkedBatch& batch : batches) {
      applied.push_back(batch);
      if (auto it = fail_next.find(batch.batch_id); it != fail_next.end() && !it->second.empty()) {
        results.push_back(it->second.front());
        it->second.pop_front();
        continue;
      }
      if (auto it = fail_batch.find(batch.batch_id); it != fail_batch.end()) {
        results.push_back(it->second);
        continue;
      }
      // LinkedBatch::exclusive_batch_id, as the store's contract has it.
      if (auto it = batches_.find(batch.batch_id);
          batch.exclusive_batch_id && it != batches_.end()) {
        std::set<std::string> stored, wanted;
        for (const pb::Transfer& t : it->second) stored.insert(t.id());
        for (const pb::TransferSpec& spec : batch.transfers) wanted.insert(spec.id());
        if (stored != wanted) {
          results.push_back(Error(absl::StatusCode::kAlreadyExists, cpb::IDEMPOTENCY_KEY_REUSED,
                                  "batch id " + batch.batch_id + " names other transfers",
                                  "request_id"));
          continue;
        }
      }
      AppliedBatch out;
      for (const pb::TransferSpec& spec : batch.transfers) {
        pb::Transfer t = FromSpec(spec, batch.batch_id);
        transfers_[t.id()] = t;
        batches_[batch.batch_id].push_back(t);
        out.transfers.push_back(t);
      }
      results.push_back(std::move(out));
    }
    return results;
  }
  absl::StatusOr<pb::Transfer> ResolvePending(const std::string& id, const std::string& pending_id,
                                              bool post) override {
    resolved.push_back({id, pending_id, post ? "post" : "void"});
    pb::Transfer t;
    t.set_id(id);
    t.set_pending_id(pending_id);
    t.set_state(post ? pb::POSTED : pb::VOIDED);
    return t;
  }
  absl::StatusOr<int> VoidTimedOutPending(absl::Time, int) override { return 0; }
  absl::StatusOr<pb::RunExpiryResponse> ExpireLots(absl::Time as_of, int limit) override {
    expire_calls.push_back(as_of);
    pb::RunExpiryResponse r;
    int n = expirable_lots > limit ? limit : expirable_lots;
    expirable_lots -= n;
    r.set_lots_expired(n);
    r.set_points_expired(10 * n);
    return r;
  }
  absl::StatusOr<pb::Account> GetAccount(const pb::AccountRef& ref) override {
    account_reads.push_back(ref);
    pb::Account a;
    a.set_id(42);
    *a.mutable_ref() = ref;
    return a;
  }
  absl::StatusOr<std::vector<pb::Account>> GetCustomerAccounts(
      const std::string& org_id, const std::string& customer_id) override {
    reads.push_back("balances " + org_id + " " + customer_id);
    return std::vector<pb::Account>{};
  }
  absl::StatusOr<pb::ListExpiringLotsResponse> ListExpiringLots(const std::string& org_id,
                                                                const std::string& customer_id,
                                                                absl::Time until) override {
    reads.push_back("lots " + org_id + " " + customer_id);
    lots_until = until;
    return pb::ListExpiringLotsResponse();
  }
  absl::StatusOr<pb::ListHistoryResponse> ListHistory(const std::string& org_id,
                                                      const std::string& customer_id,
                                                      const std::string& page_token,
                                                      int limit) override {
    reads.push_back("history " + org_id + " " + customer_id + " [" + page_token + "] " +
                    std::to_string(limit));
    return pb::ListHistoryResponse();
  }
  absl::StatusOr<pb::GetStatementResponse> GetStatement(const pb::AccountRef& account,
                                                        absl::Time from, absl::Time to,
                                                        const std::string&, int limit) override {
    reads.push_back("statement " + account.owner_id() + " " + std::to_string(limit));
    statement_from = from;
    statement_to = to;
    return pb::GetStatementResponse();
  }
  absl::StatusOr<std::vector<pb::Transfer>> GetBatch(const std::string& batch_id) override {
    auto it = batches_.find(batch_id);
    if (it == batches_.end()) return NotFound("no batch " + batch_id);
    return it->second;
  }
  absl::StatusOr<pb::Transfer> GetTransfer(const std::string& id) override {
    auto it = transfers_.find(id);
    if (it == transfers_.end()) return NotFound("no transfer " + id);
    return it->second;
  }
  absl::StatusOr<std::vector<LotExpiry>> GetLotExpiries(const std::string& transfer_id) override {
    auto it = lot_expiries.find(transfer_id);
    std::vector<LotExpiry> read = it == lot_expiries.end() ? std::vector<LotExpiry>{} : it->second;
    if (after_lot_expiries_read) after_lot_expiries_read();
    return read;
  }
  absl::StatusOr<pb::CheckIntegrityResponse> CheckIntegrity() override {
    pb::CheckIntegrityResponse r;
    r.set_ok(true);
    return r;
  }

  // Puts a stored transfer in place, as an earlier request would have.
  void Store(const pb::Transfer& t) {
    transfers_[t.id()] = t;
    batches_[t.batch_id()].push_back(t);
  }

  static pb::Transfer FromSpec(const pb::TransferSpec& spec, const std::string& batch_id) {
    pb::Transfer t;
    t.set_id(spec.id());
    *t.mutable_debit() = spec.debit();
    *t.mutable_credit() = spec.credit();
    t.set_asset(spec.debit().asset());
    t.set_amount(spec.amount());
    t.set_code(spec.code());
    t.set_state(spec.pending() ? pb::PENDING : pb::POSTED);
    t.set_campaign_id(spec.campaign_id());
    t.set_event_id(spec.event_id());
    t.set_order_id(spec.order_id());
    t.set_reverses_transfer_id(spec.reverses_transfer_id());
    t.set_batch_id(batch_id);
    return t;
  }

  std::vector<LinkedBatch> applied;
  std::map<std::string, absl::Status> fail_batch;
  // Answers for the next Apply calls of a batch id, one each, before fail_batch and the rest.
  std::map<std::string, std::deque<absl::Status>> fail_next;
  // Runs after each GetLotExpiries has read its answer (e.g. to let more lots expire).
  std::function<void()> after_lot_expiries_read;
  // GetLotExpiries' answers by credit transfer id (none: no lot of it expired).
  std::map<std::string, std::vector<LotExpiry>> lot_expiries;
  std::vector<std::vector<std::string>> resolved;
  std::vector<pb::AccountRef> account_reads;
  std::vector<std::string> reads;
  std::vector<absl::Time> expire_calls;
  int expirable_lots = 0;
  absl::Time lots_until;
  absl::Time statement_from;
  absl::Time statement_to;

 private:
  std::mutex mu_;
  std::map<std::string, pb::Transfer> transfers_;
  std::map<std::string, std::vector<pb::Transfer>> batches_;
};

class FixedClock final : public Clock {
 public:
  explicit FixedClock(absl::Time now) : now_(now) {}
  absl::Time Now() const override { return now_; }

 private:
  absl::Time now_;
};

const absl::TimeZone kChina = absl::FixedTimeZone(8 * 3600);

absl::Time ChinaTime(int y, int m, int d, int hh, int mm, int ss) {
  return absl::FromCivil(absl::CivilSecond(y, m, d, hh, mm, ss), kChina);
}

// Expects `status` to be INVALID_ARGUMENT about `field`.
void ExpectInvalid(const absl::Status& status, const std::string& field) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_EQ(ReasonOf(status), cpb::INVALID_ARGUMENT) << status;
  EXPECT_EQ(FieldOf(status), field) << status;
  EXPECT_FALSE(status.message().empty());
}

pb::TransferSpec PointsGrantSpec(const std::string& id = "t1") {
  pb::TransferSpec spec;
  spec.set_id(id);
  *spec.mutable_debit() = SystemAccount("fed", pb::POINTS, pb::ROLE_ISSUANCE);
  *spec.mutable_credit() = CustomerAccount("fed", pb::POINTS, "c1");
  spec.set_amount(100);
  spec.set_code(pb::GRANT);
  spec.mutable_expiry()->set_days_after_grant(365);
  return spec;
}

// What GetLotExpiries answers for lot `lot` of customer c1: `amount` expired, `reversed` of it
// given back already.
LotExpiry ExpiryOfLot(int64_t lot, int64_t amount, int64_t reversed = 0) {
  LotExpiry e;
  e.lot_id = lot;
  e.expiry.set_id(absl::StrCat("expire:", lot));
  *e.expiry.mutable_debit() = CustomerAccount("fed", pb::POINTS, "c1");
  *e.expiry.mutable_credit() = SystemAccount("fed", pb::POINTS, pb::ROLE_EXPIRY);
  e.expiry.set_amount(amount);
  e.expiry.set_code(pb::EXPIRE);
  e.reversed_amount = reversed;
  return e;
}

pb::TransferSpec CashSpec(const std::string& id = "t1") {
  pb::TransferSpec spec;
  spec.set_id(id);
  *spec.mutable_debit() = CustomerAccount("fed", pb::CASH_FEN, "c1");
  *spec.mutable_credit() = SystemAccount("fed", pb::CASH_FEN, pb::ROLE_REDEMPTION);
  spec.set_amount(500);
  spec.set_code(pb::SPEND);
  return spec;
}

class LedgerServiceTest : public ::testing::Test {
 protected:
  LedgerServiceTest()
      : clock_(ChinaTime(2025, 6, 1, 12, 0, 0)),
        batcher_(store_, BatcherOptions{.writers = 1, .linger = absl::ZeroDuration()}),
        service_(batcher_, store_, clock_) {}

  absl::Status Create(std::vector<pb::TransferSpec> specs) {
    pb::CreateTransfersRequest req;
    for (auto& s : specs) *req.add_transfers() = std::move(s);
    return service_.CreateTransfers(req).status();
  }

  static pb::GrantRequest FullGrant() {
    pb::GrantRequest req;
    req.set_request_id("g-1");
    req.set_org_id("fed");
    req.set_campaign_id("cp1");
    req.set_customer_id("c1");
    req.set_asset(pb::POINTS);
    req.set_quantity(200);
    req.set_budget_cost_fen(5000);
    req.set_stock_template_id("tpl9");
    req.mutable_expiry()->set_end_of_year_plus_years(1);
    req.set_event_id("evt-7");
    (*req.mutable_metadata())["channel"] = "mobile_banking";
    return req;
  }

  FakeLedgerStore store_;
  FixedClock clock_;
  GrantBatcher batcher_;
  LedgerService service_;
};

// ---- ValidateTransferSpecs ----

struct SpecCase {
  const char* name;
  std::function<void(std::vector<pb::TransferSpec>&)> mutate;
  const char* field;
};

TEST_F(LedgerServiceTest, EachMalformedSpecIsRefusedNamingTheFieldAndNeverReachesTheStore) {
  const std::vector<SpecCase> cases = {
      {"empty id", [](auto& s) { s[0].set_id(""); }, "transfers[0].id"},
      {"id with a space", [](auto& s) { s[0].set_id("a b"); }, "transfers[0].id"},
      {"id of 129 chars", [](auto& s) { s[0].set_id(std::string(129, 'x')); }, "transfers[0].id"},
      {"zero amount", [](auto& s) { s[0].set_amount(0); }, "transfers[0].amount"},
      {"negative amount", [](auto& s) { s[0].set_amount(-5); }, "transfers[0].amount"},
      {"assets differ",
       [](auto& s) { *s[0].mutable_credit() = CustomerAccount("fed", pb::CASH_FEN, "c1"); },
       "transfers[0].credit.asset"},
      {"asset unspecified", [](auto& s) { s[0].mutable_debit()->set_asset(pb::ASSET_UNSPECIFIED); },
       "transfers[0].debit.asset"},
      {"asset out of the enum",
       [](auto& s) { s[0].mutable_credit()->set_asset(static_cast<pb::Asset>(99)); },
       "transfers[0].credit.asset"},
      {"same account on both sides", [](auto& s) { *s[0].mutable_credit() = s[0].debit(); },
       "transfers[0].credit"},
      {"customer owning a budget",
       [](auto& s) {
         *s[0].mutable_debit() = SystemAccount("fed", pb::BUDGET_FEN, pb::ROLE_FUNDING);
         *s[0].mutable_credit() = CustomerAccount("fed", pb::BUDGET_FEN, "c1");
         s[0].clear_expiry();
       },
       "transfers[0].credit.owner_kind"},
      {"campaign owning points",
       [](auto& s) { s[0].mutable_credit()->set_owner_kind(pb::CAMPAIGN); },
       "transfers[0].credit.owner_kind"},
      {"stock without a template",
       [](auto& s) {
         *s[0].mutable_debit() = SystemAccount("fed", pb::STOCK, pb::ROLE_FUNDING);
         *s[0].mutable_credit() = SystemAccount("fed", pb::STOCK, pb::ROLE_ISSUANCE, "tpl");
         s[0].clear_expiry();
       },
       "transfers[0].debit.asset_ref"},
      {"asset_ref on points", [](auto& s) { s[0].mutable_debit()->set_asset_ref("tpl"); },
       "transfers[0].debit.asset_ref"},
      {"template account of another template",
       [](auto& s) {
         *s[0].mutable_debit() = SystemAccount("fed", pb::STOCK, pb::ROLE_FUNDING, "tpl");
         s[0].mutable_credit()->set_asset(pb::STOCK);
         s[0].mutable_credit()->set_asset_ref("tpl");
         s[0].mutable_credit()->set_owner_kind(pb::TEMPLATE);
         s[0].mutable_credit()->set_owner_id("other");
         s[0].clear_expiry();
       },
       "transfers[0].credit.owner_id"},
      {"system owner that is no role",
       [](auto& s) { s[0].mutable_debit()->set_owner_id("treasury"); },
       "transfers[0].debit.owner_id"},
      {"system owner in capitals", [](auto& s) { s[0].mutable_debit()->set_owner_id("ISSUANCE"); },
       "transfers[0].debit.owner_id"},
      {"empty org", [](auto& s) { s[0].mutable_debit()->set_org_id(""); },
       "transfers[0].debit.org_id"},
      {"org of 65 chars", [](auto& s) { s[0].mutable_credit()->set_org_id(std::string(65, 'o')); },
       "transfers[0].credit.org_id"},
      {"empty customer", [](auto& s) { s[0].mutable_credit()->set_owner_id(""); },
       "transfers[0].credit.owner_id"},
      {"customer id with a NUL",
       [](auto& s) { s[0].mutable_credit()->set_owner_id(std::string("c\0d", 3)); },
       "transfers[0].credit.owner_id"},
      {"points to a customer without expiry", [](auto& s) { s[0].clear_expiry(); },
       "transfers[0].expiry"},
      {"expiry without a rule", [](auto& s) { s[0].mutable_expiry()->Clear(); },
       "transfers[0].expiry"},
      {"0 days after grant", [](auto& s) { s[0].mutable_expiry()->set_days_after_grant(0); },
       "transfers[0].expiry.days_after_grant"},
      {"3651 days after grant", [](auto& s) { s[0].mutable_expiry()->set_days_after_grant(3651); },
       "transfers[0].expiry.days_after_grant"},
      {"end of year minus one",
       [](auto& s) { s[0].mutable_expiry()->set_end_of_year_plus_years(-1); },
       "transfers[0].expiry.end_of_year_plus_years"},
      {"fixed_at with bad nanos",
       [](auto& s) { s[0].mutable_expiry()->mutable_fixed_at()->set_nanos(-1); },
       "transfers[0].expiry.fixed_at"},
      {"expiry on cash",
       [](auto& s) {
         s[0] = CashSpec();
         s[0].mutable_expiry()->set_days_after_grant(3);
       },
       "transfers[0].expiry"},
      {"pending points credit to a customer",
       [](auto& s) {
         s[0].set_pending(true);
         s[0].set_timeout_seconds(60);
       },
       "transfers[0].pending"},
      {"pending without timeout",
       [](auto& s) {
         s[0] = CashSpec();
         s[0].set_pending(true);
       },
       "transfers[0].timeout_seconds"},
      {"pending timeout above a day",
       [](auto& s) {
         s[0] = CashSpec();
         s[0].set_pending(true);
         s[0].set_timeout_seconds(86401);
       },
       "transfers[0].timeout_seconds"},
      {"timeout on a posted transfer",
       [](auto& s) {
         s[0] = CashSpec();
         s[0].set_timeout_seconds(30);
       },
       "transfers[0].timeout_seconds"},
      {"duplicate ids", [](auto& s) { s.push_back(PointsGrantSpec("t1")); }, "transfers[1].id"},
      // The expiry job's and the timeout sweeper's names: taken first, they would keep a lot
      // from expiring or a reservation from being released.
      {"the expiry job's name", [](auto& s) { s[0].set_id("expire:42"); }, "transfers[0].id"},
      {"the sweeper's name", [](auto& s) { s[0].set_id("timeout:p1"); }, "transfers[0].id"},
      {"reverse without its original",
       [](auto& s) {
         s[0] = CashSpec();
         s[0].set_code(pb::REVERSE);
       },
       "transfers[0].reverses_transfer_id"},
      {"reverses id on a grant", [](auto& s) { s[0].set_reverses_transfer_id("x"); },
       "transfers[0].reverses_transfer_id"},
      {"code unspecified", [](auto& s) { s[0].set_code(pb::TRANSFER_CODE_UNSPECIFIED); },
       "transfers[0].code"},
      {"metadata value with a NUL",
       [](auto& s) { (*s[0].mutable_metadata())["k"] = std::string("a\0b", 3); },
       "transfers[0].metadata.k"},
      {"metadata key with a space", [](auto& s) { (*s[0].mutable_metadata())["a key"] = "v"; },
       "transfers[0].metadata"},
      {"order id that is not UTF-8", [](auto& s) { s[0].set_order_id("\xff\xfe"); },
       "transfers[0].order_id"},
      {"an error in the second transfer",
       [](auto& s) {
         s.push_back(PointsGrantSpec("t2"));
         s[1].set_amount(0);
       },
       "transfers[1].amount"},
      {"totals on one account overflow",
       [](auto& s) {
         s[0].set_amount(std::numeric_limits<int64_t>::max() / 2 + 1);
         s.push_back(PointsGrantSpec("t2"));
         s[1].set_amount(std::numeric_limits<int64_t>::max() / 2 + 1);
       },
       "transfers[1].amount"},
      {"no transfers", [](auto& s) { s.clear(); }, "transfers"},
      {"501 transfers",
       [](auto& s) {
         s.clear();
         for (int i = 0; i < 501; ++i) s.push_back(CashSpec("t" + std::to_string(i)));
       },
       "transfers"},
  };
  for (const SpecCase& c : cases) {
    SCOPED_TRACE(c.name);
    std::vector<pb::TransferSpec> specs = {PointsGrantSpec()};
    c.mutate(specs);
    ExpectInvalid(ValidateTransferSpecs(specs), c.field);
    ExpectInvalid(Create(specs), c.field);
  }
  EXPECT_THAT(store_.applied, IsEmpty());
}

TEST_F(LedgerServiceTest, WellFormedSpecsPass) {
  pb::TransferSpec pending_spend = CashSpec("t2");
  pending_spend.set_pending(true);
  pending_spend.set_timeout_seconds(86400);
  pb::TransferSpec fixed = PointsGrantSpec("t3");
  *fixed.mutable_expiry()->mutable_fixed_at() = TimeUtil::SecondsToTimestamp(1'900'000'000);
  pb::TransferSpec reversal = PointsGrantSpec("t4");
  std::swap(*reversal.mutable_debit(), *reversal.mutable_credit());
  reversal.clear_expiry();
  reversal.set_code(pb::REVERSE);
  reversal.set_reverses_transfer_id("t1");
  // Two near-max amounts on *different* accounts do not overflow anything.
  pb::TransferSpec big1 = CashSpec("big1");
  *big1.mutable_debit() = CustomerAccount("fed", pb::CASH_FEN, "c3");
  *big1.mutable_credit() = SystemAccount("fed", pb::CASH_FEN, pb::ROLE_EXPIRY);
  big1.set_amount(std::numeric_limits<int64_t>::max());
  pb::TransferSpec big2 = CashSpec("big2");
  *big2.mutable_debit() = CustomerAccount("fed", pb::CASH_FEN, "c2");
  *big2.mutable_credit() = SystemAccount("fed", pb::CASH_FEN, pb::ROLE_PAYOUT);
  big2.set_amount(std::numeric_limits<int64_t>::max());
  std::vector<pb::TransferSpec> specs = {PointsGrantSpec(), pending_spend, fixed,
                                         reversal,          big1,          big2};
  EXPECT_TRUE(ValidateTransferSpecs(specs).ok()) << ValidateTransferSpecs(specs);
  ASSERT_TRUE(Create(specs).ok());
  ASSERT_EQ(store_.applied.size(), 1u);
  // The request has no id of its own: the batch is named by its first transfer.
  EXPECT_EQ(store_.applied[0].batch_id, "t1");
  EXPECT_EQ(store_.applied[0].transfers.size(), specs.size());
}

// ---- Grant ----

TEST_F(LedgerServiceTest, GrantBuildsBudgetStockAndBenefitLegsInOneBatch) {
  auto resp = service_.Grant(FullGrant());
  ASSERT_TRUE(resp.ok()) << resp.status();
  ASSERT_EQ(store_.applied.size(), 1u);
  const LinkedBatch& batch = store_.applied[0];
  EXPECT_EQ(batch.batch_id, "g-1");
  EXPECT_TRUE(batch.replay_needs_whole_batch) << "a resend that drops a leg is not a replay";
  ASSERT_EQ(batch.transfers.size(), 3u);

  const pb::TransferSpec& budget = batch.transfers[0];
  EXPECT_EQ(budget.id(), "g-1:budget");
  EXPECT_EQ(budget.debit().asset(), pb::BUDGET_FEN);
  EXPECT_EQ(budget.debit().owner_kind(), pb::CAMPAIGN);
  EXPECT_EQ(budget.debit().owner_id(), "cp1");
  EXPECT_EQ(budget.credit().owner_kind(), pb::SYSTEM);
  EXPECT_EQ(budget.credit().owner_id(), "expense");
  EXPECT_EQ(budget.amount(), 5000);
  EXPECT_FALSE(budget.has_expiry());

  const pb::TransferSpec& stock = batch.transfers[1];
  EXPECT_EQ(stock.id(), "g-1:stock");
  EXPECT_EQ(stock.debit().asset(), pb::STOCK);
  EXPECT_EQ(stock.debit().owner_kind(), pb::TEMPLATE);
  EXPECT_EQ(stock.debit().owner_id(), "tpl9");
  EXPECT_EQ(stock.debit().asset_ref(), "tpl9");
  EXPECT_EQ(stock.credit().owner_id(), "issuance");
  EXPECT_EQ(stock.credit().asset_ref(), "tpl9");
  EXPECT_EQ(stock.amount(), 1) << "stock_units defaults to 1";

  const pb::TransferSpec& benefit = batch.transfers[2];
  EXPECT_EQ(benefit.id(), "g-1:benefit");
  EXPECT_EQ(benefit.debit().asset(), pb::POINTS);
  EXPECT_EQ(benefit.debit().owner_kind(), pb::SYSTEM);
  EXPECT_EQ(benefit.debit().owner_id(), "issuance");
  EXPECT_EQ(benefit.credit().owner_kind(), pb::CUSTOMER);
  EXPECT_EQ(benefit.credit().owner_id(), "c1");
  EXPECT_EQ(benefit.amount(), 200);
  EXPECT_EQ(benefit.expiry().end_of_year_plus_years(), 1);

  for (const auto& leg : batch.transfers) {
    EXPECT_EQ(leg.code(), pb::GRANT);
    EXPECT_EQ(leg.campaign_id(), "cp1");
    EXPECT_EQ(leg.event_id(), "evt-7");
    EXPECT_EQ(leg.metadata().at("channel"), "mobile_banking");
    EXPECT_EQ(leg.debit().org_id(), "fed");
    EXPECT_FALSE(leg.pending());
  }
  ASSERT_EQ(resp->transfers_size(), 3);
  EXPECT_EQ(resp->account().ref().owner_id(), "c1");
  EXPECT_EQ(resp->account().ref().asset(), pb::POINTS);
}

TEST_F(LedgerServiceTest, GrantWithoutCostOrStockIsOnlyTheBenefit) {
  pb::GrantRequest req = FullGrant();
  req.set_asset(pb::LOTTERY_CHANCE);
  req.clear_expiry();
  req.set_budget_cost_fen(0);
  req.clear_stock_template_id();
  req.clear_campaign_id();
  ASSERT_TRUE(service_.Grant(req).ok());
  ASSERT_EQ(store_.applied.size(), 1u);
  ASSERT_EQ(store_.applied[0].transfers.size(), 1u);
  const auto& benefit = store_.applied[0].transfers[0];
  EXPECT_EQ(benefit.id(), "g-1:benefit");
  EXPECT_EQ(benefit.debit().asset(), pb::LOTTERY_CHANCE);
  EXPECT_EQ(benefit.credit().asset(), pb::LOTTERY_CHANCE);
  EXPECT_FALSE(benefit.has_expiry());
}

TEST_F(LedgerServiceTest, GrantTakesTheGivenStockUnits) {
  pb::GrantRequest req = FullGrant();
  req.set_budget_cost_fen(0);
  req.set_stock_units(3);
  ASSERT_TRUE(service_.Grant(req).ok());
  ASSERT_EQ(store_.applied[0].transfers.size(), 2u);
  EXPECT_EQ(store_.applied[0].transfers[0].id(), "g-1:stock");
  EXPECT_EQ(store_.applied[0].transfers[0].amount(), 3);
}

TEST_F(LedgerServiceTest, GrantRefusesBadInputNamingTheRequestField) {
  struct Case {
    const char* name;
    std::function<void(pb::GrantRequest&)> mutate;
    const char* field;
  };
  const std::vector<Case> cases = {
      {"no request id", [](auto& r) { r.clear_request_id(); }, "request_id"},
      {"request id too long", [](auto& r) { r.set_request_id(std::string(65, 'r')); },
       "request_id"},
      // "expire:benefit" would take the expiry job's kind of name.
      {"request id expire", [](auto& r) { r.set_request_id("expire"); }, "request_id"},
      {"request id timeout:", [](auto& r) { r.set_request_id("timeout:9"); }, "request_id"},
      {"no org", [](auto& r) { r.clear_org_id(); }, "org_id"},
      {"customer too long", [](auto& r) { r.set_customer_id(std::string(65, 'c')); },
       "customer_id"},
      {"budget asset", [](auto& r) { r.set_asset(pb::BUDGET_FEN); }, "asset"},
      {"unspecified asset", [](auto& r) { r.set_asset(pb::ASSET_UNSPECIFIED); }, "asset"},
      {"zero quantity", [](auto& r) { r.set_quantity(0); }, "quantity"},
      {"unreasonable quantity", [](auto& r) { r.set_quantity(1'000'000'000'000'001); }, "quantity"},
      {"negative cost", [](auto& r) { r.set_budget_cost_fen(-1); }, "budget_cost_fen"},
      {"unreasonable cost", [](auto& r) { r.set_budget_cost_fen(1'000'000'000'000'001); },
       "budget_cost_fen"},
      {"cost without a campaign", [](auto& r) { r.clear_campaign_id(); }, "campaign_id"},
      {"stock units without a template",
       [](auto& r) {
         r.clear_stock_template_id();
         r.set_stock_units(2);
       },
       "stock_units"},
      {"negative stock units", [](auto& r) { r.set_stock_units(-2); }, "stock_units"},
      {"template id with a slash", [](auto& r) { r.set_stock_template_id("a/b"); },
       "stock_template_id"},
      {"points without expiry", [](auto& r) { r.clear_expiry(); }, "expiry"},
      {"points expiry out of range",
       [](auto& r) { r.mutable_expiry()->set_end_of_year_plus_years(kMaxExpiryYears + 1); },
       "expiry.end_of_year_plus_years"},
      {"cash with expiry", [](auto& r) { r.set_asset(pb::CASH_FEN); }, "expiry"},
      {"event id not UTF-8", [](auto& r) { r.set_event_id("\xc3"); }, "event_id"},
      {"too much metadata",
       [](auto& r) {
         for (int i = 0; i < 33; ++i) (*r.mutable_metadata())["k" + std::to_string(i)] = "v";
       },
       "metadata"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    pb::GrantRequest req = FullGrant();
    c.mutate(req);
    ExpectInvalid(service_.Grant(req).status(), c.field);
  }
  EXPECT_THAT(store_.applied, IsEmpty());
}

TEST_F(LedgerServiceTest, GrantPassesTheStoreRefusalToTheCaller) {
  store_.fail_batch["g-1"] = Error(absl::StatusCode::kFailedPrecondition, cpb::BUDGET_EXHAUSTED,
                                   "budget of campaign cp1 is exhausted", "transfers[0]");
  auto resp = service_.Grant(FullGrant());
  EXPECT_EQ(resp.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ReasonOf(resp.status()), cpb::BUDGET_EXHAUSTED);
  EXPECT_THAT(store_.account_reads, IsEmpty());
}

// ---- GrantMany ----

TEST_F(LedgerServiceTest, GrantManyAnswersEachGrantAsGrantWouldInOrder) {
  pb::GrantManyRequest request;
  *request.add_grants() = FullGrant();
  pb::GrantRequest bad = FullGrant();
  bad.set_request_id("g-2");
  bad.set_quantity(0);
  *request.add_grants() = bad;
  pb::GrantRequest refused = FullGrant();
  refused.set_request_id("g-3");
  *request.add_grants() = refused;
  store_.fail_batch["g-3"] = Error(absl::StatusCode::kFailedPrecondition, cpb::BUDGET_EXHAUSTED,
                                   "budget of campaign cp1 is exhausted", "transfers[0]");

  WorkerPool readers("test-readers", 1, 10);
  std::promise<absl::StatusOr<pb::GrantManyResponse>> answered;
  service_.GrantManyAsync(request, readers, [&](absl::StatusOr<pb::GrantManyResponse> result) {
    answered.set_value(std::move(result));
  });
  absl::StatusOr<pb::GrantManyResponse> response = answered.get_future().get();
  ASSERT_TRUE(response.ok()) << response.status();
  ASSERT_EQ(response->outcomes_size(), 3);

  const pb::GrantOutcome& granted = response->outcomes(0);
  EXPECT_EQ(granted.request_id(), "g-1");
  EXPECT_EQ(granted.code(), 0);
  EXPECT_EQ(granted.grant().transfers_size(), 3) << "budget, stock and benefit legs";

  const pb::GrantOutcome& invalid = response->outcomes(1);
  EXPECT_EQ(invalid.request_id(), "g-2");
  EXPECT_EQ(invalid.code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(invalid.error().reason(), cpb::INVALID_ARGUMENT);
  EXPECT_EQ(invalid.error().field(), "quantity");
  EXPECT_FALSE(invalid.message().empty());
  EXPECT_FALSE(invalid.has_grant());

  const pb::GrantOutcome& exhausted = response->outcomes(2);
  EXPECT_EQ(exhausted.request_id(), "g-3");
  EXPECT_EQ(exhausted.code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(exhausted.error().reason(), cpb::BUDGET_EXHAUSTED);
  EXPECT_EQ(exhausted.error().field(), "transfers[0]");

  std::vector<std::string> applied;
  for (const LinkedBatch& batch : store_.applied) applied.push_back(batch.batch_id);
  EXPECT_THAT(applied, ::testing::Contains("g-1"));
  EXPECT_THAT(applied, ::testing::Not(::testing::Contains("g-2")))
      << "a malformed grant never reaches the store";
}

TEST_F(LedgerServiceTest, GrantManyRefusesACallWithNoGrantsOrTooMany) {
  WorkerPool readers("test-readers", 1, 10);
  for (int n : {0, 501}) {
    SCOPED_TRACE(n);
    pb::GrantManyRequest request;
    for (int i = 0; i < n; ++i) {
      pb::GrantRequest grant = FullGrant();
      grant.set_request_id("g-" + std::to_string(i));
      *request.add_grants() = grant;
    }
    std::promise<absl::Status> answered;
    service_.GrantManyAsync(request, readers, [&](absl::StatusOr<pb::GrantManyResponse> result) {
      answered.set_value(result.status());
    });
    ExpectInvalid(answered.get_future().get(), "grants");
  }
  EXPECT_THAT(store_.applied, IsEmpty());
}

// ---- Spend ----

TEST_F(LedgerServiceTest, SpendDebitsTheCustomerToRedemption) {
  pb::SpendRequest req;
  req.set_request_id("s-1");
  req.set_org_id("fed");
  req.set_customer_id("c1");
  req.set_asset(pb::POINTS);
  req.set_amount(30);
  req.set_order_id("order/2025/1");
  req.set_pending(true);
  req.set_timeout_seconds(900);
  auto resp = service_.Spend(req);
  ASSERT_TRUE(resp.ok()) << resp.status();
  ASSERT_EQ(store_.applied.size(), 1u);
  EXPECT_EQ(store_.applied[0].batch_id, "s-1");
  ASSERT_EQ(store_.applied[0].transfers.size(), 1u);
  const auto& spend = store_.applied[0].transfers[0];
  EXPECT_EQ(spend.id(), "s-1:spend");
  EXPECT_EQ(spend.code(), pb::SPEND);
  EXPECT_EQ(spend.debit().owner_kind(), pb::CUSTOMER);
  EXPECT_EQ(spend.debit().owner_id(), "c1");
  EXPECT_EQ(spend.credit().owner_id(), "redemption");
  EXPECT_EQ(spend.amount(), 30);
  EXPECT_TRUE(spend.pending());
  EXPECT_EQ(spend.timeout_seconds(), 900);
  EXPECT_EQ(spend.order_id(), "order/2025/1");
  EXPECT_EQ(resp->transfer().id(), "s-1:spend");
  EXPECT_EQ(resp->transfer().state(), pb::PENDING);
  EXPECT_EQ(resp->account().ref().owner_id(), "c1");

  req.set_timeout_seconds(0);
  ExpectInvalid(service_.Spend(req).status(), "timeout_seconds");
  req.set_pending(false);
  req.set_amount(0);
  ExpectInvalid(service_.Spend(req).status(), "amount");
  req.set_amount(1);
  req.set_asset(pb::STOCK);
  ExpectInvalid(service_.Spend(req).status(), "asset");
  EXPECT_EQ(store_.applied.size(), 1u);
}

// ---- Reverse ----

TEST_F(LedgerServiceTest, ReverseOfAGrantSwapsEveryLegInReverseOrder) {
  ASSERT_TRUE(service_.Grant(FullGrant()).ok());
  pb::ReverseRequest req;
  req.set_request_id("r-1");
  req.set_batch_id("g-1");
  req.set_reason("customer complaint");
  auto resp = service_.Reverse(req);
  ASSERT_TRUE(resp.ok()) << resp.status();
  ASSERT_EQ(store_.applied.size(), 2u);
  const LinkedBatch& grant = store_.applied[0];
  const LinkedBatch& reversal = store_.applied[1];
  EXPECT_EQ(reversal.batch_id, "r-1");
  ASSERT_EQ(reversal.transfers.size(), 3u);
  std::vector<std::string> ids;
  for (size_t i = 0; i < 3; ++i) {
    const pb::TransferSpec& original = grant.transfers[2 - i];
    const pb::TransferSpec& leg = reversal.transfers[i];
    ids.push_back(leg.id());
    EXPECT_EQ(leg.id(), "r-1:" + original.id());
    EXPECT_EQ(leg.code(), pb::REVERSE);
    EXPECT_EQ(leg.reverses_transfer_id(), original.id());
    EXPECT_EQ(leg.debit().SerializeAsString(), original.credit().SerializeAsString());
    EXPECT_EQ(leg.credit().SerializeAsString(), original.debit().SerializeAsString());
    EXPECT_EQ(leg.amount(), original.amount());
    EXPECT_FALSE(leg.has_expiry());
    EXPECT_EQ(leg.metadata().at("reason"), "customer complaint");
  }
  EXPECT_THAT(ids, ElementsAre("r-1:g-1:benefit", "r-1:g-1:stock", "r-1:g-1:budget"));
  EXPECT_EQ(resp->transfers_size(), 3);
}

TEST_F(LedgerServiceTest, ReverseGivesExpiredPointsBackFromExpiryBeforeTheClawback) {
  ASSERT_TRUE(service_.Grant(FullGrant()).ok());  // 200 points to c1
  // 80 of them expired from the grant's lot (30 given back already by another reversal), 50
  // from a lot they were later put back into; the rest was spent.
  store_.lot_expiries["g-1:benefit"] = {ExpiryOfLot(7, 80, 30), ExpiryOfLot(9, 50, 0),
                                        ExpiryOfLot(11, 5, 5)};
  pb::ReverseRequest req;
  req.set_request_id("r-1");
  req.set_batch_id("g-1");
  auto resp = service_.Reverse(req);
  ASSERT_TRUE(resp.ok()) << resp.status();
  ASSERT_EQ(store_.applied.size(), 2u);
  const LinkedBatch reversal = store_.applied[1];  // a copy: more batches follow
  std::vector<std::string> ids;
  for (const auto& t : reversal.transfers) ids.push_back(t.id());
  EXPECT_THAT(ids, ElementsAre("r-1:expire:7", "r-1:expire:9", "r-1:g-1:benefit", "r-1:g-1:stock",
                               "r-1:g-1:budget"));
  const pb::TransferSpec& back = reversal.transfers[0];
  EXPECT_EQ(back.code(), pb::REVERSE);
  EXPECT_EQ(back.reverses_transfer_id(), "expire:7");
  EXPECT_EQ(back.debit().owner_id(), "expiry");
  EXPECT_EQ(back.credit().owner_id(), "c1");
  EXPECT_EQ(back.amount(), 50);  // what is left of it
  EXPECT_EQ(reversal.transfers[1].amount(), 50);
  EXPECT_EQ(reversal.transfers[2].amount(), 200);  // the clawback of the whole grant

  // Never more than the leg gives back: 150 of 200 expired and nothing was reversed yet.
  store_.lot_expiries["g-1:benefit"] = {ExpiryOfLot(7, 150, 0), ExpiryOfLot(9, 100, 0)};
  req.set_request_id("r-2");
  ASSERT_TRUE(service_.Reverse(req).ok());
  ASSERT_EQ(store_.applied.size(), 3u);
  ASSERT_EQ(store_.applied[2].transfers.size(), 5u);
  EXPECT_EQ(store_.applied[2].transfers[0].amount(), 150);
  EXPECT_EQ(store_.applied[2].transfers[1].amount(), 50);

  // A retry finds its own reversal of an expiry and asks for the same amount again (a replay),
  // and leaves out an expiry that came after it (points put back since, then expired): the
  // batch is what was stored, so the ledger answers it as a replay.
  store_.lot_expiries["g-1:benefit"] = {ExpiryOfLot(7, 80, 80), ExpiryOfLot(9, 50, 50),
                                        ExpiryOfLot(13, 20, 0)};
  req.set_request_id("r-1");
  ASSERT_TRUE(service_.Reverse(req).ok());
  ASSERT_EQ(store_.applied.size(), 4u);
  ASSERT_EQ(store_.applied[3].transfers.size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(store_.applied[3].transfers[i].SerializeAsString(),
              reversal.transfers[i].SerializeAsString())
        << i;
  }
}

// The store refuses a reversal built from expiries read before more of them expired (ABORTED):
// Reverse reads them again and builds the batch anew, so the caller never sees the race.
TEST_F(LedgerServiceTest, ReverseRebuildsItsBatchWhenTheStoreFindsMorePointsExpired) {
  ASSERT_TRUE(service_.Grant(FullGrant()).ok());  // 200 points to c1
  store_.lot_expiries["g-1:benefit"] = {ExpiryOfLot(7, 80)};
  int reads = 0;
  store_.after_lot_expiries_read = [&] {
    // The expiry job runs right after the first read: lot 9 (points of g-1 put back) expires.
    if (++reads == 1) store_.lot_expiries["g-1:benefit"] = {ExpiryOfLot(7, 80), ExpiryOfLot(9, 50)};
  };
  store_.fail_next["r-1"] = {Error(absl::StatusCode::kAborted, cpb::CONFLICT,
                                   "points of g-1:benefit expired meanwhile", "transfers[1]")};
  pb::ReverseRequest req;
  req.set_request_id("r-1");
  req.set_batch_id("g-1");
  auto resp = service_.Reverse(req);
  ASSERT_TRUE(resp.ok()) << resp.status();
  EXPECT_EQ(reads, 2);
  ASSERT_EQ(store_.applied.size(), 3u);  // the grant and two attempts
  auto ids = [](const LinkedBatch& b) {
    std::vector<std::string> out;
    for (const auto& t : b.transfers) out.push_back(t.id() + "=" + std::to_string(t.amount()));
    return out;
  };
  EXPECT_THAT(ids(store_.applied[1]), ElementsAre("r-1:expire:7=80", "r-1:g-1:benefit=200",
                                                  "r-1:g-1:stock=1", "r-1:g-1:budget=5000"));
  EXPECT_THAT(ids(store_.applied[2]),
              ElementsAre("r-1:expire:7=80", "r-1:expire:9=50", "r-1:g-1:benefit=200",
                          "r-1:g-1:stock=1", "r-1:g-1:budget=5000"));
  EXPECT_TRUE(store_.applied[1].checks_expiry_reversals);
  EXPECT_TRUE(store_.applied[2].checks_expiry_reversals);
  EXPECT_TRUE(store_.applied[2].exclusive_batch_id);
  EXPECT_EQ(resp->transfers_size(), 5);
}

TEST_F(LedgerServiceTest, ReverseGivesUpAfterThreeAbortedAttemptsAndRetriesNothingElse) {
  ASSERT_TRUE(service_.Grant(FullGrant()).ok());
  const absl::Status aborted =
      Error(absl::StatusCode::kAborted, cpb::CONFLICT, "expired meanwhile", "transfers[0]");
  store_.fail_next["r-1"] = {aborted, aborted, aborted, aborted};
  pb::ReverseRequest req;
  req.set_request_id("r-1");
  req.set_batch_id("g-1");
  auto resp = service_.Reverse(req);
  EXPECT_EQ(resp.status().code(), absl::StatusCode::kAborted) << resp.status();
  EXPECT_EQ(ReasonOf(resp.status()), cpb::CONFLICT);
  EXPECT_EQ(store_.applied.size(), 4u);  // the grant and three attempts

  // Any other refusal is the caller's at once.
  store_.fail_batch["r-2"] = Error(absl::StatusCode::kFailedPrecondition, cpb::INSUFFICIENT_BALANCE,
                                   "spent", "transfers[0]");
  req.set_request_id("r-2");
  EXPECT_EQ(ReasonOf(service_.Reverse(req).status()), cpb::INSUFFICIENT_BALANCE);
  EXPECT_EQ(store_.applied.size(), 5u);
}

TEST_F(LedgerServiceTest, ReverseSkipsWhatIsNotPostedAndEarlierReversals) {
  pb::Transfer posted = FakeLedgerStore::FromSpec(CashSpec("b:a"), "b");
  pb::Transfer pending = FakeLedgerStore::FromSpec(CashSpec("b:p"), "b");
  pending.set_state(pb::PENDING);
  pb::Transfer voided = FakeLedgerStore::FromSpec(CashSpec("b:v"), "b");
  voided.set_state(pb::VOIDED);
  pb::Transfer reversal = FakeLedgerStore::FromSpec(CashSpec("b:r"), "b");
  reversal.set_code(pb::REVERSE);
  for (const auto& t : {posted, pending, voided, reversal}) store_.Store(t);

  pb::ReverseRequest req;
  req.set_request_id("r-2");
  req.set_batch_id("b");
  ASSERT_TRUE(service_.Reverse(req).ok());
  ASSERT_EQ(store_.applied.size(), 1u);
  ASSERT_EQ(store_.applied[0].transfers.size(), 1u);
  EXPECT_EQ(store_.applied[0].transfers[0].id(), "r-2:b:a");
  EXPECT_TRUE(store_.applied[0].transfers[0].metadata().empty());
  // No customer's points are clawed back: nothing for the store to check.
  EXPECT_FALSE(store_.applied[0].checks_expiry_reversals);

  // One transfer by id; a pending one cannot be reversed.
  req.set_request_id("r-3");
  req.set_transfer_id("b:a");
  ASSERT_TRUE(service_.Reverse(req).ok());
  EXPECT_EQ(store_.applied.back().transfers[0].id(), "r-3:b:a");
  req.set_transfer_id("b:p");
  auto refused = service_.Reverse(req);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ReasonOf(refused.status()), cpb::CONFLICT);
  req.set_transfer_id("missing");
  EXPECT_EQ(service_.Reverse(req).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_.applied.size(), 2u);
}

// A reversal's ids name its target, so only the store can tell that its request_id already
// names other transfers: Reverse asks for that check, the hot grant path never does.
TEST_F(LedgerServiceTest, OnlyReverseAsksTheStoreToKeepItsRequestIdExclusive) {
  ASSERT_TRUE(service_.Grant(FullGrant()).ok());
  pb::SpendRequest spend;
  spend.set_request_id("s-1");
  spend.set_org_id("fed");
  spend.set_customer_id("c1");
  spend.set_asset(pb::POINTS);
  spend.set_amount(10);
  ASSERT_TRUE(service_.Spend(spend).ok());
  pb::FundRequest fund;
  fund.set_request_id("f-1");
  fund.set_org_id("fed");
  fund.set_asset(pb::BUDGET_FEN);
  fund.set_owner_id("cp1");
  fund.set_amount(100);
  ASSERT_TRUE(service_.Fund(fund).ok());
  ASSERT_TRUE(Create({CashSpec("t-1")}).ok());
  pb::ReverseRequest reverse;
  reverse.set_request_id("r-1");
  reverse.set_batch_id("g-1");
  ASSERT_TRUE(service_.Reverse(reverse).ok());

  ASSERT_EQ(store_.applied.size(), 5u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_FALSE(store_.applied[i].exclusive_batch_id) << store_.applied[i].batch_id;
    EXPECT_FALSE(store_.applied[i].checks_expiry_reversals) << store_.applied[i].batch_id;
  }
  EXPECT_EQ(store_.applied[4].batch_id, "r-1");
  EXPECT_TRUE(store_.applied[4].exclusive_batch_id);
  // It claws points back: the store checks its expiry reversals against a fresh read.
  EXPECT_TRUE(store_.applied[4].checks_expiry_reversals);
}

TEST_F(LedgerServiceTest, ReverseUnderARequestIdThatNamesAnotherTargetIsKeyReused) {
  ASSERT_TRUE(service_.Grant(FullGrant()).ok());
  pb::GrantRequest other = FullGrant();
  other.set_request_id("g-2");
  other.set_customer_id("c2");
  ASSERT_TRUE(service_.Grant(other).ok());
  pb::ReverseRequest req;
  req.set_request_id("r-1");
  req.set_batch_id("g-1");
  auto first = service_.Reverse(req);
  ASSERT_TRUE(first.ok()) << first.status();

  // The same request_id for g-2: refused, as the store answers, and nothing else is tried.
  req.set_batch_id("g-2");
  const size_t applied = store_.applied.size();
  auto reused = service_.Reverse(req);
  ASSERT_FALSE(reused.ok());
  EXPECT_EQ(reused.status().code(), absl::StatusCode::kAlreadyExists) << reused.status();
  EXPECT_EQ(ReasonOf(reused.status()), cpb::IDEMPOTENCY_KEY_REUSED) << reused.status();
  EXPECT_EQ(FieldOf(reused.status()), "request_id") << reused.status();
  EXPECT_EQ(store_.applied.size(), applied + 1);
  // The grant's own key names the grant's transfers: not a reversal's to take either.
  req.set_request_id("g-1");
  EXPECT_EQ(ReasonOf(service_.Reverse(req).status()), cpb::IDEMPOTENCY_KEY_REUSED);

  // The first request again is still a replay of what it stored.
  req.set_request_id("r-1");
  req.set_batch_id("g-1");
  auto again = service_.Reverse(req);
  ASSERT_TRUE(again.ok()) << again.status();
  ASSERT_EQ(again->transfers_size(), first->transfers_size());
  for (int i = 0; i < first->transfers_size(); ++i) {
    EXPECT_EQ(again->transfers(i).id(), first->transfers(i).id());
  }
}

TEST_F(LedgerServiceTest, ReverseRefusesBadInput) {
  pb::ReverseRequest req;
  req.set_request_id("r-1");
  ExpectInvalid(service_.Reverse(req).status(), "target");
  req.set_batch_id("");
  ExpectInvalid(service_.Reverse(req).status(), "batch_id");
  req.set_transfer_id("has space");
  ExpectInvalid(service_.Reverse(req).status(), "transfer_id");
  req.set_transfer_id("t");
  req.set_reason(std::string("\x01", 1));
  ExpectInvalid(service_.Reverse(req).status(), "reason");
  // A derived id longer than 128 characters is the request id's fault.
  store_.Store(FakeLedgerStore::FromSpec(CashSpec(std::string(100, 'o')), "long"));
  req.clear_reason();
  req.set_request_id(std::string(64, 'r'));
  req.set_batch_id("long");
  ExpectInvalid(service_.Reverse(req).status(), "request_id");
  EXPECT_THAT(store_.applied, IsEmpty());
}

// ---- Fund ----

TEST_F(LedgerServiceTest, FundLoadsABudgetOrAStockFromFunding) {
  pb::FundRequest req;
  req.set_request_id("f-1");
  req.set_org_id("fed");
  req.set_asset(pb::BUDGET_FEN);
  req.set_owner_id("cp1");
  req.set_amount(1'000'000);
  auto budget = service_.Fund(req);
  ASSERT_TRUE(budget.ok()) << budget.status();
  req.set_request_id("f-2");
  req.set_asset(pb::STOCK);
  req.set_owner_id("tpl9");
  req.set_amount(10'000);
  auto stock = service_.Fund(req);
  ASSERT_TRUE(stock.ok()) << stock.status();

  ASSERT_EQ(store_.applied.size(), 2u);
  const auto& b = store_.applied[0].transfers.at(0);
  EXPECT_EQ(b.id(), "f-1:fund");
  EXPECT_EQ(b.code(), pb::FUND);
  EXPECT_EQ(b.debit().owner_kind(), pb::SYSTEM);
  EXPECT_EQ(b.debit().owner_id(), "funding");
  EXPECT_EQ(b.debit().asset(), pb::BUDGET_FEN);
  EXPECT_EQ(b.credit().owner_kind(), pb::CAMPAIGN);
  EXPECT_EQ(b.credit().owner_id(), "cp1");
  EXPECT_EQ(b.amount(), 1'000'000);
  EXPECT_EQ(budget->account().ref().owner_id(), "cp1");

  const auto& s = store_.applied[1].transfers.at(0);
  EXPECT_EQ(s.id(), "f-2:fund");
  EXPECT_EQ(s.debit().owner_id(), "funding");
  EXPECT_EQ(s.debit().asset_ref(), "tpl9");
  EXPECT_EQ(s.credit().asset(), pb::STOCK);
  EXPECT_EQ(s.credit().owner_kind(), pb::TEMPLATE);
  EXPECT_EQ(s.credit().owner_id(), "tpl9");
  EXPECT_EQ(s.credit().asset_ref(), "tpl9");
  EXPECT_EQ(stock->transfer().id(), "f-2:fund");

  req.set_asset(pb::POINTS);
  ExpectInvalid(service_.Fund(req).status(), "asset");
  req.set_asset(pb::STOCK);
  req.clear_owner_id();
  ExpectInvalid(service_.Fund(req).status(), "owner_id");
  req.set_owner_id("tpl9");
  req.set_amount(-1);
  ExpectInvalid(service_.Fund(req).status(), "amount");
  EXPECT_EQ(store_.applied.size(), 2u);
}

// ---- Pending, reads and jobs ----

TEST_F(LedgerServiceTest, ResolvePendingValidatesAndGoesToTheStore) {
  pb::ResolvePendingRequest req;
  req.set_id("s-1:post");
  req.set_pending_id("s-1:spend");
  ASSERT_TRUE(service_.ResolvePending(req, true).ok());
  ASSERT_TRUE(service_.ResolvePending(req, false).ok());
  ASSERT_EQ(store_.resolved.size(), 2u);
  EXPECT_THAT(store_.resolved[0], ElementsAre("s-1:post", "s-1:spend", "post"));
  EXPECT_THAT(store_.resolved[1], ElementsAre("s-1:post", "s-1:spend", "void"));
  req.set_pending_id("");
  ExpectInvalid(service_.ResolvePending(req, true).status(), "pending_id");
  req.set_pending_id("s-1:post");
  ExpectInvalid(service_.ResolvePending(req, true).status(), "id");
  // The sweeper voids a reservation as "timeout:<pending id>"; a caller may not take that name.
  req.set_id("timeout:s-1:spend");
  req.set_pending_id("s-1:spend");
  ExpectInvalid(service_.ResolvePending(req, false).status(), "id");
  EXPECT_EQ(store_.resolved.size(), 2u);
}

TEST_F(LedgerServiceTest, ReadsValidateTheirInputBeforeTheStore) {
  pb::GetBalancesRequest balances;
  balances.set_org_id("fed");
  ExpectInvalid(service_.GetBalances(balances).status(), "customer_id");
  balances.set_customer_id(std::string(65, 'c'));
  ExpectInvalid(service_.GetBalances(balances).status(), "customer_id");
  balances.set_customer_id("c1");
  balances.set_org_id("");
  ExpectInvalid(service_.GetBalances(balances).status(), "org_id");

  pb::ListExpiringLotsRequest lots;
  lots.set_org_id("fed");
  lots.set_customer_id("c1");
  ExpectInvalid(service_.ListExpiringLots(lots).status(), "within_days");
  lots.set_within_days(3651);
  ExpectInvalid(service_.ListExpiringLots(lots).status(), "within_days");

  pb::ListHistoryRequest history;
  history.set_org_id("fed");
  history.set_customer_id("c1");
  history.mutable_page()->set_page_size(-1);
  ExpectInvalid(service_.ListHistory(history).status(), "page.page_size");
  history.mutable_page()->set_page_size(501);
  ExpectInvalid(service_.ListHistory(history).status(), "page.page_size");

  pb::GetAccountRequest account;
  *account.mutable_ref() = CustomerAccount("fed", pb::POINTS, "c1");
  account.mutable_ref()->set_owner_kind(pb::TEMPLATE);
  ExpectInvalid(service_.GetAccount(account).status(), "ref.owner_kind");

  pb::GetStatementRequest statement;
  *statement.mutable_account() = CustomerAccount("fed", pb::POINTS, "c1");
  *statement.mutable_from() = TimeUtil::SecondsToTimestamp(2'000'000'000);
  *statement.mutable_to() = TimeUtil::SecondsToTimestamp(1'000'000'000);
  ExpectInvalid(service_.GetStatement(statement).status(), "from");
  statement.mutable_to()->set_nanos(1'000'000'000);
  ExpectInvalid(service_.GetStatement(statement).status(), "to");

  pb::RunExpiryRequest expiry;
  expiry.mutable_as_of()->set_seconds(std::numeric_limits<int64_t>::max());
  ExpectInvalid(service_.RunExpiry(expiry).status(), "as_of");

  EXPECT_THAT(store_.reads, IsEmpty());
  EXPECT_THAT(store_.account_reads, IsEmpty());
  EXPECT_THAT(store_.expire_calls, IsEmpty());
}

TEST_F(LedgerServiceTest, ReadsReachTheStoreWithDefaults) {
  pb::GetBalancesRequest balances;
  balances.set_org_id("fed");
  balances.set_customer_id("c1");
  ASSERT_TRUE(service_.GetBalances(balances).ok());

  pb::ListExpiringLotsRequest lots;
  lots.set_org_id("fed");
  lots.set_customer_id("c1");
  lots.set_within_days(30);
  ASSERT_TRUE(service_.ListExpiringLots(lots).ok());
  EXPECT_EQ(store_.lots_until, clock_.Now() + absl::Hours(24 * 30));

  pb::ListHistoryRequest history;
  history.set_org_id("fed");
  history.set_customer_id("c1");
  ASSERT_TRUE(service_.ListHistory(history).ok());
  history.mutable_page()->set_page_size(500);
  history.mutable_page()->set_page_token("tok");
  ASSERT_TRUE(service_.ListHistory(history).ok());

  pb::GetStatementRequest statement;
  *statement.mutable_account() = SystemAccount("fed", pb::STOCK, pb::ROLE_ISSUANCE, "tpl9");
  ASSERT_TRUE(service_.GetStatement(statement).ok());
  EXPECT_EQ(store_.statement_from, absl::UnixEpoch());
  EXPECT_EQ(store_.statement_to, clock_.Now());

  EXPECT_THAT(store_.reads, ElementsAre("balances fed c1", "lots fed c1", "history fed c1 [] 50",
                                        "history fed c1 [tok] 500", "statement issuance 50"));
}

TEST_F(LedgerServiceTest, RunExpiryWorksThroughAllExpiredLotsInChunks) {
  store_.expirable_lots = 2500;
  auto done = service_.RunExpiry({});
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->lots_expired(), 2500);
  EXPECT_EQ(done->points_expired(), 25000);
  ASSERT_EQ(store_.expire_calls.size(), 3u);
  EXPECT_EQ(store_.expire_calls[0], clock_.Now());
}

// ---- Points expiry rules ----

TEST(ExpiryOfTest, FixedInstantIsTakenAsIs) {
  pb::PointsExpiry rule;
  *rule.mutable_fixed_at() = TimeUtil::SecondsToTimestamp(1'900'000'000);
  auto at = ExpiryOf(rule, ChinaTime(2025, 6, 1, 12, 0, 0));
  ASSERT_TRUE(at.ok()) << at.status();
  EXPECT_EQ(*at, absl::FromUnixSeconds(1'900'000'000));
}

TEST(ExpiryOfTest, DaysAfterGrantEndAtTheLastSecondOfTheNthDayInChinaTime) {
  pb::PointsExpiry rule;
  rule.set_days_after_grant(30);
  auto at = ExpiryOf(rule, ChinaTime(2025, 6, 1, 12, 0, 0));
  ASSERT_TRUE(at.ok()) << at.status();
  EXPECT_EQ(*at, ChinaTime(2025, 7, 1, 23, 59, 59));
  // 1 Jan 00:30 in Beijing is still 31 Dec in UTC; the day counted from is the Beijing one.
  rule.set_days_after_grant(1);
  at = ExpiryOf(rule, ChinaTime(2026, 1, 1, 0, 30, 0));
  ASSERT_TRUE(at.ok()) << at.status();
  EXPECT_EQ(*at, ChinaTime(2026, 1, 2, 23, 59, 59));
}

TEST(ExpiryOfTest, EndOfYearIsTheLastSecondOfTheYearInChinaTime) {
  pb::PointsExpiry rule;
  rule.set_end_of_year_plus_years(0);
  auto at = ExpiryOf(rule, ChinaTime(2025, 6, 1, 12, 0, 0));
  ASSERT_TRUE(at.ok()) << at.status();
  EXPECT_EQ(*at, ChinaTime(2025, 12, 31, 23, 59, 59));

  rule.set_end_of_year_plus_years(2);
  at = ExpiryOf(rule, ChinaTime(2025, 1, 1, 0, 0, 0));
  ASSERT_TRUE(at.ok()) << at.status();
  EXPECT_EQ(*at, ChinaTime(2027, 12, 31, 23, 59, 59));
}

TEST(ExpiryOfTest, AGrantLateOn31DecemberChinaTimeBelongsToThatYear) {
  // 31 Dec 2025 23:30 in Beijing is still 31 Dec 15:30 UTC; a year computed in UTC would agree
  // here, so also check 1 Jan 00:30 Beijing, which is 31 Dec 16:30 UTC, the other year.
  pb::PointsExpiry rule;
  rule.set_end_of_year_plus_years(0);
  auto late = ExpiryOf(rule, ChinaTime(2025, 12, 31, 23, 30, 0));
  ASSERT_TRUE(late.ok()) << late.status();
  EXPECT_EQ(*late, ChinaTime(2025, 12, 31, 23, 59, 59));
  auto early = ExpiryOf(rule, ChinaTime(2026, 1, 1, 0, 30, 0));
  ASSERT_TRUE(early.ok()) << early.status();
  EXPECT_EQ(*early, ChinaTime(2026, 12, 31, 23, 59, 59));
}

TEST(ExpiryOfTest, NoRuleOrARuleOutOfRangeIsRefused) {
  EXPECT_EQ(ExpiryOf(pb::PointsExpiry(), absl::Now()).status().code(),
            absl::StatusCode::kInvalidArgument);
  pb::PointsExpiry rule;
  rule.set_days_after_grant(kMaxExpiryDays + 1);
  EXPECT_EQ(ExpiryOf(rule, absl::Now()).status().code(), absl::StatusCode::kInvalidArgument);
  rule.set_end_of_year_plus_years(-1);
  EXPECT_EQ(ExpiryOf(rule, absl::Now()).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mkt::rewards
