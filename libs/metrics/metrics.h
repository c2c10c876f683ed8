// One prometheus-cpp registry per process, its /metrics exposer, and the count / error /
// latency triple every RPC, consumer and HTTP route records.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace mkt::metrics {

// Returns the process-wide registry.
prometheus::Registry& Registry();
std::shared_ptr<prometheus::Registry> SharedRegistry();

// Serves the registry on http://<bind_address>/metrics (e.g. "127.0.0.1:9461") for the rest of
// the process's life. Returns an error when the address cannot be bound.
absl::Status StartExposer(const std::string& bind_address);

// Returns the registry in Prometheus text format, for servers that answer /metrics themselves.
std::string SerializeText();

// Latency buckets in seconds, from 100 µs to 10 s.
const prometheus::Histogram::BucketBoundaries& LatencyBuckets();

// Counts calls, failures and latency of one kind of operation, labelled by `method`:
//   <prefix>_total{method}  <prefix>_errors_total{method,code}  <prefix>_latency_seconds{method}
class OperationMetrics {
 public:
  // `prefix` like "mkt_channels_rpc"; `help` says what an operation is.
  OperationMetrics(std::string prefix, std::string help);
  // Records one operation; `code` is "" for success, else an error code name.
  void Record(std::string_view method, std::string_view code, double seconds);

 private:
  // A method's counter and histogram, found once: prometheus-cpp's Family::Add builds the label
  // map and hashes it on every call, which a hot path (every HTTP request, every RPC) should not.
  struct MethodMetrics {
    prometheus::Counter* calls = nullptr;
    prometheus::Histogram* latency = nullptr;
  };
  MethodMetrics For(std::string_view method);

  prometheus::Family<prometheus::Counter>& calls_;
  prometheus::Family<prometheus::Counter>& errors_;
  prometheus::Family<prometheus::Histogram>& latency_;
  absl::Mutex mu_;
  // Metrics are never removed from their family, so the pointers stay valid.
  absl::flat_hash_map<std::string, MethodMetrics> by_method_ ABSL_GUARDED_BY(mu_);
};

}  // namespace mkt::metrics
