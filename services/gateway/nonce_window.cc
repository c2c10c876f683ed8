#include "services/gateway/nonce_window.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <string>

#include "absl/hash/hash.h"

namespace mkt::gateway {
namespace {

// How often a CheckAndRemember call also sweeps the other channels.
constexpr absl::Duration kSweepInterval = absl::Seconds(10);
// Slack on top of twice the window, for clock steps and requests in flight at the boundary.
constexpr absl::Duration kRetentionMargin = absl::Seconds(10);

uint64_t RandomSeed() {
  std::random_device device;
  return (static_cast<uint64_t>(device()) << 32) ^ device();
}

}  // namespace

NonceWindow::NonceWindow(absl::Duration retention, size_t max_per_channel, size_t max_total)
    : retention_(retention),
      max_per_channel_(std::min(max_per_channel, max_total)),
      max_total_(max_total),
      seed_(RandomSeed()) {}

absl::Duration NonceWindow::RetentionFor(absl::Duration window) {
  return 2 * window + kRetentionMargin;
}

size_t NonceWindow::DefaultMaxPerChannel(double rate, double burst, absl::Duration retention,
                                         size_t max_total) {
  if (rate <= 0) return max_total;
  const double needed =
      std::ceil((rate * absl::ToDoubleSeconds(retention) + std::max(0.0, burst)) * 1.1);
  if (needed >= static_cast<double>(max_total)) return max_total;
  return static_cast<size_t>(needed);
}

NonceWindow::Shard& NonceWindow::ShardFor(std::string_view channel_id) {
  const size_t hash =
      absl::Hash<absl::string_view>{}(absl::string_view(channel_id.data(), channel_id.size()));
  return shards_[hash % kShards];
}

uint64_t NonceWindow::KeyOf(std::string_view nonce) const {
  return absl::Hash<std::pair<uint64_t, absl::string_view>>{}(
      {seed_, absl::string_view(nonce.data(), nonce.size())});
}

void NonceWindow::Expire(ChannelNonces& nonces, absl::Time now) {
  const int64_t cutoff = absl::ToUnixSeconds(now - retention_);
  size_t expired = 0;
  while (!nonces.order.empty() && nonces.order.front().first <= cutoff) {
    nonces.seen.erase(nonces.order.front().second);
    nonces.order.pop_front();
    ++expired;
  }
  if (expired > 0) total_.fetch_sub(expired, std::memory_order_relaxed);
}

NonceWindow::Check NonceWindow::CheckAndRemember(std::string_view channel_id,
                                                 std::string_view nonce, absl::Time now) {
  bool sweep_due = false;
  {
    absl::MutexLock lock(&sweep_mu_);
    if (now - last_sweep_ >= kSweepInterval) {
      last_sweep_ = now;
      sweep_due = true;
    }
  }
  if (sweep_due) Sweep(now);

  const uint64_t key = KeyOf(nonce);
  Shard& shard = ShardFor(channel_id);
  absl::MutexLock lock(&shard.mu);
  ChannelNonces& nonces = shard.channels[std::string(channel_id)];
  Expire(nonces, now);
  if (nonces.seen.contains(key)) return Check::kReplayed;
  if (nonces.seen.size() >= max_per_channel_) return Check::kChannelFull;
  // Reserve a place in the global bound first, so concurrent channels cannot overshoot it.
  if (total_.fetch_add(1, std::memory_order_relaxed) >= max_total_) {
    total_.fetch_sub(1, std::memory_order_relaxed);
    return Check::kGatewayFull;
  }
  nonces.seen.insert(key);
  nonces.order.emplace_back(absl::ToUnixSeconds(now), key);
  return Check::kFresh;
}

void NonceWindow::Sweep(absl::Time now) {
  for (Shard& shard : shards_) {
    absl::MutexLock lock(&shard.mu);
    for (auto it = shard.channels.begin(); it != shard.channels.end();) {
      Expire(it->second, now);
      if (it->second.seen.empty()) {
        shard.channels.erase(it++);
      } else {
        ++it;
      }
    }
  }
}

size_t NonceWindow::size() const {
  size_t total = 0;
  for (const Shard& shard : shards_) {
    absl::MutexLock lock(&shard.mu);
    for (const auto& [id, nonces] : shard.channels) total += nonces.seen.size();
  }
  return total;
}

size_t NonceWindow::MemoryBytes() const {
  // A flat_hash_set slot is the value plus one control byte; a std::deque allocates blocks of
  // 512 bytes (libstdc++), so its entries cost their size rounded up to whole blocks.
  constexpr size_t kDequeBlock = 512;
  constexpr size_t kPerBlock = kDequeBlock / sizeof(std::pair<int64_t, uint64_t>);
  size_t bytes = 0;
  for (const Shard& shard : shards_) {
    absl::MutexLock lock(&shard.mu);
    for (const auto& [id, nonces] : shard.channels) {
      bytes += sizeof(ChannelNonces) + id.capacity();
      bytes += nonces.seen.capacity() * (sizeof(uint64_t) + 1);
      bytes += (nonces.order.size() / kPerBlock + 1) * kDequeBlock;
    }
  }
  return bytes;
}

}  // namespace mkt::gateway
