// The events store and the batch handler against the real PostgreSQL: what the database refuses
// (a NUL cuts a libpq parameter short, jsonb refuses \u0000, malformed UTF-8...) comes back as a
// data exception with its SQLSTATE and nothing of the batch is written; the handler sets the event
// the database refuses aside for the dead-letter topic and applies the rest of its batch exactly
// once; failures that are not about the data are retried, never dead-lettered.
#include <algorithm>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "libs/kafka/outbox.h"
#include "libs/pg/migrations.h"
#include "libs/pg/pool.h"
#include "libs/tenancy/tenancy.h"
#include "libs/testing/testing.h"
#include "services/events/event_store.h"
#include "services/events/events_service.h"

namespace mkt::events {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

class EventStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pool = pg::Pool::Connect({.dsn = db_.dsn(), .size = 4});
    ASSERT_TRUE(pool.ok()) << pool.status();
    pool_ = *std::move(pool);
    absl::Status migrated = pg::ApplyMigrations(*pool_, {&EventsMigrations()});
    ASSERT_TRUE(migrated.ok()) << migrated;
    store_ = std::make_unique<EventStore>(*pool_);
    service_ = std::make_unique<EventsService>(*store_, nullptr, nullptr);
    ASSERT_TRUE(service_->Start().ok());
    types_.Load(DefaultEventTypes());
  }

  void Exec(const std::string& sql) {
    absl::Status s = pg::WithTransaction(*pool_, [&](pqxx::work& tx) {
      tx.exec(sql);
      return absl::OkStatus();
    });
    ASSERT_TRUE(s.ok()) << s;
  }

  int64_t Count(const std::string& sql) {
    int64_t n = -1;
    absl::Status s = pg::WithTransaction(*pool_, [&](pqxx::work& tx) {
      n = tx.exec1(sql)[0].as<int64_t>();
      return absl::OkStatus();
    });
    EXPECT_TRUE(s.ok()) << s;
    return n;
  }

  // A valid event, then spoiled by the caller: the store is reached without validation.
  ValidatedEvent Valid(const std::string& id) {
    pb::BusinessEvent e = Spend(id);
    auto v = types_.Validate(e, "env-" + id);
    EXPECT_TRUE(v.ok()) << v.status();
    return *v;
  }

  static pb::BusinessEvent Spend(const std::string& id) {
    pb::BusinessEvent e;
    e.set_source("card");
    e.set_source_event_id(id);
    e.set_event_type("credit_card.spend");
    e.set_customer_id("c-1");
    e.set_org_id("bank-a");
    e.mutable_occurred_at()->set_seconds(1'790'000'000);
    e.set_amount_fen(1000);
    (*e.mutable_attributes())["merchant_category"] = "food";
    return e;
  }

  // Bank-a's rule granting 5 points for each credit-card spend that meets `condition`.
  absl::Status UpsertSpendRule(const std::string& id, const std::string& campaign,
                               const std::string& condition) {
    pb::TriggerRule rule;
    rule.set_rule_id(id);
    rule.set_campaign_id(campaign);
    rule.set_org_id("bank-a");
    rule.set_event_type("credit_card.spend");
    rule.set_kind(pb::EVERY_MATCH);
    rule.set_condition(condition);
    rule.mutable_reward()->set_asset(::marketing::rewards::v1::POINTS);
    rule.mutable_reward()->set_quantity(5);
    rule.set_active(true);
    rule.set_revision(1);
    return service_->UpsertRule(tenancy::SystemActor("test"), rule).status();
  }

  // A spend of `amount_fen` in `category` by customer c-1.
  static pb::BusinessEvent Spend(const std::string& id, int64_t amount_fen,
                                 const std::string& category = "food") {
    pb::BusinessEvent e = Spend(id);
    e.set_amount_fen(amount_fen);
    (*e.mutable_attributes())["merchant_category"] = category;
    return e;
  }

  // A refund of `amount_fen` of card spend `original` (the whole amount cancels it).
  static pb::BusinessEvent Refund(const std::string& id, const std::string& original,
                                  int64_t amount_fen) {
    pb::BusinessEvent e = Spend(id);
    e.set_event_type("credit_card.refunded");
    e.set_amount_fen(amount_fen);
    e.mutable_attributes()->clear();
    (*e.mutable_attributes())["original_event_id"] = original;
    return e;
  }

  static pb::BusinessEvent Loan(const std::string& id) {
    pb::BusinessEvent e = Spend(id);
    e.set_source("core");
    e.set_event_type("loan.disbursed");
    e.set_amount_fen(5'000'000);
    e.mutable_attributes()->clear();
    (*e.mutable_attributes())["contract_id"] = "K-" + id;
    return e;
  }

  static pb::BusinessEvent LoanCancelled(const std::string& id, const std::string& original) {
    pb::BusinessEvent e = Loan(id);
    e.set_event_type("loan.cancelled");
    e.set_amount_fen(0);
    e.mutable_attributes()->clear();
    (*e.mutable_attributes())["original_event_id"] = original;
    return e;
  }

  // Bank-a's rule of `kind` over `type` granting 5 points (CUMULATIVE_AMOUNT: add tiers).
  static pb::TriggerRule Rule(const std::string& id, const std::string& type, pb::RuleKind kind,
                              const std::string& condition = "") {
    pb::TriggerRule rule;
    rule.set_rule_id(id);
    rule.set_campaign_id("camp-" + id);
    rule.set_org_id("bank-a");
    rule.set_event_type(type);
    rule.set_kind(kind);
    rule.set_condition(condition);
    if (kind != pb::CUMULATIVE_AMOUNT) {
      rule.mutable_reward()->set_asset(::marketing::rewards::v1::POINTS);
      rule.mutable_reward()->set_quantity(5);
    }
    rule.set_active(true);
    rule.set_revision(1);
    return rule;
  }

  static void AddTier(pb::TriggerRule& rule, int64_t threshold_fen) {
    pb::Tier* tier = rule.add_tiers();
    tier->set_threshold_fen(threshold_fen);
    tier->mutable_reward()->set_asset(::marketing::rewards::v1::POINTS);
    tier->mutable_reward()->set_quantity(threshold_fen / 100);
  }

  absl::Status Upsert(const pb::TriggerRule& rule) {
    return service_->UpsertRule(tenancy::SystemActor("test"), rule).status();
  }

  // Handles `events` as one consumed batch; none may be dead-lettered.
  void Handle(const std::vector<pb::BusinessEvent>& events) {
    std::vector<kafka::IncomingMessage> batch;
    for (const auto& e : events) batch.push_back(Message(e, offset_++));
    std::vector<Rejected> rejected;
    absl::Status s = service_->HandleBatch(batch, &rejected);
    ASSERT_TRUE(s.ok()) << s;
    ASSERT_TRUE(rejected.empty()) << rejected[0].reason;
  }

  ValidatedEvent Validated(const pb::BusinessEvent& e) {
    auto v = types_.Validate(e, "env-" + e.source_event_id());
    EXPECT_TRUE(v.ok()) << v.status();
    return *v;
  }

  // The state of the grant of `rule_id`'s `tier` caused by `event_key`, or "none".
  std::string GrantState(const std::string& event_key, const std::string& rule_id, int tier = 0) {
    std::string state = "none";
    absl::Status s = pg::WithTransaction(*pool_, [&](pqxx::work& tx) {
      pqxx::result r = tx.exec_params("SELECT state FROM grants WHERE grant_id = $1",
                                      GrantId(event_key, rule_id, tier));
      if (!r.empty()) state = r[0][0].as<std::string>();
      return absl::OkStatus();
    });
    EXPECT_TRUE(s.ok()) << s;
    return state;
  }

  // Records the ledger's refusal of that grant, as the grant sender does.
  void Refuse(const std::string& event_key, const std::string& rule_id, int tier = 0) {
    absl::Status s =
        store_->Finish({{GrantId(event_key, rule_id, tier), GrantResult::Kind::kRejected,
                         "BUDGET_EXHAUSTED: the campaign budget is exhausted"}});
    ASSERT_TRUE(s.ok()) << s;
  }

  Aggregate Agg(const std::string& rule_id, const std::string& window = "c") {
    auto a = store_->LoadAggregate(rule_id, "c-1", window);
    EXPECT_TRUE(a.ok()) << a.status();
    return a.value_or(Aggregate{});
  }

  static kafka::IncomingMessage Message(const pb::BusinessEvent& e, int64_t offset) {
    kafka::IncomingMessage m;
    m.topic = "mkt.business-events.v1";
    m.offset = offset;
    m.key = e.customer_id();
    m.value = kafka::MakeEnvelope("events.BusinessEvent", e.org_id(), "", e).SerializeAsString();
    return m;
  }

  testing::TestDatabase db_;
  std::unique_ptr<pg::Pool> pool_;
  std::unique_ptr<EventStore> store_;
  std::unique_ptr<EventsService> service_;
  EventTypeRegistry types_;
  RuleIndex no_rules_;
  int64_t offset_ = 1000;
};

TEST_F(EventStoreTest, WhatTheDatabaseRefusesIsADataExceptionAndNothingIsWritten) {
  const std::string nul("x\0y", 3);
  struct Case {
    const char* what;
    std::function<void(ValidatedEvent&)> spoil;
    const char* sqlstate;
  };
  const std::vector<Case> cases = {
      // libpq sends parameters as C strings: the array literal ends at the NUL.
      {"NUL in customer_id", [&](auto& e) { e.customer_id = "c" + nul; }, "22P02"},
      {"NUL in event_key", [&](auto& e) { e.event_key += nul; }, "22P02"},
      {"NUL in product_code", [&](auto& e) { e.product_code = nul; }, "22P02"},
      // nlohmann::json writes \u0000, which jsonb refuses.
      {"NUL in an attribute", [&](auto& e) { e.attributes["merchant_category"] = nul; }, "22P05"},
      {"malformed UTF-8 in customer_id", [](auto& e) { e.customer_id = "c\xff"; }, "22021"},
      // nlohmann::json refuses to write it at all.
      {"malformed UTF-8 in an attribute",
       [](auto& e) { e.attributes["merchant_category"] = "caf\xe9"; }, ""},
  };
  int n = 0;
  for (const Case& c : cases) {
    ValidatedEvent good = Valid(absl::StrCat("good-", n));
    ValidatedEvent bad = Valid(absl::StrCat("bad-", n++));
    c.spoil(bad);
    auto stats = store_->ProcessBatch({good, bad}, no_rules_, nullptr, nullptr);
    ASSERT_FALSE(stats.ok()) << c.what;
    EXPECT_TRUE(IsDataException(stats.status())) << c.what << ": " << stats.status();
    EXPECT_EQ(DataExceptionSqlState(stats.status()), c.sqlstate) << stats.status();
    if (*c.sqlstate != '\0') {
      EXPECT_THAT(std::string(stats.status().message()),
                  StartsWith(absl::StrCat("PostgreSQL error ", c.sqlstate, ": ")));
    }
    EXPECT_LE(stats.status().message().size(), 500u);
  }
  EXPECT_EQ(Count("SELECT count(*) FROM event_keys"), 0);
  EXPECT_EQ(Count("SELECT count(*) FROM event_log"), 0);

  // The largest amounts fit; sums of them saturate in memory and are stored as they are.
  ValidatedEvent big = Valid("big");
  big.amount_fen = std::numeric_limits<int64_t>::max();
  auto stats = store_->ProcessBatch({big}, no_rules_, nullptr, nullptr);
  EXPECT_TRUE(stats.ok()) << stats.status();
}

TEST_F(EventStoreTest, TheHandlerDeadLettersWhatTheDatabaseRefusesAndAppliesTheRestOnce) {
  // A refusal validation cannot foresee: the database itself refuses one event's key.
  Exec(R"sql(
    CREATE FUNCTION refuse_marked() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.event_key LIKE '%refused-by-db%' THEN
        RAISE EXCEPTION 'value refused for the test' USING ERRCODE = '22023';
      END IF;
      IF NEW.event_key LIKE '%conflicts%' THEN
        RAISE EXCEPTION 'a concurrent update for the test' USING ERRCODE = '40001';
      END IF;
      RETURN NEW;
    END $$;
    CREATE TRIGGER refuse_marked BEFORE INSERT ON event_keys
      FOR EACH ROW EXECUTE FUNCTION refuse_marked();)sql");
  ASSERT_TRUE(UpsertSpendRule("every-spend", "camp-1", "").ok());

  std::vector<kafka::IncomingMessage> batch;
  for (int i = 0; i < 9; ++i) {
    pb::BusinessEvent e = Spend(absl::StrCat("tx-", i));
    if (i == 3) e.set_source_event_id("tx-refused-by-db");
    if (i == 6) (*e.mutable_attributes())["merchant_category"] = std::string("caf\0e", 5);
    batch.push_back(Message(e, 100 + i));
  }
  for (int round = 0; round < 2; ++round) {  // the second time as a redelivery
    std::vector<Rejected> rejected;
    absl::Status s = service_->HandleBatch(batch, &rejected);
    ASSERT_TRUE(s.ok()) << s;
    ASSERT_EQ(rejected.size(), 2u);
    EXPECT_EQ(rejected[0].index, 6u);
    EXPECT_THAT(rejected[0].reason, HasSubstr("attribute merchant_category contains a NUL"));
    EXPECT_EQ(rejected[1].index, 3u);
    EXPECT_THAT(rejected[1].reason,
                HasSubstr("the database refused it: PostgreSQL error 22023: value refused for "
                          "the test"));
  }
  EXPECT_EQ(Count("SELECT count(*) FROM event_log"), 7);
  EXPECT_EQ(Count("SELECT count(*) FROM event_log WHERE event_key LIKE '%refused%'"), 0);
  EXPECT_EQ(Count("SELECT count(*) FROM grants"), 7);
  EXPECT_EQ(Count("SELECT event_count FROM rule_aggregates WHERE window_key = 'c'"), 7);

  // A failure that is not about the data (here a serialization failure, retried by
  // pg::WithTransaction and then by the consumer) is returned: nothing is dead-lettered, nothing
  // of the batch is written.
  std::vector<kafka::IncomingMessage> conflicting = {Message(Spend("tx-a"), 200),
                                                     Message(Spend("tx-conflicts"), 201),
                                                     Message(Spend("tx-b"), 202)};
  std::vector<Rejected> rejected;
  absl::Status s = service_->HandleBatch(conflicting, &rejected);
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted) << s;
  EXPECT_TRUE(rejected.empty());
  EXPECT_EQ(Count("SELECT count(*) FROM event_log"), 7);
}

// Decision 030: a reversal whose original has not arrived waits in parked_reversals and is
// applied right after the original, in a later batch or later in the same one; a reversal of an
// original that matched nothing has no effect and does not wait.
TEST_F(EventStoreTest, AReversalBeforeItsOriginalWaitsAndIsAppliedRightAfterIt) {
  ASSERT_TRUE(UpsertSpendRule("spend-500", "camp-r", "amount_fen >= 500").ok());
  auto refund = [](const std::string& id, const std::string& original, int64_t amount_fen) {
    pb::BusinessEvent e = Spend(id);
    e.set_event_type("credit_card.refunded");
    e.set_amount_fen(amount_fen);
    e.mutable_attributes()->clear();
    (*e.mutable_attributes())["original_event_id"] = original;
    return e;
  };
  auto handle = [&](const std::vector<pb::BusinessEvent>& events) {
    static int64_t offset = 0;
    std::vector<kafka::IncomingMessage> batch;
    for (const auto& e : events) batch.push_back(Message(e, offset++));
    std::vector<Rejected> rejected;
    absl::Status s = service_->HandleBatch(batch, &rejected);
    ASSERT_TRUE(s.ok()) << s;
    ASSERT_TRUE(rejected.empty()) << rejected[0].reason;
  };
  auto grant_state = [&](const std::string& original) {
    std::string state;
    absl::Status s = pg::WithTransaction(*pool_, [&](pqxx::work& tx) {
      pqxx::result r =
          tx.exec_params("SELECT state FROM grants WHERE event_key = $1", "card:" + original);
      state = r.size() == 1 ? r[0][0].as<std::string>() : absl::StrCat(r.size(), " grants");
      return absl::OkStatus();
    });
    EXPECT_TRUE(s.ok()) << s;
    return state;
  };

  // A refund of the whole amount, alone: it waits.
  handle({refund("r-1", "tx-1", 1000)});
  EXPECT_EQ(Count("SELECT count(*) FROM parked_reversals WHERE original_key = 'card:tx-1'"), 1);
  // Its spend in a later batch grants, and the grant is clawed back at once; the row goes.
  handle({Spend("tx-1")});
  EXPECT_EQ(grant_state("tx-1"), "reverse_pending");
  EXPECT_EQ(Count("SELECT count(*) FROM parked_reversals"), 0);
  EXPECT_EQ(Count("SELECT count(*) FROM match_outcomes WHERE event_key = 'card:tx-1' "
                  "AND cancelled AND refunded_fen = 1000"),
            1);

  // A refund and its spend in one batch, the refund first: applied in that batch, no row.
  handle({refund("r-2", "tx-2", 1000), Spend("tx-2")});
  EXPECT_EQ(grant_state("tx-2"), "reverse_pending");
  // A partial refund first: the spend keeps its grant (every match), the amount is corrected.
  handle({refund("r-3", "tx-3", 400), Spend("tx-3")});
  EXPECT_EQ(grant_state("tx-3"), "pending");
  EXPECT_EQ(Count("SELECT refunded_fen FROM match_outcomes WHERE event_key = 'card:tx-3'"), 400);
  EXPECT_EQ(Count("SELECT count(*) FROM parked_reversals"), 0);

  // A spend that matched nothing (below 500): its refund has no effect and does not wait.
  pb::BusinessEvent small = Spend("tx-4");
  small.set_amount_fen(100);
  handle({small});
  handle({refund("r-4", "tx-4", 100)});
  EXPECT_EQ(grant_state("tx-4"), "0 grants");
  EXPECT_EQ(Count("SELECT count(*) FROM parked_reversals"), 0);

  // Redelivered, the refunds and spends change nothing.
  handle({refund("r-1", "tx-1", 1000), Spend("tx-1"), refund("r-2", "tx-2", 1000), Spend("tx-2"),
          refund("r-3", "tx-3", 400), Spend("tx-3")});
  EXPECT_EQ(Count("SELECT count(*) FROM grants"), 3);
  EXPECT_EQ(Count("SELECT count(*) FROM grants WHERE state = 'reverse_pending'"), 2);
  EXPECT_EQ(Count("SELECT count(*) FROM parked_reversals"), 0);
  EXPECT_EQ(Count("SELECT refunded_fen FROM match_outcomes WHERE event_key = 'card:tx-3'"), 400);

  // A refund whose spend never comes keeps waiting.
  handle({refund("r-5", "tx-5", 1000)});
  EXPECT_EQ(Count("SELECT count(*) FROM parked_reversals WHERE event_key = 'card:r-5' "
                  "AND original_key = 'card:tx-5' AND reversal = 2 AND amount_fen = 1000 "
                  "AND customer_id = 'c-1' AND org_id = 'bank-a'"),
            1);
}

// Decision 010, amended: a grant the ledger refuses (budget or stock exhausted) gives back, in the
// transaction that records the refusal, its count towards per_customer_total and its tier, so the
// customer's next matching event grants once the operator has raised the budget.
TEST_F(EventStoreTest, ARefusedGrantGivesBackItsLimitAndItsTier) {
  pb::TriggerRule once =
      Rule("once", "credit_card.spend", pb::EVERY_MATCH, "merchant_category == 'food'");
  once.set_per_customer_total(1);
  ASSERT_TRUE(Upsert(once).ok());
  pb::TriggerRule tier =
      Rule("tier", "credit_card.spend", pb::CUMULATIVE_AMOUNT, "merchant_category == 'travel'");
  AddTier(tier, 1500);
  ASSERT_TRUE(Upsert(tier).ok());
  pb::TriggerRule count =
      Rule("count", "credit_card.spend", pb::COUNT_AT_LEAST, "merchant_category == 'books'");
  count.set_count_threshold(2);
  ASSERT_TRUE(Upsert(count).ok());

  // One grant per customer: the refused one does not use it up.
  Handle({Spend("f-1", 1000)});
  ASSERT_EQ(GrantState("card:f-1", "once"), "pending");
  Refuse("card:f-1", "once");
  EXPECT_EQ(GrantState("card:f-1", "once"), "rejected");
  EXPECT_EQ(Agg("once", kGrantsWindow).count, 0);
  Handle({Spend("f-2", 1000)});
  EXPECT_EQ(GrantState("card:f-2", "once"), "pending");
  // The refusal recorded again gives back nothing more: the limit still holds.
  Refuse("card:f-1", "once");
  EXPECT_EQ(Agg("once", kGrantsWindow).count, 1);
  Handle({Spend("f-3", 1000)});
  EXPECT_EQ(GrantState("card:f-3", "once"), "none");
  auto decision = store_->LoadDecision("card:f-3", "once");
  ASSERT_TRUE(decision.ok());
  EXPECT_THAT(*decision, HasSubstr("per-customer limit 1 reached"));

  // A cumulative tier refused is granted by the next spend that keeps the sum over it.
  Handle({Spend("t-1", 1000, "travel"), Spend("t-2", 1000, "travel")});
  ASSERT_EQ(GrantState("card:t-2", "tier"), "pending");
  Refuse("card:t-2", "tier");
  EXPECT_EQ(Agg("tier").tiers_granted, 0);
  EXPECT_EQ(Agg("tier").amount_fen, 2000);
  Handle({Spend("t-3", 100, "travel")});
  EXPECT_EQ(GrantState("card:t-3", "tier"), "pending");
  EXPECT_EQ(Agg("tier").tiers_granted, 1);
  EXPECT_EQ(Agg("tier", kGrantsWindow).count, 1);

  // A count refused is granted by the next event past it.
  Handle({Spend("b-1", 100, "books"), Spend("b-2", 100, "books")});
  ASSERT_EQ(GrantState("card:b-2", "count"), "pending");
  Refuse("card:b-2", "count");
  Handle({Spend("b-3", 100, "books")});
  EXPECT_EQ(GrantState("card:b-3", "count"), "pending");
  Handle({Spend("b-4", 100, "books")});
  EXPECT_EQ(GrantState("card:b-4", "count"), "none");

  // A grant clawed back while its call was in flight gave back at the clawback; refused after
  // that, it gives back nothing more, and the tier earned again since keeps its bit and count.
  Handle({Refund("rt-1", "t-1", 1000)});  // 1100 < 1500
  ASSERT_EQ(GrantState("card:t-3", "tier"), "reverse_pending");
  Handle({Spend("t-4", 500, "travel")});  // 1600 again
  ASSERT_EQ(GrantState("card:t-4", "tier"), "pending");
  Refuse("card:t-3", "tier");
  EXPECT_EQ(GrantState("card:t-3", "tier"), "cancelled");
  EXPECT_EQ(Agg("tier").tiers_granted, 1);
  EXPECT_EQ(Agg("tier", kGrantsWindow).count, 1);
}

// Decision 010, amended: a reversal claws back exactly the tiers whose thresholds no longer hold
// after it, whichever event crossed them; a tier still held keeps its grant, even when the event
// that crossed it is cancelled. Which event crossed a tier depends on the order events came in:
// the outcome does not.
TEST_F(EventStoreTest, AReversalClawsBackExactlyTheTiersThatNoLongerHold) {
  pb::TriggerRule tiers =
      Rule("tiers", "credit_card.spend", pb::CUMULATIVE_AMOUNT, "merchant_category == 'food'");
  AddTier(tiers, 100000);
  ASSERT_TRUE(Upsert(tiers).ok());
  pb::TriggerRule count =
      Rule("count", "credit_card.spend", pb::COUNT_AT_LEAST, "merchant_category == 'books'");
  count.set_count_threshold(2);
  ASSERT_TRUE(Upsert(count).ok());

  Handle({Spend("a", 60000), Spend("b", 60000), Spend("c", 60000)});
  ASSERT_EQ(GrantState("card:b", "tiers"), "pending");  // b crossed 100000
  // b refunded in full: 120000 still holds the tier, which keeps its grant.
  Handle({Refund("rb", "b", 60000)});
  EXPECT_EQ(GrantState("card:b", "tiers"), "pending");
  EXPECT_EQ(Agg("tiers").amount_fen, 120000);
  EXPECT_EQ(Agg("tiers").tiers_granted, 1);
  // a refunded in full: 60000 no longer holds it, so b's grant goes.
  Handle({Refund("ra", "a", 60000)});
  EXPECT_EQ(GrantState("card:b", "tiers"), "reverse_pending");
  EXPECT_EQ(Agg("tiers").tiers_granted, 0);
  EXPECT_EQ(Agg("tiers", kGrantsWindow).count, 0);
  // Earned again by later spend.
  Handle({Spend("d", 50000)});
  EXPECT_EQ(GrantState("card:d", "tiers"), "pending");

  // The same for a count: y reached it, y is cancelled, x and z still reach it.
  Handle({Spend("x", 100, "books"), Spend("y", 100, "books"), Spend("z", 100, "books")});
  ASSERT_EQ(GrantState("card:y", "count"), "pending");
  Handle({Refund("ry", "y", 100)});
  EXPECT_EQ(GrantState("card:y", "count"), "pending");
  Handle({Refund("rx", "x", 100)});
  EXPECT_EQ(GrantState("card:y", "count"), "reverse_pending");
  Handle({Spend("w", 100, "books")});
  EXPECT_EQ(GrantState("card:w", "count"), "pending");
}

// Decision 010, amended: a first-time grant clawed back with its cancelled event leaves no first
// event behind, so the customer's next matching event is the first; while another counted event
// is left, it is not.
TEST_F(EventStoreTest, TheNextLoanIsTheFirstOnceTheOnlyOneCountedIsCancelled) {
  ASSERT_TRUE(Upsert(Rule("first-loan", "loan.disbursed", pb::FIRST_TIME)).ok());
  Handle({Loan("l-1")});
  ASSERT_EQ(GrantState("core:l-1", "first-loan"), "pending");
  Handle({LoanCancelled("x-1", "l-1")});  // in the cooling-off period
  EXPECT_EQ(GrantState("core:l-1", "first-loan"), "reverse_pending");
  Handle({Loan("l-2")});
  EXPECT_EQ(GrantState("core:l-2", "first-loan"), "pending");
  auto decision = store_->LoadDecision("core:l-2", "first-loan");
  ASSERT_TRUE(decision.ok());
  EXPECT_THAT(*decision, HasSubstr("first matching event"));

  // l-3 is not the first; l-2 cancelled leaves l-3 counted, so l-4 is not the first either.
  Handle({Loan("l-3")});
  EXPECT_EQ(GrantState("core:l-3", "first-loan"), "none");
  Handle({LoanCancelled("x-2", "l-2")});
  EXPECT_EQ(GrantState("core:l-2", "first-loan"), "reverse_pending");
  Handle({Loan("l-4")});
  EXPECT_EQ(GrantState("core:l-4", "first-loan"), "none");
  decision = store_->LoadDecision("core:l-4", "first-loan");
  ASSERT_TRUE(decision.ok());
  EXPECT_THAT(*decision, HasSubstr("not the first"));
}

// A reversal whose rule the process does not hold in memory (its condition no longer compiles,
// or another replica loaded it first) is applied with the rule's stored definition; a rule found
// nowhere still loses its contribution and, when cancelled, the event's own grants. Nothing is
// recorded as undone without its clawback.
TEST_F(EventStoreTest, AReversalWhoseRuleIsNotInMemoryStillClawsBack) {
  pb::TriggerRule every = Rule("stored-every", "credit_card.spend", pb::EVERY_MATCH);
  pb::TriggerRule tiers = Rule("stored-tiers", "credit_card.spend", pb::CUMULATIVE_AMOUNT);
  AddTier(tiers, 1500);
  const pb::TriggerRule unknown = Rule("unknown-every", "credit_card.spend", pb::EVERY_MATCH);
  ASSERT_TRUE(store_->SaveRule(every).ok());
  ASSERT_TRUE(store_->SaveRule(tiers).ok());
  RuleIndex loaded;
  for (const pb::TriggerRule& rule : {every, tiers, unknown}) {
    auto compiled = CompileRule(rule, types_);
    ASSERT_TRUE(compiled.ok()) << compiled.status();
    loaded.by_id[rule.rule_id()] = *compiled;
    loaded.by_type[rule.event_type()].push_back(*compiled);
  }
  auto applied = store_->ProcessBatch(
      {Validated(Spend("s-1", 1000)), Validated(Spend("s-2", 1000)), Validated(Spend("s-3", 1000))},
      loaded, nullptr, nullptr);
  ASSERT_TRUE(applied.ok()) << applied.status();
  ASSERT_EQ(GrantState("card:s-2", "stored-tiers"), "pending");  // 2000 >= 1500

  // Applied by a process holding none of these rules. s-2 cancelled: 2000 still holds the tier.
  auto reversed =
      store_->ProcessBatch({Validated(Refund("r-2", "s-2", 1000))}, no_rules_, nullptr, nullptr);
  ASSERT_TRUE(reversed.ok()) << reversed.status();
  EXPECT_EQ(GrantState("card:s-2", "stored-every"), "reverse_pending");
  EXPECT_EQ(GrantState("card:s-2", "unknown-every"), "reverse_pending");
  EXPECT_EQ(GrantState("card:s-2", "stored-tiers"), "pending");
  EXPECT_EQ(GrantState("card:s-1", "stored-every"), "pending");
  // s-1 cancelled: 1000 no longer holds it, so s-2's tier goes too.
  reversed =
      store_->ProcessBatch({Validated(Refund("r-1", "s-1", 1000))}, no_rules_, nullptr, nullptr);
  ASSERT_TRUE(reversed.ok()) << reversed.status();
  EXPECT_EQ(GrantState("card:s-1", "stored-every"), "reverse_pending");
  EXPECT_EQ(GrantState("card:s-1", "unknown-every"), "reverse_pending");
  EXPECT_EQ(GrantState("card:s-2", "stored-tiers"), "reverse_pending");
  EXPECT_EQ(GrantState("card:s-3", "stored-every"), "pending");
  EXPECT_EQ(Agg("stored-every").count, 1);
  EXPECT_EQ(Agg("stored-every", kGrantsWindow).count, 1);
  EXPECT_EQ(Agg("unknown-every", kGrantsWindow).count, 1);
  EXPECT_EQ(Agg("stored-tiers").amount_fen, 1000);
  EXPECT_EQ(Agg("stored-tiers").tiers_granted, 0);
  EXPECT_EQ(Agg("stored-tiers", kGrantsWindow).count, 0);
}

TEST_F(EventStoreTest, OperatorsSeeTheEventLogAndExplanationsOfTheirSubtreeOnly) {
  ASSERT_TRUE(UpsertSpendRule("a-spend", "camp-a", "amount_fen >= 5000").ok());
  // One customer id at a bank, at one of its branches and at a bank whose id starts the same.
  std::vector<kafka::IncomingMessage> batch;
  int64_t offset = 0;
  for (const char* org : {"bank-a", "bank-a.branch-01", "bank-ab"}) {
    pb::BusinessEvent e = Spend(absl::StrCat("tx-", org));
    e.set_org_id(org);
    batch.push_back(Message(e, offset++));
  }
  std::vector<Rejected> rejected;
  ASSERT_TRUE(service_->HandleBatch(batch, &rejected).ok());
  ASSERT_TRUE(rejected.empty());

  auto orgs_seen = [&](const std::string& actor_org, const std::string& asked) {
    tenancy::Actor actor{.org_id = actor_org, .operator_id = "op", .roles = {}};
    pb::ListCustomerEventsRequest request;
    request.set_customer_id("c-1");
    request.set_org_id(asked);
    auto listed = service_->ListCustomerEvents(actor, request);
    std::vector<std::string> orgs;
    if (!listed.ok()) return std::vector<std::string>{std::string(listed.status().message())};
    for (const auto& e : listed->events()) orgs.push_back(e.org_id());
    std::sort(orgs.begin(), orgs.end());
    return orgs;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(orgs_seen("bank-a", ""), (V{"bank-a", "bank-a.branch-01"}));
  // The gateway always names the org (the operator's by default): its branches are included.
  EXPECT_EQ(orgs_seen("bank-a", "bank-a"), (V{"bank-a", "bank-a.branch-01"}));
  EXPECT_EQ(orgs_seen("bank-a", "bank-a.branch-01"), (V{"bank-a.branch-01"}));
  EXPECT_EQ(orgs_seen("bank-a.branch-01", ""), (V{"bank-a.branch-01"}));
  EXPECT_EQ(orgs_seen("bank-ab", ""), (V{"bank-ab"}));
  EXPECT_EQ(orgs_seen("fed", ""), (V{"bank-a", "bank-a.branch-01", "bank-ab"}));
  tenancy::Actor bank_b{.org_id = "bank-b", .operator_id = "op", .roles = {}};
  pb::ListCustomerEventsRequest sibling;
  sibling.set_customer_id("c-1");
  sibling.set_org_id("bank-a");
  EXPECT_EQ(service_->ListCustomerEvents(bank_b, sibling).status().code(),
            absl::StatusCode::kPermissionDenied);
  sibling.set_org_id("not an org");
  EXPECT_EQ(service_->ListCustomerEvents(bank_b, sibling).status().code(),
            absl::StatusCode::kInvalidArgument);

  // The explanation: bank-a's rule and event for bank-a; another bank's rule or event is 404.
  tenancy::Actor bank_a{.org_id = "bank-a", .operator_id = "op", .roles = {}};
  pb::ExplainRequest why;
  why.set_rule_id("a-spend");
  why.set_event_key("card:tx-bank-a");
  auto explained = service_->Explain(bank_a, why);
  ASSERT_TRUE(explained.ok()) << explained.status();
  EXPECT_FALSE(explained->condition_holds());
  EXPECT_EQ(explained->failed_condition(), "amount_fen >= 5000");
  EXPECT_EQ(service_->Explain(bank_b, why).status().code(), absl::StatusCode::kNotFound);
  why.set_event_key("card:tx-bank-ab");
  EXPECT_EQ(service_->Explain(bank_a, why).status().code(), absl::StatusCode::kNotFound);

  // Event types are the federation's: a member bank's admin may not change them.
  pb::EventType type = DefaultEventTypes().front();
  tenancy::Actor bank_admin{
      .org_id = "bank-a", .operator_id = "op", .roles = {tenancy::Role::kAdmin}};
  EXPECT_EQ(service_->UpsertEventType(bank_admin, type).status().code(),
            absl::StatusCode::kPermissionDenied);
  tenancy::Actor fed_admin{.org_id = "fed", .operator_id = "op", .roles = {tenancy::Role::kAdmin}};
  auto upserted = service_->UpsertEventType(fed_admin, type);
  ASSERT_TRUE(upserted.ok()) << upserted.status();
  EXPECT_GE(upserted->version(), 2);
}

}  // namespace
}  // namespace mkt::events
