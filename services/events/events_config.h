// Configuration of the events service; defaults work on the local stack (see ./dev).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "libs/config/config.h"

namespace mkt::events {

struct EventsConfig {
  std::string grpc_address = "127.0.0.1:20051";
  std::string metrics_address = "127.0.0.1:9451";
  std::string pg_dsn = "host=127.0.0.1 port=25432 user=postgres dbname=events";
  int64_t pg_pool_size = 6;
  std::string kafka_bootstrap = "127.0.0.1:29092";
  std::string events_topic = "mkt.business-events.v1";
  std::string campaign_changes_topic = "mkt.campaign-changes.v1";
  std::string dead_letter_topic = "mkt.dead-letters.v1";
  std::string consumer_group = "events";
  std::string rewards_address = "127.0.0.1:20071";
  int64_t batch_max = 1000;
  int64_t batch_linger_ms = 5;
  int64_t grants_in_flight = 256;
  int64_t grants_per_call = 64;
  int64_t grants_claim_batch = 1000;
  int64_t grants_finish_batch = 1000;
  // Seconds a grant refused with ACCOUNT_NOT_FOUND (the campaign's budget not funded yet) is
  // retried, from the first such refusal, before it is recorded as refused.
  int64_t unfunded_retry_s = 1800;
  // Seconds after its end an ended campaign's rule still matches the events that occurred before
  // the end and arrive late (T+1 files, consumer lag); in line with budget_release_after_s.
  int64_t late_events_s = 259'200;
  int64_t worker_threads = 4;
  int64_t worker_queue = 1000;
  // Where conditions' `customer.tag("x")` values come from: the segments service...
  std::string segments_address = "127.0.0.1:20041";
  int64_t segments_timeout_ms = 2000;
  // ...unless this file of "customer,tag,value" lines (numbers are numbers) is named: tests and
  // tools without a segments service.
  std::string tags_file;
  std::string log_format = "auto";
  std::string log_level = "info";
};

const config::Schema<EventsConfig>& EventsConfigSchema();
absl::Status ValidateEventsConfig(const EventsConfig& config);

}  // namespace mkt::events
