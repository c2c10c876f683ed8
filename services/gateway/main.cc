// mkt-gateway: the REST entry point for channels (and, later, operators). Builds the gateway's
// objects from its configuration, serves until SIGTERM/SIGINT, then drains and stops.
#include <cstdio>
#include <memory>
#include <optional>

#include "libs/config/config.h"
#include "libs/core/ids.h"
#include "libs/log/log.h"
#include "libs/rpc/client.h"
#include "libs/rpc/server.h"
#include "services/gateway/channel_auth.h"
#include "services/gateway/channel_changes.h"
#include "services/gateway/credential_store.h"
#include "services/gateway/gateway_config.h"
#include "services/gateway/gateway_routes.h"
#include "services/gateway/http_server.h"
#include "services/gateway/nonce_window.h"
#include "services/gateway/request_dispatcher.h"
#include "services/gateway/router.h"
#include "spdlog/spdlog.h"

extern char** environ;

namespace mkt::gateway {
namespace {

// Nonces a single channel may have live within the replay window (~20 MB worst case each).
constexpr size_t kMaxNoncesPerChannel = 200000;

int Main(int argc, char** argv) {
  rpc::BlockTerminationSignals();
  int exit_code = 0;
  std::optional<GatewayConfig> loaded =
      config::LoadForMain(GatewayConfigSchema(), argc, argv, environ, &exit_code, &Validate);
  if (!loaded) return exit_code;
  const GatewayConfig& config = *loaded;
  log::Init("gateway", log::ParseFormat(config.log_format), config.log_level);

  const Clock& clock = SystemClock();
  const absl::Duration window = absl::Seconds(config.timestamp_window_s);
  GrpcCredentialSource credential_source(rpc::Connect(config.channels_target),
                                         absl::Milliseconds(config.backend_timeout_ms));
  CredentialStore credentials(credential_source, clock,
                              {.ttl = absl::Seconds(config.credential_ttl_s)});
  NonceWindow nonces(NonceWindow::RetentionFor(window), kMaxNoncesPerChannel);
  ChannelAuthenticator authenticator(credentials, nonces, clock, window);

  Router router;
  if (absl::Status s = RegisterGatewayRoutes(router, clock); !s.ok()) {
    spdlog::error("cannot register routes: {}", s.ToString());
    return 1;
  }
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
  spdlog::info("gateway stopped");
  return 0;
}

}  // namespace
}  // namespace mkt::gateway

int main(int argc, char** argv) { return mkt::gateway::Main(argc, argv); }
