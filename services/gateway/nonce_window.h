// Replay protection: remembers, per channel, the nonces of requests whose signature verified,
// for as long as a replay of them could still pass the timestamp check.
//
// A request with timestamp T is accepted while |now - T| <= window. A nonce first seen at t0 can
// carry a timestamp up to t0 + window, so a replay stays acceptable until t0 + 2 * window: that
// (plus a margin) is how long a nonce is kept. Memory is bounded per channel: a channel that sends
// more distinct nonces within that time than the bound is refused (kWindowFull) rather than
// letting the window forget nonces early, which would reopen replays.
#pragma once

#include <cstddef>
#include <deque>
#include <string>
#include <string_view>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace mkt::gateway {

class NonceWindow {
 public:
  enum class Check { kFresh, kReplayed, kWindowFull };

  // Keeps each nonce for `retention` after it was first seen; at most `max_per_channel` live
  // nonces per channel.
  NonceWindow(absl::Duration retention, size_t max_per_channel);

  // Returns the retention that makes replays impossible for a timestamp window of `window`.
  static absl::Duration RetentionFor(absl::Duration window);

  // Returns kFresh and remembers `nonce` when the channel has not used it within the retention;
  // kReplayed when it has; kWindowFull when the channel is at its bound (nothing remembered).
  Check CheckAndRemember(std::string_view channel_id, std::string_view nonce, absl::Time now);

  // Forgets every nonce first seen more than the retention before `now`, in every channel.
  // CheckAndRemember sweeps its own channel; this reclaims channels that went quiet.
  void Sweep(absl::Time now);

  // Returns how many nonces are remembered in total.
  size_t size() const;

 private:
  struct ChannelNonces {
    absl::flat_hash_set<std::string> seen;
    // First-seen order, for expiry from the front.
    std::deque<std::pair<absl::Time, std::string>> order;
  };
  // Channels are spread over shards so that busy channels do not contend on one lock.
  struct Shard {
    mutable absl::Mutex mu;
    absl::flat_hash_map<std::string, ChannelNonces> channels ABSL_GUARDED_BY(mu);
  };
  static constexpr int kShards = 16;

  void Expire(ChannelNonces& nonces, absl::Time now) const;
  Shard& ShardFor(std::string_view channel_id);

  const absl::Duration retention_;
  const size_t max_per_channel_;
  Shard shards_[kShards];
  absl::Mutex sweep_mu_;
  absl::Time last_sweep_ ABSL_GUARDED_BY(sweep_mu_) = absl::InfinitePast();
};

}  // namespace mkt::gateway
