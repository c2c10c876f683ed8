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
        .Field("points_unit_cost_fen", &CampaignsConfig::points_unit_cost_fen,
               "fen an event campaign's budget is charged per point it grants (set on each "
               "version when it is submitted)")
        .Field("reference_source", &CampaignsConfig::reference_source,
               "where segments and benefit templates are looked up: services (segments_address "
               "and rewards_address) or catalog (catalog_file)")
        .Field("catalog_file", &CampaignsConfig::catalog_file,
               "reference_source=catalog: JSON file of segments and benefit templates (empty: "
               "built-in demo set)")
        .Field("reference_timeout_ms", &CampaignsConfig::reference_timeout_ms,
               "reference_source=services: deadline of one segment or template lookup")
        .Field("reference_cache_ms", &CampaignsConfig::reference_cache_ms,
               "reference_source=services: how long a looked-up segment or template is reused "
               "(0: no cache)")
        .Field("rewards_address", &CampaignsConfig::rewards_address,
               "rewards ledger gRPC address that participations grant through")
        .Field("rewards_timeout_ms", &CampaignsConfig::rewards_timeout_ms,
               "deadline of one grant call to the ledger")
        .Field("events_address", &CampaignsConfig::events_address,
               "the events service: trigger expressions of event campaigns are checked against "
               "its registry of event types (reference_source=services; empty: not checked)")
        .Field("segments_address", &CampaignsConfig::segments_address,
               "segments gRPC address for audience membership (empty: membership_file)")
        .Field("membership_file", &CampaignsConfig::membership_file,
               "JSON audience membership used when segments_address is empty")
        .Field("segments_timeout_ms", &CampaignsConfig::segments_timeout_ms,
               "deadline of one membership call")
        .Field("participation_threads", &CampaignsConfig::participation_threads,
               "threads running participations")
        .Field("participation_queue", &CampaignsConfig::participation_queue,
               "participations that may wait for a thread before RESOURCE_EXHAUSTED")
        .Field("participation_writer_lanes", &CampaignsConfig::participation_writer_lanes,
               "group-commit writer threads per phase (reserve, finish)")
        .Field("participation_batch_max", &CampaignsConfig::participation_batch_max,
               "most participation records per transaction")
        .Field("participation_linger_us", &CampaignsConfig::participation_linger_us,
               "microseconds a writer waits for company")
        .Field("customer_rate_per_s", &CampaignsConfig::customer_rate_per_s,
               "participations per second per customer (0: off)")
        .Field("customer_burst", &CampaignsConfig::customer_burst, "per-customer burst")
        .Field("campaign_rate_per_s", &CampaignsConfig::campaign_rate_per_s,
               "participations per second per campaign (0: off)")
        .Field("campaign_burst", &CampaignsConfig::campaign_burst, "per-campaign burst")
        .Field("campaign_cache_ms", &CampaignsConfig::campaign_cache_ms,
               "how long a campaign read for participation is cached")
        .Field("sold_out_ttl_ms", &CampaignsConfig::sold_out_ttl_ms,
               "how long a sold-out campaign is refused from memory")
        .Field("charge_budget", &CampaignsConfig::charge_budget,
               "take reward costs from the campaign's ledger budget")
        .Field("recovery_after_s", &CampaignsConfig::recovery_after_s,
               "complete PENDING participations older than this (0: no recovery sweep)")
        .Field("batch_grant_enabled", &CampaignsConfig::batch_grant_enabled,
               "run BATCH_GRANT campaigns in the background in this process")
        .Field("batch_grant_in_flight", &CampaignsConfig::batch_grant_in_flight,
               "batch grants: Ledger.Grant calls kept in flight")
        .Field("batch_grant_issuer_threads", &CampaignsConfig::batch_grant_issuer_threads,
               "batch grants: threads granting coupons or several rewards")
        .Field("batch_grant_chunk", &CampaignsConfig::batch_grant_chunk,
               "batch grants: items read and outcomes written per statement")
        .Field("batch_grant_lease_s", &CampaignsConfig::batch_grant_lease_s,
               "batch grants: seconds a runner's lease on a batch lasts without renewal")
        .Field("batch_grant_poll_ms", &CampaignsConfig::batch_grant_poll_ms,
               "batch grants: milliseconds between looks for runnable batches")
        .Field("batch_grant_owner", &CampaignsConfig::batch_grant_owner,
               "batch grants: this instance's name in the leases (empty: host/grpc_address)")
        .Field("business_events_topic", &CampaignsConfig::business_events_topic,
               "topic of business events read for asset-growth tasks (empty: no consumer)")
        .Field("asset_growth_group", &CampaignsConfig::asset_growth_group,
               "Kafka consumer group of the asset-growth consumer")
        .Field("asset_growth_sweep_s", &CampaignsConfig::asset_growth_sweep_s,
               "seconds between evaluations of every active asset-growth enrolment (0: off)")
        .Field("asset_growth_grace_h", &CampaignsConfig::asset_growth_grace_h,
               "hours after its window an asset-growth enrolment is still evaluated")
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
  MKT_RETURN_IF_ERROR(InRange("points_unit_cost_fen", c.points_unit_cost_fen, 0, 1'000'000));
  MKT_RETURN_IF_ERROR(InRange("participation_threads", c.participation_threads, 1, 4096));
  MKT_RETURN_IF_ERROR(InRange("participation_queue", c.participation_queue, 1, 1'000'000));
  MKT_RETURN_IF_ERROR(InRange("participation_writer_lanes", c.participation_writer_lanes, 1, 64));
  MKT_RETURN_IF_ERROR(InRange("participation_batch_max", c.participation_batch_max, 1, 10000));
  MKT_RETURN_IF_ERROR(InRange("participation_linger_us", c.participation_linger_us, 0, 1'000'000));
  MKT_RETURN_IF_ERROR(InRange("rewards_timeout_ms", c.rewards_timeout_ms, 1, 600'000));
  MKT_RETURN_IF_ERROR(InRange("segments_timeout_ms", c.segments_timeout_ms, 1, 600'000));
  MKT_RETURN_IF_ERROR(InRange("campaign_cache_ms", c.campaign_cache_ms, 0, 3'600'000));
  MKT_RETURN_IF_ERROR(InRange("sold_out_ttl_ms", c.sold_out_ttl_ms, 0, 3'600'000));
  MKT_RETURN_IF_ERROR(InRange("recovery_after_s", c.recovery_after_s, 0, 86'400));
  MKT_RETURN_IF_ERROR(InRange("asset_growth_sweep_s", c.asset_growth_sweep_s, 0, 86'400));
  MKT_RETURN_IF_ERROR(InRange("asset_growth_grace_h", c.asset_growth_grace_h, 0, 24 * 366));
  MKT_RETURN_IF_ERROR(InRange("reference_timeout_ms", c.reference_timeout_ms, 1, 600'000));
  MKT_RETURN_IF_ERROR(InRange("reference_cache_ms", c.reference_cache_ms, 0, 3'600'000));
  MKT_RETURN_IF_ERROR(InRange("batch_grant_in_flight", c.batch_grant_in_flight, 1, 10'000));
  MKT_RETURN_IF_ERROR(InRange("batch_grant_issuer_threads", c.batch_grant_issuer_threads, 1, 1024));
  MKT_RETURN_IF_ERROR(InRange("batch_grant_chunk", c.batch_grant_chunk, 1, 10'000));
  MKT_RETURN_IF_ERROR(InRange("batch_grant_lease_s", c.batch_grant_lease_s, 3, 3600));
  MKT_RETURN_IF_ERROR(InRange("batch_grant_poll_ms", c.batch_grant_poll_ms, 10, 3'600'000));
  if (c.reference_source == "services") {
    // A catalog file that is silently ignored would make a stack look configured when it is not.
    if (!c.catalog_file.empty()) {
      return InvalidArgument("catalog_file",
                             "catalog_file is read only with reference_source=catalog");
    }
    if (c.segments_address.empty() || c.rewards_address.empty()) {
      return InvalidArgument("reference_source",
                             "reference_source=services needs segments_address and "
                             "rewards_address");
    }
  } else if (c.reference_source != "catalog") {
    return InvalidArgument(
        "reference_source",
        "reference_source must be services or catalog (got '" + c.reference_source + "')");
  }
  if (c.customer_rate_per_s < 0 || c.campaign_rate_per_s < 0 || c.customer_burst < 1 ||
      c.campaign_burst < 1) {
    return InvalidArgument("customer_rate_per_s",
                           "rates must be 0 (off) or more and bursts at least 1");
  }
  return absl::OkStatus();
}

}  // namespace mkt::campaigns
