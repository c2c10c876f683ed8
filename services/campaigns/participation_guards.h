// The in-memory protections in front of participation (issue 8, item 8): token buckets per
// customer and per campaign that refuse a flood before it reaches the database, and the sold-out
// board, which remembers that a campaign's ledger stock ran out so later claims are refused from
// memory. Both are per process; their limits are approximate across replicas by design (the exact
// limits are the database counters and the ledger's stock).
#pragma once

#include <cstdint>
#include <optional>
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

// Which coupon campaigns sold out, and for each the idempotency keys that have a stored
// participation. The keys are read from the database when the mark is set, so they include the
// participations of every replica, and a replay of one of them still reaches its stored outcome
// instead of a refusal from memory; keys this process stores while the mark stands are added.
class SoldOutBoard {
 public:
  // A mark expires after `ttl`, so a restock (the operator funds more stock) takes effect.
  // `max_keys` bounds the keys held for all marks together.
  explicit SoldOutBoard(absl::Duration ttl, size_t max_keys = 2'000'000);

  enum class Verdict {
    // Not marked (or the mark expired, or its keys are being read): the full path decides.
    kOpen,
    // Marked, and the key has no stored participation: refuse from memory.
    kSoldOut,
    // Marked, but the key has a stored participation, or the board could not hold every key:
    // look the key up before refusing.
    kLookUp,
  };
  Verdict Check(const std::string& campaign_id, const std::string& idempotency_key, absl::Time now);
  // Check for a participation that takes the full path when the verdict is kOpen: it may store a
  // new key, so until Leave the campaign's board is not handed out (Board).
  Verdict Enter(const std::string& campaign_id, const std::string& idempotency_key, absl::Time now);
  void Leave(const std::string& campaign_id);
  // Whether the campaign is marked sold out now (what the eligibility list shows).
  bool IsSoldOut(const std::string& campaign_id, absl::Time now);

  // Starts a mark: true when the caller should read the campaign's stored keys and then call
  // Mark (always, even when the read failed); false when the campaign is marked already or
  // another caller is reading its keys.
  bool BeginMark(const std::string& campaign_id, absl::Time now);
  // Sets the mark begun by BeginMark, until now + ttl, with the keys read (`complete` false when
  // they could not all be read or held: then every key is looked up).
  void Mark(const std::string& campaign_id, absl::Time now, std::vector<std::string> keys,
            bool complete);
  // Adds a key this process stored, if the campaign is marked or being marked.
  void RememberStored(const std::string& campaign_id, const std::string& idempotency_key);

  // How many more keys the board can hold now.
  size_t Room();

  // The campaign's mark as another process may copy it (decision 023): when it stands, holds
  // every stored key, and no participation that may store a new key is running (Enter), its end
  // and keys. Until the mark ends no new key can be stored here: Check refuses every key it does
  // not hold.
  struct Standing {
    absl::Time until;
    std::vector<std::string> keys;
  };
  std::optional<Standing> Board(const std::string& campaign_id, absl::Time now);

 private:
  struct Entry {
    bool loading = true;
    bool complete = false;
    absl::Time until = absl::InfinitePast();
    absl::flat_hash_set<std::string> keys;
  };
  Verdict CheckLocked(const std::string& campaign_id, const std::string& idempotency_key,
                      absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const absl::Duration ttl_;
  const size_t max_keys_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> marks_ ABSL_GUARDED_BY(mu_);
  // Participations between Enter and Leave, by campaign.
  absl::flat_hash_map<std::string, int> entered_ ABSL_GUARDED_BY(mu_);
  size_t held_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace mkt::campaigns
