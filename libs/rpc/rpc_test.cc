#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "libs/core/status.h"
#include "libs/metrics/metrics.h"
#include "libs/rpc/client.h"
#include "libs/rpc/server.h"

namespace mkt::rpc {
namespace {

namespace pb = ::marketing::common::v1;
using grpc::health::v1::Health;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

class RpcServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = Server::Start({.service_name = "unit", .address = "127.0.0.1:0"}, {});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    channel_ = Connect("127.0.0.1:" + std::to_string(server_->port()));
  }

  std::unique_ptr<Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(RpcServerTest, ServesHealthAndEchoesTheCallersRequestId) {
  auto stub = Health::NewStub(channel_);
  grpc::ClientContext ctx;
  PrepareClientContext(ctx, absl::Seconds(5), "req-abc");
  HealthCheckResponse resp;
  grpc::Status s = stub->Check(&ctx, HealthCheckRequest(), &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.status(), HealthCheckResponse::SERVING);
  auto md = ctx.GetServerInitialMetadata();
  auto it = md.find(kRequestIdKey);
  ASSERT_NE(it, md.end());
  EXPECT_EQ(std::string(it->second.data(), it->second.size()), "req-abc");
}

TEST_F(RpcServerTest, ReplacesMissingOrHostileRequestIds) {
  auto stub = Health::NewStub(channel_);
  for (const char* sent : {"", "bad id with spaces"}) {
    grpc::ClientContext ctx;
    PrepareClientContext(ctx, absl::Seconds(5), sent);
    HealthCheckResponse resp;
    ASSERT_TRUE(stub->Check(&ctx, HealthCheckRequest(), &resp).ok());
    auto md = ctx.GetServerInitialMetadata();
    auto it = md.find(kRequestIdKey);
    ASSERT_NE(it, md.end());
    std::string id(it->second.data(), it->second.size());
    EXPECT_EQ(id.size(), 32u) << "a fresh id replaces \"" << sent << "\"";
  }
}

TEST_F(RpcServerTest, RecordsPerMethodMetrics) {
  auto stub = Health::NewStub(channel_);
  for (int i = 0; i < 3; ++i) {
    grpc::ClientContext ctx;
    HealthCheckResponse resp;
    ASSERT_TRUE(stub->Check(&ctx, HealthCheckRequest(), &resp).ok());
  }
  grpc::ClientContext ctx;
  HealthCheckRequest unknown;
  unknown.set_service("no.such.Service");
  HealthCheckResponse resp;
  EXPECT_EQ(stub->Check(&ctx, unknown, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  std::string text = metrics::SerializeText();
  EXPECT_NE(text.find("mkt_unit_rpc_total{method=\"/grpc.health.v1.Health/Check\"}"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("mkt_unit_rpc_errors_total{code=\"NOT_FOUND\",method=\"/grpc.health.v1."
                      "Health/Check\"}"),
            std::string::npos)
      << text;
}

TEST_F(RpcServerTest, ServesReflection) {
  auto services = ListServices(channel_, absl::Seconds(5));
  ASSERT_TRUE(services.ok()) << services.status();
  EXPECT_THAT(*services, ::testing::IsSupersetOf({"grpc.health.v1.Health",
                                                  "grpc.reflection.v1alpha.ServerReflection"}));
}

TEST(RpcClientTest, ListServicesOfNothingIsUnavailable) {
  auto services = ListServices(Connect("127.0.0.1:1"), absl::Milliseconds(500));
  EXPECT_FALSE(services.ok());
}

TEST(RpcStatusTest, ReasonAndFieldCrossTheWire) {
  absl::Status original = Error(absl::StatusCode::kFailedPrecondition, pb::BUDGET_EXHAUSTED,
                                "campaign budget is spent", "budget");
  grpc::Status wire = ToGrpcStatus(original);
  EXPECT_EQ(wire.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  absl::Status back = FromGrpcStatus(wire);
  EXPECT_EQ(back.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ReasonOf(back), pb::BUDGET_EXHAUSTED);
  EXPECT_EQ(FieldOf(back), "budget");
  EXPECT_EQ(back.message(), "campaign budget is spent");
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_EQ(ReasonOf(FromGrpcStatus(grpc::Status(grpc::StatusCode::UNAVAILABLE, "conn refused"))),
            pb::DEPENDENCY_UNAVAILABLE);
}

TEST(RpcServerStartTest, BusyAddressIsAClearError) {
  auto first = Server::Start({.service_name = "unit2", .address = "127.0.0.1:0"}, {});
  ASSERT_TRUE(first.ok());
  std::string addr = "127.0.0.1:" + std::to_string((*first)->port());
  auto second = Server::Start({.service_name = "unit3", .address = addr}, {});
  ASSERT_FALSE(second.ok());
  EXPECT_NE(std::string(second.status().message()).find(addr), std::string::npos);
}

}  // namespace
}  // namespace mkt::rpc
