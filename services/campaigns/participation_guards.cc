#include "services/campaigns/participation_guards.h"

#include <algorithm>

#include "absl/hash/hash.h"
#include "libs/core/status.h"

namespace mkt::campaigns {

RateLimiter::RateLimiter(double rate_per_second, double burst, size_t max_keys)
    : rate_(rate_per_second),
      burst_(std::max(burst, 1.0)),
      max_keys_per_shard_(std::max<size_t>(max_keys / kShards, 16)) {}

bool RateLimiter::Allow(std::string_view key, absl::Time now) {
  if (rate_ <= 0) return true;
  Shard& shard = shards_[absl::HashOf(AsAbsl(key)) % kShards];
  absl::MutexLock lock(&shard.mu);
  auto it = shard.buckets.find(AsAbsl(key));
  if (it == shard.buckets.end()) {
    if (shard.buckets.size() >= max_keys_per_shard_) {
      // Forget buckets that have refilled completely: they hold no information.
      const absl::Duration full = absl::Seconds(burst_ / rate_);
      for (auto b = shard.buckets.begin(); b != shard.buckets.end();) {
        if (now - b->second.refilled >= full) {
          shard.buckets.erase(b++);
        } else {
          ++b;
        }
      }
      if (shard.buckets.size() >= max_keys_per_shard_) shard.buckets.clear();
    }
    shard.buckets.emplace(std::string(key), Bucket{burst_ - 1, now});
    return true;
  }
  Bucket& b = it->second;
  const double elapsed = std::max(0.0, absl::ToDoubleSeconds(now - b.refilled));
  b.tokens = std::min(burst_, b.tokens + elapsed * rate_);
  b.refilled = now;
  if (b.tokens < 1) return false;
  b.tokens -= 1;
  return true;
}

SoldOutBoard::SoldOutBoard(absl::Duration ttl, size_t max_granted_keys)
    : ttl_(ttl), max_granted_keys_(max_granted_keys) {}

void SoldOutBoard::MarkSoldOut(const std::string& campaign_id, absl::Time now) {
  absl::MutexLock lock(&mu_);
  sold_out_until_[campaign_id] = now + ttl_;
}

bool SoldOutBoard::IsSoldOut(const std::string& campaign_id, absl::Time now) {
  absl::MutexLock lock(&mu_);
  auto it = sold_out_until_.find(campaign_id);
  if (it == sold_out_until_.end()) return false;
  if (it->second <= now) {
    sold_out_until_.erase(it);
    return false;
  }
  return true;
}

void SoldOutBoard::RememberGranted(const std::string& campaign_id,
                                   const std::string& idempotency_key) {
  absl::MutexLock lock(&mu_);
  // Bounded: past the bound a replay of an old success is refused as sold out (the gateway's own
  // idempotency records still answer it).
  if (granted_.size() >= max_granted_keys_) granted_.clear();
  granted_.insert(campaign_id + '\n' + idempotency_key);
}

bool SoldOutBoard::WasGranted(const std::string& campaign_id, const std::string& idempotency_key) {
  absl::MutexLock lock(&mu_);
  return granted_.contains(campaign_id + '\n' + idempotency_key);
}

}  // namespace mkt::campaigns
