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
               "requests that may wait for a handler thread before 429; also how many may wait "
               "for a backend without a thread before further ones take the handler pool")
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
        .Field("nonce_max_per_channel", &GatewayConfig::nonce_max_per_channel,
               "live request nonces one channel may hold in the replay window (kept 2 x "
               "timestamp_window_s + 10 s); over it 429 RATE_LIMITED. 0: channel_rate x that "
               "retention + channel_burst, +10 % (all of nonce_max_total when channel_rate is 0)")
        .Field("nonce_max_total", &GatewayConfig::nonce_max_total,
               "live request nonces of all channels together (memory bound, ~30 bytes each); "
               "over it 503 DEPENDENCY_UNAVAILABLE")
        .Field("backend_timeout_ms", &GatewayConfig::backend_timeout_ms,
               "deadline of calls to backend services")
        .Field("backend_max_in_flight", &GatewayConfig::backend_max_in_flight,
               "calls running at once to each backend service; more wait in the gateway, without "
               "a thread, for one to end, and one that waited backend_timeout_ms is 503")
        .Field("campaigns_target", &GatewayConfig::campaigns_target,
               "host:port of the campaigns service")
        .Field("events_target", &GatewayConfig::events_target,
               "host:port of the events service (operators' event types, event log, "
               "explanations, and the event type registry POST /v1/events checks events "
               "against; the events themselves go to Kafka)")
        .Field("segments_target", &GatewayConfig::segments_target,
               "host:port of the segments service")
        .Field("rewards_target", &GatewayConfig::rewards_target, "host:port of the rewards service")
        .Field("pg_dsn", &GatewayConfig::pg_dsn,
               "the gateway's database (idempotency records, operators, sessions)")
        .Field("pg_pool_size", &GatewayConfig::pg_pool_size, "PostgreSQL connections of its pool")
        .Field("business_events_topic", &GatewayConfig::business_events_topic,
               "topic of POST /v1/events")
        .Field("tracking_topic", &GatewayConfig::tracking_topic, "topic of POST /v1/tracking")
        .Secret(
            "token_key", &GatewayConfig::token_key,
            "HMAC key of admin bearer tokens, shared by all replicas (empty: random per process)")
        .Field("token_ttl_s", &GatewayConfig::token_ttl_s, "lifetime of an admin session")
        .Field("bootstrap_admin_id", &GatewayConfig::bootstrap_admin_id,
               "operator created at start-up when missing")
        .Field("bootstrap_admin_org", &GatewayConfig::bootstrap_admin_org,
               "org of the bootstrap operator")
        .Secret("bootstrap_admin_password", &GatewayConfig::bootstrap_admin_password,
                "password of the bootstrap operator (empty: no bootstrap)")
        .Field("lockout_failures", &GatewayConfig::lockout_failures,
               "wrong passwords in a row that lock an operator account")
        .Field("lockout_s", &GatewayConfig::lockout_s, "how long a locked account stays locked")
        .Field("scrypt_n", &GatewayConfig::scrypt_n, "scrypt cost N of new password hashes")
        .Field("channel_rate", &GatewayConfig::channel_rate, "requests/s per channel (0: off)")
        .Field("channel_burst", &GatewayConfig::channel_burst, "burst per channel")
        .Field("customer_rate", &GatewayConfig::customer_rate,
               "requests/s per customer on customer routes (0: off)")
        .Field("customer_burst", &GatewayConfig::customer_burst, "burst per customer")
        .Field("route_rate", &GatewayConfig::route_rate, "requests/s per route (0: off)")
        .Field("route_burst", &GatewayConfig::route_burst, "burst per route")
        .Field("operator_rate", &GatewayConfig::operator_rate, "requests/s per operator (0: off)")
        .Field("operator_burst", &GatewayConfig::operator_burst, "burst per operator")
        .Field("breaker_window", &GatewayConfig::breaker_window,
               "calls a backend's circuit breaker judges")
        .Field("breaker_min_calls", &GatewayConfig::breaker_min_calls,
               "calls needed before a breaker may open")
        .Field("breaker_failure_ratio", &GatewayConfig::breaker_failure_ratio,
               "share of failed calls that opens a breaker")
        .Field("breaker_slow_ratio", &GatewayConfig::breaker_slow_ratio,
               "share of slow calls that opens a breaker")
        .Field("breaker_slow_call_ms", &GatewayConfig::breaker_slow_call_ms,
               "a call slower than this counts as slow")
        .Field("breaker_open_ms", &GatewayConfig::breaker_open_ms,
               "how long an open breaker refuses calls before probing")
        .Field("breaker_probes", &GatewayConfig::breaker_probes,
               "successful probes that close a half-open breaker")
        .Field("max_json_depth", &GatewayConfig::max_json_depth, "deepest JSON nesting accepted")
        .Field("idempotency_retention_h", &GatewayConfig::idempotency_retention_h,
               "hours an Idempotency-Key is remembered")
        .Field("sold_out_boards", &GatewayConfig::sold_out_boards,
               "refuse claims from copies of the campaigns' sold-out boards (decision 023)")
        .Field("wallet_batch", &GatewayConfig::wallet_batch,
               "wallet reads per GetWallets call at most, 1..256 (decision 029); 1 sends each "
               "alone as GetWallet")
        .Field("wallet_calls_in_flight", &GatewayConfig::wallet_calls_in_flight,
               "GetWallets calls of one org running at once; more reads wait and leave together")
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
  MKT_RETURN_IF_ERROR(at_least("backend_max_in_flight", c.backend_max_in_flight, 1));
  if (c.backend_max_in_flight > 1'000'000) {
    return InvalidArgument("backend_max_in_flight",
                           "backend_max_in_flight must be at most 1000000");
  }
  MKT_RETURN_IF_ERROR(at_least("wallet_batch", c.wallet_batch, 1));
  if (c.wallet_batch > 256) {
    return InvalidArgument("wallet_batch", "wallet_batch must be at most 256 (GetWallets' limit)");
  }
  MKT_RETURN_IF_ERROR(at_least("wallet_calls_in_flight", c.wallet_calls_in_flight, 1));
  MKT_RETURN_IF_ERROR(at_least("nonce_max_per_channel", c.nonce_max_per_channel, 0));
  MKT_RETURN_IF_ERROR(at_least("nonce_max_total", c.nonce_max_total, 1000));
  MKT_RETURN_IF_ERROR(at_least("pg_pool_size", c.pg_pool_size, 1));
  MKT_RETURN_IF_ERROR(at_least("token_ttl_s", c.token_ttl_s, 60));
  MKT_RETURN_IF_ERROR(at_least("lockout_failures", c.lockout_failures, 1));
  MKT_RETURN_IF_ERROR(at_least("lockout_s", c.lockout_s, 1));
  MKT_RETURN_IF_ERROR(at_least("scrypt_n", c.scrypt_n, 1024));
  if ((c.scrypt_n & (c.scrypt_n - 1)) != 0) {
    return InvalidArgument("scrypt_n", "scrypt_n must be a power of two");
  }
  MKT_RETURN_IF_ERROR(at_least("breaker_window", c.breaker_window, 1));
  MKT_RETURN_IF_ERROR(at_least("breaker_min_calls", c.breaker_min_calls, 1));
  MKT_RETURN_IF_ERROR(at_least("breaker_open_ms", c.breaker_open_ms, 1));
  MKT_RETURN_IF_ERROR(at_least("breaker_probes", c.breaker_probes, 1));
  MKT_RETURN_IF_ERROR(at_least("max_json_depth", c.max_json_depth, 2));
  MKT_RETURN_IF_ERROR(at_least("idempotency_retention_h", c.idempotency_retention_h, 1));
  for (double v : {c.channel_rate, c.channel_burst, c.customer_rate, c.customer_burst, c.route_rate,
                   c.route_burst, c.operator_rate, c.operator_burst}) {
    if (v < 0) return InvalidArgument("rate", "rate limits must not be negative");
  }
  return absl::OkStatus();
}

}  // namespace mkt::gateway
