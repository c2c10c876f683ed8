// Red-envelope payouts: a customer's CASH_FEN leaves for their bank account. A request reserves
// the cash (pending transfer "pay.<id>.reserve" to the org's PAYOUT account) and sends a
// PayoutCommand to core banking through the outbox; core banking's PayoutResult posts the
// reservation (success) or voids it (failure), deduplicated by event id in the same transaction
// as the payout's new state. The payout row is the source of truth; transfers carry deterministic
// ids, and RepairLedger finishes what a crash interrupted (decision 011).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "libs/core/ids.h"
#include "libs/kafka/kafka.h"
#include "libs/pg/pool.h"
#include "marketing/rewards/v1/benefits.pb.h"
#include "services/rewards/ledger_store.h"

namespace mkt::rewards {

inline constexpr char kPayoutCommandsTopic[] = "mkt.payout-commands.v1";
inline constexpr char kPayoutResultsTopic[] = "mkt.payout-results.v1";

class Payouts {
 public:
  Payouts(pg::Pool& pool, LedgerStore& ledger, const Clock& clock,
          absl::Duration repair_grace = absl::Seconds(10))
      : pool_(pool), ledger_(ledger), clock_(clock), repair_grace_(repair_grace) {}

  // Idempotent by request_id (the payout id). INSUFFICIENT_BALANCE when the customer's available
  // cash is short (nothing is kept then).
  absl::StatusOr<pb::Payout> RequestPayout(const pb::RequestPayoutRequest& request);
  // The handler of mkt.payout-results.v1 (a kafka::Consumer Handler). A duplicate event, or a
  // second reply for a payout already settled, changes nothing.
  absl::Status HandleResult(const kafka::IncomingMessage& message);
  absl::StatusOr<pb::Payout> GetPayout(const std::string& id);
  // Applies ledger work that stayed undone for longer than the grace; returns how many payouts.
  absl::StatusOr<int> RepairLedger(int limit);

 private:
  // Brings the ledger (and the command) in line with the payout row.
  absl::Status Settle(const std::string& id);
  // After a refused reservation: deletes the unreserved payout `id` (false), or, when a
  // reservation of it exists after all (a concurrent call with the same request_id was accepted
  // once the cash arrived), settles it, REQUESTED with its command sent (true).
  absl::StatusOr<bool> ForgetUnreserved(const std::string& id);

  pg::Pool& pool_;
  LedgerStore& ledger_;
  const Clock& clock_;
  const absl::Duration repair_grace_;
};

}  // namespace mkt::rewards
