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
#pragma once

#include <array>
#include <cstdint>
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

  // The wallet read less than ttl before `now`, if any. Otherwise `ticket` is set for Store.
  std::optional<::marketing::rewards::v1::Wallet> Find(const std::string& org_id,
                                                       const std::string& customer_id,
                                                       absl::Time now, uint64_t* ticket);
  // Keeps `wallet`, read at `now` after Find gave `ticket`, unless the shard was invalidated since.
  void Store(const std::string& org_id, const std::string& customer_id,
             const ::marketing::rewards::v1::Wallet& wallet, absl::Time now, uint64_t ticket);
  void Invalidate(const std::string& customer_id);

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
    uint64_t generation ABSL_GUARDED_BY(mu) = 0;
  };
  // Many shards: an invalidation refuses the stores of reads in flight in its shard only.
  static constexpr size_t kShards = 256;
  Shard& ShardOf(const std::string& customer_id);

  const absl::Duration ttl_;
  const size_t max_per_shard_;
  std::array<Shard, kShards> shards_;
};

}  // namespace mkt::rewards
