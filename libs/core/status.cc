#include "libs/core/status.h"

#include "absl/strings/cord.h"

namespace mkt {
namespace {

constexpr std::string_view kReasonPayload = "type.mkt/reason";
constexpr std::string_view kFieldPayload = "type.mkt/field";

namespace pb = ::marketing::common::v1;

ErrorReason DefaultReasonFor(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return pb::ERROR_REASON_UNSPECIFIED;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return pb::INVALID_ARGUMENT;
    case absl::StatusCode::kUnauthenticated:
      return pb::CREDENTIALS_MISSING;
    case absl::StatusCode::kPermissionDenied:
      return pb::PERMISSION_DENIED;
    case absl::StatusCode::kNotFound:
      return pb::NOT_FOUND;
    case absl::StatusCode::kAlreadyExists:
      return pb::ALREADY_EXISTS;
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAborted:
      return pb::CONFLICT;
    case absl::StatusCode::kResourceExhausted:
      return pb::RATE_LIMITED;
    case absl::StatusCode::kUnavailable:
      return pb::DEPENDENCY_UNAVAILABLE;
    case absl::StatusCode::kDeadlineExceeded:
      return pb::DEADLINE_EXCEEDED;
    default:
      return pb::INTERNAL;
  }
}

}  // namespace

absl::Status Error(absl::StatusCode code, ErrorReason reason, std::string_view message,
                   std::string_view field) {
  absl::Status status(code, AsAbsl(message));
  status.SetPayload(AsAbsl(kReasonPayload), absl::Cord(pb::ErrorReason_Name(reason)));
  if (!field.empty()) status.SetPayload(AsAbsl(kFieldPayload), absl::Cord(AsAbsl(field)));
  return status;
}

absl::Status InvalidArgument(std::string_view field, std::string_view message) {
  return Error(absl::StatusCode::kInvalidArgument, pb::INVALID_ARGUMENT, message, field);
}

absl::Status NotFound(std::string_view message) {
  return Error(absl::StatusCode::kNotFound, pb::NOT_FOUND, message);
}

absl::Status Internal(std::string_view message) {
  return Error(absl::StatusCode::kInternal, pb::INTERNAL, message);
}

absl::Status Unavailable(std::string_view message) {
  return Error(absl::StatusCode::kUnavailable, pb::DEPENDENCY_UNAVAILABLE, message);
}

ErrorReason ReasonOf(const absl::Status& status) {
  if (auto payload = status.GetPayload(AsAbsl(kReasonPayload))) {
    ErrorReason reason;
    if (pb::ErrorReason_Parse(std::string(*payload), &reason)) return reason;
  }
  return DefaultReasonFor(status.code());
}

std::string FieldOf(const absl::Status& status) {
  if (auto payload = status.GetPayload(AsAbsl(kFieldPayload))) return std::string(*payload);
  return "";
}

std::string ReasonName(ErrorReason reason) { return pb::ErrorReason_Name(reason); }

int HttpStatusFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAborted:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return ReasonOf(status) == pb::BODY_TOO_LARGE ? 413 : 429;
    case absl::StatusCode::kUnimplemented:
      return ReasonOf(status) == pb::METHOD_NOT_ALLOWED ? 405 : 501;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

}  // namespace mkt
