// mkt-gateway: the REST entry point for channels (/v1) and operators (/admin/v1). Builds the
// gateway's objects from its configuration, serves until SIGTERM/SIGINT, then drains and stops.
#include <cstdio>
#include <memory>
#include <optional>
#include <thread>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/synchronization/notification.h"
#include "google/protobuf/descriptor.h"
#include "libs/config/config.h"
#include "libs/core/ids.h"
#include "libs/core/status.h"
#include "libs/kafka/kafka.h"
#include "libs/log/log.h"
#include "libs/rpc/client.h"
#include "libs/rpc/server.h"
#include "marketing/events/v1/events.pb.h"
#include "services/gateway/admin_auth.h"
#include "services/gateway/api.h"
#include "services/gateway/api_routes.h"
#include "services/gateway/backend.h"
#include "services/gateway/channel_auth.h"
#include "services/gateway/channel_changes.h"
#include "services/gateway/credential_store.h"
#include "services/gateway/gateway_config.h"
#include "services/gateway/gateway_database.h"
#include "services/gateway/gateway_routes.h"
#include "services/gateway/http_server.h"
#include "services/gateway/idempotency_store.h"
#include "services/gateway/nonce_window.h"
#include "services/gateway/openapi.h"
#include "services/gateway/operator_store.h"
#include "services/gateway/request_dispatcher.h"
#include "services/gateway/router.h"
#include "spdlog/spdlog.h"

extern char** environ;

namespace mkt::gateway {
namespace {

namespace gpb = ::google::protobuf;

int Main(int argc, char** argv) {
  rpc::PrepareServiceProcess();
  int exit_code = 0;
  std::optional<GatewayConfig> loaded =
      config::LoadForMain(GatewayConfigSchema(), argc, argv, environ, &exit_code, &Validate);
  if (!loaded) return exit_code;
  const GatewayConfig& config = *loaded;
  log::Init("gateway", log::ParseFormat(config.log_format), config.log_level);

  const Clock& clock = SystemClock();
  // Before the backends: a board fetch still running when they shut down answers into it.
  SoldOutBoards sold_out_boards(clock);
  const absl::Duration window = absl::Seconds(config.timestamp_window_s);
  GrpcCredentialSource credential_source(rpc::Connect(config.channels_target),
                                         absl::Milliseconds(config.backend_timeout_ms));
  CredentialStore credentials(credential_source, clock,
                              {.ttl = absl::Seconds(config.credential_ttl_s)});
  const absl::Duration nonce_retention = NonceWindow::RetentionFor(window);
  const size_t nonce_max_total = static_cast<size_t>(config.nonce_max_total);
  NonceWindow nonces(
      nonce_retention,
      config.nonce_max_per_channel > 0
          ? static_cast<size_t>(config.nonce_max_per_channel)
          : NonceWindow::DefaultMaxPerChannel(config.channel_rate, config.channel_burst,
                                              nonce_retention, nonce_max_total),
      nonce_max_total);
  spdlog::info("replay window: nonces kept {} s, at most {} per channel and {} in all",
               absl::ToInt64Seconds(nonce_retention), nonces.max_per_channel(), nonces.max_total());
  ChannelAuthenticator authenticator(credentials, nonces, clock, window);

  // The gateway's own database, connected when first needed.
  std::unique_ptr<AdminAuth> admin;
  GatewayDatabase database({.dsn = config.pg_dsn, .size = static_cast<int>(config.pg_pool_size)},
                           [&config, &admin](pg::Pool&) -> absl::Status {
                             if (config.bootstrap_admin_password.empty()) return absl::OkStatus();
                             return admin->EnsureBootstrapAdmin(config.bootstrap_admin_id,
                                                                config.bootstrap_admin_org,
                                                                config.bootstrap_admin_password);
                           });
  OperatorStore operators(database.Getter());
  std::string token_key = config.token_key;
  if (token_key.empty()) {
    spdlog::warn("token_key is not set: admin sessions end when this process stops");
    token_key = RandomHex(32);
  }
  admin = std::make_unique<AdminAuth>(
      operators, clock,
      AdminAuthOptions{.token_key = token_key,
                       .token_ttl = absl::Seconds(config.token_ttl_s),
                       .lockout = {.max_failures = static_cast<int>(config.lockout_failures),
                                   .lock_for = absl::Seconds(config.lockout_s)},
                       .scrypt = {.n = static_cast<uint64_t>(config.scrypt_n)}});
  PgIdempotencyStore idempotency(database.Getter(), absl::Hours(config.idempotency_retention_h));
  PgAuditTrail audit(database.Getter());
  // Connect now if we can (bootstrap admin, migrations); if not, requests retry later.
  (void)database.Get();

  auto producer = kafka::Producer::Create(
      {.bootstrap_servers = config.kafka_bootstrap, .client_id = "mkt-gateway"});
  if (!producer.ok()) {
    spdlog::error("cannot create the Kafka producer: {}", producer.status().ToString());
    return 1;
  }

  const CircuitBreakerOptions breaker{.window = static_cast<int>(config.breaker_window),
                                      .min_calls = static_cast<int>(config.breaker_min_calls),
                                      .failure_ratio = config.breaker_failure_ratio,
                                      .slow_ratio = config.breaker_slow_ratio,
                                      .slow_call = absl::Milliseconds(config.breaker_slow_call_ms),
                                      .open_for = absl::Milliseconds(config.breaker_open_ms),
                                      .probes = static_cast<int>(config.breaker_probes)};
  const absl::Duration timeout = absl::Milliseconds(config.backend_timeout_ms);
  const int in_flight = static_cast<int>(config.backend_max_in_flight);
  Backend campaigns("campaigns", config.campaigns_target, timeout, breaker, clock, in_flight);
  Backend segments("segments", config.segments_target, timeout, breaker, clock, in_flight);
  Backend channels("channels", config.channels_target, timeout, breaker, clock, in_flight);
  Backend rewards("rewards", config.rewards_target, timeout, breaker, clock, in_flight);
  Backend events("events", config.events_target, timeout, breaker, clock, in_flight);
  // Declared after `rewards`, so it goes first: it waits for its calls, which use `rewards`.
  std::optional<WalletReads> wallet_reads;
  if (config.wallet_batch > 1) {
    wallet_reads.emplace(
        rewards,
        WalletReadsOptions{.max_batch = static_cast<int>(config.wallet_batch),
                           .max_in_flight = static_cast<int>(config.wallet_calls_in_flight)});
  }

  Router router;
  if (absl::Status s = RegisterGatewayRoutes(router, clock); !s.ok()) {
    spdlog::error("cannot register routes: {}", s.ToString());
    return 1;
  }
  ApiOptions api_options;
  api_options.max_json_depth = static_cast<int>(config.max_json_depth);
  api_options.max_body_bytes = static_cast<size_t>(config.max_body_bytes);
  api_options.per_channel = {config.channel_rate, config.channel_burst};
  api_options.per_customer = {config.customer_rate, config.customer_burst};
  api_options.per_route = {config.route_rate, config.route_burst};
  api_options.per_operator = {config.operator_rate, config.operator_burst};
  ApiService api(api_options, clock, admin.get(), &idempotency);
  api.set_audit_trail(&audit);
  ApiDependencies deps;
  deps.campaigns = &campaigns;
  deps.segments = &segments;
  deps.channels = &channels;
  deps.rewards = &rewards;
  deps.events = &events;
  deps.admin = admin.get();
  deps.audit = &audit;
  // POST /v1/events checks events against a copy of the events service's registry.
  const gpb::MethodDescriptor* list_event_types =
      gpb::DescriptorPool::generated_pool()->FindMethodByName(
          "marketing.events.v1.EventsAdmin.ListEventTypes");
  events::EventTypeCache event_types(
      [&events,
       list_event_types]() -> absl::StatusOr<std::vector<::marketing::events::v1::EventType>> {
        ::marketing::events::v1::ListEventTypesResponse response;
        CallerIdentity caller{
            .request_id = NewRequestId(),
            .actor = tenancy::Actor{
                .org_id = tenancy::kFederation, .operator_id = "gateway:event-types", .roles = {}}};
        MKT_RETURN_IF_ERROR(events.Call(*list_event_types,
                                        ::marketing::events::v1::ListEventTypesRequest(), &response,
                                        caller));
        return std::vector<::marketing::events::v1::EventType>(response.event_types().begin(),
                                                               response.event_types().end());
      },
      clock);
  deps.event_types = &event_types;
  deps.publisher = producer->get();
  deps.clock = &clock;
  if (config.sold_out_boards) deps.sold_out_boards = &sold_out_boards;
  if (wallet_reads) deps.wallet_reads = &*wallet_reads;
  deps.business_events_topic = config.business_events_topic;
  deps.tracking_topic = config.tracking_topic;
  deps.publish_timeout = timeout;
  if (absl::Status s = RegisterApiRoutes(api, router, deps); !s.ok()) {
    spdlog::error("cannot register API routes: {}", s.ToString());
    return 1;
  }
  const std::string openapi = OpenApiDocument(api.routes());
  if (absl::Status s = router.Add("GET", "/openapi.json", {.on_io_thread = true},
                                  [&openapi](const RouteRequest&) -> absl::StatusOr<HttpResponse> {
                                    return JsonResponse(openapi);
                                  });
      !s.ok()) {
    spdlog::error("cannot register /openapi.json: {}", s.ToString());
    return 1;
  }

  // Idempotency records past their retention are deleted every ten minutes.
  absl::Notification stopping;
  std::thread purger([&] {
    while (!stopping.WaitForNotificationWithTimeout(absl::Minutes(10))) {
      if (auto purged = idempotency.Purge(); !purged.ok()) {
        spdlog::warn("idempotency purge failed: {}", purged.status().ToString());
      }
    }
  });
  // Every return from here on stops the purger: leaving it joinable would abort the process.
  absl::Cleanup stop_purger = [&] {
    stopping.Notify();
    purger.join();
  };
  RequestDispatcher dispatcher(router, authenticator, static_cast<int>(config.handler_threads),
                               static_cast<size_t>(config.max_queued_requests));

  auto listener =
      ChannelChangeListener::Start({.kafka_bootstrap = config.kafka_bootstrap}, credentials);
  if (!listener.ok()) {
    spdlog::error("cannot listen for channel changes: {}", listener.status().ToString());
    return 1;
  }

  HttpServerOptions http_options;
  http_options.address = config.http_address;
  http_options.io_threads = static_cast<int>(config.io_threads);
  http_options.max_body_bytes = static_cast<size_t>(config.max_body_bytes);
  auto server = HttpServer::Start(http_options, dispatcher);
  if (!server.ok()) {
    spdlog::error("{}", server.status().ToString());
    return 1;
  }

  auto health = rpc::Server::Start({.service_name = "gateway", .address = config.grpc_address}, {});
  if (!health.ok()) {
    spdlog::error("{}", health.status().ToString());
    return 1;
  }

  const int signal_number = rpc::WaitForTerminationSignal();
  (*health)->Shutdown(absl::Seconds(1));
  spdlog::info("gateway stopping on signal {}", signal_number);
  // Finish the requests in hand, then stop taking changes; requests still queued run when the
  // dispatcher is destroyed (their responses are dropped: the server is closed).
  (*server)->Shutdown(absl::Seconds(5));
  listener->reset();
  std::move(stop_purger).Invoke();
  spdlog::info("gateway stopped");
  return 0;
}

}  // namespace
}  // namespace mkt::gateway

int main(int argc, char** argv) { return mkt::gateway::Main(argc, argv); }
