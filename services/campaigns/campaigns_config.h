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
  int64_t pg_pool_size = 12;
  std::string kafka_bootstrap = "127.0.0.1:29092";
  int64_t worker_threads = 8;
  int64_t worker_queue = 2000;
  // How often the scheduler looks for campaigns to start or end; 0 turns it off.
  int64_t scheduler_interval_ms = 1000;
  // Expected uptake for cost forecasts when the operator gives none.
  int64_t default_uptake_bp = 1000;
  // What one point granted by an EVENT_TRIGGER campaign costs its budget, in fen (decision 034):
  // the worth of a point to the bank, as a BENEFIT_POINTS template's unit cost.
  int64_t points_unit_cost_fen = 1;
  // Where segments and benefit templates are looked up while configuring a campaign:
  // "services" asks the segments service (segments_address) and the rewards Benefits API
  // (rewards_address); "catalog" reads catalog_file, or the built-in demo set when it is empty
  // (tests and a stack without those services).
  std::string reference_source = "services";
  std::string catalog_file;
  // Deadline of one GetSegment/Count/GetTemplate call, and how long an answer is reused.
  int64_t reference_timeout_ms = 1000;
  int64_t reference_cache_ms = 5000;
  // Participation (decision 013).
  // The rewards ledger (marketing.rewards.v1.Ledger) that participations grant through.
  std::string rewards_address = "127.0.0.1:20071";
  int64_t rewards_timeout_ms = 3000;
  // The segments service for audience membership; empty: membership_file (or, without it, every
  // customer is in every audience — the local stack only).
  std::string segments_address = "127.0.0.1:20041";
  std::string membership_file;
  // The events service, whose registry of event types trigger expressions are checked against
  // when reference_source is "services"; empty: not checked here (the events service still
  // refuses a campaign it cannot turn into a rule, after approval).
  std::string events_address = "127.0.0.1:20051";
  int64_t segments_timeout_ms = 500;
  // Threads running participations (each blocks on the group commit and the ledger).
  int64_t participation_threads = 64;
  int64_t participation_queue = 20000;
  // Group commit of participation records: writer lanes per phase, most records per transaction.
  int64_t participation_writer_lanes = 2;
  int64_t participation_batch_max = 128;
  int64_t participation_linger_us = 300;
  // Token buckets (requests per second and burst); 0 turns a bucket off.
  double customer_rate_per_s = 5;
  double customer_burst = 10;
  double campaign_rate_per_s = 0;
  double campaign_burst = 1000;
  int64_t campaign_cache_ms = 1000;
  int64_t sold_out_ttl_ms = 10000;
  bool charge_budget = true;
  // PENDING participations older than this are completed by the recovery sweep; 0: no sweep.
  int64_t recovery_after_s = 30;
  // Asset-growth tasks (decision 014): the consumer of asset_balance business events (its own
  // group), how often every active enrolment is evaluated again (days carried forward, the
  // window's end) and PENDING tier grants are retried, and how long after its window an
  // enrolment is still evaluated. An empty topic turns the consumer off.
  std::string business_events_topic = "mkt.business-events.v1";
  std::string asset_growth_group = "campaigns-asset-growth";
  int64_t asset_growth_sweep_s = 600;
  int64_t asset_growth_grace_h = 72;
  // Batch grants (BATCH_GRANT campaigns): the background runner; false turns it off here.
  bool batch_grant_enabled = true;
  // Ledger.Grant calls kept in flight (one points/cash/chance reward) and RewardIssuer threads
  // (coupons, several rewards).
  int64_t batch_grant_in_flight = 256;
  int64_t batch_grant_issuer_threads = 32;
  // PENDING items read and outcomes written per statement.
  int64_t batch_grant_chunk = 1000;
  // How long a runner's lease on a batch lasts without renewal (a crashed replica's batches are
  // taken over after it), and how often runnable batches are looked for.
  int64_t batch_grant_lease_s = 30;
  int64_t batch_grant_poll_ms = 1000;
  // This instance in the leases; empty: "<hostname>/<grpc_address>" (stable across restarts).
  std::string batch_grant_owner;
  std::string log_format = "auto";
  std::string log_level = "info";
};

const config::Schema<CampaignsConfig>& CampaignsConfigSchema();

// Returns INVALID_ARGUMENT naming the first key whose value is out of range.
absl::Status ValidateCampaignsConfig(const CampaignsConfig& config);

}  // namespace mkt::campaigns
