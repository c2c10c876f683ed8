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
