// Several events replicas on one database (decision 010, amended 2026-11-29): what an admin
// defines through one replica (an event type, a changed schema, a rule) is seen by the others; a
// replica never dead-letters an event, or refuses a rule, because its own copy of the event types
// is behind the database.
#include <map>
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

  // Whether `replica` would match events against rule `id` (it is indexed by event type).
  static bool Matched(const EventsService& replica, const std::string& id) {
    const std::shared_ptr<const RuleIndex> snapshot = replica.rules().Snapshot();
    for (const auto& [type, rules] : snapshot->by_type) {
      for (const auto& rule : rules) {
        if (rule->proto.rule_id() == id) return true;
      }
    }
    return false;
  }

  int64_t Grants(const std::string& rule_id) {
    return Count("SELECT count(*) FROM grants WHERE rule_id = '" + rule_id + "'");
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
  static cpb::CampaignChanged Changed(const std::string& campaign_id, const std::string& expression,
                                      int64_t revision = 1,
                                      cpb::CampaignState state = cpb::ONLINE) {
    cpb::CampaignChanged change;
    change.set_campaign_id(campaign_id);
    change.set_org_id("bank-a");
    change.set_revision(revision);
    change.set_state(state);
    cpb::CampaignConfig* config = change.mutable_config();
    config->set_type(cpb::EVENT_TRIGGER);
    config->set_trigger_expression(expression);
    cpb::RewardItem* reward = config->add_rewards();
    reward->set_benefit_template_id("POINTS");
    reward->set_quantity(5);
    return change;
  }
  kafka::IncomingMessage CampaignChange(const std::string& campaign_id,
                                        const std::string& expression) {
    return CampaignChange(Changed(campaign_id, expression));
  }
  kafka::IncomingMessage CampaignChange(const cpb::CampaignChanged& change) {
    const std::string& campaign_id = change.campaign_id();
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
  EXPECT_FALSE(Matched(*a_, "by-app"));
  EXPECT_TRUE(Matched(*a_, "by-contract"));
  EXPECT_TRUE(a_->rules().Snapshot()->by_id.at("by-contract")->proto.active());

  // Version 4 brings channel back: the rule held for want of it is compiled again from its
  // definition and grants again, on both replicas (decision 010, amended 2026-11-29, later).
  ASSERT_TRUE(a_->UpsertEventType(admin, two).ok());
  for (EventsService* replica : {a_.get(), b_.get()}) {
    pb::BusinessEvent e = Event(replica == a_.get() ? "r-a" : "r-b");
    (*e.mutable_attributes())["channel"] = "app";
    rejected.clear();
    absl::Status handled = replica->HandleBatch({Message(e)}, &rejected);
    ASSERT_TRUE(handled.ok()) << handled;
    EXPECT_TRUE(rejected.empty()) << rejected[0].reason;
    EXPECT_TRUE(Matched(*replica, "by-app"));
  }
  EXPECT_EQ(Grants("by-app"), 2);
}

// An approved edit whose trigger cannot become a rule (it reads an attribute its event type lacks:
// the campaigns service checks that only when its copy of the types is loaded) is refused, but
// the campaign's rule moves to that revision, held inactive: the previous version stops granting,
// and the campaign's later PAUSED/ENDED (which carry the same config) are never ignored. A replica
// that did not handle the changes takes the held revision from the database.
TEST_F(EventsReplicasTest, AnEditThatCannotBecomeARuleStopsTheRuleItReplaces) {
  const tenancy::Actor admin = tenancy::SystemActor("test");
  ASSERT_TRUE(a_->UpsertEventType(admin, Prepaid()).ok());
  const std::string good = "event.type == \"loan.prepaid\" && event.amount_fen >= 100000";
  const std::string bad = good + " && event.channel == \"app\"";
  ASSERT_TRUE(a_->HandleCampaignChange(CampaignChange(Changed("cmp-edit", good))).ok());
  ASSERT_TRUE(b_->HandleCampaignChange(CampaignChange(Changed("cmp-edit", good))).ok());
  std::vector<Rejected> rejected;
  ASSERT_TRUE(a_->HandleBatch({Message(Event("e-1"))}, &rejected).ok());
  EXPECT_EQ(Grants("campaign:cmp-edit"), 1);

  // Revision 2 (ONLINE) reads event.channel, which loan.prepaid does not have: refused (dead-
  // lettered with the reason), yet the rule is held at revision 2 and matches nothing.
  absl::Status edited = a_->HandleCampaignChange(CampaignChange(Changed("cmp-edit", bad, 2)));
  EXPECT_EQ(edited.code(), absl::StatusCode::kInvalidArgument) << edited;
  EXPECT_THAT(edited.message(), ::testing::HasSubstr("cannot become a rule"));
  ASSERT_EQ(a_->rules().Snapshot()->by_id.count("campaign:cmp-edit"), 1u);
  EXPECT_EQ(a_->rules().Snapshot()->by_id.at("campaign:cmp-edit")->proto.revision(), 2);
  EXPECT_FALSE(Matched(*a_, "campaign:cmp-edit"));
  rejected.clear();
  ASSERT_TRUE(a_->HandleBatch({Message(Event("e-2"))}, &rejected).ok());
  EXPECT_EQ(Grants("campaign:cmp-edit"), 1);

  // Replica B handled only revision 1: its next reload finds revision 2 held and stops too.
  b_->set_refresh_every(absl::ZeroDuration());
  rejected.clear();
  ASSERT_TRUE(b_->HandleBatch({Message(Event("e-3"))}, &rejected).ok());
  EXPECT_FALSE(Matched(*b_, "campaign:cmp-edit"));
  EXPECT_EQ(Grants("campaign:cmp-edit"), 1);

  // Revision 3 pauses it (with the same config): handled, never dead-lettered.
  absl::Status paused =
      a_->HandleCampaignChange(CampaignChange(Changed("cmp-edit", bad, 3, cpb::PAUSED)));
  EXPECT_TRUE(paused.ok()) << paused;
  EXPECT_EQ(a_->rules().Snapshot()->by_id.at("campaign:cmp-edit")->proto.revision(), 3);
  EXPECT_FALSE(Matched(*a_, "campaign:cmp-edit"));

  // A pause whose config cannot even be read as a rule (no event type pinned) still stops the
  // rule it pauses.
  ASSERT_TRUE(a_->HandleCampaignChange(CampaignChange(Changed("cmp-other", good))).ok());
  EXPECT_TRUE(Matched(*a_, "campaign:cmp-other"));
  absl::Status stopped = a_->HandleCampaignChange(
      CampaignChange(Changed("cmp-other", "event.amount_fen > 0", 2, cpb::PAUSED)));
  EXPECT_TRUE(stopped.ok()) << stopped;
  EXPECT_FALSE(Matched(*a_, "campaign:cmp-other"));
  rejected.clear();
  ASSERT_TRUE(a_->HandleBatch({Message(Event("e-4"))}, &rejected).ok());
  EXPECT_EQ(Grants("campaign:cmp-other"), 0);
  EXPECT_EQ(Grants("campaign:cmp-edit"), 1);
}

// A campaign ended by the scheduler at its window end (or early, by an operator) still grants for
// the events that occurred before its end and arrive after the ENDED change (files a day late,
// consumer lag), until late_events_s after the end; an event after the end, or during a pause,
// grants nothing, nor does any event once the campaign is archived.
TEST_F(EventsReplicasTest, EventsOfAnEndedCampaignThatArriveLateAreStillMatched) {
  const tenancy::Actor admin = tenancy::SystemActor("test");
  ASSERT_TRUE(a_->UpsertEventType(admin, Prepaid()).ok());
  const absl::Time now = absl::Now();
  const auto stamp = [](google::protobuf::Timestamp* ts, absl::Time t) {
    ts->set_seconds(absl::ToUnixSeconds(t));
  };
  const std::map<std::string, int64_t> amounts = {{"cmp-month", 100'001},
                                                  {"cmp-early", 100'002},
                                                  {"cmp-old", 100'003},
                                                  {"cmp-pause", 100'004},
                                                  {"cmp-stop", 100'005}};
  const auto amount = [&](const std::string& campaign) { return amounts.at(campaign); };
  const auto change = [&](const std::string& id, int64_t revision, cpb::CampaignState state,
                          absl::Time end, absl::Time changed_at) {
    // Each campaign matches only its own events (the amount names the campaign).
    cpb::CampaignChanged c = Changed(
        id, absl::StrCat("event.type == \"loan.prepaid\" && event.amount_fen == ", amount(id)),
        revision, state);
    stamp(c.mutable_config()->mutable_start_time(), now - absl::Hours(24 * 30));
    stamp(c.mutable_config()->mutable_end_time(), end);
    stamp(c.mutable_changed_at(), changed_at);
    return CampaignChange(c);
  };
  const auto event = [&](const std::string& campaign, const std::string& id,
                         absl::Time occurred_at) {
    pb::BusinessEvent e = Event(id);
    e.set_amount_fen(amount(campaign));
    stamp(e.mutable_occurred_at(), occurred_at);
    return Message(e);
  };
  const auto handle = [&](EventsService& replica, const kafka::IncomingMessage& m) {
    std::vector<Rejected> rejected;
    absl::Status s = replica.HandleBatch({m}, &rejected);
    EXPECT_TRUE(s.ok()) << s;
    EXPECT_TRUE(rejected.empty()) << rejected[0].reason;
  };

  // Ended by the scheduler at its window end (now).
  ASSERT_TRUE(
      a_->HandleCampaignChange(change("cmp-month", 1, cpb::ONLINE, now, now - absl::Hours(24 * 30)))
          .ok());
  ASSERT_TRUE(a_->HandleCampaignChange(change("cmp-month", 2, cpb::ENDED, now, now)).ok());
  handle(*a_, event("cmp-month", "m-late", now - absl::Minutes(5)));
  EXPECT_EQ(Grants("campaign:cmp-month"), 1);
  handle(*a_, event("cmp-month", "m-after", now + absl::Minutes(1)));
  EXPECT_EQ(Grants("campaign:cmp-month"), 1);
  // Another replica reads the ended rule from the database as it is held.
  b_->set_refresh_every(absl::ZeroDuration());
  handle(*b_, event("cmp-month", "m-late-b", now - absl::Minutes(6)));
  EXPECT_EQ(Grants("campaign:cmp-month"), 2);

  // Ended early by an operator, an hour ago: what occurred before then is late, not after.
  const absl::Time ended = now - absl::Hours(1);
  ASSERT_TRUE(a_->HandleCampaignChange(change("cmp-early", 1, cpb::ONLINE, now + absl::Hours(24),
                                              now - absl::Hours(48)))
                  .ok());
  ASSERT_TRUE(
      a_->HandleCampaignChange(change("cmp-early", 2, cpb::ENDED, now + absl::Hours(24), ended))
          .ok());
  handle(*a_, event("cmp-early", "e-before", ended - absl::Minutes(5)));
  handle(*a_, event("cmp-early", "e-after", ended + absl::Minutes(5)));
  EXPECT_EQ(Grants("campaign:cmp-early"), 1);

  // Archived: nothing more.
  ASSERT_TRUE(a_->HandleCampaignChange(change("cmp-month", 3, cpb::ARCHIVED, now, now)).ok());
  handle(*a_, event("cmp-month", "m-archived", now - absl::Minutes(7)));
  EXPECT_EQ(Grants("campaign:cmp-month"), 2);

  // Ended longer than late_events_s (3 days) ago: too late.
  const absl::Time long_ago = now - absl::Hours(24 * 4);
  ASSERT_TRUE(a_->HandleCampaignChange(
                    change("cmp-old", 1, cpb::ONLINE, long_ago, long_ago - absl::Hours(24)))
                  .ok());
  ASSERT_TRUE(a_->HandleCampaignChange(change("cmp-old", 2, cpb::ENDED, long_ago, long_ago)).ok());
  handle(*a_, event("cmp-old", "o-late", long_ago - absl::Minutes(5)));
  EXPECT_EQ(Grants("campaign:cmp-old"), 0);

  // Paused for an hour, resumed, then ended: what occurred during the pause never grants, even
  // when it arrives after the resume or the end.
  const absl::Time paused_at = now - absl::Hours(3), resumed_at = now - absl::Hours(2);
  const absl::Time end = now - absl::Minutes(30);
  ASSERT_TRUE(
      a_->HandleCampaignChange(change("cmp-pause", 1, cpb::ONLINE, end, now - absl::Hours(24)))
          .ok());
  ASSERT_TRUE(a_->HandleCampaignChange(change("cmp-pause", 2, cpb::PAUSED, end, paused_at)).ok());
  ASSERT_TRUE(a_->HandleCampaignChange(change("cmp-pause", 3, cpb::ONLINE, end, resumed_at)).ok());
  handle(*a_, event("cmp-pause", "p-during", paused_at + absl::Minutes(10)));
  handle(*a_, event("cmp-pause", "p-resumed", resumed_at + absl::Minutes(10)));
  EXPECT_EQ(Grants("campaign:cmp-pause"), 1);
  ASSERT_TRUE(a_->HandleCampaignChange(change("cmp-pause", 4, cpb::ENDED, end, end)).ok());
  handle(*a_, event("cmp-pause", "p-during-2", paused_at + absl::Minutes(20)));
  handle(*a_, event("cmp-pause", "p-before", paused_at - absl::Minutes(20)));
  EXPECT_EQ(Grants("campaign:cmp-pause"), 2);
  // Paused, then ended while paused: nothing that occurred after the pause.
  ASSERT_TRUE(a_->HandleCampaignChange(
                    change("cmp-stop", 1, cpb::ONLINE, now + absl::Hours(1), now - absl::Hours(24)))
                  .ok());
  ASSERT_TRUE(a_->HandleCampaignChange(
                    change("cmp-stop", 2, cpb::PAUSED, now + absl::Hours(1), now - absl::Hours(2)))
                  .ok());
  ASSERT_TRUE(a_->HandleCampaignChange(
                    change("cmp-stop", 3, cpb::ENDED, now + absl::Hours(1), now - absl::Hours(1)))
                  .ok());
  handle(*a_, event("cmp-stop", "s-paused", now - absl::Minutes(90)));
  handle(*a_, event("cmp-stop", "s-before", now - absl::Hours(3)));
  EXPECT_EQ(Grants("campaign:cmp-stop"), 1);
}

}  // namespace
}  // namespace mkt::events
