#include "services/events/events_config.h"

#include "libs/core/status.h"

namespace mkt::events {
namespace {

absl::Status InRange(const char* key, int64_t value, int64_t low, int64_t high) {
  if (value < low || value > high) {
    return InvalidArgument(key, std::string(key) + " must be between " + std::to_string(low) +
                                    " and " + std::to_string(high));
  }
  return absl::OkStatus();
}

}  // namespace

const config::Schema<EventsConfig>& EventsConfigSchema() {
  static const auto* schema = [] {
    auto* s = new config::Schema<EventsConfig>("events");
    s->Field("grpc_address", &EventsConfig::grpc_address, "gRPC listen address (host:port)")
        .Field("metrics_address", &EventsConfig::metrics_address, "Prometheus /metrics address")
        .Field("pg_dsn", &EventsConfig::pg_dsn, "libpq connection string of the events database")
        .Field("pg_pool_size", &EventsConfig::pg_pool_size, "PostgreSQL connections")
        .Field("kafka_bootstrap", &EventsConfig::kafka_bootstrap, "Kafka bootstrap servers")
        .Field("events_topic", &EventsConfig::events_topic, "topic of business events")
        .Field("campaign_changes_topic", &EventsConfig::campaign_changes_topic,
               "topic of campaign changes (rules)")
        .Field("dead_letter_topic", &EventsConfig::dead_letter_topic,
               "where events that do not fit their schema go")
        .Field("consumer_group", &EventsConfig::consumer_group,
               "consumer group of the business-events consumer")
        .Field("rewards_address", &EventsConfig::rewards_address, "the rewards ledger (gRPC)")
        .Field("batch_max", &EventsConfig::batch_max, "most events per matching transaction")
        .Field("batch_linger_ms", &EventsConfig::batch_linger_ms,
               "milliseconds to wait for more events after the first of a batch")
        .Field("grants_in_flight", &EventsConfig::grants_in_flight,
               "grants the grant sender keeps in flight")
        .Field("grants_per_call", &EventsConfig::grants_per_call,
               "most grants per GrantMany call to the ledger (1: one Grant call each)")
        .Field("grants_claim_batch", &EventsConfig::grants_claim_batch,
               "most grant-outbox rows the sender reads per query")
        .Field("grants_finish_batch", &EventsConfig::grants_finish_batch,
               "most grant outcomes the sender records per transaction")
        .Field("unfunded_retry_s", &EventsConfig::unfunded_retry_s,
               "seconds a grant refused with ACCOUNT_NOT_FOUND (the campaign's budget not funded "
               "yet by rewards) is retried, from the first such refusal, before it is recorded as "
               "refused")
        .Field("late_events_s", &EventsConfig::late_events_s,
               "seconds after an ended campaign's end during which the events that occurred "
               "before the end, arriving late, are still matched")
        .Field("worker_threads", &EventsConfig::worker_threads, "threads serving admin RPCs")
        .Field("worker_queue", &EventsConfig::worker_queue, "admin RPCs that may wait")
        .Field("segments_address", &EventsConfig::segments_address,
               "the segments service (gRPC), where conditions read customer tags")
        .Field("segments_timeout_ms", &EventsConfig::segments_timeout_ms,
               "milliseconds one tag lookup may take before the batch is retried")
        .Field("tags_file", &EventsConfig::tags_file,
               "customer tags as customer,tag,value lines, read instead of the segments service "
               "(tests and tools)")
        .Field("log_format", &EventsConfig::log_format, "auto, text or json")
        .Field("log_level", &EventsConfig::log_level, "trace, debug, info, warn or error");
    return s;
  }();
  return *schema;
}

absl::Status ValidateEventsConfig(const EventsConfig& c) {
  MKT_RETURN_IF_ERROR(InRange("pg_pool_size", c.pg_pool_size, 2, 256));
  MKT_RETURN_IF_ERROR(InRange("batch_max", c.batch_max, 1, 10000));
  MKT_RETURN_IF_ERROR(InRange("batch_linger_ms", c.batch_linger_ms, 0, 10000));
  MKT_RETURN_IF_ERROR(InRange("grants_in_flight", c.grants_in_flight, 1, 10000));
  MKT_RETURN_IF_ERROR(InRange("grants_per_call", c.grants_per_call, 1, 500));
  MKT_RETURN_IF_ERROR(InRange("grants_claim_batch", c.grants_claim_batch, 1, 100000));
  MKT_RETURN_IF_ERROR(InRange("grants_finish_batch", c.grants_finish_batch, 1, 100000));
  MKT_RETURN_IF_ERROR(InRange("unfunded_retry_s", c.unfunded_retry_s, 0, 7 * 24 * 3600));
  MKT_RETURN_IF_ERROR(InRange("late_events_s", c.late_events_s, 0, 31'622'400));
  MKT_RETURN_IF_ERROR(InRange("worker_threads", c.worker_threads, 1, 256));
  MKT_RETURN_IF_ERROR(InRange("worker_queue", c.worker_queue, 1, 1000000));
  MKT_RETURN_IF_ERROR(InRange("segments_timeout_ms", c.segments_timeout_ms, 1, 600000));
  if (c.segments_address.empty() && c.tags_file.empty()) {
    return InvalidArgument("segments_address",
                           "segments_address is required unless tags_file names a tag file");
  }
  return absl::OkStatus();
}

}  // namespace mkt::events
