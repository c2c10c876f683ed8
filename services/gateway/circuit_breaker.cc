#include "services/gateway/circuit_breaker.h"

#include <algorithm>

#include "spdlog/spdlog.h"

namespace mkt::gateway {

const char* StateName(CircuitBreaker::State state) {
  switch (state) {
    case CircuitBreaker::State::kClosed:
      return "closed";
    case CircuitBreaker::State::kOpen:
      return "open";
    case CircuitBreaker::State::kHalfOpen:
      return "half_open";
  }
  return "?";
}

CircuitBreaker::CircuitBreaker(std::string name, CircuitBreakerOptions options, const Clock& clock)
    : name_(std::move(name)), options_(options), clock_(clock) {}

void CircuitBreaker::Refresh(absl::Time now) {
  if (state_ == State::kOpen && now - opened_at_ >= options_.open_for) {
    state_ = State::kHalfOpen;
    probes_in_flight_ = 0;
    probe_successes_ = 0;
  }
}

bool CircuitBreaker::Allow() {
  absl::MutexLock lock(&mu_);
  Refresh(clock_.Now());
  switch (state_) {
    case State::kClosed:
      return true;
    case State::kOpen:
      return false;
    case State::kHalfOpen:
      if (probes_in_flight_ + probe_successes_ >= options_.probes) return false;
      ++probes_in_flight_;
      return true;
  }
  return false;
}

void CircuitBreaker::Open(absl::Time now) {
  if (state_ != State::kOpen) spdlog::warn("circuit breaker {} opens", name_);
  state_ = State::kOpen;
  opened_at_ = now;
  outcomes_.clear();
  probes_in_flight_ = 0;
  probe_successes_ = 0;
}

void CircuitBreaker::Record(bool failed, absl::Duration latency) {
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_.Now();
  const bool slow = !failed && latency >= options_.slow_call;
  switch (state_) {
    case State::kOpen:
      return;  // a call let through before the breaker opened
    case State::kHalfOpen:
      probes_in_flight_ = std::max(0, probes_in_flight_ - 1);
      if (failed || slow) return Open(now);
      if (++probe_successes_ >= options_.probes) {
        spdlog::info("circuit breaker {} closes", name_);
        state_ = State::kClosed;
        outcomes_.clear();
      }
      return;
    case State::kClosed:
      break;
  }
  outcomes_.push_back(failed ? 1 : slow ? 2 : 0);
  while (static_cast<int>(outcomes_.size()) > options_.window) outcomes_.pop_front();
  if (static_cast<int>(outcomes_.size()) < options_.min_calls) return;
  const double n = static_cast<double>(outcomes_.size());
  const double failures = static_cast<double>(std::count(outcomes_.begin(), outcomes_.end(), 1));
  const double slows = static_cast<double>(std::count(outcomes_.begin(), outcomes_.end(), 2));
  if (failures / n >= options_.failure_ratio || slows / n >= options_.slow_ratio) Open(now);
}

CircuitBreaker::State CircuitBreaker::state() const {
  absl::MutexLock lock(&mu_);
  const_cast<CircuitBreaker*>(this)->Refresh(clock_.Now());
  return state_;
}

absl::Duration CircuitBreaker::RetryAfter() const {
  absl::MutexLock lock(&mu_);
  if (state_ != State::kOpen) return absl::Seconds(1);
  return std::max(absl::Seconds(1), options_.open_for - (clock_.Now() - opened_at_));
}

}  // namespace mkt::gateway
