// mkt-segments: tag dictionary, tag values, segments and the bitmap index behind membership.
#include <atomic>
#include <cstdlib>
#include <optional>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/synchronization/notification.h"
#include "libs/core/worker_pool.h"
#include "libs/kafka/kafka.h"
#include "libs/kafka/outbox.h"
#include "libs/log/log.h"
#include "libs/metrics/metrics.h"
#include "libs/pg/migrations.h"
#include "libs/pg/pool.h"
#include "libs/rpc/server.h"
#include "services/segments/pg_segment_store.h"
#include "services/segments/segment_service.h"
#include "services/segments/segments_config.h"
#include "services/segments/segments_grpc.h"
#include "services/segments/tag_index.h"
#include "spdlog/spdlog.h"

extern char** environ;

namespace {

int Fail(const absl::Status& status) {
  spdlog::critical("segments cannot start: {}", status);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace mkt;
  rpc::PrepareServiceProcess();
  int exit_code = 0;
  std::optional<segments::SegmentsConfig> cfg =
      config::LoadForMain(segments::SegmentsConfigSchema(), argc, argv, environ, &exit_code,
                          &segments::ValidateSegmentsConfig);
  if (!cfg) return exit_code;
  log::Init("segments", log::ParseFormat(cfg->log_format), cfg->log_level);

  auto pool = pg::Pool::Connect({.dsn = cfg->pg_dsn, .size = static_cast<int>(cfg->pg_pool_size)});
  if (!pool.ok()) return Fail(pool.status());
  if (auto s = pg::ApplyMigrations(**pool,
                                   {&kafka::OutboxMigrations(), &segments::SegmentsMigrations()});
      !s.ok()) {
    return Fail(s);
  }
  if (auto s = metrics::StartExposer(cfg->metrics_address); !s.ok()) return Fail(s);

  segments::TagIndex index;
  segments::PgSegmentStore store(**pool);
  segments::SegmentService service(store, index, SystemClock(),
                                   {.changes_retention = absl::Seconds(cfg->changes_retention_s)});
  // The index is complete before the first question is answered.
  if (auto s = service.Rebuild(); !s.ok()) return Fail(s);

  const kafka::ClientOptions client{.bootstrap_servers = cfg->kafka_bootstrap,
                                    .client_id = "segments"};
  auto producer = kafka::Producer::Create(client);
  if (!producer.ok()) return Fail(producer.status());
  for (const std::string& topic : {cfg->profiles_topic, cfg->business_events_topic}) {
    if (topic.empty()) continue;
    if (auto s = kafka::EnsureTopic(client, topic, 3); !s.ok()) {
      spdlog::warn("cannot create topic {} yet: {}", topic, s);
    }
  }
  auto profiles = kafka::Consumer::Create({.client = client,
                                           .group_id = "mkt-segments-" + cfg->replica_id,
                                           .topics = {cfg->profiles_topic},
                                           .metrics_name = "segments_profiles",
                                           .dead_letter_topic = cfg->dead_letter_topic},
                                          producer->get());
  if (!profiles.ok()) return Fail(profiles.status());
  std::thread profiles_thread([&] {
    (*profiles)->Run(
        [&](const kafka::IncomingMessage& m) { return service.HandleProfileMessage(m); });
  });
  // A return before the shutdown at the end must not leave the thread joinable (that aborts).
  absl::Cleanup stop_profiles = [&] {
    if (!profiles_thread.joinable()) return;
    (*profiles)->Stop();
    profiles_thread.join();
  };
  std::unique_ptr<kafka::Consumer> events;
  std::thread events_thread;
  if (!cfg->business_events_topic.empty()) {
    // One group for all replicas: the aggregates live in PostgreSQL, not in each index.
    auto created = kafka::Consumer::Create({.client = client,
                                            .group_id = "mkt-segments-rfm",
                                            .topics = {cfg->business_events_topic},
                                            .metrics_name = "segments_business_events",
                                            .dead_letter_topic = cfg->dead_letter_topic},
                                           producer->get());
    if (!created.ok()) return Fail(created.status());
    events = *std::move(created);
    events_thread = std::thread([&] {
      events->Run([&](const kafka::IncomingMessage& m) { return service.HandleBusinessEvent(m); });
    });
  }
  absl::Notification stopping;
  // Other replicas' writes (and this one's, again): imports, RFM tags, customers created by lists
  // and business events, tag definitions. Profiles arrive here from Kafka as well.
  std::thread changes_thread([&] {
    bool failing = false;
    while (!stopping.WaitForNotificationWithTimeout(absl::Milliseconds(cfg->changes_poll_ms))) {
      absl::StatusOr<int64_t> applied = service.CatchUp();
      if (applied.ok()) applied = service.PruneChanges();
      if (!applied.ok() && !failing) {
        spdlog::warn("catching up with other replicas failed (retrying): {}", applied.status());
      } else if (applied.ok() && failing) {
        spdlog::info("catching up with other replicas works again");
      }
      failing = !applied.ok();
    }
  });
  std::thread rfm_thread;
  if (cfg->rfm_interval_s > 0) {
    rfm_thread = std::thread([&] {
      while (!stopping.WaitForNotificationWithTimeout(absl::Seconds(cfg->rfm_interval_s))) {
        if (absl::StatusOr<int64_t> n = service.ScoreRfm(); !n.ok()) {
          spdlog::warn("RFM scoring failed: {}", n.status());
        }
      }
    });
  }

  WorkerPool workers("segments", static_cast<int>(cfg->worker_threads),
                     static_cast<size_t>(cfg->worker_queue));
  auto grpc_service = segments::NewSegmentsGrpcService(service, workers);
  auto server = rpc::Server::Start({.service_name = "segments", .address = cfg->grpc_address},
                                   {grpc_service.get()});
  int result = 0;
  if (!server.ok()) {
    result = Fail(server.status());
  } else {
    int sig = rpc::WaitForTerminationSignal();
    spdlog::info("segments stopping on signal {}", sig);
    (*server)->Shutdown(absl::Seconds(5));
  }
  stopping.Notify();
  (*profiles)->Stop();
  if (events) events->Stop();
  profiles_thread.join();
  if (events_thread.joinable()) events_thread.join();
  if (rfm_thread.joinable()) rfm_thread.join();
  changes_thread.join();
  spdlog::info("segments stopped");
  return result;
}
