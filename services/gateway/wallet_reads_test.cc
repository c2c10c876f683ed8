// WalletReads against a real gRPC server standing in for rewards' Benefits service: which reads
// share a call, that each read gets its own answer or refusal, and the fallback to GetWallet for a
// service without GetWallets.
#include "services/gateway/wallet_reads.h"

#include <grpcpp/grpcpp.h>

#include <map>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "libs/core/status.h"
#include "libs/rpc/actor.h"
#include "libs/rpc/server.h"
#include "marketing/rewards/v1/benefits.grpc.pb.h"
#include "services/gateway/test_fakes.h"

namespace mkt::gateway {
namespace {

namespace pb = ::marketing::common::v1;
namespace rpb = ::marketing::rewards::v1;

// A wallet whose points are the number in the customer id ("c7" → 7); customer "bad" is refused
// with INVALID_ARGUMENT on field customer_id, as the real service refuses a malformed id, and
// customers starting with "down" fail UNAVAILABLE, as with the service's database down.
absl::StatusOr<rpb::Wallet> WalletOf(const rpb::GetWalletRequest& read) {
  if (read.customer_id().rfind("down", 0) == 0) {
    return Error(absl::StatusCode::kUnavailable, pb::DEPENDENCY_UNAVAILABLE, "database down");
  }
  int n = 0;
  if (read.customer_id().size() < 2 || !absl::SimpleAtoi(read.customer_id().substr(1), &n)) {
    return InvalidArgument("customer_id", "customer_id is not one");
  }
  rpb::Wallet wallet;
  wallet.set_points(n);
  return wallet;
}

// Answers GetWallets (unless told it has none) and GetWallet; holds each GetWallets call until
// released when asked to, and records what each call carried.
class FakeBenefits final : public rpb::Benefits::CallbackService {
 public:
  explicit FakeBenefits(bool has_get_wallets = true) : has_get_wallets_(has_get_wallets) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
  }
  ~FakeBenefits() override {
    Release();
    server_->Shutdown(std::chrono::system_clock::now());
  }
  std::string target() const { return "127.0.0.1:" + std::to_string(port_); }

  grpc::ServerUnaryReactor* GetWallets(grpc::CallbackServerContext* ctx,
                                       const rpb::GetWalletsRequest* req,
                                       rpb::GetWalletsResponse* resp) override {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    {
      absl::MutexLock lock(&mu_);
      ++get_wallets_attempts_;
    }
    if (!has_get_wallets_) {
      reactor->Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "no GetWallets here"));
      return reactor;
    }
    std::vector<std::string> customers;
    for (const rpb::GetWalletRequest& read : req->reads()) {
      customers.push_back(read.customer_id());
      rpb::WalletRead* out = resp->add_reads();
      absl::StatusOr<rpb::Wallet> wallet = WalletOf(read);
      if (wallet.ok()) {
        *out->mutable_wallet() = *wallet;
      } else {
        out->set_code(static_cast<int>(wallet.status().code()));
        out->set_message(std::string(wallet.status().message()));
        out->mutable_error()->set_reason(ReasonOf(wallet.status()));
        out->mutable_error()->set_field(FieldOf(wallet.status()));
      }
    }
    auto metadata = [ctx](const char* key) {
      auto it = ctx->client_metadata().find(key);
      if (it == ctx->client_metadata().end()) return std::string();
      return std::string(it->second.data(), it->second.size());
    };
    absl::MutexLock lock(&mu_);
    calls_.push_back({metadata(rpc::kActorOrgKey), metadata(rpc::kActorOperatorKey), customers});
    if (hold_) {
      held_.push_back(reactor);
    } else {
      reactor->Finish(grpc::Status::OK);
    }
    return reactor;
  }
  grpc::ServerUnaryReactor* GetWallet(grpc::CallbackServerContext* ctx,
                                      const rpb::GetWalletRequest* req,
                                      rpb::Wallet* resp) override {
    {
      absl::MutexLock lock(&mu_);
      ++single_calls_;
    }
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    absl::StatusOr<rpb::Wallet> wallet = WalletOf(*req);
    if (wallet.ok()) *resp = *wallet;
    reactor->Finish(rpc::ToGrpcStatus(wallet.status()));
    return reactor;
  }

  struct Call {
    std::string org;
    std::string operator_id;
    std::vector<std::string> customers;
  };
  void Hold() {
    absl::MutexLock lock(&mu_);
    hold_ = true;
  }
  // Answers the held calls and stops holding.
  void Release() {
    std::vector<grpc::ServerUnaryReactor*> held;
    {
      absl::MutexLock lock(&mu_);
      hold_ = false;
      held.swap(held_);
    }
    for (auto* reactor : held) reactor->Finish(grpc::Status::OK);
  }
  // Waits until `n` GetWallets calls have arrived.
  bool AwaitCalls(size_t n) {
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (absl::Now() < deadline) {
      if (calls().size() >= n) return true;
      absl::SleepFor(absl::Milliseconds(5));
    }
    return false;
  }
  std::vector<Call> calls() {
    absl::MutexLock lock(&mu_);
    return calls_;
  }
  int single_calls() {
    absl::MutexLock lock(&mu_);
    return single_calls_;
  }
  int get_wallets_attempts() {
    absl::MutexLock lock(&mu_);
    return get_wallets_attempts_;
  }

 private:
  const bool has_get_wallets_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  absl::Mutex mu_;
  bool hold_ = false;
  std::vector<grpc::ServerUnaryReactor*> held_;
  std::vector<Call> calls_;
  int single_calls_ = 0;
  int get_wallets_attempts_ = 0;
};

// One read's outcome, filled by its `done`.
struct Outcome {
  rpb::Wallet wallet;
  absl::Status status;
  absl::Notification done;
};

tenancy::Actor ChannelOf(const std::string& org, const std::string& channel = "") {
  return tenancy::Actor{
      .org_id = org, .operator_id = "channel:" + (channel.empty() ? org : channel), .roles = {}};
}

void Read(WalletReads& reads, const std::string& org, const std::string& customer,
          const tenancy::Actor& actor, Outcome& outcome) {
  rpb::GetWalletRequest request;
  request.set_org_id(org);
  request.set_customer_id(customer);
  reads.Read(request, &outcome.wallet, CallerIdentity{"req-" + customer, actor},
             [&outcome](absl::Status s) {
               outcome.status = std::move(s);
               outcome.done.Notify();
             });
}

class WalletReadsTest : public ::testing::Test {
 protected:
  testing::FakeClock clock_;
};

TEST_F(WalletReadsTest, ReadsThatArriveWhileACallRunsLeaveTogetherAndEachGetsItsOwnWallet) {
  FakeBenefits server;
  Backend rewards("rewards", server.target(), absl::Seconds(10), CircuitBreakerOptions{}, clock_);
  WalletReads reads(rewards, {.max_batch = 64, .max_in_flight = 1});
  server.Hold();
  const tenancy::Actor actor = ChannelOf("bank-a");
  std::vector<Outcome> outcomes(12);
  Read(reads, "bank-a", "c0", actor, outcomes[0]);
  ASSERT_TRUE(server.AwaitCalls(1));
  // c0's call is held: these wait, and then leave in one call, "bad" among them, whichever of
  // the bank's channels they came through.
  for (int i = 1; i < 11; ++i) {
    Read(reads, "bank-a", "c" + std::to_string(i),
         i % 2 == 0 ? actor : ChannelOf("bank-a", "app-" + std::to_string(i)), outcomes[i]);
  }
  Read(reads, "bank-a", "bad", actor, outcomes[11]);
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(server.calls().size(), 1u) << "a read left while its actor's one call was running";
  server.Release();
  for (Outcome& o : outcomes) ASSERT_TRUE(o.done.WaitForNotificationWithTimeout(absl::Seconds(10)));

  const std::vector<FakeBenefits::Call> calls = server.calls();
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0].customers, std::vector<std::string>{"c0"});
  EXPECT_EQ(calls[1].customers.size(), 11u);
  EXPECT_EQ(calls[0].org, "bank-a");
  EXPECT_EQ(calls[0].operator_id, "channel:bank-a");
  EXPECT_EQ(calls[1].org, "bank-a");
  EXPECT_EQ(calls[1].operator_id, "gateway:wallet-reads");
  for (int i = 0; i < 11; ++i) {
    EXPECT_TRUE(outcomes[i].status.ok()) << i << ": " << outcomes[i].status;
    EXPECT_EQ(outcomes[i].wallet.points(), i) << "read " << i << " got another read's wallet";
  }
  EXPECT_EQ(ReasonOf(outcomes[11].status), pb::INVALID_ARGUMENT) << outcomes[11].status;
  EXPECT_EQ(FieldOf(outcomes[11].status), "customer_id");
  EXPECT_EQ(outcomes[11].status.code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(WalletReadsTest, ABatchIsNoLargerThanMaxBatchAndOrgsDoNotShareCalls) {
  FakeBenefits server;
  Backend rewards("rewards", server.target(), absl::Seconds(10), CircuitBreakerOptions{}, clock_);
  WalletReads reads(rewards, {.max_batch = 4, .max_in_flight = 1});
  server.Hold();
  std::vector<Outcome> a(10);
  std::vector<Outcome> b(3);
  Read(reads, "bank-a", "c100", ChannelOf("bank-a"), a[0]);
  Read(reads, "bank-b", "c200", ChannelOf("bank-b"), b[0]);
  ASSERT_TRUE(server.AwaitCalls(2));  // one per actor, both at once
  for (int i = 1; i < 10; ++i)
    Read(reads, "bank-a", "c" + std::to_string(100 + i), ChannelOf("bank-a"), a[i]);
  for (int i = 1; i < 3; ++i)
    Read(reads, "bank-b", "c" + std::to_string(200 + i), ChannelOf("bank-b"), b[i]);
  server.Release();
  for (Outcome& o : a) ASSERT_TRUE(o.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  for (Outcome& o : b) ASSERT_TRUE(o.done.WaitForNotificationWithTimeout(absl::Seconds(10)));

  std::map<std::string, std::vector<size_t>> sizes;
  for (const FakeBenefits::Call& call : server.calls()) {
    sizes[call.org].push_back(call.customers.size());
    for (const std::string& c : call.customers) {
      const bool of_a = c.substr(1, 1) == "1";
      EXPECT_EQ(call.org, of_a ? "bank-a" : "bank-b") << c << " went in another org's call";
    }
  }
  EXPECT_EQ(sizes["bank-a"], (std::vector<size_t>{1, 4, 4, 1}));
  EXPECT_EQ(sizes["bank-b"], (std::vector<size_t>{1, 2}));
  for (int i = 0; i < 10; ++i) EXPECT_EQ(a[i].wallet.points(), 100 + i);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(b[i].wallet.points(), 200 + i);
}

TEST_F(WalletReadsTest, AServiceWithoutGetWalletsIsReadOneByOne) {
  FakeBenefits server(/*has_get_wallets=*/false);
  Backend rewards("rewards", server.target(), absl::Seconds(10), CircuitBreakerOptions{}, clock_);
  WalletReads reads(rewards, {.max_batch = 64, .max_in_flight = 4});
  std::vector<Outcome> outcomes(3);
  Read(reads, "bank-a", "c5", ChannelOf("bank-a"), outcomes[0]);
  ASSERT_TRUE(outcomes[0].done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  Read(reads, "bank-a", "c6", ChannelOf("bank-a"), outcomes[1]);
  Read(reads, "bank-a", "bad", ChannelOf("bank-a"), outcomes[2]);
  for (Outcome& o : outcomes) ASSERT_TRUE(o.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(outcomes[0].status.ok()) << outcomes[0].status;
  EXPECT_EQ(outcomes[0].wallet.points(), 5);
  EXPECT_EQ(outcomes[1].wallet.points(), 6);
  EXPECT_EQ(ReasonOf(outcomes[2].status), pb::INVALID_ARGUMENT) << outcomes[2].status;
  EXPECT_EQ(server.get_wallets_attempts(), 1) << "GetWallets was tried again at once";
  EXPECT_EQ(server.single_calls(), 3) << "after the first UNIMPLEMENTED every read goes alone";
}

// Reads that each fail as the backend being unwell count against the breaker although their
// call succeeded; once it is open, reads are refused at once, on the reader's thread.
TEST_F(WalletReadsTest, ReadsFailingAsTheBackendDownOpenTheBreaker) {
  FakeBenefits server;
  CircuitBreakerOptions breaker;
  breaker.window = 2;
  breaker.min_calls = 2;
  breaker.failure_ratio = 0.5;
  breaker.open_for = absl::Minutes(10);
  Backend rewards("rewards", server.target(), absl::Seconds(10), breaker, clock_);
  WalletReads reads(rewards, {.max_batch = 64, .max_in_flight = 1});
  for (const char* customer : {"down1", "down2"}) {
    Outcome o;
    Read(reads, "bank-a", customer, ChannelOf("bank-a"), o);
    ASSERT_TRUE(o.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
    EXPECT_EQ(o.status.code(), absl::StatusCode::kUnavailable) << o.status;
  }
  EXPECT_EQ(rewards.breaker().state(), CircuitBreaker::State::kOpen);
  Outcome refused;
  Read(reads, "bank-a", "c1", ChannelOf("bank-a"), refused);
  EXPECT_TRUE(refused.done.HasBeenNotified()) << "an open breaker answers before Read returns";
  EXPECT_EQ(ReasonOf(refused.status), pb::DEPENDENCY_UNAVAILABLE) << refused.status;
  EXPECT_NE(std::string(refused.status.message()).find("circuit open"), std::string::npos);
  EXPECT_EQ(server.calls().size(), 2u);
}

// The destructor waits for a call in flight and its reads' answers.
TEST_F(WalletReadsTest, TheDestructorWaitsForACallInFlight) {
  FakeBenefits server;
  Backend rewards("rewards", server.target(), absl::Seconds(10), CircuitBreakerOptions{}, clock_);
  auto reads = std::make_unique<WalletReads>(
      rewards, WalletReadsOptions{.max_batch = 64, .max_in_flight = 1});
  server.Hold();
  Outcome o;
  Read(*reads, "bank-a", "c3", ChannelOf("bank-a"), o);
  ASSERT_TRUE(server.AwaitCalls(1));
  absl::Notification destroyed;
  std::thread destroy([&] {
    reads.reset();
    destroyed.Notify();
  });
  EXPECT_FALSE(destroyed.WaitForNotificationWithTimeout(absl::Milliseconds(200)))
      << "the gatherer went while its call was running";
  server.Release();
  destroy.join();
  EXPECT_TRUE(o.done.HasBeenNotified());
  EXPECT_EQ(o.wallet.points(), 3);
}

TEST_F(WalletReadsTest, ReadsOfAnUnreachableServiceEachFailAsUnavailable) {
  // Port 1 on loopback: nothing listens.
  Backend rewards("rewards", "127.0.0.1:1", absl::Seconds(5), CircuitBreakerOptions{}, clock_);
  auto reads = std::make_unique<WalletReads>(
      rewards, WalletReadsOptions{.max_batch = 64, .max_in_flight = 1});
  std::vector<Outcome> outcomes(5);
  for (int i = 0; i < 5; ++i) {
    Read(*reads, "bank-a", "c" + std::to_string(i), ChannelOf("bank-a"), outcomes[i]);
  }
  for (Outcome& o : outcomes) {
    ASSERT_TRUE(o.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
    EXPECT_EQ(o.status.code(), absl::StatusCode::kUnavailable) << o.status;
  }
  const absl::Time before = absl::Now();
  reads.reset();  // nothing in flight: returns at once
  EXPECT_LT(absl::Now() - before, absl::Seconds(1));
}

}  // namespace
}  // namespace mkt::gateway
