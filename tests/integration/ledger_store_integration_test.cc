// The PostgreSQL ledger store against the real PostgreSQL (decision 006): linked batches, the
// failure reasons, idempotency, two-phase transfers, points lots and their expiry, reversals,
// facts in the outbox, reads, and real concurrency (16 threads on one hot budget; two replicas
// racing on the same ids). After every scenario the ledger's invariants are checked twice: by
// CheckIntegrity and by an independent SQL query.
#include <atomic>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
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
#include "services/rewards/ledger_service.h"
#include "services/rewards/pg_ledger_store.h"
#include "services/rewards/points_expiry.h"
#include "tests/integration/switchable_ledger.h"

namespace mkt::rewards {
namespace {

namespace cpb = ::marketing::common::v1;
using ::google::protobuf::util::MessageDifferencer;

#if defined(__SANITIZE_ADDRESS__)
constexpr char kBuildKind[] = "debug build with ASan";
#elif defined(NDEBUG)
constexpr char kBuildKind[] = "optimized build";
#else
constexpr char kBuildKind[] = "debug build";
#endif

constexpr char kOrg[] = "bank-a";
constexpr char kCampaign[] = "camp-1";
constexpr char kTemplate[] = "tpl-1";

using FakeClock = testing::ManualClock;

// 2025-03-10 10:00:00 China time.
absl::Time Start() {
  return absl::FromCivil(absl::CivilSecond(2025, 3, 10, 10, 0, 0), ChinaStandardTime());
}
absl::Time ChinaTime(int y, int m, int d, int hh, int mm, int ss) {
  return absl::FromCivil(absl::CivilSecond(y, m, d, hh, mm, ss), ChinaStandardTime());
}

// ---- Accounts and specs.

pb::AccountRef Ref(pb::Asset asset, pb::OwnerKind kind, const std::string& owner,
                   const std::string& asset_ref = "", const std::string& org = kOrg) {
  pb::AccountRef r;
  r.set_org_id(org);
  r.set_asset(asset);
  r.set_asset_ref(asset_ref);
  r.set_owner_kind(kind);
  r.set_owner_id(owner);
  return r;
}
pb::AccountRef Points(const std::string& customer, const std::string& org = kOrg) {
  return Ref(pb::POINTS, pb::CUSTOMER, customer, "", org);
}
pb::AccountRef Budget(const std::string& campaign = kCampaign) {
  return Ref(pb::BUDGET_FEN, pb::CAMPAIGN, campaign);
}
pb::AccountRef Stock(const std::string& tpl = kTemplate) {
  return Ref(pb::STOCK, pb::TEMPLATE, tpl, tpl);
}
pb::AccountRef System(pb::Asset asset, const std::string& role, const std::string& asset_ref = "",
                      const std::string& org = kOrg) {
  return Ref(asset, pb::SYSTEM, role, asset_ref, org);
}

pb::TransferSpec Spec(const std::string& id, const pb::AccountRef& debit,
                      const pb::AccountRef& credit, int64_t amount, pb::TransferCode code) {
  pb::TransferSpec s;
  s.set_id(id);
  *s.mutable_debit() = debit;
  *s.mutable_credit() = credit;
  s.set_amount(amount);
  s.set_code(code);
  return s;
}

pb::PointsExpiry DaysAfterGrant(int days) {
  pb::PointsExpiry e;
  e.set_days_after_grant(days);
  return e;
}

LinkedBatch FundBudget(const std::string& request, int64_t fen,
                       const std::string& campaign = kCampaign) {
  return {request,
          {Spec(request + ":fund", System(pb::BUDGET_FEN, "funding"), Budget(campaign), fen,
                pb::FUND)}};
}
LinkedBatch FundStock(const std::string& request, int64_t units,
                      const std::string& tpl = kTemplate) {
  return {
      request,
      {Spec(request + ":fund", System(pb::STOCK, "funding", tpl), Stock(tpl), units, pb::FUND)}};
}

// A grant as the service builds it: budget leg, stock leg, benefit leg.
LinkedBatch Grant(const std::string& request, const std::string& customer, int64_t points,
                  int64_t cost_fen = 100, const pb::PointsExpiry& expiry = DaysAfterGrant(365),
                  const std::string& campaign = kCampaign, const std::string& tpl = kTemplate) {
  LinkedBatch b{request, {}};
  b.replay_needs_whole_batch = true;  // as LedgerService::Grant sends it
  b.transfers.push_back(Spec(request + ":budget", Budget(campaign),
                             System(pb::BUDGET_FEN, "expense"), cost_fen, pb::GRANT));
  b.transfers.push_back(
      Spec(request + ":stock", Stock(tpl), System(pb::STOCK, "issuance", tpl), 1, pb::GRANT));
  pb::TransferSpec benefit = Spec(request + ":benefit", System(pb::POINTS, "issuance"),
                                  Points(customer), points, pb::GRANT);
  *benefit.mutable_expiry() = expiry;
  (*benefit.mutable_metadata())["channel"] = "mobile_banking";
  b.transfers.push_back(benefit);
  for (auto& t : b.transfers) t.set_campaign_id(campaign);
  return b;
}

// Just the benefit leg: points for a customer.
LinkedBatch Award(const std::string& request, const std::string& customer, int64_t points,
                  const pb::PointsExpiry& expiry) {
  pb::TransferSpec benefit = Spec(request + ":benefit", System(pb::POINTS, "issuance"),
                                  Points(customer), points, pb::GRANT);
  *benefit.mutable_expiry() = expiry;
  return {request, {benefit}};
}

LinkedBatch Spend(const std::string& request, const std::string& customer, int64_t points,
                  bool pending = false, int timeout_seconds = 0) {
  pb::TransferSpec s = Spec(request + ":spend", Points(customer), System(pb::POINTS, "redemption"),
                            points, pb::SPEND);
  s.set_pending(pending);
  s.set_timeout_seconds(timeout_seconds);
  s.set_order_id("order-" + request);
  return {request, {s}};
}

// The reversal of a batch's posted transfers, legs in reverse order.
LinkedBatch ReversalOf(const std::string& request, const std::vector<pb::Transfer>& batch) {
  LinkedBatch r{request, {}};
  for (auto it = batch.rbegin(); it != batch.rend(); ++it) {
    pb::TransferSpec s =
        Spec(request + ":" + it->id(), it->credit(), it->debit(), it->amount(), pb::REVERSE);
    s.set_reverses_transfer_id(it->id());
    r.transfers.push_back(s);
  }
  return r;
}

// ---- The fixture.

class LedgerStoreTest : public ::testing::Test {
 protected:
  LedgerStoreTest() : clock_(Start()) {}

  void SetUp() override {
    pool_ = Connect(16);
    ASSERT_NE(pool_, nullptr);
    absl::Status migrated =
        pg::ApplyMigrations(*pool_, {&kafka::OutboxMigrations(), &RewardsMigrations()});
    ASSERT_TRUE(migrated.ok()) << migrated;
    store_ = std::make_unique<PgLedgerStore>(*pool_, clock_);
  }

  // Every scenario ends with the invariants checked both ways.
  void TearDown() override {
    if (store_ != nullptr) ExpectInvariants();
  }

  std::unique_ptr<pg::Pool> Connect(int size) {
    pg::PoolOptions options;
    options.dsn = db_.dsn();
    options.size = size;
    auto pool = pg::Pool::Connect(options);
    EXPECT_TRUE(pool.ok()) << pool.status();
    return pool.ok() ? std::move(*pool) : nullptr;
  }

  void ExpectInvariants() {
    absl::StatusOr<pb::CheckIntegrityResponse> check = store_->CheckIntegrity();
    ASSERT_TRUE(check.ok()) << check.status();
    EXPECT_TRUE(check->ok()) << check->DebugString();
    EXPECT_EQ(check->checks_size(), 6);
    // Independently of the store: per asset, the balances sum to zero and so do the pending sums.
    EXPECT_EQ(Sql("SELECT count(*) FROM (SELECT asset FROM accounts GROUP BY asset "
                  "HAVING sum(credits_posted - debits_posted) <> 0 "
                  "OR sum(credits_pending) <> sum(debits_pending)) x"),
              0);
    EXPECT_EQ(Sql("SELECT count(*) FROM accounts WHERE owner_kind IN (1, 2, 3) "
                  "AND credits_posted - debits_posted - debits_pending < 0"),
              0);
  }

  int64_t Sql(const std::string& query) {
    int64_t value = -1;
    absl::Status s = pg::WithTransaction(*pool_, [&](pqxx::work& tx) {
      pqxx::result r = tx.exec(query);
      value = r.empty() || r[0][0].is_null() ? 0 : r[0][0].as<int64_t>();
      return absl::OkStatus();
    });
    EXPECT_TRUE(s.ok()) << s << " in " << query;
    return value;
  }

  void Exec(const std::string& statement) {
    absl::Status s = pg::WithTransaction(*pool_, [&](pqxx::work& tx) {
      tx.exec(statement);
      return absl::OkStatus();
    });
    ASSERT_TRUE(s.ok()) << s;
  }

  BatchResult ApplyOne(const LinkedBatch& batch) {
    auto results = store_->Apply({batch});
    EXPECT_TRUE(results.ok()) << results.status();
    if (!results.ok()) return results.status();
    EXPECT_EQ(results->size(), 1u);
    return (*results)[0];
  }

  std::vector<pb::Transfer> MustApply(const LinkedBatch& batch) {
    BatchResult r = ApplyOne(batch);
    EXPECT_TRUE(r.ok()) << batch.batch_id << ": " << r.status();
    return r.ok() ? r->transfers : std::vector<pb::Transfer>{};
  }

  void FundDefaults(int64_t budget_fen = 1'000'000, int64_t stock_units = 100) {
    MustApply(FundBudget("fund-budget", budget_fen));
    MustApply(FundStock("fund-stock", stock_units));
  }

  pb::Account Account(const pb::AccountRef& ref) {
    auto a = store_->GetAccount(ref);
    EXPECT_TRUE(a.ok()) << a.status();
    return a.ok() ? *a : pb::Account();
  }
  int64_t Balance(const pb::AccountRef& ref) { return Account(ref).balance(); }
  int64_t Available(const pb::AccountRef& ref) { return Account(ref).available(); }

  // The customer's lots with points left: lot id -> remaining, soonest first.
  std::vector<std::pair<std::string, int64_t>> Lots(const std::string& customer) {
    auto lots = store_->ListExpiringLots(kOrg, customer, absl::InfiniteFuture());
    EXPECT_TRUE(lots.ok()) << lots.status();
    std::vector<std::pair<std::string, int64_t>> out;
    if (!lots.ok()) return out;
    for (const auto& lot : lots->lots()) {
      out.emplace_back(lot.granted_by_transfer_id(), lot.remaining());
    }
    return out;
  }

  static void ExpectError(const BatchResult& result, absl::StatusCode code, cpb::ErrorReason reason,
                          const std::string& field) {
    ASSERT_FALSE(result.ok()) << "expected " << ReasonName(reason);
    EXPECT_EQ(result.status().code(), code) << result.status();
    EXPECT_EQ(ReasonOf(result.status()), reason) << result.status();
    EXPECT_EQ(FieldOf(result.status()), field) << result.status();
  }

  static bool Same(const std::vector<pb::Transfer>& a, const std::vector<pb::Transfer>& b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
      if (!MessageDifferencer::Equals(a[i], b[i])) return false;
    }
    return true;
  }

  struct Fact {
    std::string key;
    cpb::Envelope envelope;
    pb::TransferPosted posted;
  };
  std::vector<Fact> Facts() {
    std::vector<Fact> out;
    absl::Status s = pg::WithTransaction(*pool_, [&](pqxx::work& tx) {
      out.clear();
      for (const auto& row : tx.exec("SELECT topic, msg_key, msg_value, event_id FROM outbox "
                                     "ORDER BY id")) {
        EXPECT_EQ(row[0].as<std::string>(), kLedgerFactsTopic);
        Fact f;
        f.key = pqxx::binarystring(row[1]).str();
        EXPECT_TRUE(f.envelope.ParseFromString(pqxx::binarystring(row[2]).str()));
        EXPECT_TRUE(f.envelope.payload().UnpackTo(&f.posted));
        EXPECT_EQ(row[3].as<std::string>(), f.envelope.event_id());
        out.push_back(std::move(f));
      }
      return absl::OkStatus();
    });
    EXPECT_TRUE(s.ok()) << s;
    return out;
  }

  // Two replicas racing: `a` is applied by store_ and `b` by `replica` while a third session holds
  // the outbox locked, so A has stored its transfers but not committed when B applies (B sees
  // none of A's rows and waits on A's); the lock is released once both wait.
  struct RaceResult {
    absl::StatusOr<std::vector<BatchResult>> a, b;
  };
  RaceResult RaceWhileTheOutboxIsLocked(const std::vector<LinkedBatch>& a, LedgerStore& replica,
                                        const std::vector<LinkedBatch>& b) {
    RaceResult out{Internal("not run"), Internal("not run")};
    auto blocker_pool = Connect(1);
    auto lease = blocker_pool->Acquire();
    EXPECT_TRUE(lease.ok());
    if (!lease.ok()) return out;
    auto blocker = std::make_unique<pqxx::work>(**lease);
    blocker->exec("LOCK TABLE outbox IN EXCLUSIVE MODE");
    const std::string waiting =
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND datname = current_database()";
    auto wait_for_waiters = [&](int n) {
      for (int i = 0; i < 500 && Sql(waiting) < n; ++i) absl::SleepFor(absl::Milliseconds(10));
      return Sql(waiting) >= n;
    };
    std::thread replica_a([&] { out.a = store_->Apply(a); });
    EXPECT_TRUE(wait_for_waiters(1));
    std::thread replica_b([&] { out.b = replica.Apply(b); });
    EXPECT_TRUE(wait_for_waiters(2));
    blocker->commit();
    replica_a.join();
    replica_b.join();
    return out;
  }

  mkt::testing::TestDatabase db_;
  FakeClock clock_;
  std::unique_ptr<pg::Pool> pool_;
  std::unique_ptr<PgLedgerStore> store_;
};

// ------------------------------------------------------------------------------------------------

TEST(PointsExpiryTest, RulesFollowChinaCalendar) {
  const absl::Time granted = ChinaTime(2025, 3, 10, 23, 30, 0);
  pb::PointsExpiry rule;
  rule.set_days_after_grant(30);
  EXPECT_EQ(*ExpiryOf(rule, granted), ChinaTime(2025, 4, 9, 23, 59, 59));
  // 17:00 UTC on 31 Dec is already 1 Jan in China: the grant's year is the Chinese one.
  const absl::Time new_year =
      absl::FromCivil(absl::CivilSecond(2024, 12, 31, 17, 0, 0), absl::UTCTimeZone());
  rule.set_end_of_year_plus_years(0);
  EXPECT_EQ(*ExpiryOf(rule, new_year), ChinaTime(2025, 12, 31, 23, 59, 59));
  rule.set_end_of_year_plus_years(2);
  EXPECT_EQ(*ExpiryOf(rule, granted), ChinaTime(2027, 12, 31, 23, 59, 59));
  rule.mutable_fixed_at()->set_seconds(1767225600);
  EXPECT_EQ(*ExpiryOf(rule, granted), absl::FromUnixSeconds(1767225600));

  rule.set_days_after_grant(0);
  EXPECT_EQ(ExpiryOf(rule, granted).status().code(), absl::StatusCode::kInvalidArgument);
  rule.set_days_after_grant(3651);
  EXPECT_EQ(FieldOf(ExpiryOf(rule, granted).status()), "expiry.days_after_grant");
  rule.set_end_of_year_plus_years(-1);
  EXPECT_FALSE(ExpiryOf(rule, granted).ok());
  EXPECT_FALSE(ExpiryOf(pb::PointsExpiry(), granted).ok());
}

TEST_F(LedgerStoreTest, GrantBatchMovesBudgetStockAndPointsExactly) {
  FundDefaults(10'000, 10);
  const std::vector<pb::Transfer> grant = MustApply(Grant("g1", "cust-1", 50, 100));
  ASSERT_EQ(grant.size(), 3u);
  for (const auto& t : grant) {
    EXPECT_EQ(t.state(), pb::POSTED);
    EXPECT_EQ(t.batch_id(), "g1");
    EXPECT_EQ(t.campaign_id(), kCampaign);
    EXPECT_EQ(t.created_at().seconds(), absl::ToUnixSeconds(Start()));
    EXPECT_GT(t.debit_account_id(), 0);
  }
  EXPECT_EQ(grant[0].id(), "g1:budget");
  EXPECT_EQ(grant[0].amount(), 100);
  EXPECT_EQ(grant[2].metadata().at("channel"), "mobile_banking");
  EXPECT_EQ(grant[2].credit().owner_id(), "cust-1");

  EXPECT_EQ(Balance(Budget()), 9'900);
  EXPECT_EQ(Balance(System(pb::BUDGET_FEN, "expense")), 100);
  EXPECT_EQ(Balance(System(pb::BUDGET_FEN, "funding")), -10'000);
  EXPECT_EQ(Balance(Stock()), 9);
  EXPECT_EQ(Balance(System(pb::STOCK, "issuance", kTemplate)), 1);
  EXPECT_EQ(Balance(System(pb::STOCK, "funding", kTemplate)), -10);
  EXPECT_EQ(Balance(System(pb::POINTS, "issuance")), -50);
  const pb::Account customer = Account(Points("cust-1"));
  EXPECT_EQ(customer.balance(), 50);
  EXPECT_EQ(customer.available(), 50);
  EXPECT_TRUE(customer.debits_must_not_exceed_credits());
  EXPECT_FALSE(Account(System(pb::POINTS, "issuance")).debits_must_not_exceed_credits());

  // One lot, expiring at the end of the 365th day after the grant, China time.
  auto lots = store_->ListExpiringLots(kOrg, "cust-1", absl::InfiniteFuture());
  ASSERT_TRUE(lots.ok());
  ASSERT_EQ(lots->lots_size(), 1);
  EXPECT_EQ(lots->total(), 50);
  EXPECT_EQ(lots->lots(0).granted_by_transfer_id(), "g1:benefit");
  EXPECT_EQ(lots->lots(0).expires_at().seconds(),
            absl::ToUnixSeconds(ChinaTime(2026, 3, 10, 23, 59, 59)));

  // One fact per posted transfer, with its deterministic event id; keyed by the customer when
  // there is one, else by the batch.
  const std::vector<Fact> facts = Facts();
  ASSERT_EQ(facts.size(), 5u);
  std::map<std::string, Fact> by_event;
  for (const auto& f : facts) by_event[f.envelope.event_id()] = f;
  ASSERT_EQ(by_event.count("ledger:g1:benefit"), 1u);
  EXPECT_EQ(by_event["ledger:g1:benefit"].key, "cust-1");
  EXPECT_EQ(by_event["ledger:g1:budget"].key, "g1");
  EXPECT_EQ(by_event["ledger:g1:benefit"].envelope.type(), "rewards.TransferPosted");
  EXPECT_EQ(by_event["ledger:g1:benefit"].envelope.org_id(), kOrg);
  EXPECT_TRUE(
      MessageDifferencer::Equals(by_event["ledger:g1:benefit"].posted.transfer(), grant[2]));
  EXPECT_EQ(by_event.count("ledger:fund-budget:fund"), 1u);

  // The stored transfer reads back as returned.
  auto stored = store_->GetTransfer("g1:benefit");
  ASSERT_TRUE(stored.ok());
  EXPECT_TRUE(MessageDifferencer::Equals(*stored, grant[2])) << stored->DebugString();
}

// A grant answers with the customer's account as its transaction committed it, so the service
// needs no second read; two grants in one group commit each see their own moment.
// A coupon issued by a batch (LinkedBatch::new_coupon, decision 017) is written in the batch's
// transaction: ISSUED with its issue event when the batch succeeds, not at all when it fails; a
// request id that issued a coupon before leaves its batch out (ALREADY_EXISTS, nothing moved)
// without affecting the others of the group.
TEST_F(LedgerStoreTest, ACouponIsWrittenOnlyWithItsBatch) {
  FundDefaults(/*budget_fen=*/1'000'000, /*stock_units=*/1);
  auto issuing = [](int id, const std::string& request) {
    LinkedBatch b = Grant(absl::StrCat("g-", id), absl::StrCat("cust-", id), 10);
    const absl::Time now = absl::FromUnixSeconds(1'800'000'000);
    b.new_coupon = NewCoupon{.id = id,
                             .code = absl::StrCat("C", id),
                             .issue_request_id = request,
                             .org_id = kOrg,
                             .template_id = kTemplate,
                             .type = 1,
                             .customer_id = absl::StrCat("cust-", id),
                             .campaign_id = kCampaign,
                             .holder_org_id = kOrg,
                             .valid_from = now,
                             .valid_until = now + absl::Hours(24 * 7),
                             .issued_at = now,
                             .actor = "test",
                             .intent = std::string("\x01\x00\x02", 3)};
    return b;
  };
  // The stock has one unit: the first batch takes it, the second is refused.
  auto results = store_->Apply({issuing(1001, "req-1"), issuing(1002, "req-2")});
  ASSERT_TRUE(results.ok()) << results.status();
  ASSERT_TRUE((*results)[0].ok()) << (*results)[0].status();
  EXPECT_EQ(ReasonOf((*results)[1].status()), cpb::STOCK_EXHAUSTED);
  EXPECT_EQ(Sql("SELECT state FROM coupons WHERE id = 1001"), 1);
  EXPECT_EQ(Sql("SELECT count(*) FROM coupon_events WHERE coupon_id = 1001 AND seq = 1 AND applied "
                "AND intent = '\\x010002'::bytea"),
            1);
  EXPECT_EQ(Sql("SELECT count(*) FROM coupons WHERE id = 1002"), 0);
  EXPECT_EQ(Sql("SELECT count(*) FROM coupon_events WHERE coupon_id = 1002"), 0);

  // Request 1 again, under another coupon and batch: left out, nothing moved; the other batch of
  // the same group goes through.
  MustApply(FundStock("more-stock", 5));
  results = store_->Apply({issuing(1003, "req-1"), issuing(1004, "req-4")});
  ASSERT_TRUE(results.ok()) << results.status();
  EXPECT_EQ(ReasonOf((*results)[0].status()), cpb::ALREADY_EXISTS) << (*results)[0].status();
  ASSERT_TRUE((*results)[1].ok()) << (*results)[1].status();
  EXPECT_EQ(Sql("SELECT count(*) FROM transfers WHERE batch_id = 'g-1003'"), 0);
  EXPECT_EQ(Sql("SELECT count(*) FROM coupons WHERE id = 1003"), 0);
  EXPECT_EQ(Sql("SELECT count(*) FROM coupons WHERE issue_request_id = 'req-1'"), 1);
  EXPECT_EQ(Sql("SELECT state FROM coupons WHERE id = 1004"), 1);
}

TEST_F(LedgerStoreTest, BatchReportsItsAccountAsCommitted) {
  FundDefaults();
  LinkedBatch first = Grant("g1", "cust-1", 10);
  first.report_account = Points("cust-1");
  LinkedBatch second = Grant("g2", "cust-1", 5);
  second.report_account = Points("cust-1");
  LinkedBatch unreported = Grant("g3", "cust-2", 7);
  auto results = store_->Apply({first, second, unreported});
  ASSERT_TRUE(results.ok()) << results.status();
  ASSERT_EQ(results->size(), 3u);
  ASSERT_TRUE((*results)[0].ok() && (*results)[1].ok() && (*results)[2].ok());
  ASSERT_TRUE((*results)[0]->account.has_value());
  EXPECT_EQ((*results)[0]->account->balance(), 10);
  EXPECT_EQ((*results)[1]->account->balance(), 15);
  EXPECT_FALSE((*results)[2]->account.has_value());
  const pb::Account stored = Account(Points("cust-1"));
  EXPECT_EQ((*results)[1]->account->SerializeAsString(), stored.SerializeAsString());

  // A replay reports the account as it is now.
  MustApply(Spend("s1", "cust-1", 4));
  BatchResult replay = ApplyOne(first);
  ASSERT_TRUE(replay.ok()) << replay.status();
  ASSERT_TRUE(replay->account.has_value());
  EXPECT_EQ(replay->account->balance(), 11);
  EXPECT_EQ(replay->transfers.size(), 3u);
}

// Every text column crosses to PostgreSQL inside an array literal (and metadata inside JSON):
// quotes, backslashes, braces, commas, control characters and non-ASCII text come back intact.
TEST_F(LedgerStoreTest, TextSurvivesTheRoundTrip) {
  FundDefaults();
  const std::string awkward = "a \"quoted\", {braced} \\ back\nline\ttab 积分 \xF0\x9F\x8E\x81";
  LinkedBatch grant = Grant("g,\"1\"", "cust-1", 10);
  (*grant.transfers[2].mutable_metadata())["note"] = awkward;
  (*grant.transfers[2].mutable_metadata())["k\"ey"] = "{}";
  grant.transfers[2].set_order_id(awkward);
  MustApply(grant);
  auto stored = store_->GetTransfer("g,\"1\":benefit");
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->metadata().at("note"), awkward);
  EXPECT_EQ(stored->metadata().at("k\"ey"), "{}");
  EXPECT_EQ(stored->metadata().at("channel"), "mobile_banking");
  EXPECT_EQ(stored->order_id(), awkward);
  EXPECT_EQ(stored->batch_id(), "g,\"1\"");
}

TEST_F(LedgerStoreTest, LinkedBatchFailingOnItsThirdTransferStoresNothing) {
  FundDefaults(10'000, 10);
  const int64_t transfers_before = Sql("SELECT count(*) FROM transfers");
  const int64_t facts_before = Sql("SELECT count(*) FROM outbox");
  // Budget and stock legs would pass; the third debits a customer who has nothing.
  LinkedBatch bad = Grant("bad", "cust-1", 10);
  bad.transfers[2] =
      Spec("bad:spend", Points("cust-1"), System(pb::POINTS, "redemption"), 5, pb::SPEND);
  const LinkedBatch good = Grant("good", "cust-2", 10);
  auto results = store_->Apply({bad, good});
  ASSERT_TRUE(results.ok()) << results.status();
  ExpectError((*results)[0], absl::StatusCode::kFailedPrecondition, cpb::INSUFFICIENT_BALANCE,
              "transfers[2]");
  EXPECT_TRUE((*results)[1].ok()) << (*results)[1].status();  // batches fail alone

  EXPECT_EQ(Sql("SELECT count(*) FROM transfers"), transfers_before + 3);
  EXPECT_EQ(Sql("SELECT count(*) FROM transfers WHERE batch_id = 'bad'"), 0);
  EXPECT_EQ(Sql("SELECT count(*) FROM outbox"), facts_before + 3);
  EXPECT_EQ(Balance(Budget()), 9'900);  // only the good grant's 100
  EXPECT_EQ(Balance(Stock()), 9);
  EXPECT_EQ(Balance(Points("cust-2")), 10);
  EXPECT_EQ(Balance(Points("cust-1")), 0);
}

TEST_F(LedgerStoreTest, ReasonsSayWhichLimitWasHit) {
  MustApply(FundBudget("fund-budget", 150));
  MustApply(FundStock("fund-stock", 100));
  MustApply(Grant("g1", "cust-1", 10, 100));
  // 50 fen left: the budget leg fails.
  BatchResult budget = ApplyOne(Grant("g2", "cust-1", 10, 100));
  ExpectError(budget, absl::StatusCode::kFailedPrecondition, cpb::BUDGET_EXHAUSTED, "transfers[0]");
  EXPECT_NE(budget.status().message().find("has 50 fen available; the transfer needs 100"),
            absl::string_view::npos)
      << budget.status();

  // Plenty of budget, one unit of stock left for another template.
  MustApply(FundBudget("fund-2", 10'000, "camp-2"));
  MustApply(FundStock("fund-t2", 1, "tpl-2"));
  MustApply(Grant("g3", "cust-1", 10, 100, DaysAfterGrant(30), "camp-2", "tpl-2"));
  BatchResult stock =
      ApplyOne(Grant("g4", "cust-1", 10, 100, DaysAfterGrant(30), "camp-2", "tpl-2"));
  ExpectError(stock, absl::StatusCode::kFailedPrecondition, cpb::STOCK_EXHAUSTED, "transfers[1]");

  // A customer spending more than they have.
  BatchResult spend = ApplyOne(Spend("s1", "cust-1", 21));
  ExpectError(spend, absl::StatusCode::kFailedPrecondition, cpb::INSUFFICIENT_BALANCE,
              "transfers[0]");
  EXPECT_EQ(Balance(Points("cust-1")), 20);
  EXPECT_EQ(Balance(Budget("camp-2")), 9'900);
}

TEST_F(LedgerStoreTest, UnfundedCampaignIsAccountNotFoundAndIsNotCreated) {
  MustApply(FundStock("fund-stock", 10));
  ExpectError(ApplyOne(Grant("g1", "cust-1", 10)), absl::StatusCode::kNotFound,
              cpb::ACCOUNT_NOT_FOUND, "transfers[0]");
  // A FUND whose batch fails leaves no account behind either.
  LinkedBatch fund = FundBudget("fund-then-fail", 1'000);
  fund.transfers.push_back(Spec("fund-then-fail:spend", Points("cust-1"),
                                System(pb::POINTS, "redemption"), 1, pb::SPEND));
  auto results = store_->Apply({fund, Grant("g2", "cust-1", 10)});
  ASSERT_TRUE(results.ok()) << results.status();
  ExpectError((*results)[0], absl::StatusCode::kFailedPrecondition, cpb::INSUFFICIENT_BALANCE,
              "transfers[1]");
  ExpectError((*results)[1], absl::StatusCode::kNotFound, cpb::ACCOUNT_NOT_FOUND, "transfers[0]");
  auto budget = store_->GetAccount(Budget());
  EXPECT_EQ(budget.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ReasonOf(budget.status()), cpb::ACCOUNT_NOT_FOUND);
  EXPECT_EQ(Sql("SELECT count(*) FROM accounts WHERE owner_kind = 2"), 0);

  // Funding and granting in one call: the fund creates the account the grant then uses.
  results = store_->Apply({FundBudget("fund-ok", 1'000), Grant("g3", "cust-1", 10)});
  ASSERT_TRUE(results.ok()) << results.status();
  EXPECT_TRUE((*results)[0].ok()) << (*results)[0].status();
  EXPECT_TRUE((*results)[1].ok()) << (*results)[1].status();
  EXPECT_EQ(Balance(Budget()), 900);
}

TEST_F(LedgerStoreTest, ReplayReturnsTheStoredTransfersAndChangesNothing) {
  FundDefaults();
  const std::vector<pb::Transfer> first = MustApply(Grant("g1", "cust-1", 10));
  const int64_t transfers = Sql("SELECT count(*) FROM transfers");
  const int64_t facts = Sql("SELECT count(*) FROM outbox");
  const int64_t lots = Sql("SELECT count(*) FROM lots");
  clock_.Advance(absl::Minutes(5));

  const std::vector<pb::Transfer> again = MustApply(Grant("g1", "cust-1", 10));
  EXPECT_TRUE(Same(first, again));
  // Twice in one call: the second is a replay of the first, answered in memory.
  auto results = store_->Apply({Grant("g2", "cust-1", 10), Grant("g2", "cust-1", 10)});
  ASSERT_TRUE(results.ok()) << results.status();
  ASSERT_TRUE((*results)[0].ok());
  ASSERT_TRUE((*results)[1].ok());
  EXPECT_TRUE(Same((*results)[0]->transfers, (*results)[1]->transfers));

  EXPECT_EQ(Sql("SELECT count(*) FROM transfers"), transfers + 3);
  EXPECT_EQ(Sql("SELECT count(*) FROM outbox"), facts + 3);
  EXPECT_EQ(Sql("SELECT count(*) FROM lots"), lots + 1);
  EXPECT_EQ(Balance(Points("cust-1")), 20);
  EXPECT_EQ(Balance(Budget()), 1'000'000 - 200);
}

// A group commit assumes its ids are new; a replay that would now be refused (the stock it
// took is gone) must still answer with what was stored, never with the refusal.
TEST_F(LedgerStoreTest, ReplayAfterTheStockRanOutAnswersWithTheStoredGrant) {
  FundDefaults(/*budget_fen=*/1'000'000, /*stock_units=*/1);
  const std::vector<pb::Transfer> stored = MustApply(Grant("g1", "cust-1", 10));
  ASSERT_EQ(stored.size(), 3u);
  ExpectError(ApplyOne(Grant("g2", "cust-2", 10)), absl::StatusCode::kFailedPrecondition,
              cpb::STOCK_EXHAUSTED, "transfers[1]");
  BatchResult replay = ApplyOne(Grant("g1", "cust-1", 10));
  ASSERT_TRUE(replay.ok()) << replay.status();
  EXPECT_TRUE(Same(replay->transfers, stored));
  EXPECT_EQ(Balance(Points("cust-1")), 10);
}

TEST_F(LedgerStoreTest, SameIdWithOtherContentIsIdempotencyKeyReused) {
  FundDefaults();
  MustApply(Grant("g1", "cust-1", 10));
  // Same ids, 11 points instead of 10.
  ExpectError(ApplyOne(Grant("g1", "cust-1", 11)), absl::StatusCode::kAlreadyExists,
              cpb::IDEMPOTENCY_KEY_REUSED, "transfers[2].id");
  // Some ids known, some not.
  LinkedBatch partial = Grant("g1", "cust-1", 10);
  partial.transfers.push_back(
      Spec("g1:extra", System(pb::POINTS, "issuance"), Points("cust-2"), 1, pb::ADJUST));
  partial.transfers.back().mutable_expiry()->set_days_after_grant(1);
  ExpectError(ApplyOne(partial), absl::StatusCode::kAlreadyExists, cpb::IDEMPOTENCY_KEY_REUSED,
              "transfers[0].id");
  // Within one call: the first wins, the second reuses its ids.
  auto results = store_->Apply({Grant("g2", "cust-1", 10), Grant("g2", "cust-9", 10)});
  ASSERT_TRUE(results.ok()) << results.status();
  EXPECT_TRUE((*results)[0].ok());
  ExpectError((*results)[1], absl::StatusCode::kAlreadyExists, cpb::IDEMPOTENCY_KEY_REUSED,
              "transfers[2].id");
  EXPECT_EQ(Balance(Points("cust-1")), 20);
  EXPECT_EQ(Sql("SELECT count(*) FROM transfers WHERE batch_id LIKE 'g%'"), 6);
}

// A grant's budget and stock legs are there only when its request asks for them, so a resend of
// the key without one finds each of its ids stored with the same content. It is a different
// request all the same: refused, and nothing written.
TEST_F(LedgerStoreTest, ResendingAGrantsKeyWithALegDroppedIsIdempotencyKeyReused) {
  FundDefaults();
  const std::vector<pb::Transfer> stored = MustApply(Grant("g1", "cust-1", 10));
  LinkedBatch without_budget = Grant("g1", "cust-1", 10);
  without_budget.transfers.erase(without_budget.transfers.begin());
  ExpectError(ApplyOne(without_budget), absl::StatusCode::kAlreadyExists,
              cpb::IDEMPOTENCY_KEY_REUSED, "request_id");
  LinkedBatch only_benefit = without_budget;
  only_benefit.transfers.erase(only_benefit.transfers.begin());
  ExpectError(ApplyOne(only_benefit), absl::StatusCode::kAlreadyExists, cpb::IDEMPOTENCY_KEY_REUSED,
              "request_id");
  // Unflagged, the same subset is answered as a replay: the flag is what refuses it.
  only_benefit.replay_needs_whole_batch = false;
  EXPECT_TRUE(ApplyOne(only_benefit).ok());

  // The whole grant is still a replay, alone and twice in one call; so is a grant applied and
  // then replayed within one call.
  BatchResult replay = ApplyOne(Grant("g1", "cust-1", 10));
  ASSERT_TRUE(replay.ok()) << replay.status();
  EXPECT_TRUE(Same(replay->transfers, stored));
  auto twice = store_->Apply({Grant("g1", "cust-1", 10), Grant("g1", "cust-1", 10)});
  ASSERT_TRUE(twice.ok()) << twice.status();
  EXPECT_TRUE((*twice)[0].ok()) << (*twice)[0].status();
  EXPECT_TRUE((*twice)[1].ok()) << (*twice)[1].status();
  auto fresh = store_->Apply({Grant("g2", "cust-1", 10), Grant("g2", "cust-1", 10), [] {
                                LinkedBatch b = Grant("g2", "cust-1", 10);
                                b.transfers.erase(b.transfers.begin() + 1);  // no stock leg
                                return b;
                              }()});
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_TRUE((*fresh)[0].ok()) << (*fresh)[0].status();
  ASSERT_TRUE((*fresh)[1].ok()) << (*fresh)[1].status();
  EXPECT_TRUE(Same((*fresh)[1]->transfers, (*fresh)[0]->transfers));
  ExpectError((*fresh)[2], absl::StatusCode::kAlreadyExists, cpb::IDEMPOTENCY_KEY_REUSED,
              "request_id");

  EXPECT_EQ(Balance(Points("cust-1")), 20);
  EXPECT_EQ(Sql("SELECT count(*) FROM transfers WHERE batch_id IN ('g1', 'g2')"), 6);
}

TEST_F(LedgerStoreTest, MalformedBatchFailsAloneAndNeverReachesSql) {
  FundDefaults();
  LinkedBatch nul = Grant("bad-1", "cust-1", 10);
  nul.transfers[2].mutable_credit()->set_owner_id(std::string("cu\0st", 5));
  LinkedBatch negative = Grant("bad-2", "cust-1", -5);
  LinkedBatch empty{"bad-3", {}};
  LinkedBatch pending_points = Award("bad-4", "cust-1", 5, DaysAfterGrant(3));
  pending_points.transfers[0].set_pending(true);
  pending_points.transfers[0].set_timeout_seconds(60);
  LinkedBatch no_expiry = Award("bad-5", "cust-1", 5, pb::PointsExpiry());
  auto results =
      store_->Apply({nul, negative, empty, pending_points, no_expiry, Grant("ok", "cust-1", 10)});
  ASSERT_TRUE(results.ok()) << results.status();
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ((*results)[i].status().code(), absl::StatusCode::kInvalidArgument)
        << i << ": " << (*results)[i].status();
  }
  EXPECT_EQ(FieldOf((*results)[1].status()), "transfers[2].amount");
  EXPECT_EQ(FieldOf((*results)[4].status()), "transfers[0].expiry");
  EXPECT_TRUE((*results)[5].ok()) << (*results)[5].status();
  EXPECT_EQ(Balance(Points("cust-1")), 10);
}

TEST_F(LedgerStoreTest, PendingSpendIsReservedThenPosted) {
  FundDefaults();
  MustApply(Grant("g1", "cust-1", 100));
  const int64_t facts = Sql("SELECT count(*) FROM outbox");
  const std::vector<pb::Transfer> reserved = MustApply(Spend("s1", "cust-1", 30, true, 60));
  ASSERT_EQ(reserved.size(), 1u);
  EXPECT_EQ(reserved[0].state(), pb::PENDING);
  EXPECT_EQ(reserved[0].timeout_at().seconds(), absl::ToUnixSeconds(Start() + absl::Seconds(60)));
  pb::Account customer = Account(Points("cust-1"));
  EXPECT_EQ(customer.balance(), 100);
  EXPECT_EQ(customer.available(), 70);
  EXPECT_EQ(customer.debits_pending(), 30);
  EXPECT_EQ(Lots("cust-1")[0].second, 70);
  EXPECT_EQ(Sql("SELECT count(*) FROM outbox"), facts);  // reservations are not published

  clock_.Advance(absl::Seconds(10));
  auto posted = store_->ResolvePending("s1:post", "s1:spend", true);
  ASSERT_TRUE(posted.ok()) << posted.status();
  EXPECT_EQ(posted->state(), pb::POSTED);
  EXPECT_EQ(posted->pending_id(), "s1:spend");
  EXPECT_EQ(posted->amount(), 30);
  EXPECT_EQ(posted->order_id(), "order-s1");
  customer = Account(Points("cust-1"));
  EXPECT_EQ(customer.balance(), 70);
  EXPECT_EQ(customer.available(), 70);
  EXPECT_EQ(customer.debits_pending(), 0);
  EXPECT_EQ(Balance(System(pb::POINTS, "redemption")), 30);
  EXPECT_EQ(store_->GetTransfer("s1:spend")->state(), pb::POSTED);
  EXPECT_EQ(Sql("SELECT count(*) FROM outbox WHERE event_id = 'ledger:s1:post'"), 1);

  // Idempotent; the other way is a conflict; an unknown reservation is not found.
  auto again = store_->ResolvePending("s1:post", "s1:spend", true);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(MessageDifferencer::Equals(*again, *posted));
  auto voided = store_->ResolvePending("s1:void", "s1:spend", false);
  EXPECT_EQ(voided.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ReasonOf(voided.status()), cpb::CONFLICT);
  EXPECT_EQ(store_->ResolvePending("x:post", "nope", true).status().code(),
            absl::StatusCode::kNotFound);
  // Resolving a transfer that was never pending is a conflict; reusing the posting's id for
  // another resolution is a reused key.
  EXPECT_EQ(ReasonOf(store_->ResolvePending("g1:post", "g1:benefit", true).status()),
            cpb::CONFLICT);
  EXPECT_EQ(ReasonOf(store_->ResolvePending("s1:post", "g1:benefit", true).status()),
            cpb::IDEMPOTENCY_KEY_REUSED);

  // A refund reverses the posting (not the reservation) and puts the points back into the lot
  // the reservation took them from.
  pb::TransferSpec refund =
      Spec("rf:x", System(pb::POINTS, "redemption"), Points("cust-1"), 30, pb::REVERSE);
  refund.set_reverses_transfer_id("s1:spend");
  ExpectError(ApplyOne({"rf", {refund}}), absl::StatusCode::kFailedPrecondition, cpb::CONFLICT,
              "transfers[0].reverses_transfer_id");
  refund.set_reverses_transfer_id("s1:post");
  MustApply({"rf", {refund}});
  EXPECT_EQ(Lots("cust-1"), (std::vector<std::pair<std::string, int64_t>>{{"g1:benefit", 100}}));
  EXPECT_EQ(Balance(Points("cust-1")), 100);
  EXPECT_EQ(Balance(System(pb::POINTS, "redemption")), 0);
}

TEST_F(LedgerStoreTest, VoidingAPendingSpendPutsItsLotsBack) {
  FundDefaults();
  MustApply(Award("a1", "cust-1", 40, DaysAfterGrant(10)));
  MustApply(Award("a2", "cust-1", 60, DaysAfterGrant(20)));
  MustApply(Spend("s1", "cust-1", 50, true, 300));
  // Soonest first: all 40 of a1's lot, then 10 of a2's.
  EXPECT_EQ(Lots("cust-1"), (std::vector<std::pair<std::string, int64_t>>{{"a2:benefit", 50}}));
  EXPECT_EQ(Available(Points("cust-1")), 50);

  auto voided = store_->ResolvePending("s1:void", "s1:spend", false);
  ASSERT_TRUE(voided.ok()) << voided.status();
  EXPECT_EQ(voided->state(), pb::VOIDED);
  EXPECT_EQ(Lots("cust-1"),
            (std::vector<std::pair<std::string, int64_t>>{{"a1:benefit", 40}, {"a2:benefit", 60}}));
  const pb::Account customer = Account(Points("cust-1"));
  EXPECT_EQ(customer.balance(), 100);
  EXPECT_EQ(customer.available(), 100);
  EXPECT_EQ(Balance(System(pb::POINTS, "redemption")), 0);
  EXPECT_EQ(store_->GetTransfer("s1:spend")->state(), pb::VOIDED);
  EXPECT_EQ(Sql("SELECT count(*) FROM outbox WHERE event_id = 'ledger:s1:void'"), 1);
  EXPECT_EQ(ReasonOf(store_->ResolvePending("s1:post", "s1:spend", true).status()), cpb::CONFLICT);
  // Voiding again with another id answers with the voiding that happened.
  auto again = store_->ResolvePending("s1:void-2", "s1:spend", false);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->id(), "s1:void");
}

TEST_F(LedgerStoreTest, TimeoutSweeperVoidsExpiredReservationsOnce) {
  FundDefaults();
  MustApply(Award("a1", "cust-1", 100, DaysAfterGrant(10)));
  MustApply(Spend("s1", "cust-1", 30, true, 60));
  MustApply(Spend("s2", "cust-1", 20, true, 600));
  EXPECT_EQ(*store_->VoidTimedOutPending(clock_.Now() + absl::Seconds(59), 100), 0);

  // Past its timeout a reservation can no longer be posted, only voided.
  clock_.Advance(absl::Seconds(61));
  EXPECT_EQ(ReasonOf(store_->ResolvePending("s1:post", "s1:spend", true).status()), cpb::CONFLICT);
  EXPECT_EQ(*store_->VoidTimedOutPending(clock_.Now(), 100), 1);
  EXPECT_EQ(*store_->VoidTimedOutPending(clock_.Now(), 100), 0);
  EXPECT_EQ(store_->GetTransfer("timeout:s1:spend")->state(), pb::VOIDED);
  EXPECT_EQ(store_->GetTransfer("s2:spend")->state(), pb::PENDING);
  EXPECT_EQ(Available(Points("cust-1")), 80);
  EXPECT_EQ(Lots("cust-1")[0].second, 80);

  // Two sweepers at once over 60 reservations: each is voided exactly once.
  for (int i = 0; i < 60; ++i) MustApply(Spend(absl::StrCat("p", i), "cust-1", 1, true, 30));
  clock_.Advance(absl::Seconds(31));
  std::atomic<int> total{0};
  std::vector<std::thread> sweepers;
  for (int s = 0; s < 2; ++s) {
    sweepers.emplace_back([&] {
      for (int round = 0; round < 200; ++round) {  // bounded: a bug must not hang the test
        auto n = store_->VoidTimedOutPending(clock_.Now(), 7);
        ASSERT_TRUE(n.ok()) << n.status();
        if (*n == 0 &&
            Sql("SELECT count(*) FROM transfers WHERE state = 1 AND id LIKE 'p%'") == 0) {
          return;
        }
        total += *n;
      }
    });
  }
  for (auto& t : sweepers) t.join();
  EXPECT_EQ(total, 60);
  EXPECT_EQ(Sql("SELECT count(*) FROM transfers WHERE id LIKE 'timeout:p%'"), 60);
  EXPECT_EQ(Available(Points("cust-1")), 80);
  EXPECT_EQ(Account(Points("cust-1")).debits_pending(), 20);
}

TEST_F(LedgerStoreTest, LotsAreSpentSoonestFirstAndExpireOnce) {
  FundDefaults();
  pb::PointsExpiry fixed;
  fixed.mutable_fixed_at()->set_seconds(absl::ToUnixSeconds(ChinaTime(2025, 3, 20, 0, 0, 0)));
  pb::PointsExpiry end_of_year;
  end_of_year.set_end_of_year_plus_years(0);
  MustApply(Award("late", "cust-1", 100, end_of_year));       // 2025-12-31 23:59:59
  MustApply(Award("soon", "cust-1", 30, fixed));              // 2025-03-20 00:00:00
  MustApply(Award("mid", "cust-1", 50, DaysAfterGrant(30)));  // 2025-04-09 23:59:59
  MustApply(Award("other", "cust-2", 5, DaysAfterGrant(1)));
  EXPECT_EQ(Lots("cust-1"), (std::vector<std::pair<std::string, int64_t>>{
                                {"soon:benefit", 30}, {"mid:benefit", 50}, {"late:benefit", 100}}));

  // 45 spans the two soonest lots.
  MustApply(Spend("s1", "cust-1", 45));
  EXPECT_EQ(Lots("cust-1"), (std::vector<std::pair<std::string, int64_t>>{{"mid:benefit", 35},
                                                                          {"late:benefit", 100}}));
  EXPECT_EQ(Sql("SELECT count(*) FROM lot_movements WHERE transfer_id = 's1:spend'"), 2);

  // Expiring as of 1 May: the "mid" lot (35 left) and cust-2's lot; the spent "soon" lot has
  // nothing left to expire.
  const absl::Time may = ChinaTime(2025, 5, 1, 0, 0, 0);
  auto first = store_->ExpireLots(may, 100);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->lots_expired(), 2);
  EXPECT_EQ(first->points_expired(), 40);
  auto second = store_->ExpireLots(may, 100);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->lots_expired(), 0);
  EXPECT_EQ(Balance(Points("cust-1")), 100);
  EXPECT_EQ(Balance(Points("cust-2")), 0);
  EXPECT_EQ(Balance(System(pb::POINTS, "expiry")), 40);
  EXPECT_EQ(Sql("SELECT count(*) FROM transfers WHERE code = 3"), 2);
  EXPECT_EQ(Sql("SELECT count(*) FROM (SELECT l.id FROM lots l JOIN transfers t "
                "ON t.id = 'expire:' || l.id GROUP BY l.id HAVING count(*) = 1) x"),
            2);

  // At the end of the year the last lot goes too, exactly once.
  const absl::Time next_year = ChinaTime(2026, 1, 1, 0, 0, 0);
  EXPECT_EQ(store_->ExpireLots(next_year, 100)->points_expired(), 100);
  EXPECT_EQ(store_->ExpireLots(next_year, 100)->points_expired(), 0);
  EXPECT_EQ(Balance(Points("cust-1")), 0);
  EXPECT_EQ(Sql("SELECT count(*) FROM transfers WHERE code = 3"), 3);
}

// A lot past its expires_at is not spent, even before the expiry job has turned it over: the
// spend takes only lots still valid at its own time (decision 006, amended), and says
// INSUFFICIENT_BALANCE when they do not hold enough. A reversal of the grant itself still
// takes the grant's own expired points back, as it does once the job has run.
TEST_F(LedgerStoreTest, PointsPastTheirExpiryAreNotSpentBeforeTheExpiryJobRuns) {
  FundDefaults();
  MustApply(Award("old", "cust-1", 30, DaysAfterGrant(1)));   // 2025-03-11 23:59:59
  MustApply(Award("new", "cust-1", 50, DaysAfterGrant(30)));  // 2025-04-09 23:59:59
  MustApply(Award("gone", "cust-2", 20, DaysAfterGrant(1)));
  MustApply(Spend("s0", "cust-1", 5));  // before the expiry: from the soonest lot
  EXPECT_EQ(Lots("cust-1"), (std::vector<std::pair<std::string, int64_t>>{{"old:benefit", 25},
                                                                          {"new:benefit", 50}}));
  clock_.Advance(absl::Hours(24 * 2));         // "old" and "gone" have expired; the job has not run
  EXPECT_EQ(Available(Points("cust-1")), 75);  // the totals still hold them until the job runs

  ExpectError(ApplyOne(Spend("s1", "cust-1", 60)), absl::StatusCode::kFailedPrecondition,
              cpb::INSUFFICIENT_BALANCE, "transfers[0]");
  ExpectError(ApplyOne(Spend("s1p", "cust-1", 51, true, 60)), absl::StatusCode::kFailedPrecondition,
              cpb::INSUFFICIENT_BALANCE, "transfers[0]");
  ExpectError(ApplyOne(Spend("s2", "cust-2", 1)), absl::StatusCode::kFailedPrecondition,
              cpb::INSUFFICIENT_BALANCE, "transfers[0]");
  // What the valid lot holds can be spent, and only from it.
  MustApply(Spend("s3", "cust-1", 10));
  EXPECT_EQ(Lots("cust-1"), (std::vector<std::pair<std::string, int64_t>>{{"old:benefit", 25},
                                                                          {"new:benefit", 40}}));
  EXPECT_EQ(Sql("SELECT count(*) FROM lot_movements m JOIN lots l ON l.id = m.lot_id "
                "WHERE m.transfer_id = 's3:spend' AND l.granted_by_transfer_id = 'new:benefit'"),
            1);

  // Clawing back the expired grant takes its own lot.
  auto gone = store_->GetBatch("gone");
  ASSERT_TRUE(gone.ok()) << gone.status();
  MustApply(ReversalOf("r-gone", *gone));
  EXPECT_EQ(Balance(Points("cust-2")), 0);

  // The job expires what was left of "old", exactly what the spends did not take.
  auto expired = store_->ExpireLots(clock_.Now(), 100);
  ASSERT_TRUE(expired.ok()) << expired.status();
  EXPECT_EQ(expired->points_expired(), 25);
  EXPECT_EQ(Available(Points("cust-1")), 40);
  MustApply(Spend("s4", "cust-1", 40));
  EXPECT_EQ(Available(Points("cust-1")), 0);
}

TEST_F(LedgerStoreTest, TwoExpiryRunsAtOnceExpireEachLotOnce) {
  FundDefaults();
  constexpr int kCustomers = 120;
  std::vector<LinkedBatch> awards;
  for (int i = 0; i < kCustomers; ++i) {
    awards.push_back(Award(absl::StrCat("a", i), absl::StrCat("cust-", i), 10, DaysAfterGrant(1)));
  }
  auto applied = store_->Apply(awards);
  ASSERT_TRUE(applied.ok()) << applied.status();
  const absl::Time later = Start() + absl::Hours(24 * 3);
  std::atomic<int64_t> lots{0};
  std::atomic<int64_t> points{0};
  std::vector<std::thread> runs;
  for (int r = 0; r < 2; ++r) {
    runs.emplace_back([&] {
      for (int round = 0; round < 100; ++round) {
        auto done = store_->ExpireLots(later, 16);
        ASSERT_TRUE(done.ok()) << done.status();
        lots += done->lots_expired();
        points += done->points_expired();
        if (Sql("SELECT count(*) FROM lots WHERE remaining > 0") == 0) return;
      }
    });
  }
  for (auto& t : runs) t.join();
  EXPECT_EQ(lots, kCustomers);
  EXPECT_EQ(points, kCustomers * 10);
  EXPECT_EQ(Sql("SELECT count(*) FROM transfers WHERE code = 3"), kCustomers);
  EXPECT_EQ(Balance(System(pb::POINTS, "expiry")), kCustomers * 10);
}

TEST_F(LedgerStoreTest, GrantBatchIsReversedLegByLeg) {
  FundDefaults(10'000, 10);
  MustApply(Grant("g1", "cust-1", 50, 100));
  // A lot expiring sooner than the grant's: the clawback still takes the grant's own lot.
  MustApply(Award("a0", "cust-1", 10, DaysAfterGrant(2)));
  auto batch = store_->GetBatch("g1");
  ASSERT_TRUE(batch.ok()) << batch.status();
  ASSERT_EQ(batch->size(), 3u);
  const std::vector<pb::Transfer> reversed = MustApply(ReversalOf("r1", *batch));
  ASSERT_EQ(reversed.size(), 3u);
  EXPECT_EQ(reversed[0].reverses_transfer_id(), "g1:benefit");  // legs in reverse order
  EXPECT_EQ(reversed[0].code(), pb::REVERSE);

  EXPECT_EQ(Balance(Budget()), 10'000);
  EXPECT_EQ(Balance(Stock()), 10);
  EXPECT_EQ(Balance(Points("cust-1")), 10);
  EXPECT_EQ(Balance(System(pb::BUDGET_FEN, "expense")), 0);
  EXPECT_EQ(Balance(System(pb::POINTS, "issuance")), -10);
  EXPECT_EQ(Lots("cust-1"), (std::vector<std::pair<std::string, int64_t>>{{"a0:benefit", 10}}));
  EXPECT_EQ(Sql("SELECT sum(reversed_amount) FROM transfers WHERE batch_id = 'g1'"), 151);

  // Nothing is left to reverse: a second reversal (new ids) is refused as a whole.
  ExpectError(ApplyOne(ReversalOf("r2", *batch)), absl::StatusCode::kFailedPrecondition,
              cpb::CONFLICT, "transfers[0].amount");
  // Unknown transfer; accounts that are not the swap of the original.
  pb::TransferSpec unknown =
      Spec("r3:x", Points("cust-1"), System(pb::POINTS, "issuance"), 1, pb::REVERSE);
  unknown.set_reverses_transfer_id("no-such-transfer");
  ExpectError(ApplyOne({"r3", {unknown}}), absl::StatusCode::kNotFound, cpb::NOT_FOUND,
              "transfers[0].reverses_transfer_id");
  MustApply(Grant("g2", "cust-1", 50, 100));
  pb::TransferSpec wrong =
      Spec("r4:x", Points("cust-2"), System(pb::POINTS, "issuance"), 1, pb::REVERSE);
  wrong.set_reverses_transfer_id("g2:benefit");
  ExpectError(ApplyOne({"r4", {wrong}}), absl::StatusCode::kFailedPrecondition, cpb::CONFLICT,
              "transfers[0].reverses_transfer_id");
  // Partial reversals add up to the amount and no further.
  pb::TransferSpec part =
      Spec("r5:x", Points("cust-1"), System(pb::POINTS, "issuance"), 20, pb::REVERSE);
  part.set_reverses_transfer_id("g2:benefit");
  MustApply({"r5", {part}});
  part.set_id("r6:x");
  part.set_amount(31);
  ExpectError(ApplyOne({"r6", {part}}), absl::StatusCode::kFailedPrecondition, cpb::CONFLICT,
              "transfers[0].amount");
  part.set_amount(30);
  MustApply({"r6", {part}});
  EXPECT_EQ(Balance(Points("cust-1")), 10);
}

TEST_F(LedgerStoreTest, ReversingSpentPointsFailsAndReversingASpendPutsThemBack) {
  FundDefaults(10'000, 10);
  MustApply(Grant("g1", "cust-1", 50, 100));
  MustApply(Award("a1", "cust-1", 10, DaysAfterGrant(5)));
  MustApply(Spend("s1", "cust-1", 30));  // 10 from a1's lot (sooner), 20 from g1's
  // Clawing back the grant needs its 50 points, the customer has 30.
  auto batch = store_->GetBatch("g1");
  ASSERT_TRUE(batch.ok());
  ExpectError(ApplyOne(ReversalOf("r1", *batch)), absl::StatusCode::kFailedPrecondition,
              cpb::INSUFFICIENT_BALANCE, "transfers[0]");
  EXPECT_EQ(Balance(Budget()), 9'900);

  // Refunding 25 of the spend: back into the latest-expiring lots it took from (g1's first).
  pb::TransferSpec refund =
      Spec("rf1:x", System(pb::POINTS, "redemption"), Points("cust-1"), 25, pb::REVERSE);
  refund.set_reverses_transfer_id("s1:spend");
  MustApply({"rf1", {refund}});
  EXPECT_EQ(Lots("cust-1"),
            (std::vector<std::pair<std::string, int64_t>>{{"a1:benefit", 5}, {"g1:benefit", 50}}));
  // a1's lot expires; the last 5 of the refund land in a new lot with a1's expiry, which the
  // next expiry run turns over under its own id.
  const absl::Time later = Start() + absl::Hours(24 * 7);
  EXPECT_EQ(store_->ExpireLots(later, 100)->points_expired(), 5);
  refund.set_id("rf2:x");
  refund.set_amount(5);
  MustApply({"rf2", {refund}});
  auto lots = store_->ListExpiringLots(kOrg, "cust-1", absl::InfiniteFuture());
  ASSERT_TRUE(lots.ok());
  ASSERT_EQ(lots->lots_size(), 2);
  EXPECT_EQ(lots->lots(0).granted_by_transfer_id(), "rf2:x");
  EXPECT_EQ(lots->lots(0).remaining(), 5);
  EXPECT_EQ(store_->ExpireLots(later, 100)->points_expired(), 5);
  EXPECT_EQ(Balance(Points("cust-1")), 50);
  // The whole spend is refunded now.
  refund.set_id("rf3:x");
  refund.set_amount(1);
  ExpectError(ApplyOne({"rf3", {refund}}), absl::StatusCode::kFailedPrecondition, cpb::CONFLICT,
              "transfers[0].amount");
}

// A grant whose points expired is reversed after the customer earned other points (decision
// 006): the expired points come back from EXPIRY and are clawed back from there, so the customer
// keeps the later grant's points instead of losing the expired ones twice. Through the service,
// which adds the reversal of the lot's expiry to the grant's reversal batch.
class ReverseAfterExpiryTest : public LedgerStoreTest {
 protected:
  void SetUp() override {
    LedgerStoreTest::SetUp();
    if (store_ == nullptr) return;
    batcher_ = std::make_unique<GrantBatcher>(
        *store_, BatcherOptions{.writers = 1, .linger = absl::ZeroDuration()});
    service_ = std::make_unique<LedgerService>(*batcher_, *store_, clock_);
  }
  void TearDown() override {
    service_.reset();
    batcher_.reset();
    LedgerStoreTest::TearDown();
  }

  absl::StatusOr<pb::ReverseResponse> Reverse(const std::string& request,
                                              const std::string& batch) {
    pb::ReverseRequest r;
    r.set_request_id(request);
    r.set_batch_id(batch);
    r.set_reason("event revoked");
    return service_->Reverse(r);
  }

  // Grants g1 (100 points expiring 30 days later), lets `spent` of them be spent, and expires
  // the rest 31 days later. Returns g1's lot id.
  int64_t GrantSpendAndExpire(int64_t spent) {
    FundDefaults(10'000, 10);
    MustApply(Grant("g1", "cust-1", 100, 100, DaysAfterGrant(30)));
    if (spent > 0) MustApply(Spend("s1", "cust-1", spent));
    clock_.Advance(absl::Hours(24 * 31));
    auto expired = store_->ExpireLots(clock_.Now(), 100);
    EXPECT_TRUE(expired.ok()) << expired.status();
    if (expired.ok()) {
      EXPECT_EQ(expired->points_expired(), 100 - spent);
    }
    EXPECT_EQ(Balance(System(pb::POINTS, "expiry")), 100 - spent);
    EXPECT_EQ(Balance(Points("cust-1")), 0);
    return Sql("SELECT id FROM lots WHERE granted_by_transfer_id = 'g1:benefit'");
  }

  // Expects the refusal of a request_id that names other transfers.
  static void ExpectRequestIdReused(const absl::Status& status) {
    ASSERT_FALSE(status.ok()) << "expected IDEMPOTENCY_KEY_REUSED";
    EXPECT_EQ(status.code(), absl::StatusCode::kAlreadyExists) << status;
    EXPECT_EQ(ReasonOf(status), cpb::IDEMPOTENCY_KEY_REUSED) << status;
    EXPECT_EQ(FieldOf(status), "request_id") << status;
  }

  static std::vector<pb::Transfer> TransfersOf(const pb::ReverseResponse& r) {
    return {r.transfers().begin(), r.transfers().end()};
  }

  std::unique_ptr<GrantBatcher> batcher_;
  std::unique_ptr<LedgerService> service_;
};

TEST_F(ReverseAfterExpiryTest, ExpiredPointsComeBackFromExpiryNotFromTheCustomersOtherPoints) {
  const int64_t lot = GrantSpendAndExpire(0);
  const std::string expire_id = absl::StrCat("expire:", lot);
  MustApply(Award("g2", "cust-1", 100, DaysAfterGrant(30)));

  auto reversed = Reverse("r1", "g1");
  ASSERT_TRUE(reversed.ok()) << reversed.status();
  ASSERT_EQ(reversed->transfers_size(), 4);
  EXPECT_EQ(reversed->transfers(0).id(), "r1:" + expire_id);
  EXPECT_EQ(reversed->transfers(0).reverses_transfer_id(), expire_id);
  EXPECT_EQ(reversed->transfers(0).amount(), 100);
  EXPECT_EQ(reversed->transfers(1).id(), "r1:g1:benefit");

  EXPECT_EQ(Available(Points("cust-1")), 100);
  EXPECT_EQ(Balance(Points("cust-1")), 100);
  EXPECT_EQ(Lots("cust-1"), (std::vector<std::pair<std::string, int64_t>>{{"g2:benefit", 100}}));
  EXPECT_EQ(Balance(System(pb::POINTS, "expiry")), 0);
  EXPECT_EQ(Sql("SELECT reversed_amount FROM transfers WHERE id = '" + expire_id + "'"), 100);
  EXPECT_EQ(Balance(System(pb::POINTS, "issuance")), -100);  // 200 issued, 100 back
  EXPECT_EQ(Balance(Budget()), 10'000);
  EXPECT_EQ(Balance(Stock()), 10);
  ExpectInvariants();

  // The same request again is a replay: the same answer, nothing applied twice.
  auto again = Reverse("r1", "g1");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(Same(TransfersOf(*again), TransfersOf(*reversed))) << again->DebugString();
  EXPECT_EQ(Sql("SELECT count(*) FROM transfers WHERE batch_id = 'r1'"), 4);
  EXPECT_EQ(Available(Points("cust-1")), 100);
  EXPECT_EQ(Balance(System(pb::POINTS, "expiry")), 0);
  EXPECT_EQ(Balance(System(pb::POINTS, "issuance")), -100);
  // A new reversal of the same grant finds nothing left to reverse.
  EXPECT_EQ(Reverse("r2", "g1").status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Available(Points("cust-1")), 100);
}

TEST_F(ReverseAfterExpiryTest, SpentHalfIsClawedBackFromOtherPointsExpiredHalfFromExpiry) {
  const int64_t lot = GrantSpendAndExpire(50);
  const std::string expire_id = absl::StrCat("expire:", lot);
  // Without other points the spent half cannot be clawed back: nothing is applied, not even the
  // expiry's reversal.
  auto refused = Reverse("r1", "g1");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(ReasonOf(refused.status()), cpb::INSUFFICIENT_BALANCE) << refused.status();
  EXPECT_EQ(Balance(System(pb::POINTS, "expiry")), 50);
  EXPECT_EQ(Sql("SELECT count(*) FROM transfers WHERE batch_id = 'r1'"), 0);

  MustApply(Award("g2", "cust-1", 100, DaysAfterGrant(30)));
  auto reversed = Reverse("r1", "g1");
  ASSERT_TRUE(reversed.ok()) << reversed.status();
  ASSERT_EQ(reversed->transfers_size(), 4);
  EXPECT_EQ(reversed->transfers(0).id(), "r1:" + expire_id);
  EXPECT_EQ(reversed->transfers(0).amount(), 50);
  EXPECT_EQ(reversed->transfers(1).amount(), 100);
  EXPECT_EQ(Available(Points("cust-1")), 50);
  EXPECT_EQ(Lots("cust-1"), (std::vector<std::pair<std::string, int64_t>>{{"g2:benefit", 50}}));
  EXPECT_EQ(Balance(System(pb::POINTS, "expiry")), 0);
  EXPECT_EQ(Balance(System(pb::POINTS, "redemption")), 50);
  EXPECT_EQ(Balance(System(pb::POINTS, "issuance")), -100);
  ExpectInvariants();

  auto again = Reverse("r1", "g1");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(Same(TransfersOf(*again), TransfersOf(*reversed))) << again->DebugString();
  EXPECT_EQ(Available(Points("cust-1")), 50);
  EXPECT_EQ(Balance(System(pb::POINTS, "expiry")), 0);
}

// Points of the grant that were spent, expired, refunded into a new lot after their own had
// expired and expired again there come back from that second expiry too.
TEST_F(ReverseAfterExpiryTest, PointsThatExpiredTwiceAfterARefundComeBackToo) {
  GrantSpendAndExpire(30);  // 70 expire with g1's lot
  pb::TransferSpec refund =
      Spec("rf1:x", System(pb::POINTS, "redemption"), Points("cust-1"), 30, pb::REVERSE);
  refund.set_reverses_transfer_id("s1:spend");
  MustApply({"rf1", {refund}});  // into a new lot with g1's (past) expiry
  EXPECT_EQ(store_->ExpireLots(clock_.Now(), 100)->points_expired(), 30);
  MustApply(Award("g2", "cust-1", 100, DaysAfterGrant(30)));

  auto reversed = Reverse("r1", "g1");
  ASSERT_TRUE(reversed.ok()) << reversed.status();
  ASSERT_EQ(reversed->transfers_size(), 5);
  EXPECT_EQ(reversed->transfers(0).amount(), 70);
  EXPECT_EQ(reversed->transfers(1).amount(), 30);
  EXPECT_EQ(Available(Points("cust-1")), 100);
  EXPECT_EQ(Lots("cust-1"), (std::vector<std::pair<std::string, int64_t>>{{"g2:benefit", 100}}));
  EXPECT_EQ(Balance(System(pb::POINTS, "expiry")), 0);
}

// A reversal's ids name its target, so the same request_id for another target makes only new
// ids; the request_id itself is what is reused (decision 006). The first request stays a replay.
TEST_F(ReverseAfterExpiryTest, RequestIdOfAnotherReversalIsKeyReusedAndChangesNothing) {
  const int64_t lot = GrantSpendAndExpire(0);
  MustApply(Award("g2", "cust-1", 100, DaysAfterGrant(30)));
  MustApply(Grant("g3", "cust-2", 50));
  auto reversed = Reverse("r1", "g1");
  ASSERT_TRUE(reversed.ok()) << reversed.status();
  ASSERT_EQ(reversed->transfers_size(), 4);
  EXPECT_EQ(reversed->transfers(0).id(), absl::StrCat("r1:expire:", lot));
  const int64_t transfers = Sql("SELECT count(*) FROM transfers");
  const int64_t facts = Sql("SELECT count(*) FROM outbox");
  const int64_t budget = Balance(Budget());

  // r1 again, for g3: refused as a reused key; g3 and its customer are untouched.
  auto reused = Reverse("r1", "g3");
  ExpectRequestIdReused(reused.status());
  EXPECT_TRUE(absl::StrContains(reused.status().message(), "\"r1\"")) << reused.status();
  // One transfer of what r1 reversed is not the request r1 was either (its ids are a subset).
  pb::ReverseRequest one;
  one.set_request_id("r1");
  one.set_transfer_id("g1:benefit");
  one.set_reason("event revoked");
  ExpectRequestIdReused(service_->Reverse(one).status());
  // Nor may a reversal take a grant's key.
  ExpectRequestIdReused(Reverse("g2", "g3").status());
  EXPECT_EQ(Balance(Points("cust-2")), 50);
  EXPECT_EQ(Balance(Budget()), budget);
  EXPECT_EQ(Sql("SELECT count(*) FROM transfers"), transfers);
  EXPECT_EQ(Sql("SELECT count(*) FROM outbox"), facts);
  EXPECT_EQ(Sql("SELECT coalesce(sum(reversed_amount), 0) FROM transfers WHERE batch_id = 'g3'"),
            0);

  // The first request again is a replay, expiry leg included.
  auto again = Reverse("r1", "g1");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(Same(TransfersOf(*again), TransfersOf(*reversed))) << again->DebugString();
  EXPECT_EQ(Sql("SELECT count(*) FROM transfers"), transfers);
  // A new request_id reverses g3 as usual.
  ASSERT_TRUE(Reverse("r3", "g3").ok());
  EXPECT_EQ(Balance(Points("cust-2")), 0);
}

// Eight callers reverse eight different grants under one request_id at once, through a batcher
// with a writer each (so some meet in one group commit, others in concurrent transactions):
// exactly one reversal is applied, the others are refused as a reused key.
TEST_F(ReverseAfterExpiryTest, ConcurrentReversalsUnderOneRequestIdApplyExactlyOne) {
  constexpr int kThreads = 8;
  FundDefaults(10'000, 10);
  for (int i = 0; i < kThreads; ++i) {
    MustApply(Grant(absl::StrCat("g-", i), absl::StrCat("cust-", i), 10, 100));
  }
  GrantBatcher batcher(*store_,
                       BatcherOptions{.writers = kThreads, .linger = absl::ZeroDuration()});
  LedgerService service(batcher, *store_, clock_);
  std::atomic<bool> go{false};
  std::vector<absl::StatusOr<pb::ReverseResponse>> results(kThreads, absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      pb::ReverseRequest r;
      r.set_request_id("race");
      r.set_batch_id(absl::StrCat("g-", i));
      while (!go.load()) std::this_thread::yield();
      results[i] = service.Reverse(r);
    });
  }
  go = true;
  for (auto& t : threads) t.join();

  int winner = -1;
  for (int i = 0; i < kThreads; ++i) {
    if (results[i].ok()) {
      EXPECT_EQ(winner, -1) << "g-" << winner << " and g-" << i << " both reversed";
      winner = i;
      continue;
    }
    ExpectRequestIdReused(results[i].status());
  }
  ASSERT_NE(winner, -1);
  for (int i = 0; i < kThreads; ++i) {
    EXPECT_EQ(Balance(Points(absl::StrCat("cust-", i))), i == winner ? 0 : 10) << i;
  }
  EXPECT_EQ(Sql("SELECT count(*) FROM transfers WHERE batch_id = 'race'"), 3);
  EXPECT_EQ(Sql("SELECT sum(reversed_amount) FROM transfers WHERE batch_id LIKE 'g-%'"), 111);
  EXPECT_EQ(Balance(Budget()), 10'000 - (kThreads - 1) * 100);
  // The winner's request again is a replay.
  pb::ReverseRequest replay;
  replay.set_request_id("race");
  replay.set_batch_id(absl::StrCat("g-", winner));
  auto again = service.Reverse(replay);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(Same(TransfersOf(*again), TransfersOf(*results[winner])));
}

// The PostgreSQL store as the service sees it, with a hook that runs once right after the
// first GetLotExpiries returns: the window between the service's read of a grant's expiries and
// the apply of its reversal, where the points-expiry job may expire more of the grant's lots.
class ExpiryBetweenReadAndApply final : public ForwardingLedgerStore {
 public:
  ExpiryBetweenReadAndApply(LedgerStore& store, std::function<void()> hook)
      : ForwardingLedgerStore(store), hook_(std::move(hook)) {}

  int lot_expiry_reads() const { return lot_expiry_reads_; }

  absl::StatusOr<std::vector<LotExpiry>> GetLotExpiries(const std::string& transfer_id) override {
    absl::StatusOr<std::vector<LotExpiry>> read = real_.GetLotExpiries(transfer_id);
    if (++lot_expiry_reads_ == 1 && hook_) hook_();
    return read;
  }

 private:
  std::function<void()> hook_;
  int lot_expiry_reads_ = 0;
};

// The race between a grant's reversal and the expiry job (decision 006): the service reads the
// grant's lot expiries, then the expiry job expires another lot of the grant (its points put
// back into a lot of the grant's past expiry by a refund), then the reversal is applied. The
// batch built from the first read would give back too little from EXPIRY, and the clawback would
// take the newly expired points from the customer's other points: lost twice. The store refuses
// that batch under the account locks and the service rebuilds it from a fresh read.
TEST_F(ReverseAfterExpiryTest, PointsExpiringBetweenTheReadAndTheApplyAreNotTakenTwice) {
  const int64_t lot = GrantSpendAndExpire(30);  // 70 expire with g1's lot
  pb::TransferSpec refund =
      Spec("rf1:x", System(pb::POINTS, "redemption"), Points("cust-1"), 30, pb::REVERSE);
  refund.set_reverses_transfer_id("s1:spend");
  MustApply({"rf1", {refund}});  // into a new lot with g1's (past) expiry, not expired yet
  const int64_t refunded_lot = Sql("SELECT id FROM lots WHERE granted_by_transfer_id = 'rf1:x'");
  MustApply(Award("g2", "cust-1", 100, DaysAfterGrant(30)));
  ASSERT_EQ(Available(Points("cust-1")), 130);

  ExpiryBetweenReadAndApply racing(*store_, [&] {
    auto expired = store_->ExpireLots(clock_.Now(), 100);
    ASSERT_TRUE(expired.ok()) << expired.status();
    EXPECT_EQ(expired->points_expired(), 30);
  });
  LedgerService service(*batcher_, racing, clock_);
  pb::ReverseRequest request;
  request.set_request_id("r1");
  request.set_batch_id("g1");
  auto reversed = service.Reverse(request);
  ASSERT_TRUE(reversed.ok()) << reversed.status();
  // The customer's other points are untouched; EXPIRY gave back all it took of g1.
  EXPECT_EQ(Available(Points("cust-1")), 100);
  EXPECT_EQ(Balance(Points("cust-1")), 100);
  EXPECT_EQ(Lots("cust-1"), (std::vector<std::pair<std::string, int64_t>>{{"g2:benefit", 100}}));
  EXPECT_EQ(Balance(System(pb::POINTS, "expiry")), 0);
  ExpectInvariants();

  EXPECT_EQ(racing.lot_expiry_reads(), 2);  // the batch was rebuilt once, from a fresh read
  EXPECT_EQ(Sql("SELECT count(*) FROM transfers WHERE batch_id = 'r1'"), 5);
  ASSERT_EQ(reversed->transfers_size(), 5) << reversed->DebugString();
  EXPECT_EQ(reversed->transfers(0).id(), absl::StrCat("r1:expire:", lot));
  EXPECT_EQ(reversed->transfers(0).amount(), 70);
  EXPECT_EQ(reversed->transfers(1).id(), absl::StrCat("r1:expire:", refunded_lot));
  EXPECT_EQ(reversed->transfers(1).amount(), 30);
  EXPECT_EQ(reversed->transfers(2).id(), "r1:g1:benefit");
  EXPECT_EQ(reversed->transfers(2).amount(), 100);

  // The same request again is a replay of what was stored.
  auto again = service.Reverse(request);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(Same(TransfersOf(*again), TransfersOf(*reversed))) << again->DebugString();
  EXPECT_EQ(Available(Points("cust-1")), 100);
}

// The store's side of that race: a reversal batch built from expiries read before another lot
// of the grant expired is refused ABORTED and writes nothing, while a grant in the same group
// commit is stored as usual; built from the expiries as they are now, it is applied.
TEST_F(ReverseAfterExpiryTest, AReversalBuiltBeforeMorePointsExpiredIsAbortedAndWritesNothing) {
  const int64_t lot = GrantSpendAndExpire(30);  // 70 expire with g1's lot
  pb::TransferSpec refund =
      Spec("rf1:x", System(pb::POINTS, "redemption"), Points("cust-1"), 30, pb::REVERSE);
  refund.set_reverses_transfer_id("s1:spend");
  MustApply({"rf1", {refund}});
  const int64_t refunded_lot = Sql("SELECT id FROM lots WHERE granted_by_transfer_id = 'rf1:x'");
  MustApply(Award("g2", "cust-1", 100, DaysAfterGrant(30)));
  auto give_back = [](int64_t lot_id, int64_t amount) {
    pb::TransferSpec s = Spec(absl::StrCat("r1:expire:", lot_id), System(pb::POINTS, "expiry"),
                              Points("cust-1"), amount, pb::REVERSE);
    s.set_reverses_transfer_id(absl::StrCat("expire:", lot_id));
    return s;
  };
  pb::TransferSpec clawback =
      Spec("r1:g1:benefit", Points("cust-1"), System(pb::POINTS, "issuance"), 100, pb::REVERSE);
  clawback.set_reverses_transfer_id("g1:benefit");
  // As the service builds it while only g1's own lot has expired; then the refunded lot expires.
  LinkedBatch stale{"r1", {give_back(lot, 70), clawback}};
  stale.exclusive_batch_id = stale.checks_expiry_reversals = true;
  ASSERT_EQ(store_->ExpireLots(clock_.Now(), 100)->points_expired(), 30);

  auto results = store_->Apply({stale, Grant("g3", "cust-2", 10)});
  ASSERT_TRUE(results.ok()) << results.status();
  ExpectError((*results)[0], absl::StatusCode::kAborted, cpb::CONFLICT, "transfers[1]");
  EXPECT_TRUE((*results)[1].ok()) << (*results)[1].status();
  EXPECT_EQ(Sql("SELECT count(*) FROM transfers WHERE batch_id = 'r1'"), 0);
  EXPECT_EQ(Available(Points("cust-1")), 100);
  EXPECT_EQ(Balance(Points("cust-2")), 10);
  EXPECT_EQ(Balance(System(pb::POINTS, "expiry")), 100);
  ExpectInvariants();

  LinkedBatch fresh{"r1", {give_back(lot, 70), give_back(refunded_lot, 30), clawback}};
  fresh.exclusive_batch_id = fresh.checks_expiry_reversals = true;
  const std::vector<pb::Transfer> applied = MustApply(fresh);
  EXPECT_EQ(applied.size(), 3u);
  EXPECT_EQ(Available(Points("cust-1")), 100);
  EXPECT_EQ(Balance(System(pb::POINTS, "expiry")), 0);
  // A replay is answered from what was stored, however the expiries stand.
  BatchResult replay = ApplyOne(fresh);
  ASSERT_TRUE(replay.ok()) << replay.status();
  EXPECT_TRUE(Same(replay->transfers, applied));
}

// Two replicas apply reversals of different grants under one request_id: the second waits for
// the first's transaction and, once it commits, sees its transfers and refuses. Deterministic:
// a blocker holds the outbox, so replica A holds the batch id until B is waiting too.
TEST_F(LedgerStoreTest, ReplicasRacingOnOneExclusiveBatchIdApplyOnlyOne) {
  FundDefaults(10'000, 10);
  const std::vector<pb::Transfer> g1 = MustApply(Grant("g1", "cust-1", 10));
  const std::vector<pb::Transfer> g2 = MustApply(Grant("g2", "cust-2", 10));
  LinkedBatch a = ReversalOf("race", g1);
  LinkedBatch b = ReversalOf("race", g2);
  a.exclusive_batch_id = b.exclusive_batch_id = true;
  // In the same group commit as B: a grant that has nothing to do with it is stored anyway.
  const LinkedBatch other = Grant("g3", "cust-3", 10);
  auto pool_b = Connect(4);
  ASSERT_NE(pool_b, nullptr);
  PgLedgerStore replica_b(*pool_b, clock_);

  auto [result_a, result_b] = RaceWhileTheOutboxIsLocked({a}, replica_b, {b, other});

  ASSERT_TRUE(result_a.ok()) << result_a.status();
  ASSERT_TRUE(result_b.ok()) << result_b.status();
  EXPECT_TRUE((*result_a)[0].ok()) << (*result_a)[0].status();
  ExpectError((*result_b)[0], absl::StatusCode::kAlreadyExists, cpb::IDEMPOTENCY_KEY_REUSED,
              "request_id");
  EXPECT_TRUE((*result_b)[1].ok()) << (*result_b)[1].status();
  EXPECT_EQ(Balance(Points("cust-1")), 0);
  EXPECT_EQ(Balance(Points("cust-2")), 10);
  EXPECT_EQ(Balance(Points("cust-3")), 10);
  EXPECT_EQ(Sql("SELECT count(*) FROM transfers WHERE batch_id = 'race'"), 3);
  // The first reversal again, from either replica, is a replay; in one call with a rival, the
  // rival is refused.
  BatchResult replay = ApplyOne(a);
  ASSERT_TRUE(replay.ok()) << replay.status();
  EXPECT_TRUE(Same(replay->transfers, (*result_a)[0]->transfers));
  auto both = replica_b.Apply({a, b});
  ASSERT_TRUE(both.ok()) << both.status();
  EXPECT_TRUE((*both)[0].ok()) << (*both)[0].status();
  ExpectError((*both)[1], absl::StatusCode::kAlreadyExists, cpb::IDEMPOTENCY_KEY_REUSED,
              "request_id");
}

// In one group commit, two new batches claiming one exclusive batch id: the first is applied,
// the second refused; a grant (not exclusive) in the same call is unaffected.
TEST_F(LedgerStoreTest, OneCallWithTwoBatchesClaimingOneExclusiveIdAppliesTheFirst) {
  FundDefaults(10'000, 10);
  const std::vector<pb::Transfer> g1 = MustApply(Grant("g1", "cust-1", 10));
  const std::vector<pb::Transfer> g2 = MustApply(Grant("g2", "cust-2", 10));
  LinkedBatch a = ReversalOf("r", g1);
  LinkedBatch b = ReversalOf("r", g2);
  a.exclusive_batch_id = b.exclusive_batch_id = true;
  auto results = store_->Apply({a, Grant("g3", "cust-3", 10), b, a});
  ASSERT_TRUE(results.ok()) << results.status();
  EXPECT_TRUE((*results)[0].ok()) << (*results)[0].status();
  EXPECT_TRUE((*results)[1].ok()) << (*results)[1].status();
  ExpectError((*results)[2], absl::StatusCode::kAlreadyExists, cpb::IDEMPOTENCY_KEY_REUSED,
              "request_id");
  ASSERT_TRUE((*results)[3].ok()) << (*results)[3].status();  // a replay of the first
  EXPECT_TRUE(Same((*results)[3]->transfers, (*results)[0]->transfers));
  EXPECT_EQ(Balance(Points("cust-1")), 0);
  EXPECT_EQ(Balance(Points("cust-2")), 10);
  EXPECT_EQ(Balance(Points("cust-3")), 10);
  EXPECT_EQ(Sql("SELECT count(*) FROM transfers WHERE batch_id = 'r'"), 3);
}

TEST_F(LedgerStoreTest, HistoryAndStatementPageThroughEverything) {
  MustApply(FundBudget("fund", 1'000));
  MustApply(FundStock("fund-stock", 100));
  clock_.Advance(absl::Minutes(1));
  const absl::Time after_fund = clock_.Now();
  for (int i = 0; i < 5; ++i) {
    clock_.Advance(absl::Minutes(1));
    MustApply(Grant(absl::StrCat("g", i), "cust-1", 10, 100));
  }
  MustApply(Spend("s1", "cust-1", 5, true, 60));
  ASSERT_TRUE(store_->ResolvePending("s1:post", "s1:spend", true).ok());

  // History: 5 benefits, the reservation and its posting; newest first, 3 a page.
  std::vector<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    auto page = store_->ListHistory(kOrg, "cust-1", token, 3);
    ASSERT_TRUE(page.ok()) << page.status();
    for (const auto& t : page->transfers()) seen.push_back(t.id());
    token = page->page().next_page_token();
    ++pages;
  } while (!token.empty() && pages < 10);
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(seen, (std::vector<std::string>{"s1:post", "s1:spend", "g4:benefit", "g3:benefit",
                                            "g2:benefit", "g1:benefit", "g0:benefit"}));
  EXPECT_FALSE(store_->ListHistory(kOrg, "cust-1", "garbage", 3).ok());
  EXPECT_TRUE(store_->ListHistory(kOrg, "nobody", "", 3)->transfers().empty());

  // The budget's statement: +1000, then -100 five times; the pages chain their balances.
  std::vector<int64_t> deltas;
  std::vector<int64_t> balances;
  int64_t expected_opening = 0;
  token.clear();
  pages = 0;
  do {
    auto page =
        store_->GetStatement(Budget(), absl::InfinitePast(), absl::InfiniteFuture(), token, 2);
    ASSERT_TRUE(page.ok()) << page.status();
    EXPECT_EQ(page->opening_balance(), expected_opening);
    for (const auto& line : page->lines()) {
      deltas.push_back(line.delta());
      balances.push_back(line.balance_after());
    }
    expected_opening = page->closing_balance();
    token = page->page().next_page_token();
    ++pages;
  } while (!token.empty() && pages < 10);
  EXPECT_EQ(deltas, (std::vector<int64_t>{1000, -100, -100, -100, -100, -100}));
  EXPECT_EQ(balances, (std::vector<int64_t>{1000, 900, 800, 700, 600, 500}));
  EXPECT_EQ(expected_opening, 500);

  // A range starting after the funding opens with the funded balance.
  auto ranged = store_->GetStatement(Budget(), after_fund, absl::InfiniteFuture(), "", 100);
  ASSERT_TRUE(ranged.ok());
  EXPECT_EQ(ranged->opening_balance(), 1000);
  EXPECT_EQ(ranged->lines_size(), 5);
  EXPECT_EQ(ranged->closing_balance(), 500);
  auto empty = store_->GetStatement(Budget(), after_fund, after_fund, "", 100);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->lines_size(), 0);
  EXPECT_EQ(empty->opening_balance(), 1000);

  auto accounts = store_->GetCustomerAccounts(kOrg, "cust-1");
  ASSERT_TRUE(accounts.ok());
  ASSERT_EQ(accounts->size(), 1u);
  EXPECT_EQ((*accounts)[0].balance(), 45);
  EXPECT_EQ(store_->GetTransfer("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->GetBatch("nope").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(LedgerStoreTest, CheckIntegrityFindsCorruption) {
  FundDefaults();
  MustApply(Grant("g1", "cust-1", 10));
  ASSERT_TRUE(store_->CheckIntegrity()->ok());
  auto failed = [&](const std::string& name) -> std::string {
    auto check = store_->CheckIntegrity();
    EXPECT_TRUE(check.ok());
    EXPECT_FALSE(check->ok());
    for (const auto& c : check->checks()) {
      if (c.name() == name) {
        EXPECT_FALSE(c.ok()) << check->DebugString();
        return c.detail();
      }
    }
    ADD_FAILURE() << "no check " << name;
    return "";
  };
  const int64_t customer = Account(Points("cust-1")).id();

  Exec(absl::StrCat("UPDATE accounts SET credits_posted = credits_posted + 7 WHERE id = ",
                    customer));
  EXPECT_NE(failed("zero_sum").find("POINTS"), std::string::npos);
  EXPECT_NE(failed("totals_match_transfers").find(absl::StrCat("account ", customer)),
            std::string::npos);
  EXPECT_NE(failed("lots_match_available").find("available 17, lots remaining 10"),
            std::string::npos);
  Exec(absl::StrCat("UPDATE accounts SET credits_posted = credits_posted - 7 WHERE id = ",
                    customer));

  Exec("DELETE FROM outbox WHERE event_id = 'ledger:g1:stock'");
  EXPECT_NE(failed("one_fact_per_posted_transfer").find("ledger:g1:stock: 0 outbox rows"),
            std::string::npos);
  Exec(
      "INSERT INTO outbox (topic, msg_key, msg_value, event_id) SELECT topic, msg_key, "
      "msg_value, 'ledger:g1:stock' FROM outbox WHERE event_id = 'ledger:g1:budget'");
  ASSERT_TRUE(store_->CheckIntegrity()->ok());

  // No foreign keys guard the hot tables since V002: the check does.
  Exec("UPDATE lots SET account_id = 999999999 WHERE granted_by_transfer_id = 'g1:benefit'");
  EXPECT_NE(failed("transfers_and_lots_name_accounts").find("names missing account 999999999"),
            std::string::npos);
  Exec(absl::StrCat("UPDATE lots SET account_id = ", customer,
                    " WHERE granted_by_transfer_id = 'g1:benefit'"));
  ASSERT_TRUE(store_->CheckIntegrity()->ok());
}

// Two replicas store the same id with different content at the same moment: the one that
// commits second gets the unique violation, retries the whole call, and answers that batch with
// IDEMPOTENCY_KEY_REUSED while its other batches are stored once.
TEST_F(LedgerStoreTest, ReplicaRacingOnTheSameIdRetriesAndSeesTheReuse) {
  auto pool_b = Connect(4);
  ASSERT_NE(pool_b, nullptr);
  PgLedgerStore replica_b(*pool_b, clock_);
  // Replica A stores "race:benefit" in bank-a; replica B the same id, other content, in bank-b
  // (plus another batch). No account in common, so nothing but the transfer id meets.
  const LinkedBatch a = Award("race", "cust-a", 10, DaysAfterGrant(5));
  auto bank_b_award = [](const std::string& request, const std::string& customer, int64_t points) {
    pb::TransferSpec s = Spec(request + ":benefit", System(pb::POINTS, "issuance", "", "bank-b"),
                              Points(customer, "bank-b"), points, pb::GRANT);
    *s.mutable_expiry() = DaysAfterGrant(5);
    return LinkedBatch{request, {s}};
  };
  const LinkedBatch b = bank_b_award("race", "cust-b", 10);
  const LinkedBatch other = bank_b_award("other", "cust-b2", 3);
  // The accounts exist beforehand, so that neither replica waits on the other's account rows.
  MustApply(Award("warm-a", "cust-a", 1, DaysAfterGrant(5)));
  MustApply(bank_b_award("warm-b", "cust-b", 1));
  MustApply(bank_b_award("warm-b2", "cust-b2", 1));

  // Replica B does not see A's uncommitted transfer, inserts the same id and waits on it.
  auto [result_a, result_b] = RaceWhileTheOutboxIsLocked({a}, replica_b, {b, other});

  ASSERT_TRUE(result_a.ok()) << result_a.status();
  ASSERT_TRUE(result_b.ok()) << result_b.status();
  EXPECT_TRUE((*result_a)[0].ok()) << (*result_a)[0].status();
  ExpectError((*result_b)[0], absl::StatusCode::kAlreadyExists, cpb::IDEMPOTENCY_KEY_REUSED,
              "transfers[0].id");
  EXPECT_TRUE((*result_b)[1].ok()) << (*result_b)[1].status();
  EXPECT_EQ(Balance(Points("cust-a")), 11);
  EXPECT_EQ(Balance(Points("cust-b", "bank-b")), 1);
  EXPECT_EQ(Balance(Points("cust-b2", "bank-b")), 4);
  EXPECT_EQ(Sql("SELECT count(*) FROM transfers WHERE id = 'other:benefit'"), 1);
}

// THE concurrency test: 16 threads, each calling Apply with groups of grants (as the batcher's
// writers do) against one budget of 1,000,000 fen and a stock of 5,000 units; 20,000 distinct
// grants of 100 fen + 1 unit + 10 points to 2,000 customers, some ids sent again while their
// first attempt may still be in flight. Exactly 5,000 grants may succeed, each stored once.
TEST_F(LedgerStoreTest, SixteenThreadsGrantAgainstOneHotBudgetExactly) {
  constexpr int kThreads = 16;
  constexpr int kGrants = 20'000;
  constexpr int kCustomers = 2'000;
  constexpr int kPerCall = 64;
  constexpr int kStock = 5'000;
  FundDefaults(1'000'000, kStock);
  const int64_t funding_transfers = Sql("SELECT count(*) FROM transfers");

  std::vector<LinkedBatch> grants;
  grants.reserve(kGrants);
  for (int i = 0; i < kGrants; ++i) {
    grants.push_back(Grant(absl::StrCat("g-", i), absl::StrCat("c-", i % kCustomers), 10, 100));
  }
  constexpr int kCalls = (kGrants + kPerCall - 1) / kPerCall;

  std::mutex mu;
  std::map<int, std::vector<pb::Transfer>> succeeded;  // grant -> its transfers
  std::map<int, cpb::ErrorReason> refused;
  std::vector<std::string> problems;
  std::atomic<int> next_call{0};
  std::atomic<int> replays_sent{0};
  auto worker = [&] {
    for (int call = next_call++; call < kCalls; call = next_call++) {
      std::vector<int> which;
      for (int i = call * kPerCall; i < std::min(kGrants, (call + 1) * kPerCall); ++i) {
        which.push_back(i);
      }
      // Replays: the previous call's last grant (possibly still being applied by another
      // thread right now) and this call's first grant a second time in the same call.
      if (call > 0) which.push_back(call * kPerCall - 1);
      which.push_back(which.front());
      replays_sent += 2;
      std::vector<LinkedBatch> batches;
      for (int i : which) batches.push_back(grants[i]);
      auto results = store_->Apply(batches);
      std::lock_guard<std::mutex> lock(mu);
      if (!results.ok()) {
        problems.push_back(absl::StrCat("call ", call, ": ", results.status().ToString()));
        continue;
      }
      for (size_t k = 0; k < which.size(); ++k) {
        const int i = which[k];
        const BatchResult& r = (*results)[k];
        if (r.ok()) {
          auto [it, first] = succeeded.emplace(i, r->transfers);
          if (!first && !Same(it->second, r->transfers))
            problems.push_back(absl::StrCat("g-", i, " differs"));
          if (refused.count(i) > 0) problems.push_back(absl::StrCat("g-", i, " both ways"));
        } else {
          const cpb::ErrorReason reason = ReasonOf(r.status());
          refused.emplace(i, reason);
          if (reason != cpb::STOCK_EXHAUSTED || FieldOf(r.status()) != "transfers[1]") {
            problems.push_back(absl::StrCat("g-", i, ": ", r.status().ToString()));
          }
          if (succeeded.count(i) > 0) problems.push_back(absl::StrCat("g-", i, " both ways"));
        }
      }
    }
  };
  const absl::Time start = absl::Now();
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(worker);
  for (auto& t : threads) t.join();
  const absl::Duration elapsed = absl::Now() - start;

  EXPECT_TRUE(problems.empty()) << problems.size() << " problems, first: " << problems.front();
  EXPECT_EQ(succeeded.size(), static_cast<size_t>(kStock));
  EXPECT_EQ(succeeded.size() + refused.size(), static_cast<size_t>(kGrants));

  EXPECT_EQ(Balance(Budget()), 1'000'000 - kStock * 100);  // 500,000 fen left
  EXPECT_EQ(Balance(System(pb::BUDGET_FEN, "expense")), kStock * 100);
  EXPECT_EQ(Balance(Stock()), 0);
  EXPECT_EQ(Balance(System(pb::STOCK, "issuance", kTemplate)), kStock);
  EXPECT_EQ(Balance(System(pb::POINTS, "issuance")), -kStock * 10);
  EXPECT_EQ(Sql("SELECT sum(credits_posted - debits_posted) FROM accounts "
                "WHERE owner_kind = 1 AND asset = 1"),
            kStock * 10);
  EXPECT_EQ(Sql("SELECT count(*) FROM accounts WHERE credits_posted - debits_posted < 0 "
                "AND debits_must_not_exceed_credits"),
            0);
  // Each grant stored once, with one lot and one fact per posted transfer.
  EXPECT_EQ(Sql("SELECT count(*) FROM transfers"), funding_transfers + 3 * kStock);
  EXPECT_EQ(Sql("SELECT count(DISTINCT batch_id) FROM transfers WHERE batch_id LIKE 'g-%'"),
            kStock);
  EXPECT_EQ(Sql("SELECT count(*) FROM lots"), kStock);
  EXPECT_EQ(Sql("SELECT count(*) FROM outbox"), funding_transfers + 3 * kStock);
  EXPECT_EQ(Sql("SELECT count(*) FROM transfers t JOIN outbox o ON o.event_id = 'ledger:' || t.id"),
            funding_transfers + 3 * kStock);
  EXPECT_EQ(Sql("SELECT count(DISTINCT event_id) FROM outbox"), funding_transfers + 3 * kStock);
  for (const auto& [i, transfers] : succeeded) {
    ASSERT_EQ(transfers.size(), 3u);
    EXPECT_EQ(transfers[2].credit().owner_id(), absl::StrCat("c-", i % kCustomers));
  }

  std::printf(
      "ledger group commit: %d grant batches (+%d replays) from %d threads in %.2f s = %.0f "
      "batches/s (%zu granted, %zu refused STOCK_EXHAUSTED; %s)\n",
      kGrants, replays_sent.load(), kThreads, absl::ToDoubleSeconds(elapsed),
      (kGrants + replays_sent.load()) / absl::ToDoubleSeconds(elapsed), succeeded.size(),
      refused.size(), kBuildKind);
}

}  // namespace
}  // namespace mkt::rewards
