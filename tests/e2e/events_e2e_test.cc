// The events service end to end: mkt-rewards and mkt-events run as processes on fresh databases
// and the real Kafka; the test publishes business events as the core systems would, loads
// trigger rules through the admin gRPC API, and checks the grants in the ledger (balances and
// CheckIntegrity), replays, dead letters, reversals and explanations.
#include <librdkafka/rdkafkacpp.h>

#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <pqxx/pqxx>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "libs/core/ids.h"
#include "libs/core/status.h"
#include "libs/kafka/kafka.h"
#include "libs/kafka/outbox.h"
#include "libs/rpc/actor.h"
#include "libs/rpc/client.h"
#include "libs/rpc/server.h"
#include "libs/testing/testing.h"
#include "marketing/campaigns/v1/campaigns.pb.h"
#include "marketing/common/v1/envelope.pb.h"
#include "marketing/events/v1/business_event.pb.h"
#include "marketing/events/v1/events.grpc.pb.h"
#include "marketing/rewards/v1/ledger.grpc.pb.h"
#include "marketing/segments/v1/segments.grpc.pb.h"

namespace mkt {
namespace {

namespace cpb = ::marketing::campaigns::v1;
namespace epb = ::marketing::events::v1;
namespace rpb = ::marketing::rewards::v1;
namespace spb = ::marketing::segments::v1;

constexpr char kOrg[] = "bank-a";

// Starts mkt-rewards and mkt-events on fresh databases and fresh topics. Customer tags come from
// a tag file, or from the segments service at `segments_address` when one is given.
class Stack {
 public:
  explicit Stack(std::string segments_address = "")
      : segments_address_(std::move(segments_address)),
        events_topic_(testing::NewTopic("events-e2e.business", 3)),
        dead_letters_(testing::NewTopic("events-e2e.dlq", 1)),
        changes_(testing::NewTopic("events-e2e.changes", 1)) {
    rewards_port_ = testing::FreePort();
    const std::string rewards_log = "/tmp/events_e2e_rewards_" + RandomHex(4) + ".log";
    rewards_ = std::make_unique<testing::ChildProcess>(
        std::vector<std::string>{testing::BinDir() + "/services/rewards/mkt-rewards"},
        std::map<std::string, std::string>{
            {"MKT_REWARDS_PG_DSN", rewards_db_.dsn()},
            {"MKT_REWARDS_KAFKA_BOOTSTRAP", testing::KafkaBootstrap()},
            {"MKT_REWARDS_GRPC_ADDRESS", absl::StrCat("127.0.0.1:", rewards_port_)},
            {"MKT_REWARDS_METRICS_ADDRESS", absl::StrCat("127.0.0.1:", testing::FreePort())},
            {"MKT_REWARDS_EXPIRY_INTERVAL_S", "0"},
            // Decision 034: the rewards service funds the budgets of the campaigns published on
            // the test's own change topic.
            {"MKT_REWARDS_CAMPAIGN_CHANGES_TOPIC", changes_},
            {"MKT_REWARDS_CAMPAIGN_BUDGETS_GROUP", "events-e2e-budgets-" + RandomHex(4)},
            {"MKT_REWARDS_LOG_FORMAT", "json"}},
        rewards_log);
    ledger_ = rpb::Ledger::NewStub(rpc::Connect(absl::StrCat("127.0.0.1:", rewards_port_)));
    EXPECT_TRUE(testing::WaitForGrpcHealth(rpc::Connect(absl::StrCat("127.0.0.1:", rewards_port_)),
                                           absl::Seconds(30)))
        << testing::Tail(rewards_log, 30);
    tags_file_ = "/tmp/events_e2e_tags_" + RandomHex(4) + ".csv";
    std::ofstream(tags_file_) << "cust-1,age,30\ncust-2,age,40\ncust-3,age,25\n";
    StartEvents();
    auto producer = kafka::Producer::Create(
        {.bootstrap_servers = testing::KafkaBootstrap(), .client_id = "events-e2e"});
    EXPECT_TRUE(producer.ok());
    producer_ = *std::move(producer);
  }

  void StartEvents() {
    events_port_ = testing::FreePort();
    events_log_ = "/tmp/events_e2e_events_" + RandomHex(4) + ".log";
    events_ = std::make_unique<testing::ChildProcess>(
        std::vector<std::string>{testing::BinDir() + "/services/events/mkt-events"},
        std::map<std::string, std::string>{
            {"MKT_EVENTS_PG_DSN", events_db_.dsn()},
            {"MKT_EVENTS_KAFKA_BOOTSTRAP", testing::KafkaBootstrap()},
            {"MKT_EVENTS_GRPC_ADDRESS", absl::StrCat("127.0.0.1:", events_port_)},
            {"MKT_EVENTS_METRICS_ADDRESS", absl::StrCat("127.0.0.1:", testing::FreePort())},
            {"MKT_EVENTS_EVENTS_TOPIC", events_topic_},
            {"MKT_EVENTS_DEAD_LETTER_TOPIC", dead_letters_},
            {"MKT_EVENTS_CAMPAIGN_CHANGES_TOPIC", changes_},
            {"MKT_EVENTS_CONSUMER_GROUP", events_group_},
            {"MKT_EVENTS_REWARDS_ADDRESS", absl::StrCat("127.0.0.1:", rewards_port_)},
            segments_address_.empty()
                ? std::pair<const std::string, std::string>{"MKT_EVENTS_TAGS_FILE", tags_file_}
                : std::pair<const std::string, std::string>{"MKT_EVENTS_SEGMENTS_ADDRESS",
                                                            segments_address_},
            {"MKT_EVENTS_LOG_FORMAT", "json"}},
        events_log_);
    auto channel = rpc::Connect(absl::StrCat("127.0.0.1:", events_port_));
    admin_ = epb::EventsAdmin::NewStub(channel);
    EXPECT_TRUE(testing::WaitForGrpcHealth(channel, absl::Seconds(30)))
        << testing::Tail(events_log_, 30);
  }

  // ---- Calls ----
  template <class Resp, class Req, class Method>
  absl::StatusOr<Resp> Admin(Method method, const Req& request) {
    grpc::ClientContext context;
    rpc::PrepareClientContext(context, absl::Seconds(30), NewRequestId());
    rpc::AttachActor(context, tenancy::SystemActor("events-e2e"));
    Resp response;
    grpc::Status status = ((*admin_).*method)(&context, request, &response);
    if (!status.ok()) return rpc::FromGrpcStatus(status);
    return response;
  }

  absl::Status UpsertRule(const epb::TriggerRule& rule) {
    return Admin<epb::UpsertRuleResponse>(&epb::EventsAdmin::Stub::UpsertRule, rule).status();
  }

  std::map<rpb::Asset, int64_t> Balances(const std::string& customer) {
    rpb::GetBalancesRequest request;
    request.set_org_id(kOrg);
    request.set_customer_id(customer);
    grpc::ClientContext context;
    rpc::PrepareClientContext(context, absl::Seconds(10), NewRequestId());
    rpb::GetBalancesResponse response;
    std::map<rpb::Asset, int64_t> out;
    if (!ledger_->GetBalances(&context, request, &response).ok()) return out;
    for (const auto& a : response.accounts()) {
      if (a.balance() != 0) out[a.ref().asset()] = a.balance();
    }
    return out;
  }

  // Waits until every customer of `expected` has exactly those balances; returns the last seen.
  std::map<std::string, std::map<rpb::Asset, int64_t>> AwaitBalances(
      const std::map<std::string, std::map<rpb::Asset, int64_t>>& expected,
      absl::Duration timeout = absl::Seconds(40)) {
    std::map<std::string, std::map<rpb::Asset, int64_t>> seen;
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      seen.clear();
      for (const auto& [customer, balances] : expected) seen[customer] = Balances(customer);
      if (seen == expected) return seen;
      absl::SleepFor(absl::Milliseconds(200));
    }
    return seen;
  }

  void ExpectIntegrity() {
    grpc::ClientContext context;
    rpc::PrepareClientContext(context, absl::Seconds(60), NewRequestId());
    rpb::CheckIntegrityResponse response;
    ASSERT_TRUE(ledger_->CheckIntegrity(&context, rpb::CheckIntegrityRequest(), &response).ok());
    std::string checks;
    for (const auto& c : response.checks()) {
      absl::StrAppend(&checks, c.ok() ? "ok " : "FAILED ", c.name(), ": ", c.detail(), "\n");
    }
    EXPECT_TRUE(response.ok()) << checks;
  }

  // Publishes raw values keyed by customer.
  void PublishRaw(const std::vector<std::pair<std::string, std::string>>& keyed_values) {
    std::vector<kafka::OutgoingMessage> out;
    for (const auto& [key, value] : keyed_values) out.push_back({events_topic_, key, value, {}});
    ASSERT_TRUE(producer_->Publish(out, absl::Seconds(30)).ok());
  }

  static std::string Envelope(const epb::BusinessEvent& e) {
    return kafka::MakeEnvelope("events.BusinessEvent", e.org_id(), "", e).SerializeAsString();
  }

  // The source_event_id of the BusinessEvent in a serialized envelope ("" if there is none).
  static std::string SourceEventIdOf(const std::string& envelope_bytes) {
    ::marketing::common::v1::Envelope envelope;
    epb::BusinessEvent e;
    if (!envelope.ParseFromString(envelope_bytes) || !envelope.payload().UnpackTo(&e)) return "";
    return e.source_event_id();
  }

  void Publish(const std::vector<epb::BusinessEvent>& events) {
    std::vector<std::pair<std::string, std::string>> values;
    for (const auto& e : events) values.emplace_back(e.customer_id(), Envelope(e));
    PublishRaw(values);
  }

  // Reads the dead-letter topic from its start until `count` letters keyed `key` are found (or
  // `timeout` passes); returns the letters keyed `key` seen.
  std::vector<::marketing::common::v1::DeadLetter> DeadLetters(
      const std::string& key, size_t count, absl::Duration timeout = absl::Seconds(30)) {
    std::vector<::marketing::common::v1::DeadLetter> letters;
    std::string err;
    std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
    conf->set("bootstrap.servers", testing::KafkaBootstrap(), err);
    conf->set("group.id", "dlq-reader-" + RandomHex(4), err);
    conf->set("auto.offset.reset", "earliest", err);
    std::unique_ptr<RdKafka::KafkaConsumer> consumer(
        RdKafka::KafkaConsumer::create(conf.get(), err));
    EXPECT_NE(consumer, nullptr) << err;
    if (consumer == nullptr) return letters;
    consumer->subscribe({dead_letters_});
    const absl::Time deadline = absl::Now() + timeout;
    while (letters.size() < count && absl::Now() < deadline) {
      std::unique_ptr<RdKafka::Message> m(consumer->consume(200));
      if (m->err() != RdKafka::ERR_NO_ERROR) continue;
      ::marketing::common::v1::DeadLetter letter;
      EXPECT_TRUE(letter.ParseFromArray(m->payload(), static_cast<int>(m->len())));
      if (letter.key() == key) letters.push_back(std::move(letter));
    }
    consumer->close();
    return letters;
  }

  // True once `event_key` is in the customer's event log.
  bool AwaitLogged(const std::string& customer, const std::string& event_key,
                   absl::Duration timeout = absl::Seconds(30)) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      epb::ListCustomerEventsRequest request;
      request.set_customer_id(customer);
      request.set_limit(1000);
      auto r = Admin<epb::ListCustomerEventsResponse>(&epb::EventsAdmin::Stub::ListCustomerEvents,
                                                      request);
      if (r.ok()) {
        for (const auto& e : r->events()) {
          if (e.event_key() == event_key) return true;
        }
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
    return false;
  }

  std::string segments_address_;
  testing::TestDatabase rewards_db_;
  testing::TestDatabase events_db_;
  std::string events_topic_, dead_letters_, changes_;
  int rewards_port_ = 0, events_port_ = 0;
  std::string tags_file_, events_log_;
  // The business-events consumer group, kept across restarts of mkt-events (as in production).
  std::string events_group_ = "events-e2e-" + RandomHex(4);
  std::unique_ptr<testing::ChildProcess> rewards_;
  std::unique_ptr<testing::ChildProcess> events_;
  std::unique_ptr<rpb::Ledger::Stub> ledger_;
  std::unique_ptr<epb::EventsAdmin::Stub> admin_;
  std::unique_ptr<kafka::Producer> producer_;
};

// ---- Builders -----------------------------------------------------------------------------------

int counter = 0;

epb::BusinessEvent Event(const std::string& type, const std::string& customer,
                         int64_t amount_fen = 0, std::map<std::string, std::string> attrs = {},
                         const std::string& product = "") {
  epb::BusinessEvent e;
  e.set_source("core");
  e.set_source_event_id(absl::StrCat("ev-", RandomHex(6), "-", ++counter));
  e.set_event_type(type);
  e.set_customer_id(customer);
  e.set_org_id(kOrg);
  e.mutable_occurred_at()->set_seconds(absl::ToUnixSeconds(absl::Now()));
  e.set_amount_fen(amount_fen);
  e.set_product_code(product);
  for (auto& [k, v] : attrs) (*e.mutable_attributes())[k] = v;
  return e;
}

epb::RewardSpec Reward(rpb::Asset asset, int64_t quantity) {
  epb::RewardSpec r;
  r.set_asset(asset);
  r.set_quantity(quantity);
  return r;
}

epb::TriggerRule Rule(const std::string& id, const std::string& type, epb::RuleKind kind,
                      const std::string& condition, epb::RewardSpec reward) {
  epb::TriggerRule r;
  r.set_rule_id(id);
  r.set_campaign_id("camp-" + id);
  r.set_org_id(kOrg);
  r.set_event_type(type);
  r.set_kind(kind);
  r.set_window(epb::CAMPAIGN_WINDOW);
  r.set_condition(condition);
  *r.mutable_reward() = reward;
  r.set_active(true);
  r.set_revision(1);
  r.mutable_start_time()->set_seconds(absl::ToUnixSeconds(absl::Now() - absl::Hours(24)));
  r.mutable_end_time()->set_seconds(absl::ToUnixSeconds(absl::Now() + absl::Hours(24 * 30)));
  return r;
}

epb::TriggerRule SpendTiers(const std::string& id) {
  epb::TriggerRule r = Rule(id, "credit_card.spend", epb::CUMULATIVE_AMOUNT, "", {});
  r.clear_reward();
  r.set_window(epb::CALENDAR_MONTH);
  for (auto [threshold, points] : {std::pair<int64_t, int64_t>{100000, 100}, {300000, 500}}) {
    auto* t = r.add_tiers();
    t->set_threshold_fen(threshold);
    *t->mutable_reward() = Reward(rpb::POINTS, points);
  }
  return r;
}

class EventsE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { stack_ = new Stack(); }
  static void TearDownTestSuite() {
    delete stack_;
    stack_ = nullptr;
  }
  static Stack* stack_;
};
Stack* EventsE2eTest::stack_ = nullptr;

using Balances = std::map<std::string, std::map<rpb::Asset, int64_t>>;

TEST_F(EventsE2eTest, TwelveScenariosGrantExactlyOnceEvenWhenEveryEventIsPublishedThreeTimes) {
  Stack& s = *stack_;
  const std::vector<epb::TriggerRule> rules = {
      Rule("card-opened", "card.opened", epb::EVERY_MATCH, "", Reward(rpb::POINTS, 100)),
      Rule("card-activated", "card.activated", epb::FIRST_TIME, "", Reward(rpb::POINTS, 200)),
      Rule("loan-signed", "loan.contract_signed", epb::EVERY_MATCH, "tenor_months >= 12",
           Reward(rpb::LOTTERY_CHANCE, 1)),
      Rule(
          "loan-disbursed", "loan.disbursed", epb::EVERY_MATCH,
          R"(amount_fen >= 1000000 && product_code in ["LOAN_A","LOAN_B"] && customer.tag("age") < 35)",
          Reward(rpb::CASH_FEN, 500)),
      Rule("cc-approved", "credit_card.application_approved", epb::EVERY_MATCH, "",
           Reward(rpb::POINTS, 50)),
      Rule("cc-activated", "credit_card.activated", epb::FIRST_TIME, "", Reward(rpb::POINTS, 300)),
      Rule("cc-first-spend", "credit_card.first_spend", epb::EVERY_MATCH, "amount_fen >= 10000",
           Reward(rpb::CASH_FEN, 1000)),
      SpendTiers("cc-spend-tiers"),
      Rule("wealth", "wealth.subscribed", epb::EVERY_MATCH, "risk_level <= 3",
           Reward(rpb::POINTS, 88)),
      [] {
        auto r = Rule("deposits", "deposit.made", epb::COUNT_AT_LEAST, "",
                      Reward(rpb::LOTTERY_CHANCE, 2));
        r.set_count_threshold(3);
        return r;
      }(),
      Rule("mb-first-login", "mobile_banking.first_login", epb::FIRST_TIME, "",
           Reward(rpb::POINTS, 10)),
      [] {
        auto r = Rule("qr-pay", "payment.merchant_qr", epb::EVERY_MATCH, "amount_fen >= 500",
                      Reward(rpb::POINTS, 5));
        r.set_per_customer_total(2);
        return r;
      }(),
  };
  for (const auto& r : rules) ASSERT_TRUE(s.UpsertRule(r).ok()) << r.rule_id();

  std::vector<epb::BusinessEvent> events = {
      Event("card.opened", "cust-1"),
      Event("card.activated", "cust-1"),
      Event("card.activated", "cust-1"),
      Event("loan.contract_signed", "cust-1", 0, {{"contract_id", "K1"}, {"tenor_months", "24"}}),
      Event("loan.contract_signed", "cust-2", 0, {{"contract_id", "K2"}, {"tenor_months", "6"}}),
      Event("loan.disbursed", "cust-1", 1500000, {{"contract_id", "K1"}}, "LOAN_A"),
      Event("loan.disbursed", "cust-2", 1500000, {{"contract_id", "K2"}}, "LOAN_A"),
      Event("credit_card.application_approved", "cust-2"),
      Event("credit_card.activated", "cust-2"),
      Event("credit_card.first_spend", "cust-2", 20000),
      Event("credit_card.spend", "cust-3", 200000),  // out of order: the big one first
      Event("credit_card.spend", "cust-3", 60000),
      Event("credit_card.spend", "cust-3", 50000),
      Event("wealth.subscribed", "cust-3", 100000, {{"risk_level", "2"}}),
      Event("wealth.subscribed", "cust-3", 100000, {{"risk_level", "5"}}),
      Event("deposit.made", "cust-3", 1000),
      Event("deposit.made", "cust-3", 1000),
      Event("deposit.made", "cust-3", 1000),
      Event("deposit.made", "cust-3", 1000),
      Event("mobile_banking.first_login", "cust-3"),
      Event("payment.merchant_qr", "cust-1", 1000, {{"merchant_id", "M1"}}),
      Event("payment.merchant_qr", "cust-1", 1000, {{"merchant_id", "M1"}}),
      Event("payment.merchant_qr", "cust-1", 1000, {{"merchant_id", "M1"}}),
  };
  s.Publish(events);
  const Balances expected = {
      {"cust-1", {{rpb::POINTS, 310}, {rpb::LOTTERY_CHANCE, 1}, {rpb::CASH_FEN, 500}}},
      {"cust-2", {{rpb::POINTS, 350}, {rpb::CASH_FEN, 1000}}},
      {"cust-3", {{rpb::POINTS, 698}, {rpb::LOTTERY_CHANCE, 2}}},
  };
  EXPECT_EQ(s.AwaitBalances(expected), expected) << testing::Tail(s.events_log_, 20);
  s.ExpectIntegrity();

  // Every event three more times, then one event per customer that grants nothing: once it is
  // in the log, every replay before it in its partition was handled.
  for (int round = 0; round < 3; ++round) s.Publish(events);
  std::vector<epb::BusinessEvent> sentinels;
  for (const char* c : {"cust-1", "cust-2", "cust-3"}) {
    sentinels.push_back(
        Event("loan.contract_signed", c, 0, {{"contract_id", "S"}, {"tenor_months", "1"}}));
  }
  s.Publish(sentinels);
  for (const auto& e : sentinels) {
    ASSERT_TRUE(s.AwaitLogged(e.customer_id(), e.source() + ":" + e.source_event_id()));
  }
  absl::SleepFor(absl::Seconds(1));  // let the grant sender finish any (wrong) pass
  EXPECT_EQ(s.AwaitBalances(expected, absl::Seconds(1)), expected);
  s.ExpectIntegrity();
}

TEST_F(EventsE2eTest, RefundBelowATierClawsItBackAndCancellationClawsBackTheGrant) {
  Stack& s = *stack_;
  ASSERT_TRUE(s.UpsertRule(SpendTiers("refund-tiers")).ok());
  auto loan = Rule("cancel-loan", "loan.disbursed", epb::EVERY_MATCH, "amount_fen >= 100",
                   Reward(rpb::CASH_FEN, 800));
  ASSERT_TRUE(s.UpsertRule(loan).ok());
  epb::BusinessEvent spend = Event("credit_card.spend", "cust-4", 320000);
  epb::BusinessEvent disbursed = Event("loan.disbursed", "cust-5", 500000, {{"contract_id", "K9"}});
  s.Publish({spend, disbursed});
  // Both tier rules (refund-tiers and the first test's cc-spend-tiers, if loaded) grant 600.
  Balances before = s.AwaitBalances({{"cust-5", {{rpb::CASH_FEN, 800}}}});
  ASSERT_EQ(before["cust-5"][rpb::CASH_FEN], 800);
  const int64_t points = s.Balances("cust-4")[rpb::POINTS];
  ASSERT_GT(points, 0);
  const int rules = static_cast<int>(points / 600);

  epb::BusinessEvent refund = Event("credit_card.refunded", "cust-4", 30000,
                                    {{"original_event_id", spend.source_event_id()}});
  refund.set_source(spend.source());
  epb::BusinessEvent cancel =
      Event("loan.cancelled", "cust-5", 0, {{"original_event_id", disbursed.source_event_id()}});
  s.Publish({refund, cancel, refund, cancel});
  // 320000 - 30000 = 290000 < 300000: tier 2 (500 points) is clawed back for each tier rule.
  const Balances expected = {{"cust-4", {{rpb::POINTS, 100 * rules}}}, {"cust-5", {}}};
  EXPECT_EQ(s.AwaitBalances(expected), expected) << testing::Tail(s.events_log_, 20);
  s.ExpectIntegrity();
}

// Decision 031: an event campaign configured in the campaigns service says which matching events
// grant (kind, window, count threshold, tiers); its CampaignChanged becomes that rule, not an
// every-match one. Event types of this test's own keep other tests' rules from matching.
TEST_F(EventsE2eTest, AnEventCampaignsCountAndTierTriggersBecomeItsRule) {
  Stack& s = *stack_;
  const std::string suffix = RandomHex(3);
  const std::string spend_type = "e2e_spend_" + suffix, visit_type = "e2e_visit_" + suffix;
  for (const std::string& name : {spend_type, visit_type}) {
    epb::EventType type;
    type.set_name(name);
    type.set_description("a test's own event type");
    type.set_amount_required(name == spend_type);
    ASSERT_TRUE(
        s.Admin<epb::EventType>(&epb::EventsAdmin::Stub::UpsertEventType, type).status().ok());
  }
  auto publish_campaign = [&](const std::string& id, const cpb::CampaignConfig& config) {
    cpb::CampaignChanged change;
    change.set_campaign_id(id);
    change.set_org_id(kOrg);
    change.set_revision(1);
    change.set_version(1);
    change.set_state(cpb::ONLINE);
    *change.mutable_config() = config;
    const std::string value =
        kafka::MakeEnvelope("campaigns.CampaignChanged", kOrg, "", change).SerializeAsString();
    ASSERT_TRUE(s.producer_->Publish({{s.changes_, id, value, {}}}, absl::Seconds(30)).ok());
  };
  cpb::CampaignConfig base;
  base.set_name("e2e trigger");
  base.set_type(cpb::EVENT_TRIGGER);
  base.mutable_start_time()->set_seconds(absl::ToUnixSeconds(absl::Now() - absl::Hours(24)));
  base.mutable_end_time()->set_seconds(absl::ToUnixSeconds(absl::Now() + absl::Hours(24 * 30)));
  // Spend 1,000 and 3,000 yuan this month: 100 and 500 points.
  cpb::CampaignConfig tiers = base;
  tiers.set_trigger_expression("event.type == \"" + spend_type + "\"");
  tiers.mutable_event_trigger()->set_kind(cpb::TRIGGER_CUMULATIVE_AMOUNT);
  tiers.mutable_event_trigger()->set_window(cpb::TRIGGER_WINDOW_CALENDAR_MONTH);
  for (auto [threshold, points] : {std::pair<int64_t, int64_t>{100000, 100}, {300000, 500}}) {
    cpb::TriggerTier* tier = tiers.mutable_event_trigger()->add_tiers();
    tier->set_threshold_fen(threshold);
    tier->mutable_reward()->set_benefit_template_id("POINTS");
    tier->mutable_reward()->set_kind(cpb::REWARD_KIND_POINTS);
    tier->mutable_reward()->set_quantity(points);
  }
  // The third visit grants one lottery chance, once.
  cpb::CampaignConfig visits = base;
  visits.set_trigger_expression("event.type == \"" + visit_type + "\"");
  visits.mutable_event_trigger()->set_kind(cpb::TRIGGER_COUNT_AT_LEAST);
  visits.mutable_event_trigger()->set_count_threshold(3);
  cpb::RewardItem* chance = visits.add_rewards();
  chance->set_benefit_template_id("LOTTERY_CHANCE");
  chance->set_kind(cpb::REWARD_KIND_LOTTERY_CHANCE);
  chance->set_quantity(1);
  const std::string tiers_id = "camp-tiers-" + suffix, visits_id = "camp-visits-" + suffix;
  publish_campaign(tiers_id, tiers);
  publish_campaign(visits_id, visits);

  std::map<std::string, epb::TriggerRule> rules;
  for (const absl::Time deadline = absl::Now() + absl::Seconds(30);
       rules.size() < 2 && absl::Now() < deadline; absl::SleepFor(absl::Milliseconds(200))) {
    for (const std::string& id : {tiers_id, visits_id}) {
      epb::ListRulesRequest request;
      request.set_campaign_id(id);
      auto listed = s.Admin<epb::ListRulesResponse>(&epb::EventsAdmin::Stub::ListRules, request);
      if (listed.ok() && listed->rules_size() == 1) rules[id] = listed->rules(0);
    }
  }
  ASSERT_EQ(rules.size(), 2u) << testing::Tail(s.events_log_, 20);
  EXPECT_EQ(rules[tiers_id].kind(), epb::CUMULATIVE_AMOUNT);
  EXPECT_EQ(rules[tiers_id].window(), epb::CALENDAR_MONTH);
  ASSERT_EQ(rules[tiers_id].tiers_size(), 2);
  EXPECT_EQ(rules[tiers_id].tiers(1).threshold_fen(), 300000);
  EXPECT_EQ(rules[tiers_id].tiers(1).reward().asset(), rpb::POINTS);
  EXPECT_EQ(rules[tiers_id].tiers(1).reward().quantity(), 500);
  EXPECT_EQ(rules[visits_id].kind(), epb::COUNT_AT_LEAST);
  EXPECT_EQ(rules[visits_id].count_threshold(), 3);
  EXPECT_EQ(rules[visits_id].reward().asset(), rpb::LOTTERY_CHANCE);

  const std::string spender = "cust-31-" + suffix, visitor = "cust-32-" + suffix;
  s.Publish({Event(spend_type, spender, 60000), Event(visit_type, visitor),
             Event(spend_type, spender, 50000), Event(visit_type, visitor)});
  // 1,100 yuan spent: the first tier; two visits: nothing yet.
  Balances expected = {{spender, {{rpb::POINTS, 100}}}, {visitor, {}}};
  EXPECT_EQ(s.AwaitBalances(expected), expected) << testing::Tail(s.events_log_, 20);
  const epb::BusinessEvent fourth = Event(visit_type, visitor);
  s.Publish({Event(spend_type, spender, 250000), Event(visit_type, visitor), fourth});
  // 3,600 yuan: the second tier too; the third visit grants.
  expected = {{spender, {{rpb::POINTS, 600}}}, {visitor, {{rpb::LOTTERY_CHANCE, 1}}}};
  EXPECT_EQ(s.AwaitBalances(expected), expected) << testing::Tail(s.events_log_, 20);
  // The fourth visit matched and granted nothing: the window's grant was given.
  const std::string fourth_key = fourth.source() + ":" + fourth.source_event_id();
  ASSERT_TRUE(s.AwaitLogged(visitor, fourth_key));
  epb::ExplainRequest why;
  why.set_event_key(fourth_key);
  why.set_rule_id(rules[visits_id].rule_id());
  auto explained = s.Admin<epb::ExplainResponse>(&epb::EventsAdmin::Stub::Explain, why);
  ASSERT_TRUE(explained.ok()) << explained.status();
  EXPECT_TRUE(explained->condition_holds());
  EXPECT_FALSE(explained->granted()) << explained->summary();
  EXPECT_EQ(explained->aggregate_count(), 4) << explained->summary();
  EXPECT_EQ(s.Balances(visitor), expected[visitor]);
  s.ExpectIntegrity();
}

// Decision 034: an event campaign's approved version prices its reward (here 1 fen a point), the
// rewards service funds its budget up to the cap when it is published, and each grant charges
// the budget. Past the cap the ledger refuses: the grant is recorded REJECTED with
// BUDGET_EXHAUSTED, not retried, and the customer gets nothing. Raising the cap in a new version
// funds the difference, and the next event is granted again.
TEST_F(EventsE2eTest, AnEventCampaignSpendsItsFundedBudgetAndThenRecordsBudgetExhausted) {
  Stack& s = *stack_;
  const std::string suffix = RandomHex(3);
  const std::string type = "e2e_budget_" + suffix, campaign = "camp-budget-" + suffix;
  epb::EventType event_type;
  event_type.set_name(type);
  event_type.set_description("a test's own event type");
  ASSERT_TRUE(
      s.Admin<epb::EventType>(&epb::EventsAdmin::Stub::UpsertEventType, event_type).status().ok());
  auto publish = [&](int64_t revision, int64_t cap_fen) {
    cpb::CampaignChanged change;
    change.set_campaign_id(campaign);
    change.set_org_id(kOrg);
    change.set_revision(revision);
    change.set_version(revision);
    change.set_state(cpb::ONLINE);
    cpb::CampaignConfig* config = change.mutable_config();
    config->set_name("e2e budget");
    config->set_type(cpb::EVENT_TRIGGER);
    config->mutable_start_time()->set_seconds(absl::ToUnixSeconds(absl::Now() - absl::Hours(24)));
    config->mutable_end_time()->set_seconds(
        absl::ToUnixSeconds(absl::Now() + absl::Hours(24 * 30)));
    config->set_trigger_expression("event.type == \"" + type + "\"");
    config->set_budget_cap_fen(cap_fen);
    // One grant per customer: a refused grant does not use it up (decision 010, amended).
    config->mutable_limits()->set_per_customer_total(1);
    cpb::RewardItem* reward = config->add_rewards();
    reward->set_benefit_template_id("POINTS");
    reward->set_kind(cpb::REWARD_KIND_POINTS);
    reward->set_quantity(100);
    reward->set_unit_cost_fen(1);  // as the campaigns service sets it on submission
    const std::string value =
        kafka::MakeEnvelope("campaigns.CampaignChanged", kOrg, "", change).SerializeAsString();
    ASSERT_TRUE(s.producer_->Publish({{s.changes_, campaign, value, {}}}, absl::Seconds(30)).ok());
  };
  auto budget = [&]() -> int64_t {
    rpb::GetAccountRequest request;
    request.mutable_ref()->set_org_id(kOrg);
    request.mutable_ref()->set_asset(rpb::BUDGET_FEN);
    request.mutable_ref()->set_owner_kind(rpb::CAMPAIGN);
    request.mutable_ref()->set_owner_id(campaign);
    grpc::ClientContext context;
    rpc::PrepareClientContext(context, absl::Seconds(10), NewRequestId());
    rpb::Account account;
    return s.ledger_->GetAccount(&context, request, &account).ok() ? account.balance() : -1;
  };
  auto await_budget = [&](int64_t fen) {
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (budget() != fen && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(100));
    return budget();
  };
  auto rule_revision = [&]() -> int64_t {
    epb::ListRulesRequest request;
    request.set_campaign_id(campaign);
    auto listed = s.Admin<epb::ListRulesResponse>(&epb::EventsAdmin::Stub::ListRules, request);
    return listed.ok() && listed->rules_size() == 1 ? listed->rules(0).revision() : 0;
  };
  auto await_rule = [&](int64_t revision) {
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (rule_revision() != revision && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(100));
    }
    return rule_revision();
  };
  // The state and reason of the grant an event made under the campaign's rule, once settled.
  auto outcome = [&](const epb::BusinessEvent& e) -> std::pair<std::string, std::string> {
    epb::ExplainRequest request;
    request.set_event_key(e.source() + ":" + e.source_event_id());
    request.set_rule_id("campaign:" + campaign);
    std::pair<std::string, std::string> seen;
    for (const absl::Time deadline = absl::Now() + absl::Seconds(30); absl::Now() < deadline;
         absl::SleepFor(absl::Milliseconds(100))) {
      auto why = s.Admin<epb::ExplainResponse>(&epb::EventsAdmin::Stub::Explain, request);
      if (!why.ok() || why->grants_size() != 1) continue;
      seen = {why->grants(0).state(), why->grants(0).reason()};
      if (seen.first != "pending") break;
    }
    return seen;
  };

  // Published with a cap of 2.5 yuan: 250 fen, two grants of 100 points at 1 fen each.
  publish(1, 250);
  ASSERT_EQ(await_rule(1), 1) << testing::Tail(s.events_log_, 20);
  ASSERT_EQ(await_budget(250), 250);
  const std::string c1 = "cust-41-" + suffix, c2 = "cust-42-" + suffix, c3 = "cust-43-" + suffix;
  const epb::BusinessEvent first = Event(type, c1), second = Event(type, c2);
  s.Publish({first});
  EXPECT_EQ(outcome(first).first, "granted");
  s.Publish({second});
  EXPECT_EQ(outcome(second).first, "granted");
  EXPECT_EQ(await_budget(50), 50);
  const epb::BusinessEvent third = Event(type, c3);
  s.Publish({third});
  const auto [state, reason] = outcome(third);
  EXPECT_EQ(state, "rejected");
  EXPECT_NE(reason.find("BUDGET_EXHAUSTED"), std::string::npos) << reason;
  Balances expected = {{c1, {{rpb::POINTS, 100}}}, {c2, {{rpb::POINTS, 100}}}, {c3, {}}};
  EXPECT_EQ(s.AwaitBalances(expected), expected);
  EXPECT_EQ(budget(), 50);

  // An approved edit raises the cap to 4.5 yuan: 200 fen more, and the next event is granted:
  // the refused grant gave back c3's one grant.
  publish(2, 450);
  ASSERT_EQ(await_rule(2), 2);
  EXPECT_EQ(await_budget(250), 250);
  const epb::BusinessEvent fourth = Event(type, c3);
  s.Publish({fourth});
  EXPECT_EQ(outcome(fourth).first, "granted");
  expected[c3] = {{rpb::POINTS, 100}};
  EXPECT_EQ(s.AwaitBalances(expected), expected);
  EXPECT_EQ(budget(), 150);
  // The refused grant stays refused: not retried behind the operator's back.
  EXPECT_EQ(outcome(third).first, "rejected");
  s.ExpectIntegrity();
}

// A restart after campaign changes were published while mkt-events was down: the rules stored in
// its database are out of date (one campaign went ONLINE, another was PAUSED meanwhile), and the
// business events published meanwhile wait on their topic. They must be matched against the
// rules as changed, never against the stored ones: every event of the campaign that went online
// grants exactly once, none of the paused one's does. Many earlier changes (other campaigns) sit
// in front of the two that matter, so that replaying the topic takes a while.
TEST(EventsRestartE2eTest, EventsPublishedWhileDownAreMatchedAgainstTheRulesChangedMeanwhile) {
  Stack s;
  const std::string suffix = RandomHex(3);
  const std::string online_id = "camp-late-online-" + suffix, paused_id = "camp-paused-" + suffix;
  auto change = [&](const std::string& id, int64_t revision, cpb::CampaignState state,
                    const std::string& type, const std::string& asset) {
    cpb::CampaignChanged c;
    c.set_campaign_id(id);
    c.set_org_id(kOrg);
    c.set_revision(revision);
    c.set_version(revision);
    c.set_state(state);
    cpb::CampaignConfig* config = c.mutable_config();
    config->set_name("e2e restart");
    config->set_type(cpb::EVENT_TRIGGER);
    config->mutable_start_time()->set_seconds(absl::ToUnixSeconds(absl::Now() - absl::Hours(24)));
    config->mutable_end_time()->set_seconds(
        absl::ToUnixSeconds(absl::Now() + absl::Hours(24 * 30)));
    config->set_trigger_expression("event.type == \"" + type + "\"");
    cpb::RewardItem* reward = config->add_rewards();
    reward->set_benefit_template_id(asset);
    reward->set_quantity(asset == "POINTS" ? 10 : 1);
    return kafka::OutgoingMessage{
        s.changes_,
        id,
        kafka::MakeEnvelope("campaigns.CampaignChanged", kOrg, "", c).SerializeAsString(),
        {}};
  };
  auto revision_of = [&](const std::string& id) -> std::pair<int64_t, bool> {
    epb::ListRulesRequest request;
    request.set_campaign_id(id);
    auto listed = s.Admin<epb::ListRulesResponse>(&epb::EventsAdmin::Stub::ListRules, request);
    if (!listed.ok() || listed->rules_size() != 1) return {0, false};
    return {listed->rules(0).revision(), listed->rules(0).active()};
  };

  // Other campaigns' changes first (scheduled, so they match nothing), then the two campaigns:
  // one scheduled (its rule stored inactive), one online.
  std::vector<kafka::OutgoingMessage> before;
  for (int i = 0; i < 1500; ++i) {
    before.push_back(change(absl::StrCat("camp-other-", suffix, "-", i), 1, cpb::SCHEDULED,
                            "card.opened", "POINTS"));
  }
  before.push_back(change(online_id, 1, cpb::SCHEDULED, "card.opened", "POINTS"));
  before.push_back(change(paused_id, 1, cpb::ONLINE, "card.activated", "LOTTERY_CHANCE"));
  ASSERT_TRUE(s.producer_->Publish(before, absl::Seconds(60)).ok());
  for (const absl::Time deadline = absl::Now() + absl::Seconds(60);
       (revision_of(online_id).first != 1 || revision_of(paused_id).first != 1) &&
       absl::Now() < deadline;) {
    absl::SleepFor(absl::Milliseconds(200));
  }
  ASSERT_EQ(revision_of(online_id), std::make_pair(int64_t{1}, false))
      << testing::Tail(s.events_log_, 20);
  ASSERT_EQ(revision_of(paused_id), std::make_pair(int64_t{1}, true));
  const std::string early = "cust-r0-" + suffix;
  s.Publish({Event("card.activated", early)});
  Balances expected = {{early, {{rpb::LOTTERY_CHANCE, 1}}}};
  ASSERT_EQ(s.AwaitBalances(expected), expected) << testing::Tail(s.events_log_, 20);

  // mkt-events is down while the first campaign goes online and the second is paused, and
  // business events keep coming.
  ASSERT_EQ(s.events_->Kill(SIGTERM), 0);
  ASSERT_TRUE(s.producer_
                  ->Publish({change(online_id, 2, cpb::ONLINE, "card.opened", "POINTS"),
                             change(paused_id, 2, cpb::PAUSED, "card.activated", "LOTTERY_CHANCE")},
                            absl::Seconds(30))
                  .ok());
  std::vector<epb::BusinessEvent> events;
  for (int i = 1; i <= 10; ++i) {
    const std::string customer = absl::StrCat("cust-r", i, "-", suffix);
    events.push_back(Event("card.opened", customer));
    events.push_back(Event("card.activated", customer));
    expected[customer] = {{rpb::POINTS, 10}};
  }
  s.Publish(events);

  ASSERT_NO_FATAL_FAILURE(s.StartEvents());
  for (const auto& e : events) {
    ASSERT_TRUE(
        s.AwaitLogged(e.customer_id(), e.source() + ":" + e.source_event_id(), absl::Seconds(60)))
        << testing::Tail(s.events_log_, 20);
  }
  // Every event of the campaign that went online granted, once; none of the paused one's.
  EXPECT_EQ(s.AwaitBalances(expected), expected) << testing::Tail(s.events_log_, 20);
  absl::SleepFor(absl::Seconds(1));  // let the grant sender finish any (wrong) pass
  EXPECT_EQ(s.AwaitBalances(expected, absl::Seconds(1)), expected);
  EXPECT_EQ(revision_of(online_id), std::make_pair(int64_t{2}, true));
  EXPECT_EQ(revision_of(paused_id), std::make_pair(int64_t{2}, false));
  s.ExpectIntegrity();
}

// Decision 030: a reversal that arrives before the event it undoes waits for it, and is applied
// right after it, whether the original comes in a later batch or later in the same one.
TEST_F(EventsE2eTest, AReversalThatArrivesBeforeItsOriginalIsAppliedWhenTheOriginalComes) {
  Stack& s = *stack_;
  auto loan = Rule("early-cancel", "loan.disbursed", epb::EVERY_MATCH, "amount_fen >= 100",
                   Reward(rpb::CASH_FEN, 700));
  ASSERT_TRUE(s.UpsertRule(loan).ok());
  ASSERT_TRUE(s.UpsertRule(SpendTiers("early-refund-tiers")).ok());

  // The cancellation first, alone; the loan it cancels once the cancellation is in the log.
  epb::BusinessEvent disbursed =
      Event("loan.disbursed", "cust-18", 500000, {{"contract_id", "K8"}});
  epb::BusinessEvent cancel =
      Event("loan.cancelled", "cust-18", 0, {{"original_event_id", disbursed.source_event_id()}});
  s.Publish({cancel});
  ASSERT_TRUE(s.AwaitLogged("cust-18", "core:" + cancel.source_event_id()));
  s.Publish({disbursed, cancel});  // the cancellation again: a replay, no second effect
  ASSERT_TRUE(s.AwaitLogged("cust-18", "core:" + disbursed.source_event_id()));

  // The loan's grant ends clawed back (never sent, or sent and reversed), never kept.
  epb::ExplainRequest request;
  request.set_rule_id("early-cancel");
  request.set_event_key("core:" + disbursed.source_event_id());
  std::string state;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  do {
    auto why = s.Admin<epb::ExplainResponse>(&epb::EventsAdmin::Stub::Explain, request);
    ASSERT_TRUE(why.ok()) << why.status();
    ASSERT_LE(why->grants_size(), 1);
    state = why->grants_size() == 1 ? why->grants(0).state() : "";
    if (state == "cancelled" || state == "reversed" || state == "granted") break;
    absl::SleepFor(absl::Milliseconds(100));
  } while (absl::Now() < deadline);
  EXPECT_TRUE(state == "cancelled" || state == "reversed")
      << "the loan's grant is '" << state << "'\n"
      << testing::Tail(s.events_log_, 20);

  // A refund published before its spend, in one call (one batch or two): 330000 - 40000 = 290000
  // keeps the first tier (100 points) and not the second (500) of every spend-tier rule.
  epb::BusinessEvent spend = Event("credit_card.spend", "cust-19", 330000);
  epb::BusinessEvent refund = Event("credit_card.refunded", "cust-19", 40000,
                                    {{"original_event_id", spend.source_event_id()}});
  refund.set_source(spend.source());
  s.Publish({refund, spend});
  ASSERT_TRUE(s.AwaitLogged("cust-19", "core:" + spend.source_event_id()));
  epb::ExplainRequest tiers;
  tiers.set_event_key("core:" + spend.source_event_id());
  // Every spend-tier rule loaded (this test's, and the other tests' when they ran first) grants
  // 100 points for the first tier.
  int rules = 0;
  for (const char* id : {"early-refund-tiers", "refund-tiers", "cc-spend-tiers"}) {
    tiers.set_rule_id(id);
    auto r = s.Admin<epb::ExplainResponse>(&epb::EventsAdmin::Stub::Explain, tiers);
    if (r.ok() && r->grants_size() > 0) ++rules;
  }
  ASSERT_GE(rules, 1);
  const Balances expected = {{"cust-18", {}}, {"cust-19", {{rpb::POINTS, 100 * rules}}}};
  EXPECT_EQ(s.AwaitBalances(expected), expected) << testing::Tail(s.events_log_, 20);
  // Settled: nothing more arrives later.
  absl::SleepFor(absl::Seconds(1));
  EXPECT_EQ(s.AwaitBalances(expected, absl::Seconds(1)), expected);
  s.ExpectIntegrity();
}

TEST_F(EventsE2eTest, BadEventsAreDeadLetteredWithAReasonAndTheConsumerGoesOn) {
  Stack& s = *stack_;
  auto unknown = Event("card.swallowed", "cust-7");
  auto missing = Event("loan.disbursed", "cust-7", 1000);  // no contract_id
  auto wrong = Event("loan.contract_signed", "cust-7", 0,
                     {{"contract_id", "K"}, {"tenor_months", "twelve"}});
  auto big = Event("card.opened", "cust-7");
  // Near the producer's message.max.bytes: wrapped whole in its dead letter it would be refused,
  // and the partition would stall; its letter carries the first 256 KiB.
  (*big.mutable_attributes())["card_level"] = std::string(990000, 'x');
  s.PublishRaw({{"cust-7", Stack::Envelope(unknown)},
                {"cust-7", Stack::Envelope(missing)},
                {"cust-7", Stack::Envelope(wrong)},
                {"cust-7", Stack::Envelope(big)},
                {"cust-7", "this is not protobuf \xff\xff\xff"}});
  auto good = Event("loan.contract_signed", "cust-7", 0, {{"contract_id", "K"}});
  s.Publish({good});
  EXPECT_TRUE(s.AwaitLogged("cust-7", good.source() + ":" + good.source_event_id()));

  // Read the dead-letter topic from the start (the letters of this test are keyed cust-7).
  std::vector<std::string> reasons;
  for (const auto& letter : s.DeadLetters("cust-7", 5)) {
    reasons.push_back(letter.reason());
    if (letter.reason().find("oversized") != std::string::npos) {
      EXPECT_EQ(letter.value().size(), kafka::kDeadLetterValueLimit);
    }
  }
  ASSERT_EQ(reasons.size(), 5u);
  std::string all;
  for (const auto& r : reasons) absl::StrAppend(&all, r, "\n");
  for (const char* want : {"unknown event type", "required attribute contract_id",
                           "is not an integer", "oversized", "not a protobuf envelope"}) {
    EXPECT_NE(all.find(want), std::string::npos) << want << " not in:\n" << all;
  }
}

// Core systems publish protobuf straight to the topic. Text PostgreSQL cannot hold (a NUL cuts a
// libpq parameter short, jsonb refuses \u0000) or an amount whose sums would overflow used to pass
// validation and fail the batch's transaction for ever, stopping the partition: now each such
// event is dead-lettered with a reason naming the field, and the events after it in the same
// partition (same key) are processed.
TEST_F(EventsE2eTest, EventsPostgresqlCannotHoldAreDeadLetteredAndTheirPartitionGoesOn) {
  Stack& s = *stack_;
  const std::string key = "cust-8";
  const std::string nul(1, '\0');
  auto nul_attribute =
      Event("credit_card.spend", key, 1000, {{"merchant_category", "caf" + nul + "e"}});
  auto nul_customer = Event("card.opened", key + nul);
  auto nul_product = Event("credit_card.spend", key, 1000, {}, "P" + nul);
  auto too_much = Event("credit_card.spend", key, std::numeric_limits<int64_t>::max());
  auto escape = Event("card.opened", key);
  escape.set_source_event_id(escape.source_event_id() + "\x1b[2J");
  // Malformed UTF-8 in a proto3 string: protobuf's parser refuses the payload.
  auto latin1 = Event("credit_card.spend", key, 1000, {{"merchant_category", "caf\xe9"}});
  auto good1 = Event("card.opened", key);
  auto good2 = Event("credit_card.spend", key, 1000, {{"merchant_category", "餐饮\t美食"}});
  s.PublishRaw({{key, Stack::Envelope(nul_attribute)},
                {key, Stack::Envelope(good1)},
                {key, Stack::Envelope(nul_customer)},
                {key, Stack::Envelope(nul_product)},
                {key, Stack::Envelope(too_much)},
                {key, Stack::Envelope(escape)},
                {key, Stack::Envelope(latin1)},
                {key, Stack::Envelope(good2)}});
  EXPECT_TRUE(s.AwaitLogged(key, good1.source() + ":" + good1.source_event_id()))
      << testing::Tail(s.events_log_, 20);
  EXPECT_TRUE(s.AwaitLogged(key, good2.source() + ":" + good2.source_event_id()))
      << testing::Tail(s.events_log_, 20);

  auto letters = s.DeadLetters(key, 6);
  ASSERT_EQ(letters.size(), 6u);
  std::string all;
  for (const auto& l : letters) absl::StrAppend(&all, l.reason(), "\n");
  for (const char* want :
       {"attribute merchant_category contains a NUL character (U+0000) at byte 3",
        "customer_id contains a NUL character (U+0000) at byte 6",
        "product_code contains a NUL character (U+0000) at byte 1",
        "amount_fen 9223372036854775807 is above the largest amount",
        "source_event_id contains the control character U+001B", "not well-formed UTF-8"}) {
    EXPECT_NE(all.find(want), std::string::npos) << want << " not in:\n" << all;
  }
  // The letters carry the message as it came (in partition order), for an operator to replay.
  EXPECT_EQ(Stack::SourceEventIdOf(letters[0].value()), nul_attribute.source_event_id());
  EXPECT_EQ(letters[0].topic(), s.events_topic_);
}

// A refusal validation cannot foresee (here the events database itself refuses one event's key
// with a data exception, SQLSTATE 22023, through a trigger the test adds): the batch is applied in
// parts, the refused event is dead-lettered with the SQLSTATE and message, and every other event
// of the batch and after it grants exactly once.
TEST_F(EventsE2eTest, AnEventTheDatabaseRefusesIsDeadLetteredAloneAndTheRestOfItsBatchApplied) {
  Stack& s = *stack_;
  {
    pqxx::connection conn(s.events_db_.dsn());
    pqxx::work tx(conn);
    tx.exec(R"sql(
      CREATE FUNCTION refuse_marked() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF NEW.event_key LIKE '%refused-by-db%' THEN
          RAISE EXCEPTION 'value refused for the test' USING ERRCODE = '22023';
        END IF;
        RETURN NEW;
      END $$;
      CREATE TRIGGER refuse_marked BEFORE INSERT ON event_keys
        FOR EACH ROW EXECUTE FUNCTION refuse_marked();)sql");
    tx.commit();
  }
  ASSERT_TRUE(s.UpsertRule(Rule("db-refusal", "payment.merchant_qr", epb::EVERY_MATCH,
                                R"(merchant_id == "M-DB")", Reward(rpb::POINTS, 7)))
                  .ok());
  const std::string key = "cust-9";
  std::vector<epb::BusinessEvent> events;
  for (int i = 0; i < 6; ++i) {
    events.push_back(Event("payment.merchant_qr", key, 100, {{"merchant_id", "M-DB"}}));
  }
  events[2].set_source_event_id("refused-by-db-" + RandomHex(4));
  s.Publish(events);
  const Balances expected = {{key, {{rpb::POINTS, 35}}}};
  EXPECT_EQ(s.AwaitBalances(expected), expected) << testing::Tail(s.events_log_, 20);
  auto letters = s.DeadLetters(key, 1);
  ASSERT_EQ(letters.size(), 1u);
  EXPECT_NE(letters[0].reason().find(
                "the database refused it: PostgreSQL error 22023: value refused for the test"),
            std::string::npos)
      << letters[0].reason();
  EXPECT_EQ(Stack::SourceEventIdOf(letters[0].value()), events[2].source_event_id());

  // Redelivered (a replay of the partition): the same event is refused again, nothing twice.
  s.Publish(events);
  auto sentinel = Event("payment.merchant_qr", key, 100, {{"merchant_id", "OTHER"}});
  s.Publish({sentinel});
  ASSERT_TRUE(s.AwaitLogged(key, sentinel.source() + ":" + sentinel.source_event_id()));
  absl::SleepFor(absl::Seconds(1));
  EXPECT_EQ(s.AwaitBalances(expected, absl::Seconds(1)), expected);
  EXPECT_EQ(s.DeadLetters(key, 2).size(), 2u);
  s.ExpectIntegrity();
}

TEST_F(EventsE2eTest, ExplainSaysWhichConditionFailedWithTheValuesSeen) {
  Stack& s = *stack_;
  auto rule = Rule("explain-loan", "loan.disbursed", epb::EVERY_MATCH,
                   R"(amount_fen >= 1000000 && customer.tag("age") < 35)", Reward(rpb::POINTS, 1));
  ASSERT_TRUE(s.UpsertRule(rule).ok());
  auto old_customer = Event("loan.disbursed", "cust-2", 2000000, {{"contract_id", "X"}});
  auto young = Event("loan.disbursed", "cust-3", 2000000, {{"contract_id", "Y"}});
  s.Publish({old_customer, young});
  ASSERT_TRUE(s.AwaitLogged("cust-2", "core:" + old_customer.source_event_id()));
  ASSERT_TRUE(s.AwaitLogged("cust-3", "core:" + young.source_event_id()));
  epb::ExplainRequest request;
  request.set_rule_id("explain-loan");
  request.set_event_key("core:" + old_customer.source_event_id());
  auto why = s.Admin<epb::ExplainResponse>(&epb::EventsAdmin::Stub::Explain, request);
  ASSERT_TRUE(why.ok()) << why.status();
  EXPECT_FALSE(why->granted());
  EXPECT_FALSE(why->condition_holds());
  EXPECT_EQ(why->failed_condition(), "customer.tag(\"age\") < 35");
  ASSERT_EQ(why->observations_size(), 2);
  EXPECT_EQ(why->observations(1).left(), "40");
  EXPECT_NE(why->summary().find("customer.tag(\"age\") < 35"), std::string::npos);

  request.set_event_key("core:" + young.source_event_id());
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  do {
    why = s.Admin<epb::ExplainResponse>(&epb::EventsAdmin::Stub::Explain, request);
    ASSERT_TRUE(why.ok());
    if (why->grants_size() > 0 && why->grants(0).state() == "granted") break;
    absl::SleepFor(absl::Milliseconds(100));
  } while (absl::Now() < deadline);
  EXPECT_TRUE(why->granted()) << why->summary();
  EXPECT_TRUE(why->condition_holds());
  EXPECT_EQ(why->decision(), "matched; grants tier 0");
}

// mkt-segments as a process on its own database, on a port kept across restarts.
class SegmentsProcess {
 public:
  SegmentsProcess()
      : profiles_topic_(testing::NewTopic("events-e2e.profiles", 1)), port_(testing::FreePort()) {}
  ~SegmentsProcess() { Stop(); }

  bool Start() {
    log_ = "/tmp/events_e2e_segments_" + RandomHex(4) + ".log";
    process_ = std::make_unique<testing::ChildProcess>(
        std::vector<std::string>{testing::BinDir() + "/services/segments/mkt-segments"},
        std::map<std::string, std::string>{
            {"MKT_SEGMENTS_PG_DSN", db_.dsn()},
            {"MKT_SEGMENTS_KAFKA_BOOTSTRAP", testing::KafkaBootstrap()},
            {"MKT_SEGMENTS_GRPC_ADDRESS", target()},
            {"MKT_SEGMENTS_METRICS_ADDRESS", absl::StrCat("127.0.0.1:", testing::FreePort())},
            {"MKT_SEGMENTS_PROFILES_TOPIC", profiles_topic_},
            {"MKT_SEGMENTS_BUSINESS_EVENTS_TOPIC", ""},
            {"MKT_SEGMENTS_DEAD_LETTER_TOPIC", profiles_topic_ + ".dead"},
            {"MKT_SEGMENTS_REPLICA_ID", "events-e2e-" + RandomHex(4)},
            {"MKT_SEGMENTS_RFM_INTERVAL_S", "0"},
            {"MKT_SEGMENTS_LOG_FORMAT", "json"}},
        log_);
    auto channel = rpc::Connect(target());
    if (!testing::WaitForGrpcHealth(channel, absl::Seconds(60))) {
      ADD_FAILURE() << "mkt-segments did not start; its log:\n" << testing::Tail(log_, 40);
      return false;
    }
    stub_ = spb::Segments::NewStub(channel);
    return true;
  }

  void Stop() {
    if (process_ != nullptr) {
      EXPECT_EQ(process_->Kill(SIGTERM), 0);
    }
    process_.reset();
  }

  std::string target() const { return absl::StrCat("127.0.0.1:", port_); }

  // Imports `csv` (customer_id,<tag>,...) as an operator of `org`.
  void Import(const std::string& org, const std::string& csv) {
    spb::ImportTagValuesRequest request;
    request.set_csv(csv);
    spb::ImportTagValuesResponse response;
    grpc::ClientContext context;
    rpc::PrepareClientContext(context, absl::Seconds(10), NewRequestId());
    rpc::AttachActor(context, Operator(org));
    ASSERT_TRUE(stub_->ImportTagValues(&context, request, &response).ok());
    ASSERT_EQ(response.rows_rejected(), 0) << response.DebugString();
  }

  // Returns the id of a new list segment of `org` holding `customers`.
  std::string CreateList(const std::string& org, const std::vector<std::string>& customers) {
    spb::CreateSegmentRequest request;
    request.set_org_id(org);
    request.set_name("list " + RandomHex(4));
    for (const auto& c : customers) {
      request.mutable_definition()->mutable_list()->add_customer_ids(c);
    }
    spb::Segment segment;
    grpc::ClientContext context;
    rpc::PrepareClientContext(context, absl::Seconds(10), NewRequestId());
    rpc::AttachActor(context, Operator(org));
    EXPECT_TRUE(stub_->CreateSegment(&context, request, &segment).ok());
    return segment.id();
  }

  void CreateBoolTag(const std::string& org, const std::string& name) {
    spb::CreateTagRequest request;
    request.mutable_tag()->set_name(name);
    request.mutable_tag()->set_type(spb::TAG_TYPE_BOOL);
    spb::Tag tag;
    grpc::ClientContext context;
    rpc::PrepareClientContext(context, absl::Seconds(10), NewRequestId());
    rpc::AttachActor(context, Operator(org));
    ASSERT_TRUE(stub_->CreateTag(&context, request, &tag).ok());
  }

 private:
  static tenancy::Actor Operator(const std::string& org) {
    return {.org_id = org, .operator_id = "op-" + org, .roles = {tenancy::Role::kAdmin}};
  }

  testing::TestDatabase db_;
  std::string profiles_topic_;
  int port_;
  std::string log_;
  std::unique_ptr<testing::ChildProcess> process_;
  std::unique_ptr<spb::Segments::Stub> stub_;
};

// What rules read from the segments service, as each bank may see it, when the event is matched:
// the customer tags of conditions (decision 032) and the campaigns' audiences (decision 033). A
// bank's rule never matches another bank's events. While the segments service is down, events
// wait rather than being matched without what they need.
TEST(EventsSegmentsE2eTest, RulesReadTagsAndAudiencesFromTheSegmentsServiceAndWaitForIt) {
  SegmentsProcess segments;
  ASSERT_TRUE(segments.Start());
  // bank-a's customers (their first import makes bank-a their home org) with bank-a's own tag;
  // t-b is bank-b's customer; "age" is the federation's tag, readable by every bank.
  segments.CreateBoolTag(kOrg, "vip");
  segments.Import(kOrg, "customer_id,vip\nt-1,true\nt-2,true\nt-3,false\nt-4,true\n");
  segments.Import("bank-b", "customer_id\nt-b\n");
  segments.Import("fed", "customer_id,age\nt-1,30\nt-2,40\nt-3,30\nt-4,30\nt-b,20\n");

  Stack s(segments.target());
  ASSERT_TRUE(s.UpsertRule(Rule("young-vip", "loan.disbursed", epb::EVERY_MATCH,
                                R"(customer.tag("age") < 35 && customer.tag("vip"))",
                                Reward(rpb::CASH_FEN, 500)))
                  .ok());
  const auto loan = [](const std::string& customer) {
    return Event("loan.disbursed", customer, 2000000, {{"contract_id", "K-" + customer}});
  };
  const epb::BusinessEvent not_vip = loan("t-3");
  const epb::BusinessEvent other_bank = loan("t-b");
  s.Publish({loan("t-1"), loan("t-2"), not_vip, other_bank});
  ASSERT_TRUE(s.AwaitLogged("t-3", "core:" + not_vip.source_event_id()));
  ASSERT_TRUE(s.AwaitLogged("t-b", "core:" + other_bank.source_event_id()));
  // Only t-1 is young and a VIP; t-b's age is bank-b's customer's, which bank-a cannot see.
  Balances expected = {{"t-1", {{rpb::CASH_FEN, 500}}}, {"t-2", {}}, {"t-3", {}}, {"t-b", {}}};
  EXPECT_EQ(s.AwaitBalances(expected), expected);

  epb::ExplainRequest why;
  why.set_rule_id("young-vip");
  why.set_event_key("core:" + not_vip.source_event_id());
  auto explained = s.Admin<epb::ExplainResponse>(&epb::EventsAdmin::Stub::Explain, why);
  ASSERT_TRUE(explained.ok()) << explained.status();
  EXPECT_EQ(explained->failed_condition(), R"(customer.tag("vip"))");
  ASSERT_EQ(explained->observations_size(), 2);
  EXPECT_EQ(explained->observations(0).left(), "30");
  EXPECT_EQ(explained->observations(1).left(), "false");

  // A bank's rule does not match another bank's event, even for a customer it would reward.
  epb::BusinessEvent at_bank_b = loan("t-1");
  at_bank_b.set_org_id("bank-b");
  s.Publish({at_bank_b});
  ASSERT_TRUE(s.AwaitLogged("t-1", "core:" + at_bank_b.source_event_id()));
  why.set_event_key("core:" + at_bank_b.source_event_id());
  explained = s.Admin<epb::ExplainResponse>(&epb::EventsAdmin::Stub::Explain, why);
  ASSERT_TRUE(explained.ok()) << explained.status();
  EXPECT_FALSE(explained->granted());
  EXPECT_FALSE(explained->org_covered());
  EXPECT_EQ(explained->summary(), "the rule is bank-a's and does not apply to events of bank-b");

  // An event booked at one of bank-a's branches is bank-a's rule's, and its tags are read as
  // bank-a sees them: t-1 is rewarded there too.
  epb::BusinessEvent at_branch = loan("t-1");
  at_branch.set_org_id("bank-a.branch-01");
  s.Publish({at_branch});
  ASSERT_TRUE(s.AwaitLogged("t-1", "core:" + at_branch.source_event_id()));
  why.set_event_key("core:" + at_branch.source_event_id());
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  do {
    explained = s.Admin<epb::ExplainResponse>(&epb::EventsAdmin::Stub::Explain, why);
    ASSERT_TRUE(explained.ok()) << explained.status();
    if (explained->grants_size() > 0 && explained->grants(0).state() == "granted") break;
    absl::SleepFor(absl::Milliseconds(100));
  } while (absl::Now() < deadline);
  EXPECT_TRUE(explained->granted()) << explained->summary();
  EXPECT_TRUE(explained->org_covered());
  EXPECT_TRUE(explained->condition_holds());

  // An event campaign rewards its audience only (decision 033): in a segment it includes and in
  // none it excludes, as the segments service answers for the campaign's bank.
  const std::string logins = segments.CreateList(kOrg, {"t-1", "t-2", "t-3"});
  const std::string staff = segments.CreateList(kOrg, {"t-3"});
  epb::TriggerRule welcome = Rule("audience-login", "mobile_banking.first_login", epb::EVERY_MATCH,
                                  "", Reward(rpb::POINTS, 10));
  welcome.mutable_audience()->add_include()->set_segment_id(logins);
  welcome.mutable_audience()->add_exclude()->set_segment_id(staff);
  ASSERT_TRUE(s.UpsertRule(welcome).ok());
  const epb::BusinessEvent staff_login = Event("mobile_banking.first_login", "t-3");
  s.Publish({Event("mobile_banking.first_login", "t-1"), staff_login,
             Event("mobile_banking.first_login", "t-4")});
  ASSERT_TRUE(s.AwaitLogged("t-3", "core:" + staff_login.source_event_id()));
  expected["t-1"] = {{rpb::CASH_FEN, 500}, {rpb::POINTS, 10}};
  EXPECT_EQ(s.AwaitBalances(expected), expected);
  why.set_rule_id("audience-login");
  why.set_event_key("core:" + staff_login.source_event_id());
  explained = s.Admin<epb::ExplainResponse>(&epb::EventsAdmin::Stub::Explain, why);
  ASSERT_TRUE(explained.ok()) << explained.status();
  EXPECT_FALSE(explained->granted());
  EXPECT_FALSE(explained->in_audience());
  EXPECT_EQ(explained->summary(), "the customer is not in the campaign's audience");

  // A tag changed in the segments service counts for the next event, without a restart.
  segments.Import("fed", "customer_id,age\nt-2,25\n");
  s.Publish({loan("t-2")});
  expected["t-2"] = {{rpb::CASH_FEN, 500}};
  EXPECT_EQ(s.AwaitBalances(expected), expected);

  // With the segments service down, t-4's event waits (it is not matched without its tags), and
  // is granted once the service is back.
  segments.Stop();
  s.Publish({loan("t-4")});
  absl::SleepFor(absl::Seconds(3));
  EXPECT_TRUE(s.Balances("t-4").empty());
  ASSERT_TRUE(segments.Start());
  expected["t-4"] = {{rpb::CASH_FEN, 500}};
  EXPECT_EQ(s.AwaitBalances(expected), expected);
  s.ExpectIntegrity();
}

}  // namespace
}  // namespace mkt
