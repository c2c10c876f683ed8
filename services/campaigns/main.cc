// mkt-campaigns: campaign configuration, approval, publishing and the org reference data.
#include <optional>
#include <thread>

#include "libs/core/ids.h"
#include "libs/core/worker_pool.h"
#include "libs/kafka/kafka.h"
#include "libs/kafka/outbox.h"
#include "libs/log/log.h"
#include "libs/metrics/metrics.h"
#include "libs/pg/migrations.h"
#include "libs/pg/pool.h"
#include "libs/rpc/server.h"
#include "services/campaigns/campaign_scheduler.h"
#include "services/campaigns/campaign_service.h"
#include "services/campaigns/campaigns_config.h"
#include "services/campaigns/campaigns_grpc.h"
#include "services/campaigns/pg_campaign_store.h"
#include "services/campaigns/reference_data.h"
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
  rpc::BlockTerminationSignals();
  int exit_code = 0;
  std::optional<campaigns::CampaignsConfig> cfg =
      config::LoadForMain(campaigns::CampaignsConfigSchema(), argc, argv, environ, &exit_code,
                          &campaigns::ValidateCampaignsConfig);
  if (!cfg) return exit_code;
  log::Init("campaigns", log::ParseFormat(cfg->log_format), cfg->log_level);

  auto reference = campaigns::LoadReferenceData(cfg->catalog_file);
  if (!reference.ok()) return Fail(reference.status());
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
  kafka::OutboxRelay relay(**pool, **producer);
  std::thread relay_thread([&relay] { relay.Run(); });

  campaigns::PgCampaignStore store(**pool);
  campaigns::CampaignService service(
      store, *reference->segments, *reference->benefits, SystemClock(),
      {.default_uptake_bp = static_cast<int32_t>(cfg->default_uptake_bp)});
  std::optional<campaigns::CampaignScheduler> scheduler;
  if (cfg->scheduler_interval_ms > 0) {
    scheduler.emplace(service, absl::Milliseconds(cfg->scheduler_interval_ms));
  }

  std::optional<WorkerPool> workers;
  workers.emplace("campaigns", static_cast<int>(cfg->worker_threads),
                  static_cast<size_t>(cfg->worker_queue));
  auto grpc_service = campaigns::NewCampaignsGrpcService(service, *workers);
  auto server = rpc::Server::Start({.service_name = "campaigns", .address = cfg->grpc_address},
                                   {grpc_service.get()});
  if (!server.ok()) {
    workers.reset();
    scheduler.reset();
    relay.Stop();
    relay_thread.join();
    return Fail(server.status());
  }
  spdlog::info("campaigns serving on {}", cfg->grpc_address);

  int sig = rpc::WaitForTerminationSignal();
  spdlog::info("campaigns stopping on signal {}", sig);
  (*server)->Shutdown(absl::Seconds(5));
  workers.reset();
  scheduler.reset();
  relay.Stop();
  relay_thread.join();
  spdlog::info("campaigns stopped");
  return 0;
}
