#include "services/gateway/backend.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/codegen/proto_utils.h>

#include <chrono>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "libs/core/status.h"
#include "libs/metrics/metrics.h"
#include "libs/rpc/actor.h"
#include "libs/rpc/client.h"
#include "libs/rpc/server.h"
#include "prometheus/counter.h"

namespace mkt::gateway {
namespace {

namespace pb = ::marketing::common::v1;

metrics::OperationMetrics& BackendMetrics() {
  static auto* m =
      new metrics::OperationMetrics("mkt_gateway_backend", "calls to backend services");
  return *m;
}

prometheus::Family<prometheus::Counter>& RejectedByBreaker() {
  static auto& family = prometheus::BuildCounter()
                            .Name("mkt_gateway_circuit_rejections_total")
                            .Help("backend calls refused at once because the breaker was open")
                            .Register(metrics::Registry());
  return family;
}

}  // namespace

struct Backend::Stub {
  std::shared_ptr<grpc::Channel> channel;
  grpc::GenericStub stub;
  explicit Stub(std::shared_ptr<grpc::Channel> c) : channel(c), stub(std::move(c)) {}
};

bool IsBackendFailure(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kDataLoss:
      return true;
    default:
      return false;
  }
}

Backend::Backend(std::string name, const std::string& target, absl::Duration timeout,
                 CircuitBreakerOptions breaker, const Clock& clock)
    : name_(std::move(name)),
      timeout_(timeout),
      stub_(std::make_unique<Stub>(rpc::Connect(target))),
      breaker_(name_, breaker, clock) {}

Backend::~Backend() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](int* in_flight) { return *in_flight == 0; }, &in_flight_));
}

// One call in flight: what gRPC needs alive until the call ends.
struct Backend::Pending {
  std::string label;
  std::chrono::steady_clock::time_point start;
  grpc::ClientContext context;
  grpc::ByteBuffer request;
  grpc::ByteBuffer response;
  grpc::Status status;
  google::protobuf::Message* parsed = nullptr;
  bool* replayed = nullptr;
  Done done;
};

std::optional<absl::Status> Backend::RefusedByBreaker(const std::string& label) {
  if (breaker_.Allow()) return std::nullopt;
  RejectedByBreaker().Add({{"backend", name_}}).Increment();
  BackendMetrics().Record(label, "CIRCUIT_OPEN", 0);
  return Error(absl::StatusCode::kUnavailable, pb::DEPENDENCY_UNAVAILABLE,
               absl::StrCat("the ", name_, " service is unavailable (circuit open)"));
}

absl::Status Backend::Finish(Pending& pending) {
  absl::Status status = rpc::FromGrpcStatus(pending.status);
  // Parsed from gRPC's slices as they are, without copying them into one string first.
  if (status.ok() && !grpc::SerializationTraits<google::protobuf::Message>::Deserialize(
                          &pending.response, pending.parsed)
                          .ok()) {
    status = Internal(absl::StrCat(pending.label, " answered a response that does not parse"));
  }
  if (pending.replayed != nullptr) {
    const auto& trailers = pending.context.GetServerTrailingMetadata();
    auto it = trailers.find(rpc::kIdempotentReplayedKey);
    if (it != trailers.end() && it->second == "true") *pending.replayed = true;
  }
  const absl::Duration latency = absl::FromChrono(std::chrono::steady_clock::now() - pending.start);
  breaker_.Record(IsBackendFailure(status), latency);
  BackendMetrics().Record(pending.label, status.ok() ? "" : ReasonName(ReasonOf(status)),
                          absl::ToDoubleSeconds(latency));
  return status;
}

void Backend::CallAsync(const google::protobuf::MethodDescriptor& method,
                        const google::protobuf::Message& request,
                        google::protobuf::Message* response, const CallerIdentity& caller,
                        Done done) {
  auto pending = std::make_unique<Pending>();
  pending->label = absl::StrCat(name_, "/", method.name());
  // Written straight into gRPC's slices; before the breaker, which expects an outcome for every
  // call it lets through.
  bool own_buffer = false;
  if (const grpc::Status serialized =
          grpc::SerializationTraits<google::protobuf::Message>::Serialize(
              request, &pending->request, &own_buffer);
      !serialized.ok()) {
    return done(Internal(absl::StrCat(
        pending->label, ": the request does not serialize: ", serialized.error_message())));
  }
  if (std::optional<absl::Status> refused = RefusedByBreaker(pending->label)) {
    return done(*std::move(refused));
  }
  pending->start = std::chrono::steady_clock::now();
  rpc::PrepareClientContext(pending->context, timeout_, caller.request_id);
  if (caller.actor) rpc::AttachActor(pending->context, *caller.actor);
  pending->parsed = response;
  pending->replayed = caller.replayed;
  pending->done = std::move(done);

  // gRPC owns the call from here; the callback takes the Pending back and ends it.
  {
    absl::MutexLock lock(&mu_);
    ++in_flight_;
  }
  Pending* raw = pending.release();
  stub_->stub.UnaryCall(
      &raw->context, absl::StrCat("/", method.service()->full_name(), "/", method.name()),
      grpc::StubOptions(), &raw->request, &raw->response, [this, raw](grpc::Status s) {
        // Counted off last, even if `done` throws (gRPC swallows it): the
        // destructor waits for this count.
        absl::Cleanup counted = [this] {
          absl::MutexLock lock(&mu_);
          --in_flight_;
        };
        std::unique_ptr<Pending> owned(raw);
        owned->status = std::move(s);
        absl::Status outcome = Finish(*owned);
        Done finished = std::move(owned->done);
        owned.reset();
        finished(std::move(outcome));
      });
}

absl::Status Backend::Call(const google::protobuf::MethodDescriptor& method,
                           const google::protobuf::Message& request,
                           google::protobuf::Message* response, const CallerIdentity& caller) {
  absl::Status outcome;
  absl::Notification done;
  CallAsync(method, request, response, caller, [&](absl::Status s) {
    outcome = std::move(s);
    done.Notify();
  });
  done.WaitForNotification();
  return outcome;
}

}  // namespace mkt::gateway
