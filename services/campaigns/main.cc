// mkt-campaigns: campaign configuration, approval, publishing, the org reference data, and
// participation (claims, draws, exchanges; eligibility and the coupon centre).
#include <unistd.h>

#include <atomic>
#include <optional>
#include <thread>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/time/clock.h"
#include "libs/core/ids.h"
#include "libs/core/worker_pool.h"
#include "libs/kafka/kafka.h"
#include "libs/kafka/outbox.h"
#include "libs/log/log.h"
#include "libs/metrics/metrics.h"
#include "libs/pg/migrations.h"
#include "libs/pg/pool.h"
#include "libs/rpc/actor.h"
#include "libs/rpc/client.h"
#include "libs/rpc/server.h"
#include "marketing/events/v1/events.grpc.pb.h"
#include "services/campaigns/asset_growth_service.h"
#include "services/campaigns/asset_growth_store.h"
#include "services/campaigns/audience.h"
#include "services/campaigns/batch_grant_runner.h"
#include "services/campaigns/batch_grant_service.h"
#include "services/campaigns/batch_grant_store.h"
#include "services/campaigns/campaign_scheduler.h"
#include "services/campaigns/campaign_service.h"
#include "services/campaigns/campaigns_config.h"
#include "services/campaigns/campaigns_grpc.h"
#include "services/campaigns/participation_grpc.h"
#include "services/campaigns/participation_service.h"
#include "services/campaigns/participation_store.h"
#include "services/campaigns/pg_campaign_store.h"
#include "services/campaigns/reference_data.h"
#include "services/campaigns/remote_reference.h"
#include "services/campaigns/reward_issuer.h"
#include "services/events/event_type_cache.h"
#include "spdlog/spdlog.h"

extern char** environ;

namespace {

using namespace mkt;

int Fail(const absl::Status& status) {
  spdlog::critical("campaigns cannot start: {}", status.message());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  rpc::PrepareServiceProcess();
  int exit_code = 0;
  std::optional<campaigns::CampaignsConfig> cfg =
      config::LoadForMain(campaigns::CampaignsConfigSchema(), argc, argv, environ, &exit_code,
                          &campaigns::ValidateCampaignsConfig);
  if (!cfg) return exit_code;
  log::Init("campaigns", log::ParseFormat(cfg->log_format), cfg->log_level);

  // Segments and benefit templates: the neighbours' APIs, or the in-memory catalog. Configuring a
  // campaign must not pick a retired template; charging a running one needs the real cost of any.
  std::unique_ptr<campaigns::SegmentDirectory> segments;
  std::unique_ptr<campaigns::BenefitCatalog> benefits, charged_benefits;
  if (cfg->reference_source == "services") {
    const campaigns::RemoteReferenceOptions options{
        .timeout = absl::Milliseconds(cfg->reference_timeout_ms),
        .cache_ttl = absl::Milliseconds(cfg->reference_cache_ms)};
    auto rewards_channel = rpc::Connect(cfg->rewards_address);
    segments = std::make_unique<campaigns::GrpcSegmentDirectory>(
        rpc::Connect(cfg->segments_address), options);
    benefits = std::make_unique<campaigns::GrpcBenefitCatalog>(rewards_channel, options,
                                                               /*hide_retired=*/true);
    charged_benefits = std::make_unique<campaigns::GrpcBenefitCatalog>(rewards_channel, options,
                                                                       /*hide_retired=*/false);
    spdlog::info("reference data from segments at {} and rewards at {}", cfg->segments_address,
                 cfg->rewards_address);
  } else {
    auto reference = campaigns::LoadReferenceData(cfg->catalog_file);
    if (!reference.ok()) return Fail(reference.status());
    spdlog::info("reference data from {}",
                 cfg->catalog_file.empty() ? "the built-in demo catalog" : cfg->catalog_file);
    segments = std::move(reference->segments);
    benefits = std::move(reference->benefits);
  }
  const campaigns::BenefitCatalog& participation_benefits =
      charged_benefits ? *charged_benefits : *benefits;
  auto pool = pg::Pool::Connect({.dsn = cfg->pg_dsn, .size = static_cast<int>(cfg->pg_pool_size)});
  if (!pool.ok()) return Fail(pool.status());
  if (auto s = pg::ApplyMigrations(**pool,
                                   {&kafka::OutboxMigrations(), &campaigns::CampaignsMigrations()});
      !s.ok()) {
    return Fail(s);
  }
  if (auto s = metrics::StartExposer(cfg->metrics_address); !s.ok()) return Fail(s);

  const kafka::ClientOptions kafka_options{.bootstrap_servers = cfg->kafka_bootstrap,
                                           .client_id = "campaigns"};
  auto producer = kafka::Producer::Create(kafka_options);
  if (!producer.ok()) return Fail(producer.status());
  if (auto s = kafka::EnsureTopic(kafka_options, campaigns::kCampaignChangesTopic, 3); !s.ok()) {
    // The relay keeps retrying; a broker that is down must not keep configuration offline.
    spdlog::warn("cannot create topic {} yet: {}", campaigns::kCampaignChangesTopic, s.message());
  }
  if (auto s = kafka::EnsureTopic(kafka_options, campaigns::kParticipationsTopic, 6); !s.ok()) {
    spdlog::warn("cannot create topic {} yet: {}", campaigns::kParticipationsTopic, s.message());
  }
  kafka::OutboxRelay relay(**pool, **producer);
  std::thread relay_thread([&relay] { relay.Run(); });
  // Every return from here on stops each thread started (a joinable one would abort the process);
  // a return before `shutdown` below does it in reverse order, the relay last.
  absl::Cleanup stop_relay = [&] {
    relay.Stop();
    relay_thread.join();
  };

  // Trigger expressions are checked against the events service's registry of event types.
  std::unique_ptr<events::EventTypeCache> event_types;
  if (cfg->reference_source == "services" && !cfg->events_address.empty()) {
    std::shared_ptr<::marketing::events::v1::EventsAdmin::Stub> stub =
        ::marketing::events::v1::EventsAdmin::NewStub(rpc::Connect(cfg->events_address));
    const absl::Duration timeout = absl::Milliseconds(cfg->reference_timeout_ms);
    event_types = std::make_unique<events::EventTypeCache>(
        [stub, timeout]() -> absl::StatusOr<std::vector<::marketing::events::v1::EventType>> {
          grpc::ClientContext context;
          rpc::PrepareClientContext(context, timeout, NewRequestId());
          rpc::AttachActor(context, tenancy::SystemActor("campaigns"));
          ::marketing::events::v1::ListEventTypesResponse response;
          grpc::Status status = stub->ListEventTypes(
              &context, ::marketing::events::v1::ListEventTypesRequest(), &response);
          if (!status.ok()) return rpc::FromGrpcStatus(status);
          return std::vector<::marketing::events::v1::EventType>(response.event_types().begin(),
                                                                 response.event_types().end());
        },
        SystemClock());
    spdlog::info("trigger expressions checked against the event types of {}", cfg->events_address);
  }

  campaigns::PgCampaignStore store(**pool);
  campaigns::CampaignService service(
      store, *segments, *benefits, SystemClock(),
      {.default_uptake_bp = static_cast<int32_t>(cfg->default_uptake_bp),
       .points_unit_cost_fen = cfg->points_unit_cost_fen,
       .event_types = event_types.get()});
  std::optional<campaigns::CampaignScheduler> scheduler;
  if (cfg->scheduler_interval_ms > 0) {
    scheduler.emplace(service, absl::Milliseconds(cfg->scheduler_interval_ms));
  }

  // Participation: audience, ledger, group-committed records, the recovery sweep.
  std::unique_ptr<campaigns::AudienceMembership> audience;
  if (!cfg->segments_address.empty()) {
    audience = campaigns::NewSegmentsMembership(rpc::Connect(cfg->segments_address),
                                                absl::Milliseconds(cfg->segments_timeout_ms));
  } else if (!cfg->membership_file.empty()) {
    auto loaded = campaigns::LoadMembership(cfg->membership_file);
    if (!loaded.ok()) return Fail(loaded.status());
    audience = *std::move(loaded);
  } else {
    spdlog::warn(
        "no segments_address and no membership_file: every customer is in every "
        "audience (local stack only)");
    auto open = std::make_unique<campaigns::InMemoryMembership>();
    open->SetAllOpen(true);
    audience = std::move(open);
  }
  // Coupons are granted as instances (a code, in the wallet, usable at checkout); the ledger and
  // the benefits API are both the rewards service's.
  auto rewards_grants = rpc::Connect(cfg->rewards_address);
  auto issuer = campaigns::NewBenefitsRewardIssuer(rewards_grants, rewards_grants,
                                                   absl::Milliseconds(cfg->rewards_timeout_ms));
  const campaigns::GroupCommitter::Options commit_options{
      .lanes = static_cast<int>(cfg->participation_writer_lanes),
      .max_items = static_cast<int>(cfg->participation_batch_max),
      .linger = absl::Microseconds(cfg->participation_linger_us)};
  std::optional<campaigns::GroupCommitter> reserve_commits, finish_commits;
  reserve_commits.emplace(**pool, commit_options);
  finish_commits.emplace(**pool, commit_options);
  campaigns::PgParticipationStore participation_store(**pool, *reserve_commits, *finish_commits);
  campaigns::ParticipationService participation(
      store, participation_store, *audience, participation_benefits, *issuer, SystemClock(),
      {.customer_rate_per_s = cfg->customer_rate_per_s,
       .customer_burst = cfg->customer_burst,
       .campaign_rate_per_s = cfg->campaign_rate_per_s,
       .campaign_burst = cfg->campaign_burst,
       .campaign_cache_ttl = absl::Milliseconds(cfg->campaign_cache_ms),
       .sold_out_ttl = absl::Milliseconds(cfg->sold_out_ttl_ms),
       .charge_budget = cfg->charge_budget});
  std::atomic<bool> stop_recovery{false};
  std::thread recovery_thread([&] {
    if (cfg->recovery_after_s <= 0) return;
    while (!stop_recovery) {
      for (int i = 0; i < 50 && !stop_recovery; ++i) absl::SleepFor(absl::Milliseconds(100));
      if (stop_recovery) break;
      auto done = participation.RecoverPending(absl::Seconds(cfg->recovery_after_s));
      if (!done.ok()) {
        spdlog::warn("participation recovery failed (retried): {}", done.status());
      } else if (*done > 0) {
        spdlog::info("completed {} pending participations", *done);
      }
    }
  });
  absl::Cleanup stop_recovery_thread = [&] {
    stop_recovery = true;
    recovery_thread.join();
  };

  // Asset-growth tasks (decision 014): balances from asset_balance events, tiers granted as
  // they are reached; a sweep re-evaluates enrolments and retries grants left PENDING.
  campaigns::PgAssetGrowthStore growth_store(**pool);
  campaigns::AssetGrowthService growth(
      store, growth_store, participation_benefits, *issuer, SystemClock(),
      {.grace = absl::Hours(cfg->asset_growth_grace_h),
       .campaign_cache_ttl = absl::Milliseconds(cfg->campaign_cache_ms),
       .charge_budget = cfg->charge_budget});
  std::unique_ptr<kafka::Consumer> growth_consumer;
  if (!cfg->business_events_topic.empty()) {
    if (auto s = kafka::EnsureTopic(kafka_options, cfg->business_events_topic, 3); !s.ok()) {
      spdlog::warn("cannot create topic {} yet: {}", cfg->business_events_topic, s.message());
    }
    auto consumer = kafka::Consumer::Create(
        {.client = {.bootstrap_servers = cfg->kafka_bootstrap, .client_id = "campaigns"},
         .group_id = cfg->asset_growth_group,
         .topics = {cfg->business_events_topic},
         .metrics_name = "campaigns_asset_growth"},
        producer->get());
    if (!consumer.ok()) return Fail(consumer.status());
    growth_consumer = *std::move(consumer);
  }
  std::thread growth_thread([&] {
    if (growth_consumer) {
      growth_consumer->Run(
          [&](const kafka::IncomingMessage& m) { return growth.HandleMessage(m); });
    }
  });
  std::atomic<bool> stop_growth_sweep{false};
  std::thread growth_sweep_thread([&] {
    if (cfg->asset_growth_sweep_s <= 0) return;
    while (!stop_growth_sweep) {
      const absl::Time next = absl::Now() + absl::Seconds(cfg->asset_growth_sweep_s);
      while (!stop_growth_sweep && absl::Now() < next) absl::SleepFor(absl::Milliseconds(100));
      if (stop_growth_sweep) break;
      auto settled = growth.Sweep();
      if (!settled.ok()) spdlog::warn("asset-growth sweep failed (retried): {}", settled.status());
    }
  });
  absl::Cleanup stop_growth = [&] {
    stop_growth_sweep = true;
    if (growth_consumer) growth_consumer->Stop();
    growth_thread.join();
    growth_sweep_thread.join();
  };

  std::optional<WorkerPool> workers, participation_workers;
  workers.emplace("campaigns", static_cast<int>(cfg->worker_threads),
                  static_cast<size_t>(cfg->worker_queue));
  participation_workers.emplace("participation", static_cast<int>(cfg->participation_threads),
                                static_cast<size_t>(cfg->participation_queue));
  auto grpc_service = campaigns::NewCampaignsGrpcService(service, *workers);
  auto participation_grpc =
      campaigns::NewParticipationsGrpcService(participation, *participation_workers);
  // Batch grants (BATCH_GRANT campaigns): the background runner and the BatchGrants API.
  campaigns::PgBatchGrantStore batch_store(**pool);
  campaigns::BatchGrantService batch_service(store, batch_store);
  auto batch_grpc = campaigns::NewBatchGrantsGrpcService(batch_service, *workers);
  std::unique_ptr<campaigns::AudienceSnapshots> batch_audience;
  if (!cfg->segments_address.empty()) {
    batch_audience = campaigns::NewSegmentsSnapshots(
        rpc::Connect(cfg->segments_address),
        std::max(absl::Seconds(30), absl::Milliseconds(cfg->segments_timeout_ms)));
  } else {
    batch_audience = std::make_unique<campaigns::InMemorySnapshots>();
  }
  std::optional<campaigns::BatchGrantRunner> batch_runner;
  if (cfg->batch_grant_enabled) {
    std::string owner = cfg->batch_grant_owner;
    if (owner.empty()) {
      char host[256] = {};
      gethostname(host, sizeof(host) - 1);
      owner = std::string(host) + "/" + cfg->grpc_address;
    }
    batch_runner.emplace(store, batch_store, *batch_audience, participation_benefits, *issuer,
                         rewards_grants,
                         campaigns::BatchGrantRunnerOptions{
                             .owner = owner,
                             .lease = absl::Seconds(cfg->batch_grant_lease_s),
                             .poll = absl::Milliseconds(cfg->batch_grant_poll_ms),
                             .max_in_flight = static_cast<int>(cfg->batch_grant_in_flight),
                             .issuer_threads = static_cast<int>(cfg->batch_grant_issuer_threads),
                             .chunk = static_cast<int>(cfg->batch_grant_chunk),
                             .rpc_timeout = absl::Milliseconds(cfg->rewards_timeout_ms),
                             .charge_budget = cfg->charge_budget});
    batch_runner->Start();
  }
  // From here on every return, a server that cannot start or a signal, stops in this order.
  absl::Cleanup shutdown = [&] {
    batch_runner.reset();
    std::move(stop_growth).Invoke();
    std::move(stop_recovery_thread).Invoke();
    participation_workers.reset();
    reserve_commits.reset();
    finish_commits.reset();
    workers.reset();
    scheduler.reset();
    std::move(stop_relay).Invoke();
  };
  auto server =
      rpc::Server::Start({.service_name = "campaigns", .address = cfg->grpc_address},
                         {grpc_service.get(), participation_grpc.get(), batch_grpc.get()});
  if (!server.ok()) return Fail(server.status());
  spdlog::info("campaigns serving on {}", cfg->grpc_address);

  int sig = rpc::WaitForTerminationSignal();
  spdlog::info("campaigns stopping on signal {}", sig);
  (*server)->Shutdown(absl::Seconds(5));
  std::move(shutdown).Invoke();
  spdlog::info("campaigns stopped");
  return 0;
}
