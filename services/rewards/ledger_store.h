// Storage of the benefit ledger: accounts, transfers, points lots, and the facts they publish.
// The PostgreSQL implementation applies many linked batches in one database transaction (group
// commit) while keeping each batch all-or-nothing, which is what lets a hot campaign budget take
// thousands of grants a second. docs/decisions/006-ledger.md describes the model.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "libs/core/status.h"
#include "marketing/rewards/v1/ledger.pb.h"

namespace mkt::rewards {

namespace pb = ::marketing::rewards::v1;

// The topic every posted (or voided) transfer is published on, through the outbox.
inline constexpr char kLedgerFactsTopic[] = "mkt.ledger-facts.v1";

// A coupon instance issued by the batch that carries it (benefits, decision 017).
struct NewCoupon {
  int64_t id = 0;  // drawn from the coupons id sequence
  std::string code;
  std::string issue_request_id;
  std::string org_id;
  std::string template_id;
  int type = 0;  // BenefitType
  std::string customer_id;
  std::string campaign_id;
  std::string holder_org_id;
  absl::Time valid_from;
  absl::Time valid_until;
  absl::Time issued_at;
  std::string actor;
  std::string intent;  // the LedgerIntent of the issue, serialised, kept in the coupon's history
};

// One client request: transfers applied all-or-nothing. `batch_id` is the request's idempotency
// key (stored on each transfer); transfers carry their own ids. Specs are validated before they
// reach the store (ValidateTransferSpecs in ledger_service.h).
struct LinkedBatch {
  std::string batch_id;
  std::vector<pb::TransferSpec> transfers;
  // When set to one of the batch's accounts, the result carries that account as it stood right
  // after the batch, so that a grant or a spend answers with the customer's balance without a
  // second read of the database.
  std::optional<pb::AccountRef> report_account;
  // A coupon this batch issues, written in the batch's transaction: ISSUED, with its issue event
  // applied, when the batch succeeds; not at all when it fails. When a coupon of the same
  // issue_request_id exists already, the batch is left out and answered ALREADY_EXISTS (reason
  // ALREADY_EXISTS): the caller answers the replay from the stored coupon.
  std::optional<NewCoupon> new_coupon;
  // Set when the batch's transfer ids depend on more than `batch_id` (a reversal's ids name what
  // it reverses), so that reusing the key for another request would not collide on any id. The
  // store then refuses the batch, IDEMPOTENCY_KEY_REUSED (ALREADY_EXISTS, field "request_id"),
  // when transfers stored under `batch_id` are not exactly the batch's ids, and serialises the
  // batches that claim one batch id so that two of them at once cannot both be applied. It costs
  // a lock and a read per call that carries such a batch; grants, spends and funds, whose ids
  // are fixed by their key, leave it unset.
  bool exclusive_batch_id = false;
  // Set when a request may make fewer legs under the same key (a grant's budget and stock legs
  // are there only when asked for), so that resending the key with a body that drops a leg would
  // find every one of its ids stored with the same content. A replay of such a batch is then
  // answered only when the transfers stored under `batch_id` are exactly the batch's ids;
  // otherwise it is IDEMPOTENCY_KEY_REUSED (ALREADY_EXISTS, field "request_id") and nothing is
  // written. It costs one read per replay, nothing on first application.
  bool replay_needs_whole_batch = false;
  // Set by a reversal whose batch gives expired points back from EXPIRY before it claws a credit
  // of a customer's points back (LedgerService::Reverse, decision 006). The caller read the
  // credit's lot expiries (GetLotExpiries) outside this transaction, and the expiry job may have
  // expired more of those lots since. So for every REVERSE leg that takes such a credit back, the
  // store reads the expiries again once it holds the customer's account (which the expiry job
  // needs too) and refuses the batch ABORTED (reason CONFLICT, field "transfers[i]" of the leg),
  // writing nothing, when its reversals of them give back less than min(what expired and was not
  // given back yet, what the batch claws back of the credit): the caller reads again and
  // rebuilds the batch. A replay is answered from what was stored, unchecked. It costs a read per
  // such leg; grants, spends and funds leave it unset.
  bool checks_expiry_reversals = false;
  // Set when the batch's pending transfers must wait for their post or void however long that
  // takes (a payout's cash hold: core banking may pay days later, decision 011): they are stored
  // without timeout_at, so VoidTimedOutPending never voids them and a late post is accepted.
  // Their specs still carry a valid timeout_seconds (it is part of the content hash that makes a
  // resend a replay); the store does not use it.
  bool holds_until_resolved = false;
};

// A batch as stored (or found stored, for a replay).
struct AppliedBatch {
  std::vector<pb::Transfer> transfers;
  // LinkedBatch::report_account right after the batch (for a replay: now); empty when it was not
  // asked for.
  std::optional<pb::Account> account;
};

// What happened to one batch of an Apply call.
using BatchResult = absl::StatusOr<AppliedBatch>;

// The EXPIRE transfer of a points lot that a credit brought (LedgerStore::GetLotExpiries).
struct LotExpiry {
  int64_t lot_id = 0;
  pb::Transfer expiry;          // "expire:<lot_id>": the customer's POINTS -> the org's EXPIRY
  int64_t reversed_amount = 0;  // what reversals of it have given back already
};

// What went into and out of a campaign's budget other than its charges and their reversals.
struct BudgetFlows {
  int64_t funded = 0;     // FUND transfers credited to it
  int64_t released = 0;   // RELEASE transfers debited from it (decision 035)
  int64_t available = 0;  // its balance less what pending transfers reserve
};

// The ledger's part of a customer's wallet.
struct WalletBalances {
  std::vector<pb::Account> accounts;
  // Remaining points of the lots still valid now and expiring before the `until` asked for.
  int64_t points_expiring = 0;
  // Remaining points of the lots past their expiry that the expiry job has not turned over yet:
  // still in the POINTS account's totals (and available), but no spend takes them (decision 006,
  // "Points lots and expiry"), so the wallet does not show them.
  int64_t points_expired = 0;
};

class LedgerStore {
 public:
  virtual ~LedgerStore() = default;

  // Applies `batches` (in order) and returns one result per batch. Each batch is independent and
  // all-or-nothing: its transfers are all stored, or none is and its result is the first failing
  // transfer's error:
  //   INSUFFICIENT_BALANCE / BUDGET_EXHAUSTED (BUDGET_FEN) / STOCK_EXHAUSTED (STOCK) when a flagged
  //   account would go below zero (FAILED_PRECONDITION, field "transfers[i]");
  //   ACCOUNT_NOT_FOUND (NOT_FOUND) for a campaign/template account that was never funded;
  //   IDEMPOTENCY_KEY_REUSED (ALREADY_EXISTS) when an id exists with different content, or (field
  //   "request_id") when an exclusive_batch_id names a stored batch of other transfers, or a
  //   replay_needs_whole_batch batch replays only part of what is stored under its batch id;
  //   NOT_FOUND / CONFLICT for a reversal of an unknown transfer or beyond what is left of it;
  //   ABORTED (CONFLICT) for a checks_expiry_reversals batch built before more points expired.
  // A batch whose ids all exist with the same content returns the stored transfers (replay).
  // A non-OK *return status of the whole call* (e.g. the database is down) means nothing of any
  // batch was stored.
  virtual absl::StatusOr<std::vector<BatchResult>> Apply(
      const std::vector<LinkedBatch>& batches) = 0;

  // Posts (post=true) or voids a pending transfer with a new transfer `id` (idempotent).
  // NOT_FOUND for an unknown pending id; CONFLICT when it is already resolved the other way.
  virtual absl::StatusOr<pb::Transfer> ResolvePending(const std::string& id,
                                                      const std::string& pending_id, bool post) = 0;

  // Voids up to `limit` pending transfers whose timeout passed before `now`; returns how many.
  virtual absl::StatusOr<int> VoidTimedOutPending(absl::Time now, int limit) = 0;

  // Moves what is left of points lots that expired before `as_of` to the org's EXPIRY account as
  // EXPIRE transfers with ids "expire:<lot id>" (so re-runs change nothing); up to `limit` lots.
  virtual absl::StatusOr<pb::RunExpiryResponse> ExpireLots(absl::Time as_of, int limit) = 0;

  virtual absl::StatusOr<pb::Account> GetAccount(const pb::AccountRef& ref) = 0;
  // The FUND transfers credited to `ref` and the RELEASE transfers debited from it, in its unit
  // (0 when there are none). Stores that do not keep transfers answer UNIMPLEMENTED.
  virtual absl::StatusOr<BudgetFlows> GetBudgetFlows(const pb::AccountRef& ref) {
    (void)ref;
    return absl::UnimplementedError("this store does not sum funding transfers");
  }
  virtual absl::StatusOr<std::vector<pb::Account>> GetCustomerAccounts(
      const std::string& org_id, const std::string& customer_id) = 0;
  // Lots of the customer's POINTS account with remaining > 0 expiring before `until`, soonest
  // first.
  virtual absl::StatusOr<pb::ListExpiringLotsResponse> ListExpiringLots(
      const std::string& org_id, const std::string& customer_id, absl::Time until) = 0;
  // The customer's accounts and what of their points expires before `until`, for the wallet
  // (one read where the store can; this default makes two).
  virtual absl::StatusOr<WalletBalances> GetWalletBalances(const std::string& org_id,
                                                           const std::string& customer_id,
                                                           absl::Time until) {
    WalletBalances out;
    MKT_ASSIGN_OR_RETURN(out.accounts, GetCustomerAccounts(org_id, customer_id));
    MKT_ASSIGN_OR_RETURN(pb::ListExpiringLotsResponse lots,
                         ListExpiringLots(org_id, customer_id, until));
    out.points_expiring = lots.total();
    return out;
  }
  // GetWalletBalances for several customers of one org, in one read where the store can (the
  // wallet refreshes of benefits.h); every customer asked for has an entry, empty when they have
  // no account. This default reads them one by one.
  virtual absl::StatusOr<absl::flat_hash_map<std::string, WalletBalances>> GetWalletBalancesOf(
      const std::string& org_id, const std::vector<std::string>& customer_ids, absl::Time until) {
    absl::flat_hash_map<std::string, WalletBalances> out;
    for (const std::string& customer_id : customer_ids) {
      MKT_ASSIGN_OR_RETURN(out[customer_id], GetWalletBalances(org_id, customer_id, until));
    }
    return out;
  }
  // Transfers touching any of the customer's accounts, newest first; `page_token` as returned.
  virtual absl::StatusOr<pb::ListHistoryResponse> ListHistory(const std::string& org_id,
                                                              const std::string& customer_id,
                                                              const std::string& page_token,
                                                              int limit) = 0;
  virtual absl::StatusOr<pb::GetStatementResponse> GetStatement(const pb::AccountRef& account,
                                                                absl::Time from, absl::Time to,
                                                                const std::string& page_token,
                                                                int limit) = 0;
  // The posted transfers of a batch, for reversals.
  virtual absl::StatusOr<std::vector<pb::Transfer>> GetBatch(const std::string& batch_id) = 0;
  virtual absl::StatusOr<pb::Transfer> GetTransfer(const std::string& id) = 0;
  // The EXPIRE transfers of the points lots that posted credit `transfer_id` created and of the
  // lots its points were later put back into after their own had expired (restored lots), oldest
  // lot first; empty when none of them expired. A grant's reversal gives these points back from
  // EXPIRY before it claws the grant back (decision 006).
  virtual absl::StatusOr<std::vector<LotExpiry>> GetLotExpiries(const std::string& transfer_id) = 0;

  // Verifies the ledger's invariants over the whole database (see decision 006).
  virtual absl::StatusOr<pb::CheckIntegrityResponse> CheckIntegrity() = 0;
};

}  // namespace mkt::rewards
