// The ledger's rules above storage: validation of every input (so bad input never reaches the
// database), how a grant, a spend, a reversal and a funding become linked transfers, and the
// reads. Writes go through a GrantBatcher, which groups the requests of a few milliseconds into
// one LedgerStore::Apply call.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "libs/core/ids.h"
#include "libs/core/worker_pool.h"
#include "services/rewards/batcher.h"
#include "services/rewards/ledger_store.h"
#include "services/rewards/points_expiry.h"  // ExpiryOf: when a points lot expires

namespace mkt::rewards {

// Returns INVALID_ARGUMENT (field "transfers[i].<field>") for the first spec that is malformed:
// id empty, longer than 128 or outside [A-Za-z0-9._:-]; amount <= 0; assets of the two sides
// differ or are unspecified; debit and credit are the same account; an owner kind that does not
// fit the asset (BUDGET_FEN: CAMPAIGN or SYSTEM; STOCK: TEMPLATE or SYSTEM with asset_ref set;
// others: CUSTOMER or SYSTEM); a SYSTEM owner_id that is not a role name; an org id or owner id
// that is empty or too long; POINTS credited to a CUSTOMER without an expiry rule (or with a
// rule out of range); pending credits of POINTS to a customer; timeout out of 1..86400 s for a
// pending transfer; duplicate ids within the list; REVERSE without reverses_transfer_id.
// Also: no transfers or more than 500 (field "transfers"); a code outside the enum; an expiry
// rule where none applies (anything but POINTS credited to a customer; REVERSE transfers give
// back the lots they undo and carry none); a timeout on a posted transfer; reverses_transfer_id
// on anything but REVERSE; references or metadata that are not short clean UTF-8 (PostgreSQL
// and JSON would refuse them later, looking like our fault); and a request whose amounts on one
// account and side sum past int64 (field "transfers[i].amount" of the transfer that overflows).
absl::Status ValidateTransferSpecs(const std::vector<pb::TransferSpec>& specs);

class LedgerService {
 public:
  LedgerService(GrantBatcher& batcher, LedgerStore& store, const Clock& clock)
      : batcher_(batcher), store_(store), clock_(clock) {}

  // One linked batch, named by its first transfer's id (the request carries no id of its own,
  // and the first id is as stable across replays as the client's keys).
  absl::StatusOr<pb::CreateTransfersResponse> CreateTransfers(
      const pb::CreateTransfersRequest& request);
  // Posts or voids a pending transfer; goes to the store directly (one transfer, nothing to
  // group with).
  absl::StatusOr<pb::Transfer> ResolvePending(const pb::ResolvePendingRequest& request, bool post);
  // Request fields are validated under their own names ("quantity", "expiry.days_after_grant").
  // request_id is 1..64 characters of [A-Za-z0-9._:-], as for Spend, Reverse and Fund; amounts
  // above 10^15 are refused as unreasonable.
  // Transfer ids are "<request_id>:budget", "<request_id>:stock", "<request_id>:benefit".
  absl::StatusOr<pb::GrantResponse> Grant(const pb::GrantRequest& request);
  // The same grant without holding the caller's thread while the group commit gathers: validates
  // and queues the batch, and calls `done` once. After the commit the customer's account is read
  // on `readers` (a blocking database read must not stall the batcher's writer thread; if the pool
  // is full the writer reads it itself, since the grant is already committed).
  void GrantAsync(const pb::GrantRequest& request, WorkerPool& readers,
                  std::function<void(absl::StatusOr<pb::GrantResponse>)> done);
  // Up to 500 grants, each exactly as GrantAsync makes it, answered together (one outcome per
  // grant, in order) once the last one is done. INVALID_ARGUMENT for no grants or too many.
  void GrantManyAsync(const pb::GrantManyRequest& request, WorkerPool& readers,
                      std::function<void(absl::StatusOr<pb::GrantManyResponse>)> done);
  // Transfer id "<request_id>:spend".
  absl::StatusOr<pb::SpendResponse> Spend(const pb::SpendRequest& request);
  // Reversal ids "<request_id>:<original transfer id>" (INVALID_ARGUMENT on request_id when one
  // would exceed 128 characters); legs in the reverse order of the batch; the transfers of the
  // batch that are not POSTED or are themselves reversals are left out. A leg that credited a
  // customer's points is preceded by reversals "<request_id>:expire:<lot id>" of the expiries of
  // its lots (what is left of them, up to the leg's amount): expired points come back from
  // EXPIRY and are clawed back from there, spent ones from the customer's other points. The
  // expiries are read before the batch is applied; the store refuses the batch (ABORTED,
  // LinkedBatch::checks_expiry_reversals) when more of them expired in between, and Reverse then
  // builds it again from a fresh read, up to three attempts in all (then the ABORTED is the
  // caller's, to retry).
  // A request_id that already names other transfers (another target's reversal, a grant) is
  // refused ALREADY_EXISTS, IDEMPOTENCY_KEY_REUSED (field "request_id"), even when two such
  // requests race; the same request again answers with the stored reversal.
  absl::StatusOr<pb::ReverseResponse> Reverse(const pb::ReverseRequest& request);
  // Transfer id "<request_id>:fund".
  absl::StatusOr<pb::FundResponse> Fund(const pb::FundRequest& request);
  // Gives `amount_fen` of a campaign's budget back to its org's BUDGET_FEN funding account: a
  // RELEASE transfer with id "<request_id>:release" (decision 035; CampaignBudgets calls it once
  // the campaign has ended). Refused like any debit when the budget's available balance is
  // smaller; the same request_id again answers with the stored transfer.
  absl::StatusOr<pb::Transfer> ReleaseBudget(const std::string& request_id,
                                             const std::string& org_id,
                                             const std::string& campaign_id, int64_t amount_fen);

  absl::StatusOr<pb::GetBalancesResponse> GetBalances(const pb::GetBalancesRequest& request);
  absl::StatusOr<pb::Account> GetAccount(const pb::GetAccountRequest& request);
  // NOT_FOUND (ACCOUNT_NOT_FOUND) while the campaign has no budget account in that org: nothing
  // was ever funded or charged there.
  absl::StatusOr<pb::CampaignBudget> GetCampaignBudget(const pb::GetCampaignBudgetRequest& request);
  absl::StatusOr<pb::ListExpiringLotsResponse> ListExpiringLots(
      const pb::ListExpiringLotsRequest& request);
  absl::StatusOr<pb::ListHistoryResponse> ListHistory(const pb::ListHistoryRequest& request);
  absl::StatusOr<pb::GetStatementResponse> GetStatement(const pb::GetStatementRequest& request);
  absl::StatusOr<pb::RunExpiryResponse> RunExpiry(const pb::RunExpiryRequest& request);
  absl::StatusOr<pb::CheckIntegrityResponse> CheckIntegrity();

 private:
  // Appends to `out` the reversals of the EXPIRE transfers of the lots `original` (a credit of a
  // customer's points) created, as Reverse describes. When this request already reversed
  // `original`, only the expiry reversals it stored then, with their amounts (a replay, even if
  // more of those points expired since).
  absl::Status AddExpiryReversals(const pb::ReverseRequest& request, const pb::Transfer& original,
                                  std::vector<pb::TransferSpec>& out);
  // Validates a grant and builds its linked batch (no I/O).
  absl::StatusOr<LinkedBatch> PrepareGrant(const pb::GrantRequest& request) const;
  // The response once the grant's transfers are committed, with the customer's account as the
  // store reported it (read separately only when it did not).
  absl::StatusOr<pb::GrantResponse> FinishGrant(AppliedBatch applied,
                                                const pb::AccountRef& customer);

  GrantBatcher& batcher_;
  LedgerStore& store_;
  const Clock& clock_;
};

// Returns the AccountRef of an org's system account for `asset` and `role`.
pb::AccountRef SystemAccount(const std::string& org_id, pb::Asset asset, pb::SystemRole role,
                             const std::string& asset_ref = "");
pb::AccountRef CustomerAccount(const std::string& org_id, pb::Asset asset,
                               const std::string& customer_id);
// A campaign's BUDGET_FEN account in `org_id` (the campaign's org).
pb::AccountRef CampaignBudgetAccount(const std::string& org_id, const std::string& campaign_id);

}  // namespace mkt::rewards
