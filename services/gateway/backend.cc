#include "services/gateway/backend.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <vector>

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

Backend::~Backend() = default;

absl::Status Backend::Call(const google::protobuf::MethodDescriptor& method,
                           const google::protobuf::Message& request,
                           google::protobuf::Message* response, const CallerIdentity& caller) {
  const std::string label = absl::StrCat(name_, "/", method.name());
  if (!breaker_.Allow()) {
    RejectedByBreaker().Add({{"backend", name_}}).Increment();
    BackendMetrics().Record(label, "CIRCUIT_OPEN", 0);
    return Error(absl::StatusCode::kUnavailable, pb::DEPENDENCY_UNAVAILABLE,
                 absl::StrCat("the ", name_, " service is unavailable (circuit open)"));
  }
  const auto start = std::chrono::steady_clock::now();
  grpc::ClientContext context;
  rpc::PrepareClientContext(context, timeout_, caller.request_id);
  if (caller.actor) rpc::AttachActor(context, *caller.actor);

  std::string serialized;
  request.SerializeToString(&serialized);
  grpc::Slice slice(serialized);
  grpc::ByteBuffer request_buffer(&slice, 1);
  grpc::ByteBuffer response_buffer;
  grpc::Status grpc_status;
  absl::Notification done;
  stub_->stub.UnaryCall(
      &context, absl::StrCat("/", method.service()->full_name(), "/", method.name()),
      grpc::StubOptions(), &request_buffer, &response_buffer, [&](grpc::Status s) {
        grpc_status = std::move(s);
        done.Notify();
      });
  done.WaitForNotification();

  absl::Status status = rpc::FromGrpcStatus(grpc_status);
  if (status.ok()) {
    std::vector<grpc::Slice> slices;
    std::string bytes;
    if (response_buffer.Dump(&slices).ok()) {
      for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
    if (!response->ParseFromString(bytes)) {
      status = Internal(absl::StrCat(label, " answered a response that does not parse"));
    }
  }
  const absl::Duration latency = absl::FromChrono(std::chrono::steady_clock::now() - start);
  breaker_.Record(IsBackendFailure(status), latency);
  BackendMetrics().Record(label, status.ok() ? "" : ReasonName(ReasonOf(status)),
                          absl::ToDoubleSeconds(latency));
  return status;
}

}  // namespace mkt::gateway
