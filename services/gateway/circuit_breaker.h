// A circuit breaker per backend service, so that when a backend is down or slow the gateway
// answers 503 at once instead of tying up handler threads until deadlines pass, and other routes
// keep their threads.
//
//   closed     calls go through; the outcomes of the last `window` calls are kept. When at least
//              `min_calls` are known and the share of failures or of slow calls reaches its
//              threshold, the breaker opens.
//   open       calls are refused (Allow() is false) for `open_for`; then the breaker half-opens.
//   half-open  up to `probes` calls go through at a time; when `probes` of them succeed in a row
//              the breaker closes (window cleared), any failure opens it again.
// Only failures that say the backend is unwell count (unavailable, deadline, internal); a
// business rejection is a healthy answer.
#pragma once

#include <cstdint>
#include <deque>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "libs/core/ids.h"

namespace mkt::gateway {

struct CircuitBreakerOptions {
  int window = 20;
  int min_calls = 10;
  double failure_ratio = 0.5;
  double slow_ratio = 0.8;
  absl::Duration slow_call = absl::Seconds(1);
  absl::Duration open_for = absl::Seconds(5);
  int probes = 3;
};

class CircuitBreaker {
 public:
  enum class State { kClosed, kOpen, kHalfOpen };

  CircuitBreaker(std::string name, CircuitBreakerOptions options, const Clock& clock);

  // Returns true when a call may go to the backend now; the caller then reports its outcome
  // with Record (exactly once). False while open, or while half-open with every probe in flight.
  bool Allow();
  // Reports a call let through by Allow: whether the backend failed, and how long it took.
  void Record(bool failed, absl::Duration latency);

  State state() const;
  // When an open breaker half-opens (for Retry-After).
  absl::Duration RetryAfter() const;
  const std::string& name() const { return name_; }

 private:
  void Open(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Refresh(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string name_;
  const CircuitBreakerOptions options_;
  const Clock& clock_;
  mutable absl::Mutex mu_;
  State state_ ABSL_GUARDED_BY(mu_) = State::kClosed;
  // 0 ok, 1 failed, 2 slow (ok but slow), for the last `window` calls.
  std::deque<uint8_t> outcomes_ ABSL_GUARDED_BY(mu_);
  absl::Time opened_at_ ABSL_GUARDED_BY(mu_);
  int probes_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int probe_successes_ ABSL_GUARDED_BY(mu_) = 0;
};

const char* StateName(CircuitBreaker::State state);

}  // namespace mkt::gateway
