#include "services/events/event_type_cache.h"

#include <utility>

#include "spdlog/spdlog.h"

namespace mkt::events {

EventTypeCache::EventTypeCache(Loader load, const Clock& clock, absl::Duration max_age,
                               absl::Duration recheck_after)
    : load_(std::move(load)), clock_(clock), max_age_(max_age), recheck_after_(recheck_after) {}

void EventTypeCache::RefreshIfOlderThan(absl::Duration older_than) {
  {
    absl::MutexLock lock(&mu_);
    if (clock_.Now() - attempted_at_ < older_than) return;
  }
  if (!loading_.TryLock()) return;  // another request is loading it: use the copy meanwhile
  absl::Status outcome;
  {
    absl::MutexLock lock(&mu_);
    if (clock_.Now() - attempted_at_ < older_than) {
      loading_.Unlock();
      return;
    }
    attempted_at_ = clock_.Now();
  }
  absl::StatusOr<std::vector<marketing::events::v1::EventType>> types = load_();
  if (types.ok()) {
    registry_.Load(*types);
    absl::MutexLock lock(&mu_);
    loaded_ = true;
  } else {
    spdlog::warn("event types: cannot load the registry from the events service ({}); {}",
                 types.status().ToString(),
                 "events are checked against the last copy, or not at all without one");
  }
  loading_.Unlock();
}

absl::Status EventTypeCache::Check(const marketing::events::v1::BusinessEvent& event,
                                   std::string_view envelope_event_id) {
  RefreshIfOlderThan(max_age_);
  {
    absl::MutexLock lock(&mu_);
    if (!loaded_) return absl::OkStatus();
  }
  absl::Status fits = registry_.Validate(event, envelope_event_id).status();
  if (fits.ok()) return fits;
  // The copy may be behind the registry (a type defined or changed a moment ago).
  RefreshIfOlderThan(recheck_after_);
  return registry_.Validate(event, envelope_event_id).status();
}

std::optional<std::shared_ptr<const EventTypeInfo>> EventTypeCache::Lookup(std::string_view name) {
  RefreshIfOlderThan(max_age_);
  {
    absl::MutexLock lock(&mu_);
    if (!loaded_) return std::nullopt;
  }
  if (auto found = registry_.Find(name)) return found;
  RefreshIfOlderThan(recheck_after_);
  return registry_.Find(name);
}

}  // namespace mkt::events
