#include "services/rewards/wallet_cache.h"

#include <algorithm>
#include <functional>

namespace mkt::rewards {

namespace pb = ::marketing::rewards::v1;

WalletCache::WalletCache(absl::Duration ttl, size_t max_entries)
    : ttl_(ttl), max_per_shard_(std::max<size_t>(1, max_entries / kShards)) {}

WalletCache::Shard& WalletCache::ShardOf(const std::string& customer_id) {
  return shards_[std::hash<std::string>{}(customer_id) % kShards];
}

std::optional<pb::Wallet> WalletCache::Find(const std::string& org_id,
                                            const std::string& customer_id, absl::Time now,
                                            uint64_t* ticket) {
  Shard& shard = ShardOf(customer_id);
  absl::MutexLock lock(&shard.mu);
  *ticket = shard.generation;
  if (!enabled()) return std::nullopt;
  auto it = shard.entries.find(customer_id);
  if (it == shard.entries.end() || it->second.org_id != org_id) return std::nullopt;
  if (now - it->second.read_at >= ttl_) {
    shard.entries.erase(it);
    return std::nullopt;
  }
  return it->second.wallet;
}

void WalletCache::Store(const std::string& org_id, const std::string& customer_id,
                        const pb::Wallet& wallet, absl::Time now, uint64_t ticket) {
  if (!enabled()) return;
  Shard& shard = ShardOf(customer_id);
  absl::MutexLock lock(&shard.mu);
  if (shard.generation != ticket) return;  // invalidated while it was read
  if (shard.entries.size() >= max_per_shard_ && !shard.entries.contains(customer_id)) {
    // Full: drop what is stale; if nothing is, the newcomer is not kept.
    absl::erase_if(shard.entries, [&](const auto& e) { return now - e.second.read_at >= ttl_; });
    if (shard.entries.size() >= max_per_shard_) return;
  }
  // One entry per customer: the org last read for it (another org's read replaces it).
  shard.entries[customer_id] = Entry{.org_id = org_id, .wallet = wallet, .read_at = now};
}

void WalletCache::Invalidate(const std::string& customer_id) {
  Shard& shard = ShardOf(customer_id);
  absl::MutexLock lock(&shard.mu);
  shard.entries.erase(customer_id);
  ++shard.generation;
}

size_t WalletCache::size() {
  size_t n = 0;
  for (Shard& shard : shards_) {
    absl::MutexLock lock(&shard.mu);
    n += shard.entries.size();
  }
  return n;
}

}  // namespace mkt::rewards
