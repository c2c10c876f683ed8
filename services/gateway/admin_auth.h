// Operators' authentication for /admin/v1: sign-in with id and password (POST /admin/v1/sessions)
// answers a bearer token "mkt1.<base64url claims>.<hex HMAC-SHA256>" carrying session id,
// operator, org, roles and expiry; every admin request presents it as "Authorization: Bearer ..."
// and is checked for signature, expiry and revocation (sign-out, password/role change, disabled
// account). Five wrong passwords in a row lock the account for a while. Also the operators
// resource itself (/admin/v1/operators), scoped by org like every admin resource.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "libs/core/ids.h"
#include "libs/tenancy/tenancy.h"
#include "marketing/gateway/v1/gateway.pb.h"
#include "services/gateway/operator_store.h"
#include "services/gateway/password_hash.h"

namespace mkt::gateway {

// What a token says.
struct TokenClaims {
  std::string session_id;
  std::string operator_id;
  std::string org_id;
  std::vector<std::string> roles;
  absl::Time expires_at;
};

// Signs and verifies tokens; no storage (unit-testable on its own).
class TokenSigner {
 public:
  // `key`: the HMAC key shared by every gateway replica.
  explicit TokenSigner(std::string key) : key_(std::move(key)) {}
  std::string Sign(const TokenClaims& claims) const;
  // UNAUTHENTICATED TOKEN_INVALID when malformed, tampered with or expired at `now`.
  absl::StatusOr<TokenClaims> Verify(std::string_view token, absl::Time now) const;

 private:
  std::string key_;
};

struct AdminAuthOptions {
  std::string token_key;
  absl::Duration token_ttl = absl::Hours(8);
  LockoutPolicy lockout;
  ScryptCost scrypt;
};

// An authenticated operator request.
struct OperatorSession {
  TokenClaims claims;
  tenancy::Actor actor;
};

class AdminAuth {
 public:
  AdminAuth(OperatorStore& store, const Clock& clock, AdminAuthOptions options);

  // Creates the operator `id` in `org_id` with the admin role when it does not exist (start-up
  // bootstrap of the first account); leaves an existing one alone.
  absl::Status EnsureBootstrapAdmin(std::string_view id, std::string_view org_id,
                                    std::string_view password);

  // 401 for an unknown operator or a wrong password (the same answer, a disabled account's
  // included), 429 with the unlock time while locked, 403 for a disabled account given its right
  // password. Locking an account after wrong passwords leaves its sessions alone.
  absl::StatusOr<marketing::gateway::v1::Session> SignIn(
      const marketing::gateway::v1::CreateSessionRequest& request);
  // Authenticates the value of an Authorization header: 401 CREDENTIALS_MISSING without a bearer
  // token, 401 TOKEN_INVALID for a bad, expired or revoked one.
  absl::StatusOr<OperatorSession> Authenticate(const std::string* authorization) const;
  absl::Status SignOut(const OperatorSession& session);

  // The operators resource: an admin manages operators of their org's subtree; others outside it
  // are NOT_FOUND.
  absl::StatusOr<marketing::gateway::v1::Operator> CreateOperator(
      const tenancy::Actor& actor, const marketing::gateway::v1::CreateOperatorRequest& request);
  absl::StatusOr<marketing::gateway::v1::Operator> GetOperator(const tenancy::Actor& actor,
                                                               std::string_view id);
  absl::StatusOr<marketing::gateway::v1::ListOperatorsResponse> ListOperators(
      const tenancy::Actor& actor, const marketing::gateway::v1::ListOperatorsRequest& request);
  absl::StatusOr<marketing::gateway::v1::Operator> UpdateOperator(
      const tenancy::Actor& actor, const marketing::gateway::v1::UpdateOperatorRequest& request);

 private:
  OperatorStore& store_;
  const Clock& clock_;
  const AdminAuthOptions options_;
  TokenSigner signer_;
  // What an unknown operator's password is checked against (the configured cost).
  const std::string dummy_hash_;
};

// Returns INVALID_ARGUMENT naming the field when an operator id, password or role list is
// unacceptable.
absl::Status ValidateOperatorId(std::string_view id);
absl::Status ValidatePassword(std::string_view password);
// Empty, or at most 100 characters of UTF-8 text without control characters.
absl::Status ValidateDisplayName(std::string_view name);
absl::Status ValidateRoles(const google::protobuf::RepeatedPtrField<std::string>& roles);

}  // namespace mkt::gateway
