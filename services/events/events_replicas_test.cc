// Several events replicas on one database (decision 010, amended 2026-11-29): what an admin
// defines through one replica (an event type, a changed schema, a rule) is seen by the others; a
// replica never dead-letters an event, or refuses a rule, because its own copy of the event types
// is behind the database.
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
#include "marketing/campaigns/v1/campaigns.pb.h"
#include "services/events/event_store.h"
#include "services/events/events_service.h"

namespace mkt::events {
namespace {

namespace cpb = ::marketing::campaigns::v1;

class EventsReplicasTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pool = pg::Pool::Connect({.dsn = db_.dsn(), .size = 4});
    ASSERT_TRUE(pool.ok()) << pool.status();
    pool_ = *std::move(pool);
    absl::Status migrated = pg::ApplyMigrations(*pool_, {&EventsMigrations()});
    ASSERT_TRUE(migrated.ok()) << migrated;
    store_a_ = std::make_unique<EventStore>(*pool_);
    store_b_ = std::make_unique<EventStore>(*pool_);
    a_ = std::make_unique<EventsService>(*store_a_, nullptr, nullptr);
    b_ = std::make_unique<EventsService>(*store_b_, nullptr, nullptr);
    ASSERT_TRUE(a_->Start().ok());
    ASSERT_TRUE(b_->Start().ok());
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

  // The federation's new event type "loan.prepaid" (amount_fen = the principal prepaid).
  static pb::EventType Prepaid() {
    pb::EventType type;
    type.set_name("loan.prepaid");
    type.set_description("A loan was prepaid");
    type.set_amount_required(true);
    pb::AttributeSpec* contract = type.add_attributes();
    contract->set_name("contract_id");
    contract->set_type(pb::STRING);
    contract->set_required(true);
    return type;
  }

  static pb::BusinessEvent Event(const std::string& id) {
    pb::BusinessEvent e;
    e.set_source("core");
    e.set_source_event_id(id);
    e.set_event_type("loan.prepaid");
    e.set_customer_id("c-1");
    e.set_org_id("bank-a");
    e.mutable_occurred_at()->set_seconds(1'790'000'000);
    e.set_amount_fen(500'000);
    (*e.mutable_attributes())["contract_id"] = "K-" + id;
    return e;
  }

  kafka::IncomingMessage Message(const pb::BusinessEvent& e) {
    kafka::IncomingMessage m;
    m.topic = kBusinessEventsTopic;
    m.partition = 1;
    m.offset = offset_++;
    m.key = e.customer_id();
    m.value = kafka::MakeEnvelope(kBusinessEventType, e.org_id(), "", e).SerializeAsString();
    return m;
  }

  // Bank-a's EVENT_TRIGGER campaign granting 5 points per event meeting `expression`.
  kafka::IncomingMessage CampaignChange(const std::string& campaign_id,
                                        const std::string& expression) {
    cpb::CampaignChanged change;
    change.set_campaign_id(campaign_id);
    change.set_org_id("bank-a");
    change.set_revision(1);
    change.set_state(cpb::ONLINE);
    cpb::CampaignConfig* config = change.mutable_config();
    config->set_type(cpb::EVENT_TRIGGER);
    config->set_trigger_expression(expression);
    cpb::RewardItem* reward = config->add_rewards();
    reward->set_benefit_template_id("POINTS");
    reward->set_quantity(5);
    kafka::IncomingMessage m;
    m.topic = kCampaignChangesTopic;
    m.offset = offset_++;
    m.key = campaign_id;
    m.value =
        kafka::MakeEnvelope("campaigns.CampaignChanged", "bank-a", "", change).SerializeAsString();
    return m;
  }

  static pb::TriggerRule Rule(const std::string& id, const std::string& condition) {
    pb::TriggerRule rule;
    rule.set_rule_id(id);
    rule.set_campaign_id("camp-" + id);
    rule.set_org_id("bank-a");
    rule.set_event_type("loan.prepaid");
    rule.set_kind(pb::EVERY_MATCH);
    rule.set_condition(condition);
    rule.mutable_reward()->set_asset(::marketing::rewards::v1::POINTS);
    rule.mutable_reward()->set_quantity(5);
    rule.set_active(true);
    rule.set_revision(1);
    return rule;
  }

  testing::TestDatabase db_;
  std::unique_ptr<pg::Pool> pool_;
  std::unique_ptr<EventStore> store_a_;
  std::unique_ptr<EventStore> store_b_;
  std::unique_ptr<EventsService> a_;
  std::unique_ptr<EventsService> b_;
  int64_t offset_ = 1;
};

// An admin defines loan.prepaid through replica A; replica B, which owns other partitions, accepts
// its events, compiles the campaign rules and admin rules for it, and sees a later attribute.
TEST_F(EventsReplicasTest, ATypeDefinedThroughOneReplicaIsKnownToTheOthers) {
  const tenancy::Actor admin = tenancy::SystemActor("test");
  ASSERT_TRUE(a_->UpsertEventType(admin, Prepaid()).ok());

  // B's copy of the registry predates the type: the event is not "unknown" for all that.
  std::vector<Rejected> rejected;
  absl::Status handled = b_->HandleBatch({Message(Event("p-1"))}, &rejected);
  ASSERT_TRUE(handled.ok()) << handled;
  EXPECT_TRUE(rejected.empty()) << rejected[0].reason;
  EXPECT_EQ(Count("SELECT count(*) FROM event_log WHERE event_type = 'loan.prepaid'"), 1);

  // The campaign's rule for the type compiles on B (rather than being dead-lettered), and grants.
  absl::Status changed =
      b_->HandleCampaignChange(CampaignChange("cmp-prepay",
                                              "event.type == \"loan.prepaid\" && "
                                              "event.amount_fen >= 100000"));
  ASSERT_TRUE(changed.ok()) << changed;
  EXPECT_EQ(b_->rules().Snapshot()->by_id.count("campaign:cmp-prepay"), 1u);
  rejected.clear();
  handled = b_->HandleBatch({Message(Event("p-2"))}, &rejected);
  ASSERT_TRUE(handled.ok()) << handled;
  EXPECT_TRUE(rejected.empty()) << rejected[0].reason;
  EXPECT_EQ(Count("SELECT count(*) FROM grants WHERE rule_id = 'campaign:cmp-prepay'"), 1);

  // A second type, defined on A, is just as usable in an admin rule upserted through B.
  pb::EventType second = Prepaid();
  second.set_name("loan.rescheduled");
  ASSERT_TRUE(a_->UpsertEventType(admin, second).ok());
  pb::TriggerRule rescheduled = Rule("resched", "event.contract_id != \"\"");
  rescheduled.set_event_type("loan.rescheduled");
  auto upserted = b_->UpsertRule(admin, rescheduled);
  EXPECT_TRUE(upserted.ok()) << upserted.status();

  // A adds an attribute to the type: B accepts events that carry it and rules that read it.
  pb::EventType with_channel = Prepaid();
  pb::AttributeSpec* channel = with_channel.add_attributes();
  channel->set_name("channel");
  channel->set_type(pb::STRING);
  auto updated = a_->UpsertEventType(admin, with_channel);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(updated->version(), 2);
  pb::BusinessEvent online = Event("p-3");
  (*online.mutable_attributes())["channel"] = "app";
  rejected.clear();
  handled = b_->HandleBatch({Message(online)}, &rejected);
  ASSERT_TRUE(handled.ok()) << handled;
  EXPECT_TRUE(rejected.empty()) << rejected[0].reason;
  upserted = b_->UpsertRule(admin, Rule("by-app", "event.channel == \"app\""));
  EXPECT_TRUE(upserted.ok()) << upserted.status();

  // B numbers the next version of the type after A's, not after its own old copy.
  with_channel.set_description("A loan was prepaid, in part or in full");
  updated = b_->UpsertEventType(admin, with_channel);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(updated->version(), 3);

  // What is unknown after a fresh look at the database is still dead-lettered.
  pb::BusinessEvent unknown = Event("p-4");
  unknown.set_event_type("loan.never_defined");
  rejected.clear();
  handled = b_->HandleBatch({Message(unknown)}, &rejected);
  ASSERT_TRUE(handled.ok()) << handled;
  ASSERT_EQ(rejected.size(), 1u);
  EXPECT_THAT(rejected[0].reason, ::testing::HasSubstr("unknown event type"));
  EXPECT_FALSE(
      b_->HandleCampaignChange(CampaignChange("cmp-never", "event.type == \"loan.never_defined\""))
          .ok());
}

// A rule an admin upserts through replica A reaches replica B within its refresh period, and B
// grants for it.
TEST_F(EventsReplicasTest, ARuleUpsertedThroughOneReplicaReachesTheOthers) {
  const tenancy::Actor admin = tenancy::SystemActor("test");
  ASSERT_TRUE(a_->UpsertEventType(admin, Prepaid()).ok());
  ASSERT_TRUE(a_->UpsertRule(admin, Rule("every-prepay", "")).ok());
  b_->set_refresh_every(absl::ZeroDuration());  // the test does not wait the default period
  std::vector<Rejected> rejected;
  absl::Status handled = b_->HandleBatch({Message(Event("p-1"))}, &rejected);
  ASSERT_TRUE(handled.ok()) << handled;
  EXPECT_TRUE(rejected.empty()) << rejected[0].reason;
  EXPECT_EQ(b_->rules().Snapshot()->by_id.count("every-prepay"), 1u);
  EXPECT_EQ(Count("SELECT count(*) FROM grants WHERE rule_id = 'every-prepay'"), 1);

  // A later revision (deactivated) reaches B too: it stops granting.
  pb::TriggerRule off = Rule("every-prepay", "");
  off.set_revision(2);
  off.set_active(false);
  ASSERT_TRUE(a_->UpsertRule(admin, off).ok());
  rejected.clear();
  handled = b_->HandleBatch({Message(Event("p-2"))}, &rejected);
  ASSERT_TRUE(handled.ok()) << handled;
  EXPECT_EQ(b_->rules().Snapshot()->by_id.at("every-prepay")->proto.revision(), 2);
  EXPECT_EQ(Count("SELECT count(*) FROM grants WHERE rule_id = 'every-prepay'"), 1);
}

// A condition reads an event's attributes by slot, laid out by its type's version. A new version
// that lists the attributes in another order recompiles the held rules, on the replica that
// changed the type and on the others: the rule keeps reading the attribute it names. A rule
// reading an attribute the new version removed is held inactive, never read at an old slot.
TEST_F(EventsReplicasTest, ANewVersionOfATypeRecompilesTheRulesThatReadIt) {
  const tenancy::Actor admin = tenancy::SystemActor("test");
  pb::EventType two = Prepaid();
  pb::AttributeSpec* channel = two.add_attributes();
  channel->set_name("channel");
  channel->set_type(pb::STRING);
  ASSERT_TRUE(a_->UpsertEventType(admin, two).ok());
  ASSERT_TRUE(a_->UpsertRule(admin, Rule("by-app", "event.channel == \"app\"")).ok());
  ASSERT_TRUE(a_->UpsertRule(admin, Rule("by-contract", "event.contract_id == \"K-x\"")).ok());
  b_->set_refresh_every(absl::ZeroDuration());

  // Version 2 lists channel first; then an event through each replica.
  pb::EventType swapped = two;
  swapped.mutable_attributes()->SwapElements(0, 1);
  ASSERT_TRUE(a_->UpsertEventType(admin, swapped).ok());
  auto event = [](const std::string& id) {
    pb::BusinessEvent e = Event(id);
    (*e.mutable_attributes())["contract_id"] = "K-x";
    (*e.mutable_attributes())["channel"] = "branch";
    return e;
  };
  for (EventsService* replica : {a_.get(), b_.get()}) {
    std::vector<Rejected> rejected;
    const std::string id = replica == a_.get() ? "s-a" : "s-b";
    absl::Status handled = replica->HandleBatch({Message(event(id))}, &rejected);
    ASSERT_TRUE(handled.ok()) << handled;
    EXPECT_TRUE(rejected.empty()) << rejected[0].reason;
  }
  // Each event matched the contract rule, and not the channel rule (its channel is "branch").
  EXPECT_EQ(Count("SELECT count(*) FROM grants WHERE rule_id = 'by-contract'"), 2);
  EXPECT_EQ(Count("SELECT count(*) FROM grants WHERE rule_id = 'by-app'"), 0);

  // Version 3 drops channel: the rule reading it is held inactive; the other still grants.
  pb::EventType dropped = Prepaid();
  ASSERT_TRUE(a_->UpsertEventType(admin, dropped).ok());
  std::vector<Rejected> rejected;
  ASSERT_TRUE(a_->HandleBatch({Message(Event("d-1"))}, &rejected).ok());
  EXPECT_FALSE(a_->rules().Snapshot()->by_id.at("by-app")->proto.active());
  EXPECT_TRUE(a_->rules().Snapshot()->by_id.at("by-contract")->proto.active());
}

}  // namespace
}  // namespace mkt::events
