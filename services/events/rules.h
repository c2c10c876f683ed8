// Trigger rules held in memory and the pure decisions of matching: which window an event falls
// in, how a matching event moves a customer's aggregate for a rule, which rewards (tiers) that
// grants, and which grants a reversal claws back. No I/O here: the store applies the decisions
// inside its transaction, and unit tests drive them directly.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "libs/expr/expr.h"
#include "services/events/event_types.h"

namespace mkt::events {

// What a campaign's state changes did to its rule over time (decision 010, amended 2026-11-29,
// later): when it ended, and when it was paused. Stored with the rule (trigger_rules.lifecycle),
// since the changes that built it are not replayed on top of a rule stored at a later revision.
struct RuleLifecycle {
  // The campaign ENDED: its rule still matches events that occurred before `ended_at` (the ENDED
  // change's changed_at, when earlier than the window's end) and arrive late, for a while.
  bool ended = false;
  absl::Time ended_at = absl::InfiniteFuture();
  // [PAUSED changed_at, RESUMED changed_at): events that occurred then never match, whenever they
  // arrive. The last period is open (InfiniteFuture) while the campaign is paused.
  std::vector<std::pair<absl::Time, absl::Time>> paused;

  bool operator==(const RuleLifecycle& other) const = default;
};

// As stored ("" for a rule with no ended or paused state), and back ("" or "{}": none).
std::string LifecycleToJson(const RuleLifecycle& lifecycle);
absl::StatusOr<RuleLifecycle> LifecycleFromJson(std::string_view json);

// A rule ready to match: its condition compiled against its event type's schema.
struct CompiledRule {
  pb::TriggerRule proto;
  std::shared_ptr<const expr::Program> condition;  // null: always true
  absl::Time start = absl::InfinitePast();
  absl::Time end = absl::InfiniteFuture();
  // Names the rule's audience (its org and segments): rules with the same audience share one
  // lookup. Empty: the rule has no audience.
  std::string audience_key;
  // The version of the event type the condition was compiled against: its fields are read by
  // slot, and another version of the type may lay them out otherwise (EventsService recompiles).
  int64_t type_version = 0;
  RuleLifecycle lifecycle;
  // Until when an ended rule matches the events that occurred before its end and arrive late: its
  // end + late_events_s. InfinitePast for a rule that did not end.
  absl::Time late_until = absl::InfinitePast();
  // Why `proto` (the definition as received) does not compile; empty when it does. An unfit rule
  // is held at its revision but matches nothing (RuleBook indexes it under no type), whatever
  // `proto.active()` says; it is compiled again from `proto` when its event type changes.
  std::string unfit;
};

// Returns the compiled rule, or INVALID_ARGUMENT (parse/type errors with their position in
// field "condition", unknown event type, missing reward or tiers).
absl::StatusOr<std::shared_ptr<const CompiledRule>> CompileRule(const pb::TriggerRule& rule,
                                                                const EventTypeRegistry& types);

// Returns `rule` compiled (CompileRule) with `lifecycle` applied: its window ends at the end, and
// an ended rule matches late events until `late_events` after it. When `rule` does not compile, it
// is returned held unfit (CompiledRule::unfit) and `status` says why; else `status` is OK.
std::shared_ptr<const CompiledRule> HoldRule(const pb::TriggerRule& rule,
                                             const RuleLifecycle& lifecycle,
                                             absl::Duration late_events,
                                             const EventTypeRegistry& types, absl::Status* status);

// Whether `rule` matches events that arrive at `now`: active, or ended less than late_events_s
// ago (CompiledRule::late_until); never when unfit.
bool Receives(const CompiledRule& rule, absl::Time now);

// An immutable snapshot of the rules: those that receive events (Receives) indexed by event type,
// every one by id (a reversal must still find a rule that has since been deactivated).
struct RuleIndex {
  std::map<std::string, std::vector<std::shared_ptr<const CompiledRule>>, std::less<>> by_type;
  std::map<std::string, std::shared_ptr<const CompiledRule>, std::less<>> by_id;
};

// The rules in memory; readers take a snapshot without locking out writers.
class RuleBook {
 public:
  RuleBook();
  std::shared_ptr<const RuleIndex> Snapshot() const;
  // Adds or replaces `rule` unless a higher revision of it is held; returns whether it changed.
  bool Upsert(std::shared_ptr<const CompiledRule> rule);
  // Takes out of the index by type the ended rules whose late events stopped before `now`;
  // returns how many.
  size_t DropExpired(absl::Time now);
  size_t active_count() const;

 private:
  mutable absl::Mutex mu_;
  std::shared_ptr<const RuleIndex> index_ ABSL_GUARDED_BY(mu_);
};

// Returns the key of the window `occurred_at` falls in for `rule` ("c" for the campaign window,
// "m:2026-11", "d:2026-11-26" in China time), or nullopt when it is outside start..end (the end of
// an ended rule is its ENDED change's, when earlier) or in a period the campaign was paused.
std::optional<std::string> WindowKey(const CompiledRule& rule, absl::Time occurred_at);

// Whether `rule` may match `event` at all: a rule of org O matches only the events of the orgs O
// covers (its own and its branches'; the federation's, every bank's), so one bank's campaign never
// rewards another bank's customers.
bool CoversEvent(const CompiledRule& rule, const ValidatedEvent& event);

// ---- Audiences (decision 033) -----------------------------------------------------------------

// The customers of one batch whose membership of one audience matters.
struct AudienceQuery {
  std::string org_id;  // the rule's org: membership as that org sees it
  pb::Audience audience;
  std::set<std::string> customers;
};
// By CompiledRule::audience_key.
using AudienceQueries = std::map<std::string, AudienceQuery, std::less<>>;

// Whether each queried customer is in each queried audience.
class AudienceSnapshot {
 public:
  void Put(std::string_view audience_key, std::string_view customer_id, bool in);
  // nullopt: not known (not asked for, or the audience could not be resolved).
  std::optional<bool> Find(std::string_view audience_key, std::string_view customer_id) const;

 private:
  std::map<std::pair<std::string, std::string>, bool, std::less<>> in_;
};

// Where audience membership comes from: the segments service in a deployment.
class Audiences {
 public:
  virtual ~Audiences() = default;
  // Adds to `into` whether each customer of each query is in its audience. An error (the
  // segments service is unreachable) fails the batch, which is retried; an audience the segments
  // service refuses (a segment archived since approval) leaves its customers unknown, and they
  // are not rewarded.
  virtual absl::Status Fetch(const AudienceQueries& queries, AudienceSnapshot& into) const = 0;
};

// Every customer in every audience: for tests and tools without a segments service (`tags_file`).
class EveryoneInAudiences final : public Audiences {
 public:
  absl::Status Fetch(const AudienceQueries& queries, AudienceSnapshot& into) const override;
};

// Returns the audiences to ask about for `events`: for each event and each rule of its type that
// covers its org, is in its window and has an audience, the event's customer under that audience.
AudienceQueries AudiencesToCheck(const std::vector<ValidatedEvent>& events, const RuleIndex& rules);

// Whether `event`'s customer may be rewarded by `rule` as far as its audience goes: true without
// an audience, else what `audiences` says (unknown or null: false).
bool InAudience(const CompiledRule& rule, const ValidatedEvent& event,
                const AudienceSnapshot* audiences);

// Returns the tags the conditions of `events` will read: per rule org (tags are read as the rule's
// org sees them), the customers of the events that a rule of their type whose condition reads tags
// could match (org covered, in its window), and those tags. Reversals match no rule and need none.
TagQueries TagsToFetch(const std::vector<ValidatedEvent>& events, const RuleIndex& rules);

// Grants made per customer for a rule are counted in the aggregate row with this window key.
inline constexpr char kGrantsWindow[] = "*grants";

// One customer's running state for one rule in one window.
struct Aggregate {
  int64_t count = 0;
  int64_t amount_fen = 0;
  // Bit i: tier i was granted in this window (COUNT_AT_LEAST and FIRST_TIME use bit 0) and that
  // grant still stands: a grant the ledger refuses gives its bit back (EventStore::Finish), and a
  // reversal clears the bits of the tiers it takes away (ApplyReversal). FIRST_TIME keeps its bit
  // after its grant is clawed back while another counted event is left.
  int64_t tiers_granted = 0;
};

// What a matching event did to its aggregate.
struct MatchEffect {
  // Tier indexes to grant now (EVERY_MATCH, FIRST_TIME and COUNT_AT_LEAST use tier 0).
  std::vector<int> grant_tiers;
  // For operators: "granted tier 1 (cumulative 120000 >= 100000)", "count 2 of 3", ...
  std::string decision;
};

// Applies a matching event of `amount_fen` to `agg` and decides what it grants, given the
// customer's grants so far for the rule (`grants`, whose count is increased by what is granted;
// per_customer_total caps it). Counts and amounts saturate at the int64 maximum
// (mkt::SaturatingAdd) rather than overflow: one event carries at most kMaxEventAmountFen (10^15
// fen), so only a window with more than ~9,000 events of that size (or an aggregate stored before
// the bound) reaches it, far above any tier threshold.
MatchEffect ApplyMatch(const pb::TriggerRule& rule, int64_t amount_fen, Aggregate& agg,
                       Aggregate& grants);

// Takes back `count` events and `amount_fen` from `agg` (a cancelled or refunded event) and
// returns the tiers whose condition no longer holds (their bits are cleared: they can be earned
// again): COUNT_AT_LEAST's tier 0 below its count, CUMULATIVE_AMOUNT's tiers below their
// thresholds, and FIRST_TIME's tier 0 once no counted event is left (every one was cancelled, so
// the next matching event is the first again). EVERY_MATCH grants belong to their event: see
// ClawsBack.
std::vector<int> ApplyReversal(const pb::TriggerRule& rule, int64_t count, int64_t amount_fen,
                               Aggregate& agg);

// Whether a reversal under `rule` claws back an active grant of `tier` of the same rule, customer
// and window, given whether the reversal undid its event entirely (`cancelled`), whether the grant
// was caused by that event (`grant_of_reversed_event`) and the tiers ApplyReversal returned
// (`lost`) (decision 010, amended):
// - EVERY_MATCH: the grant of the cancelled event (a partial refund keeps it);
// - FIRST_TIME: the same, and tier 0 when it is lost;
// - COUNT_AT_LEAST, CUMULATIVE_AMOUNT: exactly the tiers lost, whichever event crossed them; a tier
//   whose threshold still holds keeps its grant, even when the event that crossed it is cancelled;
// - a rule of no known kind (its definition could not be found): the grants of the cancelled
//   event, as for EVERY_MATCH.
bool ClawsBack(const pb::TriggerRule& rule, bool cancelled, const std::vector<int>& lost,
               bool grant_of_reversed_event, int tier);

// The reward of `tier` (the rule's reward, or the tier's own for CUMULATIVE_AMOUNT).
const pb::RewardSpec& RewardOf(const pb::TriggerRule& rule, int tier);

// Returns the ledger request id of the grant of `rule`'s `tier` caused by `event_key`: the same
// inputs always give the same id, so a redelivered or replayed event never grants twice.
std::string GrantId(std::string_view event_key, std::string_view rule_id, int tier);
// The request id of the reversal of grant `grant_id`.
std::string ReversalId(std::string_view grant_id);

}  // namespace mkt::events
