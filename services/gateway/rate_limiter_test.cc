#include "services/gateway/rate_limiter.h"

#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "services/gateway/test_fakes.h"

namespace mkt::gateway {
namespace {

TEST(RateLimiterTest, AllowsTheBurstThenRefusesWithTheWaitForOneToken) {
  testing::FakeClock clock;
  RateLimiter limiter({.per_second = 2, .burst = 3}, clock);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(limiter.Acquire("ch_a"), absl::ZeroDuration()) << i;
  const absl::Duration wait = limiter.Acquire("ch_a");
  EXPECT_GT(wait, absl::ZeroDuration());
  EXPECT_LE(wait, absl::Milliseconds(500));
  // A refused request takes nothing: after half a second exactly one more goes through.
  clock.Advance(absl::Milliseconds(500));
  EXPECT_EQ(limiter.Acquire("ch_a"), absl::ZeroDuration());
  EXPECT_GT(limiter.Acquire("ch_a"), absl::ZeroDuration());
}

TEST(RateLimiterTest, KeysAreIndependent) {
  testing::FakeClock clock;
  RateLimiter limiter({.per_second = 1, .burst = 1}, clock);
  EXPECT_EQ(limiter.Acquire("ch_a"), absl::ZeroDuration());
  EXPECT_GT(limiter.Acquire("ch_a"), absl::ZeroDuration());
  EXPECT_EQ(limiter.Acquire("ch_b"), absl::ZeroDuration());
}

TEST(RateLimiterTest, RefillStopsAtTheBurst) {
  testing::FakeClock clock;
  RateLimiter limiter({.per_second = 10, .burst = 2}, clock);
  clock.Advance(absl::Hours(1));
  EXPECT_EQ(limiter.Acquire("k"), absl::ZeroDuration());
  EXPECT_EQ(limiter.Acquire("k"), absl::ZeroDuration());
  EXPECT_GT(limiter.Acquire("k"), absl::ZeroDuration());
}

TEST(RateLimiterTest, DisabledLimitAlwaysAllows) {
  testing::FakeClock clock;
  RateLimiter limiter({}, clock);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(limiter.Acquire("k"), absl::ZeroDuration());
  EXPECT_EQ(limiter.buckets(), 0u);
}

TEST(RateLimiterTest, ConcurrentCallersGetExactlyTheBurst) {
  testing::FakeClock clock;  // time stands still: no refill
  RateLimiter limiter({.per_second = 1, .burst = 100}, clock);
  std::atomic<int> allowed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        if (limiter.Acquire("hot") == absl::ZeroDuration()) allowed.fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(allowed.load(), 100);
}

TEST(RateLimiterTest, IdleBucketsArePrunedAtTheCap) {
  testing::FakeClock clock;
  RateLimiter limiter({.per_second = 10, .burst = 1}, clock, /*max_buckets=*/10);
  for (int i = 0; i < 10; ++i) limiter.Acquire("k" + std::to_string(i));
  clock.Advance(absl::Seconds(1));
  limiter.Acquire("new");
  EXPECT_EQ(limiter.buckets(), 1u);
}

}  // namespace
}  // namespace mkt::gateway
