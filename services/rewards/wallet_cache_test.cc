#include "services/rewards/wallet_cache.h"

#include <atomic>
#include <memory>
#include <optional>
#include <string>
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

// Reads c1's wallet for bank-a at kT0, as GetWallet does: a ticket first, then the store.
void KeepC1(WalletCache& cache, int64_t points) {
  uint64_t ticket = 0;
  cache.Find("bank-a", "c1", kT0, &ticket);
  cache.Store("bank-a", "c1", WalletWith(points), kT0, ticket);
}

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
  KeepC1(cache, 10);
  EXPECT_FALSE(cache.Find("bank-b", "c1", kT0, &ticket));
  EXPECT_FALSE(cache.Find("bank-a", "c10", kT0, &ticket));
  EXPECT_TRUE(cache.Find("bank-a", "c1", kT0, &ticket));
}

// A change in any org (e.g. a coupon account kept in the template's org) drops the customer's
// wallet whatever org it was read for.
TEST(WalletCacheTest, InvalidationIsByCustomerWhateverTheOrg) {
  WalletCache cache(absl::Seconds(10), 100);
  uint64_t ticket = 0;
  KeepC1(cache, 10);
  cache.Invalidate("c1");
  EXPECT_FALSE(cache.Find("bank-a", "c1", kT0, &ticket));
}

TEST(WalletCacheTest, InvalidationDropsTheEntryAndRefusesAReadThatStartedBefore) {
  WalletCache cache(absl::Seconds(10), 100);
  uint64_t ticket = 0;
  KeepC1(cache, 10);
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
// Readers (through Find, or through FindOrWait taking other calls' reads) against a writer that
// changes the wallet and invalidates it: counts the answers older than the last invalidation
// finished before the call.
int StaleAnswersUnderInvalidation(bool wait_for_reads) {
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
        std::shared_ptr<WalletCache::Reading> reading;
        const int64_t floor = invalidated.load();
        std::optional<pb::Wallet> w =
            wait_for_reads
                ? cache.FindOrWait("bank-a", "c1", kT0, absl::Seconds(5), &ticket, &reading)
                : cache.Find("bank-a", "c1", kT0, &ticket);
        if (w) {
          if (w->points() < floor) ++stale;
        } else {
          // The database read: what it sees is the version when it starts.
          const int64_t seen = version.load();
          std::this_thread::yield();
          cache.Store("bank-a", "c1", WalletWith(seen), kT0, ticket, reading);
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
  return stale.load();
}

TEST(WalletCacheTest, ConcurrentReadsNeverSeeAWalletOlderThanTheLastInvalidation) {
  EXPECT_EQ(StaleAnswersUnderInvalidation(/*wait_for_reads=*/false), 0);
  EXPECT_EQ(StaleAnswersUnderInvalidation(/*wait_for_reads=*/true), 0);
}

// Herds: calls missing a wallet another call is reading wait for that read.
TEST(WalletCacheTest, ConcurrentMissesReadTheWalletOnce) {
  WalletCache cache(absl::Seconds(60), 100);
  std::atomic<int> readers{0};
  std::atomic<int> answered{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&] {
      uint64_t ticket = 0;
      std::shared_ptr<WalletCache::Reading> reading;
      auto w = cache.FindOrWait("bank-a", "c1", kT0, absl::Seconds(30), &ticket, &reading);
      if (w) {
        if (w->points() == 7) ++answered;
        return;
      }
      ++readers;
      absl::SleepFor(absl::Milliseconds(50));  // the database read
      cache.Store("bank-a", "c1", WalletWith(7), kT0, ticket, reading);
      ++answered;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(readers.load(), 1);
  EXPECT_EQ(answered.load(), 16);
}

// An expired wallet answers the others while one call reads it again, but not for ever, and an
// invalidated one never.
TEST(WalletCacheTest, AnExpiredWalletAnswersWhileOneCallReadsItAgain) {
  WalletCache cache(absl::Seconds(1), 100);
  uint64_t ticket = 0;
  std::shared_ptr<WalletCache::Reading> reading;
  KeepC1(cache, 10);
  const absl::Time later = kT0 + absl::Milliseconds(1500);
  EXPECT_FALSE(cache.Find("bank-a", "c1", later, &ticket)) << "Find answers fresh wallets only";
  ASSERT_FALSE(cache.FindOrWait("bank-a", "c1", later, absl::Seconds(1), &ticket, &reading));
  ASSERT_NE(reading, nullptr) << "this call reads it again";
  uint64_t other_ticket = 0;
  std::shared_ptr<WalletCache::Reading> other_reading;
  auto stale =
      cache.FindOrWait("bank-a", "c1", later, absl::Seconds(1), &other_ticket, &other_reading);
  ASSERT_TRUE(stale) << "answered from the expired entry meanwhile";
  EXPECT_EQ(stale->points(), 10);
  EXPECT_EQ(other_reading, nullptr);
  // Twice the TTL old: no longer; the call waits for the read (here: until its timeout).
  EXPECT_FALSE(cache.FindOrWait("bank-a", "c1", kT0 + absl::Seconds(2), absl::Milliseconds(10),
                                &other_ticket, &other_reading));
  cache.Store("bank-a", "c1", WalletWith(11), later, ticket, reading);
  auto fresh = cache.FindOrWait("bank-a", "c1", later, absl::Seconds(1), &ticket, &reading);
  ASSERT_TRUE(fresh);
  EXPECT_EQ(fresh->points(), 11);

  // After an invalidation there is no entry to answer from: a second caller waits for the read.
  cache.Invalidate("c1");
  ASSERT_FALSE(cache.FindOrWait("bank-a", "c1", later, absl::Seconds(1), &ticket, &reading));
  ASSERT_NE(reading, nullptr);
  EXPECT_FALSE(cache.FindOrWait("bank-a", "c1", later, absl::Milliseconds(10), &other_ticket,
                                &other_reading));
  cache.Abandon("c1", reading);
}

// Starts a FindOrWait for c1 of `org` on its own thread; `result` holds its answer once `done`.
struct Waiter {
  std::optional<pb::Wallet> result;
  std::shared_ptr<WalletCache::Reading> reading;
  std::atomic<bool> done{false};
  std::thread thread;
  Waiter(WalletCache& cache, const std::string& org, absl::Duration wait) {
    thread = std::thread([this, &cache, org, wait] {
      uint64_t ticket = 0;
      result = cache.FindOrWait(org, "c1", kT0, wait, &ticket, &reading);
      done = true;
    });
  }
  ~Waiter() { thread.join(); }
};

TEST(WalletCacheTest, AWalletThreeQuartersOfItsTtlOldIsAnsweredAndHandedOutOnceForARefresh) {
  WalletCache cache(absl::Seconds(1), 100);
  uint64_t ticket = 0;
  std::shared_ptr<WalletCache::Reading> refresh;
  KeepC1(cache, 10);

  // Younger than 3/4 of the TTL: just answered.
  EXPECT_EQ(cache.RefreshAfter(), absl::Milliseconds(750));
  ASSERT_TRUE(cache.Find("bank-a", "c1", kT0 + absl::Milliseconds(749), &ticket, &refresh));
  EXPECT_EQ(refresh, nullptr);
  // 3/4 of the TTL old: answered, and this caller reads it again...
  const absl::Time t1 = kT0 + absl::Milliseconds(750);
  uint64_t refresh_ticket = 0;
  auto hit = cache.Find("bank-a", "c1", t1, &refresh_ticket, &refresh);
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->points(), 10);
  ASSERT_NE(refresh, nullptr);
  // ...and nobody else while it does; another org's caller gets nothing to refresh either.
  std::shared_ptr<WalletCache::Reading> second;
  EXPECT_TRUE(cache.Find("bank-a", "c1", t1 + absl::Milliseconds(10), &ticket, &second));
  EXPECT_EQ(second, nullptr);
  EXPECT_FALSE(cache.Find("bank-b", "c1", t1, &ticket, &second));
  EXPECT_EQ(second, nullptr);
  // Once expired, FindOrWait's callers are answered from the entry while the refresh runs.
  std::shared_ptr<WalletCache::Reading> reading;
  auto stale = cache.FindOrWait("bank-a", "c1", kT0 + absl::Milliseconds(1500),
                                absl::Milliseconds(1), &ticket, &reading);
  ASSERT_TRUE(stale);
  EXPECT_EQ(stale->points(), 10);
  EXPECT_EQ(reading, nullptr);

  // The refresh lands: the entry is as of when it started.
  cache.Store("bank-a", "c1", WalletWith(20), t1, refresh_ticket, refresh);
  hit = cache.Find("bank-a", "c1", t1 + absl::Milliseconds(999), &ticket);
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->points(), 20);
  EXPECT_FALSE(cache.Find("bank-a", "c1", t1 + absl::Seconds(1), &ticket));
}

TEST(WalletCacheTest, ARefreshIsRefusedAfterAnInvalidationAndCanBeAbandoned) {
  WalletCache cache(absl::Seconds(1), 100);
  uint64_t ticket = 0;
  KeepC1(cache, 10);

  std::shared_ptr<WalletCache::Reading> refresh;
  uint64_t refresh_ticket = 0;
  const absl::Time t1 = kT0 + absl::Milliseconds(800);
  ASSERT_TRUE(cache.Find("bank-a", "c1", t1, &refresh_ticket, &refresh));
  ASSERT_NE(refresh, nullptr);
  cache.Invalidate("c1");
  cache.Store("bank-a", "c1", WalletWith(20), t1, refresh_ticket, refresh);  // read before it
  EXPECT_FALSE(cache.Find("bank-a", "c1", t1, &ticket));

  // A refresh that fails is abandoned; the next caller is handed the refresh instead.
  KeepC1(cache, 30);
  ASSERT_TRUE(cache.Find("bank-a", "c1", t1, &refresh_ticket, &refresh));
  ASSERT_NE(refresh, nullptr);
  cache.Abandon("c1", refresh);
  std::shared_ptr<WalletCache::Reading> next;
  auto hit = cache.Find("bank-a", "c1", t1, &ticket, &next);
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->points(), 30);
  EXPECT_NE(next, nullptr);
}

TEST(WalletCacheTest, AFailedReadLetsItsWaitersReadAlone) {
  WalletCache cache(absl::Seconds(60), 100);
  uint64_t ticket = 0;
  std::shared_ptr<WalletCache::Reading> reading;
  ASSERT_FALSE(cache.FindOrWait("bank-a", "c1", kT0, absl::Seconds(1), &ticket, &reading));
  ASSERT_NE(reading, nullptr);
  Waiter waiter(cache, "bank-a", absl::Seconds(30));
  while (cache.WaitersFor("c1") == 0) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_FALSE(waiter.done) << "it waits for the read in progress";
  cache.Abandon("c1", reading);
  while (!waiter.done) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_FALSE(waiter.result);
  EXPECT_EQ(waiter.reading, nullptr) << "it reads alone, nobody waits for it";
}

TEST(WalletCacheTest, AWaitEndsAfterItsTimeout) {
  WalletCache cache(absl::Seconds(60), 100);
  uint64_t ticket = 0;
  std::shared_ptr<WalletCache::Reading> reading;
  ASSERT_FALSE(cache.FindOrWait("bank-a", "c1", kT0, absl::Seconds(1), &ticket, &reading));
  const absl::Time start = absl::Now();
  { Waiter waiter(cache, "bank-a", absl::Milliseconds(100)); }
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(100));
  cache.Abandon("c1", reading);
}

// A read that started a TTL ago or more is not waited for: its wallet would be too old.
TEST(WalletCacheTest, NoWaitForAReadThatStartedATtlAgo) {
  WalletCache cache(absl::Seconds(1), 100);
  uint64_t ticket = 0;
  std::shared_ptr<WalletCache::Reading> reading;
  ASSERT_FALSE(cache.FindOrWait("bank-a", "c1", kT0, absl::Seconds(1), &ticket, &reading));
  uint64_t late_ticket = 0;
  std::shared_ptr<WalletCache::Reading> late_reading;
  const absl::Time start = absl::Now();
  EXPECT_FALSE(cache.FindOrWait("bank-a", "c1", kT0 + absl::Seconds(1), absl::Seconds(30),
                                &late_ticket, &late_reading));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5)) << "did not wait";
  EXPECT_EQ(late_reading, nullptr) << "it reads alone";
  EXPECT_EQ(cache.WaitersFor("c1"), 0);
  cache.Abandon("c1", reading);
}

// A call after an invalidation, or for another org, does not take a read that started before it
// or was made for another org.
TEST(WalletCacheTest, NoWaitForAReadOlderThanAnInvalidationOrForAnotherOrg) {
  WalletCache cache(absl::Seconds(60), 100);
  uint64_t old_ticket = 0;
  std::shared_ptr<WalletCache::Reading> old_reading;
  ASSERT_FALSE(cache.FindOrWait("bank-a", "c1", kT0, absl::Seconds(1), &old_ticket, &old_reading));
  {
    Waiter other_org(cache, "bank-b", absl::Seconds(30));
    while (!other_org.done) absl::SleepFor(absl::Milliseconds(1));
    EXPECT_FALSE(other_org.result);
    EXPECT_EQ(other_org.reading, nullptr);
  }
  cache.Invalidate("c1");
  uint64_t ticket = 0;
  std::shared_ptr<WalletCache::Reading> reading;
  const absl::Time start = absl::Now();
  EXPECT_FALSE(cache.FindOrWait("bank-a", "c1", kT0, absl::Seconds(30), &ticket, &reading));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5)) << "did not wait for the older read";
  ASSERT_NE(reading, nullptr) << "a new read, which later callers wait for";
  cache.Store("bank-a", "c1", WalletWith(1), kT0, old_ticket, old_reading);  // refused: too old
  cache.Store("bank-a", "c1", WalletWith(2), kT0, ticket, reading);
  auto w = cache.Find("bank-a", "c1", kT0, &ticket);
  ASSERT_TRUE(w);
  EXPECT_EQ(w->points(), 2);
}

}  // namespace
}  // namespace mkt::rewards
