// Test doubles of the ledger store for the integration tests: a store forwarding every call to the
// real one, and the real store with a switch that makes its writes unreachable (the crash window
// between a commit and its ledger transfers).
#pragma once

#include <atomic>
#include <string>
#include <vector>

#include "libs/core/status.h"
#include "services/rewards/ledger_store.h"

namespace mkt::rewards {

// Every call forwarded to a real store: test doubles derive from it and override what they
// change.
class ForwardingLedgerStore : public LedgerStore {
 public:
  explicit ForwardingLedgerStore(LedgerStore& real) : real_(real) {}

  absl::StatusOr<std::vector<BatchResult>> Apply(const std::vector<LinkedBatch>& b) override {
    return real_.Apply(b);
  }
  absl::StatusOr<pb::Transfer> ResolvePending(const std::string& id, const std::string& p,
                                              bool post) override {
    return real_.ResolvePending(id, p, post);
  }
  absl::StatusOr<int> VoidTimedOutPending(absl::Time now, int limit) override {
    return real_.VoidTimedOutPending(now, limit);
  }
  absl::StatusOr<pb::RunExpiryResponse> ExpireLots(absl::Time as_of, int limit) override {
    return real_.ExpireLots(as_of, limit);
  }
  absl::StatusOr<pb::Account> GetAccount(const pb::AccountRef& ref) override {
    return real_.GetAccount(ref);
  }
  absl::StatusOr<std::vector<pb::Account>> GetCustomerAccounts(const std::string& o,
                                                               const std::string& c) override {
    return real_.GetCustomerAccounts(o, c);
  }
  absl::StatusOr<pb::ListExpiringLotsResponse> ListExpiringLots(const std::string& o,
                                                                const std::string& c,
                                                                absl::Time until) override {
    return real_.ListExpiringLots(o, c, until);
  }
  absl::StatusOr<WalletBalances> GetWalletBalances(const std::string& o, const std::string& c,
                                                   absl::Time until) override {
    return real_.GetWalletBalances(o, c, until);
  }
  absl::StatusOr<absl::flat_hash_map<std::string, WalletBalances>> GetWalletBalancesOf(
      const std::string& o, const std::vector<std::string>& c, absl::Time until) override {
    return real_.GetWalletBalancesOf(o, c, until);
  }
  absl::StatusOr<pb::ListHistoryResponse> ListHistory(const std::string& o, const std::string& c,
                                                      const std::string& t, int l) override {
    return real_.ListHistory(o, c, t, l);
  }
  absl::StatusOr<pb::GetStatementResponse> GetStatement(const pb::AccountRef& a, absl::Time f,
                                                        absl::Time t, const std::string& p,
                                                        int l) override {
    return real_.GetStatement(a, f, t, p, l);
  }
  absl::StatusOr<std::vector<pb::Transfer>> GetBatch(const std::string& b) override {
    return real_.GetBatch(b);
  }
  absl::StatusOr<pb::Transfer> GetTransfer(const std::string& id) override {
    return real_.GetTransfer(id);
  }
  absl::StatusOr<std::vector<LotExpiry>> GetLotExpiries(const std::string& id) override {
    return real_.GetLotExpiries(id);
  }
  absl::StatusOr<pb::CheckIntegrityResponse> CheckIntegrity() override {
    return real_.CheckIntegrity();
  }

 protected:
  LedgerStore& real_;
};

// The real ledger store, with a switch that makes its writes unreachable.
class SwitchableLedger final : public ForwardingLedgerStore {
 public:
  explicit SwitchableLedger(LedgerStore& real) : ForwardingLedgerStore(real) {}
  std::atomic<bool> down{false};
  // Batches are applied, but their answers are lost (a crash right after the commit).
  std::atomic<bool> lose_answers{false};

  absl::StatusOr<std::vector<BatchResult>> Apply(const std::vector<LinkedBatch>& b) override {
    if (down) return Unavailable("ledger down (test)");
    auto results = real_.Apply(b);
    if (lose_answers) return Unavailable("ledger answer lost (test)");
    return results;
  }
  absl::StatusOr<pb::Transfer> ResolvePending(const std::string& id, const std::string& p,
                                              bool post) override {
    if (down) return Unavailable("ledger down (test)");
    return real_.ResolvePending(id, p, post);
  }
};

}  // namespace mkt::rewards
