#include "services/gateway/gateway_routes.h"

#include "absl/time/time.h"
#include "libs/metrics/metrics.h"
#include "nlohmann/json.hpp"

namespace mkt::gateway {

absl::Status RegisterGatewayRoutes(Router& router, const Clock& clock) {
  // Liveness only: answers while the process serves HTTP, whatever its dependencies do, so an
  // orchestrator does not restart every gateway when a backend is down.
  absl::Status s = router.Add("GET", "/healthz", {.on_io_thread = true},
                              [](const RouteRequest&) -> absl::StatusOr<HttpResponse> {
                                return JsonResponse(R"({"status":"ok"})");
                              });
  if (!s.ok()) return s;

  // Unauthenticated: in production only the internal network reaches it (the load balancer
  // forwards /v1 and /admin/v1 only).
  s = router.Add("GET", "/metrics", {.on_io_thread = true},
                 [](const RouteRequest&) -> absl::StatusOr<HttpResponse> {
                   HttpResponse response;
                   response.content_type = "text/plain; version=0.0.4; charset=utf-8";
                   response.body = metrics::SerializeText();
                   return response;
                 });
  if (!s.ok()) return s;

  return router.Add(
      "GET", "/v1/channel", {.channel_auth = true},
      [&clock](const RouteRequest& request) -> absl::StatusOr<HttpResponse> {
        const absl::Time now = clock.Now();
        nlohmann::json body = {
            {"channel_id", request.channel->channel_id},
            {"org_id", request.channel->org_id},
            {"code", request.channel->code},
            {"server_time", absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", now, absl::UTCTimeZone())},
            {"server_time_unix", absl::ToUnixSeconds(now)},
        };
        return JsonResponse(body.dump());
      });
}

}  // namespace mkt::gateway
