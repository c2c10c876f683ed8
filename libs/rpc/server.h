// gRPC server bootstrap shared by every service: callback API, the standard health service,
// reflection, interceptors (request id, access log, per-method count/error/latency metrics),
// graceful shutdown on SIGTERM/SIGINT, and the glue that runs blocking handlers on a worker pool.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "libs/core/worker_pool.h"
#include "libs/log/log.h"

namespace mkt::rpc {

// The metadata key that carries the request id between processes.
inline constexpr char kRequestIdKey[] = "x-request-id";
// The trailing metadata key ("true") by which a service says that its answer is the stored
// outcome of an earlier request under the same idempotency key; the gateway turns it into the
// header Idempotent-Replayed.
inline constexpr char kIdempotentReplayedKey[] = "x-mkt-idempotent-replayed";

struct ServerOptions {
  // Names metrics (mkt_<service_name>_rpc_...) and log lines.
  std::string service_name;
  // host:port to listen on; port 0 picks a free port (see Server::port()).
  std::string address;
  // One info line per call (method, code, latency). Failures are always counted in metrics.
  bool access_log = true;
};

class Server {
 public:
  // Builds and starts a server for `services` (not owned; they must outlive the server) with
  // health (reported SERVING) and reflection enabled.
  static absl::StatusOr<std::unique_ptr<Server>> Start(const ServerOptions& options,
                                                       const std::vector<grpc::Service*>& services);
  ~Server();

  // The port actually bound.
  int port() const { return port_; }

  // Marks health NOT_SERVING, lets running calls finish for up to `grace`, then stops.
  void Shutdown(absl::Duration grace);

 private:
  Server(std::unique_ptr<grpc::Server> server, int port)
      : server_(std::move(server)), port_(port) {}
  std::unique_ptr<grpc::Server> server_;
  int port_;
  bool shut_down_ = false;
};

// Prepares a service's process; call first thing in main(). Blocks SIGTERM and SIGINT in the
// calling thread and every thread it starts afterwards (WaitForTerminationSignal takes them). In
// builds with NDEBUG it also turns Abseil's mutex deadlock detection off: Debian builds Abseil
// with it on, and then every lock and unlock goes through one process-wide lock graph (2-3 % of
// a service's CPU under load, in the P3 profiles); the debug builds the tests run keep it.
void PrepareServiceProcess();
// Waits until SIGTERM or SIGINT arrives; returns the signal number.
int WaitForTerminationSignal();

// Converts a status to a gRPC status whose details carry the ErrorDetail (reason, field).
grpc::Status ToGrpcStatus(const absl::Status& status);
// Converts a gRPC status (from a call to another service) back, keeping reason and field.
absl::Status FromGrpcStatus(const grpc::Status& status);

// Returns the request id of the call (set by the request-id interceptor, never empty).
std::string RequestIdOf(const grpc::CallbackServerContext& context);

// Runs `work` (returning absl::Status, may block on the database) on `pool` and finishes the
// call with its status. Answers RESOURCE_EXHAUSTED at once when the pool's queue is full.
// The request id of the call is bound to the worker thread while `work` runs.
template <class Work>
grpc::ServerUnaryReactor* RunBlocking(grpc::CallbackServerContext* context, WorkerPool& pool,
                                      Work work) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  std::string request_id = RequestIdOf(*context);
  bool queued = pool.TrySubmit([reactor, request_id, work = std::move(work)]() mutable {
    mkt::log::ScopedRequestId scoped(request_id);
    reactor->Finish(ToGrpcStatus(work()));
  });
  if (!queued) {
    reactor->Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                 "server overloaded: too many requests queued, retry later"));
  }
  return reactor;
}

// Like RunBlocking for a `call` returning absl::StatusOr<Response>: on success its value is
// moved into `response` (the call's response message, owned by gRPC).
template <class Response, class Call>
grpc::ServerUnaryReactor* RunBlockingInto(grpc::CallbackServerContext* context, WorkerPool& pool,
                                          Response* response, Call call) {
  return RunBlocking(context, pool, [response, call = std::move(call)]() mutable -> absl::Status {
    auto result = call();
    if (!result.ok()) return result.status();
    *response = *std::move(result);
    return absl::OkStatus();
  });
}

}  // namespace mkt::rpc
