// The gateway's endpoints (this slice): GET /healthz (liveness), GET /metrics (Prometheus text)
// and GET /v1/channel (who the signed caller is, and the server time to check clocks against).
#pragma once

#include "absl/status/status.h"
#include "libs/core/ids.h"
#include "services/gateway/router.h"

namespace mkt::gateway {

// Adds the routes to `router`; `clock` gives /v1/channel its server time.
absl::Status RegisterGatewayRoutes(Router& router, const Clock& clock);

}  // namespace mkt::gateway
