#include "services/gateway/nonce_window.h"

#include <atomic>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace mkt::gateway {
namespace {

using Check = NonceWindow::Check;

const absl::Time kStart = absl::FromUnixSeconds(1'800'000'000);

TEST(NonceWindowTest, RetentionCoversAReplayOfARequestStampedAtTheFarEdge) {
  // Seen at t0 with timestamp t0 + 300, a replay passes the timestamp check until t0 + 600.
  EXPECT_GE(NonceWindow::RetentionFor(absl::Seconds(300)), absl::Seconds(600));
}

TEST(NonceWindowTest, RemembersUntilTheRetentionPasses) {
  NonceWindow window(absl::Seconds(610), 100);
  EXPECT_EQ(window.CheckAndRemember("ch_a", "nonce-1", kStart), Check::kFresh);
  EXPECT_EQ(window.CheckAndRemember("ch_a", "nonce-1", kStart + absl::Seconds(1)),
            Check::kReplayed);
  EXPECT_EQ(window.CheckAndRemember("ch_a", "nonce-1", kStart + absl::Seconds(609)),
            Check::kReplayed);
  EXPECT_EQ(window.CheckAndRemember("ch_a", "nonce-1", kStart + absl::Seconds(610)), Check::kFresh);
}

TEST(NonceWindowTest, ChannelsHaveSeparateNonces) {
  NonceWindow window(absl::Seconds(610), 100);
  EXPECT_EQ(window.CheckAndRemember("ch_a", "nonce-1", kStart), Check::kFresh);
  EXPECT_EQ(window.CheckAndRemember("ch_b", "nonce-1", kStart), Check::kFresh);
  EXPECT_EQ(window.CheckAndRemember("ch_b", "nonce-1", kStart), Check::kReplayed);
}

TEST(NonceWindowTest, AFullChannelIsRefusedInsteadOfForgettingEarly) {
  NonceWindow window(absl::Seconds(610), 3);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(window.CheckAndRemember("ch_a", "n-" + std::to_string(i), kStart), Check::kFresh);
  }
  EXPECT_EQ(window.CheckAndRemember("ch_a", "n-3", kStart), Check::kChannelFull);
  // The old nonces are still remembered, and another channel is not affected.
  EXPECT_EQ(window.CheckAndRemember("ch_a", "n-0", kStart), Check::kReplayed);
  EXPECT_EQ(window.CheckAndRemember("ch_b", "n-0", kStart), Check::kFresh);
  // Once they expire there is room again.
  EXPECT_EQ(window.CheckAndRemember("ch_a", "n-3", kStart + absl::Seconds(610)), Check::kFresh);
}

TEST(NonceWindowTest, AChannelAtItsRateLimitForTheWholeRetentionIsNeverRefused) {
  // 500 req/s (the default channel_rate) after a burst of 1,000, for twice the retention: the
  // default bound must hold every live nonce (a fixed 200,000 ran out after ~400 s).
  const absl::Duration retention = NonceWindow::RetentionFor(absl::Seconds(300));
  const size_t bound = NonceWindow::DefaultMaxPerChannel(500, 1000, retention, 8'000'000);
  EXPECT_GE(bound, 500u * 610u + 1000u);
  NonceWindow window(retention, bound, 8'000'000);
  int n = 0;
  for (int i = 0; i < 1000; ++i) {
    ASSERT_EQ(window.CheckAndRemember("ch_a", "b-" + std::to_string(i), kStart), Check::kFresh);
  }
  for (int s = 0; s < 2 * 610; ++s) {
    for (int i = 0; i < 500; ++i, ++n) {
      ASSERT_EQ(window.CheckAndRemember("ch_a", "n-" + std::to_string(n),
                                        kStart + absl::Seconds(s) + absl::Milliseconds(2 * i)),
                Check::kFresh)
          << "refused after " << s << " s at 500 req/s with " << window.size() << " live nonces";
    }
  }
  // Memory per nonce at this size (hash table plus expiry queue) stays small.
  const double per_nonce =
      static_cast<double>(window.MemoryBytes()) / static_cast<double>(window.size());
  EXPECT_LE(per_nonce, 48.0) << window.size() << " nonces, " << window.MemoryBytes() << " bytes";
  std::printf(
      "nonce window: %zu live nonces of one channel at 500 req/s take %zu bytes (%.1f "
      "bytes a nonce)\n",
      window.size(), window.MemoryBytes(), per_nonce);
}

TEST(NonceWindowTest, NoRateLimitMeansOnlyTheGlobalBound) {
  EXPECT_EQ(NonceWindow::DefaultMaxPerChannel(0, 0, absl::Seconds(610), 1234), 1234u);
  // A rate whose need exceeds the global bound is capped by it.
  EXPECT_EQ(NonceWindow::DefaultMaxPerChannel(1e9, 0, absl::Seconds(610), 1234), 1234u);
}

TEST(NonceWindowTest, TheGlobalBoundRefusesEveryChannelUntilNoncesExpire) {
  NonceWindow window(absl::Seconds(610), 4, 6);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(window.CheckAndRemember("ch_a", "n-" + std::to_string(i), kStart), Check::kFresh);
  }
  EXPECT_EQ(window.CheckAndRemember("ch_b", "n-0", kStart), Check::kFresh);
  EXPECT_EQ(window.CheckAndRemember("ch_b", "n-1", kStart), Check::kFresh);
  EXPECT_EQ(window.CheckAndRemember("ch_b", "n-2", kStart), Check::kGatewayFull);
  EXPECT_EQ(window.CheckAndRemember("ch_c", "n-0", kStart), Check::kGatewayFull);
  // Refused requests take no place, and replays are still recognised at the bound.
  EXPECT_EQ(window.CheckAndRemember("ch_b", "n-1", kStart), Check::kReplayed);
  EXPECT_EQ(window.size(), 6u);
  EXPECT_EQ(window.CheckAndRemember("ch_c", "n-0", kStart + absl::Seconds(610)), Check::kFresh);
}

TEST(NonceWindowTest, ExpiredNoncesOfQuietChannelsAreSwept) {
  NonceWindow window(absl::Seconds(610), 1000);
  for (int i = 0; i < 50; ++i) {
    window.CheckAndRemember("ch_" + std::to_string(i), "nonce-1", kStart);
  }
  EXPECT_EQ(window.size(), 50u);
  window.Sweep(kStart + absl::Seconds(609));
  EXPECT_EQ(window.size(), 50u);
  // Activity on one channel later also sweeps the others.
  window.CheckAndRemember("ch_new", "nonce-1", kStart + absl::Seconds(700));
  EXPECT_EQ(window.size(), 1u);
}

TEST(NonceWindowTest, ConcurrentUseOfOneNonceIsFreshExactlyOnce) {
  NonceWindow window(absl::Seconds(610), 100000);
  constexpr int kThreads = 8;
  constexpr int kNonces = 2000;
  std::atomic<int> fresh{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kNonces; ++i) {
        const std::string channel = "ch_" + std::to_string(i % 5);
        if (window.CheckAndRemember(channel, "nonce-" + std::to_string(i), kStart) ==
            Check::kFresh) {
          fresh.fetch_add(1);
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(fresh.load(), kNonces);
  EXPECT_EQ(window.size(), static_cast<size_t>(kNonces));
}

}  // namespace
}  // namespace mkt::gateway
