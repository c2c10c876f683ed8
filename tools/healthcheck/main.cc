// mkt-healthcheck HOST:PORT [SERVICE]: asks a service's gRPC health endpoint; exits 0 when it
// answers SERVING, 1 otherwise (for ./dev status, container probes and scripts).
#include <iostream>

#include "grpc/health/v1/health.grpc.pb.h"
#include "libs/rpc/client.h"

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::cerr << "usage: " << argv[0] << " HOST:PORT [SERVICE]\n";
    return 2;
  }
  auto stub = grpc::health::v1::Health::NewStub(mkt::rpc::Connect(argv[1]));
  grpc::ClientContext ctx;
  mkt::rpc::PrepareClientContext(ctx, absl::Seconds(2), "healthcheck");
  grpc::health::v1::HealthCheckRequest req;
  if (argc == 3) req.set_service(argv[2]);
  grpc::health::v1::HealthCheckResponse resp;
  grpc::Status s = stub->Check(&ctx, req, &resp);
  if (!s.ok()) {
    std::cout << "unhealthy: " << s.error_message() << "\n";
    return 1;
  }
  std::cout << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status()) << "\n";
  return resp.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}
