// A copy of the events service's registry of business event types, for the services that check
// against it what the events service would otherwise refuse later: the gateway's POST /v1/events
// answers 400 for an event the events service would only dead-letter after a 202 (an unknown
// type, a missing required attribute, an attribute of the wrong type or not in the schema;
// decision 028), and the campaigns service refuses an event campaign whose trigger the events
// service could not turn into a rule. The copy is loaded from EventsAdmin.ListEventTypes and
// refreshed when older than `max_age`; an event it refuses is checked again against a fresh copy
// (at most once per `recheck_after`), so a type the federation has just defined or changed is not
// refused for long. While no copy could ever be loaded (the events service unreachable since the
// process started) nothing is refused: the events service still checks everything itself, and
// neither publishing nor configuring depends on it being up.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "libs/core/ids.h"
#include "marketing/events/v1/business_event.pb.h"
#include "marketing/events/v1/events.pb.h"
#include "services/events/event_types.h"

namespace mkt::events {

class EventTypeCache {
 public:
  using Loader = std::function<absl::StatusOr<std::vector<marketing::events::v1::EventType>>()>;

  EventTypeCache(Loader load, const Clock& clock, absl::Duration max_age = absl::Seconds(30),
                 absl::Duration recheck_after = absl::Seconds(1));

  // OK when `event` fits its type as the copy holds it, or while there is no copy;
  // INVALID_ARGUMENT naming the field otherwise. Blocking: it may load the registry.
  absl::Status Check(const marketing::events::v1::BusinessEvent& event,
                     std::string_view envelope_event_id);

  // The type named `name` as the copy holds it (reloaded first when old, and again when it is
  // not there); null when it does not exist; nullopt while there is no copy. Blocking.
  std::optional<std::shared_ptr<const EventTypeInfo>> Lookup(std::string_view name);

 private:
  // Loads the registry when the last attempt is older than `older_than` and no other caller is
  // loading it (that one's copy is used instead of waiting).
  void RefreshIfOlderThan(absl::Duration older_than);

  const Loader load_;
  const Clock& clock_;
  const absl::Duration max_age_;
  const absl::Duration recheck_after_;
  EventTypeRegistry registry_;
  absl::Mutex loading_;
  mutable absl::Mutex mu_;
  bool loaded_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time attempted_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace mkt::events
