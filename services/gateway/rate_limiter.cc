#include "services/gateway/rate_limiter.h"

#include <algorithm>
#include <cmath>

namespace mkt::gateway {

RateLimiter::RateLimiter(RateLimit limit, const Clock& clock, size_t max_buckets)
    : limit_{limit.per_second, std::max(1.0, limit.burst)},
      clock_(clock),
      max_buckets_(max_buckets) {}

absl::Duration RateLimiter::Acquire(std::string_view key) {
  if (!enabled()) return absl::ZeroDuration();
  const absl::Time now = clock_.Now();
  absl::MutexLock lock(&mu_);
  auto it = buckets_.find(absl::string_view(key.data(), key.size()));
  if (it == buckets_.end()) {
    if (buckets_.size() >= max_buckets_) Prune(now);
    it = buckets_.emplace(std::string(key), Bucket{limit_.burst, now}).first;
  }
  Bucket& b = it->second;
  const double elapsed = std::max(0.0, absl::ToDoubleSeconds(now - b.updated));
  b.tokens = std::min(limit_.burst, b.tokens + elapsed * limit_.per_second);
  b.updated = now;
  if (b.tokens >= 1) {
    b.tokens -= 1;
    return absl::ZeroDuration();
  }
  return absl::Seconds((1 - b.tokens) / limit_.per_second);
}

size_t RateLimiter::buckets() const {
  absl::MutexLock lock(&mu_);
  return buckets_.size();
}

void RateLimiter::Prune(absl::Time now) {
  // A bucket that would be full by now behaves exactly like a new one: forget it.
  const absl::Duration refill = absl::Seconds(limit_.burst / limit_.per_second);
  absl::erase_if(buckets_, [&](const auto& entry) { return now - entry.second.updated >= refill; });
  if (buckets_.size() >= max_buckets_) buckets_.clear();
}

}  // namespace mkt::gateway
