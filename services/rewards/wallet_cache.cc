#include "services/rewards/wallet_cache.h"

#include <algorithm>
#include <functional>

namespace mkt::rewards {

namespace pb = ::marketing::rewards::v1;

WalletCache::WalletCache(absl::Duration ttl, size_t max_entries)
    : ttl_(ttl), max_per_shard_(std::max<size_t>(1, max_entries / kShards)) {}

std::string WalletCache::Key(const std::string& org_id, const std::string& customer_id) {
  std::string key;
  key.reserve(org_id.size() + 1 + customer_id.size());
  key.append(org_id).push_back('\0');
  key.append(customer_id);
  return key;
}

WalletCache::Shard& WalletCache::ShardOf(const std::string& key) {
  return shards_[std::hash<std::string>{}(key) % kShards];
}

std::optional<pb::Wallet> WalletCache::Find(const std::string& org_id,
                                            const std::string& customer_id, absl::Time now,
                                            uint64_t* ticket) {
  const std::string key = Key(org_id, customer_id);
  Shard& shard = ShardOf(key);
  absl::MutexLock lock(&shard.mu);
  *ticket = shard.generation;
  if (!enabled()) return std::nullopt;
  auto it = shard.entries.find(key);
  if (it == shard.entries.end()) return std::nullopt;
  if (now - it->second.read_at >= ttl_) {
    shard.entries.erase(it);
    return std::nullopt;
  }
  return it->second.wallet;
}

void WalletCache::Store(const std::string& org_id, const std::string& customer_id,
                        const pb::Wallet& wallet, absl::Time now, uint64_t ticket) {
  if (!enabled()) return;
  const std::string key = Key(org_id, customer_id);
  Shard& shard = ShardOf(key);
  absl::MutexLock lock(&shard.mu);
  if (shard.generation != ticket) return;  // invalidated while it was read
  if (shard.entries.size() >= max_per_shard_ && !shard.entries.contains(key)) {
    // Full: drop what is stale; if nothing is, the newcomer is not kept.
    absl::erase_if(shard.entries, [&](const auto& e) { return now - e.second.read_at >= ttl_; });
    if (shard.entries.size() >= max_per_shard_) return;
  }
  shard.entries[key] = Entry{.wallet = wallet, .read_at = now};
}

void WalletCache::Invalidate(const std::string& org_id, const std::string& customer_id) {
  const std::string key = Key(org_id, customer_id);
  Shard& shard = ShardOf(key);
  absl::MutexLock lock(&shard.mu);
  shard.entries.erase(key);
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
