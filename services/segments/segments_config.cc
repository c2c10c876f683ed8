#include "services/segments/segments_config.h"

#include "libs/core/status.h"

namespace mkt::segments {

const config::Schema<SegmentsConfig>& SegmentsConfigSchema() {
  static const auto* schema = [] {
    using C = SegmentsConfig;
    auto* s = new config::Schema<SegmentsConfig>("segments");
    s->Field("grpc_address", &C::grpc_address, "gRPC listen address (host:port)")
        .Field("metrics_address", &C::metrics_address,
               "Prometheus /metrics listen address (host:port)")
        .Field("pg_dsn", &C::pg_dsn, "libpq connection string of the segments database")
        .Field("pg_pool_size", &C::pg_pool_size, "PostgreSQL connections in the pool")
        .Field("kafka_bootstrap", &C::kafka_bootstrap, "Kafka bootstrap servers")
        .Field("profiles_topic", &C::profiles_topic,
               "topic of CustomerProfileChanged messages from the CRM / profile service")
        .Field(
            "business_events_topic", &C::business_events_topic,
            "topic of BusinessEvent messages (transactions feed RFM); empty turns RFM intake off")
        .Field("dead_letter_topic", &C::dead_letter_topic, "where rejected messages go")
        .Field("replica_id", &C::replica_id,
               "distinct per replica: names its consumer group (mkt-segments-<replica_id>)")
        .Field("rfm_interval_s", &C::rfm_interval_s,
               "seconds between RFM scoring runs; 0 = off (run it on one replica)")
        .Field("changes_poll_ms", &C::changes_poll_ms,
               "milliseconds between reads of the change log (other replicas' writes)")
        .Field("changes_retention_s", &C::changes_retention_s,
               "seconds change-log rows are kept after their transaction ended")
        .Field("worker_threads", &C::worker_threads, "threads answering gRPC calls")
        .Field("worker_queue", &C::worker_queue,
               "calls that may wait for a worker before RESOURCE_EXHAUSTED")
        .Field("log_format", &C::log_format, "auto, text or json")
        .Field("log_level", &C::log_level, "trace, debug, info, warn or error");
    return s;
  }();
  return *schema;
}

absl::Status ValidateSegmentsConfig(const SegmentsConfig& c) {
  if (c.pg_pool_size < 2 || c.pg_pool_size > 64) return InvalidArgument("pg_pool_size", "2..64");
  if (c.worker_threads < 1 || c.worker_threads > 256) {
    return InvalidArgument("worker_threads", "1..256");
  }
  if (c.worker_queue < 1) return InvalidArgument("worker_queue", "at least 1");
  if (c.rfm_interval_s < 0) return InvalidArgument("rfm_interval_s", "0 or more");
  if (c.changes_poll_ms < 10 || c.changes_poll_ms > 60000) {
    return InvalidArgument("changes_poll_ms", "10..60000");
  }
  if (c.changes_retention_s < 60) return InvalidArgument("changes_retention_s", "at least 60");
  if (c.profiles_topic.empty()) return InvalidArgument("profiles_topic", "required");
  if (c.replica_id.empty()) return InvalidArgument("replica_id", "required");
  return absl::OkStatus();
}

}  // namespace mkt::segments
