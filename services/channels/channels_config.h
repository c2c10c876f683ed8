// Configuration of the channels service (defaults work on the local stack, see ./dev).
#pragma once

#include <cstdint>
#include <string>

#include "libs/config/config.h"

namespace mkt::channels {

struct ChannelsConfig {
  std::string grpc_address = "127.0.0.1:20061";
  std::string metrics_address = "127.0.0.1:9461";
  std::string pg_dsn = "host=127.0.0.1 port=25432 user=postgres dbname=channels";
  int64_t pg_pool_size = 4;
  std::string kafka_bootstrap = "127.0.0.1:29092";
  // 64 hex characters; encrypts channel secrets at rest. Required: no default.
  std::string secret_key;
  int64_t worker_threads = 4;
  int64_t worker_queue = 1000;
  std::string log_format = "auto";
  std::string log_level = "info";
};

const config::Schema<ChannelsConfig>& ChannelsConfigSchema();

}  // namespace mkt::channels
