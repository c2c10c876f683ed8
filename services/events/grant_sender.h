// Sends the grant outbox to the rewards ledger after the matching transaction committed: Grant
// for due grants, Reverse for clawed-back ones, many calls in flight at once, with the
// deterministic ids so a resend after a crash or timeout never grants twice. Business refusals
// (budget or stock exhausted, ...) are recorded as outcomes; transport failures are retried with
// backoff.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "services/events/event_store.h"

namespace mkt::events {

struct GrantSenderOptions {
  std::string rewards_address;
  int max_in_flight = 256;
  int claim_batch = 1000;
  absl::Duration rpc_timeout = absl::Seconds(10);
  absl::Duration idle_poll = absl::Milliseconds(100);
};

class GrantSender {
 public:
  GrantSender(EventStore& store, GrantSenderOptions options);
  ~GrantSender();

  // Runs passes until Stop().
  void Run();
  void Stop();
  // Wakes the sender for a pass now (after a batch committed grants).
  void Notify();
  // Runs one pass; returns how many rows it handled.
  absl::StatusOr<int> RunOnce();

  struct Impl;

 private:
  EventStore& store_;
  GrantSenderOptions options_;
  std::unique_ptr<Impl> impl_;
  absl::Mutex mu_;
  bool wake_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<bool> stop_{false};
};

// Returns how a ledger call's status is recorded: OK, a business refusal, or retry.
GrantResult::Kind ClassifyGrantStatus(const absl::Status& status);

}  // namespace mkt::events
