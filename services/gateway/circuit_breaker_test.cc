#include "services/gateway/circuit_breaker.h"

#include "gtest/gtest.h"
#include "libs/core/status.h"
#include "services/gateway/backend.h"
#include "services/gateway/test_fakes.h"

namespace mkt::gateway {
namespace {

using State = CircuitBreaker::State;

CircuitBreakerOptions Options() {
  return {.window = 10,
          .min_calls = 4,
          .failure_ratio = 0.5,
          .slow_ratio = 0.5,
          .slow_call = absl::Milliseconds(100),
          .open_for = absl::Seconds(5),
          .probes = 2};
}

void Calls(CircuitBreaker& b, int n, bool failed, absl::Duration latency = absl::Milliseconds(1)) {
  for (int i = 0; i < n; ++i) {
    ASSERT_TRUE(b.Allow());
    b.Record(failed, latency);
  }
}

TEST(CircuitBreakerTest, OpensOnFailureRatioOnlyAfterMinCalls) {
  testing::FakeClock clock;
  CircuitBreaker b("rewards", Options(), clock);
  Calls(b, 3, true);
  EXPECT_EQ(b.state(), State::kClosed) << "3 calls are fewer than min_calls";
  Calls(b, 1, true);
  EXPECT_EQ(b.state(), State::kOpen);
  EXPECT_FALSE(b.Allow());
  EXPECT_GE(b.RetryAfter(), absl::Seconds(4));
}

TEST(CircuitBreakerTest, StaysClosedBelowTheRatio) {
  testing::FakeClock clock;
  CircuitBreaker b("rewards", Options(), clock);
  for (int i = 0; i < 20; ++i) {
    Calls(b, 2, false);
    Calls(b, 1, true);
  }
  EXPECT_EQ(b.state(), State::kClosed);
}

TEST(CircuitBreakerTest, OpensOnSlowCalls) {
  testing::FakeClock clock;
  CircuitBreaker b("rewards", Options(), clock);
  Calls(b, 4, false, absl::Milliseconds(150));
  EXPECT_EQ(b.state(), State::kOpen);
}

TEST(CircuitBreakerTest, HalfOpensAfterTheOpenPeriodAndClosesAfterGoodProbes) {
  testing::FakeClock clock;
  CircuitBreaker b("rewards", Options(), clock);
  Calls(b, 4, true);
  ASSERT_EQ(b.state(), State::kOpen);
  clock.Advance(absl::Seconds(5));
  EXPECT_EQ(b.state(), State::kHalfOpen);
  ASSERT_TRUE(b.Allow());
  ASSERT_TRUE(b.Allow());
  EXPECT_FALSE(b.Allow()) << "only `probes` calls at a time while half-open";
  b.Record(false, absl::Milliseconds(1));
  EXPECT_EQ(b.state(), State::kHalfOpen);
  b.Record(false, absl::Milliseconds(1));
  EXPECT_EQ(b.state(), State::kClosed);
  EXPECT_TRUE(b.Allow());
}

TEST(CircuitBreakerTest, AFailedProbeOpensAgain) {
  testing::FakeClock clock;
  CircuitBreaker b("rewards", Options(), clock);
  Calls(b, 4, true);
  clock.Advance(absl::Seconds(6));
  ASSERT_TRUE(b.Allow());
  b.Record(true, absl::Milliseconds(1));
  EXPECT_EQ(b.state(), State::kOpen);
  EXPECT_FALSE(b.Allow());
  clock.Advance(absl::Seconds(5));
  EXPECT_TRUE(b.Allow());
}

TEST(CircuitBreakerTest, OnlyUnwellAnswersCountAsFailures) {
  EXPECT_TRUE(IsBackendFailure(Unavailable("down")));
  EXPECT_TRUE(IsBackendFailure(absl::DeadlineExceededError("slow")));
  EXPECT_TRUE(IsBackendFailure(Internal("bug")));
  EXPECT_FALSE(IsBackendFailure(NotFound("no such campaign")));
  EXPECT_FALSE(IsBackendFailure(absl::FailedPreconditionError("stock exhausted")));
  EXPECT_FALSE(IsBackendFailure(InvalidArgument("x", "bad")));
  EXPECT_FALSE(IsBackendFailure(absl::OkStatus()));
}

}  // namespace
}  // namespace mkt::gateway
