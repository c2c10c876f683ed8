// LedgerStore over PostgreSQL (decision 006): one transaction per Apply call for every batch in
// it (group commit). Each call locks the account rows it touches in id order, simulates the
// batches in memory against the locked totals and points lots (a failing batch is dropped
// alone), and writes the survivors with a handful of multi-row statements, facts included.
#pragma once

#include <functional>
#include <set>
#include <utility>

#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "libs/core/ids.h"
#include "libs/pg/migrations.h"
#include "libs/pg/pool.h"
#include "services/rewards/ledger_store.h"

namespace mkt::rewards {

// The schema migrations of the rewards service (services/rewards/migrations). The service lists
// kafka::OutboxMigrations() beside them: facts go through the outbox.
const pg::MigrationSet& RewardsMigrations();

class AccountIdCache;

// The FUND transfers credited to `ref` and the RELEASE transfers debited from it (0 when there are
// none), read in the caller's transaction: by PgLedgerStore::GetBudgetFlows and, under its lock,
// by CampaignBudgets (campaign_budgets.h).
BudgetFlows BudgetFlowsIn(pqxx::work& tx, const pb::AccountRef& ref);

class PgLedgerStore final : public LedgerStore {
 public:
  // `clock` stamps transfers, lots and timeouts. `outbox_retention` is how long the outbox relay
  // keeps sent rows (RelayOptions::retention): CheckIntegrity expects exactly one fact row for
  // every posted or voiding transfer recorded within that window.
  PgLedgerStore(pg::Pool& pool, const Clock& clock,
                absl::Duration outbox_retention = absl::Hours(24));
  ~PgLedgerStore() override;

  // Called after every commit that changed one of a customer's accounts, once per (org,
  // customer), from the committing thread (e.g. to invalidate cached wallets). Set it before the
  // store is used; it must be cheap and must not call back into the store.
  using CustomerChangeListener =
      std::function<void(const std::string& org_id, const std::string& customer_id)>;
  void OnCustomerChanged(CustomerChangeListener listener) { listener_ = std::move(listener); }

  absl::StatusOr<std::vector<BatchResult>> Apply(const std::vector<LinkedBatch>& batches) override;
  // A pending transfer that was already resolved the same way (e.g. voided by the timeout
  // sweeper before the caller's void arrived) answers with that earlier resolution.
  absl::StatusOr<pb::Transfer> ResolvePending(const std::string& id, const std::string& pending_id,
                                              bool post) override;
  absl::StatusOr<int> VoidTimedOutPending(absl::Time now, int limit) override;
  absl::StatusOr<pb::RunExpiryResponse> ExpireLots(absl::Time as_of, int limit) override;

  absl::StatusOr<pb::Account> GetAccount(const pb::AccountRef& ref) override;
  absl::StatusOr<BudgetFlows> GetBudgetFlows(const pb::AccountRef& ref) override;
  absl::StatusOr<std::vector<pb::Account>> GetCustomerAccounts(
      const std::string& org_id, const std::string& customer_id) override;
  absl::StatusOr<WalletBalances> GetWalletBalances(const std::string& org_id,
                                                   const std::string& customer_id,
                                                   absl::Time until) override;
  absl::StatusOr<absl::flat_hash_map<std::string, WalletBalances>> GetWalletBalancesOf(
      const std::string& org_id, const std::vector<std::string>& customer_ids,
      absl::Time until) override;
  absl::StatusOr<pb::ListExpiringLotsResponse> ListExpiringLots(const std::string& org_id,
                                                                const std::string& customer_id,
                                                                absl::Time until) override;
  // `limit` outside 1..500 is clamped (0 or less: 50).
  absl::StatusOr<pb::ListHistoryResponse> ListHistory(const std::string& org_id,
                                                      const std::string& customer_id,
                                                      const std::string& page_token,
                                                      int limit) override;
  // Lines are the posted transfers of the account created in [from, to), oldest first.
  // opening_balance is the posted balance before the page's first line, closing_balance after
  // its last (both the balance at the start of the range when the page is empty).
  absl::StatusOr<pb::GetStatementResponse> GetStatement(const pb::AccountRef& account,
                                                        absl::Time from, absl::Time to,
                                                        const std::string& page_token,
                                                        int limit) override;
  // NOT_FOUND when the batch has no posted transfer.
  absl::StatusOr<std::vector<pb::Transfer>> GetBatch(const std::string& batch_id) override;
  absl::StatusOr<pb::Transfer> GetTransfer(const std::string& id) override;
  absl::StatusOr<std::vector<LotExpiry>> GetLotExpiries(const std::string& transfer_id) override;
  absl::StatusOr<pb::CheckIntegrityResponse> CheckIntegrity() override;

 private:
  void NotifyChanged(const std::set<std::pair<std::string, std::string>>& customers) const;
  // LinkedBatch::new_coupon: inserts the coupons of `batches`; a batch whose request id issued a
  // coupon before gets its result (ALREADY_EXISTS) and is not to be applied.
  static std::vector<std::optional<BatchResult>> InsertNewCoupons(
      pqxx::work& tx, const std::vector<LinkedBatch>& batches);
  // Deletes the coupons of the batches that failed; writes the issue events of the others.
  static void FinishNewCoupons(pqxx::work& tx, const std::vector<LinkedBatch>& batches,
                               const std::vector<BatchResult>& results);

  pg::Pool& pool_;
  const Clock& clock_;
  CustomerChangeListener listener_;
  const absl::Duration outbox_retention_;
  // Account ids never change once committed, so the group-commit path looks them up here and
  // asks the database only for accounts it has not seen (defined in the .cc).
  std::unique_ptr<AccountIdCache> account_ids_;
};

}  // namespace mkt::rewards
