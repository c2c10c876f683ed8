#include "services/rewards/rewards_config.h"

#include "libs/core/status.h"

namespace mkt::rewards {
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

const config::Schema<RewardsConfig>& RewardsConfigSchema() {
  static const auto* schema = [] {
    auto* s = new config::Schema<RewardsConfig>("rewards");
    s->Field("grpc_address", &RewardsConfig::grpc_address, "gRPC listen address (host:port)")
        .Field("metrics_address", &RewardsConfig::metrics_address,
               "Prometheus /metrics listen address (host:port)")
        .Field("pg_dsn", &RewardsConfig::pg_dsn, "libpq connection string of the rewards database")
        .Field("pg_pool_size", &RewardsConfig::pg_pool_size,
               "PostgreSQL connections in the pool (batch writers, reads and background jobs)")
        .Field("kafka_bootstrap", &RewardsConfig::kafka_bootstrap,
               "Kafka bootstrap servers for the outbox relay")
        .Field(
            "worker_threads", &RewardsConfig::worker_threads,
            "threads running blocking gRPC calls (grants wait for their group commit without one)")
        .Field("worker_queue", &RewardsConfig::worker_queue,
               "calls that may wait for a worker before RESOURCE_EXHAUSTED")
        .Field("batch_writers", &RewardsConfig::batch_writers,
               "group-commit writer threads, each running one ledger transaction at a time")
        .Field("batch_max", &RewardsConfig::batch_max,
               "most requests applied in one ledger transaction")
        .Field("batch_linger_us", &RewardsConfig::batch_linger_us,
               "microseconds a writer waits for more requests after the first one")
        .Field("expiry_interval_s", &RewardsConfig::expiry_interval_s,
               "seconds between points-expiry runs (0: off)")
        .Field("pending_sweep_interval_s", &RewardsConfig::pending_sweep_interval_s,
               "seconds between voiding timed-out pending transfers (0: off)")
        .Secret("qr_signing_key", &RewardsConfig::qr_signing_key,
                "HMAC key of offline QR tokens (at least 32 bytes; same on every replica)")
        .Field("qr_ttl_s", &RewardsConfig::qr_ttl_s, "seconds a QR token may be used (1..120)")
        .Field("template_cache_ms", &RewardsConfig::template_cache_ms,
               "milliseconds a benefit template read is reused by issue and wallet calls; a "
               "status change made through another replica is seen within this long (0..60000)")
        .Field("wallet_cache_ms", &RewardsConfig::wallet_cache_ms,
               "milliseconds a wallet read is answered from memory (0: off); a change through "
               "this replica is seen at once, one through another replica within this long "
               "(0..60000)")
        .Field("coupon_lock_ttl_s", &RewardsConfig::coupon_lock_ttl_s,
               "seconds an online checkout lock holds a coupon before it is released")
        .Field("coupon_expiry_interval_s", &RewardsConfig::coupon_expiry_interval_s,
               "seconds between coupon expiry / lock-timeout runs (0: off)")
        .Field("benefits_repair_interval_s", &RewardsConfig::benefits_repair_interval_s,
               "seconds between applying coupon/payout ledger work a crash left undone (0: off)")
        .Field("consume_payout_results", &RewardsConfig::consume_payout_results,
               "consume mkt.payout-results.v1 from core banking")
        .Field("campaign_changes_topic", &RewardsConfig::campaign_changes_topic,
               "campaign changes whose published budget caps fund campaign budgets (empty: off)")
        .Field("campaign_budgets_group", &RewardsConfig::campaign_budgets_group,
               "consumer group of the campaign budget funding (shared by the replicas)")
        .Field("budget_release_after_s", &RewardsConfig::budget_release_after_s,
               "seconds after a campaign's end before its unspent budget goes back to its org")
        .Field("budget_release_interval_s", &RewardsConfig::budget_release_interval_s,
               "seconds between runs releasing ended campaigns' unspent budgets (0: off)")
        .Field("fulfilment_backoff_base_s", &RewardsConfig::fulfilment_backoff_base_s,
               "seconds before the 2nd attempt of a third-party fulfilment (doubling after)")
        .Field("fulfilment_backoff_max_s", &RewardsConfig::fulfilment_backoff_max_s,
               "longest wait between two attempts of a third-party fulfilment")
        .Field("fulfilment_max_attempts", &RewardsConfig::fulfilment_max_attempts,
               "attempts before a third-party fulfilment fails and its issue is compensated")
        .Field("fulfilment_result_timeout_s", &RewardsConfig::fulfilment_result_timeout_s,
               "seconds a supplier may take to answer an attempt before it is retried")
        .Field("fulfilment_interval_s", &RewardsConfig::fulfilment_interval_s,
               "seconds between runs of the fulfilment retry scheduler (0: off)")
        .Field("consume_fulfilment_results", &RewardsConfig::consume_fulfilment_results,
               "consume mkt.fulfilment-results.v1 from suppliers")
        .Field("log_format", &RewardsConfig::log_format, "auto, text or json")
        .Field("log_level", &RewardsConfig::log_level, "trace, debug, info, warn or error");
    return s;
  }();
  return *schema;
}

absl::Status ValidateRewardsConfig(const RewardsConfig& c) {
  MKT_RETURN_IF_ERROR(InRange("pg_pool_size", c.pg_pool_size, 1, 256));
  MKT_RETURN_IF_ERROR(InRange("worker_threads", c.worker_threads, 1, 1024));
  MKT_RETURN_IF_ERROR(InRange("worker_queue", c.worker_queue, 1, 1'000'000));
  MKT_RETURN_IF_ERROR(InRange("batch_writers", c.batch_writers, 1, 64));
  MKT_RETURN_IF_ERROR(InRange("batch_max", c.batch_max, 1, 10'000));
  MKT_RETURN_IF_ERROR(InRange("batch_linger_us", c.batch_linger_us, 0, 1'000'000));
  MKT_RETURN_IF_ERROR(InRange("expiry_interval_s", c.expiry_interval_s, 0, 86'400));
  MKT_RETURN_IF_ERROR(InRange("pending_sweep_interval_s", c.pending_sweep_interval_s, 0, 86'400));
  MKT_RETURN_IF_ERROR(InRange("qr_ttl_s", c.qr_ttl_s, 1, 120));
  MKT_RETURN_IF_ERROR(InRange("coupon_lock_ttl_s", c.coupon_lock_ttl_s, 10, 82'800));
  MKT_RETURN_IF_ERROR(InRange("template_cache_ms", c.template_cache_ms, 0, 60'000));
  MKT_RETURN_IF_ERROR(InRange("wallet_cache_ms", c.wallet_cache_ms, 0, 60'000));
  MKT_RETURN_IF_ERROR(InRange("coupon_expiry_interval_s", c.coupon_expiry_interval_s, 0, 86'400));
  MKT_RETURN_IF_ERROR(
      InRange("benefits_repair_interval_s", c.benefits_repair_interval_s, 0, 86'400));
  MKT_RETURN_IF_ERROR(InRange("fulfilment_backoff_base_s", c.fulfilment_backoff_base_s, 1, 86'400));
  MKT_RETURN_IF_ERROR(InRange("fulfilment_backoff_max_s", c.fulfilment_backoff_max_s,
                              c.fulfilment_backoff_base_s, 7 * 86'400));
  MKT_RETURN_IF_ERROR(InRange("fulfilment_max_attempts", c.fulfilment_max_attempts, 1, 100));
  MKT_RETURN_IF_ERROR(
      InRange("fulfilment_result_timeout_s", c.fulfilment_result_timeout_s, 1, 7 * 86'400));
  MKT_RETURN_IF_ERROR(InRange("fulfilment_interval_s", c.fulfilment_interval_s, 0, 86'400));
  MKT_RETURN_IF_ERROR(InRange("budget_release_after_s", c.budget_release_after_s, 0, 366 * 86'400));
  MKT_RETURN_IF_ERROR(InRange("budget_release_interval_s", c.budget_release_interval_s, 0, 86'400));
  if (c.qr_signing_key.size() < 32) {
    return InvalidArgument("qr_signing_key", "qr_signing_key must be at least 32 bytes");
  }
  if (c.pg_pool_size <= c.batch_writers) {
    // Each writer holds a connection for its whole transaction; reads need some left over.
    return InvalidArgument("pg_pool_size",
                           "pg_pool_size must be larger than batch_writers, so reads and the "
                           "background jobs still get a connection");
  }
  return absl::OkStatus();
}

}  // namespace mkt::rewards
