#include "services/rewards/batcher.h"

#include "spdlog/spdlog.h"

#include <pthread.h>

#include <algorithm>
#include <exception>
#include <future>
#include <string>
#include <utility>

#include "libs/core/status.h"
#include "libs/metrics/metrics.h"

namespace mkt::rewards {
namespace {

using SteadyClock = std::chrono::steady_clock;

struct BatcherMetrics {
  prometheus::Histogram& batch_size;
  prometheus::Histogram& apply_latency;
  prometheus::Counter& rejected;
};

BatcherMetrics& Metrics() {
  static BatcherMetrics* metrics = [] {
    auto& registry = metrics::Registry();
    auto& size = prometheus::BuildHistogram()
                     .Name("mkt_rewards_batch_size")
                     .Help("Linked batches (client requests) applied in one ledger transaction")
                     .Register(registry);
    auto& latency = prometheus::BuildHistogram()
                        .Name("mkt_rewards_apply_latency_seconds")
                        .Help("Time of one group-commit LedgerStore::Apply call")
                        .Register(registry);
    auto& rejected = prometheus::BuildCounter()
                         .Name("mkt_rewards_batcher_rejected_total")
                         .Help("Ledger writes refused at once because too many were queued")
                         .Register(registry);
    return new BatcherMetrics{
        size.Add({}, prometheus::Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64, 128, 256, 512,
                                                             1024}),
        latency.Add({}, metrics::LatencyBuckets()), rejected.Add({})};
  }();
  return *metrics;
}

absl::Status Overloaded() {
  return Error(absl::StatusCode::kResourceExhausted, ::marketing::common::v1::RATE_LIMITED,
               "ledger overloaded, retry");
}

}  // namespace

GrantBatcher::GrantBatcher(LedgerStore& store, BatcherOptions options)
    : store_(store), options_([&] {
        options.writers = std::max(options.writers, 1);
        options.max_batches = std::max(options.max_batches, 1);
        options.linger = std::max(options.linger, absl::ZeroDuration());
        options.max_queued = std::max(options.max_queued, 1);
        return options;
      }()) {
  Metrics();  // registers the families before the first scrape
  for (int i = 0; i < options_.writers; ++i) {
    writers_.emplace_back([this] {
      pthread_setname_np(pthread_self(), "ledger-writer");
      RunWriter();
    });
  }
}

GrantBatcher::~GrantBatcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& w : writers_) w.join();
}

void GrantBatcher::Submit(LinkedBatch batch, std::function<void(BatchResult)> done) {
  absl::Status refused;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) {
      refused = Unavailable("the ledger is shutting down, retry");
    } else if (queue_.size() >= static_cast<size_t>(options_.max_queued)) {
      refused = Overloaded();
    } else {
      queue_.push_back(Pending{std::move(batch), std::move(done), SteadyClock::now()});
      // A writer waits for the first request, or for a full batch while it lingers.
      if (queue_.size() == 1) {
        cv_.notify_one();
      } else if (queue_.size() == static_cast<size_t>(options_.max_batches)) {
        cv_.notify_all();
      }
      return;
    }
  }
  if (refused.code() == absl::StatusCode::kResourceExhausted) Metrics().rejected.Increment();
  done(refused);
}

BatchResult GrantBatcher::Apply(LinkedBatch batch) {
  std::promise<BatchResult> promise;
  std::future<BatchResult> result = promise.get_future();
  Submit(std::move(batch), [&promise](BatchResult r) { promise.set_value(std::move(r)); });
  return result.get();
}

void GrantBatcher::RunWriter() {
  const auto linger = absl::ToChronoNanoseconds(options_.linger);
  const size_t max_batches = static_cast<size_t>(options_.max_batches);
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and everything queued has been answered
    if (!stopping_ && queue_.size() < max_batches) {
      auto deadline = queue_.front().queued_at + linger;
      if (SteadyClock::now() < deadline) {
        cv_.wait_until(lock, deadline);
        continue;  // look again: more may have come, or another writer took them
      }
    }
    size_t n = std::min(queue_.size(), max_batches);
    std::vector<Pending> taken;
    taken.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      taken.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    // Another writer can start gathering the rest while this one is in the database.
    if (!queue_.empty()) cv_.notify_one();
    lock.unlock();

    std::vector<LinkedBatch> batches;
    batches.reserve(n);
    for (auto& p : taken) batches.push_back(std::move(p.batch));
    auto started = SteadyClock::now();
    absl::StatusOr<std::vector<BatchResult>> results;
    try {
      results = store_.Apply(batches);
    } catch (const std::exception& e) {
      results = Internal(std::string("the ledger store failed: ") + e.what());
    }
    auto& m = Metrics();
    m.apply_latency.Observe(std::chrono::duration<double>(SteadyClock::now() - started).count());
    m.batch_size.Observe(static_cast<double>(n));
    for (size_t i = 0; i < n; ++i) {
      BatchResult result =
          !results.ok() ? BatchResult(results.status())
          : i < results->size()
              ? std::move((*results)[i])
              : BatchResult(Internal("the ledger store answered fewer batches than it was given"));
      // One caller's failing callback must neither end the writer thread nor leave the other
      // callers of this commit without their answer.
      try {
        taken[i].done(std::move(result));
      } catch (const std::exception& e) {
        spdlog::error("ledger batcher: a caller's completion threw: {}", e.what());
      } catch (...) {
        spdlog::error("ledger batcher: a caller's completion threw");
      }
    }
    lock.lock();
  }
}

}  // namespace mkt::rewards
