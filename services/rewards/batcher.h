// Group commit in front of the ledger store: requests that arrive within a few milliseconds are
// applied in one database transaction, and each caller is answered when that transaction commits
// (or fails). This is what keeps a hot campaign budget from serialising every grant on its row
// lock; correctness across replicas comes from the store (row locks, unique transfer ids).
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "services/rewards/ledger_store.h"

namespace mkt::rewards {

struct BatcherOptions {
  // Writer threads, each running one Apply at a time.
  int writers = 2;
  // Most batches in one Apply call.
  int max_batches = 256;
  // How long a writer waits for more requests after the first one arrived.
  absl::Duration linger = absl::Milliseconds(2);
  // Requests that may wait; beyond this Submit answers RESOURCE_EXHAUSTED at once.
  int max_queued = 20000;
};

class GrantBatcher {
 public:
  GrantBatcher(LedgerStore& store, BatcherOptions options);
  // Finishes what is queued, then stops the writers.
  ~GrantBatcher();

  // Queues `batch`; `done` is called exactly once with its result: from a writer thread after
  // the Apply call that carried it, or at once on the caller's thread with RESOURCE_EXHAUSTED
  // when max_queued requests already wait (UNAVAILABLE once the batcher is stopping).
  void Submit(LinkedBatch batch, std::function<void(BatchResult)> done);
  // Submits and waits for the result.
  BatchResult Apply(LinkedBatch batch);

 private:
  struct Pending {
    LinkedBatch batch;
    std::function<void(BatchResult)> done;
    // The linger is counted from the oldest waiting request, so under load no one waits for it.
    std::chrono::steady_clock::time_point queued_at;
  };
  void RunWriter();

  LedgerStore& store_;
  const BatcherOptions options_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending> queue_;
  bool stopping_ = false;
  std::vector<std::thread> writers_;
};

}  // namespace mkt::rewards
