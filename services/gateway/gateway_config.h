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
  // Replay protection keeps every nonce for 2 × timestamp_window_s + 10 s. Live nonces one
  // channel may hold (0: derived from channel_rate × that retention, with channel_burst and 10 %
  // to spare, so a channel at its rate limit is never refused by the nonce window), and in all
  // (the memory bound: about 30 bytes a nonce, so 8,000,000 ≈ 250 MB, ≈ 13,000 signed req/s
  // sustained). Over a bound: 429 RATE_LIMITED (the channel's) or 503 DEPENDENCY_UNAVAILABLE (the
  // gateway's), with Retry-After; nonces are never forgotten early.
  int64_t nonce_max_per_channel = 0;
  int64_t nonce_max_total = 8000000;
  int64_t backend_timeout_ms = 2000;
  int64_t backend_max_in_flight = 256;
  // The other backends of the REST API.
  std::string campaigns_target = "127.0.0.1:20031";
  std::string events_target = "127.0.0.1:20051";
  std::string segments_target = "127.0.0.1:20041";
  std::string rewards_target = "127.0.0.1:20071";
  // The gateway's own database: idempotency records, operators, admin sessions. The gateway
  // starts without it (channel authentication does not need it) and connects when first needed.
  std::string pg_dsn = "host=127.0.0.1 port=25432 user=postgres dbname=gateway";
  int64_t pg_pool_size = 8;
  std::string business_events_topic = "mkt.business-events.v1";
  std::string tracking_topic = "mkt.tracking.v1";
  // Admin bearer tokens: the HMAC key every replica shares (empty: a random key per process, so
  // tokens do not survive a restart — fine on a laptop, wrong behind a load balancer).
  std::string token_key;
  int64_t token_ttl_s = 28800;
  // The first operator, created at start-up when missing (empty password: none).
  std::string bootstrap_admin_id = "admin";
  std::string bootstrap_admin_org = "fed";
  std::string bootstrap_admin_password;
  int64_t lockout_failures = 5;
  int64_t lockout_s = 900;
  int64_t scrypt_n = 16384;
  // Token-bucket rate limits (requests per second and burst); a rate of 0 disables one.
  double channel_rate = 500;
  double channel_burst = 1000;
  double customer_rate = 20;
  double customer_burst = 40;
  double route_rate = 0;
  double route_burst = 0;
  double operator_rate = 50;
  double operator_burst = 100;
  // Circuit breaker per backend.
  int64_t breaker_window = 20;
  int64_t breaker_min_calls = 10;
  double breaker_failure_ratio = 0.5;
  double breaker_slow_ratio = 0.8;
  int64_t breaker_slow_call_ms = 1000;
  int64_t breaker_open_ms = 5000;
  int64_t breaker_probes = 3;
  int64_t max_json_depth = 32;
  int64_t idempotency_retention_h = 24;
  // Refuse claims from copies of the campaigns' sold-out boards (decision 023).
  bool sold_out_boards = true;
  // Wallet reads per Benefits.GetWallets call at most (decision 029); 1 sends each read alone
  // as GetWallet.
  int64_t wallet_batch = 64;
  // GetWallets calls of one org running at once; reads beyond them wait for one to end.
  int64_t wallet_calls_in_flight = 4;
  std::string log_format = "auto";
  std::string log_level = "info";
};

// Returns the schema (names, docs, environment variables) of GatewayConfig.
const config::Schema<GatewayConfig>& GatewayConfigSchema();

// Returns an error naming the first value out of its range.
absl::Status Validate(const GatewayConfig& config);

}  // namespace mkt::gateway
