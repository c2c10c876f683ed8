#include "services/channels/channels_config.h"

namespace mkt::channels {

const config::Schema<ChannelsConfig>& ChannelsConfigSchema() {
  static const auto* schema = [] {
    auto* s = new config::Schema<ChannelsConfig>("channels");
    s->Field("grpc_address", &ChannelsConfig::grpc_address, "gRPC listen address (host:port)")
        .Field("metrics_address", &ChannelsConfig::metrics_address,
               "Prometheus /metrics listen address (host:port)")
        .Field("pg_dsn", &ChannelsConfig::pg_dsn,
               "libpq connection string of the channels database")
        .Field("pg_pool_size", &ChannelsConfig::pg_pool_size, "PostgreSQL connections in the pool")
        .Field("kafka_bootstrap", &ChannelsConfig::kafka_bootstrap,
               "Kafka bootstrap servers for the outbox relay")
        .Secret("secret_key", &ChannelsConfig::secret_key,
                "64 hex chars (openssl rand -hex 32) that encrypt channel secrets at rest")
        .Field("worker_threads", &ChannelsConfig::worker_threads,
               "threads running database work for gRPC calls")
        .Field("worker_queue", &ChannelsConfig::worker_queue,
               "calls that may wait for a worker before RESOURCE_EXHAUSTED")
        .Field("log_format", &ChannelsConfig::log_format, "auto, text or json")
        .Field("log_level", &ChannelsConfig::log_level, "trace, debug, info, warn or error");
    return s;
  }();
  return *schema;
}

}  // namespace mkt::channels
