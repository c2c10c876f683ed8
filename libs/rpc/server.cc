#include "libs/rpc/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/support/server_interceptor.h>
#include <signal.h>

#include <chrono>

#include "absl/synchronization/mutex.h"
#include "libs/core/ids.h"
#include "libs/core/status.h"
#include "libs/metrics/metrics.h"
#include "marketing/common/v1/errors.pb.h"
#include "spdlog/spdlog.h"

namespace mkt::rpc {
namespace {

namespace pb = ::marketing::common::v1;
using grpc::experimental::InterceptionHookPoints;

std::string CodeName(grpc::StatusCode code) {
  static const char* const kNames[] = {"OK",
                                       "CANCELLED",
                                       "UNKNOWN",
                                       "INVALID_ARGUMENT",
                                       "DEADLINE_EXCEEDED",
                                       "NOT_FOUND",
                                       "ALREADY_EXISTS",
                                       "PERMISSION_DENIED",
                                       "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION",
                                       "ABORTED",
                                       "OUT_OF_RANGE",
                                       "UNIMPLEMENTED",
                                       "INTERNAL",
                                       "UNAVAILABLE",
                                       "DATA_LOSS",
                                       "UNAUTHENTICATED"};
  int i = static_cast<int>(code);
  return (i >= 0 && i < 17) ? kNames[i] : "CODE_" + std::to_string(i);
}

// Per call: assigns the request id (the caller's, or a new one), echoes it in the response
// metadata, and at the end records metrics and writes the access log line.
class CallInterceptor final : public grpc::experimental::Interceptor {
 public:
  CallInterceptor(grpc::experimental::ServerRpcInfo* info, metrics::OperationMetrics* metrics,
                  bool access_log)
      : info_(info),
        metrics_(metrics),
        access_log_(access_log),
        start_(std::chrono::steady_clock::now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      auto* md = methods->GetRecvInitialMetadata();
      auto it = md->find(kRequestIdKey);
      if (it != md->end() &&
          IsValidRequestId(std::string_view(it->second.data(), it->second.size()))) {
        request_id_.assign(it->second.data(), it->second.size());
      } else {
        if (it != md->end()) md->erase(it);
        request_id_ = NewRequestId();
        md->emplace(grpc::string_ref(kRequestIdKey), grpc::string_ref(request_id_));
      }
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      if (!request_id_.empty())
        methods->GetSendInitialMetadata()->emplace(kRequestIdKey, request_id_);
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      grpc::Status status = methods->GetSendStatus();
      double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
      std::string code = status.ok() ? "" : CodeName(status.error_code());
      metrics_->Record(info_->method(), code, seconds);
      if (access_log_) {
        log::ScopedRequestId scoped(request_id_.empty() ? "-" : request_id_);
        spdlog::info("rpc {} {} {:.3f}ms{}{}", info_->method(), CodeName(status.error_code()),
                     seconds * 1000, status.ok() ? "" : " ", status.error_message());
      }
    }
    methods->Proceed();
  }

 private:
  grpc::experimental::ServerRpcInfo* info_;
  metrics::OperationMetrics* metrics_;
  bool access_log_;
  std::chrono::steady_clock::time_point start_;
  std::string request_id_;
};

class CallInterceptorFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit CallInterceptorFactory(const std::string& service_name, bool access_log)
      : metrics_("mkt_" + service_name + "_rpc", service_name + " gRPC calls"),
        access_log_(access_log) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new CallInterceptor(info, &metrics_, access_log_);
  }

 private:
  metrics::OperationMetrics metrics_;
  bool access_log_;
};

sigset_t TerminationSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const ServerOptions& options,
                                                      const std::vector<grpc::Service*>& services) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // Without this a second copy of a service would silently share the port (SO_REUSEPORT).
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  int port = 0;
  builder.AddListeningPort(options.address, grpc::InsecureServerCredentials(), &port);
  for (grpc::Service* service : services) builder.RegisterService(service);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> factories;
  factories.push_back(
      std::make_unique<CallInterceptorFactory>(options.service_name, options.access_log));
  builder.experimental().SetInterceptorCreators(std::move(factories));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return Unavailable("cannot listen for gRPC on " + options.address +
                       " (address in use or invalid)");
  }
  server->GetHealthCheckService()->SetServingStatus(true);
  spdlog::info("{} serving gRPC on port {}", options.service_name, port);
  return std::unique_ptr<Server>(new Server(std::move(server), port));
}

Server::~Server() { Shutdown(absl::Seconds(5)); }

void Server::Shutdown(absl::Duration grace) {
  if (shut_down_) return;
  shut_down_ = true;
  server_->GetHealthCheckService()->SetServingStatus(false);
  server_->Shutdown(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(grace));
  server_->Wait();
}

void PrepareServiceProcess() {
  sigset_t set = TerminationSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
#ifdef NDEBUG
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
}

int WaitForTerminationSignal() {
  sigset_t set = TerminationSignals();
  int sig = 0;
  sigwait(&set, &sig);
  return sig;
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  pb::ErrorDetail detail;
  detail.set_reason(ReasonOf(status));
  detail.set_field(FieldOf(status));
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()),
                      detail.SerializeAsString());
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  auto code = static_cast<absl::StatusCode>(status.error_code());
  pb::ErrorDetail detail;
  if (!status.error_details().empty() && detail.ParseFromString(status.error_details()) &&
      detail.reason() != pb::ERROR_REASON_UNSPECIFIED) {
    return Error(code, detail.reason(), status.error_message(), detail.field());
  }
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    return Unavailable("dependency unavailable: " + status.error_message());
  }
  return absl::Status(code, status.error_message());
}

std::string RequestIdOf(const grpc::CallbackServerContext& context) {
  const auto& md = context.client_metadata();
  auto it = md.find(kRequestIdKey);
  if (it != md.end()) return std::string(it->second.data(), it->second.size());
  return NewRequestId();
}

}  // namespace mkt::rpc
