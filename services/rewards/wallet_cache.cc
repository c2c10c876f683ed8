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

struct WalletCache::Reading {
  std::string org_id;
  absl::Time started;
  // Guarded by the shard's mutex:
  int waiters = 0;
  bool done = false;
  std::optional<pb::Wallet> wallet;  // set when done, unless the read failed
};

std::optional<pb::Wallet> WalletCache::Find(const std::string& org_id,
                                            const std::string& customer_id, absl::Time now,
                                            uint64_t* ticket, std::shared_ptr<Reading>* refresh) {
  if (refresh != nullptr) refresh->reset();
  Shard& shard = ShardOf(customer_id);
  absl::MutexLock lock(&shard.mu);
  *ticket = shard.generation;
  if (!enabled()) return std::nullopt;
  auto it = shard.entries.find(customer_id);
  if (it == shard.entries.end() || it->second.org_id != org_id) return std::nullopt;
  const absl::Duration age = now - it->second.read_at;
  if (age >= ttl_) return std::nullopt;  // kept for FindOrWait's callers
  if (refresh != nullptr && age >= RefreshAfter() && !shard.readings.contains(customer_id)) {
    auto mine = std::make_shared<Reading>();
    mine->org_id = org_id;
    mine->started = now;
    shard.readings[customer_id] = mine;
    *refresh = std::move(mine);
  }
  return it->second.wallet;
}

std::optional<pb::Wallet> WalletCache::FindOrWait(const std::string& org_id,
                                                  const std::string& customer_id, absl::Time now,
                                                  absl::Duration wait, uint64_t* ticket,
                                                  std::shared_ptr<Reading>* reading) {
  reading->reset();
  Shard& shard = ShardOf(customer_id);
  absl::MutexLock lock(&shard.mu);
  *ticket = shard.generation;
  if (!enabled()) return std::nullopt;
  const auto reading_now = shard.readings.find(customer_id);
  const bool others_read = reading_now != shard.readings.end();
  if (auto it = shard.entries.find(customer_id);
      it != shard.entries.end() && it->second.org_id == org_id) {
    const absl::Duration age = now - it->second.read_at;
    if (age < ttl_) return it->second.wallet;
    if (age < 2 * ttl_) {
      // Expired, and another call is reading it again: answered as it was until that read lands,
      // rather than waiting for it or reading it too. Otherwise this call reads it, and the entry
      // stays for the others meanwhile.
      if (others_read && reading_now->second->org_id == org_id) return it->second.wallet;
    } else {
      shard.entries.erase(it);
    }
  }
  if (others_read) {
    // Another org's read, or one that started a TTL ago or more (its wallet would be as old as
    // an expired entry): this call reads alone.
    if (reading_now->second->org_id != org_id || now - reading_now->second->started >= ttl_) {
      return std::nullopt;
    }
    // Copied: the map may change while this call waits without the lock.
    const std::shared_ptr<Reading> other = reading_now->second;
    ++other->waiters;
    const bool ended =
        shard.mu.AwaitWithTimeout(absl::Condition(
                                      +[](Reading* r) { return r->done; }, other.get()),
                                  wait);
    --other->waiters;
    *ticket = shard.generation;
    if (ended && other->wallet) return other->wallet;
    return std::nullopt;  // it failed or takes too long: read it alone, without waiters
  }
  auto mine = std::make_shared<Reading>();
  mine->org_id = org_id;
  mine->started = now;
  shard.readings[customer_id] = mine;
  *reading = std::move(mine);
  return std::nullopt;
}

void WalletCache::Finish(Shard& shard, const std::string& customer_id,
                         const std::shared_ptr<Reading>& reading,
                         std::optional<pb::Wallet> wallet) {
  if (reading == nullptr) return;
  reading->wallet = std::move(wallet);
  reading->done = true;
  if (auto it = shard.readings.find(customer_id);
      it != shard.readings.end() && it->second == reading) {
    shard.readings.erase(it);
  }
}

void WalletCache::Abandon(const std::string& customer_id, const std::shared_ptr<Reading>& reading) {
  if (reading == nullptr) return;
  Shard& shard = ShardOf(customer_id);
  absl::MutexLock lock(&shard.mu);
  Finish(shard, customer_id, reading, std::nullopt);
}

void WalletCache::Store(const std::string& org_id, const std::string& customer_id,
                        const pb::Wallet& wallet, absl::Time now, uint64_t ticket,
                        const std::shared_ptr<Reading>& reading) {
  if (!enabled()) return;
  Shard& shard = ShardOf(customer_id);
  absl::MutexLock lock(&shard.mu);
  // Those waiting asked before any invalidation since: the wallet read for them answers them.
  Finish(shard, customer_id, reading, wallet);
  if (shard.generation != ticket) return;  // invalidated while it was read
  if (shard.entries.size() >= max_per_shard_ && !shard.entries.contains(customer_id)) {
    // Full: drop what is stale; if nothing is, the newcomer is not kept.
    absl::erase_if(shard.entries, [&](const auto& e) { return now - e.second.read_at >= ttl_; });
    if (shard.entries.size() >= max_per_shard_) return;
  }
  // One entry per customer: the org last read for it (another org's read replaces it).
  shard.entries[customer_id] = Entry{.org_id = org_id, .wallet = wallet, .read_at = now};
}

int WalletCache::WaitersFor(const std::string& customer_id) {
  Shard& shard = ShardOf(customer_id);
  absl::MutexLock lock(&shard.mu);
  auto it = shard.readings.find(customer_id);
  return it == shard.readings.end() ? 0 : it->second->waiters;
}

void WalletCache::Invalidate(const std::string& customer_id) {
  Shard& shard = ShardOf(customer_id);
  absl::MutexLock lock(&shard.mu);
  shard.entries.erase(customer_id);
  shard.readings.erase(customer_id);  // a later caller reads afresh rather than wait for it
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
