// The events service: turns consumed business events into matched rules and grants (through the
// store's batch transaction and the grant outbox), keeps the rules in memory (from UpsertRule
// and mkt.campaign-changes.v1), and answers operators (event types, rules, the event log, and
// why an event did or did not grant).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "libs/kafka/kafka.h"
#include "libs/tenancy/tenancy.h"
#include "marketing/campaigns/v1/campaigns.pb.h"
#include "services/events/batch_consumer.h"
#include "services/events/event_store.h"
#include "services/events/event_types.h"
#include "services/events/rules.h"

namespace mkt::events {

inline constexpr char kBusinessEventsTopic[] = "mkt.business-events.v1";
inline constexpr char kCampaignChangesTopic[] = "mkt.campaign-changes.v1";
inline constexpr char kBusinessEventType[] = "events.BusinessEvent";

// Every replica reloads the event types and the stored rules at most this often, at its next batch
// (decision 010, amended 2026-11-29): a type's changed schema and a rule upserted through another
// replica's admin API reach it within this period. What the copy refuses (an event of a type it
// does not hold, a rule naming one) is checked again at once against the database.
inline constexpr absl::Duration kEventsRefreshEvery = absl::Seconds(10);

class EventsService {
 public:
  // `tags` answers conditions' customer.tag("x"), `audiences` the campaigns' audiences (null:
  // a rule with an audience matches nobody).
  EventsService(EventStore& store, const CustomerTags* tags, const Audiences* audiences);

  // Seeds and loads the event types, then loads and compiles the stored rules.
  absl::Status Start();
  // Called after a batch committed grants (wakes the grant sender).
  void OnGrantsCommitted(std::function<void()> callback) { on_grants_ = std::move(callback); }

  // The BatchConsumer handler of mkt.business-events.v1. Rejects (for the dead-letter topic) what
  // does not fit its type's schema and, should the database still refuse an event's data, that
  // event alone (ApplyIsolatingRefusedEvents); any other failure is returned for a retry.
  absl::Status HandleBatch(const std::vector<kafka::IncomingMessage>& batch,
                           std::vector<Rejected>* rejected);
  // The handler of mkt.campaign-changes.v1.
  absl::Status HandleCampaignChange(const kafka::IncomingMessage& message);

  std::vector<pb::EventType> ListEventTypes() const { return types_.List(); }
  absl::StatusOr<pb::EventType> UpsertEventType(const tenancy::Actor& actor, pb::EventType type);
  absl::StatusOr<pb::UpsertRuleResponse> UpsertRule(const tenancy::Actor& actor,
                                                    const pb::TriggerRule& rule);
  absl::StatusOr<pb::ListRulesResponse> ListRules(const tenancy::Actor& actor,
                                                  const pb::ListRulesRequest& request) const;
  absl::StatusOr<pb::ListCustomerEventsResponse> ListCustomerEvents(
      const tenancy::Actor& actor, const pb::ListCustomerEventsRequest& request);
  absl::StatusOr<pb::ExplainResponse> Explain(const tenancy::Actor& actor,
                                              const pb::ExplainRequest& request);

  const RuleBook& rules() const { return rules_; }
  // How long after its end an ended campaign's rule still matches the events that occurred before
  // the end and arrive late (config late_events_s; decision 010, amended 2026-11-29, later).
  void set_late_events(absl::Duration late) { late_events_s_.store(absl::ToInt64Seconds(late)); }
  // The period of the reload of types and rules (tests shorten it).
  void set_refresh_every(absl::Duration period) {
    absl::MutexLock lock(&refresh_mu_);
    refresh_every_ = period;
  }

 private:
  // The number of loads of the event types started so far: a load numbered above it starts later.
  int64_t TypesLoadMark() const { return types_loads_started_.load(); }
  // Reloads the event types from the database unless a load numbered above `mark` (started after
  // the caller took it) succeeded; UNAVAILABLE when the database cannot be read. Loads are
  // serialised, and callers waiting for one use it when it started after their mark.
  absl::Status ReloadTypesAfter(int64_t mark);
  // Reloads the event types and the stored rules when the last reload is older than the period.
  void RefreshIfDue();
  // Compiles and holds the stored rules this replica does not hold at their stored revision
  // (upserted through another replica's admin API, or that did not compile before).
  absl::Status ReloadRules();
  // Recompiles the held rules whose event type changed version since they were compiled (a
  // condition reads fields by slot, and a new version may lay them out otherwise). A rule whose
  // condition no longer fits its type is held inactive, never matched at the old slots. Runs when
  // the types changed since the last run (types_generation_).
  void RecompileForChangedTypes();
  absl::Duration late_events() const { return absl::Seconds(late_events_s_.load()); }
  // Holds `rule` (HoldRule) and, when it does not compile, logs why at error level and counts it
  // (mkt_events_unfit_rules_total{source}); `source` says where the definition came from.
  std::shared_ptr<const CompiledRule> Hold(const pb::TriggerRule& rule,
                                           const RuleLifecycle& lifecycle, const char* source,
                                           absl::Status* status);

  EventStore& store_;
  const CustomerTags* tags_;
  const Audiences* audiences_;
  EventTypeRegistry types_;
  RuleBook rules_;
  std::function<void()> on_grants_;
  std::atomic<int64_t> late_events_s_{259'200};

  absl::Mutex types_load_mu_;  // serialises the loads of the event types
  std::atomic<int64_t> types_loads_started_{0};
  std::atomic<int64_t> types_loaded_by_{0};  // the number of the last load that succeeded
  // Bumped whenever the registry in memory changes; rules are recompiled up to it.
  std::atomic<int64_t> types_generation_{0};
  // The database's clock at the last reload of the rules (0: never; Start loads them all).
  std::atomic<int64_t> rules_reloaded_as_of_{0};
  absl::Mutex recompile_mu_;
  int64_t rules_compiled_for_ ABSL_GUARDED_BY(recompile_mu_) = 0;
  absl::Mutex refresh_mu_;
  absl::Duration refresh_every_ ABSL_GUARDED_BY(refresh_mu_) = kEventsRefreshEvery;
  absl::Time refreshed_at_ ABSL_GUARDED_BY(refresh_mu_) = absl::InfinitePast();
  // "rule_id@revision" of the stored rules a reload could not compile (warned about once).
  std::set<std::string> refused_rules_ ABSL_GUARDED_BY(refresh_mu_);
};

// Applies events [0, count) with `apply(begin, end)` (a half-open range, in order, in one
// transaction). When that fails with a data exception (IsDataException: the database refuses the
// data of some event, e.g. a value validation did not foresee), the range is split in two halves
// applied one after the other, down to single events: each event that still fails alone with a
// data exception is passed to `refused` (to be dead-lettered) and skipped, the others are applied,
// in their order. Any other failure (lost connection, serialization failure, deadlock, ...) is
// returned at once: the caller retries the whole batch, and the events already applied by then
// are duplicates (their dedupe keys were committed with their effects).
absl::Status ApplyIsolatingRefusedEvents(
    size_t count, const std::function<absl::Status(size_t begin, size_t end)>& apply,
    const std::function<void(size_t index, const absl::Status& status)>& refused);

// Returns the lifecycle of a campaign's rule after `change`, given the rule `held` (null: none):
// PAUSED opens a paused period at its changed_at, ONLINE closes it (a resume), ENDED records the
// end, ARCHIVED drops it (no late events). A change at a revision no higher than the held one (a
// replay) changes nothing.
RuleLifecycle NextLifecycle(const CompiledRule* held,
                            const ::marketing::campaigns::v1::CampaignChanged& change);

// Returns the rule an EVENT_TRIGGER campaign's change describes, or nullopt for campaigns of
// other kinds. The event type comes from the trigger expression's `event.type == "..."`; the
// first reward item whose benefit_template_id names an asset ("POINTS", "CASH_FEN",
// "LOTTERY_CHANCE") grants that asset, and charges the campaign's budget quantity × its
// unit_cost_fen (set when the version was submitted, decision 034; 0 for versions submitted
// before).
absl::StatusOr<std::optional<pb::TriggerRule>> RuleFromCampaign(
    const ::marketing::campaigns::v1::CampaignChanged& change);

}  // namespace mkt::events
