// Test doubles for the gateway's unit tests: a clock the test moves, and a credential source
// backed by a map that counts fetches and can be told to fail.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "libs/core/ids.h"
#include "libs/core/status.h"
#include "services/gateway/credential_store.h"

namespace mkt::gateway::testing {

class FakeClock final : public Clock {
 public:
  explicit FakeClock(absl::Time now = absl::FromUnixSeconds(1'800'000'000)) : now_(now) {}
  absl::Time Now() const override {
    absl::MutexLock lock(&mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    now_ += d;
  }

 private:
  mutable absl::Mutex mu_;
  absl::Time now_;
};

class FakeCredentialSource final : public CredentialSource {
 public:
  absl::StatusOr<Credential> Fetch(std::string_view channel_id,
                                   std::string_view request_id) override {
    fetches_.fetch_add(1);
    std::function<void()> hook;
    {
      absl::MutexLock lock(&mu_);
      last_request_id_ = std::string(request_id);
      hook = during_fetch_;
    }
    if (hook) hook();
    absl::MutexLock lock(&mu_);
    if (!failure_.ok()) return failure_;
    auto it = credentials_.find(std::string(channel_id));
    if (it == credentials_.end()) return NotFound("no such channel");
    return it->second;
  }

  void Set(const Credential& credential) {
    absl::MutexLock lock(&mu_);
    credentials_[credential.channel_id] = credential;
  }
  // Every fetch fails with `status` until set back to OK.
  void FailWith(absl::Status status) {
    absl::MutexLock lock(&mu_);
    failure_ = std::move(status);
  }
  // Runs `hook` inside every fetch, before it answers (to interleave other calls).
  void DuringFetch(std::function<void()> hook) {
    absl::MutexLock lock(&mu_);
    during_fetch_ = std::move(hook);
  }
  int fetches() const { return fetches_.load(); }
  std::string last_request_id() const {
    absl::MutexLock lock(&mu_);
    return last_request_id_;
  }

 private:
  mutable absl::Mutex mu_;
  std::map<std::string, Credential> credentials_;
  absl::Status failure_;
  std::function<void()> during_fetch_;
  std::string last_request_id_;
  std::atomic<int> fetches_{0};
};

}  // namespace mkt::gateway::testing
