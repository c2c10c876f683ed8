// The gateway's copy of the events service's registry of business event types, so that
// POST /v1/events answers 400 for an event the events service would only dead-letter after a
// 202: an unknown type, a missing required attribute, an attribute of the wrong type or not in
// the schema (decision 028). The copy is loaded from EventsAdmin.ListEventTypes and refreshed
// when older than `max_age`; an event it refuses is checked again against a fresh copy (at most
// once per `recheck_after`), so a type the federation has just defined or changed is not
// refused for long. While no copy could ever be loaded (the events service unreachable since the
// gateway started) events are accepted as before and the events service dead-letters what does
// not fit: publishing never depends on the events service being up.
#pragma once

#include <functional>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "libs/core/ids.h"
#include "marketing/events/v1/business_event.pb.h"
#include "marketing/events/v1/events.pb.h"
#include "services/events/event_types.h"

namespace mkt::gateway {

class EventTypeCache {
 public:
  using Loader = std::function<absl::StatusOr<std::vector<marketing::events::v1::EventType>>()>;

  EventTypeCache(Loader load, const Clock& clock, absl::Duration max_age = absl::Seconds(30),
                 absl::Duration recheck_after = absl::Seconds(1));

  // OK when `event` fits its type as the copy holds it, or while there is no copy;
  // INVALID_ARGUMENT naming the field otherwise. Blocking: it may load the registry.
  absl::Status Check(const marketing::events::v1::BusinessEvent& event,
                     std::string_view envelope_event_id);

 private:
  // Loads the registry when the last attempt is older than `older_than` and no other caller is
  // loading it (that one's copy is used instead of waiting).
  void RefreshIfOlderThan(absl::Duration older_than);

  const Loader load_;
  const Clock& clock_;
  const absl::Duration max_age_;
  const absl::Duration recheck_after_;
  events::EventTypeRegistry registry_;
  absl::Mutex loading_;
  mutable absl::Mutex mu_;
  bool loaded_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time attempted_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace mkt::gateway
