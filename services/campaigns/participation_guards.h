// The in-memory protections in front of participation (issue 8, item 8): token buckets per
// customer and per campaign that refuse a flood before it reaches the database, and the sold-out
// board, which remembers that a campaign's ledger stock ran out so later claims are refused from
// memory. Both are per process; their limits are approximate across replicas by design (the exact
// limits are the database counters and the ledger's stock).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace mkt::campaigns {

// Token buckets keyed by a string, sharded so concurrent callers rarely share a lock.
class RateLimiter {
 public:
  // `rate_per_second` tokens refill each second up to `burst`; rate 0 disables the limiter.
  RateLimiter(double rate_per_second, double burst, size_t max_keys = 1'000'000);

  // Takes a token for `key` at `now`; false when its bucket is empty.
  bool Allow(std::string_view key, absl::Time now);

 private:
  struct Bucket {
    double tokens;
    absl::Time refilled;
  };
  struct Shard {
    absl::Mutex mu;
    absl::flat_hash_map<std::string, Bucket> buckets ABSL_GUARDED_BY(mu);
  };
  static constexpr int kShards = 64;

  const double rate_;
  const double burst_;
  const size_t max_keys_per_shard_;
  Shard shards_[kShards];
};

// Which campaigns sold out, and the idempotency keys this process granted in each (so a replay
// of a successful claim after the sell-out still reaches its stored outcome).
class SoldOutBoard {
 public:
  // A mark expires after `ttl`, so a restock (the operator funds more stock) takes effect.
  explicit SoldOutBoard(absl::Duration ttl, size_t max_granted_keys = 2'000'000);

  void MarkSoldOut(const std::string& campaign_id, absl::Time now);
  bool IsSoldOut(const std::string& campaign_id, absl::Time now);
  void RememberGranted(const std::string& campaign_id, const std::string& idempotency_key);
  bool WasGranted(const std::string& campaign_id, const std::string& idempotency_key);

 private:
  const absl::Duration ttl_;
  const size_t max_granted_keys_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, absl::Time> sold_out_until_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> granted_ ABSL_GUARDED_BY(mu_);
};

}  // namespace mkt::campaigns
