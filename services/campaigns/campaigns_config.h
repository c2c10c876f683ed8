// Configuration of the campaigns service; defaults work on the local stack (see ./dev).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "libs/config/config.h"

namespace mkt::campaigns {

struct CampaignsConfig {
  std::string grpc_address = "127.0.0.1:20031";
  std::string metrics_address = "127.0.0.1:9431";
  std::string pg_dsn = "host=127.0.0.1 port=25432 user=postgres dbname=campaigns";
  int64_t pg_pool_size = 8;
  std::string kafka_bootstrap = "127.0.0.1:29092";
  int64_t worker_threads = 8;
  int64_t worker_queue = 2000;
  // How often the scheduler looks for campaigns to start or end; 0 turns it off.
  int64_t scheduler_interval_ms = 1000;
  // Expected uptake for cost forecasts when the operator gives none.
  int64_t default_uptake_bp = 1000;
  // Segments and benefit templates until the segments/rewards APIs serve them: a JSON file
  // (see reference_data.h); empty: the built-in demo set.
  std::string catalog_file;
  std::string log_format = "auto";
  std::string log_level = "info";
};

const config::Schema<CampaignsConfig>& CampaignsConfigSchema();

// Returns INVALID_ARGUMENT naming the first key whose value is out of range.
absl::Status ValidateCampaignsConfig(const CampaignsConfig& config);

}  // namespace mkt::campaigns
