#include "services/gateway/gateway_config.h"

#include "absl/strings/str_cat.h"
#include "libs/core/status.h"

namespace mkt::gateway {

const config::Schema<GatewayConfig>& GatewayConfigSchema() {
  static const auto* schema = [] {
    auto* s = new config::Schema<GatewayConfig>("gateway");
    s->Field("http_address", &GatewayConfig::http_address,
             "host:port of the REST API, /healthz and /metrics")
        .Field("grpc_address", &GatewayConfig::grpc_address,
               "host:port of the gRPC health and reflection services")
        .Field("io_threads", &GatewayConfig::io_threads, "HTTP I/O threads")
        .Field("handler_threads", &GatewayConfig::handler_threads,
               "threads running route handlers (they wait on backend calls)")
        .Field("max_queued_requests", &GatewayConfig::max_queued_requests,
               "requests that may wait for a handler thread before 429")
        .Field("channels_target", &GatewayConfig::channels_target,
               "host:port of the channels service (credentials)")
        .Field("kafka_bootstrap", &GatewayConfig::kafka_bootstrap,
               "Kafka bootstrap servers (channel changes)")
        .Field("max_body_bytes", &GatewayConfig::max_body_bytes,
               "largest request body accepted; larger answers 413")
        .Field("timestamp_window_s", &GatewayConfig::timestamp_window_s,
               "how far X-Timestamp may be from the server clock, either way")
        .Field("credential_ttl_s", &GatewayConfig::credential_ttl_s,
               "seconds a cached channel credential is used (changes invalidate it sooner)")
        .Field("backend_timeout_ms", &GatewayConfig::backend_timeout_ms,
               "deadline of calls to backend services")
        .Field("log_format", &GatewayConfig::log_format, "auto, text or json")
        .Field("log_level", &GatewayConfig::log_level, "trace, debug, info, warn or error");
    return s;
  }();
  return *schema;
}

absl::Status Validate(const GatewayConfig& c) {
  auto at_least = [](const char* key, int64_t value, int64_t min) -> absl::Status {
    if (value >= min) return absl::OkStatus();
    return InvalidArgument(key, absl::StrCat(key, " must be at least ", min, ", got ", value));
  };
  MKT_RETURN_IF_ERROR(at_least("io_threads", c.io_threads, 1));
  MKT_RETURN_IF_ERROR(at_least("handler_threads", c.handler_threads, 1));
  MKT_RETURN_IF_ERROR(at_least("max_queued_requests", c.max_queued_requests, 1));
  MKT_RETURN_IF_ERROR(at_least("max_body_bytes", c.max_body_bytes, 0));
  MKT_RETURN_IF_ERROR(at_least("timestamp_window_s", c.timestamp_window_s, 1));
  MKT_RETURN_IF_ERROR(at_least("credential_ttl_s", c.credential_ttl_s, 1));
  MKT_RETURN_IF_ERROR(at_least("backend_timeout_ms", c.backend_timeout_ms, 1));
  return absl::OkStatus();
}

}  // namespace mkt::gateway
