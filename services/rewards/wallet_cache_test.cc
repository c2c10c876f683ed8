#include "services/rewards/wallet_cache.h"

#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace mkt::rewards {
namespace {

namespace pb = ::marketing::rewards::v1;

pb::Wallet WalletWith(int64_t points) {
  pb::Wallet w;
  w.set_points(points);
  return w;
}

const absl::Time kT0 = absl::FromUnixSeconds(1'800'000'000);

TEST(WalletCacheTest, AnswersWithinTheTtlAndNotAfter) {
  WalletCache cache(absl::Seconds(1), 100);
  uint64_t ticket = 0;
  EXPECT_FALSE(cache.Find("bank-a", "c1", kT0, &ticket));
  cache.Store("bank-a", "c1", WalletWith(10), kT0, ticket);
  auto hit = cache.Find("bank-a", "c1", kT0 + absl::Milliseconds(999), &ticket);
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->points(), 10);
  EXPECT_FALSE(cache.Find("bank-a", "c1", kT0 + absl::Seconds(1), &ticket));
}

TEST(WalletCacheTest, AnEntryAnswersOnlyTheOrgItWasReadFor) {
  WalletCache cache(absl::Seconds(1), 100);
  uint64_t ticket = 0;
  cache.Find("bank-a", "c1", kT0, &ticket);
  cache.Store("bank-a", "c1", WalletWith(10), kT0, ticket);
  EXPECT_FALSE(cache.Find("bank-b", "c1", kT0, &ticket));
  EXPECT_FALSE(cache.Find("bank-a", "c10", kT0, &ticket));
  EXPECT_TRUE(cache.Find("bank-a", "c1", kT0, &ticket));
}

// A change in any org (e.g. a coupon account kept in the template's org) drops the customer's
// wallet whatever org it was read for.
TEST(WalletCacheTest, InvalidationIsByCustomerWhateverTheOrg) {
  WalletCache cache(absl::Seconds(10), 100);
  uint64_t ticket = 0;
  cache.Find("bank-a", "c1", kT0, &ticket);
  cache.Store("bank-a", "c1", WalletWith(10), kT0, ticket);
  cache.Invalidate("c1");
  EXPECT_FALSE(cache.Find("bank-a", "c1", kT0, &ticket));
}

TEST(WalletCacheTest, InvalidationDropsTheEntryAndRefusesAReadThatStartedBefore) {
  WalletCache cache(absl::Seconds(10), 100);
  uint64_t ticket = 0;
  cache.Find("bank-a", "c1", kT0, &ticket);
  cache.Store("bank-a", "c1", WalletWith(10), kT0, ticket);
  cache.Invalidate("c1");
  EXPECT_FALSE(cache.Find("bank-a", "c1", kT0, &ticket));

  // A slow read: it starts (ticket), a grant commits and invalidates, then the read finishes
  // with what it saw before the grant: not kept.
  uint64_t slow = 0;
  EXPECT_FALSE(cache.Find("bank-a", "c2", kT0, &slow));
  cache.Invalidate("c2");
  cache.Store("bank-a", "c2", WalletWith(1), kT0, slow);
  EXPECT_FALSE(cache.Find("bank-a", "c2", kT0, &ticket));
}

TEST(WalletCacheTest, ZeroTtlIsOff) {
  WalletCache cache(absl::ZeroDuration(), 100);
  uint64_t ticket = 0;
  cache.Store("bank-a", "c1", WalletWith(10), kT0, ticket);
  EXPECT_FALSE(cache.Find("bank-a", "c1", kT0, &ticket));
  EXPECT_EQ(cache.size(), 0u);
}

TEST(WalletCacheTest, StaysWithinItsBound) {
  WalletCache cache(absl::Seconds(10), 2560);  // 10 per shard
  for (int i = 0; i < 10000; ++i) {
    uint64_t ticket = 0;
    const std::string c = "c" + std::to_string(i);
    cache.Find("bank-a", c, kT0, &ticket);
    cache.Store("bank-a", c, WalletWith(i), kT0, ticket);
  }
  EXPECT_LE(cache.size(), 2560u);
  EXPECT_GE(cache.size(), 1000u);
}

// Readers and a writer at once: once an invalidation has returned, no reader gets a wallet read
// before the change it announced (readers store the version they read; the writer changes the
// version, then invalidates, then publishes that the invalidation is done).
TEST(WalletCacheTest, ConcurrentReadsNeverSeeAWalletOlderThanTheLastInvalidation) {
  WalletCache cache(absl::Seconds(60), 1000);
  std::atomic<int64_t> version{0};
  std::atomic<int64_t> invalidated{0};
  std::atomic<bool> stop{false};
  std::atomic<int> stale{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      while (!stop) {
        uint64_t ticket = 0;
        const int64_t floor = invalidated.load();
        if (auto w = cache.Find("bank-a", "c1", kT0, &ticket)) {
          if (w->points() < floor) ++stale;
        } else {
          cache.Store("bank-a", "c1", WalletWith(version.load()), kT0, ticket);
        }
      }
    });
  }
  threads.emplace_back([&] {
    for (int i = 0; i < 20000; ++i) {
      const int64_t v = version.fetch_add(1) + 1;
      cache.Invalidate("c1");
      invalidated.store(v);
    }
    stop = true;
  });
  for (auto& th : threads) th.join();
  EXPECT_EQ(stale.load(), 0);
}

}  // namespace
}  // namespace mkt::rewards
