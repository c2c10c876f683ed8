// mkt-outbox-relay: publishes a service database's outbox to Kafka until SIGTERM/SIGINT.
// Runs beside the owning service (as a sidecar or on its own); several replicas may run at once.
// It never applies migrations: until the owning service has created the outbox table, it logs
// the error and retries.
#include <signal.h>

#include <cstdint>
#include <cstdio>
#include <optional>
#include <thread>

#include "libs/config/config.h"
#include "libs/kafka/kafka.h"
#include "libs/kafka/outbox.h"
#include "libs/log/log.h"
#include "libs/metrics/metrics.h"
#include "libs/pg/pool.h"
#include "spdlog/spdlog.h"

extern char** environ;

namespace {

struct RelayConfig {
  std::string pg_dsn = "host=127.0.0.1 port=25432 user=postgres dbname=postgres";
  std::string kafka_bootstrap = "127.0.0.1:29092";
  int64_t batch_size = 500;
  int64_t idle_poll_ms = 50;
  std::string log_format = "auto";
  // Empty: no /metrics endpoint.
  std::string metrics_address;
};

mkt::config::Schema<RelayConfig> MakeSchema() {
  mkt::config::Schema<RelayConfig> schema("outbox_relay");
  schema
      .Secret("pg_dsn", &RelayConfig::pg_dsn,
              "libpq connection string of the database whose outbox is relayed")
      .Field("kafka_bootstrap", &RelayConfig::kafka_bootstrap, "Kafka bootstrap servers")
      .Field("batch_size", &RelayConfig::batch_size, "outbox rows published per transaction")
      .Field("idle_poll_ms", &RelayConfig::idle_poll_ms,
             "milliseconds between polls when the outbox is empty")
      .Field("log_format", &RelayConfig::log_format, "auto, text or json")
      .Field("metrics_address", &RelayConfig::metrics_address,
             "host:port serving Prometheus /metrics (mkt_outbox_relayed_total, ...); empty: none");
  return schema;
}

absl::Status Validate(const RelayConfig& config) {
  if (config.batch_size <= 0 || config.idle_poll_ms < 0) {
    return absl::InvalidArgumentError("batch_size must be > 0 and idle_poll_ms >= 0");
  }
  return absl::OkStatus();
}

int Main(int argc, char** argv) {
  // Before any thread starts, so that only sigwait below sees the termination signals.
  sigset_t termination;
  sigemptyset(&termination);
  sigaddset(&termination, SIGTERM);
  sigaddset(&termination, SIGINT);
  pthread_sigmask(SIG_BLOCK, &termination, nullptr);

  int exit_code = 0;
  std::optional<RelayConfig> config =
      mkt::config::LoadForMain(MakeSchema(), argc, argv, environ, &exit_code, &Validate);
  if (!config) return exit_code;
  mkt::log::Init("outbox_relay", mkt::log::ParseFormat(config->log_format));

  if (!config->metrics_address.empty()) {
    if (auto s = mkt::metrics::StartExposer(config->metrics_address); !s.ok()) {
      spdlog::error("outbox relay: {}", s);
      return 1;
    }
  }

  mkt::pg::PoolOptions pool_options;
  pool_options.dsn = config->pg_dsn;
  pool_options.size = 2;
  auto pool = mkt::pg::Pool::Connect(pool_options);
  if (!pool.ok()) {
    spdlog::error("outbox relay: cannot connect to PostgreSQL: {}", pool.status().ToString());
    return 1;
  }
  mkt::kafka::ClientOptions kafka_options;
  kafka_options.bootstrap_servers = config->kafka_bootstrap;
  kafka_options.client_id = "mkt-outbox-relay";
  auto producer = mkt::kafka::Producer::Create(kafka_options);
  if (!producer.ok()) {
    spdlog::error("outbox relay: cannot create Kafka producer: {}", producer.status().ToString());
    return 1;
  }

  mkt::kafka::RelayOptions relay_options;
  relay_options.batch_size = static_cast<int>(config->batch_size);
  relay_options.idle_poll = absl::Milliseconds(config->idle_poll_ms);
  mkt::kafka::OutboxRelay relay(**pool, **producer, relay_options);
  std::thread relaying([&relay] { relay.Run(); });
  spdlog::info("outbox relay started (kafka {}, batch {})", config->kafka_bootstrap,
               config->batch_size);

  int signal_number = 0;
  sigwait(&termination, &signal_number);
  spdlog::info("outbox relay stopping on signal {}", signal_number);
  relay.Stop();
  relaying.join();
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Main(argc, argv); }
