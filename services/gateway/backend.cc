#include "services/gateway/backend.h"

#include "services/gateway/http_message.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/codegen/proto_utils.h>

#include <algorithm>
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
#include "prometheus/gauge.h"

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

prometheus::Family<prometheus::Gauge>& Slots() {
  static auto& family = prometheus::BuildGauge()
                            .Name("mkt_gateway_backend_calls")
                            .Help(
                                "backend calls running (each holds one of backend_max_in_flight "
                                "slots) and waiting for a slot, now")
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
                 CircuitBreakerOptions breaker, const Clock& clock, int max_in_flight)
    : name_(std::move(name)),
      timeout_(timeout),
      max_in_flight_(std::max(1, max_in_flight)),
      stub_(std::make_unique<Stub>(rpc::Connect(target))),
      breaker_(name_, breaker, clock),
      running_gauge_(&Slots().Add({{"backend", name_}, {"state", "running"}})),
      waiting_gauge_(&Slots().Add({{"backend", name_}, {"state", "waiting"}})) {}

Backend::~Backend() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](int* accepted) { return *accepted == 0; }, &accepted_));
}

// One call, from CallAsync until it ends: what gRPC needs alive while it runs.
struct Backend::Pending {
  std::string label;
  std::string method_path;
  std::chrono::steady_clock::time_point queued;
  std::chrono::steady_clock::time_point start;
  grpc::ClientContext context;
  grpc::ByteBuffer request;
  grpc::ByteBuffer response;
  grpc::Status status;
  google::protobuf::Message* parsed = nullptr;
  bool* replayed = nullptr;
  Done done;
  AnswerFailed answer_failed;
};

std::optional<absl::Status> Backend::RefusedByBreaker(const std::string& label) {
  if (breaker_.Allow()) return std::nullopt;
  return BreakerRefusal(label);
}

absl::Status Backend::BreakerRefusal(const std::string& label) {
  RejectedByBreaker().Add({{"backend", name_}}).Increment();
  BackendMetrics().Record(label, "CIRCUIT_OPEN", 0);
  // Come back when the breaker lets a probe through, not sooner.
  return WithRetryAfter(
      Error(absl::StatusCode::kUnavailable, pb::DEPENDENCY_UNAVAILABLE,
            absl::StrCat("the ", name_, " service is unavailable (circuit open)")),
      breaker_.RetryAfter());
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
  breaker_.Record(IsBackendFailure(status) || (status.ok() && pending.answer_failed &&
                                               pending.answer_failed(*pending.parsed)),
                  latency);
  BackendMetrics().Record(pending.label, status.ok() ? "" : ReasonName(ReasonOf(status)),
                          absl::ToDoubleSeconds(latency));
  return status;
}

void Backend::CallAsync(const google::protobuf::MethodDescriptor& method,
                        const google::protobuf::Message& request,
                        google::protobuf::Message* response, const CallerIdentity& caller,
                        Done done, AnswerFailed answer_failed) {
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
  pending->method_path = absl::StrCat("/", method.service()->full_name(), "/", method.name());
  pending->queued = std::chrono::steady_clock::now();
  rpc::PrepareClientContext(pending->context, timeout_, caller.request_id);
  if (caller.actor) rpc::AttachActor(pending->context, *caller.actor);
  pending->parsed = response;
  pending->replayed = caller.replayed;
  pending->done = std::move(done);
  pending->answer_failed = std::move(answer_failed);

  bool queued = false;
  bool open = false;
  {
    absl::MutexLock lock(&mu_);
    if (running_ < max_in_flight_) {
      running_gauge_->Set(++running_);
      ++accepted_;
    } else if (breaker_.state() == CircuitBreaker::State::kOpen) {
      // Every slot is taken and the backend is known to be down: no point waiting.
      open = true;
    } else {
      // Every slot is taken: the call waits here, without a thread, for one to come free.
      ++accepted_;
      waiting_.push_back(std::move(pending));
      waiting_gauge_->Set(static_cast<double>(waiting_.size()));
      queued = true;
    }
  }
  if (queued) return;
  if (open) {
    Done refuse = std::move(pending->done);
    const std::string label = std::move(pending->label);
    pending.reset();
    return refuse(BreakerRefusal(label));
  }
  if (std::optional<absl::Status> refused = RefusedByBreaker(pending->label)) {
    Done refuse = std::move(pending->done);
    pending.reset();
    return End(std::move(refuse), *std::move(refused));
  }
  Start(std::move(pending));
}

void Backend::Start(std::unique_ptr<Pending> pending) {
  pending->start = std::chrono::steady_clock::now();
  // The deadline counts from the start, not from the wait for a slot.
  pending->context.set_deadline(std::chrono::system_clock::now() +
                                absl::ToChronoNanoseconds(timeout_));
  // gRPC owns the call from here; the callback takes the Pending back and ends it.
  Pending* raw = pending.release();
  stub_->stub.UnaryCall(&raw->context, raw->method_path, grpc::StubOptions(), &raw->request,
                        &raw->response, [this, raw](grpc::Status s) {
                          std::unique_ptr<Pending> owned(raw);
                          owned->status = std::move(s);
                          absl::Status outcome = Finish(*owned);
                          Done finished = std::move(owned->done);
                          owned.reset();
                          End(std::move(finished), std::move(outcome));
                        });
}

void Backend::End(Done done, absl::Status outcome) {
  // Counted off last, even if `done` throws (gRPC swallows it): the destructor waits for this
  // count. The slot goes to the next waiting call first.
  absl::Cleanup counted = [this] {
    absl::MutexLock lock(&mu_);
    --accepted_;
  };
  ReleaseSlot();
  done(std::move(outcome));
}

void Backend::ReleaseSlot() {
  for (;;) {
    std::unique_ptr<Pending> next;
    {
      absl::MutexLock lock(&mu_);
      if (waiting_.empty()) {
        running_gauge_->Set(--running_);
        return;
      }
      next = std::move(waiting_.front());
      waiting_.pop_front();
      waiting_gauge_->Set(static_cast<double>(waiting_.size()));
    }
    // The slot passes to `next`, unless it waited too long or the breaker refuses it.
    std::optional<absl::Status> refused;
    if (std::chrono::steady_clock::now() - next->queued > absl::ToChronoNanoseconds(timeout_)) {
      BackendMetrics().Record(next->label, "BACKEND_BUSY", 0);
      refused = Error(absl::StatusCode::kUnavailable, pb::DEPENDENCY_UNAVAILABLE,
                      absl::StrCat("the ", name_, " service is busy: the call waited ",
                                   absl::FormatDuration(timeout_), " for one of its ",
                                   max_in_flight_, " slots"));
    } else {
      refused = RefusedByBreaker(next->label);
    }
    if (!refused) return Start(std::move(next));
    Done refuse = std::move(next->done);
    next.reset();
    {
      absl::Cleanup counted = [this] {
        absl::MutexLock lock(&mu_);
        --accepted_;
      };
      refuse(*std::move(refused));
    }
  }
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
