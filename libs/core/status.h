// Errors as values: absl::Status carrying a machine-readable ErrorReason (and the field it is
// about) as a payload, so the reason survives from the repository up to the HTTP response.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "marketing/common/v1/errors.pb.h"

namespace mkt {

// Debian's Abseil is built with its own absl::string_view (not an alias of std::string_view).
// Project APIs take std::string_view; this converts at the boundary to Abseil.
inline absl::string_view AsAbsl(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

using ErrorReason = ::marketing::common::v1::ErrorReason;

// Returns a status with `code`, `message` and the given reason (and field) attached.
absl::Status Error(absl::StatusCode code, ErrorReason reason, std::string_view message,
                   std::string_view field = {});

// Shorthands for the common cases.
absl::Status InvalidArgument(std::string_view field, std::string_view message);
absl::Status NotFound(std::string_view message);
absl::Status Internal(std::string_view message);
absl::Status Unavailable(std::string_view message);

// Returns the reason attached to `status`, or the reason its code implies when none was attached.
ErrorReason ReasonOf(const absl::Status& status);
// Returns the field attached to `status`, or "".
std::string FieldOf(const absl::Status& status);
// Returns the reason's name, e.g. "STOCK_EXHAUSTED".
std::string ReasonName(ErrorReason reason);
// A status carried inside a batch call's answer, one per item (rewards' GrantOutcome and
// WalletRead): the gRPC code (0 for OK), the message, and the reason and field a unary call
// carries in its status details (`error`, a marketing.common.v1.ErrorDetail).
template <class Item>
void SetItemStatus(const absl::Status& status, Item& item) {
  item.set_code(static_cast<int>(status.code()));
  item.set_message(std::string(status.message()));
  item.mutable_error()->set_reason(ReasonOf(status));
  item.mutable_error()->set_field(FieldOf(status));
}
template <class Item>
absl::Status ItemStatus(const Item& item) {
  if (item.code() == 0) return absl::OkStatus();
  return Error(static_cast<absl::StatusCode>(item.code()), item.error().reason(), item.message(),
               item.error().field());
}

// Returns the HTTP status a reason answers with (400, 401, 403, 404, 409, 413, 429, 500, 503...).
int HttpStatusFor(const absl::Status& status);

}  // namespace mkt

// Evaluates `expr` (an absl::Status); returns it from the current function when not OK.
#define MKT_RETURN_IF_ERROR(expr)              \
  do {                                         \
    ::absl::Status mkt_status_ = (expr);       \
    if (!mkt_status_.ok()) return mkt_status_; \
  } while (false)

#define MKT_CONCAT_INNER_(a, b) a##b
#define MKT_CONCAT_(a, b) MKT_CONCAT_INNER_(a, b)
// Evaluates `rexpr` (an absl::StatusOr<T>); returns its status when not OK, else moves the
// value into `lhs` (which may be a declaration: `MKT_ASSIGN_OR_RETURN(auto x, F());`).
#define MKT_ASSIGN_OR_RETURN(lhs, rexpr) \
  MKT_ASSIGN_OR_RETURN_IMPL_(MKT_CONCAT_(mkt_statusor_, __LINE__), lhs, rexpr)
#define MKT_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                               \
  if (!statusor.ok()) return statusor.status();          \
  lhs = std::move(statusor).value()
