// The gateway's view of one HTTP exchange, independent of the HTTP library: the request a route
// handler reads, the response it returns, and the JSON error shape every failure answers with:
//   {"error": {"code": "SIGNATURE_INVALID", "message": "...", "request_id": "..."}}
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace mkt::gateway {

// Request headers with case-insensitive names (kept lowercase). A name may repeat.
class HttpHeaders {
 public:
  // `name` in any case.
  void Add(std::string_view name, std::string_view value);
  // Returns the first value of `name` (any case), or nullptr.
  const std::string* Find(std::string_view name) const;
  // Returns how many times `name` (any case) was sent.
  int Count(std::string_view name) const;
  const std::vector<std::pair<std::string, std::string>>& entries() const { return entries_; }

 private:
  std::vector<std::pair<std::string, std::string>> entries_;
};

struct HttpRequest {
  std::string method;  // "GET"
  // The request target exactly as received: path and query ("/v1/x?a=1"). Signatures cover it.
  std::string target;
  HttpHeaders headers;
  std::string body;
  // The caller's X-Request-Id when acceptable, else a new id; echoed in every response.
  std::string request_id;
  // Not OK when the server could not read the whole request (body over the limit, malformed
  // HTTP): then only method, target and headers are set and the connection closes afterwards.
  absl::Status read_error;

  // Returns the target without its query string.
  std::string_view path() const;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  // Extra headers (Content-Type, Content-Length and X-Request-Id are set by the server).
  std::vector<std::pair<std::string, std::string>> headers;
  // For failures, the error code name (e.g. "SIGNATURE_INVALID"); "" for success. Used by
  // metrics and the access log, never sent as a header.
  std::string error_code;
  // Extra "key=value" words for the access log line (operator, masked customer id, the cause of
  // a 5xx); never sent.
  std::string log_note;
};

// Returns the status line and headers of `response` as sent, ending in the empty line: HTTP/1.0
// or HTTP/1.1 as `version` (10 or 11) says, then Content-Type, X-Request-Id, the extra headers (a
// later one replaces an earlier one of the same name, whatever its case, as do extra headers named
// like the three the server sets), Content-Length, and Connection where the version's default is
// not what `keep_alive` asks for. A header whose name or value holds CR, LF or NUL is left out.
std::string ResponseHead(const HttpResponse& response, std::string_view request_id,
                         unsigned version, bool keep_alive);

// Returns a response with `body` (already JSON) and status 200 unless given.
HttpResponse JsonResponse(std::string body, int status = 200);

// Returns `status` saying when to come back: a 429 or 503 answer made from it carries
// Retry-After with `after` in whole seconds (at least 1).
absl::Status WithRetryAfter(absl::Status status, absl::Duration after);

// The Retry-After value for a 429 or 503 made from `status`: what WithRetryAfter put on it, else
// "1".
std::string RetryAfterOf(const absl::Status& status);

// Returns the JSON error response for `status` (which must not be OK): HTTP status from
// mkt::HttpStatusFor, code from the status's reason. 5xx answers never carry the internal
// message, only what the caller can do about it; the caller logs the original. Every 429 and 503
// carries Retry-After: what WithRetryAfter put on `status`, else 1 s.
HttpResponse ErrorResponse(const absl::Status& status, std::string_view request_id);

}  // namespace mkt::gateway
