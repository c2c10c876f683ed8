#include "services/campaigns/participation_guards.h"

#include <algorithm>
#include <atomic>
#include <optional>
#include <string>
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

using Verdict = SoldOutBoard::Verdict;

TEST(SoldOutBoardTest, AMarkRefusesUnknownKeysUntilItExpires) {
  SoldOutBoard board(absl::Seconds(10));
  const absl::Time t0 = absl::FromUnixSeconds(100);
  EXPECT_EQ(board.Check("cmp", "k", t0), Verdict::kOpen);
  ASSERT_TRUE(board.BeginMark("cmp", t0));
  // While its keys are read the campaign is not marked, and nobody else reads them.
  EXPECT_EQ(board.Check("cmp", "k", t0), Verdict::kOpen);
  EXPECT_FALSE(board.BeginMark("cmp", t0));
  EXPECT_FALSE(board.IsSoldOut("cmp", t0));
  board.Mark("cmp", t0, {"stored-1", "stored-2"}, true);
  EXPECT_TRUE(board.IsSoldOut("cmp", t0 + absl::Seconds(9)));
  EXPECT_FALSE(board.IsSoldOut("cmp", t0 + absl::Seconds(10)));
  EXPECT_EQ(board.Check("cmp", "new", t0 + absl::Seconds(9)), Verdict::kSoldOut);
  EXPECT_EQ(board.Check("cmp", "stored-2", t0 + absl::Seconds(9)), Verdict::kLookUp);
  EXPECT_EQ(board.Check("other", "new", t0), Verdict::kOpen);
  EXPECT_FALSE(board.BeginMark("cmp", t0 + absl::Seconds(9))) << "a standing mark stays";
  EXPECT_EQ(board.Check("cmp", "new", t0 + absl::Seconds(10)), Verdict::kOpen);
  EXPECT_EQ(board.Room(), 2'000'000u) << "an expired mark's keys are let go";
}

TEST(SoldOutBoardTest, KeysStoredDuringAndAfterTheReadAreKept) {
  SoldOutBoard board(absl::Seconds(10));
  const absl::Time t0 = absl::FromUnixSeconds(100);
  board.RememberStored("cmp", "before");  // no mark: nothing to keep
  ASSERT_TRUE(board.BeginMark("cmp", t0));
  board.RememberStored("cmp", "during");
  board.Mark("cmp", t0, {"read"}, true);
  board.RememberStored("cmp", "after");
  EXPECT_EQ(board.Check("cmp", "before", t0), Verdict::kSoldOut);
  EXPECT_EQ(board.Check("cmp", "during", t0), Verdict::kLookUp);
  EXPECT_EQ(board.Check("cmp", "read", t0), Verdict::kLookUp);
  EXPECT_EQ(board.Check("cmp", "after", t0), Verdict::kLookUp);
  // An expired mark starts again from a fresh read.
  ASSERT_TRUE(board.BeginMark("cmp", t0 + absl::Seconds(11)));
  board.Mark("cmp", t0 + absl::Seconds(11), {}, true);
  EXPECT_EQ(board.Check("cmp", "during", t0 + absl::Seconds(12)), Verdict::kSoldOut);
}

TEST(SoldOutBoardTest, KeysThatDoNotFitMakeEveryKeyALookUp) {
  SoldOutBoard board(absl::Seconds(10), /*max_keys=*/3);
  const absl::Time t0 = absl::FromUnixSeconds(100);
  ASSERT_TRUE(board.BeginMark("a", t0));
  board.Mark("a", t0, {"a1", "a2"}, true);
  EXPECT_EQ(board.Room(), 1u);
  ASSERT_TRUE(board.BeginMark("b", t0));
  board.Mark("b", t0, {"b1", "b2"}, true);
  EXPECT_EQ(board.Check("a", "new", t0), Verdict::kSoldOut);
  EXPECT_EQ(board.Check("b", "new", t0), Verdict::kLookUp) << "b2 did not fit";
  // A read that failed (or was cut short) marks the campaign, with every key looked up.
  ASSERT_TRUE(board.BeginMark("c", t0));
  board.Mark("c", t0, {}, false);
  EXPECT_EQ(board.Check("c", "new", t0), Verdict::kLookUp);
  // So does a key stored once the board is full.
  board.RememberStored("a", "a3");
  EXPECT_EQ(board.Check("a", "new", t0), Verdict::kLookUp);
}

// What a gateway may copy (decision 023): only a standing, complete mark, and only while no
// participation that passed the board before the mark may still store a new key.
TEST(SoldOutBoardTest, TheBoardIsHandedOutOnlyWhenNoNewKeyCanBeStored) {
  SoldOutBoard board(absl::Seconds(10));
  const absl::Time t0 = absl::FromUnixSeconds(100);
  EXPECT_FALSE(board.Board("cmp", t0).has_value()) << "not marked";

  // A claim passes the board while the campaign is open, and is still running when it is marked.
  ASSERT_EQ(board.Enter("cmp", "running", t0), Verdict::kOpen);
  ASSERT_TRUE(board.BeginMark("cmp", t0));
  EXPECT_FALSE(board.Board("cmp", t0).has_value()) << "keys being read";
  board.Mark("cmp", t0, {"granted"}, true);
  EXPECT_FALSE(board.Board("cmp", t0).has_value()) << "\"running\" may still store its key";
  // Refused from memory, so not counted: it stores nothing.
  EXPECT_EQ(board.Enter("cmp", "late", t0), Verdict::kSoldOut);
  board.RememberStored("cmp", "running");
  board.Leave("cmp");

  std::optional<SoldOutBoard::Standing> standing = board.Board("cmp", t0 + absl::Seconds(1));
  ASSERT_TRUE(standing.has_value());
  EXPECT_EQ(standing->until, t0 + absl::Seconds(10));
  std::sort(standing->keys.begin(), standing->keys.end());
  EXPECT_EQ(standing->keys, (std::vector<std::string>{"granted", "running"}));
  // Other campaigns' claims do not hold it back.
  ASSERT_EQ(board.Enter("other", "k", t0), Verdict::kOpen);
  EXPECT_TRUE(board.Board("cmp", t0).has_value());
  board.Leave("other");

  EXPECT_FALSE(board.Board("cmp", t0 + absl::Seconds(10)).has_value()) << "expired";
  // A mark that does not hold every key is never handed out.
  ASSERT_TRUE(board.BeginMark("partial", t0));
  board.Mark("partial", t0, {"k"}, false);
  EXPECT_FALSE(board.Board("partial", t0).has_value());
}

}  // namespace
}  // namespace mkt::campaigns
