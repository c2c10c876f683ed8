// Sends the grant outbox to the rewards ledger after the matching transaction committed: Grant
// for due grants, Reverse for clawed-back ones, with the deterministic ids so a resend after a
// crash or timeout never grants twice. Business refusals (budget or stock exhausted, ...) are
// recorded as outcomes; transport failures are retried with backoff.
//
// The sender is continuous: a dispatcher thread keeps up to `max_in_flight` rows in flight at
// all times and starts the next queued rows as soon as a call completes, while the thread that
// called Run() reads the next due rows before the queue runs dry and records outcomes in chunks
// as they arrive. Grants go in GrantMany calls of up to `grants_per_call` rows: a call carries
// whatever is queued when it starts (nothing waits for a call to fill up), and each row gets its
// own outcome; against a ledger without GrantMany the sender falls back to one Grant per row. One
// slow call therefore holds only its own rows. Rows are not marked as claimed
// in the database: the sender remembers the rows it holds (queued, in flight, outcome not yet
// recorded) and never reads them again until their outcome is committed; after a crash every
// unrecorded row is simply due again and is resent with the same id. Each replica runs a sender
// on the shared database, so a row another replica's sender holds may be read here too: sends are
// idempotent, and a row this sender cancels as never sent while another's Grant for it was in
// flight goes back to reverse_pending when that Grant's outcome is recorded (kFinishGrants), so
// its clawback still happens. A grant refused with ACCOUNT_NOT_FOUND (the campaign's budget not
// funded yet) is retried for `unfunded_retry` from the first such refusal before it is recorded
// as refused.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "services/events/event_store.h"

namespace mkt::events {

struct GrantSenderOptions {
  std::string rewards_address;
  // Rows kept in flight (in calls to the ledger).
  int max_in_flight = 256;
  // Most grants in one GrantMany call (at most 500); 1 sends one unary Grant per row.
  int grants_per_call = 64;
  // Most rows read per query; rows are read again when fewer than max_in_flight are queued.
  int claim_batch = 1000;
  // Most outcomes recorded per transaction (outcomes that arrive while one is written wait for
  // the next, so chunks grow with the load).
  int finish_batch = 1000;
  absl::Duration rpc_timeout = absl::Seconds(10);
  // How often the outbox is read without a Notify(), and how often rows due again (retries,
  // reversals) are looked for.
  absl::Duration idle_poll = absl::Milliseconds(100);
  // How long after the ledger first refused it with ACCOUNT_NOT_FOUND (the campaign's budget is
  // not funded yet: rewards funds it when its own consumer handles the campaign's change, which
  // may lag behind ours) a grant is retried with backoff; a refusal after it. Counted from that
  // first refusal, not from the row's creation: time spent waiting for an unreachable ledger
  // does not use up the window.
  absl::Duration unfunded_retry = absl::Minutes(30);
};

// What the sender has done so far (for tests and logs).
struct GrantSenderStats {
  int64_t calls_started = 0;
  int64_t outcomes_recorded = 0;
  int in_flight = 0;
  int queued = 0;
  int held = 0;
};

class GrantSender {
 public:
  GrantSender(EventStore& store, GrantSenderOptions options);
  ~GrantSender();
  GrantSender(const GrantSender&) = delete;
  GrantSender& operator=(const GrantSender&) = delete;

  // Sends until Stop(); then lets the calls in flight finish (each has its deadline), records
  // their outcomes and returns. Call once.
  void Run();
  void Stop();
  // Reads the outbox now (after a batch committed grants) instead of at the next poll.
  void Notify();

  GrantSenderStats Stats();

  struct Impl;

 private:
  EventStore& store_;
  GrantSenderOptions options_;
  std::unique_ptr<Impl> impl_;
};

// Returns how a ledger call's status is recorded: OK, a business refusal, or retry.
GrantResult::Kind ClassifyGrantStatus(const absl::Status& status);

}  // namespace mkt::events
