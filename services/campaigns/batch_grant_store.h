// The PostgreSQL side of batch grants (issue 8 item 7): one run per BATCH_GRANT campaign (its
// state, snapshots, materialisation cursor, counters and the lease that lets one runner at a time
// work on it) and one item per recipient (PENDING, then GRANTED or FAILED with the rewards
// service's reason, or CANCELLED). The items are the resumable work list; outcomes are written a
// chunk per statement, together with the run's counters, so progress reads are one row.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "libs/pg/pool.h"

namespace mkt::campaigns {

inline constexpr char kRunMaterialising[] = "MATERIALISING";
inline constexpr char kRunRunning[] = "RUNNING";
inline constexpr char kRunCompleted[] = "COMPLETED";
inline constexpr char kRunCancelled[] = "CANCELLED";
// The reason of a PENDING item whose grant the rewards service answered neither yes nor no after
// every attempt; an operator settles it (SettleBatchGrantItem).
inline constexpr char kStuckReason[] = "STUCK";

struct BatchGrantRun {
  std::string campaign_id;
  std::string org_id;
  std::string state;
  // In reading order, "exclude:<snapshot>" before "include:<snapshot>".
  std::vector<std::string> snapshot_ids;
  int cursor_snapshot = 0;
  std::string cursor_token;
  int64_t total = 0;
  int64_t granted = 0;
  int64_t failed = 0;
  int64_t cancelled = 0;
  absl::Time started_at;
  std::optional<absl::Time> finished_at;
  absl::Time updated_at;
  std::string last_error;
  std::string cancelled_by;
  std::string cancel_reason;
  std::string lease_owner;
  // Of the pending items, those marked stuck; read by Get only (0 from the other calls).
  int64_t stuck = 0;

  int64_t pending() const { return total - granted - failed - cancelled; }
};

// A recipient still to grant; `stuck` when it was marked so (the runner that marked it may be
// gone: a restart, another replica, a pause in between), so every resend asks first whether an
// operator settled it.
struct PendingItem {
  std::string customer_id;
  bool stuck = false;
};

// What the rewards service answered for one recipient.
struct BatchGrantOutcome {
  std::string customer_id;
  bool granted = false;
  // FAILED only: the reason name (STOCK_EXHAUSTED...) and the service's message.
  std::string reason;
  std::string message;
};

struct BatchGrantFailureRow {
  std::string customer_id;
  std::string reason;
  std::string message;
  absl::Time failed_at;
};

// An ONLINE BATCH_GRANT campaign whose run is not finished (or not created yet).
struct RunnableBatch {
  std::string campaign_id;
  std::string org_id;
};

class PgBatchGrantStore {
 public:
  explicit PgBatchGrantStore(pg::Pool& pool) : pool_(pool) {}

  // ONLINE BATCH_GRANT campaigns without a finished run, oldest first.
  absl::StatusOr<std::vector<RunnableBatch>> ListRunnable(int limit);

  // Takes the run of `campaign_id` for `owner` for `lease`: creates it (MATERIALISING) when
  // missing, takes it over when its lease expired or is already `owner`'s. nullopt when another
  // runner holds it or it is finished.
  absl::StatusOr<std::optional<BatchGrantRun>> Acquire(const std::string& campaign_id,
                                                       const std::string& org_id,
                                                       const std::string& owner,
                                                       absl::Duration lease);
  // Extends the lease. FAILED_PRECONDITION when `owner` lost it or the run is no longer active
  // (cancelled meanwhile): the runner must stop sending.
  absl::Status Renew(const std::string& campaign_id, const std::string& owner,
                     absl::Duration lease);
  // Gives the lease up (a clean stop), so another replica may continue at once.
  absl::Status Release(const std::string& campaign_id, const std::string& owner);

  absl::Status SetSnapshots(const std::string& campaign_id, const std::string& owner,
                            const std::vector<std::string>& snapshot_ids);
  // Inserts a page of recipients as `state` (PENDING, or EXCLUDED for excluded segments), ignoring
  // customers already in, and moves the materialisation cursor, in one transaction.
  absl::Status AddPage(const std::string& campaign_id, const std::string& owner,
                       const std::vector<std::string>& customers, const std::string& state,
                       int next_snapshot, const std::string& next_token);
  // MATERIALISING → RUNNING with total = the PENDING items.
  absl::Status FinishMaterialising(const std::string& campaign_id, const std::string& owner);

  // Up to `limit` PENDING items after `after` (keyset, by customer id).
  absl::StatusOr<std::vector<PendingItem>> PendingAfter(const std::string& campaign_id,
                                                        const std::string& after, int limit);
  // Records a chunk of outcomes in one UPDATE (items still PENDING or CANCELLED: a grant that
  // landed after a cancellation is still a grant) and moves the run's counters.
  absl::Status Record(const std::string& campaign_id, const std::vector<BatchGrantOutcome>& chunk);
  // RUNNING → COMPLETED when no item is PENDING; returns whether the run is now completed (also
  // when it was already, by an operator's settlement).
  absl::StatusOr<bool> CompleteIfDone(const std::string& campaign_id, const std::string& owner);
  absl::Status SetLastError(const std::string& campaign_id, const std::string& error);
  // Marks a PENDING item as needing an operator (reason `reason`, e.g. STUCK, and the last
  // answer); it stays PENDING. Recording its outcome later overwrites both.
  absl::Status MarkStuck(const std::string& campaign_id, const std::string& customer_id,
                         const std::string& reason, const std::string& message);
  // PENDING items marked stuck, after `after` by customer id (failed_at: when marked).
  absl::StatusOr<std::vector<BatchGrantFailureRow>> Stuck(const std::string& campaign_id,
                                                          const std::string& after, int limit);
  // Whether the item is still PENDING: the runner asks before it sends a stuck item again, since
  // an operator may have settled it meanwhile (through any replica).
  absl::StatusOr<bool> StillPending(const std::string& campaign_id, const std::string& customer_id);
  // Settles a stuck item (PENDING with reason `stuck_reason`) as GRANTED or FAILED with `reason`
  // and `message`, moves the run's counters and completes a RUNNING run left with nothing
  // pending, in one transaction. NOT_FOUND when the batch has no such recipient,
  // FAILED_PRECONDITION when the item is not stuck (granted, failed, cancelled or still being
  // granted).
  absl::StatusOr<BatchGrantRun> Settle(const std::string& campaign_id,
                                       const std::string& customer_id,
                                       const std::string& stuck_reason, bool granted,
                                       const std::string& reason, const std::string& message);

  // Cancels the run (creating a CANCELLED one when none exists yet, so it never starts): the
  // PENDING items become CANCELLED. FAILED_PRECONDITION when it is already finished.
  absl::StatusOr<BatchGrantRun> Cancel(const std::string& campaign_id, const std::string& org_id,
                                       const std::string& by, const std::string& reason);
  // Cancels the active runs of campaigns that ended or were archived; returns their ids.
  absl::StatusOr<std::vector<std::string>> CancelEnded();

  // nullopt when the campaign has no run.
  absl::StatusOr<std::optional<BatchGrantRun>> Get(const std::string& campaign_id);
  // FAILED items after `after`, by customer id.
  absl::StatusOr<std::vector<BatchGrantFailureRow>> Failures(const std::string& campaign_id,
                                                             const std::string& after, int limit);

 private:
  // The items of `campaign_id` matching `condition` (SQL over batch_grant_items), by customer id
  // after `after`: the failure report and the stuck items.
  absl::StatusOr<std::vector<BatchGrantFailureRow>> ItemsWhere(const char* condition,
                                                               const std::string& campaign_id,
                                                               const std::string& after, int limit);
  pg::Pool& pool_;
};

}  // namespace mkt::campaigns
