// Configuration of the segments service; defaults work on the local stack (see ./dev).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "libs/config/config.h"

namespace mkt::segments {

struct SegmentsConfig {
  std::string grpc_address = "127.0.0.1:20041";
  std::string metrics_address = "127.0.0.1:9441";
  std::string pg_dsn = "host=127.0.0.1 port=25432 user=postgres dbname=segments";
  int64_t pg_pool_size = 6;
  std::string kafka_bootstrap = "127.0.0.1:29092";
  std::string profiles_topic = "mkt.customer-profiles.v1";
  std::string business_events_topic = "mkt.business-events.v1";
  std::string dead_letter_topic = "mkt.dead-letters.v1";
  // Every replica consumes every profile update (each keeps its own index), so each replica has
  // its own consumer group: give replicas distinct ids.
  std::string replica_id = "0";
  // Seconds between RFM scoring runs; 0 turns the job off (run it on one replica only).
  int64_t rfm_interval_s = 3600;
  // Every replica applies every replica's writes (imports, RFM tags, new customers) from the
  // change log this often (decision 037).
  int64_t changes_poll_ms = 1000;
  // Change rows are kept this long after their transaction ended; a replica stalled for longer
  // re-reads every customer.
  int64_t changes_retention_s = 3600;
  int64_t worker_threads = 4;
  int64_t worker_queue = 10000;
  std::string log_format = "auto";
  std::string log_level = "info";
};

const config::Schema<SegmentsConfig>& SegmentsConfigSchema();

// Returns INVALID_ARGUMENT naming the first key whose value is out of range.
absl::Status ValidateSegmentsConfig(const SegmentsConfig& config);

}  // namespace mkt::segments
