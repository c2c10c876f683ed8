// Backend against a target where nothing listens: how calls end, on which path, and that the
// circuit breaker answers without calling once it has opened.
#include "services/gateway/backend.h"

#include <atomic>
#include <thread>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "libs/core/status.h"
#include "marketing/rewards/v1/benefits.pb.h"
#include "services/gateway/test_fakes.h"

namespace mkt::gateway {
namespace {

namespace pb = ::marketing::common::v1;
namespace rpb = ::marketing::rewards::v1;

const google::protobuf::MethodDescriptor& GetWallet() {
  return *google::protobuf::DescriptorPool::generated_pool()->FindMethodByName(
      "marketing.rewards.v1.Benefits.GetWallet");
}

TEST(BackendTest, AsyncCallsEndOnceAndAnOpenBreakerAnswersBeforeCallAsyncReturns) {
  testing::FakeClock clock;
  CircuitBreakerOptions breaker;
  breaker.window = 4;
  breaker.min_calls = 2;
  breaker.failure_ratio = 0.5;
  breaker.open_for = absl::Minutes(10);
  // Port 1 on loopback: nothing listens, every call fails as the backend being down.
  auto backend =
      std::make_unique<Backend>("nowhere", "127.0.0.1:1", absl::Seconds(5), breaker, clock);
  rpb::GetWalletRequest request;
  request.set_org_id("bank-a");
  request.set_customer_id("c1");
  const CallerIdentity caller{"req-backend-test", std::nullopt};

  for (int i = 0; i < 2; ++i) {
    rpb::Wallet wallet;
    std::atomic<int> ends{0};
    absl::Status outcome;
    absl::Notification done;
    backend->CallAsync(GetWallet(), request, &wallet, caller, [&](absl::Status s) {
      outcome = std::move(s);
      ends.fetch_add(1);
      done.Notify();
    });
    ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
    EXPECT_EQ(outcome.code(), absl::StatusCode::kUnavailable) << outcome;
    absl::SleepFor(absl::Milliseconds(50));  // a second end would come by now
    EXPECT_EQ(ends.load(), 1);
  }
  EXPECT_EQ(backend->breaker().state(), CircuitBreaker::State::kOpen);

  // Open: answered on this thread, before CallAsync returns, without a call.
  rpb::Wallet wallet;
  bool answered = false;
  absl::Status refused;
  backend->CallAsync(GetWallet(), request, &wallet, caller, [&](absl::Status s) {
    refused = std::move(s);
    answered = true;
  });
  EXPECT_TRUE(answered);
  EXPECT_EQ(ReasonOf(refused), pb::DEPENDENCY_UNAVAILABLE) << refused;
  EXPECT_NE(std::string(refused.message()).find("circuit open"), std::string::npos) << refused;
  // The blocking call is the same call.
  EXPECT_EQ(ReasonOf(backend->Call(GetWallet(), request, &wallet, caller)),
            pb::DEPENDENCY_UNAVAILABLE);

  const absl::Time before = absl::Now();
  backend.reset();  // nothing in flight: returns at once
  EXPECT_LT(absl::Now() - before, absl::Seconds(1));
}

// The destructor waits for a call in flight, which ends by its deadline at the latest.
TEST(BackendTest, TheDestructorWaitsForACallInFlight) {
  testing::FakeClock clock;
  auto backend = std::make_unique<Backend>("nowhere", "127.0.0.1:1", absl::Seconds(5),
                                           CircuitBreakerOptions{}, clock);
  rpb::GetWalletRequest request;
  rpb::Wallet wallet;
  std::atomic<bool> ended{false};
  backend->CallAsync(GetWallet(), request, &wallet, {"req-in-flight", std::nullopt},
                     [&](absl::Status) {
                       absl::SleepFor(absl::Milliseconds(200));  // a slow answer
                       ended.store(true);
                     });
  backend.reset();
  EXPECT_TRUE(ended.load()) << "the backend went while its call's answer was still running";
}

}  // namespace
}  // namespace mkt::gateway
