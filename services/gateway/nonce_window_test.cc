#include "services/gateway/nonce_window.h"

#include <atomic>
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
  EXPECT_EQ(window.CheckAndRemember("ch_a", "n-3", kStart), Check::kWindowFull);
  // The old nonces are still remembered, and another channel is not affected.
  EXPECT_EQ(window.CheckAndRemember("ch_a", "n-0", kStart), Check::kReplayed);
  EXPECT_EQ(window.CheckAndRemember("ch_b", "n-0", kStart), Check::kFresh);
  // Once they expire there is room again.
  EXPECT_EQ(window.CheckAndRemember("ch_a", "n-3", kStart + absl::Seconds(610)), Check::kFresh);
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
