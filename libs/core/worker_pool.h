// A fixed set of threads with a bounded queue, for blocking work (database calls) that must not
// run on gRPC callback threads or HTTP I/O threads.
#pragma once

#include <cstddef>
#include <deque>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace mkt {

class WorkerPool {
 public:
  // Starts `threads` workers; at most `max_queue` tasks wait at once.
  WorkerPool(std::string name, int threads, size_t max_queue);
  // Runs what is queued, then joins the workers.
  ~WorkerPool();

  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Queues `task`; returns false (and drops it) when the queue is full or the pool stops,
  // so the caller can answer "overloaded" instead of waiting without bound.
  bool TrySubmit(std::function<void()> task);

  size_t queued() const;

 private:
  void Run();

  const std::string name_;
  const size_t max_queue_;
  mutable absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace mkt
