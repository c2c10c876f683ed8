// The gateway's configuration: defaults that work on the local stack, overridden by a JSON file
// (--config) and then by MKT_GATEWAY_<KEY> environment variables. `mkt-gateway
// --describe-config` lists every key.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "libs/config/config.h"

namespace mkt::gateway {

struct GatewayConfig {
  // Channels' REST API and, on the same port, /healthz and /metrics. In production /metrics is
  // kept internal by the load balancer (only /v1 and /admin/v1 are routed from outside).
  std::string http_address = "127.0.0.1:8080";
  // gRPC health and reflection, like every service, for orchestrators' probes.
  std::string grpc_address = "127.0.0.1:20080";
  int64_t io_threads = 2;
  // Threads that run route handlers (they block on backend calls), and how many requests may
  // wait for one before the gateway answers 429.
  int64_t handler_threads = 16;
  int64_t max_queued_requests = 1024;
  std::string channels_target = "127.0.0.1:20061";
  std::string kafka_bootstrap = "127.0.0.1:29092";
  int64_t max_body_bytes = 1048576;
  int64_t timestamp_window_s = 300;
  int64_t credential_ttl_s = 60;
  int64_t backend_timeout_ms = 2000;
  std::string log_format = "auto";
  std::string log_level = "info";
};

// Returns the schema (names, docs, environment variables) of GatewayConfig.
const config::Schema<GatewayConfig>& GatewayConfigSchema();

// Returns an error naming the first value out of its range.
absl::Status Validate(const GatewayConfig& config);

}  // namespace mkt::gateway
