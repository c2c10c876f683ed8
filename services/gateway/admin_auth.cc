#include "services/gateway/admin_auth.h"

#include "services/gateway/http_message.h"

#include <algorithm>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "libs/auth/crypto.h"
#include "libs/core/status.h"
#include "libs/core/text.h"
#include "nlohmann/json.hpp"

namespace mkt::gateway {
namespace {

namespace gw = ::marketing::gateway::v1;
namespace pb = ::marketing::common::v1;

constexpr char kTokenPrefix[] = "mkt1";
constexpr int kDefaultPageSize = 50;
constexpr int kMaxPageSize = 500;

absl::Status TokenInvalid(std::string_view why) {
  return Error(absl::StatusCode::kUnauthenticated, pb::TOKEN_INVALID, why);
}

absl::Status Denied(std::string_view why) {
  return Error(absl::StatusCode::kPermissionDenied, pb::PERMISSION_DENIED, why);
}

absl::Status NoSuchOperator(std::string_view id) {
  return NotFound(absl::StrCat("no operator \"", AsAbsl(id), "\""));
}

}  // namespace

std::string TokenSigner::Sign(const TokenClaims& claims) const {
  nlohmann::json body = {{"sid", claims.session_id},
                         {"sub", claims.operator_id},
                         {"org", claims.org_id},
                         {"roles", claims.roles},
                         {"exp", absl::ToUnixSeconds(claims.expires_at)}};
  const std::string signed_part =
      absl::StrCat(kTokenPrefix, ".", absl::WebSafeBase64Escape(body.dump()));
  return absl::StrCat(signed_part, ".", auth::HmacSha256Hex(key_, signed_part));
}

absl::StatusOr<TokenClaims> TokenSigner::Verify(std::string_view token, absl::Time now) const {
  const size_t last_dot = token.rfind('.');
  if (last_dot == std::string_view::npos || !absl::StartsWith(AsAbsl(token), "mkt1.")) {
    return TokenInvalid("the bearer token is malformed");
  }
  const std::string_view signed_part = token.substr(0, last_dot);
  if (!auth::ConstantTimeEquals(auth::HmacSha256Hex(key_, signed_part),
                                token.substr(last_dot + 1))) {
    return TokenInvalid("the bearer token's signature does not verify");
  }
  std::string json;
  if (!absl::WebSafeBase64Unescape(AsAbsl(signed_part.substr(5)), &json)) {
    return TokenInvalid("the bearer token is malformed");
  }
  nlohmann::json body = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  TokenClaims claims;
  try {
    claims.session_id = body.at("sid").get<std::string>();
    claims.operator_id = body.at("sub").get<std::string>();
    claims.org_id = body.at("org").get<std::string>();
    claims.roles = body.at("roles").get<std::vector<std::string>>();
    claims.expires_at = absl::FromUnixSeconds(body.at("exp").get<int64_t>());
  } catch (const std::exception&) {
    return TokenInvalid("the bearer token is malformed");
  }
  if (now >= claims.expires_at) {
    return TokenInvalid("the session has expired; sign in again (POST /admin/v1/sessions)");
  }
  return claims;
}

absl::Status ValidateOperatorId(std::string_view id) {
  const bool ok =
      id.size() >= 3 && id.size() <= 64 && std::all_of(id.begin(), id.end(), [](unsigned char c) {
        return std::islower(c) || std::isdigit(c) || c == '.' || c == '_' || c == '-';
      });
  if (ok) return absl::OkStatus();
  return InvalidArgument("id", "an operator id is 3..64 characters of [a-z0-9._-]");
}

absl::Status ValidatePassword(std::string_view password) {
  if (password.size() >= 12 && password.size() <= 256) return absl::OkStatus();
  return InvalidArgument("password", "a password has 12..256 characters");
}

absl::Status ValidateDisplayName(std::string_view name) {
  const int length = PrintableUtf8Length(name);
  if (length >= 0 && length <= 100) return absl::OkStatus();
  return InvalidArgument("display_name",
                         "a display name is at most 100 characters of UTF-8 text without control "
                         "characters");
}

absl::Status ValidateRoles(const google::protobuf::RepeatedPtrField<std::string>& roles) {
  if (roles.empty()) return InvalidArgument("roles", "an operator has at least one role");
  for (const auto& role : roles) {
    if (!tenancy::ParseRole(role).ok()) {
      return InvalidArgument("roles", absl::StrCat("unknown role \"", role,
                                                   "\"; roles are admin, planner, approver, "
                                                   "analyst, auditor"));
    }
  }
  return absl::OkStatus();
}

AdminAuth::AdminAuth(OperatorStore& store, const Clock& clock, AdminAuthOptions options)
    : store_(store),
      clock_(clock),
      options_(options),
      signer_(options.token_key),
      dummy_hash_(HashPassword("dummy-password-for-timing", options.scrypt).value_or("")) {}

absl::Status AdminAuth::EnsureBootstrapAdmin(std::string_view id, std::string_view org_id,
                                             std::string_view password) {
  absl::StatusOr<OperatorRecord> existing = store_.Get(id);
  if (existing.ok()) return absl::OkStatus();
  if (existing.status().code() != absl::StatusCode::kNotFound) return existing.status();
  MKT_RETURN_IF_ERROR(ValidateOperatorId(id));
  MKT_RETURN_IF_ERROR(ValidatePassword(password));
  MKT_ASSIGN_OR_RETURN(std::string hash, HashPassword(password, options_.scrypt));
  gw::Operator op;
  op.set_id(std::string(id));
  op.set_org_id(std::string(org_id));
  op.add_roles("admin");
  op.set_display_name("bootstrap administrator");
  absl::Status created = store_.Create(op, hash);
  if (created.code() == absl::StatusCode::kAlreadyExists) return absl::OkStatus();  // a replica won
  return created;
}

absl::StatusOr<gw::Session> AdminAuth::SignIn(const gw::CreateSessionRequest& request) {
  if (request.operator_id().empty())
    return InvalidArgument("operator_id", "operator_id is required");
  if (request.password().empty()) return InvalidArgument("password", "password is required");
  const std::string session_id = RandomHex(16);
  const absl::Time expires_at = clock_.Now() + options_.token_ttl;
  const std::string password = request.password();
  MKT_ASSIGN_OR_RETURN(OperatorStore::SignInResult result,
                       store_.SignIn(
                           request.operator_id(),
                           [this, &password](const std::string& stored) {
                             // An unknown operator still pays for one hash of the configured cost,
                             // so timing does not reveal ids.
                             return VerifyPassword(password,
                                                   stored.empty() ? dummy_hash_ : stored) &&
                                    !stored.empty();
                           },
                           options_.lockout, session_id, expires_at));
  switch (result.outcome) {
    case OperatorStore::SignInOutcome::kWrongCredentials:
      return Error(absl::StatusCode::kUnauthenticated, pb::TOKEN_INVALID,
                   "the operator id or the password is wrong");
    case OperatorStore::SignInOutcome::kDisabled:
      return Denied("this operator account is disabled");
    case OperatorStore::SignInOutcome::kLocked:
      return WithRetryAfter(
          Error(absl::StatusCode::kResourceExhausted, pb::RATE_LIMITED,
                absl::StrCat("this account is locked after ", options_.lockout.max_failures,
                             " wrong passwords until ",
                             absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", result.locked_until,
                                              absl::UTCTimeZone()),
                             "; an admin can unlock it")),
          result.locked_until - clock_.Now());
    case OperatorStore::SignInOutcome::kOk:
      break;
  }
  TokenClaims claims{session_id,
                     result.op.id(),
                     result.op.org_id(),
                     {result.op.roles().begin(), result.op.roles().end()},
                     expires_at};
  gw::Session session;
  session.set_token(signer_.Sign(claims));
  session.set_token_type("Bearer");
  session.mutable_expires_at()->set_seconds(absl::ToUnixSeconds(expires_at));
  *session.mutable_operator_() = result.op;
  return session;
}

absl::StatusOr<OperatorSession> AdminAuth::Authenticate(const std::string* authorization) const {
  if (authorization == nullptr || authorization->empty()) {
    return Error(absl::StatusCode::kUnauthenticated, pb::CREDENTIALS_MISSING,
                 "send \"Authorization: Bearer <token>\"; get a token from POST /admin/v1/sessions",
                 "Authorization");
  }
  std::string_view value(*authorization);
  if (value.size() < 8 || !absl::EqualsIgnoreCase(AsAbsl(value.substr(0, 7)), "Bearer ")) {
    return Error(absl::StatusCode::kUnauthenticated, pb::CREDENTIALS_MISSING,
                 "the Authorization header must be \"Bearer <token>\"", "Authorization");
  }
  MKT_ASSIGN_OR_RETURN(TokenClaims claims, signer_.Verify(value.substr(7), clock_.Now()));
  MKT_ASSIGN_OR_RETURN(bool active, store_.SessionActive(claims.session_id));
  if (!active) return TokenInvalid("the session has ended; sign in again");
  OperatorSession session;
  session.actor.org_id = claims.org_id;
  session.actor.operator_id = claims.operator_id;
  for (const auto& name : claims.roles) {
    if (auto role = tenancy::ParseRole(name); role.ok()) session.actor.roles.push_back(*role);
  }
  session.claims = std::move(claims);
  return session;
}

absl::Status AdminAuth::SignOut(const OperatorSession& session) {
  return store_.RevokeSession(session.claims.session_id);
}

absl::StatusOr<gw::Operator> AdminAuth::CreateOperator(const tenancy::Actor& actor,
                                                       const gw::CreateOperatorRequest& request) {
  if (!actor.Has(tenancy::Role::kAdmin)) return Denied("only an admin manages operators");
  MKT_RETURN_IF_ERROR(ValidateOperatorId(request.id()));
  MKT_RETURN_IF_ERROR(ValidateDisplayName(request.display_name()));
  MKT_RETURN_IF_ERROR(ValidateRoles(request.roles()));
  MKT_RETURN_IF_ERROR(ValidatePassword(request.password()));
  const std::string org = request.org_id().empty() ? actor.org_id : request.org_id();
  if (!tenancy::IsValidOrgId(org)) return InvalidArgument("org_id", "not a valid org id");
  if (!tenancy::Covers(actor.org_id, org)) {
    return Denied("an admin creates operators only in their own org and its descendants");
  }
  MKT_ASSIGN_OR_RETURN(std::string hash, HashPassword(request.password(), options_.scrypt));
  gw::Operator op;
  op.set_id(request.id());
  op.set_org_id(org);
  *op.mutable_roles() = request.roles();
  op.set_display_name(request.display_name());
  MKT_RETURN_IF_ERROR(store_.Create(op, hash));
  MKT_ASSIGN_OR_RETURN(OperatorRecord created, store_.Get(op.id()));
  return created.op;
}

absl::StatusOr<gw::Operator> AdminAuth::GetOperator(const tenancy::Actor& actor,
                                                    std::string_view id) {
  absl::StatusOr<OperatorRecord> record = store_.Get(id);
  if (!record.ok()) return record.status();
  // Another bank's operator is indistinguishable from a missing one.
  if (!tenancy::Covers(actor.org_id, record->op.org_id())) return NoSuchOperator(id);
  return record->op;
}

absl::StatusOr<gw::ListOperatorsResponse> AdminAuth::ListOperators(
    const tenancy::Actor& actor, const gw::ListOperatorsRequest& request) {
  const std::string org = request.org_id().empty() ? actor.org_id : request.org_id();
  if (!tenancy::Covers(actor.org_id, org)) {
    return Denied("operators outside your org's subtree are not visible");
  }
  int size = request.page().page_size();
  if (size <= 0) size = kDefaultPageSize;
  size = std::min(size, kMaxPageSize);
  MKT_ASSIGN_OR_RETURN(auto ops, store_.List(org, request.page().page_token(), size + 1));
  gw::ListOperatorsResponse response;
  for (int i = 0; i < static_cast<int>(ops.size()) && i < size; ++i) {
    *response.add_operators() = ops[i];
  }
  if (static_cast<int>(ops.size()) > size) {
    response.mutable_page()->set_next_page_token(ops[size - 1].id());
  }
  return response;
}

absl::StatusOr<gw::Operator> AdminAuth::UpdateOperator(const tenancy::Actor& actor,
                                                       const gw::UpdateOperatorRequest& request) {
  if (!actor.Has(tenancy::Role::kAdmin)) return Denied("only an admin manages operators");
  MKT_RETURN_IF_ERROR(GetOperator(actor, request.id()).status());
  if (request.roles_size() > 0) MKT_RETURN_IF_ERROR(ValidateRoles(request.roles()));
  MKT_RETURN_IF_ERROR(ValidateDisplayName(request.display_name()));
  std::string hash;
  if (!request.password().empty()) {
    MKT_RETURN_IF_ERROR(ValidatePassword(request.password()));
    MKT_ASSIGN_OR_RETURN(hash, HashPassword(request.password(), options_.scrypt));
  }
  return store_.Update(request, hash);
}

}  // namespace mkt::gateway
