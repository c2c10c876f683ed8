#include "services/gateway/audit_trail.h"

#include <algorithm>
#include <limits>
#include <optional>
#include <pqxx/pqxx>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "libs/core/status.h"
#include "libs/core/text.h"
#include "libs/pg/pool.h"
#include "nlohmann/json.hpp"
#include "services/gateway/json_codec.h"

namespace mkt::gateway {
namespace {

namespace gw = ::marketing::gateway::v1;

constexpr int kDefaultPageSize = 50;
constexpr int kMaxPageSize = 500;

// A sign-in attempt names an operator but carries no org: the operator's, when it exists.
constexpr char kInsert[] =
    "INSERT INTO admin_requests (request_id, operator_id, org_id, roles, method, route, path, "
    "body, status, error_code, finished_at) "
    "VALUES ($1, $2, CASE WHEN $3 = '' THEN coalesce((SELECT org_id FROM operators WHERE id = $2), "
    "'') ELSE $3 END, string_to_array($4, ','), $5, $6, $7, $8, $9, $10, "
    "CASE WHEN $9::integer IS NULL THEN NULL ELSE now() END) RETURNING id";
constexpr char kFinish[] =
    "UPDATE admin_requests SET status = $2, error_code = $3, finished_at = now() WHERE id = $1";
constexpr char kList[] =
    "SELECT id, (extract(epoch FROM at) * 1000000)::bigint, request_id, operator_id, org_id, "
    "  array_to_string(roles, ','), method, route, path, body, coalesce(status, 0), "
    "  coalesce(error_code, ''), (extract(epoch FROM finished_at) * 1000000)::bigint "
    "FROM admin_requests "
    "WHERE ($1 = 'fed' OR org_id = $1 OR starts_with(org_id, $1 || '.')) "
    "  AND ($2 = '' OR operator_id = $2) "
    "  AND at >= to_timestamp($3) AND at < to_timestamp($4) AND id < $5 "
    "ORDER BY id DESC LIMIT $6";

void SetMicros(google::protobuf::Timestamp* t, int64_t micros) {
  t->set_seconds(micros / 1'000'000);
  t->set_nanos(static_cast<int32_t>(micros % 1'000'000) * 1000);
}

std::string JoinRoles(const google::protobuf::RepeatedPtrField<std::string>& roles) {
  std::string out;
  for (const auto& r : roles) absl::StrAppend(&out, out.empty() ? "" : ",", r);
  return out;
}

bool IsSecretName(const std::string& name) {
  const std::string lower = absl::AsciiStrToLower(name);
  return lower.find("password") != std::string::npos || lower.find("secret") != std::string::npos;
}

// Deeper than any route accepts (gateway configuration max_json_depth, default 32).
constexpr int kMaxAuditedDepth = 64;

void Mask(nlohmann::json& j) {
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (IsSecretName(it.key())) {
        it.value() = "***";
      } else {
        Mask(it.value());
      }
    }
  } else if (j.is_array()) {
    for (auto& e : j) Mask(e);
  }
}

absl::StatusOr<int64_t> Insert(pg::Pool& pool, const gw::AdminRequestRecord& r, bool answered) {
  int64_t id = 0;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool, [&](pqxx::work& tx) {
    std::optional<int> status;
    std::optional<std::string> error_code;
    if (answered) {
      status = r.status();
      error_code = r.error_code();
    }
    id = tx.exec_params1(kInsert, r.request_id(), r.operator_id(), r.org_id(), JoinRoles(r.roles()),
                         r.method(), r.route(), r.path(), r.body(), status, error_code)[0]
             .as<int64_t>();
    return absl::OkStatus();
  }));
  return id;
}

}  // namespace

std::string MaskedBody(std::string_view body, size_t max_bytes) {
  if (body.empty()) return "";
  // Masking and writing walk the tree recursively: a body nested deeper than any request may be
  // (the routes refuse it later, api.h max_json_depth) is recorded by its size only, before it is
  // parsed, so that no body can exhaust the stack of the gateway.
  if (!CheckJsonDepth(body, kMaxAuditedDepth).ok()) {
    return absl::StrCat("(JSON nested deeper than ", kMaxAuditedDepth, " levels: ", body.size(),
                        " bytes)");
  }
  nlohmann::json j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::StrCat("(not JSON: ", body.size(), " bytes)");
  Mask(j);
  std::string out = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (out.size() > max_bytes) {
    // Cut on a character boundary, so the column holds UTF-8.
    size_t cut = max_bytes;
    while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;
    out = absl::StrCat(out.substr(0, cut), "... (", out.size(), " bytes)");
  }
  return out;
}

PgAuditTrail::PgAuditTrail(std::function<absl::StatusOr<pg::Pool*>()> pool)
    : pool_(std::move(pool)) {}

absl::StatusOr<int64_t> PgAuditTrail::Begin(const gw::AdminRequestRecord& record) {
  MKT_ASSIGN_OR_RETURN(pg::Pool * pool, pool_());
  return Insert(*pool, record, /*answered=*/false);
}

absl::Status PgAuditTrail::Finish(int64_t id, int status, std::string_view error_code) {
  MKT_ASSIGN_OR_RETURN(pg::Pool * pool, pool_());
  return pg::WithTransaction(*pool, [&](pqxx::work& tx) {
    tx.exec_params(kFinish, id, status, std::string(error_code));
    return absl::OkStatus();
  });
}

absl::Status PgAuditTrail::Record(const gw::AdminRequestRecord& record) {
  MKT_ASSIGN_OR_RETURN(pg::Pool * pool, pool_());
  return Insert(*pool, record, /*answered=*/true).status();
}

absl::StatusOr<gw::ListAdminRequestsResponse> PgAuditTrail::List(
    const gw::ListAdminRequestsRequest& request) {
  int size = request.page().page_size();
  if (size < 0) return InvalidArgument("page_size", "page_size must be 0..500 (0: 50)");
  if (size == 0) size = kDefaultPageSize;
  size = std::min(size, kMaxPageSize);
  int64_t before = std::numeric_limits<int64_t>::max();
  if (!request.page().page_token().empty() &&
      (!absl::SimpleAtoi(request.page().page_token(), &before) || before <= 0)) {
    return InvalidArgument("page_token", "page_token must be the next_page_token of a page");
  }
  const int64_t since = request.has_since() ? request.since().seconds() : 0;
  const int64_t until =
      request.has_until() ? request.until().seconds() : int64_t{4'102'444'800};  // 2100
  MKT_ASSIGN_OR_RETURN(pg::Pool * pool, pool_());
  gw::ListAdminRequestsResponse response;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(*pool, [&](pqxx::work& tx) {
    response.Clear();
    const pqxx::result rows = tx.exec_params(kList, request.org_id(), request.operator_id(), since,
                                             until, before, size + 1);
    for (int i = 0; i < static_cast<int>(rows.size()) && i < size; ++i) {
      const pqxx::row& row = rows[i];
      gw::AdminRequestRecord* r = response.add_requests();
      r->set_id(row[0].as<int64_t>());
      SetMicros(r->mutable_at(), row[1].as<int64_t>());
      r->set_request_id(row[2].as<std::string>());
      r->set_operator_id(row[3].as<std::string>());
      r->set_org_id(row[4].as<std::string>());
      const std::string roles = row[5].as<std::string>();
      for (size_t start = 0; start < roles.size();) {
        size_t comma = roles.find(',', start);
        if (comma == std::string::npos) comma = roles.size();
        r->add_roles(roles.substr(start, comma - start));
        start = comma + 1;
      }
      r->set_method(row[6].as<std::string>());
      r->set_route(row[7].as<std::string>());
      r->set_path(row[8].as<std::string>());
      r->set_body(row[9].as<std::string>());
      r->set_status(row[10].as<int>());
      r->set_error_code(row[11].as<std::string>());
      if (!row[12].is_null()) SetMicros(r->mutable_finished_at(), row[12].as<int64_t>());
    }
    if (static_cast<int>(rows.size()) > size) {
      response.mutable_page()->set_next_page_token(absl::StrCat(response.requests(size - 1).id()));
    }
    return absl::OkStatus();
  }));
  return response;
}

}  // namespace mkt::gateway
