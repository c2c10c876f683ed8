// Wallets recently read, so that a customer's app opening the wallet again and again (and the
// channel polling it) does not cost the database each time (PERFORMANCE.md P3, "on a warm
// cache").
//
// Freshness: every ledger change to one of the customer's accounts committed through this
// process (PgLedgerStore's change listener) and every change of one of their coupons invalidates
// their entry, whatever org it was read for (entries are keyed by customer id; the org read is
// checked on a hit), so a customer always sees their own grant, spend or coupon on the next read
// through the same replica. A change made through another replica is not seen here until the
// entry is older than `ttl` (config rewards.wallet_cache_ms, 1 s by default; 0 turns the cache
// off). A read that started before an invalidation of its shard is not stored, so an
// invalidation is never undone by a slow reader.
//
// Herds: when several calls miss the same customer's wallet at once (an app asking from several
// screens, a channel retrying), the first reads it from the database and the others do not read
// it too (FindOrWait): when the entry has only expired, they are answered from it until that read
// lands (an entry at most twice the TTL old, never one an invalidation removed); when there is no
// entry, they wait for that read. A call arriving after an invalidation of the customer does not
// wait for a read that started before it.
//
// Refresh ahead: a wallet asked for again when 3/4 of its TTL have passed is answered from the
// entry and read again in the background (Find with `refresh`), so a wallet polled at least every
// quarter of its TTL stays in the cache and nobody waits for its database read (one polled less
// often may still expire between two polls); the TTL bounds its age as before.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "marketing/rewards/v1/benefits.pb.h"

namespace mkt::rewards {

class WalletCache {
 public:
  // `max_entries` bounds the memory (≈ a few hundred bytes per wallet without coupons).
  WalletCache(absl::Duration ttl, size_t max_entries);

  bool enabled() const { return ttl_ > absl::ZeroDuration(); }
  // The age from which Find hands a wallet out for a refresh: three quarters of the TTL, so that a
  // wallet polled steadily is read about every 3/4 of a TTL (the new entry counts from when the
  // refresh was handed out) and the refresh has a quarter of the TTL to land.
  absl::Duration RefreshAfter() const { return ttl_ * 3 / 4; }

  // A read of one customer's wallet from the database that other callers are waiting for.
  struct Reading;
  // The wallet read less than ttl before `now`, if any (never waits). `ticket` is set for Store.
  // With `refresh` given, a wallet read RefreshAfter() ago or more that nobody is reading again yet
  // is answered and also handed out to be read again ahead of its expiry: *refresh is set, and the
  // caller reads the wallet (typically in the background) and ends with Store or Abandon, as after
  // FindOrWait. Meanwhile the others are answered from the entry, as if it were being re-read
  // after it expired.
  std::optional<::marketing::rewards::v1::Wallet> Find(const std::string& org_id,
                                                       const std::string& customer_id,
                                                       absl::Time now, uint64_t* ticket,
                                                       std::shared_ptr<Reading>* refresh = nullptr);
  // Like Find; when another caller is reading the wallet for the same org, answers from the
  // expired entry if there is one (younger than twice the TTL), or else waits up to `wait` for
  // that read (one that started less than a TTL ago) and returns its wallet. Otherwise returns
  // nothing, sets `ticket`, and the caller reads the wallet: when `*reading` is set, others may be
  // waiting for it, and the caller must end the read with Store or, when it failed, Abandon.
  std::optional<::marketing::rewards::v1::Wallet> FindOrWait(const std::string& org_id,
                                                             const std::string& customer_id,
                                                             absl::Time now, absl::Duration wait,
                                                             uint64_t* ticket,
                                                             std::shared_ptr<Reading>* reading);
  // Keeps `wallet`, read at `now` after Find gave `ticket`, unless the shard was invalidated since;
  // and hands it to the callers waiting for `reading`, if any.
  void Store(const std::string& org_id, const std::string& customer_id,
             const ::marketing::rewards::v1::Wallet& wallet, absl::Time now, uint64_t ticket,
             const std::shared_ptr<Reading>& reading = nullptr);
  // Ends `reading` without a wallet: its waiters read the wallet themselves.
  void Abandon(const std::string& customer_id, const std::shared_ptr<Reading>& reading);
  void Invalidate(const std::string& customer_id);
  // How many calls wait for the read of `customer_id`'s wallet in progress (for tests).
  int WaitersFor(const std::string& customer_id);

  size_t size();

 private:
  struct Entry {
    std::string org_id;
    ::marketing::rewards::v1::Wallet wallet;
    absl::Time read_at;
  };
  struct Shard {
    absl::Mutex mu;
    absl::flat_hash_map<std::string, Entry> entries ABSL_GUARDED_BY(mu);
    // The reads in progress that later callers wait for, by customer id.
    absl::flat_hash_map<std::string, std::shared_ptr<Reading>> readings ABSL_GUARDED_BY(mu);
    uint64_t generation ABSL_GUARDED_BY(mu) = 0;
  };
  // Ends `reading` with `wallet` (nothing: failed) and forgets it; under the shard's lock.
  static void Finish(Shard& shard, const std::string& customer_id,
                     const std::shared_ptr<Reading>& reading,
                     std::optional<::marketing::rewards::v1::Wallet> wallet)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  // Many shards: an invalidation refuses the stores of reads in flight in its shard only.
  static constexpr size_t kShards = 256;
  Shard& ShardOf(const std::string& customer_id);

  const absl::Duration ttl_;
  const size_t max_per_shard_;
  std::array<Shard, kShards> shards_;
};

}  // namespace mkt::rewards
