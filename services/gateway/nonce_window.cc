#include "services/gateway/nonce_window.h"

#include "absl/hash/hash.h"

namespace mkt::gateway {
namespace {

// How often a CheckAndRemember call also sweeps the other channels.
constexpr absl::Duration kSweepInterval = absl::Seconds(10);
// Slack on top of twice the window, for clock steps and requests in flight at the boundary.
constexpr absl::Duration kRetentionMargin = absl::Seconds(10);

}  // namespace

NonceWindow::NonceWindow(absl::Duration retention, size_t max_per_channel)
    : retention_(retention), max_per_channel_(max_per_channel) {}

absl::Duration NonceWindow::RetentionFor(absl::Duration window) {
  return 2 * window + kRetentionMargin;
}

NonceWindow::Shard& NonceWindow::ShardFor(std::string_view channel_id) {
  const size_t hash =
      absl::Hash<absl::string_view>{}(absl::string_view(channel_id.data(), channel_id.size()));
  return shards_[hash % kShards];
}

void NonceWindow::Expire(ChannelNonces& nonces, absl::Time now) const {
  while (!nonces.order.empty() && nonces.order.front().first + retention_ <= now) {
    nonces.seen.erase(nonces.order.front().second);
    nonces.order.pop_front();
  }
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

  Shard& shard = ShardFor(channel_id);
  absl::MutexLock lock(&shard.mu);
  ChannelNonces& nonces = shard.channels[std::string(channel_id)];
  Expire(nonces, now);
  std::string key(nonce);
  if (nonces.seen.contains(key)) return Check::kReplayed;
  if (nonces.seen.size() >= max_per_channel_) return Check::kWindowFull;
  nonces.seen.insert(key);
  nonces.order.emplace_back(now, std::move(key));
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

}  // namespace mkt::gateway
