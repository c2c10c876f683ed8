// The benefit ledger end to end through its gRPC API: mkt-rewards runs as one or two processes
// against a fresh PostgreSQL database and the real Kafka, and the test grants, spends, expires and
// resolves pending transfers as the campaigns service and the wallet would, kills a replica in the
// middle of a stream of grants, reads the facts the ledger publishes, and after every scenario
// asks the ledger to verify its invariants (CheckIntegrity).
#include <arpa/inet.h>
#include <librdkafka/rdkafkacpp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/civil_time.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "libs/core/ids.h"
#include "libs/core/status.h"
#include "libs/rpc/client.h"
#include "libs/rpc/server.h"
#include "libs/testing/testing.h"
#include "marketing/common/v1/envelope.pb.h"
#include "marketing/rewards/v1/ledger.grpc.pb.h"

namespace mkt {
namespace {

namespace pb = ::marketing::rewards::v1;
using ::marketing::common::v1::ErrorReason;
namespace common = ::marketing::common::v1;

constexpr char kFactsTopic[] = "mkt.ledger-facts.v1";

// ---- Small conversions -------------------------------------------------------------------------

google::protobuf::Timestamp ToProto(absl::Time t) {
  google::protobuf::Timestamp ts;
  const int64_t seconds = absl::ToUnixSeconds(t);
  ts.set_seconds(seconds);
  ts.set_nanos(static_cast<int32_t>((t - absl::FromUnixSeconds(seconds)) / absl::Nanoseconds(1)));
  return ts;
}

absl::Time FromProto(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

pb::AccountRef Ref(const std::string& org, pb::Asset asset, pb::OwnerKind kind,
                   const std::string& owner, const std::string& asset_ref = "") {
  pb::AccountRef ref;
  ref.set_org_id(org);
  ref.set_asset(asset);
  ref.set_asset_ref(asset_ref);
  ref.set_owner_kind(kind);
  ref.set_owner_id(owner);
  return ref;
}

pb::AccountRef CustomerRef(const std::string& org, const std::string& customer,
                           pb::Asset asset = pb::POINTS) {
  return Ref(org, asset, pb::CUSTOMER, customer);
}

// `role` as the ledger names system accounts: the SystemRole without ROLE_, lowercase.
pb::AccountRef SystemRef(const std::string& org, pb::Asset asset, const std::string& role,
                         const std::string& asset_ref = "") {
  return Ref(org, asset, pb::SYSTEM, role, asset_ref);
}

pb::AccountRef BudgetRef(const std::string& org, const std::string& campaign) {
  return Ref(org, pb::BUDGET_FEN, pb::CAMPAIGN, campaign);
}

pb::AccountRef StockRef(const std::string& org, const std::string& template_id) {
  return Ref(org, pb::STOCK, pb::TEMPLATE, template_id, template_id);
}

pb::PointsExpiry DaysAfterGrant(int days) {
  pb::PointsExpiry expiry;
  expiry.set_days_after_grant(days);
  return expiry;
}

std::string Describe(const absl::Status& status) {
  return absl::StrCat(status.ToString(), " [reason ", ReasonName(ReasonOf(status)), ", field \"",
                      FieldOf(status), "\"]");
}

template <class T>
std::string Describe(const absl::StatusOr<T>& result) {
  return result.ok() ? std::string("OK") : Describe(result.status());
}

// ---- The ledger's client -----------------------------------------------------------------------

// The ledger's gRPC API with statuses turned back into absl::Status (reason and field kept).
class LedgerClient {
 public:
  explicit LedgerClient(const std::string& target)
      : stub_(pb::Ledger::NewStub(rpc::Connect(target))) {}

  absl::StatusOr<pb::CreateTransfersResponse> CreateTransfers(
      const std::vector<pb::TransferSpec>& specs) {
    pb::CreateTransfersRequest request;
    for (const auto& spec : specs) *request.add_transfers() = spec;
    return Call<pb::CreateTransfersResponse>(&pb::Ledger::Stub::CreateTransfers, request);
  }
  absl::StatusOr<pb::Transfer> PostPending(const std::string& id, const std::string& pending_id) {
    return Call<pb::Transfer>(&pb::Ledger::Stub::PostPending, Resolve(id, pending_id));
  }
  absl::StatusOr<pb::Transfer> VoidPending(const std::string& id, const std::string& pending_id) {
    return Call<pb::Transfer>(&pb::Ledger::Stub::VoidPending, Resolve(id, pending_id));
  }
  absl::StatusOr<pb::GrantResponse> Grant(const pb::GrantRequest& request,
                                          absl::Duration timeout = absl::Seconds(30)) {
    return Call<pb::GrantResponse>(&pb::Ledger::Stub::Grant, request, timeout);
  }
  absl::StatusOr<pb::SpendResponse> Spend(const pb::SpendRequest& request) {
    return Call<pb::SpendResponse>(&pb::Ledger::Stub::Spend, request);
  }
  absl::StatusOr<pb::FundResponse> Fund(const std::string& request_id, const std::string& org,
                                        pb::Asset asset, const std::string& owner, int64_t amount) {
    pb::FundRequest request;
    request.set_request_id(request_id);
    request.set_org_id(org);
    request.set_asset(asset);
    request.set_owner_id(owner);
    request.set_amount(amount);
    return Call<pb::FundResponse>(&pb::Ledger::Stub::Fund, request);
  }
  absl::StatusOr<pb::GetBalancesResponse> GetBalances(const std::string& org,
                                                      const std::string& customer) {
    pb::GetBalancesRequest request;
    request.set_org_id(org);
    request.set_customer_id(customer);
    return Call<pb::GetBalancesResponse>(&pb::Ledger::Stub::GetBalances, request);
  }
  absl::StatusOr<pb::Account> GetAccount(const pb::AccountRef& ref) {
    pb::GetAccountRequest request;
    *request.mutable_ref() = ref;
    return Call<pb::Account>(&pb::Ledger::Stub::GetAccount, request);
  }
  absl::StatusOr<pb::ListExpiringLotsResponse> ListExpiringLots(const std::string& org,
                                                                const std::string& customer,
                                                                int within_days) {
    pb::ListExpiringLotsRequest request;
    request.set_org_id(org);
    request.set_customer_id(customer);
    request.set_within_days(within_days);
    return Call<pb::ListExpiringLotsResponse>(&pb::Ledger::Stub::ListExpiringLots, request);
  }
  // Every page, newest first.
  absl::StatusOr<std::vector<pb::Transfer>> History(const std::string& org,
                                                    const std::string& customer) {
    std::vector<pb::Transfer> all;
    pb::ListHistoryRequest request;
    request.set_org_id(org);
    request.set_customer_id(customer);
    request.mutable_page()->set_page_size(500);
    for (int pages = 0; pages < 1000; ++pages) {
      auto page = Call<pb::ListHistoryResponse>(&pb::Ledger::Stub::ListHistory, request);
      if (!page.ok()) return page.status();
      all.insert(all.end(), page->transfers().begin(), page->transfers().end());
      if (page->page().next_page_token().empty()) return all;
      request.mutable_page()->set_page_token(page->page().next_page_token());
    }
    return absl::InternalError("ListHistory never reached its last page");
  }
  absl::StatusOr<pb::GetStatementResponse> GetStatement(const pb::AccountRef& account,
                                                        absl::Time from, absl::Time to) {
    pb::GetStatementRequest request;
    *request.mutable_account() = account;
    *request.mutable_from() = ToProto(from);
    *request.mutable_to() = ToProto(to);
    request.mutable_page()->set_page_size(500);
    return Call<pb::GetStatementResponse>(&pb::Ledger::Stub::GetStatement, request);
  }
  absl::StatusOr<pb::RunExpiryResponse> RunExpiry(absl::Time as_of) {
    pb::RunExpiryRequest request;
    *request.mutable_as_of() = ToProto(as_of);
    return Call<pb::RunExpiryResponse>(&pb::Ledger::Stub::RunExpiry, request);
  }
  absl::StatusOr<pb::CheckIntegrityResponse> CheckIntegrity() {
    return Call<pb::CheckIntegrityResponse>(&pb::Ledger::Stub::CheckIntegrity,
                                            pb::CheckIntegrityRequest(), absl::Seconds(60));
  }

 private:
  static pb::ResolvePendingRequest Resolve(const std::string& id, const std::string& pending_id) {
    pb::ResolvePendingRequest request;
    request.set_id(id);
    request.set_pending_id(pending_id);
    return request;
  }

  template <class Response, class Request, class Method>
  absl::StatusOr<Response> Call(Method method, const Request& request,
                                absl::Duration timeout = absl::Seconds(30)) {
    grpc::ClientContext context;
    rpc::PrepareClientContext(context, timeout, NewRequestId());
    Response response;
    grpc::Status status = ((*stub_).*method)(&context, request, &response);
    if (!status.ok()) return rpc::FromGrpcStatus(status);
    return response;
  }

  std::unique_ptr<pb::Ledger::Stub> stub_;
};

// Calls the ledger's own invariant check and fails the test (listing every check) unless all hold.
void ExpectIntegrity(LedgerClient& client, const std::string& when) {
  auto result = client.CheckIntegrity();
  ASSERT_TRUE(result.ok()) << when << ": CheckIntegrity failed: " << Describe(result);
  std::string checks;
  bool all_ok = true;
  for (const auto& check : result->checks()) {
    all_ok = all_ok && check.ok();
    absl::StrAppend(&checks, "  ", check.ok() ? "ok     " : "FAILED ", check.name(), ": ",
                    check.detail(), "\n");
  }
  EXPECT_TRUE(result->ok() && all_ok) << when << ": the ledger's invariants do not hold:\n"
                                      << checks;
  EXPECT_EQ(result->ok(), all_ok) << when << ": ok disagrees with its checks:\n" << checks;
  EXPECT_GT(result->checks_size(), 0) << when << ": CheckIntegrity ran no check";
}

// ---- The facts on Kafka ------------------------------------------------------------------------

// Reads mkt.ledger-facts.v1 with a consumer group of its own, starting at the offsets of
// `since` (the topic is shared and keeps every earlier run's facts), until every event id of
// `expected` arrived and the topic stayed quiet for a second, or `timeout` passed. Returns how
// often each event id of `org` was seen. Fails the test when a fact of `org` is malformed.
std::map<std::string, int> ReadFacts(const std::string& org, absl::Time since,
                                     const std::set<std::string>& expected,
                                     absl::Duration timeout = absl::Seconds(40)) {
  std::map<std::string, int> seen;
  std::string error;
  std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
  const std::map<std::string, std::string> settings = {
      {"bootstrap.servers", testing::KafkaBootstrap()},
      {"group.id", "rewards-e2e-" + RandomHex(6)},
      {"enable.auto.commit", "false"},
      {"enable.partition.eof", "true"},
      {"isolation.level", "read_committed"},
  };
  for (const auto& [key, value] : settings) {
    if (conf->set(key, value, error) != RdKafka::Conf::CONF_OK) {
      ADD_FAILURE() << key << ": " << error;
      return seen;
    }
  }
  std::unique_ptr<RdKafka::KafkaConsumer> consumer(
      RdKafka::KafkaConsumer::create(conf.get(), error));
  if (!consumer) {
    ADD_FAILURE() << "cannot create a Kafka consumer: " << error;
    return seen;
  }
  std::unique_ptr<RdKafka::Topic> topic(
      RdKafka::Topic::create(consumer.get(), kFactsTopic, nullptr, error));
  RdKafka::Metadata* raw_metadata = nullptr;
  if (!topic ||
      consumer->metadata(false, topic.get(), &raw_metadata, 10000) != RdKafka::ERR_NO_ERROR) {
    ADD_FAILURE() << "cannot read the metadata of " << kFactsTopic;
    return seen;
  }
  std::unique_ptr<RdKafka::Metadata> metadata(raw_metadata);
  std::vector<RdKafka::TopicPartition*> partitions;
  for (const auto* t : *metadata->topics()) {
    if (t->topic() != kFactsTopic) continue;
    for (const auto* p : *t->partitions()) {
      partitions.push_back(
          RdKafka::TopicPartition::create(kFactsTopic, p->id(), absl::ToUnixMillis(since)));
    }
  }
  if (partitions.empty()) {
    ADD_FAILURE() << kFactsTopic << " has no partitions: did mkt-rewards create it?";
    return seen;
  }
  if (auto err = consumer->offsetsForTimes(partitions, 10000); err != RdKafka::ERR_NO_ERROR) {
    ADD_FAILURE() << "offsetsForTimes: " << RdKafka::err2str(err);
  }
  for (auto* p : partitions) {
    // No message at or after `since` in this partition (yet): start at its end.
    if (p->offset() < 0) p->set_offset(RdKafka::Topic::OFFSET_END);
  }
  consumer->assign(partitions);
  std::set<int32_t> at_end;
  const size_t partition_count = partitions.size();
  RdKafka::TopicPartition::destroy(partitions);

  size_t expected_seen = 0;
  absl::Time last_message = absl::Now();
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    std::unique_ptr<RdKafka::Message> message(consumer->consume(200));
    if (message->err() == RdKafka::ERR__PARTITION_EOF) {
      at_end.insert(message->partition());
    } else if (message->err() == RdKafka::ERR_NO_ERROR) {
      at_end.erase(message->partition());
      last_message = absl::Now();
      ::marketing::common::v1::Envelope envelope;
      if (!envelope.ParseFromArray(message->payload(), static_cast<int>(message->len()))) continue;
      pb::TransferPosted fact;
      const bool parsed = envelope.payload().UnpackTo(&fact);
      const bool ours =
          envelope.org_id() == org || (parsed && (fact.transfer().debit().org_id() == org ||
                                                  fact.transfer().credit().org_id() == org));
      if (!ours) continue;
      EXPECT_TRUE(parsed) << "a fact of our org is not a TransferPosted: "
                          << envelope.payload().type_url();
      EXPECT_EQ(envelope.event_id(), "ledger:" + fact.transfer().id());
      if (++seen[envelope.event_id()] == 1 && expected.count(envelope.event_id()) > 0) {
        ++expected_seen;
      }
    } else if (message->err() != RdKafka::ERR__TIMED_OUT) {
      std::cerr << "kafka: " << message->errstr() << "\n";
    }
    if (expected_seen == expected.size() && at_end.size() == partition_count &&
        absl::Now() - last_message > absl::Seconds(1)) {
      break;
    }
  }
  consumer->close();
  return seen;
}

// Fails the test unless every id of `expected` was seen (exactly once when `exactly_once`) and
// nothing else of the org was.
void ExpectFacts(const std::set<std::string>& expected, const std::map<std::string, int>& seen,
                 bool exactly_once) {
  int missing = 0;
  int duplicated = 0;
  int unexpected = 0;
  std::string examples;
  for (const auto& id : expected) {
    auto it = seen.find(id);
    if (it == seen.end()) {
      if (++missing <= 5) absl::StrAppend(&examples, "  missing ", id, "\n");
    } else if (it->second > 1) {
      ++duplicated;
      if (exactly_once && duplicated <= 5) {
        absl::StrAppend(&examples, "  ", it->second, " times ", id, "\n");
      }
    }
  }
  for (const auto& [id, count] : seen) {
    if (expected.count(id) == 0 && ++unexpected <= 5) {
      absl::StrAppend(&examples, "  unexpected ", id, "\n");
    }
  }
  EXPECT_EQ(missing, 0) << examples;
  EXPECT_EQ(unexpected, 0) << examples;
  if (exactly_once) {
    EXPECT_EQ(duplicated, 0) << examples;
  }
  std::printf("facts: %zu expected, %zu distinct seen, %d missing, %d published more than once\n",
              expected.size(), seen.size(), missing, duplicated);
}

// ---- The service under test --------------------------------------------------------------------

// One mkt-rewards process on a fixed port (kept across restarts) and a client of it.
class RewardsReplica {
 public:
  RewardsReplica(std::string name, std::string dsn, std::map<std::string, std::string> extra_env)
      : name_(std::move(name)),
        dsn_(std::move(dsn)),
        extra_env_(std::move(extra_env)),
        port_(testing::FreePort()),
        metrics_port_(testing::FreePort()),
        log_(::testing::TempDir() + "rewards_e2e_" + name_ + "_" + RandomHex(4) + ".log") {}

  // Starts the process; returns when it serves gRPC health (or fails the test).
  bool Start() {
    std::map<std::string, std::string> env = {
        {"MKT_REWARDS_PG_DSN", dsn_},
        {"MKT_REWARDS_KAFKA_BOOTSTRAP", testing::KafkaBootstrap()},
        {"MKT_REWARDS_GRPC_ADDRESS", absl::StrCat("127.0.0.1:", port_)},
        {"MKT_REWARDS_METRICS_ADDRESS", absl::StrCat("127.0.0.1:", metrics_port_)},
        {"MKT_REWARDS_EXPIRY_INTERVAL_S", "0"},
        {"MKT_REWARDS_CAMPAIGN_CHANGES_TOPIC", ""},  // budgets are funded by the tests
        {"MKT_REWARDS_LOG_FORMAT", "json"},
    };
    for (const auto& [key, value] : extra_env_) env[key] = value;
    process_ = std::make_unique<testing::ChildProcess>(
        std::vector<std::string>{testing::BinDir() + "/services/rewards/mkt-rewards"}, env, log_);
    if (!testing::WaitForPort(port_, absl::Seconds(60))) {
      ADD_FAILURE() << "mkt-rewards " << name_ << " did not listen on " << port_ << "; its log:\n"
                    << testing::Tail(log_, 40);
      return false;
    }
    // A fresh channel: one that saw the previous process die may still be backing off.
    auto channel = rpc::Connect(target());
    if (!testing::WaitForGrpcHealth(channel, absl::Seconds(30))) {
      ADD_FAILURE() << "mkt-rewards " << name_ << " did not become healthy; its log:\n"
                    << testing::Tail(log_, 40);
      return false;
    }
    client_ = std::make_unique<LedgerClient>(target());
    return true;
  }

  // SIGKILL: no chance to finish anything in flight.
  void KillHard() {
    const int status = process_->Kill(SIGKILL);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "wait status " << status;
    process_.reset();
  }

  // SIGTERM, expecting a clean exit; does nothing if the process is not running.
  void Stop() {
    if (!process_) return;
    EXPECT_EQ(process_->Kill(SIGTERM), 0)
        << "mkt-rewards " << name_ << " did not exit 0 on SIGTERM";
    process_.reset();
  }

  LedgerClient& client() { return *client_; }
  std::string target() const { return absl::StrCat("127.0.0.1:", port_); }
  const std::string& name() const { return name_; }
  std::string LogTail(int lines) const { return testing::Tail(log_, lines); }

 private:
  std::string name_;
  std::string dsn_;
  std::map<std::string, std::string> extra_env_;
  int port_;
  int metrics_port_;
  std::string log_;
  std::unique_ptr<testing::ChildProcess> process_;
  std::unique_ptr<LedgerClient> client_;
};

class RewardsE2eTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (HasFailure()) {
      for (const auto& replica : replicas_) {
        std::cerr << "---- mkt-rewards " << replica->name() << " log (tail) ----\n"
                  << replica->LogTail(40);
      }
    }
    // Together: each takes a moment to exit, and the test need not wait for them in turn.
    std::vector<std::thread> stops;
    for (auto& replica : replicas_) stops.emplace_back([&replica] { replica->Stop(); });
    for (auto& stop : stops) stop.join();
  }

  // Starts a replica against this test's database (more env: e.g. the sweep interval).
  RewardsReplica* StartReplica(const std::string& name,
                               std::map<std::string, std::string> extra_env = {}) {
    replicas_.push_back(std::make_unique<RewardsReplica>(name, database_.dsn(), extra_env));
    if (!replicas_.back()->Start()) return nullptr;
    return replicas_.back().get();
  }

  // A fresh org per test: the facts topic is shared with every other run.
  const std::string org_ = "org-e2e-" + RandomHex(5);
  testing::TestDatabase database_;
  std::vector<std::unique_ptr<RewardsReplica>> replicas_;
};

pb::GrantRequest PointsGrant(const std::string& request_id, const std::string& org,
                             const std::string& campaign, const std::string& customer,
                             int64_t points, int64_t budget_cost_fen,
                             const pb::PointsExpiry& expiry) {
  pb::GrantRequest request;
  request.set_request_id(request_id);
  request.set_org_id(org);
  request.set_campaign_id(campaign);
  request.set_customer_id(customer);
  request.set_asset(pb::POINTS);
  request.set_quantity(points);
  request.set_budget_cost_fen(budget_cost_fen);
  *request.mutable_expiry() = expiry;
  return request;
}

bool Transient(const absl::Status& status) {
  return status.code() == absl::StatusCode::kUnavailable ||
         status.code() == absl::StatusCode::kResourceExhausted ||
         status.code() == absl::StatusCode::kDeadlineExceeded;
}

// What one grant request ended as.
struct GrantOutcome {
  bool ok = false;
  absl::StatusCode code = absl::StatusCode::kUnknown;
  ErrorReason reason = common::ERROR_REASON_UNSPECIFIED;
  std::vector<pb::Transfer> transfers;
  std::string error;
};

GrantOutcome OutcomeOf(const absl::StatusOr<pb::GrantResponse>& result) {
  GrantOutcome outcome;
  outcome.ok = result.ok();
  outcome.code = result.status().code();
  if (result.ok()) {
    outcome.transfers.assign(result->transfers().begin(), result->transfers().end());
  } else {
    outcome.reason = ReasonOf(result.status());
    outcome.error = Describe(result.status());
  }
  return outcome;
}

// Sends a grant, retrying with the same request id while the answer is transient (the request
// id makes the retry safe: a grant stored before the failure comes back as a replay).
GrantOutcome GrantWithRetry(LedgerClient& client, const pb::GrantRequest& request,
                            std::atomic<int>& retries) {
  for (int attempt = 1;; ++attempt) {
    auto result = client.Grant(request);
    if (result.ok() || !Transient(result.status()) || attempt == 40) return OutcomeOf(result);
    ++retries;
    absl::SleepFor(absl::Milliseconds(50));
  }
}

// Returns "" when `replay` is the same answer as `original`, else what differs.
std::string ReplayDifference(const GrantOutcome& original, const GrantOutcome& replay) {
  if (original.ok != replay.ok) {
    return absl::StrCat("ok ", original.ok, " then ", replay.ok, " (", replay.error, ")");
  }
  if (!original.ok) {
    return original.reason == replay.reason ? ""
                                            : absl::StrCat("reason ", ReasonName(original.reason),
                                                           " then ", ReasonName(replay.reason));
  }
  if (original.transfers.size() != replay.transfers.size()) return "a different transfer count";
  for (size_t i = 0; i < original.transfers.size(); ++i) {
    const pb::Transfer& a = original.transfers[i];
    const pb::Transfer& b = replay.transfers[i];
    if (a.id() != b.id() || a.amount() != b.amount() || a.state() != b.state() ||
        a.debit_account_id() != b.debit_account_id() ||
        a.credit_account_id() != b.credit_account_id() ||
        FromProto(a.created_at()) != FromProto(b.created_at())) {
      return absl::StrCat("transfer ", a.id(), " came back as ", b.ShortDebugString());
    }
  }
  return "";
}

int64_t PointsOf(const pb::GetBalancesResponse& balances) {
  for (const auto& account : balances.accounts()) {
    if (account.ref().asset() == pb::POINTS) return account.balance();
  }
  return 0;
}

// ------------------------------------------------------------------------------------------------
// 1 + 2. The acceptance: two replicas, one hot budget and one hot stock, 64 clients.

TEST_F(RewardsE2eTest, TwoReplicasGrantExactlyTheStockAndPublishEachTransferOnce) {
  constexpr int kGrants = 20000;
  constexpr int kThreads = 64;
  constexpr int kCustomers = 2000;
  constexpr int kReplayEvery = 16;  // every 16th call of a thread replays one of its earlier ids
  constexpr int64_t kBudget = 1'000'000;
  constexpr int64_t kStock = 5'000;
  constexpr int64_t kCostFen = 100;
  constexpr int64_t kPoints = 10;
  const std::string campaign = "camp-grab";
  const std::string template_id = "tpl-grab";
  const std::string run = RandomHex(4);
  const absl::Time started = absl::Now() - absl::Seconds(5);

  RewardsReplica* a = StartReplica("a");
  RewardsReplica* b = StartReplica("b");
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  std::vector<RewardsReplica*> replicas = {a, b};

  auto budget = a->client().Fund(run + "-budget", org_, pb::BUDGET_FEN, campaign, kBudget);
  ASSERT_TRUE(budget.ok()) << Describe(budget);
  auto stock = b->client().Fund(run + "-stock", org_, pb::STOCK, template_id, kStock);
  ASSERT_TRUE(stock.ok()) << Describe(stock);
  EXPECT_EQ(budget->transfer().id(), run + "-budget:fund");
  EXPECT_EQ(budget->account().balance(), kBudget);
  EXPECT_EQ(stock->account().balance(), kStock);
  // The accounts as the contract names them (STOCK: asset_ref and owner are the template id).
  const pb::AccountRef budget_ref = BudgetRef(org_, campaign);
  const pb::AccountRef stock_ref = StockRef(org_, template_id);

  auto request_of = [&](int i) {
    pb::GrantRequest request =
        PointsGrant(absl::StrCat(run, "-g", i), org_, campaign, absl::StrCat("c", i % kCustomers),
                    kPoints, kCostFen, DaysAfterGrant(365));
    request.set_stock_template_id(template_id);
    request.set_stock_units(1);
    request.set_event_id(absl::StrCat("evt-", run, "-", i));
    return request;
  };

  std::vector<GrantOutcome> outcomes(kGrants);
  std::atomic<int> retries{0};
  std::atomic<int> replays{0};
  std::mutex mu;
  std::vector<std::string> replay_differences;
  const absl::Time load_start = absl::Now();
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      std::vector<int> sent;
      for (int i = t, call = 0; i < kGrants; i += kThreads, ++call) {
        // Alternating replicas, so both take their turns on the hot budget and stock rows.
        RewardsReplica* replica = replicas[(t + call) % 2];
        outcomes[i] = GrantWithRetry(replica->client(), request_of(i), retries);
        sent.push_back(i);
        if (call % kReplayEvery == kReplayEvery - 1) {
          const int j = sent[std::uniform_int_distribution<size_t>(0, sent.size() - 1)(rng)];
          RewardsReplica* other = replicas[(t + call + 1) % 2];
          GrantOutcome again = GrantWithRetry(other->client(), request_of(j), retries);
          ++replays;
          if (std::string diff = ReplayDifference(outcomes[j], again); !diff.empty()) {
            std::lock_guard<std::mutex> lock(mu);
            replay_differences.push_back(absl::StrCat(run, "-g", j, ": ", diff));
          }
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  const absl::Duration load_time = absl::Now() - load_start;

  int granted = 0;
  std::map<std::string, int> failures;  // reason -> count
  std::string other_errors;
  std::vector<int64_t> expected_points(kCustomers, 0);
  std::set<std::string> expected_facts = {"ledger:" + budget->transfer().id(),
                                          "ledger:" + stock->transfer().id()};
  int malformed = 0;
  for (int i = 0; i < kGrants; ++i) {
    const GrantOutcome& outcome = outcomes[i];
    if (!outcome.ok) {
      ++failures[ReasonName(outcome.reason)];
      if (outcome.reason != common::STOCK_EXHAUSTED && other_errors.size() < 2000) {
        absl::StrAppend(&other_errors, "  ", run, "-g", i, ": ", outcome.error, "\n");
      }
      continue;
    }
    ++granted;
    expected_points[i % kCustomers] += kPoints;
    const std::string rid = absl::StrCat(run, "-g", i);
    std::set<std::string> ids;
    for (const auto& transfer : outcome.transfers) {
      ids.insert(transfer.id());
      expected_facts.insert("ledger:" + transfer.id());
      if (transfer.state() != pb::POSTED) ++malformed;
    }
    if (ids != std::set<std::string>{rid + ":budget", rid + ":stock", rid + ":benefit"}) {
      ++malformed;
    }
  }
  std::string histogram;
  for (const auto& [name, count] : failures) absl::StrAppend(&histogram, " ", name, "=", count);
  std::printf(
      "%d grants (+%d replays) from %d threads over 2 replicas in %.2f s: %d granted, refused:%s; "
      "%d transient retries\n",
      kGrants, replays.load(), kThreads, absl::ToDoubleSeconds(load_time), granted,
      histogram.c_str(), retries.load());

  // Stock (5,000 units) runs out before the budget (5,000 x 100 fen = half of it).
  EXPECT_EQ(granted, kStock);
  EXPECT_EQ(failures[ReasonName(common::STOCK_EXHAUSTED)], kGrants - kStock) << "other refusals:\n"
                                                                             << other_errors;
  EXPECT_EQ(malformed, 0) << "granted batches must be three POSTED transfers with derived ids";
  EXPECT_GT(replays.load(), kGrants / kReplayEvery / 2);
  EXPECT_TRUE(replay_differences.empty())
      << replay_differences.size() << " replays differ, e.g. " << replay_differences.front();

  auto budget_after = a->client().GetAccount(budget_ref);
  ASSERT_TRUE(budget_after.ok()) << Describe(budget_after);
  EXPECT_EQ(budget_after->balance(), kBudget - kStock * kCostFen);
  EXPECT_EQ(budget_after->debits_posted(), kStock * kCostFen);
  EXPECT_EQ(budget_after->debits_pending(), 0);
  auto stock_after = b->client().GetAccount(stock_ref);
  ASSERT_TRUE(stock_after.ok()) << Describe(stock_after);
  EXPECT_EQ(stock_after->balance(), 0);
  EXPECT_EQ(stock_after->debits_posted(), kStock);
  auto expense = a->client().GetAccount(SystemRef(org_, pb::BUDGET_FEN, "expense"));
  ASSERT_TRUE(expense.ok()) << Describe(expense);
  EXPECT_EQ(expense->balance(), kStock * kCostFen);
  auto issuance = b->client().GetAccount(SystemRef(org_, pb::POINTS, "issuance"));
  ASSERT_TRUE(issuance.ok()) << Describe(issuance);
  EXPECT_EQ(issuance->balance(), -kStock * kPoints);

  // Every customer holds exactly what its acknowledged grants gave it.
  absl::Time phase = absl::Now();
  std::atomic<int64_t> total_points{0};
  std::atomic<int> wrong_customers{0};
  std::atomic<int> read_errors{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 8; ++r) {
    readers.emplace_back([&, r] {
      LedgerClient& client = replicas[r % 2]->client();
      for (int c = r; c < kCustomers; c += 8) {
        auto balances = client.GetBalances(org_, absl::StrCat("c", c));
        if (!balances.ok()) {
          ++read_errors;
          continue;
        }
        const int64_t points = PointsOf(*balances);
        total_points += points;
        if (points != expected_points[c]) ++wrong_customers;
      }
    });
  }
  for (auto& reader : readers) reader.join();
  EXPECT_EQ(read_errors.load(), 0);
  EXPECT_EQ(total_points.load(), kStock * kPoints);
  EXPECT_EQ(wrong_customers.load(), 0) << "customers whose points differ from their grants";
  const absl::Duration read_time = absl::Now() - phase;

  phase = absl::Now();
  ExpectIntegrity(b->client(), "after the grab");
  const absl::Duration check_time = absl::Now() - phase;

  // 2. Each posted transfer reaches mkt.ledger-facts.v1 exactly once (no crash here, so not even
  // a relay re-publish is excusable).
  phase = absl::Now();
  const std::map<std::string, int> seen = ReadFacts(org_, started, expected_facts);
  ExpectFacts(expected_facts, seen, /*exactly_once=*/true);
  std::printf("balances read in %.2f s, CheckIntegrity %.2f s, facts read in %.2f s\n",
              absl::ToDoubleSeconds(read_time), absl::ToDoubleSeconds(check_time),
              absl::ToDoubleSeconds(absl::Now() - phase));
}

// ------------------------------------------------------------------------------------------------
// 3. kill -9 in the middle of a stream of grants.

TEST_F(RewardsE2eTest, GrantsAcknowledgedBeforeAKillAreKeptExactlyOnce) {
  constexpr int kStreams = 4;
  constexpr int kCustomers = 8;
  constexpr int kAcksBeforeKill = 300;
  constexpr int64_t kPoints = 7;
  constexpr int64_t kCostFen = 3;
  const std::string campaign = "camp-crash";
  const std::string run = RandomHex(4);
  const absl::Time started = absl::Now() - absl::Seconds(5);

  RewardsReplica* replica = StartReplica("crash");
  ASSERT_NE(replica, nullptr);
  auto budget =
      replica->client().Fund(run + "-budget", org_, pb::BUDGET_FEN, campaign, 100'000'000);
  ASSERT_TRUE(budget.ok()) << Describe(budget);

  auto request_of = [&](int n) {
    return PointsGrant(absl::StrCat(run, "-k", n), org_, campaign,
                       absl::StrCat("c", n % kCustomers), kPoints, kCostFen, DaysAfterGrant(30));
  };

  std::atomic<int> next{0};
  std::atomic<int> acks{0};
  std::atomic<bool> stop{false};
  std::atomic<bool> killing{false};
  std::mutex mu;
  std::map<int, GrantOutcome> acked;
  std::map<int, std::string> unacked;  // request number -> the error the client saw
  std::vector<std::string> failed_before_kill;
  std::vector<std::thread> streams;
  for (int s = 0; s < kStreams; ++s) {
    streams.emplace_back([&] {
      while (!stop) {
        const int n = next++;
        auto result = replica->client().Grant(request_of(n), absl::Seconds(10));
        std::lock_guard<std::mutex> lock(mu);
        if (result.ok()) {
          acked[n] = OutcomeOf(result);
          ++acks;
        } else {
          unacked[n] = Describe(result.status());
          // Whatever a call answers once the kill is under way is the crash; before, a bug.
          if (!killing) failed_before_kill.push_back(absl::StrCat(n, ": ", unacked[n]));
        }
      }
    });
  }
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (acks < kAcksBeforeKill && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(1));
  if (acks < kAcksBeforeKill) {
    stop = true;
    for (auto& stream : streams) stream.join();
    FAIL() << "the stream did not get going: " << acks.load() << " acknowledged grants in 60 s";
  }
  killing = true;
  replica->KillHard();
  stop = true;
  for (auto& stream : streams) stream.join();
  EXPECT_TRUE(failed_before_kill.empty())
      << failed_before_kill.size() << " grants failed before the kill, e.g. "
      << failed_before_kill.front();
  std::printf("killed after %zu acknowledged grants; %zu were in flight or sent after the kill\n",
              acked.size(), unacked.size());

  ASSERT_TRUE(replica->Start()) << "mkt-rewards did not come back on the same port";
  // Every request that was not acknowledged is retried; whether it had been committed or not,
  // it must now be there exactly once.
  for (const auto& [n, error] : unacked) {
    auto result = replica->client().Grant(request_of(n));
    EXPECT_TRUE(result.ok()) << "retry of " << n << " (first: " << error
                             << "): " << Describe(result);
  }
  // Every acknowledged grant, sent again, is a replay of what was acknowledged.
  int replay_differences = 0;
  for (const auto& [n, original] : acked) {
    GrantOutcome again = OutcomeOf(replica->client().Grant(request_of(n)));
    if (std::string diff = ReplayDifference(original, again); !diff.empty()) {
      if (++replay_differences <= 5) ADD_FAILURE() << "replay of " << n << ": " << diff;
    }
  }
  EXPECT_EQ(replay_differences, 0);

  const int total = static_cast<int>(acked.size() + unacked.size());
  EXPECT_EQ(total, next.load());
  std::set<std::string> expected_facts = {"ledger:" + budget->transfer().id()};
  int64_t points_total = 0;
  for (int c = 0; c < kCustomers; ++c) {
    const std::string customer = absl::StrCat("c", c);
    std::set<std::string> expected_ids;
    for (int n = c; n < total; n += kCustomers) {
      expected_ids.insert(absl::StrCat(run, "-k", n, ":benefit"));
      expected_facts.insert(absl::StrCat("ledger:", run, "-k", n, ":benefit"));
      expected_facts.insert(absl::StrCat("ledger:", run, "-k", n, ":budget"));
    }
    auto history = replica->client().History(org_, customer);
    ASSERT_TRUE(history.ok()) << Describe(history);
    std::map<std::string, int> times;
    for (const auto& transfer : *history) ++times[transfer.id()];
    int wrong = 0;
    for (const auto& [id, count] : times) {
      if (count != 1 || expected_ids.count(id) == 0) ++wrong;
    }
    EXPECT_EQ(times.size(), expected_ids.size()) << customer;
    EXPECT_EQ(wrong, 0) << customer << ": transfers listed twice or never requested";
    auto balances = replica->client().GetBalances(org_, customer);
    ASSERT_TRUE(balances.ok()) << Describe(balances);
    EXPECT_EQ(PointsOf(*balances), kPoints * static_cast<int64_t>(expected_ids.size())) << customer;
    points_total += PointsOf(*balances);
  }
  EXPECT_EQ(points_total, kPoints * total);
  auto budget_after = replica->client().GetAccount(budget->account().ref());
  ASSERT_TRUE(budget_after.ok()) << Describe(budget_after);
  EXPECT_EQ(budget_after->debits_posted(), kCostFen * total);

  ExpectIntegrity(replica->client(), "after the kill and the retries");

  // The facts of every grant reach Kafka; a relay killed between publishing and marking may
  // publish a batch again with the same event ids (consumers dedupe), so at least once here.
  const std::map<std::string, int> seen = ReadFacts(org_, started, expected_facts);
  ExpectFacts(expected_facts, seen, /*exactly_once=*/false);
}

// ------------------------------------------------------------------------------------------------
// 4. Points lots and their expiry.

TEST_F(RewardsE2eTest, PointsExpireLotByLotExactlyOnce) {
  const std::string campaign = "camp-expiry";
  const std::string customer = "c-expiry";
  RewardsReplica* replica = StartReplica("expiry");
  ASSERT_NE(replica, nullptr);
  LedgerClient& ledger = replica->client();
  ASSERT_TRUE(ledger.Fund("fund", org_, pb::BUDGET_FEN, campaign, 10'000).ok());

  const absl::TimeZone china = absl::FixedTimeZone(8 * 60 * 60);
  const absl::Time now = absl::FromUnixSeconds(absl::ToUnixSeconds(absl::Now()));
  const absl::Time l1_expiry = now + absl::Hours(24);
  const absl::Time l4_expiry = now + absl::Hours(24 * 15);
  pb::PointsExpiry fixed_l1;
  *fixed_l1.mutable_fixed_at() = ToProto(l1_expiry);
  pb::PointsExpiry fixed_l4;
  *fixed_l4.mutable_fixed_at() = ToProto(l4_expiry);
  pb::PointsExpiry end_of_next_year;
  end_of_next_year.set_end_of_year_plus_years(1);

  const absl::Time before_grants = absl::Now();
  auto l1 = ledger.Grant(PointsGrant("l1", org_, campaign, customer, 100, 1, fixed_l1));
  auto l2 = ledger.Grant(PointsGrant("l2", org_, campaign, customer, 200, 2, DaysAfterGrant(10)));
  auto l3 = ledger.Grant(PointsGrant("l3", org_, campaign, customer, 300, 3, end_of_next_year));
  auto l4 = ledger.Grant(PointsGrant("l4", org_, campaign, customer, 50, 4, fixed_l4));
  const absl::Time after_grants = absl::Now();
  for (const auto* grant : {&l1, &l2, &l3, &l4}) ASSERT_TRUE(grant->ok()) << Describe(*grant);
  EXPECT_EQ(l4->account().balance(), 650);

  // Before any spend, only L1 expires within two days.
  auto soon = ledger.ListExpiringLots(org_, customer, 2);
  ASSERT_TRUE(soon.ok()) << Describe(soon);
  ASSERT_EQ(soon->lots_size(), 1);
  EXPECT_EQ(soon->lots(0).remaining(), 100);
  EXPECT_EQ(soon->lots(0).granted_by_transfer_id(), "l1:benefit");
  EXPECT_EQ(FromProto(soon->lots(0).expires_at()), l1_expiry);
  EXPECT_EQ(soon->total(), 100);

  // 150 points: all of L1 (soonest) and 50 of L2 (next soonest).
  pb::SpendRequest spend;
  spend.set_request_id("spend-1");
  spend.set_org_id(org_);
  spend.set_customer_id(customer);
  spend.set_asset(pb::POINTS);
  spend.set_amount(150);
  spend.set_order_id("order-1");
  auto spent = ledger.Spend(spend);
  ASSERT_TRUE(spent.ok()) << Describe(spent);
  EXPECT_EQ(spent->transfer().id(), "spend-1:spend");
  EXPECT_EQ(spent->transfer().code(), pb::SPEND);
  EXPECT_EQ(spent->transfer().state(), pb::POSTED);
  EXPECT_EQ(spent->account().balance(), 500);

  auto lots = ledger.ListExpiringLots(org_, customer, 3650);
  ASSERT_TRUE(lots.ok()) << Describe(lots);
  ASSERT_EQ(lots->lots_size(), 3) << lots->ShortDebugString();
  // Soonest first: L2 (10 days), L4 (15 days), L3 (end of next year).
  const pb::ExpiringLot lot2 = lots->lots(0);
  const pb::ExpiringLot lot4 = lots->lots(1);
  const pb::ExpiringLot lot3 = lots->lots(2);
  EXPECT_EQ(lot2.granted_by_transfer_id(), "l2:benefit");
  EXPECT_EQ(lot2.remaining(), 150);
  // days_after_grant N: 23:59:59 China time on the N-th calendar day after the grant day.
  auto ten_days_after = [&](absl::Time granted) {
    const absl::CivilDay day = absl::ToCivilDay(granted, china) + 10;
    return absl::FromCivil(absl::CivilSecond(day.year(), day.month(), day.day(), 23, 59, 59),
                           china);
  };
  EXPECT_TRUE(FromProto(lot2.expires_at()) == ten_days_after(before_grants) ||
              FromProto(lot2.expires_at()) == ten_days_after(after_grants))
      << "days_after_grant=10 gave " << FromProto(lot2.expires_at()) << ", expected "
      << ten_days_after(after_grants);
  EXPECT_EQ(lot4.granted_by_transfer_id(), "l4:benefit");
  EXPECT_EQ(lot4.remaining(), 50);
  EXPECT_EQ(FromProto(lot4.expires_at()), l4_expiry);
  EXPECT_EQ(lot3.granted_by_transfer_id(), "l3:benefit");
  EXPECT_EQ(lot3.remaining(), 300);
  const int64_t grant_year = absl::ToCivilYear(after_grants, china).year();
  EXPECT_EQ(FromProto(lot3.expires_at()),
            absl::FromCivil(absl::CivilSecond(grant_year + 1, 12, 31, 23, 59, 59), china))
      << "end_of_year_plus_years=1: 31 Dec next year, 23:59:59 China time";
  EXPECT_EQ(lots->total(), 500);

  // Twenty days on, L2's and L4's leftovers expire (L1 has nothing left); a second run of the
  // job finds nothing more to do.
  const absl::Time as_of = absl::Now() + absl::Hours(24 * 20);
  auto first = ledger.RunExpiry(as_of);
  ASSERT_TRUE(first.ok()) << Describe(first);
  EXPECT_EQ(first->lots_expired(), 2);
  EXPECT_EQ(first->points_expired(), 200);
  auto second = ledger.RunExpiry(as_of);
  ASSERT_TRUE(second.ok()) << Describe(second);
  EXPECT_EQ(second->lots_expired(), 0);
  EXPECT_EQ(second->points_expired(), 0);

  auto account = ledger.GetAccount(CustomerRef(org_, customer));
  ASSERT_TRUE(account.ok()) << Describe(account);
  EXPECT_EQ(account->balance(), 300);
  EXPECT_EQ(account->available(), 300);
  EXPECT_EQ(account->credits_posted(), 650);
  EXPECT_EQ(account->debits_posted(), 350);
  auto left = ledger.ListExpiringLots(org_, customer, 3650);
  ASSERT_TRUE(left.ok()) << Describe(left);
  ASSERT_EQ(left->lots_size(), 1) << left->ShortDebugString();
  EXPECT_EQ(left->lots(0).granted_by_transfer_id(), "l3:benefit");
  EXPECT_EQ(left->total(), 300);
  auto expiry = ledger.GetAccount(SystemRef(org_, pb::POINTS, "expiry"));
  ASSERT_TRUE(expiry.ok()) << Describe(expiry);
  EXPECT_EQ(expiry->balance(), 200);

  // History: four grants, one spend, and one EXPIRE per lot that had something left.
  auto history = ledger.History(org_, customer);
  ASSERT_TRUE(history.ok()) << Describe(history);
  std::map<pb::TransferCode, int> codes;
  std::map<std::string, int64_t> expired;
  for (const auto& transfer : *history) {
    ++codes[transfer.code()];
    if (transfer.code() == pb::EXPIRE) expired[transfer.id()] = transfer.amount();
  }
  EXPECT_EQ(history->size(), 7u);
  EXPECT_EQ(codes[pb::GRANT], 4);
  EXPECT_EQ(codes[pb::SPEND], 1);
  EXPECT_EQ(expired, (std::map<std::string, int64_t>{
                         {absl::StrCat("expire:", lot2.lot_id()), 150},
                         {absl::StrCat("expire:", lot4.lot_id()), 50},
                     }));
  for (size_t i = 1; i < history->size(); ++i) {
    EXPECT_GE(FromProto((*history)[i - 1].created_at()), FromProto((*history)[i].created_at()))
        << "history must be newest first";
  }
  auto statement = ledger.GetStatement(CustomerRef(org_, customer), before_grants - absl::Hours(1),
                                       absl::Now() + absl::Hours(1));
  ASSERT_TRUE(statement.ok()) << Describe(statement);
  EXPECT_EQ(statement->opening_balance(), 0);
  EXPECT_EQ(statement->closing_balance(), 300);
  EXPECT_EQ(statement->lines_size(), 7);

  // Expired points cannot be spent.
  spend.set_request_id("spend-2");
  spend.set_amount(301);
  auto too_much = ledger.Spend(spend);
  EXPECT_EQ(ReasonOf(too_much.status()), common::INSUFFICIENT_BALANCE) << Describe(too_much);

  ExpectIntegrity(ledger, "after the expiry runs");
}

// ------------------------------------------------------------------------------------------------
// 5. Bad input never reaches the ledger.

TEST_F(RewardsE2eTest, BadInputIsRefusedWithItsFieldAndWritesNothing) {
  const std::string campaign = "camp-bad";
  const std::string customer = "c-bad";
  RewardsReplica* replica = StartReplica("bad-input");
  ASSERT_NE(replica, nullptr);
  LedgerClient& ledger = replica->client();
  ASSERT_TRUE(ledger.Fund("fund", org_, pb::BUDGET_FEN, campaign, 1000).ok());
  auto granted =
      ledger.Grant(PointsGrant("g0", org_, campaign, customer, 100, 10, DaysAfterGrant(30)));
  ASSERT_TRUE(granted.ok()) << Describe(granted);

  auto points_spec = [&](const std::string& id, int64_t amount) {
    pb::TransferSpec spec;
    spec.set_id(id);
    *spec.mutable_debit() = SystemRef(org_, pb::POINTS, "issuance");
    *spec.mutable_credit() = CustomerRef(org_, customer);
    spec.set_amount(amount);
    spec.set_code(pb::ADJUST);
    *spec.mutable_expiry() = DaysAfterGrant(30);
    return spec;
  };
  auto adjusted = ledger.CreateTransfers({points_spec("adj-1", 5)});
  ASSERT_TRUE(adjusted.ok()) << Describe(adjusted);

  // What must not move.
  struct Snapshot {
    pb::Account customer;
    pb::Account budget;
    pb::Account issuance;
    size_t history = 0;
  };
  auto snapshot = [&]() {
    Snapshot s;
    auto customer_account = ledger.GetAccount(CustomerRef(org_, customer));
    auto budget = ledger.GetAccount(BudgetRef(org_, campaign));
    auto issuance = ledger.GetAccount(SystemRef(org_, pb::POINTS, "issuance"));
    auto history = ledger.History(org_, customer);
    EXPECT_TRUE(customer_account.ok() && budget.ok() && issuance.ok() && history.ok())
        << Describe(customer_account) << " " << Describe(budget) << " " << Describe(issuance) << " "
        << Describe(history);
    if (customer_account.ok()) s.customer = *customer_account;
    if (budget.ok()) s.budget = *budget;
    if (issuance.ok()) s.issuance = *issuance;
    if (history.ok()) s.history = history->size();
    return s;
  };
  const Snapshot before = snapshot();
  EXPECT_EQ(before.customer.balance(), 105);

  struct Case {
    std::string what;
    std::vector<pb::TransferSpec> specs;
    ErrorReason reason;
    std::string field;  // exact; or a prefix when it ends with '*'
  };
  std::vector<Case> cases;
  cases.push_back(
      {"amount 0", {points_spec("bad-zero", 0)}, common::INVALID_ARGUMENT, "transfers[0].amount"});
  cases.push_back({"negative amount",
                   {points_spec("bad-neg", -7)},
                   common::INVALID_ARGUMENT,
                   "transfers[0].amount"});
  cases.push_back({"INT64 overflow of the customer's credits (one transfer)",
                   {points_spec("bad-max", std::numeric_limits<int64_t>::max())},
                   common::INVALID_ARGUMENT,
                   "transfers[0]*"});
  cases.push_back(
      {"INT64 overflow of the customer's credits (two transfers)",
       {points_spec("bad-half-1", int64_t{1} << 62), points_spec("bad-half-2", int64_t{1} << 62)},
       common::INVALID_ARGUMENT,
       "transfers[1]*"});
  {
    pb::TransferSpec spec = points_spec("bad-assets", 5);
    *spec.mutable_credit() = CustomerRef(org_, customer, pb::CASH_FEN);
    spec.clear_expiry();
    cases.push_back({"mismatched assets", {spec}, common::INVALID_ARGUMENT, "transfers[0]*"});
  }
  {
    pb::TransferSpec spec = points_spec("bad-self", 5);
    *spec.mutable_debit() = CustomerRef(org_, customer);
    cases.push_back({"debit == credit", {spec}, common::INVALID_ARGUMENT, "transfers[0]*"});
  }
  {
    pb::TransferSpec spec;
    spec.set_id("bad-campaign");
    *spec.mutable_debit() = BudgetRef(org_, "no-such-campaign");
    *spec.mutable_credit() = SystemRef(org_, pb::BUDGET_FEN, "expense");
    spec.set_amount(1);
    spec.set_code(pb::GRANT);
    cases.push_back({"unknown campaign account", {spec}, common::ACCOUNT_NOT_FOUND, ""});
  }
  cases.push_back({"id of 129 characters",
                   {points_spec(std::string(129, 'x'), 5)},
                   common::INVALID_ARGUMENT,
                   "transfers[0].id"});
  cases.push_back(
      {"id with a space", {points_spec("bad id", 5)}, common::INVALID_ARGUMENT, "transfers[0].id"});
  cases.push_back({"points to a customer without an expiry",
                   {[&] {
                     pb::TransferSpec spec = points_spec("bad-no-expiry", 5);
                     spec.clear_expiry();
                     return spec;
                   }()},
                   common::INVALID_ARGUMENT,
                   "transfers[0]*"});
  cases.push_back(
      {"same id, other content", {points_spec("adj-1", 6)}, common::IDEMPOTENCY_KEY_REUSED, ""});
  {
    // All or nothing: the first transfer is fine, the second overdraws the customer.
    pb::TransferSpec overdraw;
    overdraw.set_id("bad-overdraw");
    *overdraw.mutable_debit() = CustomerRef(org_, customer);
    *overdraw.mutable_credit() = SystemRef(org_, pb::POINTS, "redemption");
    overdraw.set_amount(1'000'000);
    overdraw.set_code(pb::SPEND);
    cases.push_back({"a linked batch whose second transfer overdraws",
                     {points_spec("bad-linked-ok", 5), overdraw},
                     common::INSUFFICIENT_BALANCE,
                     "transfers[1]"});
  }

  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    auto result = ledger.CreateTransfers(c.specs);
    ASSERT_FALSE(result.ok()) << c.what << " was accepted";
    EXPECT_EQ(ReasonOf(result.status()), c.reason) << Describe(result);
    if (c.reason == common::INVALID_ARGUMENT) {
      EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << Describe(result);
    }
    if (!c.field.empty() && c.field.back() == '*') {
      EXPECT_TRUE(absl::StartsWith(FieldOf(result.status()), c.field.substr(0, c.field.size() - 1)))
          << Describe(result);
    } else if (!c.field.empty()) {
      EXPECT_EQ(FieldOf(result.status()), c.field) << Describe(result);
    }
  }

  // The same through Grant.
  auto unknown = ledger.Grant(
      PointsGrant("g-unknown", org_, "no-such-campaign", customer, 5, 10, DaysAfterGrant(30)));
  EXPECT_EQ(ReasonOf(unknown.status()), common::ACCOUNT_NOT_FOUND) << Describe(unknown);
  auto zero =
      ledger.Grant(PointsGrant("g-zero", org_, campaign, customer, 0, 10, DaysAfterGrant(30)));
  EXPECT_EQ(zero.status().code(), absl::StatusCode::kInvalidArgument) << Describe(zero);
  EXPECT_FALSE(FieldOf(zero.status()).empty()) << Describe(zero);
  auto reused =
      ledger.Grant(PointsGrant("g0", org_, campaign, customer, 101, 10, DaysAfterGrant(30)));
  EXPECT_EQ(ReasonOf(reused.status()), common::IDEMPOTENCY_KEY_REUSED) << Describe(reused);
  auto budget_too_small =
      ledger.Grant(PointsGrant("g-budget", org_, campaign, customer, 5, 991, DaysAfterGrant(30)));
  EXPECT_EQ(ReasonOf(budget_too_small.status()), common::BUDGET_EXHAUSTED)
      << Describe(budget_too_small);

  const Snapshot after = snapshot();
  EXPECT_EQ(after.customer.DebugString(), before.customer.DebugString());
  EXPECT_EQ(after.budget.DebugString(), before.budget.DebugString());
  EXPECT_EQ(after.issuance.DebugString(), before.issuance.DebugString());
  EXPECT_EQ(after.history, before.history);
  ExpectIntegrity(ledger, "after the refused requests");

  // The boundary: 128 characters is a valid id.
  auto longest = ledger.CreateTransfers({points_spec(std::string(128, 'y'), 1)});
  EXPECT_TRUE(longest.ok()) << Describe(longest);
  ExpectIntegrity(ledger, "after the 128-character id");
}

// ------------------------------------------------------------------------------------------------
// 6. Two-phase spends: posted, voided, and voided by the sweeper at their timeout.

TEST_F(RewardsE2eTest, PendingSpendsArePostedVoidedAndTimedOut) {
  const std::string campaign = "camp-pending";
  const std::string customer = "c-pending";
  RewardsReplica* replica =
      StartReplica("pending", {{"MKT_REWARDS_PENDING_SWEEP_INTERVAL_S", "1"}});
  ASSERT_NE(replica, nullptr);
  LedgerClient& ledger = replica->client();
  ASSERT_TRUE(ledger.Fund("fund", org_, pb::BUDGET_FEN, campaign, 1000).ok());
  ASSERT_TRUE(
      ledger.Grant(PointsGrant("g", org_, campaign, customer, 1000, 1, DaysAfterGrant(30))).ok());

  auto pending_spend = [&](const std::string& request_id, int64_t amount, int timeout_seconds) {
    pb::SpendRequest spend;
    spend.set_request_id(request_id);
    spend.set_org_id(org_);
    spend.set_customer_id(customer);
    spend.set_asset(pb::POINTS);
    spend.set_amount(amount);
    spend.set_pending(true);
    spend.set_timeout_seconds(timeout_seconds);
    return ledger.Spend(spend);
  };
  auto account = [&]() {
    auto result = ledger.GetAccount(CustomerRef(org_, customer));
    EXPECT_TRUE(result.ok()) << Describe(result);
    return result.ok() ? *result : pb::Account();
  };
  auto lots_total = [&]() {
    auto lots = ledger.ListExpiringLots(org_, customer, 3650);
    EXPECT_TRUE(lots.ok()) << Describe(lots);
    return lots.ok() ? lots->total() : -1;
  };

  // Reserved, then posted.
  auto p1 = pending_spend("p1", 100, 60);
  ASSERT_TRUE(p1.ok()) << Describe(p1);
  EXPECT_EQ(p1->transfer().id(), "p1:spend");
  EXPECT_EQ(p1->transfer().state(), pb::PENDING);
  EXPECT_EQ(p1->account().balance(), 1000);
  EXPECT_EQ(p1->account().available(), 900);
  EXPECT_EQ(p1->account().debits_pending(), 100);
  EXPECT_EQ(lots_total(), 900) << "a pending debit takes its points from the lots at once";
  auto posted = ledger.PostPending("p1-post", "p1:spend");
  ASSERT_TRUE(posted.ok()) << Describe(posted);
  EXPECT_EQ(posted->id(), "p1-post");
  EXPECT_EQ(posted->state(), pb::POSTED);
  EXPECT_EQ(posted->pending_id(), "p1:spend");
  EXPECT_EQ(posted->amount(), 100);
  auto posted_again = ledger.PostPending("p1-post", "p1:spend");
  ASSERT_TRUE(posted_again.ok()) << Describe(posted_again);
  EXPECT_EQ(posted_again->id(), "p1-post");
  auto void_posted = ledger.VoidPending("p1-void", "p1:spend");
  EXPECT_EQ(ReasonOf(void_posted.status()), common::CONFLICT) << Describe(void_posted);
  pb::Account now = account();
  EXPECT_EQ(now.balance(), 900);
  EXPECT_EQ(now.available(), 900);
  EXPECT_EQ(now.debits_posted(), 100);
  EXPECT_EQ(now.debits_pending(), 0);
  EXPECT_EQ(lots_total(), 900);

  // Reserved, then voided: the points go back to their lots.
  auto p2 = pending_spend("p2", 200, 60);
  ASSERT_TRUE(p2.ok()) << Describe(p2);
  EXPECT_EQ(p2->account().available(), 700);
  auto voided = ledger.VoidPending("p2-void", "p2:spend");
  ASSERT_TRUE(voided.ok()) << Describe(voided);
  EXPECT_EQ(voided->pending_id(), "p2:spend");
  auto post_voided = ledger.PostPending("p2-post", "p2:spend");
  EXPECT_EQ(ReasonOf(post_voided.status()), common::CONFLICT) << Describe(post_voided);
  now = account();
  EXPECT_EQ(now.balance(), 900);
  EXPECT_EQ(now.available(), 900);
  EXPECT_EQ(now.debits_pending(), 0);
  EXPECT_EQ(lots_total(), 900);

  // Reserved with a 1 s timeout: the sweeper (every second) voids it.
  const absl::Time reserved_at = absl::Now();
  auto p3 = pending_spend("p3", 300, 1);
  ASSERT_TRUE(p3.ok()) << Describe(p3);
  EXPECT_EQ(p3->account().available(), 600);
  while (account().debits_pending() != 0 && absl::Now() - reserved_at < absl::Seconds(6)) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  now = account();
  EXPECT_EQ(now.debits_pending(), 0) << "the sweeper did not void p3 within 6 s";
  EXPECT_EQ(now.balance(), 900);
  EXPECT_EQ(now.available(), 900);
  EXPECT_EQ(lots_total(), 900);
  std::printf("p3 voided by the sweeper %.2f s after it was reserved\n",
              absl::ToDoubleSeconds(absl::Now() - reserved_at));
  auto post_late = ledger.PostPending("p3-post", "p3:spend");
  EXPECT_EQ(ReasonOf(post_late.status()), common::CONFLICT) << Describe(post_late);

  auto history = ledger.History(org_, customer);
  ASSERT_TRUE(history.ok()) << Describe(history);
  std::map<std::string, pb::TransferState> states;
  for (const auto& transfer : *history) states[transfer.id()] = transfer.state();
  EXPECT_EQ(states.count("timeout:p3:spend"), 1u) << "the sweeper's voiding transfer";
  EXPECT_EQ(states["p1-post"], pb::POSTED);

  ExpectIntegrity(ledger, "after the pending spends");
}

}  // namespace
}  // namespace mkt
