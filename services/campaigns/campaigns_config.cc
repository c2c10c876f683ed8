#include "services/campaigns/campaigns_config.h"

#include "libs/core/status.h"

namespace mkt::campaigns {
namespace {

absl::Status InRange(const char* key, int64_t value, int64_t low, int64_t high) {
  if (value < low || value > high) {
    return InvalidArgument(key, std::string(key) + " must be between " + std::to_string(low) +
                                    " and " + std::to_string(high) + " (got " +
                                    std::to_string(value) + ")");
  }
  return absl::OkStatus();
}

}  // namespace

const config::Schema<CampaignsConfig>& CampaignsConfigSchema() {
  static const auto* schema = [] {
    auto* s = new config::Schema<CampaignsConfig>("campaigns");
    s->Field("grpc_address", &CampaignsConfig::grpc_address, "gRPC listen address (host:port)")
        .Field("metrics_address", &CampaignsConfig::metrics_address,
               "Prometheus /metrics listen address (host:port)")
        .Field("pg_dsn", &CampaignsConfig::pg_dsn,
               "libpq connection string of the campaigns database")
        .Field("pg_pool_size", &CampaignsConfig::pg_pool_size, "PostgreSQL connections")
        .Field("kafka_bootstrap", &CampaignsConfig::kafka_bootstrap,
               "Kafka bootstrap servers for the outbox relay (mkt.campaign-changes.v1)")
        .Field("worker_threads", &CampaignsConfig::worker_threads, "threads running gRPC calls")
        .Field("worker_queue", &CampaignsConfig::worker_queue,
               "calls that may wait for a worker before RESOURCE_EXHAUSTED")
        .Field("scheduler_interval_ms", &CampaignsConfig::scheduler_interval_ms,
               "milliseconds between looks for campaigns to start or end (0: off)")
        .Field("default_uptake_bp", &CampaignsConfig::default_uptake_bp,
               "expected uptake (basis points) for cost forecasts when the operator gives none")
        .Field("catalog_file", &CampaignsConfig::catalog_file,
               "JSON file of segments and benefit templates (empty: built-in demo set)")
        .Field("log_format", &CampaignsConfig::log_format, "auto, text or json")
        .Field("log_level", &CampaignsConfig::log_level, "trace, debug, info, warn or error");
    return s;
  }();
  return *schema;
}

absl::Status ValidateCampaignsConfig(const CampaignsConfig& c) {
  MKT_RETURN_IF_ERROR(InRange("pg_pool_size", c.pg_pool_size, 1, 256));
  MKT_RETURN_IF_ERROR(InRange("worker_threads", c.worker_threads, 1, 1024));
  MKT_RETURN_IF_ERROR(InRange("worker_queue", c.worker_queue, 1, 1'000'000));
  MKT_RETURN_IF_ERROR(InRange("scheduler_interval_ms", c.scheduler_interval_ms, 0, 3'600'000));
  MKT_RETURN_IF_ERROR(InRange("default_uptake_bp", c.default_uptake_bp, 1, 10'000));
  return absl::OkStatus();
}

}  // namespace mkt::campaigns
