// Replay protection: remembers, per channel, the nonces of requests whose signature verified,
// for as long as a replay of them could still pass the timestamp check.
//
// A request with timestamp T is accepted while |now - T| <= window. A nonce first seen at t0 can
// carry a timestamp up to t0 + window, so a replay stays acceptable until t0 + 2 * window: that
// (plus a margin) is how long a nonce is kept.
//
// Memory is bounded twice, and a bound is never met by forgetting nonces early (that would
// reopen replays): a channel with more live nonces than its bound is refused (kChannelFull, 429),
// and when the whole gateway holds its global bound every channel is refused (kGatewayFull, 503).
// The per-channel bound defaults to what a channel sending at its rate limit for the whole
// retention holds (DefaultMaxPerChannel), so the nonce window never throttles below the rate
// limit.
//
// A nonce is kept as a 64-bit hash (with a per-process random seed), not as text: about 30 bytes
// a nonce in all (MemoryBytes). Two distinct nonces of one channel sharing a hash within the
// retention (odds about n² / 2^65: 1 in 10^8 for a channel at 500 req/s) make the second request
// a false NONCE_REPLAYED, which the channel retries with a new nonce; a replay can never be taken
// for fresh.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <string_view>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace mkt::gateway {

class NonceWindow {
 public:
  enum class Check { kFresh, kReplayed, kChannelFull, kGatewayFull };
  // Kept for callers written before the two bounds were told apart.
  static constexpr Check kWindowFull = Check::kChannelFull;

  // Keeps each nonce for `retention` after it was first seen; at most `max_per_channel` live
  // nonces per channel and `max_total` in all.
  NonceWindow(absl::Duration retention, size_t max_per_channel, size_t max_total = SIZE_MAX);

  // Returns the retention that makes replays impossible for a timestamp window of `window`.
  static absl::Duration RetentionFor(absl::Duration window);

  // Returns the per-channel bound that lets a channel send at `rate` requests/s (after a burst of
  // `burst`) for the whole `retention` without being refused, with 10 % to spare; `max_total`
  // when the rate is 0 (no rate limit: only the global bound applies).
  static size_t DefaultMaxPerChannel(double rate, double burst, absl::Duration retention,
                                     size_t max_total);

  // Returns kFresh and remembers `nonce` when the channel has not used it within the retention;
  // kReplayed when it has; kChannelFull / kGatewayFull at a bound (nothing remembered).
  Check CheckAndRemember(std::string_view channel_id, std::string_view nonce, absl::Time now);

  // Forgets every nonce first seen more than the retention before `now`, in every channel.
  // CheckAndRemember sweeps its own channel; this reclaims channels that went quiet.
  void Sweep(absl::Time now);

  // Returns how many nonces are remembered in total.
  size_t size() const;
  // Returns the bytes the remembered nonces take (hash tables and expiry queues, as allocated).
  size_t MemoryBytes() const;

  size_t max_per_channel() const { return max_per_channel_; }
  size_t max_total() const { return max_total_; }

 private:
  struct ChannelNonces {
    absl::flat_hash_set<uint64_t> seen;
    // First-seen order (unix seconds, nonce hash), for expiry from the front.
    std::deque<std::pair<int64_t, uint64_t>> order;
  };
  // Channels are spread over shards so that busy channels do not contend on one lock.
  struct Shard {
    mutable absl::Mutex mu;
    absl::flat_hash_map<std::string, ChannelNonces> channels ABSL_GUARDED_BY(mu);
  };
  static constexpr int kShards = 16;

  void Expire(ChannelNonces& nonces, absl::Time now);
  Shard& ShardFor(std::string_view channel_id);
  uint64_t KeyOf(std::string_view nonce) const;

  const absl::Duration retention_;
  const size_t max_per_channel_;
  const size_t max_total_;
  const uint64_t seed_;
  std::atomic<size_t> total_{0};
  Shard shards_[kShards];
  absl::Mutex sweep_mu_;
  absl::Time last_sweep_ ABSL_GUARDED_BY(sweep_mu_) = absl::InfinitePast();
};

}  // namespace mkt::gateway
