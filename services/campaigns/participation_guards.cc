#include "services/campaigns/participation_guards.h"

#include <algorithm>

#include "absl/hash/hash.h"
#include "libs/core/status.h"

namespace mkt::campaigns {

RateLimiter::RateLimiter(double rate_per_second, double burst, size_t max_keys)
    : rate_(rate_per_second),
      burst_(std::max(burst, 1.0)),
      max_keys_per_shard_(std::max<size_t>(max_keys / kShards, 16)) {}

bool RateLimiter::Allow(std::string_view key, absl::Time now) {
  if (rate_ <= 0) return true;
  Shard& shard = shards_[absl::HashOf(AsAbsl(key)) % kShards];
  absl::MutexLock lock(&shard.mu);
  auto it = shard.buckets.find(AsAbsl(key));
  if (it == shard.buckets.end()) {
    if (shard.buckets.size() >= max_keys_per_shard_) {
      // Forget buckets that have refilled completely: they hold no information.
      const absl::Duration full = absl::Seconds(burst_ / rate_);
      for (auto b = shard.buckets.begin(); b != shard.buckets.end();) {
        if (now - b->second.refilled >= full) {
          shard.buckets.erase(b++);
        } else {
          ++b;
        }
      }
      if (shard.buckets.size() >= max_keys_per_shard_) shard.buckets.clear();
    }
    shard.buckets.emplace(std::string(key), Bucket{burst_ - 1, now});
    return true;
  }
  Bucket& b = it->second;
  const double elapsed = std::max(0.0, absl::ToDoubleSeconds(now - b.refilled));
  b.tokens = std::min(burst_, b.tokens + elapsed * rate_);
  b.refilled = now;
  if (b.tokens < 1) return false;
  b.tokens -= 1;
  return true;
}

SoldOutBoard::SoldOutBoard(absl::Duration ttl, size_t max_keys) : ttl_(ttl), max_keys_(max_keys) {}

SoldOutBoard::Verdict SoldOutBoard::Check(const std::string& campaign_id,
                                          const std::string& idempotency_key, absl::Time now) {
  absl::MutexLock lock(&mu_);
  return CheckLocked(campaign_id, idempotency_key, now);
}

SoldOutBoard::Verdict SoldOutBoard::Enter(const std::string& campaign_id,
                                          const std::string& idempotency_key, absl::Time now) {
  absl::MutexLock lock(&mu_);
  const Verdict verdict = CheckLocked(campaign_id, idempotency_key, now);
  if (verdict == Verdict::kOpen) ++entered_[campaign_id];
  return verdict;
}

void SoldOutBoard::Leave(const std::string& campaign_id) {
  absl::MutexLock lock(&mu_);
  auto it = entered_.find(campaign_id);
  if (it != entered_.end() && --it->second <= 0) entered_.erase(it);
}

std::optional<SoldOutBoard::Standing> SoldOutBoard::Board(const std::string& campaign_id,
                                                          absl::Time now) {
  absl::MutexLock lock(&mu_);
  auto it = marks_.find(campaign_id);
  if (it == marks_.end() || it->second.loading || !it->second.complete || it->second.until <= now ||
      entered_.contains(campaign_id)) {
    return std::nullopt;
  }
  return Standing{it->second.until,
                  std::vector<std::string>(it->second.keys.begin(), it->second.keys.end())};
}

SoldOutBoard::Verdict SoldOutBoard::CheckLocked(const std::string& campaign_id,
                                                const std::string& idempotency_key,
                                                absl::Time now) {
  auto it = marks_.find(campaign_id);
  if (it == marks_.end() || it->second.loading) return Verdict::kOpen;
  Entry& mark = it->second;
  if (mark.until <= now) {
    held_ -= mark.keys.size();
    marks_.erase(it);
    return Verdict::kOpen;
  }
  if (!mark.complete || mark.keys.contains(idempotency_key)) return Verdict::kLookUp;
  return Verdict::kSoldOut;
}

bool SoldOutBoard::IsSoldOut(const std::string& campaign_id, absl::Time now) {
  absl::MutexLock lock(&mu_);
  auto it = marks_.find(campaign_id);
  return it != marks_.end() && !it->second.loading && it->second.until > now;
}

bool SoldOutBoard::BeginMark(const std::string& campaign_id, absl::Time now) {
  absl::MutexLock lock(&mu_);
  auto [it, inserted] = marks_.try_emplace(campaign_id);
  if (inserted) return true;
  // A standing mark, or one whose keys are being read, is left alone; an expired one restarts.
  Entry& mark = it->second;
  if (mark.loading || mark.until > now) return false;
  held_ -= mark.keys.size();
  mark = Entry{};
  return true;
}

void SoldOutBoard::Mark(const std::string& campaign_id, absl::Time now,
                        std::vector<std::string> keys, bool complete) {
  absl::MutexLock lock(&mu_);
  Entry& mark = marks_[campaign_id];
  mark.loading = false;
  mark.until = now + ttl_;
  mark.complete = complete;
  for (std::string& key : keys) {
    if (held_ >= max_keys_) {
      mark.complete = false;
      break;
    }
    if (mark.keys.insert(std::move(key)).second) ++held_;
  }
}

void SoldOutBoard::RememberStored(const std::string& campaign_id,
                                  const std::string& idempotency_key) {
  absl::MutexLock lock(&mu_);
  auto it = marks_.find(campaign_id);
  if (it == marks_.end()) return;
  Entry& mark = it->second;
  if (held_ >= max_keys_) {
    // The key cannot be held: from now on every key of this campaign is looked up.
    mark.complete = false;
    return;
  }
  if (mark.keys.insert(idempotency_key).second) ++held_;
}

size_t SoldOutBoard::Room() {
  absl::MutexLock lock(&mu_);
  return max_keys_ > held_ ? max_keys_ - held_ : 0;
}

}  // namespace mkt::campaigns
