// The events service's PostgreSQL store: event types and rules, and the matching transaction —
// one per consumed batch — that records the dedupe keys, the event log, the per-customer
// aggregates, the match outcomes and the grant outbox together, so a batch either happened
// entirely or not at all. Also the grant outbox's reads and state changes.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "libs/pg/migrations.h"
#include "libs/pg/pool.h"
#include "services/events/event_types.h"
#include "services/events/rules.h"

namespace mkt::events {

const pg::MigrationSet& EventsMigrations();

// Whether `status` (from ProcessBatch) says that the database refused the events' data: a
// PostgreSQL data exception (SQLSTATE class 22: a NUL in text, malformed UTF-8 or JSON, a number
// or date out of range...) or attributes the store cannot encode. The same events can never be
// written; a subset without the offending event can. Other failures (lost connection,
// serialization failure, deadlock, ...) are not data exceptions and are worth retrying.
bool IsDataException(const absl::Status& status);
// The SQLSTATE of a data exception ("" when it is not one, or did not come from PostgreSQL).
std::string DataExceptionSqlState(const absl::Status& status);
// Returns a data exception with `sqlstate` ("" when not from PostgreSQL) and `message`.
absl::Status DataException(std::string_view sqlstate, std::string_view message);

struct BatchStats {
  int events = 0;
  int duplicates = 0;
  int matches = 0;
  int grants = 0;
  int clawbacks = 0;
  // Reversals stored to wait for their original (decision 030), and stored ones applied because
  // their original arrived (a reversal whose original comes later in its own batch is neither).
  int parked = 0;
  int unparked = 0;
};

// One row of the grant outbox.
struct GrantRow {
  int64_t seq = 0;
  std::string grant_id;
  std::string event_key;
  std::string rule_id;
  int tier = 0;
  std::string campaign_id;
  std::string org_id;
  std::string customer_id;
  pb::RewardSpec reward;
  std::string state;
  bool granted = false;
  std::string reason;
  int attempts = 0;
  // When the row was created (the database's age of the row when read, on this host's clock).
  absl::Time created = absl::InfinitePast();
  // When the ledger first refused the grant with ACCOUNT_NOT_FOUND (its campaign's budget not
  // funded yet), on the same clock; none if it never did.
  std::optional<absl::Time> unfunded_since;
};

// How a grant-outbox call ended.
struct GrantResult {
  std::string grant_id;
  enum class Kind { kGranted, kRejected, kReversed, kReverseFailed, kRetry } kind;
  std::string reason;
  // A retry because the ledger answered ACCOUNT_NOT_FOUND (the budget not funded yet): the row's
  // unfunded_since is set unless it already is, so its retry window starts at the first one.
  bool unfunded = false;
};

class EventStore {
 public:
  explicit EventStore(pg::Pool& pool) : pool_(pool) {}

  // Inserts the default event types that are not there yet; returns every stored type.
  absl::StatusOr<std::vector<pb::EventType>> SeedAndLoadEventTypes();
  // Every stored type (what other replicas defined since this one loaded them).
  absl::StatusOr<std::vector<pb::EventType>> LoadEventTypes();
  absl::Status SaveEventType(const pb::EventType& type);
  // Stores `rule` (with its campaign's `lifecycle`) unless a higher revision is stored; returns
  // whether it was stored.
  absl::StatusOr<bool> SaveRule(const pb::TriggerRule& rule, const RuleLifecycle& lifecycle = {});
  // The rules stored or changed since `since` (the `as_of` of the previous call; 0 for all), and
  // the database's clock now, the `since` of the next call. A minute before `since` is read
  // again: a transaction that wrote a rule may commit after a later one stamped its own.
  struct RulesChanged {
    std::vector<pb::TriggerRule> rules;
    std::vector<RuleLifecycle> lifecycles;  // lifecycles[i] is rules[i]'s
    int64_t as_of_micros = 0;
  };
  absl::StatusOr<RulesChanged> LoadRulesChangedSince(int64_t since_micros);

  // Applies a batch of valid events (in order) in one transaction: dedupe, log, match against
  // `rules` (conditions read `tags`; a rule with an audience matches only customers `audiences`
  // places in it), aggregates, outcomes, grants, clawbacks. Fails with a status IsDataException
  // recognises when the database refuses the data of some event (nothing is written then).
  absl::StatusOr<BatchStats> ProcessBatch(const std::vector<ValidatedEvent>& events,
                                          const RuleIndex& rules, const TagSnapshot* tags,
                                          const AudienceSnapshot* audiences);

  // ---- The grant outbox, read by the grant sender (one per replica) ----
  // Returns the highest seq of the outbox: rows above it were created after the caller started,
  // so no earlier process can have sent them.
  absl::StatusOr<int64_t> MaxGrantSeq();
  // Returns up to `limit` due rows with seq > `after_seq` (oldest first): rows the sender has not
  // seen. Rows read that are reversals of grants never sent (never attempted, seq >
  // `unsent_after_seq`) are cancelled on the way (no call is needed) and not returned.
  absl::StatusOr<std::vector<GrantRow>> ClaimDueAfter(int64_t after_seq, int64_t unsent_after_seq,
                                                      int limit);
  // Returns up to `limit` due rows with seq <= `up_to_seq` whose seq is not in `held` (the rows
  // the sender holds: queued, in flight or with an outcome not yet recorded): retries whose
  // backoff ended, reversals, rows committed late. Cancels, like ClaimDueAfter, the rows read
  // that are reversals of grants never sent.
  absl::StatusOr<std::vector<GrantRow>> ClaimDueAgain(int64_t up_to_seq,
                                                      const std::vector<int64_t>& held,
                                                      int64_t unsent_after_seq, int limit);
  // Records the outcomes of ledger calls (one transaction).
  absl::Status Finish(const std::vector<GrantResult>& results);

  // ---- Operators' reads ----
  absl::StatusOr<std::vector<pb::LoggedEvent>> ListCustomerEvents(
      const pb::ListCustomerEventsRequest& request);
  absl::StatusOr<std::optional<ValidatedEvent>> LoadEvent(const std::string& event_key,
                                                          const EventTypeRegistry& types);
  // The decision recorded for (event, rule), or "" if the condition did not match.
  absl::StatusOr<std::string> LoadDecision(const std::string& event_key,
                                           const std::string& rule_id);
  absl::StatusOr<Aggregate> LoadAggregate(const std::string& rule_id,
                                          const std::string& customer_id,
                                          const std::string& window_key);
  absl::StatusOr<std::vector<pb::GrantOutcome>> ListGrants(const std::string& event_key,
                                                           const std::string& rule_id);

 private:
  absl::Status EnsurePartitions(const std::vector<ValidatedEvent>& events);

  pg::Pool& pool_;
  absl::Mutex partitions_mu_;
  std::set<std::string> partitions_ ABSL_GUARDED_BY(partitions_mu_);
};

}  // namespace mkt::events
