// The gateway's route table: method + path template ("/v1/customers/{customer_id}/wallet",
// "/v1/redemptions/{id}:confirm") → handler, with per-route flags saying how the request is
// authenticated and where it runs. Matching an unknown path answers 404 NOT_FOUND; a known path
// with another method answers 405 METHOD_NOT_ALLOWED naming the allowed methods.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "services/gateway/channel_auth.h"
#include "services/gateway/http_message.h"

namespace mkt::gateway {

// Values of a route's {placeholders}, percent-decoded.
using PathParams = std::map<std::string, std::string, std::less<>>;

// What a route handler receives.
struct RouteRequest {
  const HttpRequest& http;
  const PathParams& params;
  // Set on routes with channel_auth: the channel whose signature verified.
  std::optional<AuthenticatedChannel> channel;
};

// Returns the response, or a status that becomes the JSON error response.
using RouteHandler = std::function<absl::StatusOr<HttpResponse>(const RouteRequest&)>;

// A handler that does not hold a thread while its backend answers. `takes` decides, from the
// request alone and before anything is checked or counted, whether it runs; the requests it does
// not take go to the route's RouteHandler on the handler pool. `run` calls `done` exactly once,
// from this thread or another; it runs on an I/O thread, so nothing in it may block, nor `done`.
using RouteDone = std::function<void(absl::StatusOr<HttpResponse>)>;
struct AsyncRouteHandler {
  std::function<bool(const HttpRequest&)> takes;
  std::function<void(const RouteRequest&, RouteDone done)> run;
  explicit operator bool() const { return takes && run; }
};

struct RouteOptions {
  // The request must carry a valid channel signature (X-Channel-Id, X-Timestamp, X-Nonce,
  // X-Signature); the handler runs only for an authenticated, enabled channel.
  bool channel_auth = false;
  // The handler is cheap and never blocks (health, metrics): it runs on the I/O thread, so it
  // answers even when every handler thread is busy. Everything else runs on the handler pool.
  bool on_io_thread = false;
};

struct Route {
  std::string method;
  std::string path_template;
  RouteOptions options;
  RouteHandler handler;
  // Optional: tried first when set (see AsyncRouteHandler).
  AsyncRouteHandler async_handler;
  // "GET /v1/channel": the label for metrics and the access log (never the raw path, which
  // would carry customer ids and grow without bound).
  std::string name;

  struct Segment {
    std::string literal;  // a literal segment, or the literal suffix after a {param}
    std::string param;    // non-empty for "{param}" or "{param}<suffix>"
  };
  std::vector<Segment> segments;
};

struct RouteMatch {
  const Route* route = nullptr;
  PathParams params;
};

class Router {
 public:
  // Adds a route. Fails on a malformed template or a second route for the same method and
  // template.
  absl::Status Add(std::string method, std::string path_template, RouteOptions options,
                   RouteHandler handler, AsyncRouteHandler async_handler = {});

  // Returns the route for `method` and `path` (no query string) and its parameters:
  // NOT_FOUND when no template matches the path, METHOD_NOT_ALLOWED (with the allowed methods
  // in the message and in *allowed) when templates match only with other methods,
  // INVALID_ARGUMENT when a parameter's percent-encoding is broken. When several templates
  // match, the one with literals earliest wins ("/v1/coupons/mine" over "/v1/coupons/{code}").
  absl::StatusOr<RouteMatch> Match(std::string_view method, std::string_view path,
                                   std::string* allowed = nullptr) const;

  const std::vector<std::unique_ptr<Route>>& routes() const { return routes_; }

 private:
  std::vector<std::unique_ptr<Route>> routes_;
};

}  // namespace mkt::gateway
