// mkt-channels: the channel registry service.
#include <cstdlib>
#include <optional>
#include <thread>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "libs/auth/crypto.h"
#include "libs/core/worker_pool.h"
#include "libs/kafka/kafka.h"
#include "libs/kafka/outbox.h"
#include "libs/log/log.h"
#include "libs/metrics/metrics.h"
#include "libs/pg/migrations.h"
#include "libs/pg/pool.h"
#include "libs/rpc/server.h"
#include "services/channels/channel_registry.h"
#include "services/channels/channels_config.h"
#include "services/channels/channels_grpc.h"
#include "services/channels/pg_channel_repository.h"
#include "spdlog/spdlog.h"

extern char** environ;

namespace {

int Fail(const absl::Status& status) {
  spdlog::critical("channels cannot start: {}", status.message());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace mkt;
  rpc::PrepareServiceProcess();
  int exit_code = 0;
  std::optional<channels::ChannelsConfig> cfg =
      config::LoadForMain(channels::ChannelsConfigSchema(), argc, argv, environ, &exit_code);
  if (!cfg) return exit_code;
  log::Init("channels", log::ParseFormat(cfg->log_format), cfg->log_level);

  auto secret_box = auth::SecretBox::FromHexKey(cfg->secret_key);
  if (!secret_box.ok()) return Fail(secret_box.status());
  auto pool = pg::Pool::Connect({.dsn = cfg->pg_dsn, .size = static_cast<int>(cfg->pg_pool_size)});
  if (!pool.ok()) return Fail(pool.status());
  if (auto s = pg::ApplyMigrations(**pool,
                                   {&kafka::OutboxMigrations(), &channels::ChannelsMigrations()});
      !s.ok()) {
    return Fail(s);
  }
  if (auto s = metrics::StartExposer(cfg->metrics_address); !s.ok()) return Fail(s);

  auto producer =
      kafka::Producer::Create({.bootstrap_servers = cfg->kafka_bootstrap, .client_id = "channels"});
  if (!producer.ok()) return Fail(producer.status());
  if (auto s =
          kafka::EnsureTopic({.bootstrap_servers = cfg->kafka_bootstrap, .client_id = "channels"},
                             channels::kChannelChangesTopic, 3);
      !s.ok()) {
    // The relay keeps retrying; a broker that is down now must not keep the registry offline.
    spdlog::warn("cannot create topic {} yet: {}", channels::kChannelChangesTopic, s.message());
  }
  kafka::OutboxRelay relay(**pool, **producer);
  std::thread relay_thread([&relay] { relay.Run(); });
  // Every return from here on stops the relay: leaving it joinable would abort the process.
  absl::Cleanup stop_relay = [&] {
    relay.Stop();
    relay_thread.join();
  };

  channels::PgChannelRepository repository(**pool);
  channels::ChannelRegistry registry(repository, *std::move(secret_box));
  WorkerPool workers("channels", static_cast<int>(cfg->worker_threads),
                     static_cast<size_t>(cfg->worker_queue));
  auto service = channels::NewChannelRegistryService(registry, workers);
  auto server = rpc::Server::Start({.service_name = "channels", .address = cfg->grpc_address},
                                   {service.get()});
  if (!server.ok()) return Fail(server.status());

  int sig = rpc::WaitForTerminationSignal();
  spdlog::info("channels stopping on signal {}", sig);
  (*server)->Shutdown(absl::Seconds(5));
  std::move(stop_relay).Invoke();
  spdlog::info("channels stopped");
  return 0;
}
