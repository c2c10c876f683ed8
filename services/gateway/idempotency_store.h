// Idempotency of POST requests (ARCHITECTURE.md "Channel REST contract"): the first request with
// an Idempotency-Key runs and its response is stored; a replay with the same key and the same
// request gets the stored response without running again; the same key with a different request
// is 409 IDEMPOTENCY_KEY_REUSED. A duplicate arriving while the first is still running waits for
// its response (briefly) instead of running a second time. Keys are scoped per caller (channel or
// operator) and kept for a retention period.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace mkt::pg {
class Pool;
}  // namespace mkt::pg

namespace mkt::gateway {

struct StoredResponse {
  int status = 0;
  std::string content_type;
  std::string body;
};

class IdempotencyStore {
 public:
  enum class Claim {
    kProceed,     // this call owns the key: run, then Complete or Abandon
    kReplay,      // finished before with the same request: answer `response`
    kMismatch,    // the key was used for another request
    kInProgress,  // the same request is running elsewhere right now
  };
  struct BeginResult {
    Claim claim = Claim::kProceed;
    StoredResponse response;
  };

  virtual ~IdempotencyStore() = default;
  // Claims `key` within `scope` for a request whose content hashes to `request_hash`.
  virtual absl::StatusOr<BeginResult> Begin(std::string_view scope, std::string_view key,
                                            std::string_view request_hash) = 0;
  // Stores the response of a claimed key.
  virtual absl::Status Complete(std::string_view scope, std::string_view key,
                                const StoredResponse& response) = 0;
  // Releases a claimed key without a response (a transient failure the caller may retry).
  virtual absl::Status Abandon(std::string_view scope, std::string_view key) = 0;
};

// The store in the gateway's PostgreSQL database (table idempotency_records). A claim older than
// `stale_after` without a response belongs to a gateway that died mid-request and is taken over.
class PgIdempotencyStore final : public IdempotencyStore {
 public:
  PgIdempotencyStore(std::function<absl::StatusOr<pg::Pool*>()> pool, absl::Duration retention,
                     absl::Duration stale_after = absl::Seconds(60));

  absl::StatusOr<BeginResult> Begin(std::string_view scope, std::string_view key,
                                    std::string_view request_hash) override;
  absl::Status Complete(std::string_view scope, std::string_view key,
                        const StoredResponse& response) override;
  absl::Status Abandon(std::string_view scope, std::string_view key) override;

  // Deletes records past the retention period; returns how many.
  absl::StatusOr<int64_t> Purge();

 private:
  std::function<absl::StatusOr<pg::Pool*>()> pool_;
  absl::Duration retention_;
  absl::Duration stale_after_;
};

// Runs `execute` at most once per (scope, key) as described above. Responses with status 5xx or
// 429 are not stored (the key is released, so a retry runs again). Returns the response to send:
// the fresh one, the stored one (with the header "Idempotent-Replayed: true" set by the caller
// when *replayed), or an error status (409 IDEMPOTENCY_KEY_REUSED, 409 CONFLICT when the first
// request is still running after `wait`, 503 when the store is down).
absl::StatusOr<StoredResponse> RunIdempotently(IdempotencyStore& store, std::string_view scope,
                                               std::string_view key, std::string_view request_hash,
                                               const std::function<StoredResponse()>& execute,
                                               bool* replayed,
                                               absl::Duration wait = absl::Seconds(5));

}  // namespace mkt::gateway
