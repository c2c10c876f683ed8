// A backend service the gateway calls over gRPC, by method descriptor rather than generated stub,
// so that a route table row ("this path → that RPC") is all a new endpoint needs. Each call gets
// a deadline, the request id and the actor as metadata (libs/rpc/actor.h); calls pass through the
// backend's circuit breaker, which answers 503 at once while the backend is known to be down; and
// every call is counted in mkt_gateway_backend_* by backend and method.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "libs/core/ids.h"
#include "libs/tenancy/tenancy.h"
#include "services/gateway/circuit_breaker.h"

namespace grpc {
class Channel;
}  // namespace grpc
namespace prometheus {
class Gauge;
}  // namespace prometheus

namespace mkt::gateway {

// Who a backend call is made for.
struct CallerIdentity {
  std::string request_id;
  // The operator (admin API) or the channel's org (channel API); unset for none.
  std::optional<tenancy::Actor> actor;
  // When set, made true if the backend says its answer is the stored outcome of an earlier
  // request under the same idempotency key (rpc::kIdempotentReplayedKey). Must stay alive until
  // the call ends.
  bool* replayed = nullptr;
};

class Backend {
 public:
  // `name` labels metrics and logs ("campaigns"); `target` is host:port. At most
  // `max_in_flight` calls run at once; more wait in a queue, without a thread, for a slot, and
  // one that waited longer than `timeout` is answered 503 DEPENDENCY_UNAVAILABLE without calling
  // (a burst is smoothed instead of piling onto the backend until every call misses its deadline).
  Backend(std::string name, const std::string& target, absl::Duration timeout,
          CircuitBreakerOptions breaker, const Clock& clock, int max_in_flight = 256);
  // Waits for the calls still running or waiting (each ends by its deadline at the latest).
  ~Backend();

  // Calls `method` (whose input and output types must be those of `request` and `response`).
  // Errors keep the backend's reason (mkt::ReasonOf); an open breaker is 503
  // DEPENDENCY_UNAVAILABLE without calling.
  absl::Status Call(const google::protobuf::MethodDescriptor& method,
                    const google::protobuf::Message& request, google::protobuf::Message* response,
                    const CallerIdentity& caller);

  // The same call without a thread waiting for it: `done` runs once with the outcome, on one of
  // gRPC's callback threads (or on this thread when the breaker refuses), after *response is
  // filled. `response` (and caller.replayed) must stay alive until then; `request` and `caller`
  // only for this call.
  // `done` must not block.
  //
  // `answer_failed`, when set, judges a successful call's parsed answer: true counts it against
  // the breaker as a failed call (an answer that carries many results, each with its own status,
  // can say the backend is unwell while the call itself succeeded).
  using Done = std::function<void(absl::Status)>;
  using AnswerFailed = std::function<bool(const google::protobuf::Message&)>;
  void CallAsync(const google::protobuf::MethodDescriptor& method,
                 const google::protobuf::Message& request, google::protobuf::Message* response,
                 const CallerIdentity& caller, Done done, AnswerFailed answer_failed = nullptr);

  const std::string& name() const { return name_; }
  CircuitBreaker& breaker() { return breaker_; }

 private:
  struct Stub;
  struct Pending;
  // Refuses at once while the breaker is open (and counts it); returns the 503 to answer.
  std::optional<absl::Status> RefusedByBreaker(const std::string& label);
  absl::Status BreakerRefusal(const std::string& label);
  // Makes the call, on a slot taken for it.
  void Start(std::unique_ptr<Pending> pending);
  // Parses the answer of a finished call, counts it against the breaker and the metrics, and
  // returns its outcome.
  absl::Status Finish(Pending& pending);
  // Ends a started call: its slot to the next waiting call, then `done`.
  void End(Done done, absl::Status outcome);
  // Gives a slot back: starts the next waiting call on it (answering those that waited too long
  // or that the breaker refuses), or frees it.
  void ReleaseSlot();
  const std::string name_;
  const absl::Duration timeout_;
  const int max_in_flight_;
  std::unique_ptr<Stub> stub_;
  CircuitBreaker breaker_;
  absl::Mutex mu_;
  // Calls taken by CallAsync and not yet ended (running or waiting); the destructor waits for 0.
  int accepted_ ABSL_GUARDED_BY(mu_) = 0;
  // Slots taken.
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<std::unique_ptr<Pending>> waiting_ ABSL_GUARDED_BY(mu_);
  // mkt_gateway_backend_calls{backend, state="running"|"waiting"}.
  prometheus::Gauge* running_gauge_;
  prometheus::Gauge* waiting_gauge_;
};

// Returns true when a status from a backend means the backend is unwell (and should count
// against its circuit breaker), as opposed to a well-formed refusal.
bool IsBackendFailure(const absl::Status& status);

}  // namespace mkt::gateway
