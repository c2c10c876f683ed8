#include "services/campaigns/participation_guards.h"

#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace mkt::campaigns {
namespace {

TEST(RateLimiterTest, AllowsTheBurstThenRefillsAtTheRate) {
  RateLimiter limiter(2, 3);
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  EXPECT_TRUE(limiter.Allow("c1", t0));
  EXPECT_TRUE(limiter.Allow("c1", t0));
  EXPECT_TRUE(limiter.Allow("c1", t0));
  EXPECT_FALSE(limiter.Allow("c1", t0));
  EXPECT_TRUE(limiter.Allow("c2", t0)) << "buckets are per key";
  EXPECT_TRUE(limiter.Allow("c1", t0 + absl::Milliseconds(500)));
  EXPECT_FALSE(limiter.Allow("c1", t0 + absl::Milliseconds(500)));
}

TEST(RateLimiterTest, ZeroRateIsOff) {
  RateLimiter limiter(0, 1);
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(limiter.Allow("c", absl::UnixEpoch()));
}

TEST(RateLimiterTest, ConcurrentCallersGetExactlyTheBurst) {
  RateLimiter limiter(0.001, 100);
  std::atomic<int> allowed{0};
  std::vector<std::thread> threads;
  const absl::Time now = absl::FromUnixSeconds(5);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 100; ++i) {
        if (limiter.Allow("hot", now)) allowed.fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(allowed.load(), 100);
}

TEST(SoldOutBoardTest, MarkExpiresAndGrantedKeysAreRemembered) {
  SoldOutBoard board(absl::Seconds(10));
  const absl::Time t0 = absl::FromUnixSeconds(100);
  EXPECT_FALSE(board.IsSoldOut("cmp", t0));
  board.MarkSoldOut("cmp", t0);
  EXPECT_TRUE(board.IsSoldOut("cmp", t0 + absl::Seconds(9)));
  EXPECT_FALSE(board.IsSoldOut("other", t0));
  EXPECT_FALSE(board.IsSoldOut("cmp", t0 + absl::Seconds(10)));
  board.RememberGranted("cmp", "key-1");
  EXPECT_TRUE(board.WasGranted("cmp", "key-1"));
  EXPECT_FALSE(board.WasGranted("cmp", "key-2"));
  EXPECT_FALSE(board.WasGranted("cmp2", "key-1"));
}

}  // namespace
}  // namespace mkt::campaigns
