#include "libs/metrics/metrics.h"

#include <mutex>
#include <sstream>

#include "libs/core/status.h"
#include "prometheus/exposer.h"
#include "prometheus/text_serializer.h"

namespace mkt::metrics {
namespace {

std::mutex exposer_mu;
std::unique_ptr<prometheus::Exposer>& ExposerSlot() {
  static auto* slot = new std::unique_ptr<prometheus::Exposer>();
  return *slot;
}

}  // namespace

std::shared_ptr<prometheus::Registry> SharedRegistry() {
  static auto* registry =
      new std::shared_ptr<prometheus::Registry>(std::make_shared<prometheus::Registry>());
  return *registry;
}

prometheus::Registry& Registry() { return *SharedRegistry(); }

absl::Status StartExposer(const std::string& bind_address) {
  std::lock_guard<std::mutex> lock(exposer_mu);
  if (ExposerSlot()) return absl::OkStatus();
  try {
    auto exposer = std::make_unique<prometheus::Exposer>(bind_address, /*num_threads=*/1);
    exposer->RegisterCollectable(SharedRegistry());
    ExposerSlot() = std::move(exposer);
  } catch (const std::exception& e) {
    return Unavailable("cannot serve /metrics on " + bind_address + ": " + e.what());
  }
  return absl::OkStatus();
}

std::string SerializeText() {
  prometheus::TextSerializer serializer;
  return serializer.Serialize(Registry().Collect());
}

const prometheus::Histogram::BucketBoundaries& LatencyBuckets() {
  static const auto* buckets = new prometheus::Histogram::BucketBoundaries{
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
      0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
  return *buckets;
}

OperationMetrics::OperationMetrics(std::string prefix, std::string help)
    : calls_(prometheus::BuildCounter()
                 .Name(prefix + "_total")
                 .Help("Number of " + help)
                 .Register(Registry())),
      errors_(prometheus::BuildCounter()
                  .Name(prefix + "_errors_total")
                  .Help("Number of failed " + help + ", by error code")
                  .Register(Registry())),
      latency_(prometheus::BuildHistogram()
                   .Name(prefix + "_latency_seconds")
                   .Help("Latency of " + help)
                   .Register(Registry())) {}

OperationMetrics::MethodMetrics OperationMetrics::For(std::string_view method) {
  {
    absl::ReaderMutexLock lock(&mu_);
    if (auto it = by_method_.find(AsAbsl(method)); it != by_method_.end()) return it->second;
  }
  absl::MutexLock lock(&mu_);
  auto [it, added] = by_method_.try_emplace(std::string(method));
  if (added) {
    const std::string m(method);
    it->second.calls = &calls_.Add({{"method", m}});
    it->second.latency = &latency_.Add({{"method", m}}, LatencyBuckets());
  }
  return it->second;
}

void OperationMetrics::Record(std::string_view method, std::string_view code, double seconds) {
  const MethodMetrics m = For(method);
  m.calls->Increment();
  if (!code.empty()) {
    errors_.Add({{"method", std::string(method)}, {"code", std::string(code)}}).Increment();
  }
  m.latency->Observe(seconds);
}

}  // namespace mkt::metrics
