// The events service survives kill -9 without losing or duplicating a grant: 50,000 business
// events over 5,000 customers go through mkt-events into mkt-rewards (both processes on fresh
// databases and the real Kafka) while mkt-events is killed with SIGKILL twice, each time with
// grants in flight (some but not all in the ledger), and restarted on the same database and
// consumer group. Afterwards the ledger must hold exactly the grants the rules imply: one point
// per spend of at least 160 yuan (an every-match rule with a condition) and each cumulative-amount
// tier once per customer who crossed it (every event counts), nothing lost, nothing twice, with
// the ledger's own invariants intact (CheckIntegrity).
#include <signal.h>
#include <sys/wait.h>

#include <cstdio>
#include <map>
#include <memory>
#include <pqxx/pqxx>
#include <random>
#include <set>
#include <string>
#include <tuple>
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
#include "marketing/common/v1/envelope.pb.h"
#include "marketing/events/v1/business_event.pb.h"
#include "marketing/events/v1/events.grpc.pb.h"
#include "marketing/rewards/v1/ledger.grpc.pb.h"

namespace mkt {
namespace {

namespace epb = ::marketing::events::v1;
namespace rpb = ::marketing::rewards::v1;

constexpr char kOrg[] = "bank-a";
constexpr int kEvents = 50000;
constexpr int kCustomers = 5000;
// The every-match rule grants a point for each spend of at least this much (about a fifth of the
// events): every event is still matched, counted and logged, but the debug ledger on two shared
// cores is not kept busy for minutes by 50,000 grants.
constexpr int64_t kEveryMatchMinFen = 16000;
// Cumulative-amount tiers (fen) and the lottery chances each grants. Amounts are 1,000..20,000
// fen, ten events per customer: about half the customers cross the first tier, a fifth the second,
// and counting an event twice (a replayed batch applied again) would push others over.
constexpr int64_t kTierThresholds[] = {100000, 120000};
constexpr int64_t kTierChances[] = {1, 2};

int64_t Count(const std::string& dsn, const std::string& sql) {
  try {
    pqxx::connection conn(dsn);
    pqxx::nontransaction tx(conn);
    return tx.exec1(sql)[0].as<int64_t>();
  } catch (const std::exception& e) {
    ADD_FAILURE() << sql << ": " << e.what();
    return -1;
  }
}

class KillStack {
 public:
  KillStack()
      : events_topic_(testing::NewTopic("events-kill.business", 3)),
        dead_letters_(testing::NewTopic("events-kill.dlq", 1)),
        changes_(testing::NewTopic("events-kill.changes", 1)),
        group_("events-kill-" + RandomHex(4)) {
    rewards_port_ = testing::FreePort();
    rewards_log_ = "/tmp/events_kill_rewards_" + RandomHex(4) + ".log";
    rewards_ = std::make_unique<testing::ChildProcess>(
        std::vector<std::string>{testing::BinDir() + "/services/rewards/mkt-rewards"},
        std::map<std::string, std::string>{
            {"MKT_REWARDS_PG_DSN", rewards_db_.dsn()},
            {"MKT_REWARDS_KAFKA_BOOTSTRAP", testing::KafkaBootstrap()},
            {"MKT_REWARDS_GRPC_ADDRESS", absl::StrCat("127.0.0.1:", rewards_port_)},
            {"MKT_REWARDS_METRICS_ADDRESS", absl::StrCat("127.0.0.1:", testing::FreePort())},
            {"MKT_REWARDS_EXPIRY_INTERVAL_S", "0"},
            {"MKT_REWARDS_CAMPAIGN_CHANGES_TOPIC", ""},  // the test funds its budgets
            {"MKT_REWARDS_LOG_FORMAT", "json"},
            // Not a log line per grant (55,000 of them cost CPU the test needs).
            {"MKT_REWARDS_LOG_LEVEL", "warn"},
            // Each grant holds a worker until its group commit: more of them, larger commits.
            {"MKT_REWARDS_WORKER_THREADS", "256"}},
        rewards_log_);
    // Connecting only once the port listens avoids gRPC's reconnect backoff (seconds).
    EXPECT_TRUE(testing::WaitForPort(rewards_port_, absl::Seconds(30)))
        << testing::Tail(rewards_log_, 30);
    auto channel = rpc::Connect(absl::StrCat("127.0.0.1:", rewards_port_));
    ledger_ = rpb::Ledger::NewStub(channel);
    EXPECT_TRUE(testing::WaitForGrpcHealth(channel, absl::Seconds(30)))
        << testing::Tail(rewards_log_, 30);
    events_log_ = "/tmp/events_kill_events_" + RandomHex(4) + ".log";
    auto producer = kafka::Producer::Create(
        {.bootstrap_servers = testing::KafkaBootstrap(), .client_id = "events-kill"});
    EXPECT_TRUE(producer.ok());
    producer_ = *std::move(producer);
  }

  // Starts mkt-events on the same database and consumer group every time (a restart).
  void StartEvents() {
    events_port_ = testing::FreePort();
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
            {"MKT_EVENTS_CONSUMER_GROUP", group_},
            {"MKT_EVENTS_REWARDS_ADDRESS", absl::StrCat("127.0.0.1:", rewards_port_)},
            {"MKT_EVENTS_LOG_FORMAT", "json"}},
        events_log_);
    ASSERT_TRUE(testing::WaitForPort(events_port_, absl::Seconds(30)))
        << testing::Tail(events_log_, 30);
    auto channel = rpc::Connect(absl::StrCat("127.0.0.1:", events_port_));
    admin_ = epb::EventsAdmin::NewStub(channel);
    ASSERT_TRUE(testing::WaitForGrpcHealth(channel, absl::Seconds(30)))
        << testing::Tail(events_log_, 30);
  }

  absl::Status UpsertRule(const epb::TriggerRule& rule) {
    grpc::ClientContext context;
    rpc::PrepareClientContext(context, absl::Seconds(30), NewRequestId());
    rpc::AttachActor(context, tenancy::SystemActor("events-kill"));
    epb::UpsertRuleResponse response;
    grpc::Status status = admin_->UpsertRule(&context, rule, &response);
    return status.ok() ? absl::OkStatus() : rpc::FromGrpcStatus(status);
  }

  void Publish(const std::vector<epb::BusinessEvent>& events) {
    std::vector<kafka::OutgoingMessage> out;
    out.reserve(events.size());
    for (const auto& e : events) {
      out.push_back(
          {events_topic_,
           e.customer_id(),
           kafka::MakeEnvelope("events.BusinessEvent", e.org_id(), "", e).SerializeAsString(),
           {}});
    }
    ASSERT_TRUE(producer_->Publish(out, absl::Seconds(60)).ok());
  }

  // Grants visible in the ledger (benefit legs).
  int64_t LedgerGrants() {
    return Count(rewards_db_.dsn(),
                 "SELECT count(*) FROM transfers WHERE code = 1 AND id LIKE '%:benefit'");
  }

  rpb::CheckIntegrityResponse CheckIntegrity() {
    grpc::ClientContext context;
    rpc::PrepareClientContext(context, absl::Seconds(60), NewRequestId());
    rpb::CheckIntegrityResponse response;
    EXPECT_TRUE(ledger_->CheckIntegrity(&context, rpb::CheckIntegrityRequest(), &response).ok());
    return response;
  }

  testing::TestDatabase rewards_db_;
  testing::TestDatabase events_db_;
  std::string events_topic_, dead_letters_, changes_, group_;
  int rewards_port_ = 0, events_port_ = 0;
  std::string rewards_log_, events_log_;
  std::unique_ptr<testing::ChildProcess> rewards_;
  std::unique_ptr<testing::ChildProcess> events_;
  std::unique_ptr<rpb::Ledger::Stub> ledger_;
  std::unique_ptr<epb::EventsAdmin::Stub> admin_;
  std::unique_ptr<kafka::Producer> producer_;
};

epb::TriggerRule Rule(const std::string& id, epb::RuleKind kind) {
  epb::TriggerRule r;
  r.set_rule_id(id);
  r.set_campaign_id("camp-" + id);
  r.set_org_id(kOrg);
  r.set_event_type("credit_card.spend");
  r.set_kind(kind);
  r.set_window(epb::CAMPAIGN_WINDOW);
  r.set_active(true);
  r.set_revision(1);
  r.mutable_start_time()->set_seconds(absl::ToUnixSeconds(absl::Now() - absl::Hours(24)));
  r.mutable_end_time()->set_seconds(absl::ToUnixSeconds(absl::Now() + absl::Hours(24 * 30)));
  return r;
}

// What the ledger must hold at the end.
struct Expected {
  std::map<std::string, std::string> customer_of_event;     // every-match: one point each
  std::set<std::pair<std::string, int>> tiers;              // (customer, tier) crossed
  std::map<std::pair<std::string, int>, int64_t> balances;  // (customer, asset) → balance
  int64_t grants = 0;
};

struct KillPoint {
  int64_t ledger_grants = 0;
  int64_t events_applied = 0;
  int64_t outbox_unsent = 0;
};

TEST(EventsKillTest, KillNineTwiceWithGrantsInFlightLosesAndDuplicatesNothing) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress lines as they happen under ctest
  const absl::Time started = absl::Now();
  KillStack s;
  ASSERT_NO_FATAL_FAILURE(s.StartEvents());

  epb::TriggerRule every = Rule("kill-every", epb::EVERY_MATCH);
  every.set_condition(absl::StrCat("amount_fen >= ", kEveryMatchMinFen));
  every.mutable_reward()->set_asset(rpb::POINTS);
  every.mutable_reward()->set_quantity(1);
  epb::TriggerRule tiers = Rule("kill-tiers", epb::CUMULATIVE_AMOUNT);
  for (int t = 0; t < 2; ++t) {
    auto* tier = tiers.add_tiers();
    tier->set_threshold_fen(kTierThresholds[t]);
    tier->mutable_reward()->set_asset(rpb::LOTTERY_CHANCE);
    tier->mutable_reward()->set_quantity(kTierChances[t]);
  }
  ASSERT_TRUE(s.UpsertRule(every).ok());
  ASSERT_TRUE(s.UpsertRule(tiers).ok());

  // The events, and what the rules make of them (sums commute: which event crosses a tier
  // depends on the order, the set of tiers a customer reaches does not).
  std::vector<epb::BusinessEvent> events;
  Expected expected;
  std::mt19937 rng(20261126);
  std::map<std::string, int64_t> spent;
  std::map<std::string, std::string> customer_of_any_event;
  const std::string run = RandomHex(4);
  for (int i = 0; i < kEvents; ++i) {
    epb::BusinessEvent e;
    e.set_source("core");
    e.set_source_event_id(absl::StrCat("kill-", run, "-", i));
    e.set_event_type("credit_card.spend");
    e.set_customer_id(absl::StrCat("kc-", i % kCustomers));
    e.set_org_id(kOrg);
    e.mutable_occurred_at()->set_seconds(absl::ToUnixSeconds(absl::Now()));
    e.set_amount_fen(std::uniform_int_distribution<int64_t>(1000, 20000)(rng));
    if (e.amount_fen() >= kEveryMatchMinFen) {
      expected.customer_of_event["core:" + e.source_event_id()] = e.customer_id();
      expected.balances[{e.customer_id(), rpb::POINTS}] += 1;
    }
    customer_of_any_event["core:" + e.source_event_id()] = e.customer_id();
    spent[e.customer_id()] += e.amount_fen();
    events.push_back(std::move(e));
  }
  for (const auto& [customer, amount] : spent) {
    for (int t = 0; t < 2; ++t) {
      if (amount < kTierThresholds[t]) continue;
      expected.tiers.insert({customer, t});
      expected.balances[{customer, rpb::LOTTERY_CHANCE}] += kTierChances[t];
    }
  }
  expected.grants = static_cast<int64_t>(expected.customer_of_event.size() + expected.tiers.size());
  // Both tiers are reached by some customers and missed by others.
  for (int t = 0; t < 2; ++t) {
    int64_t reached = 0;
    for (const auto& [customer, tier] : expected.tiers) reached += tier == t ? 1 : 0;
    ASSERT_GT(reached, kCustomers / 20) << "tier " << t;
    ASSERT_LT(reached, kCustomers - kCustomers / 20) << "tier " << t;
  }
  std::printf("stack up and %d events built in %.1f s\n", kEvents,
              absl::ToDoubleSeconds(absl::Now() - started));
  ASSERT_NO_FATAL_FAILURE(s.Publish(events));
  std::printf("published %d events in %.1f s; %lld grants expected\n", kEvents,
              absl::ToDoubleSeconds(absl::Now() - started),
              static_cast<long long>(expected.grants));

  // Kill -9 twice: once when a tenth of the grants is in the ledger, once past half of them.
  std::vector<KillPoint> kills;
  for (double fraction : {0.10, 0.55}) {
    // The continuous grant sender often has every grant of the applied events acknowledged; a
    // kill at such a moment tests nothing in flight, so kill again (the events service restarts
    // in between) until a kill lands with grants not yet acknowledged.
    KillPoint k;
    for (int attempt = 0; attempt < 10 && k.outbox_unsent == 0; ++attempt) {
      const int64_t threshold =
          static_cast<int64_t>(fraction * static_cast<double>(expected.grants)) + attempt * 100;
      const absl::Time deadline = absl::Now() + absl::Seconds(60);
      int64_t seen = 0;
      while ((seen = s.LedgerGrants()) < threshold && absl::Now() < deadline) {
        absl::SleepFor(absl::Milliseconds(20));
      }
      ASSERT_GE(seen, threshold) << "the grants stalled\n" << testing::Tail(s.events_log_, 30);
      const int wait_status = s.events_->Kill(SIGKILL);
      ASSERT_TRUE(WIFSIGNALED(wait_status) && WTERMSIG(wait_status) == SIGKILL) << wait_status;
      k.ledger_grants = s.LedgerGrants();
      k.events_applied = Count(s.events_db_.dsn(), "SELECT count(*) FROM event_keys");
      k.outbox_unsent =
          Count(s.events_db_.dsn(), "SELECT count(*) FROM grants WHERE state NOT IN ('granted')");
      std::printf(
          "kill -9 at %.1f s: %lld grants in the ledger, %lld events applied, %lld grants "
          "not yet acknowledged\n",
          absl::ToDoubleSeconds(absl::Now() - started), static_cast<long long>(k.ledger_grants),
          static_cast<long long>(k.events_applied), static_cast<long long>(k.outbox_unsent));
      ASSERT_NO_FATAL_FAILURE(s.StartEvents());
    }
    // The kill hit the middle of the work: the ledger has some of the grants but not all.
    EXPECT_GT(k.ledger_grants, 0);
    EXPECT_LT(k.ledger_grants, expected.grants);
    EXPECT_GT(k.outbox_unsent, 0);
    kills.push_back(k);
  }

  // Done when every grant is in the ledger and the outbox has nothing left to send.
  const absl::Time deadline = absl::Now() + absl::Seconds(90);
  int64_t in_ledger = 0, unsent = -1, applied = 0;
  while (absl::Now() < deadline) {
    in_ledger = s.LedgerGrants();
    applied = Count(s.events_db_.dsn(), "SELECT count(*) FROM event_keys");
    unsent = Count(s.events_db_.dsn(), "SELECT count(*) FROM grants WHERE state <> 'granted'");
    if (in_ledger >= expected.grants && applied == kEvents && unsent == 0) break;
    absl::SleepFor(absl::Milliseconds(200));
  }
  ASSERT_EQ(applied, kEvents) << testing::Tail(s.events_log_, 30);
  ASSERT_EQ(unsent, 0) << testing::Tail(s.events_log_, 30);
  absl::SleepFor(absl::Milliseconds(500));  // anything (wrong) still in flight lands now
  std::printf("all grants in the ledger at %.1f s\n", absl::ToDoubleSeconds(absl::Now() - started));

  // Every grant in the ledger, by the event, rule and tier it carries.
  std::map<std::string, int> every_grants;                 // event key → grants
  std::map<std::pair<std::string, int>, int> tier_grants;  // (customer, tier) → grants
  std::map<std::pair<std::string, int>, int64_t> balances;
  int64_t wrong = 0;
  {
    pqxx::connection conn(s.rewards_db_.dsn());
    pqxx::nontransaction tx(conn);
    for (const auto& row : tx.exec(
             "SELECT t.event_id, t.metadata->>'rule_id', (t.metadata->>'tier')::int, a.owner_id, "
             "  t.asset, t.amount FROM transfers t JOIN accounts a ON a.id = t.credit_account_id "
             "WHERE t.code = 1 AND t.id LIKE '%:benefit'")) {
      const std::string event_key = row[0].as<std::string>();
      const std::string rule = row[1].as<std::string>();
      const int tier = row[2].as<int>();
      const std::string customer = row[3].as<std::string>();
      const int asset = row[4].as<int>();
      const int64_t amount = row[5].as<int64_t>();
      auto owner = customer_of_any_event.find(event_key);
      const bool right_customer = owner != customer_of_any_event.end() && owner->second == customer;
      if (rule == "kill-every" && right_customer && asset == rpb::POINTS && amount == 1 &&
          expected.customer_of_event.count(event_key) > 0) {
        ++every_grants[event_key];
      } else if (rule == "kill-tiers" && right_customer && asset == rpb::LOTTERY_CHANCE &&
                 tier >= 0 && tier < 2 && amount == kTierChances[tier]) {
        ++tier_grants[{customer, tier}];
      } else {
        ++wrong;
      }
    }
    for (const auto& row :
         tx.exec("SELECT owner_id, asset, credits_posted - debits_posted FROM accounts "
                 "WHERE owner_kind = 1 AND credits_posted - debits_posted <> 0")) {
      balances[{row[0].as<std::string>(), row[1].as<int>()}] = row[2].as<int64_t>();
    }
  }
  EXPECT_EQ(wrong, 0) << "grants in the ledger that no rule implies";
  int64_t lost = 0, twice = 0;
  for (const auto& [event_key, customer] : expected.customer_of_event) {
    auto it = every_grants.find(event_key);
    if (it == every_grants.end()) {
      ++lost;
    } else if (it->second > 1) {
      ++twice;
    }
  }
  EXPECT_EQ(every_grants.size(), expected.customer_of_event.size());
  int64_t tiers_lost = 0, tiers_twice = 0, tiers_extra = 0;
  for (const auto& key : expected.tiers) {
    auto it = tier_grants.find(key);
    if (it == tier_grants.end()) {
      ++tiers_lost;
    } else if (it->second > 1) {
      ++tiers_twice;
    }
  }
  for (const auto& [key, n] : tier_grants) tiers_extra += expected.tiers.count(key) == 0 ? 1 : 0;
  std::printf(
      "every-match grants: %zu events granted, %lld lost, %lld twice; tier grants: %zu, "
      "%lld lost, %lld twice, %lld not earned\n",
      every_grants.size(), static_cast<long long>(lost), static_cast<long long>(twice),
      tier_grants.size(), static_cast<long long>(tiers_lost), static_cast<long long>(tiers_twice),
      static_cast<long long>(tiers_extra));
  EXPECT_EQ(lost, 0);
  EXPECT_EQ(twice, 0);
  EXPECT_EQ(tiers_lost, 0);
  EXPECT_EQ(tiers_twice, 0);
  EXPECT_EQ(tiers_extra, 0);
  EXPECT_EQ(in_ledger, expected.grants);
  EXPECT_TRUE(balances == expected.balances) << "customer balances differ from the rules' sums";
  EXPECT_EQ(Count(s.events_db_.dsn(), "SELECT count(*) FROM grants"), expected.grants);

  const rpb::CheckIntegrityResponse integrity = s.CheckIntegrity();
  std::string checks;
  for (const auto& c : integrity.checks()) {
    absl::StrAppend(&checks, c.ok() ? "ok " : "FAILED ", c.name(), ": ", c.detail(), "\n");
  }
  EXPECT_TRUE(integrity.ok()) << checks;
  EXPECT_GT(integrity.checks_size(), 0);
  std::printf("finished in %.1f s\n", absl::ToDoubleSeconds(absl::Now() - started));
}

}  // namespace
}  // namespace mkt
