// Configuration of the rewards (ledger) service; defaults work on the local stack (see ./dev).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "libs/config/config.h"

namespace mkt::rewards {

struct RewardsConfig {
  std::string grpc_address = "127.0.0.1:20071";
  std::string metrics_address = "127.0.0.1:9471";
  std::string pg_dsn = "host=127.0.0.1 port=25432 user=postgres dbname=rewards";
  int64_t pg_pool_size = 8;
  std::string kafka_bootstrap = "127.0.0.1:29092";
  // Grants block a worker until their group commit, so there are many more workers than cores.
  int64_t worker_threads = 32;
  int64_t worker_queue = 20000;
  int64_t batch_writers = 2;
  int64_t batch_max = 256;
  int64_t batch_linger_us = 2000;
  // 0 turns the job off (another replica runs it).
  int64_t expiry_interval_s = 60;
  int64_t pending_sweep_interval_s = 5;
  // Benefits (decision 011). The QR signing key is a secret: set it per environment.
  std::string qr_signing_key = "local-dev-qr-signing-key-change-me-0123456789";
  int64_t qr_ttl_s = 60;
  int64_t coupon_lock_ttl_s = 900;
  // How long a benefit template read is reused by issue and wallet calls; a status change made by
  // another replica is seen within this long.
  int64_t template_cache_ms = 2000;
  // How long a wallet read is answered from memory (0: off). Changes through this replica are
  // seen at once; changes through another replica within this long.
  int64_t wallet_cache_ms = 1000;
  int64_t coupon_expiry_interval_s = 60;
  int64_t benefits_repair_interval_s = 10;
  bool consume_payout_results = true;
  // Decision 034: each published campaign version's budget_cap_fen funds the campaign's budget
  // (campaign_budgets.h). An empty topic turns it off (budgets are then funded with Ledger.Fund).
  std::string campaign_changes_topic = "mkt.campaign-changes.v1";
  std::string campaign_budgets_group = "rewards-campaign-budgets";
  // Decision 035: this long after a campaign ended, what its budget holds unreserved goes back to
  // its org's funding account. The delay lets late grants land first: events that happened
  // within the window but arrive later, grants the events service still retries.
  int64_t budget_release_after_s = 3 * 86'400;
  int64_t budget_release_interval_s = 60;
  // Third-party fulfilment (decision 011): retries with exponential backoff.
  int64_t fulfilment_backoff_base_s = 30;
  int64_t fulfilment_backoff_max_s = 1800;
  int64_t fulfilment_max_attempts = 5;
  int64_t fulfilment_result_timeout_s = 600;
  int64_t fulfilment_interval_s = 5;
  bool consume_fulfilment_results = true;
  std::string log_format = "auto";
  std::string log_level = "info";
};

const config::Schema<RewardsConfig>& RewardsConfigSchema();

// Returns INVALID_ARGUMENT naming the first key whose value is out of range.
absl::Status ValidateRewardsConfig(const RewardsConfig& config);

}  // namespace mkt::rewards
