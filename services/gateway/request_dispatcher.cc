#include "services/gateway/request_dispatcher.h"

#include <chrono>
#include <optional>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "libs/core/status.h"
#include "libs/log/log.h"
#include "spdlog/spdlog.h"

namespace mkt::gateway {
namespace {

namespace pb = ::marketing::common::v1;

// Metric and log labels for requests that never reached a route.
constexpr char kUnreadableRoute[] = "(unreadable)";
constexpr char kUnmatchedRoute[] = "(unmatched)";

}  // namespace

struct RequestDispatcher::Call {
  HttpRequest request;
  Respond respond;
  std::chrono::steady_clock::time_point start;
  // "GET /v1/channel" for metrics; the path template alone for the access log.
  std::string route_name;
  std::string route_template;
  RouteMatch match;
  std::optional<AuthenticatedChannel> channel;
  // The status behind an error response, for the log (5xx details never reach the client).
  absl::Status failure;
};

RequestDispatcher::RequestDispatcher(const Router& router,
                                     const ChannelAuthenticator& authenticator, int handler_threads,
                                     size_t max_queued)
    : router_(router),
      authenticator_(authenticator),
      metrics_("mkt_gateway_http", "HTTP requests"),
      max_async_in_flight_(max_queued),
      handler_pool_("gateway-handlers", handler_threads, max_queued) {}

RequestDispatcher::~RequestDispatcher() {
  while (async_in_flight_.load() > 0) absl::SleepFor(absl::Milliseconds(1));
}

void RequestDispatcher::Handle(HttpRequest request, Respond respond) {
  log::ScopedRequestId scoped(request.request_id);
  auto call = std::make_shared<Call>();
  call->start = std::chrono::steady_clock::now();
  call->request = std::move(request);
  call->respond = std::move(respond);

  if (!call->request.read_error.ok()) {
    call->route_name = call->route_template = kUnreadableRoute;
    call->failure = call->request.read_error;
    return Complete(*call, ErrorResponse(call->failure, call->request.request_id));
  }
  std::string allowed;
  absl::StatusOr<RouteMatch> match =
      router_.Match(call->request.method, call->request.path(), &allowed);
  if (!match.ok()) {
    call->route_name = call->route_template = kUnmatchedRoute;
    call->failure = match.status();
    HttpResponse response = ErrorResponse(call->failure, call->request.request_id);
    if (!allowed.empty()) response.headers.emplace_back("Allow", allowed);
    return Complete(*call, std::move(response));
  }
  call->match = *std::move(match);
  call->route_name = call->match.route->name;
  call->route_template = call->match.route->path_template;

  if (const AsyncRouteHandler& async = call->match.route->async_handler;
      async && async.takes(call->request) && TryAsync(call)) {
    return;
  }
  if (call->match.route->options.on_io_thread) return Run(*call);
  const bool queued = handler_pool_.TrySubmit([this, call] {
    log::ScopedRequestId scoped_on_worker(call->request.request_id);
    Run(*call);
  });
  if (!queued) {
    call->failure = Error(absl::StatusCode::kResourceExhausted, pb::RATE_LIMITED,
                          "the gateway is busy; retry in a moment");
    Complete(*call, ErrorResponse(call->failure, call->request.request_id));
  }
}

bool RequestDispatcher::TryAsync(const std::shared_ptr<Call>& call) {
  const Route& route = *call->match.route;
  if (async_in_flight_.fetch_add(1) >= max_async_in_flight_) {
    async_in_flight_.fetch_sub(1);
    return false;
  }
  if (route.options.channel_auth) {
    std::optional<absl::StatusOr<AuthenticatedChannel>> channel =
        authenticator_.AuthenticateWithoutWaiting(call->request);
    if (!channel) {  // the credential must be fetched: on the pool, where waiting is allowed
      async_in_flight_.fetch_sub(1);
      return false;
    }
    if (!channel->ok()) {
      async_in_flight_.fetch_sub(1);
      Finish(*call, channel->status());
      return true;
    }
    call->channel = **std::move(channel);
  }
  route.async_handler.run(RouteRequest{call->request, call->match.params, call->channel},
                          [this, call](absl::StatusOr<HttpResponse> result) {
                            // Last, also if Finish throws: the destructor waits for this count,
                            // and Finish still uses the metrics and the route.
                            absl::Cleanup counted = [this] { async_in_flight_.fetch_sub(1); };
                            log::ScopedRequestId scoped(call->request.request_id);
                            Finish(*call, std::move(result));
                          });
  return true;
}

void RequestDispatcher::Run(Call& call) {
  const Route& route = *call.match.route;
  if (route.options.channel_auth) {
    absl::StatusOr<AuthenticatedChannel> channel = authenticator_.Authenticate(call.request);
    if (!channel.ok()) return Finish(call, channel.status());
    call.channel = *std::move(channel);
  }
  absl::StatusOr<HttpResponse> result = absl::UnknownError("not run");
  try {
    result = route.handler(RouteRequest{call.request, call.match.params, call.channel});
  } catch (const std::exception& e) {
    result = Internal(absl::StrCat("route handler threw: ", e.what()));
  }
  Finish(call, std::move(result));
}

void RequestDispatcher::Finish(Call& call, absl::StatusOr<HttpResponse> result) {
  if (result.ok()) return Complete(call, *std::move(result));
  call.failure = result.status();
  // Every 429 and 503 says when to come back (ErrorResponse).
  Complete(call, ErrorResponse(call.failure, call.request.request_id));
}

void RequestDispatcher::Complete(Call& call, HttpResponse response) {
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - call.start).count();
  if (response.status >= 400 && response.error_code.empty()) {
    response.error_code = std::to_string(response.status);
  }
  metrics_.Record(call.route_name, response.error_code, seconds);
  if (response.status >= 500 && !call.failure.ok()) {
    // The client only sees a generic message; the details are here, under the request id.
    if (response.status == 500) {
      spdlog::error("{} failed: {}", call.route_name, call.failure.ToString());
    } else {
      spdlog::warn("{} failed: {}", call.route_name, call.failure.ToString());
    }
  }
  // Never the signature, the secret or the body; the channel only once authenticated.
  spdlog::info("http {} {} {} {}{:.1f}ms channel={}{}{}",
               call.request.method.empty() ? "-" : call.request.method, call.route_template,
               response.status, response.error_code.empty() ? "" : response.error_code + " ",
               seconds * 1000, call.channel ? call.channel->channel_id : "-",
               response.log_note.empty() ? "" : " ", response.log_note);
  call.respond(std::move(response));
}

}  // namespace mkt::gateway
