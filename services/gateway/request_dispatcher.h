// What happens to every HTTP request between the server and a route handler, in one place so
// every endpoint behaves the same: the request id is bound to the log, the route is found
// (404/405 otherwise), the channel is authenticated when the route asks for it, the handler runs
// on the handler pool (or on the I/O thread for cheap routes), failures become the JSON error
// shape, and each request is counted in mkt_gateway_http_* (by route template and error code)
// and written to the access log.
#pragma once

#include <memory>
#include <string>

#include "libs/core/worker_pool.h"
#include "libs/metrics/metrics.h"
#include "services/gateway/channel_auth.h"
#include "services/gateway/http_server.h"
#include "services/gateway/router.h"

namespace mkt::gateway {

class RequestDispatcher final : public HttpHandler {
 public:
  // `router` and `authenticator` must outlive the dispatcher. Routes that may block run on
  // `handler_threads` threads; when `max_queued` requests already wait for one, the gateway
  // answers 429 at once.
  RequestDispatcher(const Router& router, const ChannelAuthenticator& authenticator,
                    int handler_threads, size_t max_queued);

  void Handle(HttpRequest request, Respond respond) override;

  // Returns how many requests wait for a handler thread.
  size_t queued() const { return handler_pool_.queued(); }

 private:
  struct Call;

  // Authenticates (when the route asks for it) and runs the route's handler.
  void Run(Call& call);
  // Records metrics and the access log line, then sends the response.
  void Complete(Call& call, HttpResponse response);

  const Router& router_;
  const ChannelAuthenticator& authenticator_;
  metrics::OperationMetrics metrics_;
  // Last, so it is destroyed first: the requests still queued run while the rest is alive.
  WorkerPool handler_pool_;
};

}  // namespace mkt::gateway
