// Token-bucket rate limits keyed by who is calling: one bucket per channel, per customer and per
// route (and per operator on the admin API). A bucket holds up to `burst` tokens and refills at
// `per_second`; a request takes one token or is refused with the time until one is available,
// which the gateway answers as 429 RATE_LIMITED with Retry-After. Buckets idle long enough to be
// full again are dropped, so made-up keys cannot grow memory without bound.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "libs/core/ids.h"

namespace mkt::gateway {

struct RateLimit {
  // Tokens added per second; 0 disables the limit.
  double per_second = 0;
  // Bucket size: how many requests may come at once after a quiet spell.
  double burst = 0;
};

class RateLimiter {
 public:
  RateLimiter(RateLimit limit, const Clock& clock, size_t max_buckets = 100000);

  // Takes a token from `key`'s bucket. Returns zero when the request may go ahead, else how
  // long until the bucket has a token again (the request is refused and takes nothing).
  absl::Duration Acquire(std::string_view key);

  bool enabled() const { return limit_.per_second > 0; }
  size_t buckets() const;

 private:
  struct Bucket {
    double tokens;
    absl::Time updated;
  };
  void Prune(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const RateLimit limit_;
  const Clock& clock_;
  const size_t max_buckets_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Bucket> buckets_ ABSL_GUARDED_BY(mu_);
};

}  // namespace mkt::gateway
