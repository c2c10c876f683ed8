// A channel's view of the gateway: the channels service and the gateway run as processes against
// the real PostgreSQL and Kafka; the test registers a channel through the registry's gRPC API and
// then calls GET /v1/channel over HTTP, signed, forged, replayed, stale, oversized, and while
// the channel is disabled, re-enabled and re-keyed through the registry.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "libs/core/ids.h"
#include "libs/rpc/client.h"
#include "libs/testing/testing.h"
#include "marketing/channels/v1/channels.grpc.pb.h"
#include "services/gateway/http_test_client.h"

namespace mkt {
namespace {

namespace channels_pb = ::marketing::channels::v1;
using gateway::testing::Headers;
using gateway::testing::SignedHeaders;
using gateway::testing::TestHttpClient;
using gateway::testing::TestResponse;
using ::testing::HasSubstr;

// How soon a change made through the registry must be enforced by the gateway (the issue's
// acceptance bound; the credential TTL is 60 s, so meeting it proves the Kafka invalidation).
constexpr absl::Duration kPropagationBound = absl::Seconds(2);

class GatewayE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string dir = ::testing::TempDir();
    channels_log_ = dir + "gateway_e2e_channels.log";
    gateway_log_ = dir + "gateway_e2e_gateway.log";
    std::remove(channels_log_.c_str());
    std::remove(gateway_log_.c_str());

    const int channels_port = testing::FreePort();
    channels_target_ = absl::StrCat("127.0.0.1:", channels_port);
    channels_metrics_port_ = testing::FreePort();
    gateway_port_ = testing::FreePort();
    gateway_grpc_port_ = testing::FreePort();
    channels_ = std::make_unique<testing::ChildProcess>(
        std::vector<std::string>{testing::BinDir() + "/services/channels/mkt-channels"},
        std::map<std::string, std::string>{
            {"MKT_CHANNELS_PG_DSN", database_.dsn()},
            {"MKT_CHANNELS_KAFKA_BOOTSTRAP", testing::KafkaBootstrap()},
            {"MKT_CHANNELS_GRPC_ADDRESS", absl::StrCat("127.0.0.1:", channels_port)},
            {"MKT_CHANNELS_METRICS_ADDRESS", absl::StrCat("127.0.0.1:", channels_metrics_port_)},
            {"MKT_CHANNELS_SECRET_KEY", RandomHex(32)},
        },
        channels_log_);
    gateway_ = std::make_unique<testing::ChildProcess>(
        std::vector<std::string>{testing::BinDir() + "/services/gateway/mkt-gateway"},
        std::map<std::string, std::string>{
            {"MKT_GATEWAY_HTTP_ADDRESS", absl::StrCat("127.0.0.1:", gateway_port_)},
            {"MKT_GATEWAY_GRPC_ADDRESS", absl::StrCat("127.0.0.1:", gateway_grpc_port_)},
            {"MKT_GATEWAY_CHANNELS_TARGET", absl::StrCat("127.0.0.1:", channels_port)},
            {"MKT_GATEWAY_KAFKA_BOOTSTRAP", testing::KafkaBootstrap()},
        },
        gateway_log_);

    // A gRPC channel that failed to connect backs off for seconds; wait for the port first.
    ASSERT_TRUE(testing::WaitForPort(channels_port, absl::Seconds(60)))
        << "mkt-channels did not listen; its log:\n"
        << testing::Tail(channels_log_, 40);
    auto grpc_channel = rpc::Connect(absl::StrCat("127.0.0.1:", channels_port));
    registry_ = channels_pb::ChannelRegistry::NewStub(grpc_channel);
    ASSERT_TRUE(testing::WaitForGrpcHealth(grpc_channel, absl::Seconds(30)))
        << "mkt-channels did not become healthy; its log:\n"
        << testing::Tail(channels_log_, 40);
    ASSERT_TRUE(testing::WaitForHttp(gateway_port_, "/healthz", absl::Seconds(30)))
        << "mkt-gateway did not answer /healthz; its log:\n"
        << testing::Tail(gateway_log_, 40);
    ASSERT_TRUE(testing::WaitForPort(gateway_grpc_port_, absl::Seconds(30)));
    ASSERT_TRUE(testing::WaitForGrpcHealth(
        rpc::Connect(absl::StrCat("127.0.0.1:", gateway_grpc_port_)), absl::Seconds(30)))
        << "mkt-gateway did not serve gRPC health; its log:\n"
        << testing::Tail(gateway_log_, 40);
    client_ = std::make_unique<TestHttpClient>(gateway_port_);
  }

  void TearDown() override {
    if (HasFailure()) {
      std::cerr << "---- mkt-gateway log (tail) ----\n"
                << testing::Tail(gateway_log_, 60) << "---- mkt-channels log (tail) ----\n"
                << testing::Tail(channels_log_, 30);
    }
    // SIGTERM first: a clean stop is part of what the services promise.
    if (gateway_) {
      EXPECT_EQ(gateway_->Kill(SIGTERM), 0) << "mkt-gateway did not exit 0 on SIGTERM";
    }
    registry_.reset();
    if (channels_) {
      EXPECT_EQ(channels_->Kill(SIGTERM), 0) << "mkt-channels did not exit 0 on SIGTERM";
    }
  }

  channels_pb::ChannelWithSecret CreateChannel(const std::string& code, const std::string& org,
                                               const std::string& display_name) {
    channels_pb::CreateChannelRequest request;
    request.set_code(code);
    request.set_org_id(org);
    request.set_display_name(display_name);
    channels_pb::ChannelWithSecret created;
    grpc::ClientContext context;
    rpc::PrepareClientContext(context, absl::Seconds(10), "e2e-create");
    grpc::Status status = registry_->CreateChannel(&context, request, &created);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return created;
  }

  // Calls DisableChannel / EnableChannel / RotateSecret; returns when the registry answered.
  template <class Response, class Method>
  Response Call(Method method, const std::string& channel_id) {
    typename std::conditional_t<std::is_same_v<Response, channels_pb::ChannelWithSecret>,
                                channels_pb::RotateSecretRequest,
                                channels_pb::SetChannelEnabledRequest>
        request;
    request.set_id(channel_id);
    Response response;
    grpc::ClientContext context;
    rpc::PrepareClientContext(context, absl::Seconds(10), "e2e-change");
    grpc::Status status = ((*registry_).*method)(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  // Signs with a fresh nonce and the current time (shifted by `age`).
  Headers Signed(const std::string& secret, const std::string& channel_id,
                 const std::string& method = "GET", const std::string& target = "/v1/channel",
                 const std::string& body = "", absl::Duration age = absl::ZeroDuration()) {
    return SignedHeaders(secret, channel_id, method, target, body,
                         absl::ToUnixSeconds(absl::Now() - age), "e2e-" + RandomHex(12));
  }

  TestResponse GetChannel(const Headers& headers) {
    return client_->Send("GET", "/v1/channel", headers);
  }

  // Repeats a freshly signed GET /v1/channel every 50 ms until `done` holds for its response;
  // returns how long that took, or nullopt after `limit`.
  template <class Done>
  std::optional<absl::Duration> TimeUntil(const std::string& secret, const std::string& channel_id,
                                          Done done, absl::Duration limit) {
    const absl::Time start = absl::Now();
    while (absl::Now() - start < limit) {
      if (done(GetChannel(Signed(secret, channel_id)))) return absl::Now() - start;
      absl::SleepFor(absl::Milliseconds(50));
    }
    return std::nullopt;
  }

  // Returns how many channel changes the gateway's consumer has handled (from its /metrics).
  double ChangesHandled() {
    constexpr std::string_view kSeries = "mkt_gateway_channel_changes_consumer_total{";
    std::istringstream lines(client_->Send("GET", "/metrics").body);
    double total = 0;
    for (std::string line; std::getline(lines, line);) {
      if (line.rfind(kSeries, 0) == 0) total += std::stod(line.substr(line.rfind(' ') + 1));
    }
    return total;
  }

  // Waits until the gateway handled every change the test made so far, so that what it caches
  // next is not dropped by a change still on its way (which would let a timed step pass without
  // the change it times). Other tests may publish on the same topic: their changes can only make
  // this return early, never hang.
  void WaitForChangesHandled(absl::Duration timeout = absl::Seconds(10)) {
    const absl::Time deadline = absl::Now() + timeout;
    while (ChangesHandled() < changes_expected_) {
      ASSERT_LT(absl::Now(), deadline) << "the gateway handled " << ChangesHandled() << " of "
                                       << changes_expected_ << " channel changes";
      absl::SleepFor(absl::Milliseconds(20));
    }
  }

  // Records a change made through the registry (one message on the changes topic).
  void MadeChange() { changes_expected_ += 1; }

  static bool Is(const TestResponse& r, int status, const std::string& code = "") {
    return r.status == status && r.ErrorCode() == code;
  }

  static void ExpectError(const TestResponse& r, int status, const std::string& code) {
    EXPECT_EQ(r.status, status) << r.body;
    nlohmann::json body = r.Json();
    ASSERT_TRUE(body.is_object()) << r.body;
    EXPECT_EQ(body["error"]["code"], code) << r.body;
    EXPECT_TRUE(body["error"]["message"].is_string() &&
                !body["error"]["message"].get<std::string>().empty())
        << r.body;
    EXPECT_EQ(body["error"]["request_id"], r.Header("x-request-id")) << r.body;
    EXPECT_FALSE(r.Header("x-request-id").empty());
  }

  testing::TestDatabase database_;
  std::string channels_log_;
  std::string gateway_log_;
  std::string channels_target_;
  int channels_metrics_port_ = 0;
  int gateway_port_ = 0;
  int gateway_grpc_port_ = 0;
  std::unique_ptr<testing::ChildProcess> channels_;
  std::unique_ptr<testing::ChildProcess> gateway_;
  std::unique_ptr<channels_pb::ChannelRegistry::Stub> registry_;
  std::unique_ptr<TestHttpClient> client_;
  double changes_expected_ = 0;
};

// One scenario (the services start once): each step says what it proves.
TEST_F(GatewayE2eTest, ChannelCallsThroughTheGateway) {
  // The gateway learns of changes from Kafka, starting at the latest offset once its consumer
  // group is assigned. Before timing anything, prove the path is live with a probe channel:
  // cache it, disable it, and wait (generously) until the gateway refuses it.
  {
    channels_pb::ChannelWithSecret probe = CreateChannel("probe", "fed", "Listener probe");
    ASSERT_EQ(GetChannel(Signed(probe.secret(), probe.channel().id())).status, 200);
    Call<channels_pb::Channel>(&channels_pb::ChannelRegistry::Stub::DisableChannel,
                               probe.channel().id());
    ASSERT_TRUE(TimeUntil(
        probe.secret(), probe.channel().id(),
        [](const TestResponse& r) { return Is(r, 401, "CHANNEL_DISABLED"); }, absl::Seconds(30)))
        << "the gateway never saw the probe channel's change on Kafka";
    // The probe's own changes may still be arriving; the count that then holds still for half
    // a second is the baseline.
    double handled = ChangesHandled();
    for (absl::Time stable_since = absl::Now();
         absl::Now() - stable_since < absl::Milliseconds(500);) {
      absl::SleepFor(absl::Milliseconds(50));
      if (const double now = ChangesHandled(); now != handled) {
        handled = now;
        stable_since = absl::Now();
      }
    }
    changes_expected_ = handled;
  }

  channels_pb::ChannelWithSecret created = CreateChannel("mobile_banking", "fed", "Mobile banking");
  MadeChange();
  const std::string id = created.channel().id();
  std::string secret = created.secret();
  ASSERT_FALSE(id.empty());
  ASSERT_FALSE(secret.empty());

  // A correctly signed request answers with the caller's channel, org, code and the server time.
  {
    TestResponse ok = GetChannel(Signed(secret, id));
    ASSERT_EQ(ok.status, 200) << ok.body;
    nlohmann::json body = ok.Json();
    EXPECT_EQ(body["channel_id"], id);
    EXPECT_EQ(body["org_id"], "fed");
    // The registry sends the channel's code with its credential; the gateway acts only as it.
    EXPECT_EQ(body["code"], "mobile_banking");
    EXPECT_THAT(body["server_time"].get<std::string>(), ::testing::EndsWith("Z"));
    EXPECT_NEAR(body["server_time_unix"].get<int64_t>(), absl::ToUnixSeconds(absl::Now()), 5);
  }

  // Every authentication failure is a 401 with its own code, in the JSON error shape.
  {
    Headers wrong = Signed("not-the-secret", id);
    wrong.push_back({"X-Request-Id", "e2e-request-0001"});
    TestResponse forged = GetChannel(wrong);
    ExpectError(forged, 401, "SIGNATURE_INVALID");
    EXPECT_EQ(forged.Header("x-request-id"), "e2e-request-0001");
    EXPECT_EQ(forged.Json()["error"]["request_id"], "e2e-request-0001");

    // X-Timestamp is in whole seconds, rounded down, and the gateway reads its clock a moment
    // later: a timestamp signed `age` ago is seen as between `age` and `age` + 1 s + the trip
    // old. So 301 s is always outside the 300 s window, and 298 s (not 299) always inside.
    ExpectError(GetChannel(Signed(secret, id, "GET", "/v1/channel", "", absl::Seconds(301))), 401,
                "TIMESTAMP_OUT_OF_WINDOW");
    TestResponse inside =
        GetChannel(Signed(secret, id, "GET", "/v1/channel", "", absl::Seconds(298)));
    EXPECT_EQ(inside.status, 200) << inside.body;

    const Headers once = Signed(secret, id);
    EXPECT_EQ(GetChannel(once).status, 200);
    ExpectError(GetChannel(once), 401, "NONCE_REPLAYED");

    ExpectError(GetChannel(Signed(secret, "ch_0000000000000000")), 401, "CHANNEL_UNKNOWN");
    TestResponse missing = GetChannel({{"X-Channel-Id", id}});
    ExpectError(missing, 401, "CREDENTIALS_MISSING");
    EXPECT_THAT(missing.Json()["error"]["message"].get<std::string>(), HasSubstr("X-Signature"));
  }

  // A body over the 1 MiB limit is refused before it is read, and the gateway answers the next
  // request.
  {
    const std::string big(2 << 20, 'x');
    Headers headers = Signed(secret, id, "POST", "/v1/channel", big);
    headers.push_back({"X-Request-Id", "e2e-big-body"});
    TestResponse too_large = client_->Send("POST", "/v1/channel", headers, big);
    ExpectError(too_large, 413, "BODY_TOO_LARGE");
    EXPECT_EQ(too_large.Header("x-request-id"), "e2e-big-body");
    EXPECT_EQ(GetChannel(Signed(secret, id)).status, 200);
  }

  // Disabling the channel in the registry is enforced within the bound, without a restart...
  {
    WaitForChangesHandled();
    ASSERT_EQ(GetChannel(Signed(secret, id)).status, 200);  // cached in the gateway
    Call<channels_pb::Channel>(&channels_pb::ChannelRegistry::Stub::DisableChannel, id);
    MadeChange();
    std::optional<absl::Duration> took = TimeUntil(
        secret, id, [](const TestResponse& r) { return Is(r, 401, "CHANNEL_DISABLED"); },
        absl::Seconds(10));
    ASSERT_TRUE(took.has_value()) << "still accepted 10 s after DisableChannel";
    std::cout << "gateway refused the disabled channel " << absl::FormatDuration(*took)
              << " after DisableChannel returned\n";
    EXPECT_LE(*took, kPropagationBound);
  }
  // ...and so is enabling it again.
  {
    WaitForChangesHandled();
    ASSERT_EQ(GetChannel(Signed(secret, id)).ErrorCode(), "CHANNEL_DISABLED");  // cached
    Call<channels_pb::Channel>(&channels_pb::ChannelRegistry::Stub::EnableChannel, id);
    MadeChange();
    std::optional<absl::Duration> took = TimeUntil(
        secret, id, [](const TestResponse& r) { return r.status == 200; }, absl::Seconds(10));
    ASSERT_TRUE(took.has_value()) << "still refused 10 s after EnableChannel";
    std::cout << "gateway accepted the re-enabled channel " << absl::FormatDuration(*took)
              << " after EnableChannel returned\n";
    EXPECT_LE(*took, kPropagationBound);
  }

  // A rotated secret replaces the old one within the bound.
  {
    WaitForChangesHandled();
    ASSERT_EQ(GetChannel(Signed(secret, id)).status, 200);  // cached
    channels_pb::ChannelWithSecret rotated =
        Call<channels_pb::ChannelWithSecret>(&channels_pb::ChannelRegistry::Stub::RotateSecret, id);
    MadeChange();
    ASSERT_FALSE(rotated.secret().empty());
    ASSERT_NE(rotated.secret(), secret);
    std::optional<absl::Duration> took = TimeUntil(
        secret, id, [](const TestResponse& r) { return Is(r, 401, "SIGNATURE_INVALID"); },
        absl::Seconds(10));
    ASSERT_TRUE(took.has_value()) << "the old secret still works 10 s after RotateSecret";
    std::cout << "gateway refused the old secret " << absl::FormatDuration(*took)
              << " after RotateSecret returned\n";
    EXPECT_LE(*took, kPropagationBound);
    secret = rotated.secret();
    EXPECT_EQ(GetChannel(Signed(secret, id)).status, 200);
  }

  // Both services serve their metrics.
  {
    TestResponse metrics = client_->Send("GET", "/metrics");
    EXPECT_EQ(metrics.status, 200);
    EXPECT_THAT(metrics.body, HasSubstr("mkt_gateway_http_total"));
    EXPECT_THAT(
        metrics.body,
        HasSubstr(
            R"(mkt_gateway_http_errors_total{code="NONCE_REPLAYED",method="GET /v1/channel"})"));
    TestHttpClient channels_metrics(channels_metrics_port_);
    TestResponse channels = channels_metrics.Send("GET", "/metrics");
    EXPECT_EQ(channels.status, 200);
    EXPECT_THAT(channels.body, HasSubstr("mkt_channels_rpc_total"));
  }

  // Both serve gRPC health (checked in SetUp) and reflection.
  {
    auto channels = rpc::ListServices(rpc::Connect(channels_target_), absl::Seconds(5));
    ASSERT_TRUE(channels.ok()) << channels.status();
    EXPECT_THAT(*channels, ::testing::IsSupersetOf({"marketing.channels.v1.ChannelRegistry",
                                                    "grpc.health.v1.Health",
                                                    "grpc.reflection.v1alpha.ServerReflection"}));
    auto gateway = rpc::ListServices(rpc::Connect(absl::StrCat("127.0.0.1:", gateway_grpc_port_)),
                                     absl::Seconds(5));
    ASSERT_TRUE(gateway.ok()) << gateway.status();
    EXPECT_THAT(*gateway, ::testing::IsSupersetOf({"grpc.health.v1.Health",
                                                   "grpc.reflection.v1alpha.ServerReflection"}));
  }
}

}  // namespace
}  // namespace mkt
