// mkt-events: business events in, matched trigger rules, grants out to the rewards ledger.
#include <fstream>
#include <optional>
#include <thread>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/numbers.h"
#include "libs/core/ids.h"
#include "libs/core/worker_pool.h"
#include "libs/kafka/kafka.h"
#include "libs/log/log.h"
#include "libs/metrics/metrics.h"
#include "libs/pg/migrations.h"
#include "libs/pg/pool.h"
#include "libs/rpc/client.h"
#include "libs/rpc/server.h"
#include "services/events/batch_consumer.h"
#include "services/events/event_store.h"
#include "services/events/events_config.h"
#include "services/events/events_grpc.h"
#include "services/events/events_service.h"
#include "services/events/grant_sender.h"
#include "services/events/rules_catch_up.h"
#include "services/events/segments_client.h"
#include "spdlog/spdlog.h"

extern char** environ;

namespace {

using namespace mkt;

int Fail(const absl::Status& status) {
  spdlog::critical("events cannot start: {}", status.message());
  return 1;
}

absl::Status LoadTags(const std::string& path, events::InMemoryCustomerTags& tags) {
  if (path.empty()) return absl::OkStatus();
  std::ifstream in(path);
  if (!in) return absl::NotFoundError("cannot read tags_file " + path);
  std::string line;
  while (std::getline(in, line)) {
    const size_t a = line.find(',');
    const size_t b = a == std::string::npos ? a : line.find(',', a + 1);
    if (b == std::string::npos) continue;
    const std::string text = line.substr(b + 1);
    int64_t number = 0;
    tags.Set(line.substr(0, a), line.substr(a + 1, b - a - 1),
             absl::SimpleAtoi(text, &number) ? events::TagValue::Number(number)
                                             : events::TagValue::Text(text));
  }
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  rpc::PrepareServiceProcess();
  int exit_code = 0;
  std::optional<events::EventsConfig> cfg = config::LoadForMain(
      events::EventsConfigSchema(), argc, argv, environ, &exit_code, &events::ValidateEventsConfig);
  if (!cfg) return exit_code;
  log::Init("events", log::ParseFormat(cfg->log_format), cfg->log_level);

  auto pool = pg::Pool::Connect({.dsn = cfg->pg_dsn, .size = static_cast<int>(cfg->pg_pool_size)});
  if (!pool.ok()) return Fail(pool.status());
  if (auto s = pg::ApplyMigrations(**pool, {&events::EventsMigrations()}); !s.ok()) return Fail(s);
  if (auto s = metrics::StartExposer(cfg->metrics_address); !s.ok()) return Fail(s);

  const kafka::ClientOptions kafka_options{.bootstrap_servers = cfg->kafka_bootstrap,
                                           .client_id = "events"};
  for (const std::string& topic :
       {cfg->events_topic, cfg->dead_letter_topic, cfg->campaign_changes_topic}) {
    if (auto s = kafka::EnsureTopic(kafka_options, topic, 3); !s.ok()) {
      spdlog::warn("cannot create topic {} yet: {}", topic, s.message());
    }
  }
  auto producer = kafka::Producer::Create(kafka_options);
  if (!producer.ok()) return Fail(producer.status());

  // Customer tags and campaign audiences: the segments service, or a file standing in for it.
  std::unique_ptr<events::CustomerTags> tags;
  std::unique_ptr<events::Audiences> audiences;
  if (cfg->tags_file.empty()) {
    auto segments = rpc::Connect(cfg->segments_address);
    tags = events::NewSegmentTags(segments, absl::Milliseconds(cfg->segments_timeout_ms));
    audiences = events::NewSegmentAudiences(segments, absl::Milliseconds(cfg->segments_timeout_ms));
  } else {
    auto file_tags = std::make_unique<events::InMemoryCustomerTags>();
    if (auto s = LoadTags(cfg->tags_file, *file_tags); !s.ok()) return Fail(s);
    spdlog::warn(
        "events: customer tags from {}, not from the segments service; every customer is in "
        "every campaign's audience (tests and tools only)",
        cfg->tags_file);
    tags = std::move(file_tags);
    audiences = std::make_unique<events::EveryoneInAudiences>();
  }
  events::EventStore store(**pool);
  events::EventsService service(store, tags.get(), audiences.get());
  service.set_late_events(absl::Seconds(cfg->late_events_s));
  if (auto s = service.Start(); !s.ok()) return Fail(s);

  events::GrantSender sender(store, {.rewards_address = cfg->rewards_address,
                                     .max_in_flight = static_cast<int>(cfg->grants_in_flight),
                                     .grants_per_call = static_cast<int>(cfg->grants_per_call),
                                     .claim_batch = static_cast<int>(cfg->grants_claim_batch),
                                     .finish_batch = static_cast<int>(cfg->grants_finish_batch),
                                     .unfunded_retry = absl::Seconds(cfg->unfunded_retry_s)});
  service.OnGrantsCommitted([&sender] { sender.Notify(); });
  std::thread sender_thread([&sender] { sender.Run(); });
  // Every return from here on stops each thread started (a joinable one would abort the process):
  // in reverse order, the sender last, as the shutdown at the end does.
  absl::Cleanup stop_sender = [&] {
    sender.Stop();
    sender_thread.join();
  };

  // Business events are matched only once the rules caught up with every campaign change
  // published before start-up (decision 010, amended): the rules stored in the database miss the
  // changes published while this replica was down, and the events that waited meanwhile would be
  // matched against them. The end of the changes topic is captured now (retried while the broker
  // cannot be reached), and the business-events consumer joins its group only once the rules
  // consumer has handled everything before it.
  events::RulesCatchUp rules_catch_up;
  std::thread catch_up_thread(
      [&] { rules_catch_up.Capture(kafka_options, cfg->campaign_changes_topic); });
  absl::Cleanup stop_catch_up = [&] {
    rules_catch_up.Cancel();
    catch_up_thread.join();
  };

  // Every replica needs every campaign change: a group of its own, from the beginning (the
  // highest revision of each rule wins, so replaying old changes is harmless).
  kafka::ConsumerOptions changes_options{.client = kafka_options,
                                         .group_id = "events-rules-" + RandomHex(6),
                                         .topics = {cfg->campaign_changes_topic},
                                         .auto_offset_reset = "earliest",
                                         .metrics_name = "events_campaign_changes",
                                         .dead_letter_topic = cfg->dead_letter_topic};
  auto changes = kafka::Consumer::Create(changes_options, producer->get());
  if (!changes.ok()) return Fail(changes.status());
  std::thread changes_thread([&] {
    (*changes)->Run([&](const kafka::IncomingMessage& m) {
      absl::Status s = service.HandleCampaignChange(m);
      // Stored, skipped or (permanent) dead-lettered: either way done with.
      if (s.ok() || kafka::IsPermanent(s)) rules_catch_up.Handled(m.partition, m.offset);
      return s;
    });
  });
  absl::Cleanup stop_changes = [&] {
    (*changes)->Stop();
    changes_thread.join();
  };

  events::BatchConsumerOptions consumer_options;
  consumer_options.consumer.client = kafka_options;
  consumer_options.consumer.group_id = cfg->consumer_group;
  consumer_options.consumer.topics = {cfg->events_topic};
  consumer_options.consumer.metrics_name = "events";
  consumer_options.consumer.dead_letter_topic = cfg->dead_letter_topic;
  consumer_options.max_batch = static_cast<int>(cfg->batch_max);
  consumer_options.linger = absl::Milliseconds(cfg->batch_linger_ms);
  consumer_options.ready = [&rules_catch_up] { return rules_catch_up.CaughtUp(); };
  auto consumer = events::BatchConsumer::Create(consumer_options, producer->get());
  if (!consumer.ok()) return Fail(consumer.status());
  std::thread consumer_thread([&] {
    (*consumer)->Run([&service](const auto& batch, auto* rejected) {
      return service.HandleBatch(batch, rejected);
    });
  });
  absl::Cleanup stop_consumer = [&] {
    (*consumer)->Stop();
    consumer_thread.join();
  };

  std::optional<WorkerPool> workers;
  workers.emplace("events", static_cast<int>(cfg->worker_threads),
                  static_cast<size_t>(cfg->worker_queue));
  auto admin = events::NewEventsAdminService(service, *workers);
  auto server =
      rpc::Server::Start({.service_name = "events", .address = cfg->grpc_address}, {admin.get()});
  if (!server.ok()) return Fail(server.status());
  spdlog::info("events serving on {}", cfg->grpc_address);
  const int sig = rpc::WaitForTerminationSignal();
  spdlog::info("events stopping on signal {}", sig);
  (*server)->Shutdown(absl::Seconds(5));
  workers.reset();
  std::move(stop_consumer).Invoke();
  std::move(stop_changes).Invoke();
  std::move(stop_catch_up).Invoke();
  std::move(stop_sender).Invoke();
  spdlog::info("events stopped");
  return 0;
}
