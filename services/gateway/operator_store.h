// Operator accounts and admin sessions in the gateway's PostgreSQL database (tables operators and
// admin_sessions). The store applies the lock-out rule inside the sign-in transaction, with the
// operator's row locked, so concurrent guesses cannot exceed the allowed number of failures.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "marketing/gateway/v1/gateway.pb.h"

namespace mkt::pg {
class Pool;
}  // namespace mkt::pg

namespace mkt::gateway {

struct OperatorRecord {
  marketing::gateway::v1::Operator op;
  std::string password_hash;
};

struct LockoutPolicy {
  int max_failures = 5;
  absl::Duration lock_for = absl::Minutes(15);
};

class OperatorStore {
 public:
  explicit OperatorStore(std::function<absl::StatusOr<pg::Pool*>()> pool);

  // ALREADY_EXISTS when the id is taken.
  absl::Status Create(const marketing::gateway::v1::Operator& op, std::string_view password_hash);
  // NOT_FOUND when there is no such operator.
  absl::StatusOr<OperatorRecord> Get(std::string_view id);
  // Operators whose org is `org_id` or a descendant, ordered by id, after `after_id`.
  absl::StatusOr<std::vector<marketing::gateway::v1::Operator>> List(std::string_view org_id,
                                                                     std::string_view after_id,
                                                                     int limit);
  // Applies the non-empty parts of `update` (roles, password hash, display name, disabled,
  // unlock); ends every session of the operator when roles, password or disabled change.
  absl::StatusOr<marketing::gateway::v1::Operator> Update(
      const marketing::gateway::v1::UpdateOperatorRequest& update,
      std::string_view new_password_hash);

  enum class SignInOutcome { kOk, kWrongCredentials, kLocked, kDisabled };
  struct SignInResult {
    SignInOutcome outcome = SignInOutcome::kWrongCredentials;
    marketing::gateway::v1::Operator op;
    // While locked: when sign-ins are accepted again.
    absl::Time locked_until;
  };
  // Checks a sign-in with the operator's row locked: refuses a locked or disabled account without
  // checking the password, else calls `verify` with the stored hash; counts a failure (locking
  // the account at policy.max_failures) or clears the count. On success records session
  // `session_id` until `expires_at`. An unknown id is kWrongCredentials (after `verify("")`, so
  // it takes as long as a wrong password).
  absl::StatusOr<SignInResult> SignIn(std::string_view id,
                                      const std::function<bool(const std::string&)>& verify,
                                      const LockoutPolicy& policy, std::string_view session_id,
                                      absl::Time expires_at);

  // True when the session exists, is not revoked, and its operator is not disabled.
  absl::StatusOr<bool> SessionActive(std::string_view session_id);
  absl::Status RevokeSession(std::string_view session_id);

 private:
  std::function<absl::StatusOr<pg::Pool*>()> pool_;
};

}  // namespace mkt::gateway
