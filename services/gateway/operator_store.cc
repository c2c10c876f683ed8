#include "services/gateway/operator_store.h"

#include <pqxx/pqxx>

#include "absl/strings/str_cat.h"
#include "libs/core/status.h"
#include "libs/pg/pool.h"

namespace mkt::gateway {
namespace {

namespace gw = ::marketing::gateway::v1;
namespace pb = ::marketing::common::v1;

constexpr char kColumns[] =
    "id, org_id, array_to_string(roles, ','), display_name, disabled, failed_sign_ins, "
    "coalesce(extract(epoch FROM locked_until)::bigint, 0), extract(epoch FROM "
    "created_at)::bigint, "
    "extract(epoch FROM updated_at)::bigint, password_hash, "
    "coalesce(locked_until > now(), false)";

constexpr char kInsert[] =
    "INSERT INTO operators (id, org_id, roles, display_name, password_hash) "
    "VALUES ($1, $2, string_to_array($3, ','), $4, $5)";
constexpr char kRevokeAll[] =
    "UPDATE admin_sessions SET revoked_at = now() WHERE operator_id = $1 AND revoked_at IS NULL";
constexpr char kInsertSession[] =
    "INSERT INTO admin_sessions (id, operator_id, expires_at) VALUES ($1, $2, to_timestamp($3))";
constexpr char kSessionActive[] =
    "SELECT 1 FROM admin_sessions s JOIN operators o ON o.id = s.operator_id "
    "WHERE s.id = $1 AND s.revoked_at IS NULL AND s.expires_at > now() AND NOT o.disabled";
constexpr char kRevoke[] =
    "UPDATE admin_sessions SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL";

void SetTime(google::protobuf::Timestamp* t, int64_t seconds) {
  t->set_seconds(seconds);
  t->set_nanos(0);
}

OperatorRecord FromRow(const pqxx::row& row) {
  OperatorRecord record;
  gw::Operator& op = record.op;
  op.set_id(row[0].as<std::string>());
  op.set_org_id(row[1].as<std::string>());
  const std::string roles = row[2].as<std::string>();
  size_t start = 0;
  while (start < roles.size()) {
    size_t comma = roles.find(',', start);
    if (comma == std::string::npos) comma = roles.size();
    op.add_roles(roles.substr(start, comma - start));
    start = comma + 1;
  }
  op.set_display_name(row[3].as<std::string>());
  op.set_disabled(row[4].as<bool>());
  op.set_failed_sign_ins(row[5].as<int>());
  if (row[10].as<bool>()) SetTime(op.mutable_locked_until(), row[6].as<int64_t>());
  SetTime(op.mutable_created_at(), row[7].as<int64_t>());
  SetTime(op.mutable_updated_at(), row[8].as<int64_t>());
  record.password_hash = row[9].as<std::string>();
  return record;
}

std::string JoinRoles(const google::protobuf::RepeatedPtrField<std::string>& roles) {
  std::string out;
  for (const auto& r : roles) absl::StrAppend(&out, out.empty() ? "" : ",", r);
  return out;
}

}  // namespace

OperatorStore::OperatorStore(std::function<absl::StatusOr<pg::Pool*>()> pool)
    : pool_(std::move(pool)) {}

absl::Status OperatorStore::Create(const gw::Operator& op, std::string_view password_hash) {
  MKT_ASSIGN_OR_RETURN(pg::Pool * pool, pool_());
  absl::Status s = pg::WithTransaction(*pool, [&](pqxx::work& tx) {
    tx.exec_params(kInsert, op.id(), op.org_id(), JoinRoles(op.roles()), op.display_name(),
                   std::string(password_hash));
    return absl::OkStatus();
  });
  if (s.code() == absl::StatusCode::kAlreadyExists) {
    return Error(absl::StatusCode::kAlreadyExists, pb::ALREADY_EXISTS,
                 absl::StrCat("operator \"", op.id(), "\" exists already"), "id");
  }
  return s;
}

absl::StatusOr<OperatorRecord> OperatorStore::Get(std::string_view id) {
  MKT_ASSIGN_OR_RETURN(pg::Pool * pool, pool_());
  std::optional<OperatorRecord> record;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(*pool, [&](pqxx::work& tx) {
    pqxx::result r = tx.exec_params(
        absl::StrCat("SELECT ", kColumns, " FROM operators WHERE id = $1"), std::string(id));
    if (!r.empty()) record = FromRow(r[0]);
    return absl::OkStatus();
  }));
  if (!record) return NotFound(absl::StrCat("no operator \"", AsAbsl(id), "\""));
  return *std::move(record);
}

absl::StatusOr<std::vector<gw::Operator>> OperatorStore::List(std::string_view org_id,
                                                              std::string_view after_id,
                                                              int limit) {
  MKT_ASSIGN_OR_RETURN(pg::Pool * pool, pool_());
  std::vector<gw::Operator> out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(*pool, [&](pqxx::work& tx) {
    pqxx::result r = tx.exec_params(
        absl::StrCat("SELECT ", kColumns,
                     " FROM operators WHERE ($1 = 'fed' OR org_id = $1 OR org_id LIKE $1 || '.%') "
                     "AND id > $2 ORDER BY id LIMIT $3"),
        std::string(org_id), std::string(after_id), limit);
    for (const auto& row : r) out.push_back(FromRow(row).op);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<gw::Operator> OperatorStore::Update(const gw::UpdateOperatorRequest& update,
                                                   std::string_view new_password_hash) {
  MKT_ASSIGN_OR_RETURN(pg::Pool * pool, pool_());
  std::optional<OperatorRecord> record;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(*pool, [&](pqxx::work& tx) {
    const std::string id = update.id();
    if (tx.exec_params("SELECT 1 FROM operators WHERE id = $1 FOR UPDATE", id).empty()) {
      return absl::OkStatus();
    }
    bool end_sessions = false;
    if (update.roles_size() > 0) {
      tx.exec_params("UPDATE operators SET roles = string_to_array($2, ',') WHERE id = $1", id,
                     JoinRoles(update.roles()));
      end_sessions = true;
    }
    if (!new_password_hash.empty()) {
      tx.exec_params("UPDATE operators SET password_hash = $2 WHERE id = $1", id,
                     std::string(new_password_hash));
      end_sessions = true;
    }
    if (!update.display_name().empty()) {
      tx.exec_params("UPDATE operators SET display_name = $2 WHERE id = $1", id,
                     update.display_name());
    }
    if (update.has_disabled()) {
      tx.exec_params("UPDATE operators SET disabled = $2 WHERE id = $1", id, update.disabled());
      end_sessions = end_sessions || update.disabled();
    }
    if (update.unlock()) {
      tx.exec_params("UPDATE operators SET locked_until = NULL, failed_sign_ins = 0 WHERE id = $1",
                     id);
    }
    if (end_sessions) tx.exec_params(kRevokeAll, id);
    tx.exec_params("UPDATE operators SET updated_at = now() WHERE id = $1", id);
    record = FromRow(
        tx.exec_params(absl::StrCat("SELECT ", kColumns, " FROM operators WHERE id = $1"), id)[0]);
    return absl::OkStatus();
  }));
  if (!record) return NotFound(absl::StrCat("no operator \"", update.id(), "\""));
  return record->op;
}

absl::StatusOr<OperatorStore::SignInResult> OperatorStore::SignIn(
    std::string_view id, const std::function<bool(const std::string&)>& verify,
    const LockoutPolicy& policy, std::string_view session_id, absl::Time expires_at) {
  MKT_ASSIGN_OR_RETURN(pg::Pool * pool, pool_());
  SignInResult result;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(*pool, [&](pqxx::work& tx) {
    result = SignInResult{};
    pqxx::result r = tx.exec_params(absl::StrCat("SELECT ", kColumns,
                                                 ", extract(epoch FROM locked_until)::bigint "
                                                 "FROM operators WHERE id = $1 FOR UPDATE"),
                                    std::string(id));
    if (r.empty()) {
      verify("");
      result.outcome = SignInOutcome::kWrongCredentials;
      return absl::OkStatus();
    }
    OperatorRecord record = FromRow(r[0]);
    result.op = record.op;
    // Every answer pays for one hash (an unknown id too), so timing tells nothing about an
    // account. A disabled account says so only to whoever knows its password: to anyone else it
    // is a wrong password, like an unknown id.
    const bool right = verify(record.password_hash);
    if (record.op.disabled()) {
      result.outcome = right ? SignInOutcome::kDisabled : SignInOutcome::kWrongCredentials;
      return absl::OkStatus();
    }
    if (record.op.has_locked_until()) {
      result.outcome = SignInOutcome::kLocked;
      result.locked_until = absl::FromUnixSeconds(record.op.locked_until().seconds());
      return absl::OkStatus();
    }
    if (!right) {
      const int failures = record.op.failed_sign_ins() + 1;
      if (failures >= policy.max_failures) {
        pqxx::result locked = tx.exec_params(
            "UPDATE operators SET failed_sign_ins = 0, "
            "locked_until = now() + make_interval(secs => $2) WHERE id = $1 "
            "RETURNING extract(epoch FROM locked_until)::bigint",
            std::string(id), absl::ToDoubleSeconds(policy.lock_for));
        result.locked_until = absl::FromUnixSeconds(locked[0][0].as<int64_t>());
        // The operator's sessions stay: wrong passwords say nothing against a token already
        // issued, and ending them would let anyone sign an operator out by guessing.
      } else {
        tx.exec_params("UPDATE operators SET failed_sign_ins = $2 WHERE id = $1", std::string(id),
                       failures);
      }
      result.outcome = SignInOutcome::kWrongCredentials;
      return absl::OkStatus();
    }
    tx.exec_params("UPDATE operators SET failed_sign_ins = 0, locked_until = NULL WHERE id = $1",
                   std::string(id));
    tx.exec_params(kInsertSession, std::string(session_id), std::string(id),
                   absl::ToUnixSeconds(expires_at));
    result.op.set_failed_sign_ins(0);
    result.op.clear_locked_until();
    result.outcome = SignInOutcome::kOk;
    return absl::OkStatus();
  }));
  return result;
}

absl::StatusOr<bool> OperatorStore::SessionActive(std::string_view session_id) {
  MKT_ASSIGN_OR_RETURN(pg::Pool * pool, pool_());
  bool active = false;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(*pool, [&](pqxx::work& tx) {
    active = !tx.exec_params(kSessionActive, std::string(session_id)).empty();
    return absl::OkStatus();
  }));
  return active;
}

absl::Status OperatorStore::RevokeSession(std::string_view session_id) {
  MKT_ASSIGN_OR_RETURN(pg::Pool * pool, pool_());
  return pg::WithTransaction(*pool, [&](pqxx::work& tx) {
    tx.exec_params(kRevoke, std::string(session_id));
    return absl::OkStatus();
  });
}

}  // namespace mkt::gateway
