// The ledger's rules above storage: validation of every input (so bad input never reaches the
// database), how a grant, a spend, a reversal and a funding become linked transfers, and the
// reads. Writes go through a GrantBatcher, which groups the requests of a few milliseconds into
// one LedgerStore::Apply call.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "libs/core/ids.h"
#include "services/rewards/batcher.h"
#include "services/rewards/ledger_store.h"

namespace mkt::rewards {

// Returns INVALID_ARGUMENT (field "transfers[i].<field>") for the first spec that is malformed:
// id empty, longer than 128 or outside [A-Za-z0-9._:-]; amount <= 0; assets of the two sides
// differ or are unspecified; debit and credit are the same account; an owner kind that does not
// fit the asset (BUDGET_FEN: CAMPAIGN or SYSTEM; STOCK: TEMPLATE or SYSTEM with asset_ref set;
// others: CUSTOMER or SYSTEM); a SYSTEM owner_id that is not a role name; an org id or owner id
// that is empty or too long; POINTS credited to a CUSTOMER without an expiry rule (or with a
// rule out of range); pending credits of POINTS to a customer; timeout out of 1..86400 s for a
// pending transfer; duplicate ids within the list; REVERSE without reverses_transfer_id.
absl::Status ValidateTransferSpecs(const std::vector<pb::TransferSpec>& specs);

// Returns the instant a points lot granted at `granted_at` expires under `rule`
// (China Standard Time, UTC+8, for calendar rules).
absl::StatusOr<absl::Time> ExpiryOf(const pb::PointsExpiry& rule, absl::Time granted_at);

class LedgerService {
 public:
  LedgerService(GrantBatcher& batcher, LedgerStore& store, const Clock& clock)
      : batcher_(batcher), store_(store), clock_(clock) {}

  absl::StatusOr<pb::CreateTransfersResponse> CreateTransfers(
      const pb::CreateTransfersRequest& request);
  absl::StatusOr<pb::Transfer> ResolvePending(const pb::ResolvePendingRequest& request, bool post);
  // Transfer ids are "<request_id>:budget", "<request_id>:stock", "<request_id>:benefit".
  absl::StatusOr<pb::GrantResponse> Grant(const pb::GrantRequest& request);
  // Transfer id "<request_id>:spend".
  absl::StatusOr<pb::SpendResponse> Spend(const pb::SpendRequest& request);
  // Reversal ids "<request_id>:<original transfer id>"; legs in the reverse order of the batch.
  absl::StatusOr<pb::ReverseResponse> Reverse(const pb::ReverseRequest& request);
  // Transfer id "<request_id>:fund".
  absl::StatusOr<pb::FundResponse> Fund(const pb::FundRequest& request);

  absl::StatusOr<pb::GetBalancesResponse> GetBalances(const pb::GetBalancesRequest& request);
  absl::StatusOr<pb::Account> GetAccount(const pb::GetAccountRequest& request);
  absl::StatusOr<pb::ListExpiringLotsResponse> ListExpiringLots(
      const pb::ListExpiringLotsRequest& request);
  absl::StatusOr<pb::ListHistoryResponse> ListHistory(const pb::ListHistoryRequest& request);
  absl::StatusOr<pb::GetStatementResponse> GetStatement(const pb::GetStatementRequest& request);
  absl::StatusOr<pb::RunExpiryResponse> RunExpiry(const pb::RunExpiryRequest& request);
  absl::StatusOr<pb::CheckIntegrityResponse> CheckIntegrity();

 private:
  GrantBatcher& batcher_;
  LedgerStore& store_;
  const Clock& clock_;
};

// Returns the AccountRef of an org's system account for `asset` and `role`.
pb::AccountRef SystemAccount(const std::string& org_id, pb::Asset asset, pb::SystemRole role,
                             const std::string& asset_ref = "");
pb::AccountRef CustomerAccount(const std::string& org_id, pb::Asset asset,
                               const std::string& customer_id);

}  // namespace mkt::rewards
