// The continuous grant sender against a fake rewards ledger (a real gRPC server whose answers the
// test holds back, refuses or fails) and the real PostgreSQL outbox: a slow grant holds only its
// own row, the window of calls refills across reads, refusals are recorded once, transport
// failures are retried, a reversal is never cancelled while its grant may be in flight, Stop()
// drains.
#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "libs/core/status.h"
#include "libs/pg/migrations.h"
#include "libs/pg/pool.h"
#include "libs/rpc/client.h"
#include "libs/rpc/server.h"
#include "libs/testing/testing.h"
#include "marketing/rewards/v1/ledger.grpc.pb.h"
#include "services/events/event_store.h"
#include "services/events/grant_sender.h"

namespace mkt::events {
namespace {

namespace rpb = ::marketing::rewards::v1;

// A Ledger whose Grant/Reverse answers are scripted per request id; held calls are answered only
// when the test releases them.
class FakeLedger final : public rpb::Ledger::CallbackService {
 public:
  grpc::ServerUnaryReactor* Grant(grpc::CallbackServerContext* context,
                                  const rpb::GrantRequest* request,
                                  rpb::GrantResponse* /*response*/) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    const std::string id = request->request_id();
    grpc::Status status;
    {
      absl::MutexLock lock(&mu_);
      ++grant_calls_[id];
      if (!in_flight_ids_.insert(id).second) ++overlapping_calls_;
      ++in_flight_;
      max_in_flight_ = std::max(max_in_flight_, in_flight_);
      if (hold_all_ || hold_.count(id) > 0) {
        held_[id] = reactor;
        return reactor;
      }
      status = AnswerLocked(id);
      Done(id);
    }
    reactor->Finish(status);
    return reactor;
  }

  // Each grant of the call is answered as Grant answers it (refused, or counted), except that a
  // transport failure scripted for any of them fails the whole call; the call is held while any
  // of its grants is.
  grpc::ServerUnaryReactor* GrantMany(grpc::CallbackServerContext* context,
                                      const rpb::GrantManyRequest* request,
                                      rpb::GrantManyResponse* response) override {
    {
      absl::MutexLock lock(&mu_);
      if (!grant_many_) return rpb::Ledger::CallbackService::GrantMany(context, request, response);
    }
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    std::vector<std::string> ids;
    for (const rpb::GrantRequest& grant : request->grants()) ids.push_back(grant.request_id());
    grpc::Status status;
    {
      absl::MutexLock lock(&mu_);
      ++many_calls_;
      max_rows_per_call_ = std::max(max_rows_per_call_, static_cast<int>(ids.size()));
      for (const std::string& id : ids) {
        ++grant_calls_[id];
        if (!in_flight_ids_.insert(id).second) ++overlapping_calls_;
        ++in_flight_;
      }
      max_in_flight_ = std::max(max_in_flight_, in_flight_);
      bool hold = hold_all_;
      for (const std::string& id : ids) hold = hold || hold_.count(id) > 0;
      if (hold) {
        held_many_.push_back({reactor, response, ids});
        return reactor;
      }
      status = AnswerManyLocked(ids, response);
    }
    reactor->Finish(status);
    return reactor;
  }

  grpc::ServerUnaryReactor* Reverse(grpc::CallbackServerContext* context,
                                    const rpb::ReverseRequest* request,
                                    rpb::ReverseResponse* /*response*/) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    {
      absl::MutexLock lock(&mu_);
      ++reverse_calls_[request->batch_id()];
    }
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  void Hold(const std::string& id) {
    absl::MutexLock lock(&mu_);
    hold_.insert(id);
  }
  void HoldAll(bool hold) {
    absl::MutexLock lock(&mu_);
    hold_all_ = hold;
  }
  void Refuse(const std::string& id) {
    absl::MutexLock lock(&mu_);
    refuse_.insert(id);
  }
  void FailTimes(const std::string& id, int times) {
    absl::MutexLock lock(&mu_);
    fail_times_[id] = times;
  }
  // The first `times` grants of `id` find no budget account: the campaign is not funded yet
  // (rewards has not handled its change).
  void UnfundedTimes(const std::string& id, int times) {
    absl::MutexLock lock(&mu_);
    unfunded_times_[id] = times;
  }
  // Answers the held call for `id` (if any) and stops holding it.
  void Release(const std::string& id) {
    std::vector<std::pair<grpc::ServerUnaryReactor*, grpc::Status>> answers;
    {
      absl::MutexLock lock(&mu_);
      hold_.erase(id);
      auto it = held_.find(id);
      if (it != held_.end()) {
        answers.emplace_back(it->second, AnswerLocked(id));
        held_.erase(it);
        Done(id);
      }
      for (auto call = held_many_.begin(); call != held_many_.end();) {
        if (std::find(call->ids.begin(), call->ids.end(), id) == call->ids.end()) {
          ++call;
          continue;
        }
        answers.emplace_back(call->reactor, AnswerManyLocked(call->ids, call->response));
        call = held_many_.erase(call);
      }
    }
    for (auto& [reactor, status] : answers) reactor->Finish(status);
  }
  void ReleaseAll() {
    std::vector<std::string> ids;
    {
      absl::MutexLock lock(&mu_);
      hold_all_ = false;
      for (const auto& [id, reactor] : held_) ids.push_back(id);
      for (const HeldMany& call : held_many_) ids.push_back(call.ids.front());
    }
    for (const std::string& id : ids) Release(id);
  }
  // The grant ids of the GrantMany calls being held.
  std::vector<std::string> HeldManyIds() {
    absl::MutexLock lock(&mu_);
    std::vector<std::string> ids;
    for (const HeldMany& call : held_many_) ids.insert(ids.end(), call.ids.begin(), call.ids.end());
    return ids;
  }
  // As a rewards service from before GrantMany: the method answers UNIMPLEMENTED.
  void WithoutGrantMany() {
    absl::MutexLock lock(&mu_);
    grant_many_ = false;
  }
  int GrantManyCalls() {
    absl::MutexLock lock(&mu_);
    return many_calls_;
  }
  int MaxRowsPerCall() {
    absl::MutexLock lock(&mu_);
    return max_rows_per_call_;
  }
  std::vector<std::string> HeldIds() {
    absl::MutexLock lock(&mu_);
    std::vector<std::string> ids;
    for (const auto& [id, reactor] : held_) ids.push_back(id);
    return ids;
  }

  int GrantCalls(const std::string& id) {
    absl::MutexLock lock(&mu_);
    auto it = grant_calls_.find(id);
    return it == grant_calls_.end() ? 0 : it->second;
  }
  int ReverseCalls(const std::string& id) {
    absl::MutexLock lock(&mu_);
    auto it = reverse_calls_.find(id);
    return it == reverse_calls_.end() ? 0 : it->second;
  }
  int TotalGrantCalls() {
    absl::MutexLock lock(&mu_);
    int total = 0;
    for (const auto& [id, n] : grant_calls_) total += n;
    return total;
  }
  int DistinctGrantIds() {
    absl::MutexLock lock(&mu_);
    return static_cast<int>(grant_calls_.size());
  }
  int InFlight() {
    absl::MutexLock lock(&mu_);
    return in_flight_;
  }
  int MaxInFlight() {
    absl::MutexLock lock(&mu_);
    return max_in_flight_;
  }
  int OverlappingCalls() {
    absl::MutexLock lock(&mu_);
    return overlapping_calls_;
  }

 private:
  grpc::Status AnswerLocked(const std::string& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (refuse_.count(id) > 0) {
      return rpc::ToGrpcStatus(Error(absl::StatusCode::kFailedPrecondition,
                                     ::marketing::common::v1::BUDGET_EXHAUSTED,
                                     "the campaign budget is exhausted"));
    }
    auto it = fail_times_.find(id);
    if (it != fail_times_.end() && it->second > 0) {
      --it->second;
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "ledger briefly unavailable");
    }
    auto unfunded = unfunded_times_.find(id);
    if (unfunded != unfunded_times_.end() && unfunded->second > 0) {
      --unfunded->second;
      return rpc::ToGrpcStatus(Error(absl::StatusCode::kNotFound,
                                     ::marketing::common::v1::ACCOUNT_NOT_FOUND,
                                     "campaign budget of camp-1 does not exist (it is created by "
                                     "funding it)"));
    }
    return grpc::Status::OK;
  }
  void Done(const std::string& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    in_flight_ids_.erase(id);
    --in_flight_;
  }
  grpc::Status AnswerManyLocked(const std::vector<std::string>& ids,
                                rpb::GrantManyResponse* response)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (const std::string& id : ids) Done(id);
    for (const std::string& id : ids) {
      auto it = fail_times_.find(id);
      if (it != fail_times_.end() && it->second > 0) {
        --it->second;
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, "ledger briefly unavailable");
      }
    }
    for (const std::string& id : ids) {
      rpb::GrantOutcome* outcome = response->add_outcomes();
      outcome->set_request_id(id);
      const grpc::Status status = AnswerLocked(id);
      if (status.ok()) continue;
      const absl::Status refusal = rpc::FromGrpcStatus(status);
      outcome->set_code(static_cast<int>(refusal.code()));
      outcome->set_message(std::string(refusal.message()));
      outcome->mutable_error()->set_reason(ReasonOf(refusal));
    }
    return grpc::Status::OK;
  }

  struct HeldMany {
    grpc::ServerUnaryReactor* reactor;
    rpb::GrantManyResponse* response;
    std::vector<std::string> ids;
  };

  absl::Mutex mu_;
  bool hold_all_ ABSL_GUARDED_BY(mu_) = false;
  std::set<std::string> hold_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> refuse_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> fail_times_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> unfunded_times_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, grpc::ServerUnaryReactor*> held_ ABSL_GUARDED_BY(mu_);
  std::vector<HeldMany> held_many_ ABSL_GUARDED_BY(mu_);
  bool grant_many_ ABSL_GUARDED_BY(mu_) = true;
  int many_calls_ ABSL_GUARDED_BY(mu_) = 0;
  int max_rows_per_call_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, int> grant_calls_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> reverse_calls_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> in_flight_ids_ ABSL_GUARDED_BY(mu_);
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int max_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int overlapping_calls_ ABSL_GUARDED_BY(mu_) = 0;
};

std::string GrantId(int i) { return absl::StrFormat("g-%05d", i); }

template <class Predicate>
bool WaitFor(Predicate done, absl::Duration timeout = absl::Seconds(30)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return done();
}

struct RowState {
  std::string state;
  bool granted = false;
  int attempts = 0;
  std::string reason;
};

class EventsGrantSenderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pool = pg::Pool::Connect({.dsn = db_.dsn(), .size = 4});
    ASSERT_TRUE(pool.ok()) << pool.status();
    pool_ = *std::move(pool);
    absl::Status migrated = pg::ApplyMigrations(*pool_, {&EventsMigrations()});
    ASSERT_TRUE(migrated.ok()) << migrated;
    store_ = std::make_unique<EventStore>(*pool_);
    auto server = rpc::Server::Start(
        {.service_name = "fake_ledger", .address = "127.0.0.1:0", .access_log = false}, {&ledger_});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  void TearDown() override {
    ledger_.ReleaseAll();
    StopSender();
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(1));
  }

  void StartSender(GrantSenderOptions options) {
    options.rewards_address = "127.0.0.1:" + std::to_string(server_->port());
    sender_ = std::make_unique<GrantSender>(*store_, options);
    sender_thread_ = std::thread([this] { sender_->Run(); });
  }

  void StopSender() {
    if (sender_ == nullptr) return;
    sender_->Stop();
    if (sender_thread_.joinable()) sender_thread_.join();
  }

  // Inserts outbox rows g-<first>..g-<last> (in that seq order) in `state`.
  void InsertGrants(int first, int last, const std::string& state = "pending") {
    absl::Status s = pg::WithTransaction(*pool_, [&](pqxx::work& tx) {
      tx.exec_params(
          "INSERT INTO grants (grant_id, event_key, rule_id, tier, campaign_id, org_id, "
          "  customer_id, window_key, asset, quantity, budget_cost_fen, stock_template_id, "
          "  stock_units, expiry_days, state) "
          "SELECT 'g-' || lpad(i::text, 5, '0'), 'test:ev-' || i, 'rule-1', 0, 'camp-1', "
          "  'org-1', 'cust-' || i, 'campaign', 1, 10, 1, '', 0, 30, $3 "
          "FROM generate_series($1::int, $2::int) AS i ORDER BY i",
          first, last, state);
      return absl::OkStatus();
    });
    ASSERT_TRUE(s.ok()) << s;
  }

  void Exec(const std::string& sql) {
    absl::Status s = pg::WithTransaction(*pool_, [&](pqxx::work& tx) {
      tx.exec(sql);
      return absl::OkStatus();
    });
    ASSERT_TRUE(s.ok()) << s;
  }

  int CountInState(const std::string& state) {
    int n = -1;
    absl::Status s = pg::WithTransaction(*pool_, [&](pqxx::work& tx) {
      n = tx.exec_params1("SELECT count(*) FROM grants WHERE state = $1", state)[0].as<int>();
      return absl::OkStatus();
    });
    EXPECT_TRUE(s.ok()) << s;
    return n;
  }

  RowState Row(const std::string& grant_id) {
    RowState r;
    absl::Status s = pg::WithTransaction(*pool_, [&](pqxx::work& tx) {
      pqxx::row row = tx.exec_params1(
          "SELECT state, granted, attempts, reason FROM grants WHERE grant_id = $1", grant_id);
      r.state = row[0].as<std::string>();
      r.granted = row[1].as<bool>();
      r.attempts = row[2].as<int>();
      r.reason = row[3].as<std::string>();
      return absl::OkStatus();
    });
    EXPECT_TRUE(s.ok()) << s;
    return r;
  }

  testing::TestDatabase db_;
  std::unique_ptr<pg::Pool> pool_;
  std::unique_ptr<EventStore> store_;
  FakeLedger ledger_;
  std::unique_ptr<rpc::Server> server_;
  std::unique_ptr<GrantSender> sender_;
  std::thread sender_thread_;
};

// The complaint of the P1 benchmark: one slow grant held a whole pass (claim, send all, record).
// Now the other grants, read over many claims, are sent and recorded while it is still held.
// (One Grant call per row here, so that the slow call holds exactly one row.)
TEST_F(EventsGrantSenderTest, OthersAreRecordedWhileOneGrantIsSlow) {
  InsertGrants(1, 600);
  ledger_.Hold(GrantId(1));  // the oldest: part of the first read
  StartSender({.max_in_flight = 32,
               .grants_per_call = 1,
               .claim_batch = 100,
               .finish_batch = 50,
               .rpc_timeout = absl::Seconds(60),
               .idle_poll = absl::Milliseconds(50)});

  ASSERT_TRUE(WaitFor([&] { return CountInState("granted") == 599; }))
      << "granted: " << CountInState("granted") << ", ledger calls: " << ledger_.TotalGrantCalls();
  // The slow one is still in flight, unrecorded, and was not sent a second time.
  EXPECT_EQ(ledger_.HeldIds(), std::vector<std::string>{GrantId(1)});
  const RowState slow = Row(GrantId(1));
  EXPECT_EQ(slow.state, "pending");
  EXPECT_EQ(slow.attempts, 0);
  EXPECT_EQ(ledger_.GrantCalls(GrantId(1)), 1);
  EXPECT_EQ(sender_->Stats().in_flight, 1);
  // A batch's rows leave `held` just after their outcomes commit, so the count of granted rows
  // can show them a moment before: wait for the last batch's.
  EXPECT_TRUE(WaitFor([&] { return sender_->Stats().held == 1; }))
      << "held: " << sender_->Stats().held;

  ledger_.Release(GrantId(1));
  ASSERT_TRUE(WaitFor([&] { return CountInState("granted") == 600; }));
  EXPECT_TRUE(Row(GrantId(1)).granted);
  // Every row sent exactly once, never two calls for one row at a time, window respected.
  EXPECT_EQ(ledger_.TotalGrantCalls(), 600);
  EXPECT_EQ(ledger_.DistinctGrantIds(), 600);
  EXPECT_EQ(ledger_.OverlappingCalls(), 0);
  EXPECT_LE(ledger_.MaxInFlight(), 32);
  ASSERT_TRUE(WaitFor([&] { return sender_->Stats().held == 0; }));
  EXPECT_EQ(sender_->Stats().outcomes_recorded, 600);
}

// The window stays full: with every answer held, exactly max_in_flight calls are open; each
// answer starts the next row at once (across reads of claim_batch rows) and is recorded while the
// rest stay held.
TEST_F(EventsGrantSenderTest, EachAnswerStartsTheNextRowAndIsRecordedAtOnce) {
  InsertGrants(1, 200);
  ledger_.HoldAll(true);
  StartSender({.max_in_flight = 16,
               .grants_per_call = 1,
               .claim_batch = 20,
               .finish_batch = 1000,
               .rpc_timeout = absl::Seconds(60),
               .idle_poll = absl::Milliseconds(50)});
  ASSERT_TRUE(WaitFor([&] { return ledger_.InFlight() == 16; }));
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(ledger_.InFlight(), 16);
  EXPECT_EQ(ledger_.TotalGrantCalls(), 16);

  // Answer rows 1..12 one after the other: the window refills past the first read of 20 rows.
  for (int i = 1; i <= 12; ++i) ledger_.Release(GrantId(i));
  ASSERT_TRUE(WaitFor([&] { return ledger_.TotalGrantCalls() == 28 && ledger_.InFlight() == 16; }))
      << "calls " << ledger_.TotalGrantCalls() << ", in flight " << ledger_.InFlight();
  ASSERT_TRUE(WaitFor([&] { return CountInState("granted") == 12; }));
  EXPECT_EQ(CountInState("pending"), 188);
  for (int i = 1; i <= 12; ++i) EXPECT_EQ(Row(GrantId(i)).state, "granted") << GrantId(i);

  ledger_.ReleaseAll();
  ASSERT_TRUE(WaitFor([&] { return CountInState("granted") == 200; }));
  EXPECT_EQ(ledger_.TotalGrantCalls(), 200);
  EXPECT_EQ(ledger_.OverlappingCalls(), 0);
  EXPECT_LE(ledger_.MaxInFlight(), 16);
}

// A business refusal is an outcome (recorded once, never retried); a transport failure is
// retried with backoff until the ledger answers. One Grant call per row; the same in GrantMany
// calls below.
TEST_F(EventsGrantSenderTest, RecordsRefusalsAndRetriesTransportFailures) {
  InsertGrants(1, 3);
  ledger_.Refuse(GrantId(2));
  ledger_.FailTimes(GrantId(3), 2);
  StartSender({.max_in_flight = 8, .grants_per_call = 1, .idle_poll = absl::Milliseconds(50)});

  ASSERT_TRUE(WaitFor([&] { return Row(GrantId(3)).state == "granted"; }))
      << "calls of the failing grant: " << ledger_.GrantCalls(GrantId(3));
  EXPECT_EQ(ledger_.GrantCalls(GrantId(3)), 3);
  EXPECT_EQ(Row(GrantId(3)).attempts, 3);
  EXPECT_EQ(Row(GrantId(1)).state, "granted");

  const RowState refused = Row(GrantId(2));
  EXPECT_EQ(refused.state, "rejected");
  EXPECT_FALSE(refused.granted);
  EXPECT_NE(refused.reason.find("BUDGET_EXHAUSTED"), std::string::npos) << refused.reason;
  absl::SleepFor(absl::Milliseconds(500));  // several polls
  EXPECT_EQ(ledger_.GrantCalls(GrantId(2)), 1);
  EXPECT_EQ(Row(GrantId(2)).attempts, 1);
}

// Rewards creates a campaign's budget account when its own consumer handles the campaign's
// change; until then the ledger answers ACCOUNT_NOT_FOUND. A grant sent meanwhile (rewards lags
// behind events) is retried with backoff, in a GrantMany call or alone, and granted once the
// budget is funded, not recorded as a refusal.
TEST_F(EventsGrantSenderTest, AGrantBeforeTheBudgetIsFundedIsRetriedUntilItIs) {
  InsertGrants(1, 2);
  ledger_.UnfundedTimes(GrantId(1), 3);
  ledger_.UnfundedTimes(GrantId(2), 2);
  StartSender({.max_in_flight = 8,
               .grants_per_call = 8,
               .idle_poll = absl::Milliseconds(50),
               .unfunded_retry = absl::Hours(1)});
  ASSERT_TRUE(WaitFor([&] { return CountInState("granted") == 2; }))
      << Row(GrantId(1)).state << " " << Row(GrantId(1)).reason;
  EXPECT_EQ(ledger_.GrantCalls(GrantId(1)), 4);
  EXPECT_EQ(Row(GrantId(1)).attempts, 4);
  EXPECT_TRUE(Row(GrantId(1)).granted);
  EXPECT_EQ(ledger_.GrantCalls(GrantId(2)), 3);

  // One Grant per row: the same.
  InsertGrants(3, 3);
  ledger_.UnfundedTimes(GrantId(3), 2);
  StopSender();
  StartSender({.max_in_flight = 8,
               .grants_per_call = 1,
               .idle_poll = absl::Milliseconds(50),
               .unfunded_retry = absl::Hours(1)});
  ASSERT_TRUE(WaitFor([&] { return Row(GrantId(3)).state == "granted"; }))
      << Row(GrantId(3)).state << " " << Row(GrantId(3)).reason;
  EXPECT_EQ(ledger_.GrantCalls(GrantId(3)), 3);
}

// The retry window starts at the row's first ACCOUNT_NOT_FOUND, not at its creation: rewards was
// down longer than unfunded_retry (the row's sends failed with UNAVAILABLE meanwhile) and, once
// back, serves Grant before its consumer funded the campaign. A row created 2 hours ago, first
// refused now, is still retried within a 1-hour window and granted once the budget is funded.
TEST_F(EventsGrantSenderTest, TheUnfundedRetryWindowStartsAtTheFirstRefusalNotAtCreation) {
  InsertGrants(1, 1);
  Exec("UPDATE grants SET created_at = now() - interval '2 hours' WHERE grant_id = 'g-00001'");
  ledger_.UnfundedTimes(GrantId(1), 2);
  StartSender({.max_in_flight = 8,
               .grants_per_call = 8,
               .idle_poll = absl::Milliseconds(50),
               .unfunded_retry = absl::Hours(1)});
  ASSERT_TRUE(WaitFor([&] {
    const std::string state = Row(GrantId(1)).state;
    return state == "granted" || state == "rejected";
  })) << Row(GrantId(1)).state
      << " " << Row(GrantId(1)).reason;
  const RowState row = Row(GrantId(1));
  EXPECT_EQ(row.state, "granted") << row.reason;
  EXPECT_TRUE(row.granted);
  EXPECT_EQ(ledger_.GrantCalls(GrantId(1)), 3);
  EXPECT_EQ(row.attempts, 3);
}

// A budget that stays unfunded past unfunded_retry, counted from the first ACCOUNT_NOT_FOUND (the
// campaign was never published in that org, ...), is a refusal: recorded rejected with the
// reason, and not sent again.
TEST_F(EventsGrantSenderTest, AGrantStillUnfundedAfterTheRetryWindowIsRejected) {
  InsertGrants(1, 1);
  ledger_.UnfundedTimes(GrantId(1), 1000);
  StartSender({.max_in_flight = 8,
               .grants_per_call = 8,
               .idle_poll = absl::Milliseconds(50),
               .unfunded_retry = absl::Milliseconds(500)});
  ASSERT_TRUE(WaitFor([&] { return Row(GrantId(1)).state == "rejected"; }))
      << Row(GrantId(1)).state << " " << Row(GrantId(1)).reason;
  const RowState refused = Row(GrantId(1));
  EXPECT_FALSE(refused.granted);
  EXPECT_NE(refused.reason.find("ACCOUNT_NOT_FOUND"), std::string::npos) << refused.reason;
  EXPECT_GE(ledger_.GrantCalls(GrantId(1)), 2) << "retried within the window";
  const int calls = ledger_.GrantCalls(GrantId(1));
  absl::SleepFor(absl::Milliseconds(500));  // several polls
  EXPECT_EQ(ledger_.GrantCalls(GrantId(1)), calls) << "a refusal is not retried";
}

// Reversals: a grant from before the sender started may have reached the ledger before a crash,
// so it is granted (idempotently) then reversed; one whose grant is in flight is not cancelled
// under it but reversed after its answer; one created since and never sent is cancelled without
// a call.
TEST_F(EventsGrantSenderTest, ReversalNeverCancelsAGrantThatMayHaveBeenSent) {
  InsertGrants(1, 1, "reverse_pending");  // left by an earlier (killed) process
  StartSender({.max_in_flight = 8, .idle_poll = absl::Milliseconds(50)});

  ASSERT_TRUE(WaitFor([&] { return Row(GrantId(1)).state == "reversed"; }))
      << Row(GrantId(1)).state;
  EXPECT_TRUE(Row(GrantId(1)).granted);
  EXPECT_EQ(ledger_.GrantCalls(GrantId(1)), 1);
  EXPECT_EQ(ledger_.ReverseCalls(GrantId(1)), 1);

  // Created after the start; its event is reversed while its Grant call is in flight.
  ledger_.Hold(GrantId(2));
  InsertGrants(2, 2);
  sender_->Notify();
  ASSERT_TRUE(WaitFor([&] { return ledger_.GrantCalls(GrantId(2)) == 1; }));
  Exec("UPDATE grants SET state = 'reverse_pending' WHERE grant_id = 'g-00002'");
  absl::SleepFor(absl::Milliseconds(400));  // several reads of the outbox
  EXPECT_EQ(Row(GrantId(2)).state, "reverse_pending");
  ledger_.Release(GrantId(2));
  ASSERT_TRUE(WaitFor([&] { return Row(GrantId(2)).state == "reversed"; }))
      << Row(GrantId(2)).state;
  EXPECT_TRUE(Row(GrantId(2)).granted);
  EXPECT_EQ(ledger_.GrantCalls(GrantId(2)), 1);
  EXPECT_EQ(ledger_.ReverseCalls(GrantId(2)), 1);

  // Created and reversed since the start, never sent: cancelled, no call at all.
  InsertGrants(3, 3, "reverse_pending");
  sender_->Notify();
  ASSERT_TRUE(WaitFor([&] { return Row(GrantId(3)).state == "cancelled"; }))
      << Row(GrantId(3)).state;
  EXPECT_EQ(ledger_.GrantCalls(GrantId(3)), 0);
  EXPECT_EQ(ledger_.ReverseCalls(GrantId(3)), 0);
}

// Two replicas on one database, each with its sender. B has R's Grant in flight when a refund
// sets R reverse_pending; A then reads R, sees no outcome recorded for it (attempts 0) and
// cancels it as never sent. B's Grant succeeds: R must still be reversed (exactly once), or the
// customer keeps a reward for a refunded transaction.
TEST_F(EventsGrantSenderTest, AGrantInFlightAtAnotherSenderIsReversedNotLeftCancelled) {
  // A reads only when notified (its first read, of an empty outbox, happens at start).
  GrantSender a(*store_, {.rewards_address = "127.0.0.1:" + std::to_string(server_->port()),
                          .max_in_flight = 8,
                          .idle_poll = absl::Hours(1)});
  std::thread a_thread([&a] { a.Run(); });
  absl::Cleanup stop_a = [&] {
    a.Stop();
    a_thread.join();
  };
  absl::SleepFor(absl::Milliseconds(300));
  StartSender({.max_in_flight = 8, .idle_poll = absl::Milliseconds(50)});  // B
  absl::SleepFor(absl::Milliseconds(300));

  ledger_.Hold(GrantId(1));
  InsertGrants(1, 1);
  sender_->Notify();
  ASSERT_TRUE(WaitFor([&] { return ledger_.GrantCalls(GrantId(1)) == 1; }));
  Exec("UPDATE grants SET state = 'reverse_pending' WHERE grant_id = 'g-00001'");
  a.Notify();
  // A may cancel R as never sent (before the fix it did, and nothing undid it); one sender per
  // database would not read it at all. Either way B's answer decides.
  WaitFor([&] { return Row(GrantId(1)).state == "cancelled"; }, absl::Seconds(2));
  ledger_.Release(GrantId(1));
  ASSERT_TRUE(WaitFor([&] { return Row(GrantId(1)).state == "reversed"; }))
      << Row(GrantId(1)).state << ", granted " << Row(GrantId(1)).granted;
  EXPECT_TRUE(Row(GrantId(1)).granted);
  EXPECT_EQ(ledger_.ReverseCalls(GrantId(1)), 1);
  absl::SleepFor(absl::Milliseconds(300));  // several reads by B
  EXPECT_EQ(ledger_.ReverseCalls(GrantId(1)), 1);
  EXPECT_EQ(Row(GrantId(1)).state, "reversed");
}

// Grants go in GrantMany calls of at most grants_per_call rows, each row sent once and recorded
// with its own outcome.
TEST_F(EventsGrantSenderTest, GrantsGoInCallsOfAtMostGrantsPerCall) {
  InsertGrants(1, 600);
  ledger_.Refuse(GrantId(300));
  StartSender({.max_in_flight = 200,
               .grants_per_call = 50,
               .claim_batch = 250,
               .idle_poll = absl::Milliseconds(50)});
  ASSERT_TRUE(WaitFor([&] { return CountInState("granted") == 599; }))
      << "granted: " << CountInState("granted") << ", calls: " << ledger_.GrantManyCalls();
  ASSERT_TRUE(WaitFor([&] { return Row(GrantId(300)).state == "rejected"; }));
  EXPECT_NE(Row(GrantId(300)).reason.find("BUDGET_EXHAUSTED"), std::string::npos)
      << Row(GrantId(300)).reason;
  EXPECT_EQ(ledger_.TotalGrantCalls(), 600) << "each row sent once";
  EXPECT_EQ(ledger_.DistinctGrantIds(), 600);
  EXPECT_EQ(ledger_.OverlappingCalls(), 0);
  EXPECT_LE(ledger_.MaxRowsPerCall(), 50);
  EXPECT_GE(ledger_.GrantManyCalls(), 12);
  EXPECT_LT(ledger_.GrantManyCalls(), 600) << "rows share calls";
  EXPECT_LE(ledger_.MaxInFlight(), 200);
  ASSERT_TRUE(WaitFor([&] { return sender_->Stats().held == 0; }));
  EXPECT_EQ(sender_->Stats().outcomes_recorded, 600);
}

// A slow GrantMany call holds its own rows (at most grants_per_call), no others: the window is
// counted in rows and refills around it.
TEST_F(EventsGrantSenderTest, ASlowGrantManyCallHoldsOnlyItsOwnRows) {
  InsertGrants(1, 600);
  ledger_.Hold(GrantId(1));
  StartSender({.max_in_flight = 32,
               .grants_per_call = 10,
               .claim_batch = 100,
               .finish_batch = 50,
               .rpc_timeout = absl::Seconds(60),
               .idle_poll = absl::Milliseconds(50)});
  ASSERT_TRUE(WaitFor([&] {
    return CountInState("granted") + static_cast<int>(ledger_.HeldManyIds().size()) == 600;
  })) << "granted: "
      << CountInState("granted");
  const std::vector<std::string> held = ledger_.HeldManyIds();
  EXPECT_THAT(held, ::testing::Contains(GrantId(1)));
  EXPECT_LE(held.size(), 10u);
  for (const std::string& id : held) EXPECT_EQ(Row(id).state, "pending") << id;

  ledger_.Release(GrantId(1));
  ASSERT_TRUE(WaitFor([&] { return CountInState("granted") == 600; }));
  EXPECT_EQ(ledger_.TotalGrantCalls(), 600) << "each row sent once";
  EXPECT_EQ(ledger_.OverlappingCalls(), 0);
  EXPECT_LE(ledger_.MaxInFlight(), 32);
}

// In a GrantMany call a refusal is that row's outcome; a failed call (transport) retries all of
// its rows, and a refusal is recorded once the ledger answers.
TEST_F(EventsGrantSenderTest, AFailedGrantManyCallRetriesEachOfItsRows) {
  InsertGrants(1, 3);
  ledger_.Refuse(GrantId(2));
  ledger_.FailTimes(GrantId(3), 2);
  StartSender({.max_in_flight = 8, .grants_per_call = 8, .idle_poll = absl::Milliseconds(50)});

  ASSERT_TRUE(WaitFor([&] { return Row(GrantId(3)).state == "granted"; }))
      << "calls of the failing grant: " << ledger_.GrantCalls(GrantId(3));
  EXPECT_EQ(ledger_.GrantCalls(GrantId(3)), 3);
  EXPECT_EQ(Row(GrantId(3)).attempts, 3);
  EXPECT_EQ(Row(GrantId(1)).state, "granted");
  ASSERT_TRUE(WaitFor([&] { return Row(GrantId(2)).state == "rejected"; }));
  const int calls_of_refused = ledger_.GrantCalls(GrantId(2));
  absl::SleepFor(absl::Milliseconds(500));  // several polls
  EXPECT_EQ(ledger_.GrantCalls(GrantId(2)), calls_of_refused) << "a refusal is not retried";
  EXPECT_NE(Row(GrantId(2)).reason.find("BUDGET_EXHAUSTED"), std::string::npos);
  EXPECT_GE(ledger_.GrantManyCalls(), 3);
}

// Against a rewards service without GrantMany (UNIMPLEMENTED) the rows of the refused call go
// again at once, one Grant each, and every later row too; nothing is recorded as a failure.
TEST_F(EventsGrantSenderTest, FallsBackToOneGrantPerRowWithoutGrantMany) {
  ledger_.WithoutGrantMany();
  InsertGrants(1, 50);
  StartSender({.max_in_flight = 16, .grants_per_call = 20, .idle_poll = absl::Milliseconds(50)});
  ASSERT_TRUE(WaitFor([&] { return CountInState("granted") == 50; }))
      << "granted: " << CountInState("granted");
  EXPECT_EQ(ledger_.TotalGrantCalls(), 50) << "each row granted once, by Grant";
  EXPECT_EQ(ledger_.GrantManyCalls(), 0);
  for (int i : {1, 20, 50}) EXPECT_EQ(Row(GrantId(i)).attempts, 1) << GrantId(i);
  InsertGrants(51, 60);
  sender_->Notify();
  ASSERT_TRUE(WaitFor([&] { return CountInState("granted") == 60; }));
  EXPECT_EQ(ledger_.TotalGrantCalls(), 60);
}

// Stop() lets the calls in flight finish and records their outcomes before Run() returns.
TEST_F(EventsGrantSenderTest, StopDrainsTheCallsInFlight) {
  InsertGrants(1, 1);
  ledger_.Hold(GrantId(1));
  StartSender({.max_in_flight = 8, .idle_poll = absl::Milliseconds(50)});
  ASSERT_TRUE(WaitFor([&] { return ledger_.GrantCalls(GrantId(1)) == 1; }));

  std::atomic<bool> returned{false};
  sender_->Stop();
  std::thread joiner([&] {
    sender_thread_.join();
    returned = true;
  });
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_FALSE(returned.load());
  InsertGrants(2, 2);  // not read any more: it stays due for the next start
  ledger_.Release(GrantId(1));
  joiner.join();
  EXPECT_TRUE(returned.load());
  EXPECT_EQ(Row(GrantId(1)).state, "granted");
  EXPECT_EQ(Row(GrantId(2)).state, "pending");
  EXPECT_EQ(ledger_.GrantCalls(GrantId(2)), 0);
}

}  // namespace
}  // namespace mkt::events
