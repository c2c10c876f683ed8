// Benefits customers hold and use (decision 011): benefit templates, coupon and gift-voucher
// instances with their state machine (ISSUED → LOCKED → REDEEMED, back to ISSUED on cancel,
// timeout or reversal, EXPIRED, VOIDED), online checkout deduction (lock/confirm/cancel/reverse),
// offline QR redemption, gift collection, expiry and the wallet.
//
// A coupon row is the source of truth of its state. Each state change commits, in one PostgreSQL
// transaction, the new state, a history row (who, what, when) and a LedgerIntent naming the
// ledger transfer(s) that mirror it under deterministic ids; right after the commit the intent is
// applied to the LedgerStore and marked applied. A crash in between leaves an unapplied intent
// that RepairLedger applies later; the deterministic ids make every re-application idempotent.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "libs/core/ids.h"
#include "libs/pg/pool.h"
#include "marketing/rewards/v1/benefits.pb.h"
#include "services/rewards/ledger_store.h"
#include "services/rewards/qr_tokens.h"
#include "services/rewards/wallet_cache.h"

namespace mkt::rewards {

class Fulfilments;
class GrantBatcher;

struct BenefitsOptions {
  // How long an online lock holds a coupon before it is released by itself.
  absl::Duration lock_ttl = absl::Minutes(15);
  // How long an offline QR token may be used (at most 120 s).
  absl::Duration qr_ttl = absl::Seconds(60);
  // The QR signing secret (config rewards.qr_signing_key).
  std::string qr_key;
  // RepairLedger leaves intents younger than this to the call that wrote them.
  absl::Duration repair_grace = absl::Seconds(10);
  // How long a template read is reused (issue, wallet). A status change made through this
  // process is seen at once; one made by another replica within this long (config
  // rewards.template_cache_ms).
  absl::Duration template_cache_ttl = absl::Seconds(2);
  // Wallets answered from memory for this long (wallet_cache.h; config rewards.wallet_cache_ms);
  // zero: every wallet is read from the database. Wire InvalidateWallet to the ledger store's
  // change listener when it is on.
  absl::Duration wallet_cache_ttl = absl::ZeroDuration();
  size_t wallet_cache_max_entries = 200'000;
};

class Benefits {
 public:
  Benefits(pg::Pool& pool, LedgerStore& ledger, const Clock& clock, BenefitsOptions options);

  // Templates. Create stores a DRAFT; Activate funds the template's STOCK account with
  // total_stock (transfer "tpl.<id>.fund") and makes it ACTIVE; Retire stops new grants.
  absl::StatusOr<pb::BenefitTemplate> CreateTemplate(const pb::BenefitTemplate& t);
  absl::StatusOr<pb::BenefitTemplate> ActivateTemplate(const std::string& template_id);
  absl::StatusOr<pb::BenefitTemplate> RetireTemplate(const std::string& template_id);
  absl::StatusOr<pb::BenefitTemplate> GetTemplate(const std::string& template_id);
  // The org a template belongs to, which never changes: from the template cache.
  absl::StatusOr<std::string> OrgOfTemplate(const std::string& template_id);

  // Grants one instance of an ACTIVE coupon/voucher/third-party template, idempotent by
  // request_id. Ledger batch "cpn.<n>.issue": the campaign's budget (unit_cost_fen, from the
  // BUDGET_FEN account of budget_org_id's campaign, by default the template org's), the
  // template's stock (1) and the customer's COUPON holding (1), all-or-nothing: STOCK_EXHAUSTED,
  // BUDGET_EXHAUSTED or ACCOUNT_NOT_FOUND leave no coupon behind.
  absl::StatusOr<pb::Coupon> IssueCoupon(const pb::IssueCouponRequest& request);

  // Online checkout (try–confirm–cancel). Lock checks owner, state, validity, usage rules and
  // the order, computes the discount and reserves the coupon (pending transfer "<rdm>.lock");
  // idempotent by (order id, coupon): the same lock again answers the same redemption while it is
  // LOCKED or CONFIRMED; another amount, or a lock after that redemption was cancelled or
  // reversed, is CONFLICT (a new attempt needs a new order id). Confirm posts it; Cancel (or the
  // lock timeout) voids it; Reverse gives a confirmed coupon back while it is still valid (REVERSE
  // of the posting). Refusals: CONFLICT (field "redemption_id") for confirm after cancel, cancel
  // after confirm, reverse of an unconfirmed redemption, confirm after the lock expired.
  absl::StatusOr<pb::Redemption> LockCoupon(const pb::LockCouponRequest& request);
  absl::StatusOr<pb::Redemption> ConfirmRedemption(const pb::RedemptionRequest& request);
  absl::StatusOr<pb::Redemption> CancelRedemption(const pb::RedemptionRequest& request);
  absl::StatusOr<pb::Redemption> ReverseRedemption(const pb::RedemptionRequest& request);

  // Offline: a token valid for qr_ttl for one ISSUED coupon or voucher of the customer, and its
  // single use by a terminal. Refusals of RedeemQrToken, each with its own reason/field:
  //   forged or altered  TOKEN_INVALID field "token"
  //   expired            TOKEN_INVALID field "token.expires_at"
  //   already used       CONFLICT field "token"
  //   another customer   PERMISSION_DENIED field "customer_id"
  absl::StatusOr<pb::QrToken> IssueQrToken(const pb::IssueQrTokenRequest& request);
  absl::StatusOr<pb::Redemption> RedeemQrToken(const pb::RedeemQrTokenRequest& request);
  // Gift vouchers at a branch counter (see MarkCollectedRequest).
  absl::StatusOr<pb::Coupon> MarkCollected(const pb::MarkCollectedRequest& request);

  // Points (and what expires within 30 days), cash, chances, and coupons grouped by state.
  absl::StatusOr<pb::Wallet> GetWallet(const pb::GetWalletRequest& request);
  // The wallet GetWallet would answer from memory (wallet_cache.h), if it holds a fresh one.
  // Never blocks on the database, so the gRPC face answers it on gRPC's own thread.
  //
  // A wallet 3/4 of its TTL old is also read again ahead of its expiry, in batches: the refresh
  // joins a queue (at most kMaxQueuedWalletRefreshes; beyond, it is not read and the customer's
  // next poll hands it out again), and the first one into an idle queue gives `background` a task
  // (which returns false when it cannot take it; then the queue is dropped the same way). That
  // task waits WalletRefreshLinger() for others to join, then reads up to kWalletRefreshBatch
  // wallets with two statements per org; what queued meanwhile goes to a new task the same way.
  // One task runs at a time.
  using Background = std::function<bool(std::function<void()>)>;
  std::optional<pb::Wallet> CachedWallet(const pb::GetWalletRequest& request,
                                         const Background& background = nullptr);
  static constexpr size_t kMaxQueuedWalletRefreshes = 4096;
  static constexpr size_t kWalletRefreshBatch = 256;
  // 20 ms, or a sixteenth of the TTL if that is less: well inside the quarter of the TTL a
  // refresh has before the entry expires.
  absl::Duration WalletRefreshLinger() const;
  // Forgets the customer's cached wallet, whichever org it was read for (after a ledger change to
  // one of their accounts, in whatever org the account is, or a change of one of their coupons).
  void InvalidateWallet(const std::string& customer_id) { wallets_.Invalidate(customer_id); }

  // Releases locks past their timeout, then expires ISSUED coupons whose validity ended before
  // `as_of` (transfer "cpn.<n>.expire"); re-runs change nothing. Up to `limit` of each.
  absl::StatusOr<pb::RunCouponExpiryResponse> RunCouponExpiry(absl::Time as_of, int limit);

  // Applies the ledger intents that stayed unapplied for longer than repair_grace (a crash
  // between a coupon's commit and its ledger transfers); returns how many were applied.
  absl::StatusOr<int> RepairLedger(int limit);

  // The coupon behind a code, for tests and the admin console.
  absl::StatusOr<pb::Coupon> GetCoupon(const std::string& code);

  // The org holding the coupon behind a code, a redemption or a QR token (whose signature is
  // checked), for the gRPC layer's tenancy check before it acts (decision 011, "Tenancy of the
  // customer-facing calls"): the coupon's holder_org_id, the org whose campaign granted it (the
  // template's org when no campaign org was named), so a bank's coupon of a federation template is
  // not a sibling bank's to use. One indexed read each. An unknown one fails with NoSuchCoupon(),
  // NoSuchRedemption() or UnknownQrToken(); a malformed one as the acting call would.
  absl::StatusOr<std::string> OrgOfCoupon(const std::string& code);
  absl::StatusOr<std::string> OrgOfRedemption(const std::string& redemption_id);
  absl::StatusOr<std::string> OrgOfQrToken(const std::string& token);

  // Third-party fulfilment (fulfilment.h). Once attached, a THIRD_PARTY coupon's first attempt
  // is submitted right after its issue; nullptr detaches.
  void AttachFulfilments(Fulfilments* fulfilments) { fulfilments_.store(fulfilments); }
  // Once attached, the ledger changes of coupons are applied through the batcher, sharing its
  // group commits with the grants (a hot template's stock row is then updated once per batch,
  // not once per coupon); nullptr applies them to the store directly.
  void AttachBatcher(GrantBatcher* batcher) { batcher_.store(batcher); }
  // Inside the caller's transaction, settles THIRD_PARTY coupon `coupon_id` by its supplier's
  // outcome: delivered moves an ISSUED coupon to REDEEMED (SPEND "<fulfilment_id>.deliver" to
  // COUPON REDEMPTION); not delivered moves an ISSUED or EXPIRED one to VOIDED with the
  // compensating batch "cpn.<n>.compensate" (REVERSE of the expiry, if any, then of the issue's
  // benefit, stock and budget legs). Returns whether a change was written; the caller applies it
  // after commit with ApplyCouponIntents (or RepairLedger does).
  bool SettleThirdParty(pqxx::work& tx, int64_t coupon_id, bool delivered,
                        const std::string& fulfilment_id, const std::string& actor,
                        const std::string& cause);
  absl::Status ApplyCouponIntents(int64_t coupon_id) { return ApplyIntents(coupon_id); }

 private:
  struct CouponRow;
  struct Change;
  // The template, from the cache when it was read less than template_cache_ttl ago.
  // `fresh` reads the database whatever the cache holds (and refreshes it). While one call reads
  // an expired entry afresh, the others answer from it, so an expiry under load is one read.
  absl::StatusOr<pb::BenefitTemplate> LoadTemplate(const std::string& id, bool fresh = false);
  void ForgetTemplate(const std::string& id);
  absl::StatusOr<pb::BenefitTemplate> SetStatus(const std::string& id, pb::TemplateStatus from,
                                                pb::TemplateStatus to);
  // Applies the coupon's unapplied intents in order; the first failure stops (and is returned).
  absl::Status ApplyIntents(int64_t coupon_id);
  absl::Status ApplyIntent(const pb::LedgerIntent& intent);
  // Applies an intent of transfers; with `coupon`, the batch writes that coupon too
  // (LinkedBatch::new_coupon).
  absl::Status ApplyTransfers(const pb::LedgerIntent& intent, std::optional<NewCoupon> coupon);
  // A coupon as IssueCoupon and GetCoupon answer it: with its template's name and face value.
  absl::StatusOr<pb::Coupon> Answer(const CouponRow& row, const pb::BenefitTemplate& t);
  // Resolves a LOCKED redemption: post (confirm) or void (cancel / timeout).
  absl::StatusOr<pb::Redemption> Resolve(const std::string& redemption_id, const std::string& op,
                                         const std::string& actor);
  absl::StatusOr<pb::Redemption> RedeemOffline(int64_t coupon_id, const pb::OrderInfo& order,
                                               const std::string& customer_id,
                                               const std::string& jti, const std::string& actor);
  absl::StatusOr<pb::Coupon> ToCoupon(const CouponRow& row);
  // A coupon id from the table's sequence, drawn in blocks so an issue need not ask for one.
  absl::StatusOr<int64_t> NextCouponId();

  pg::Pool& pool_;
  LedgerStore& ledger_;
  const Clock& clock_;
  const BenefitsOptions options_;
  QrTokenSigner signer_;
  std::atomic<Fulfilments*> fulfilments_{nullptr};
  std::atomic<GrantBatcher*> batcher_{nullptr};
  // Reads the wallet from the database (GetWallet without the cache).
  absl::StatusOr<pb::Wallet> ReadWallet(const std::string& org_id, const std::string& customer_id);
  // Reads the wallets of several customers of one org with two statements; one entry per
  // customer asked for, an error where that wallet could not be made.
  absl::StatusOr<absl::flat_hash_map<std::string, absl::StatusOr<pb::Wallet>>> ReadWallets(
      const std::string& org_id, const std::vector<std::string>& customer_ids);
  // The wallet from its ledger balances and its coupon rows (in wallet order).
  absl::StatusOr<pb::Wallet> AssembleWallet(const WalletBalances& balances,
                                            const std::vector<CouponRow>& coupons);

  WalletCache wallets_;
  // A wallet handed out by the cache to be read again ahead of its expiry (CachedWallet).
  struct WalletRefresh {
    std::string org_id;
    std::string customer_id;
    absl::Time handed_out;
    uint64_t ticket = 0;
    std::shared_ptr<WalletCache::Reading> reading;
  };
  // Gives `background` a DrainWalletRefreshes task; when it refuses, drops the queue.
  void StartWalletRefreshes(const Background& background);
  // The background task: lingers, reads one batch of the queued refreshes, and hands what queued
  // meanwhile to a new task.
  void DrainWalletRefreshes(const Background& background);
  // Reads `batch` (a statement pair per org) and stores each wallet, or ends its refresh.
  void RefreshWallets(std::vector<WalletRefresh>& batch);
  absl::Mutex refresh_mu_;
  std::vector<WalletRefresh> refresh_queue_ ABSL_GUARDED_BY(refresh_mu_);
  // A DrainWalletRefreshes task was given to the background and has not ended.
  bool refresh_draining_ ABSL_GUARDED_BY(refresh_mu_) = false;
  struct CachedTemplate {
    pb::BenefitTemplate spec;
    absl::Time loaded_at;
    bool refreshing = false;
  };
  absl::Mutex templates_mu_;
  absl::flat_hash_map<std::string, CachedTemplate> templates_ ABSL_GUARDED_BY(templates_mu_);
  // Bumped by every ForgetTemplate: a read that started before it is not cached.
  uint64_t templates_generation_ ABSL_GUARDED_BY(templates_mu_) = 0;
  absl::Mutex ids_mu_;
  std::vector<int64_t> coupon_ids_ ABSL_GUARDED_BY(ids_mu_);  // drawn, not used yet
};

// What the calls answer for a template, coupon, redemption or QR token that is not there. The
// gRPC layer gives the very same answer for one that belongs to an org outside the caller's
// lineage, so ids cannot be probed across banks.
absl::Status NoSuchTemplate(const std::string& template_id);
absl::Status NoSuchCoupon();
absl::Status NoSuchRedemption(const std::string& redemption_id);
absl::Status UnknownQrToken();

// The ledger accounts of coupons of template `template_id`.
pb::AccountRef CustomerCoupons(const std::string& org_id, const std::string& template_id,
                               const std::string& customer_id);
pb::AccountRef SystemCoupons(const std::string& org_id, const std::string& template_id,
                             pb::SystemRole role);

}  // namespace mkt::rewards
