// What happens to every HTTP request between the server and a route handler, in one place so
// every endpoint behaves the same: the request id is bound to the log, the route is found
// (404/405 otherwise), the channel is authenticated when the route asks for it, the handler runs,
// failures become the JSON error shape, and each request is counted in mkt_gateway_http_* (by
// route template and error code) and written to the access log.
//
// Where the handler runs:
//   - a route with an async handler (a backend call nobody has to wait for) starts on the I/O
//     thread that read the request, when the channel's credential is cached (authentication
//     would not block) and fewer than max_queued such calls are in flight; the answer is sent
//     from the thread the backend's reply arrives on. The handler may leave a request (one that
//     needs the idempotency store) to the pool; that one, like every other request, goes to:
//   - the handler pool, where handlers may block;
//   - or the I/O thread itself for cheap routes (health, metrics).
#pragma once

#include <atomic>
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
  // answers 429 at once. At most `max_queued` requests wait for a backend through an async
  // handler; more go to the pool.
  RequestDispatcher(const Router& router, const ChannelAuthenticator& authenticator,
                    int handler_threads, size_t max_queued);

  // Waits for the requests async handlers still have in flight (each ends by its backend call's
  // deadline at the latest), so that no answer arrives at a dispatcher that is gone.
  ~RequestDispatcher() override;

  void Handle(HttpRequest request, Respond respond) override;

  // Returns how many requests wait for a handler thread.
  size_t queued() const { return handler_pool_.queued(); }
  // Returns how many requests an async handler took that are not answered yet.
  size_t async_in_flight() const { return async_in_flight_.load(); }

 private:
  struct Call;

  // Starts the route's async handler when it can run without blocking; returns false, having
  // checked and counted nothing, when the request should go to the handler pool instead.
  bool TryAsync(const std::shared_ptr<Call>& call);
  // Authenticates (when the route asks for it) and runs the route's handler.
  void Run(Call& call);
  // Turns the handler's result (or the authentication's refusal) into the response.
  void Finish(Call& call, absl::StatusOr<HttpResponse> result);
  // Records metrics and the access log line, then sends the response.
  void Complete(Call& call, HttpResponse response);

  const Router& router_;
  const ChannelAuthenticator& authenticator_;
  metrics::OperationMetrics metrics_;
  const size_t max_async_in_flight_;
  std::atomic<size_t> async_in_flight_{0};
  // Last, so it is destroyed first: the requests still queued run while the rest is alive.
  WorkerPool handler_pool_;
};

}  // namespace mkt::gateway
