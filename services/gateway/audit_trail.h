// The audit trail of operator requests (ARCHITECTURE.md: "every change written to an audit
// log"): every /admin/v1 request but a GET, sign-in attempts included, is recorded in the
// gateway's database before it runs (so a change is never made unrecorded: when the record
// cannot be written the request is refused with 503 and nothing runs), and its answer is added
// when known. Refusals by the gateway itself (a missing role, a rate limit) are recorded with
// their answer. Bodies are kept with passwords and secrets masked. The services keep their own,
// richer trails where they have one (campaigns: the configuration before and after); this one
// covers every service uniformly: operators, channels, segments, templates, event types.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "marketing/gateway/v1/gateway.pb.h"

namespace mkt::pg {
class Pool;
}  // namespace mkt::pg

namespace mkt::gateway {

class AuditTrail {
 public:
  virtual ~AuditTrail() = default;
  // Writes `record` (its id, times and outcome ignored) before the request runs; returns its id.
  virtual absl::StatusOr<int64_t> Begin(
      const marketing::gateway::v1::AdminRequestRecord& record) = 0;
  // Adds the answer of the request recorded as `id`.
  virtual absl::Status Finish(int64_t id, int status, std::string_view error_code) = 0;
  // Writes a request answered without running (status and error_code set).
  virtual absl::Status Record(const marketing::gateway::v1::AdminRequestRecord& record) = 0;
  // Records of `request.org_id`'s subtree (set by the caller), newest first.
  virtual absl::StatusOr<marketing::gateway::v1::ListAdminRequestsResponse> List(
      const marketing::gateway::v1::ListAdminRequestsRequest& request) = 0;
};

// The trail in the gateway's PostgreSQL database (table admin_requests). A sign-in attempt's
// org is looked up from the operator it names.
class PgAuditTrail final : public AuditTrail {
 public:
  explicit PgAuditTrail(std::function<absl::StatusOr<pg::Pool*>()> pool);

  absl::StatusOr<int64_t> Begin(const marketing::gateway::v1::AdminRequestRecord& record) override;
  absl::Status Finish(int64_t id, int status, std::string_view error_code) override;
  absl::Status Record(const marketing::gateway::v1::AdminRequestRecord& record) override;
  absl::StatusOr<marketing::gateway::v1::ListAdminRequestsResponse> List(
      const marketing::gateway::v1::ListAdminRequestsRequest& request) override;

 private:
  std::function<absl::StatusOr<pg::Pool*>()> pool_;
};

// The body as the trail keeps it: JSON with the values of every member whose name contains
// "password" or "secret" (any case, at any depth) replaced by "***", cut to `max_bytes`; a body
// that is not JSON is kept as a note of its size only.
std::string MaskedBody(std::string_view body, size_t max_bytes = 16 * 1024);

}  // namespace mkt::gateway
