// The REST API through the real services: mkt-channels, mkt-campaigns, mkt-segments and
// mkt-gateway run as processes on fresh databases and the real Kafka. The test signs in as the
// bootstrap admin, sets up orgs, operators and channels through /admin/v1, then drives the
// channel API (/v1/events, /v1/tracking) with signed requests and their error paths, the
// admin API's security rules on every route of the table (401 without or with a bad token, 403
// without the role, 403/404 across member banks), the lock-out after five wrong passwords, and a
// campaign through its maker-checker lifecycle over REST.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "libs/core/ids.h"
#include "libs/kafka/kafka.h"
#include "libs/rpc/actor.h"
#include "libs/rpc/client.h"
#include "libs/testing/testing.h"
#include "marketing/common/v1/envelope.pb.h"
#include "marketing/events/v1/business_event.pb.h"
#include "marketing/events/v1/events.grpc.pb.h"
#include "services/campaigns/test_configs.h"
#include "services/gateway/admin_auth.h"
#include "services/gateway/api_routes.h"
#include "services/gateway/http_test_client.h"
#include "services/gateway/json_codec.h"

namespace mkt {
namespace {

using gateway::testing::Headers;
using gateway::testing::SignedHeaders;
using gateway::testing::TestHttpClient;
using gateway::testing::TestResponse;
using ::testing::HasSubstr;
using Json = nlohmann::json;

constexpr char kAdminPassword[] = "bootstrap-admin-password";
constexpr char kTokenKey[] = "e2e-token-key-0123456789";

struct Process {
  std::unique_ptr<testing::ChildProcess> child;
  std::string log;
  int port = 0;
};

class GatewayApiE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    env_ = new Env();
    env_->Start();
  }
  static void TearDownTestSuite() {
    env_->Stop();
    delete env_;
    env_ = nullptr;
  }

  struct Env {
    testing::TestDatabase channels_db, campaigns_db, segments_db, events_db, gateway_db;
    Process channels, campaigns, segments, events, gateway;
    std::string events_topic, tracking_topic, catalog;
    bool healthy = false;
    // A port bound but never listened on, held for the whole suite: connections to it are refused
    // at once, and no other process (a real mkt-rewards of a test running in parallel, which
    // once answered 429 from its own full queue) can take it. Its number is the rewards target.
    int dead_socket = -1;
    int dead_port = 0;

    void HoldDeadPort() {
      dead_socket = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      ASSERT_GE(dead_socket, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      socklen_t len = sizeof(addr);
      ASSERT_EQ(::bind(dead_socket, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
      ASSERT_EQ(::getsockname(dead_socket, reinterpret_cast<sockaddr*>(&addr), &len), 0);
      dead_port = ntohs(addr.sin_port);
    }

    Process Spawn(const std::string& name, const std::string& binary,
                  std::map<std::string, std::string> env) {
      Process p;
      p.log = ::testing::TempDir() + "gateway_api_e2e_" + name + "_" + RandomHex(3) + ".log";
      p.child = std::make_unique<testing::ChildProcess>(
          std::vector<std::string>{testing::BinDir() + binary}, std::move(env), p.log);
      return p;
    }

    void Start() {
      HoldDeadPort();
      if (dead_port == 0) return;
      events_topic = testing::NewTopic("e2e.business-events", 1);
      tracking_topic = testing::NewTopic("e2e.tracking", 1);
      catalog = ::testing::TempDir() + "gateway_api_catalog_" + RandomHex(4) + ".json";
      std::ofstream(catalog) << campaigns::test::kReferenceJson;
      const int channels_port = testing::FreePort();
      channels =
          Spawn("channels", "/services/channels/mkt-channels",
                {{"MKT_CHANNELS_PG_DSN", channels_db.dsn()},
                 {"MKT_CHANNELS_KAFKA_BOOTSTRAP", testing::KafkaBootstrap()},
                 {"MKT_CHANNELS_GRPC_ADDRESS", absl::StrCat("127.0.0.1:", channels_port)},
                 {"MKT_CHANNELS_METRICS_ADDRESS", absl::StrCat("127.0.0.1:", testing::FreePort())},
                 {"MKT_CHANNELS_SECRET_KEY", RandomHex(32)}});
      channels.port = channels_port;
      const int campaigns_port = testing::FreePort();
      campaigns =
          Spawn("campaigns", "/services/campaigns/mkt-campaigns",
                {{"MKT_CAMPAIGNS_PG_DSN", campaigns_db.dsn()},
                 {"MKT_CAMPAIGNS_KAFKA_BOOTSTRAP", testing::KafkaBootstrap()},
                 {"MKT_CAMPAIGNS_GRPC_ADDRESS", absl::StrCat("127.0.0.1:", campaigns_port)},
                 {"MKT_CAMPAIGNS_METRICS_ADDRESS", absl::StrCat("127.0.0.1:", testing::FreePort())},
                 {"MKT_CAMPAIGNS_REFERENCE_SOURCE", "catalog"},
                 {"MKT_CAMPAIGNS_CATALOG_FILE", catalog}});
      campaigns.port = campaigns_port;
      const int segments_port = testing::FreePort();
      const std::string profiles = testing::NewTopic("e2e.profiles", 1);
      segments =
          Spawn("segments", "/services/segments/mkt-segments",
                {{"MKT_SEGMENTS_PG_DSN", segments_db.dsn()},
                 {"MKT_SEGMENTS_KAFKA_BOOTSTRAP", testing::KafkaBootstrap()},
                 {"MKT_SEGMENTS_GRPC_ADDRESS", absl::StrCat("127.0.0.1:", segments_port)},
                 {"MKT_SEGMENTS_METRICS_ADDRESS", absl::StrCat("127.0.0.1:", testing::FreePort())},
                 {"MKT_SEGMENTS_PROFILES_TOPIC", profiles},
                 {"MKT_SEGMENTS_BUSINESS_EVENTS_TOPIC", ""},
                 {"MKT_SEGMENTS_DEAD_LETTER_TOPIC", profiles + ".dead"},
                 {"MKT_SEGMENTS_REPLICA_ID", "e2e-" + RandomHex(4)},
                 {"MKT_SEGMENTS_RFM_INTERVAL_S", "0"}});
      segments.port = segments_port;
      // The events service logs what the gateway publishes; its grants go nowhere (rewards is
      // down), which the event log and the explanations do not need.
      const int events_port = testing::FreePort();
      events =
          Spawn("events", "/services/events/mkt-events",
                {{"MKT_EVENTS_PG_DSN", events_db.dsn()},
                 {"MKT_EVENTS_KAFKA_BOOTSTRAP", testing::KafkaBootstrap()},
                 {"MKT_EVENTS_GRPC_ADDRESS", absl::StrCat("127.0.0.1:", events_port)},
                 {"MKT_EVENTS_METRICS_ADDRESS", absl::StrCat("127.0.0.1:", testing::FreePort())},
                 {"MKT_EVENTS_EVENTS_TOPIC", events_topic},
                 {"MKT_EVENTS_DEAD_LETTER_TOPIC", events_topic + ".dead"},
                 {"MKT_EVENTS_CAMPAIGN_CHANGES_TOPIC", testing::NewTopic("e2e.changes", 1)},
                 {"MKT_EVENTS_CONSUMER_GROUP", "gateway-api-e2e-" + RandomHex(4)},
                 {"MKT_EVENTS_REWARDS_ADDRESS", absl::StrCat("127.0.0.1:", dead_port)}});
      events.port = events_port;
      const int gateway_port = testing::FreePort();
      gateway =
          Spawn("gateway", "/services/gateway/mkt-gateway",
                {{"MKT_GATEWAY_HTTP_ADDRESS", absl::StrCat("127.0.0.1:", gateway_port)},
                 {"MKT_GATEWAY_GRPC_ADDRESS", absl::StrCat("127.0.0.1:", testing::FreePort())},
                 {"MKT_GATEWAY_CHANNELS_TARGET", absl::StrCat("127.0.0.1:", channels_port)},
                 {"MKT_GATEWAY_CAMPAIGNS_TARGET", absl::StrCat("127.0.0.1:", campaigns_port)},
                 {"MKT_GATEWAY_SEGMENTS_TARGET", absl::StrCat("127.0.0.1:", segments_port)},
                 {"MKT_GATEWAY_EVENTS_TARGET", absl::StrCat("127.0.0.1:", events_port)},
                 // Nothing listens there: the rewards routes answer 503 and trip the breaker.
                 {"MKT_GATEWAY_REWARDS_TARGET", absl::StrCat("127.0.0.1:", dead_port)},
                 {"MKT_GATEWAY_KAFKA_BOOTSTRAP", testing::KafkaBootstrap()},
                 {"MKT_GATEWAY_PG_DSN", gateway_db.dsn()},
                 {"MKT_GATEWAY_BUSINESS_EVENTS_TOPIC", events_topic},
                 {"MKT_GATEWAY_TRACKING_TOPIC", tracking_topic},
                 {"MKT_GATEWAY_TOKEN_KEY", kTokenKey},
                 {"MKT_GATEWAY_BOOTSTRAP_ADMIN_PASSWORD", kAdminPassword},
                 {"MKT_GATEWAY_SCRYPT_N", "1024"},
                 {"MKT_GATEWAY_CHANNEL_RATE", "2"},
                 {"MKT_GATEWAY_CHANNEL_BURST", "12"},
                 {"MKT_GATEWAY_OPERATOR_RATE", "0"},
                 {"MKT_GATEWAY_MAX_BODY_BYTES", "65536"}});
      gateway.port = gateway_port;
      for (const Process* p : {&channels, &campaigns, &segments, &events}) {
        if (!testing::WaitForPort(p->port, absl::Seconds(60)) ||
            !testing::WaitForGrpcHealth(rpc::Connect(absl::StrCat("127.0.0.1:", p->port)),
                                        absl::Seconds(30))) {
          std::cerr << "a backend did not start:\n" << testing::Tail(p->log, 40);
          return;
        }
      }
      if (!testing::WaitForHttp(gateway.port, "/healthz", absl::Seconds(60))) {
        std::cerr << "gateway did not start:\n" << testing::Tail(gateway.log, 40);
        return;
      }
      healthy = true;
    }

    void Stop() {
      if (dead_socket >= 0) ::close(dead_socket);
      if (gateway.child) {
        EXPECT_EQ(gateway.child->Kill(SIGTERM), 0) << testing::Tail(gateway.log, 30);
      }
      for (Process* p : {&events, &segments, &campaigns, &channels}) {
        if (p->child) p->child->Kill(SIGTERM);
      }
    }
  };

  void SetUp() override {
    ASSERT_NE(env_, nullptr);
    ASSERT_TRUE(env_->healthy) << "the services did not start";
    client_ = std::make_unique<TestHttpClient>(env_->gateway.port);
  }

  void TearDown() override {
    if (HasFailure()) {
      std::cerr << "---- mkt-gateway log (tail) ----\n" << testing::Tail(env_->gateway.log, 40);
    }
  }

  TestResponse Admin(const std::string& token, const std::string& method, const std::string& target,
                     const Json& body = nullptr, Headers extra = {}) {
    Headers headers = std::move(extra);
    if (!token.empty()) headers.emplace_back("Authorization", "Bearer " + token);
    headers.emplace_back("Content-Type", "application/json");
    return client_->Send(method, target, headers, body.is_null() ? "" : body.dump());
  }

  std::string SignIn(const std::string& id, const std::string& password) {
    TestResponse r =
        Admin("", "POST", "/admin/v1/sessions", {{"operator_id", id}, {"password", password}});
    EXPECT_EQ(r.status, 201) << r.body;
    return r.Json().value("token", "");
  }

  std::string RootToken() {
    static std::string token;
    if (token.empty()) token = SignIn("admin", kAdminPassword);
    return token;
  }

  // Creates (once) the orgs and an operator, and returns a session token for it.
  std::string Operator(const std::string& id, const std::string& org,
                       const std::vector<std::string>& roles) {
    for (const std::string& o : {std::string("bank-a"), std::string("bank-b")}) {
      TestResponse r = Admin(RootToken(), "POST", "/admin/v1/orgs",
                             {{"id", o}, {"display_name", o}, {"region", "north"}});
      EXPECT_TRUE(r.status == 200 || r.status == 409) << r.body;
    }
    TestResponse r =
        Admin(RootToken(), "POST", "/admin/v1/operators",
              {{"id", id}, {"org_id", org}, {"roles", roles}, {"password", "password-of-" + id}});
    EXPECT_TRUE(r.status == 201 || r.status == 409) << r.body;
    return SignIn(id, "password-of-" + id);
  }

  struct ChannelCredentials {
    std::string id;
    std::string secret;
  };

  ChannelCredentials NewChannel(const std::string& org = "bank-a") {
    Operator("setup", "fed", {"admin"});
    TestResponse r = Admin(RootToken(), "POST", "/admin/v1/channels",
                           {{"code", "mobile_banking_" + RandomHex(3)},
                            {"display_name", "Mobile banking"},
                            {"org_id", org}});
    EXPECT_EQ(r.status, 200) << r.body;
    return {r.Json()["channel"]["id"], r.Json()["secret"]};
  }

  TestResponse Signed(const ChannelCredentials& ch, const std::string& method,
                      const std::string& target, const std::string& body,
                      const std::string& idempotency_key = "") {
    Headers h = SignedHeaders(ch.secret, ch.id, method, target, body,
                              absl::ToUnixSeconds(absl::Now()), "n" + RandomHex(8));
    if (!idempotency_key.empty()) h.emplace_back("Idempotency-Key", idempotency_key);
    h.emplace_back("Content-Type", "application/json");
    return client_->Send(method, target, h, body);
  }

  // Every route of the gateway's table, as a concrete request target.
  static std::vector<gateway::ApiRoute> Routes() {
    struct Table {
      gateway::Router router;
      gateway::ApiService api{{}, SystemClock(), nullptr, nullptr};
    };
    static Table* table = [] {
      auto* t = new Table();
      gateway::ApiDependencies deps;
      deps.clock = &SystemClock();
      EXPECT_TRUE(gateway::RegisterApiRoutes(t->api, t->router, deps).ok());
      return t;
    }();
    return {table->api.routes().begin(), table->api.routes().end()};
  }

  static std::string Concrete(const std::string& path) {
    std::string out;
    for (size_t i = 0; i < path.size(); ++i) {
      if (path[i] == '{') {
        const size_t close = path.find('}', i);
        const std::string name = path.substr(i + 1, close - i - 1);
        out += name == "step" ? "STEP_BASICS" : "x1";
        i = close;
      } else {
        out.push_back(path[i]);
      }
    }
    return out;
  }

  static Env* env_;
  std::unique_ptr<TestHttpClient> client_;
};

GatewayApiE2eTest::Env* GatewayApiE2eTest::env_ = nullptr;

// ---- Channel API
// ---------------------------------------------------------------------------------

TEST_F(GatewayApiE2eTest, EventsArePublishedOnceAndReplaysAreIdempotent) {
  ChannelCredentials ch = NewChannel();
  const std::string body = Json{
      {"source_event_id", "TX-" + RandomHex(4)},
      {"event_type", "card.activated"},
      {"customer_id", "C000123456"},
      {"amount_fen", "5000"}}.dump();
  TestResponse first = Signed(ch, "POST", "/v1/events", body, "evt-key-1");
  ASSERT_EQ(first.status, 202) << first.body;
  const std::string event_id = first.Json()["event_id"];
  TestResponse again = Signed(ch, "POST", "/v1/events", body, "evt-key-1");
  EXPECT_EQ(again.status, 202);
  EXPECT_EQ(again.body, first.body);
  EXPECT_EQ(again.Header("idempotent-replayed"), "true");

  TestResponse reused =
      Signed(ch, "POST", "/v1/events", absl::StrReplaceAll(body, {{"C000123456", "C000999999"}}),
             "evt-key-1");
  EXPECT_EQ(reused.status, 409);
  EXPECT_EQ(reused.ErrorCode(), "IDEMPOTENCY_KEY_REUSED");

  // On the topic: one envelope carrying the event, source = the channel, org = the channel's.
  kafka::ConsumerOptions options;
  options.client.bootstrap_servers = testing::KafkaBootstrap();
  options.group_id = "e2e-" + RandomHex(4);
  options.topics = {env_->events_topic};
  options.metrics_name = "e2e_events";
  auto consumer = kafka::Consumer::Create(options, nullptr);
  ASSERT_TRUE(consumer.ok()) << consumer.status();
  std::vector<marketing::common::v1::Envelope> seen;
  std::thread stopper([&] {
    absl::SleepFor(absl::Seconds(8));
    (*consumer)->Stop();
  });
  (*consumer)->Run([&](const kafka::IncomingMessage& m) {
    marketing::common::v1::Envelope envelope;
    if (envelope.ParseFromString(m.value)) seen.push_back(envelope);
    return absl::OkStatus();
  });
  stopper.join();
  int matching = 0;
  for (const auto& e : seen) {
    marketing::events::v1::BusinessEvent event;
    ASSERT_TRUE(e.payload().UnpackTo(&event));
    if (e.event_id() != event_id) continue;
    ++matching;
    EXPECT_EQ(event.source(), ch.id);
    EXPECT_EQ(event.org_id(), "bank-a");
    EXPECT_EQ(event.customer_id(), "C000123456");
    EXPECT_EQ(event.amount_fen(), 5000);
  }
  EXPECT_EQ(matching, 1);
}

TEST_F(GatewayApiE2eTest, EventsThatDoNotFitTheirTypeAre400NotDeadLettersAfterA202) {
  ChannelCredentials ch = NewChannel();
  auto post = [&](const Json& event) {
    return Signed(ch, "POST", "/v1/events", event.dump(), "evt-" + RandomHex(6));
  };
  const Json loan = {{"source_event_id", "L-" + RandomHex(4)},
                     {"event_type", "loan.disbursed"},
                     {"customer_id", "C000123456"},
                     {"amount_fen", "50000000"},
                     {"attributes", {{"contract_id", "LC-1"}, {"tenor_months", "36"}}}};
  TestResponse fits = post(loan);
  EXPECT_EQ(fits.status, 202) << fits.body;

  struct Case {
    std::string what;
    Json event;
    std::string says;
  };
  std::vector<Case> cases;
  Json unknown = loan;
  unknown["event_type"] = "loan.disbursd";
  cases.push_back({"unknown type", unknown, "unknown event type \"loan.disbursd\""});
  Json missing = loan;
  missing["attributes"].erase("contract_id");
  cases.push_back({"missing attribute", missing, "required attribute contract_id"});
  Json wrong = loan;
  wrong["attributes"]["tenor_months"] = "three years";
  cases.push_back({"wrong type", wrong, "tenor_months"});
  Json stranger = loan;
  stranger["attributes"]["colour"] = "red";
  cases.push_back({"not in the schema", stranger, "attribute \"colour\" is not in the schema"});
  Json no_amount = loan;
  no_amount.erase("amount_fen");
  cases.push_back({"amount required", no_amount, "amount_fen"});
  for (const Case& c : cases) {
    TestResponse r = post(c.event);
    EXPECT_EQ(r.status, 400) << c.what << ": " << r.body;
    EXPECT_EQ(r.ErrorCode(), "INVALID_ARGUMENT") << c.what;
    EXPECT_THAT(r.Json()["error"].value("message", ""), HasSubstr(c.says)) << c.what;
  }

  // A type the federation defines now is accepted at once (the gateway checks a refusal against
  // a fresh copy of the registry).
  const std::string name = "branch.visit_" + RandomHex(3);
  const Json visit = {{"source_event_id", "V-" + RandomHex(4)},
                      {"event_type", name},
                      {"customer_id", "C000123456"}};
  EXPECT_EQ(post(visit).status, 400);
  absl::SleepFor(absl::Milliseconds(1100));
  TestResponse defined = Admin(RootToken(), "PUT", "/admin/v1/event-types/" + name,
                               {{"description", "A visit to a branch counter"}});
  ASSERT_EQ(defined.status, 200) << defined.body;
  Json again = visit;
  again["source_event_id"] = "V-" + RandomHex(4);
  TestResponse accepted = post(again);
  EXPECT_EQ(accepted.status, 202) << accepted.body;
}

TEST_F(GatewayApiE2eTest, ChannelErrorPathsAnswerTheDocumentedCodes) {
  ChannelCredentials ch = NewChannel();
  const std::string good =
      R"({"source_event_id":"e1","event_type":"card.opened","customer_id":"C1"})";
  TestResponse r = Signed(
      ch, "POST", "/v1/events",
      R"({"source_event_id":"e1","event_type":"x","customer_id":"C1","colour":1})", "k-unknown");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.ErrorCode(), "INVALID_ARGUMENT");
  EXPECT_THAT(r.body, HasSubstr("colour"));
  r = Signed(ch, "POST", "/v1/events", good);
  EXPECT_EQ(r.status, 400) << "no Idempotency-Key";
  EXPECT_THAT(r.body, HasSubstr("Idempotency-Key"));
  r = Signed(ch, "POST", "/v1/events", R"({"event_type":"x","customer_id":"C1"})", "k-missing");
  EXPECT_EQ(r.status, 400);
  r = Signed(ch, "POST", "/v1/events",
             R"({"source_event_id":"e2","event_type":"x","customer_id":"C1","org_id":"bank-b"})",
             "k-other-org");
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(r.ErrorCode(), "PERMISSION_DENIED");
  r = Signed(ch, "POST", "/v1/events", std::string(70000, ' '), "k-large");
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(r.ErrorCode(), "BODY_TOO_LARGE");
  client_ = std::make_unique<TestHttpClient>(env_->gateway.port);  // 413 closes the connection
  r = client_->Send("POST", "/v1/events", {{"Idempotency-Key", "k"}}, good);
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.ErrorCode(), "CREDENTIALS_MISSING");
  ChannelCredentials forged{ch.id, std::string(ch.secret.size(), 'f')};
  EXPECT_EQ(Signed(forged, "POST", "/v1/events", good, "k1").ErrorCode(), "SIGNATURE_INVALID");

  r = Signed(ch, "POST", "/v1/tracking",
             R"({"events":[{"client_event_id":"t1","customer_id":"C1","action":"EXPOSURE",)"
             R"("campaign_id":"cmp_1","placement":"home_banner_1"}]})",
             "trk-1");
  EXPECT_EQ(r.status, 202) << r.body;
  EXPECT_EQ(r.Json()["accepted"], 1);
  EXPECT_EQ(Signed(ch, "POST", "/v1/tracking", R"({"events":[]})", "trk-2").status, 400);
}

TEST_F(GatewayApiE2eTest, AChannelOverItsLimitGets429WhileAnotherIsUnaffected) {
  ChannelCredentials noisy = NewChannel();
  ChannelCredentials quiet = NewChannel();
  int limited = 0;
  std::string retry_after;
  for (int i = 0; i < 25; ++i) {
    TestResponse r =
        Signed(noisy, "POST", "/v1/tracking",
               R"({"events":[{"client_event_id":"t","customer_id":"C1","action":"CLICK"}]})",
               "rl-" + std::to_string(i));
    if (r.status == 429) {
      ++limited;
      retry_after = r.Header("retry-after");
      EXPECT_EQ(r.ErrorCode(), "RATE_LIMITED");
    }
  }
  EXPECT_GE(limited, 5);
  EXPECT_FALSE(retry_after.empty());
  TestResponse r = Signed(quiet, "GET", "/v1/channel", "");
  EXPECT_EQ(r.status, 200) << r.body;
  r = Signed(quiet, "POST", "/v1/tracking",
             R"({"events":[{"client_event_id":"t","customer_id":"C1","action":"CLICK"}]})", "q1");
  EXPECT_EQ(r.status, 202) << r.body;
}

TEST_F(GatewayApiE2eTest, WalletFailsFastWithTheRewardsServiceDown) {
  ChannelCredentials ch = NewChannel();
  std::vector<double> ms;
  // Within the channel's burst (12): every answer is the breaker's or the dead backend's.
  for (int i = 0; i < 11; ++i) {
    const absl::Time start = absl::Now();
    TestResponse r = Signed(ch, "GET", "/v1/customers/C" + std::to_string(i) + "/wallet", "");
    ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
    EXPECT_EQ(r.status, 503) << r.body;
    EXPECT_EQ(r.ErrorCode(), "DEPENDENCY_UNAVAILABLE");
    if (i == 9) {
      EXPECT_FALSE(r.Header("retry-after").empty());
    }
  }
  std::sort(ms.begin(), ms.end());
  EXPECT_LT(ms[ms.size() * 99 / 100], 250) << "503 answers must not wait for deadlines";
  // Other routes are unaffected.
  EXPECT_EQ(Admin(RootToken(), "GET", "/admin/v1/orgs").status, 200);
}

// ---- Admin API security
// --------------------------------------------------------------------------

TEST_F(GatewayApiE2eTest, EveryAdminRouteNeedsAValidToken) {
  // A token signed with the right key but expired, and a tampered one.
  gateway::TokenSigner signer(kTokenKey);
  const std::string expired =
      signer.Sign({"s-old", "admin", "fed", {"admin"}, absl::Now() - absl::Minutes(1)});
  std::string tampered = RootToken();
  tampered[tampered.size() / 2] = tampered[tampered.size() / 2] == 'A' ? 'B' : 'A';
  int checked = 0;
  for (const auto& route : Routes()) {
    if (route.access != gateway::Access::kOperator) continue;
    const std::string target = Concrete(route.path);
    const std::string body = route.body.empty() ? "" : "{}";
    for (const std::string& token : {std::string(), expired, tampered, std::string("garbage")}) {
      Headers h;
      if (!token.empty()) h.emplace_back("Authorization", "Bearer " + token);
      TestResponse r = client_->Send(route.method, target, h, body);
      EXPECT_EQ(r.status, 401) << route.method << " " << target << " token=" << token.size();
      EXPECT_THAT(r.ErrorCode(), ::testing::AnyOf("CREDENTIALS_MISSING", "TOKEN_INVALID"));
    }
    ++checked;
  }
  EXPECT_GT(checked, 40);
}

TEST_F(GatewayApiE2eTest, RoutesRefuseOperatorsWithoutTheRole) {
  const std::string analyst = Operator("ann-analyst", "bank-a", {"analyst"});
  int checked = 0;
  for (const auto& route : Routes()) {
    if (route.access != gateway::Access::kOperator || route.roles.empty()) continue;
    if (std::count(route.roles.begin(), route.roles.end(), tenancy::Role::kAnalyst) > 0) continue;
    TestResponse r = Admin(analyst, route.method, Concrete(route.path),
                           route.body.empty() ? Json(nullptr) : Json::object());
    EXPECT_EQ(r.status, 403) << route.method << " " << route.path << ": " << r.body;
    EXPECT_EQ(r.ErrorCode(), "PERMISSION_DENIED");
    ++checked;
  }
  EXPECT_GT(checked, 20);
}

TEST_F(GatewayApiE2eTest, MemberBanksCannotSeeOrChangeEachOthersResources) {
  const std::string a_admin = Operator("ada-admin", "bank-a", {"admin", "planner"});
  const std::string b_admin = Operator("bea-admin", "bank-b", {"admin", "planner"});

  // Campaigns.
  const absl::Time start = absl::Now() + absl::Hours(24);
  Json config = Json::parse(gateway::RenderJson(
      campaigns::test::CompleteCoupon("Bank A coupons", start, start + absl::Hours(24))));
  TestResponse created =
      Admin(a_admin, "POST", "/admin/v1/campaigns", {{"org_id", "bank-a"}, {"config", config}});
  ASSERT_EQ(created.status, 200) << created.body;
  const std::string campaign = created.Json()["id"];
  EXPECT_EQ(Admin(a_admin, "GET", "/admin/v1/campaigns/" + campaign).status, 200);
  EXPECT_EQ(Admin(b_admin, "GET", "/admin/v1/campaigns/" + campaign).status, 404);
  EXPECT_EQ(
      Admin(b_admin, "POST", "/admin/v1/campaigns/" + campaign + ":submit", Json::object()).status,
      404);
  EXPECT_EQ(
      Admin(b_admin, "POST", "/admin/v1/campaigns", {{"org_id", "bank-a"}, {"config", config}})
          .status,
      403);
  TestResponse listed = Admin(b_admin, "GET", "/admin/v1/campaigns");
  ASSERT_EQ(listed.status, 200);
  EXPECT_THAT(listed.body, ::testing::Not(HasSubstr(campaign)));
  EXPECT_EQ(Admin(b_admin, "GET", "/admin/v1/campaigns?org_id=bank-a").status, 403);
  // Batch grants of another bank's campaign: as unknown as the campaign.
  EXPECT_EQ(Admin(b_admin, "GET", "/admin/v1/campaigns/" + campaign + "/batch-grant").status, 404);
  EXPECT_EQ(
      Admin(b_admin, "GET", "/admin/v1/campaigns/" + campaign + "/batch-grant/failures").status,
      404);
  EXPECT_EQ(Admin(b_admin, "POST", "/admin/v1/campaigns/" + campaign + "/batch-grant:cancel",
                  Json::object())
                .status,
            404);
  // A customer's accounts, history and events at another bank: refused before any service.
  for (const char* what : {"balances", "history", "events"}) {
    EXPECT_EQ(Admin(b_admin, "GET", absl::StrCat("/admin/v1/customers/C1/", what, "?org_id=bank-a"))
                  .status,
              403)
        << what;
  }
  // The ledger serves every bank: its integrity check is the federation's, even for an admin.
  TestResponse integrity = Admin(a_admin, "GET", "/admin/v1/ledger/integrity");
  EXPECT_EQ(integrity.status, 403) << integrity.body;
  EXPECT_EQ(integrity.ErrorCode(), "PERMISSION_DENIED");
  // A lottery's statistics: the owner's, not another bank's.
  EXPECT_EQ(Admin(a_admin, "GET", "/admin/v1/campaigns/" + campaign + "/draw-stats").status, 200);
  EXPECT_EQ(Admin(b_admin, "GET", "/admin/v1/campaigns/" + campaign + "/draw-stats").status, 404);

  // Operators.
  EXPECT_EQ(Admin(b_admin, "GET", "/admin/v1/operators/ada-admin").status, 404);
  EXPECT_EQ(Admin(b_admin, "PATCH", "/admin/v1/operators/ada-admin", {{"disabled", true}}).status,
            404);
  EXPECT_EQ(Admin(b_admin, "POST", "/admin/v1/operators",
                  {{"id", "mallory"},
                   {"org_id", "bank-a"},
                   {"roles", {"admin"}},
                   {"password", "mallory-password"}})
                .status,
            403);

  // Channels.
  ChannelCredentials a_channel = NewChannel("bank-a");
  EXPECT_EQ(Admin(a_admin, "GET", "/admin/v1/channels/" + a_channel.id).status, 200);
  EXPECT_EQ(Admin(b_admin, "GET", "/admin/v1/channels/" + a_channel.id).status, 404);
  EXPECT_EQ(
      Admin(b_admin, "POST", "/admin/v1/channels/" + a_channel.id + ":disable", Json::object())
          .status,
      404);
  EXPECT_EQ(Admin(b_admin, "GET", "/admin/v1/channels?org_id=bank-a").status, 403);
  // The disable was refused: the channel still works.
  EXPECT_EQ(Signed(a_channel, "GET", "/v1/channel", "").status, 200);

  // Segments.
  TestResponse segment =
      Admin(a_admin, "POST", "/admin/v1/segments",
            Json::parse(R"({"name":"A list","definition":{"list":{"customer_ids":["C1","C2"]}}})"));
  if (segment.status == 200) {
    const std::string id = segment.Json()["id"];
    EXPECT_EQ(Admin(a_admin, "GET", "/admin/v1/segments/" + id).status, 200);
    EXPECT_EQ(Admin(b_admin, "GET", "/admin/v1/segments/" + id).status, 404);
    TestResponse count = Admin(a_admin, "GET", "/admin/v1/segments/" + id + "/count");
    EXPECT_EQ(count.status, 200) << count.body;
    EXPECT_EQ(count.Json().value("count", ""), "2") << count.body;
    EXPECT_EQ(Admin(b_admin, "GET", "/admin/v1/segments/" + id + "/count").status, 404);
    EXPECT_EQ(Admin(b_admin, "GET", "/admin/v1/segments/" + id + "/count?org_id=bank-a").status,
              403);
    TestResponse overlap = Admin(a_admin, "POST", "/admin/v1/segments:overlap",
                                 {{"a", {{"segment_id", id}}}, {"b", {{"segment_id", id}}}});
    EXPECT_EQ(overlap.status, 200) << overlap.body;
    EXPECT_EQ(overlap.Json().value("both", ""), "2") << overlap.body;
    EXPECT_EQ(Admin(b_admin, "POST", "/admin/v1/segments:overlap",
                    {{"a", {{"segment_id", id}}}, {"b", {{"segment_id", id}}}})
                  .status,
              404);
  } else {
    ADD_FAILURE() << "segment not created: " << segment.body;
  }
  EXPECT_EQ(
      Admin(b_admin, "POST", "/admin/v1/segments", {{"org_id", "bank-a"}, {"name", "x"}}).status,
      403);
}

// ---- Events: the event log, explanations and the event type registry for operators ----------

TEST_F(GatewayApiE2eTest, OperatorsReadTheEventLogAndExplanationsOfTheirOwnBankOnly) {
  namespace epb = ::marketing::events::v1;
  // Rules come from campaigns; this one is loaded directly, as bank-a's.
  const std::string rule_id = "gw-e2e-rule-" + RandomHex(3);
  {
    epb::TriggerRule rule;
    rule.set_rule_id(rule_id);
    rule.set_campaign_id("camp-" + rule_id);
    rule.set_org_id("bank-a");
    rule.set_event_type("card.activated");
    rule.set_condition("amount_fen >= 1000000");
    rule.set_kind(epb::EVERY_MATCH);
    rule.set_window(epb::CAMPAIGN_WINDOW);
    rule.mutable_reward()->set_asset(::marketing::rewards::v1::POINTS);
    rule.mutable_reward()->set_quantity(100);
    rule.set_active(true);
    rule.set_revision(1);
    rule.mutable_start_time()->set_seconds(absl::ToUnixSeconds(absl::Now() - absl::Hours(1)));
    rule.mutable_end_time()->set_seconds(absl::ToUnixSeconds(absl::Now() + absl::Hours(24)));
    auto stub =
        epb::EventsAdmin::NewStub(rpc::Connect(absl::StrCat("127.0.0.1:", env_->events.port)));
    grpc::ClientContext context;
    rpc::PrepareClientContext(context, absl::Seconds(10), RandomHex(8));
    rpc::AttachActor(context, tenancy::SystemActor("gateway-api-e2e"));
    epb::UpsertRuleResponse response;
    grpc::Status status = stub->UpsertRule(&context, rule, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  const std::string a_analyst = Operator("ana-analyst", "bank-a", {"analyst"});
  const std::string a_approver = Operator("apu-approver", "bank-a", {"approver"});
  const std::string b_admin = Operator("bea-admin", "bank-b", {"admin", "planner"});

  ChannelCredentials ch = NewChannel("bank-a");
  const std::string customer = "C-EVT-" + RandomHex(4);
  const std::string source_event_id = "ACT-" + RandomHex(4);
  TestResponse posted = Signed(ch, "POST", "/v1/events",
                               Json{{"source_event_id", source_event_id},
                                    {"event_type", "card.activated"},
                                    {"customer_id", customer},
                                    {"amount_fen", "5000"}}
                                   .dump(),
                               "evt-" + RandomHex(6));
  ASSERT_EQ(posted.status, 202) << posted.body;
  const std::string event_key = ch.id + ":" + source_event_id;

  // The event log, as the bank's analyst sees it once the events service has the event.
  const std::string log = "/admin/v1/customers/" + customer + "/events";
  TestResponse listed;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  do {
    listed = Admin(a_analyst, "GET", log);
    ASSERT_EQ(listed.status, 200) << listed.body;
    if (!listed.Json().value("events", Json::array()).empty()) break;
    absl::SleepFor(absl::Milliseconds(200));
  } while (absl::Now() < deadline);
  ASSERT_EQ(listed.Json()["events"].size(), 1u) << listed.body;
  const Json logged = listed.Json()["events"][0];
  EXPECT_EQ(logged["event_key"], event_key);
  EXPECT_EQ(logged["event_type"], "card.activated");
  EXPECT_EQ(logged["org_id"], "bank-a");
  EXPECT_EQ(logged["amount_fen"], "5000");

  // Times bound the log (RFC 3339 in the query); a malformed one is a 400 naming it.
  TestResponse later = Admin(a_analyst, "GET", log + "?from=2099-01-01T00:00:00Z");
  ASSERT_EQ(later.status, 200) << later.body;
  EXPECT_TRUE(later.Json().value("events", Json::array()).empty()) << later.body;
  TestResponse bad_time = Admin(a_analyst, "GET", log + "?from=yesterday");
  EXPECT_EQ(bad_time.status, 400);
  EXPECT_THAT(bad_time.Json()["error"].value("message", ""), HasSubstr("from")) << bad_time.body;
  EXPECT_EQ(Admin(a_analyst, "GET", log + "?limit=5000").status, 400);

  // Why it did not grant: the condition that failed, with the value seen.
  const std::string why = "/admin/v1/events/" + event_key + "/rules/" + rule_id + "/explanation";
  TestResponse explained = Admin(a_analyst, "GET", why);
  ASSERT_EQ(explained.status, 200) << explained.body;
  EXPECT_FALSE(explained.Json().value("granted", false));
  EXPECT_TRUE(explained.Json().value("event_type_matches", false));
  EXPECT_EQ(explained.Json()["failed_condition"], "amount_fen >= 1000000");
  EXPECT_THAT(explained.Json().value("summary", ""), HasSubstr("amount_fen >= 1000000"));
  // Approvers decide on configurations; customers' data is not theirs to read.
  EXPECT_EQ(Admin(a_approver, "GET", log).status, 403);
  EXPECT_EQ(Admin(a_approver, "GET", why).status, 403);

  // Another bank sees neither the customer's events nor the explanation nor the rule.
  TestResponse other = Admin(b_admin, "GET", log);
  ASSERT_EQ(other.status, 200) << other.body;
  EXPECT_TRUE(other.Json().value("events", Json::array()).empty()) << other.body;
  EXPECT_EQ(Admin(b_admin, "GET", log + "?org_id=bank-a").status, 403);
  TestResponse hidden = Admin(b_admin, "GET", why);
  EXPECT_EQ(hidden.status, 404) << hidden.body;
  EXPECT_THAT(Admin(a_analyst, "GET", "/admin/v1/trigger-rules").body, HasSubstr(rule_id));
  EXPECT_THAT(Admin(b_admin, "GET", "/admin/v1/trigger-rules").body,
              ::testing::Not(HasSubstr(rule_id)));

  // Event types: everyone reads them; only the federation's admins change them.
  TestResponse types = Admin(a_analyst, "GET", "/admin/v1/event-types");
  ASSERT_EQ(types.status, 200) << types.body;
  EXPECT_THAT(types.body, HasSubstr("\"card.activated\""));
  const std::string name = "branch.visit_" + RandomHex(3);
  const Json type = {
      {"description", "A visit to a branch counter"},
      {"attributes", {{{"name", "branch_id"}, {"type", "STRING"}, {"required", true}}}}};
  TestResponse refused = Admin(b_admin, "PUT", "/admin/v1/event-types/" + name, type);
  EXPECT_EQ(refused.status, 403) << refused.body;
  EXPECT_EQ(refused.ErrorCode(), "PERMISSION_DENIED");
  TestResponse defined = Admin(RootToken(), "PUT", "/admin/v1/event-types/" + name, type);
  ASSERT_EQ(defined.status, 200) << defined.body;
  EXPECT_EQ(defined.Json()["name"], name);
  EXPECT_EQ(defined.Json()["version"], "1");
  TestResponse changed = Admin(RootToken(), "PUT", "/admin/v1/event-types/" + name, type);
  ASSERT_EQ(changed.status, 200) << changed.body;
  EXPECT_EQ(changed.Json()["version"], "2");
  TestResponse malformed = Admin(RootToken(), "PUT", "/admin/v1/event-types/" + name,
                                 {{"attributes", {{{"name", "x"}}}}});
  EXPECT_EQ(malformed.status, 400) << malformed.body;
}

TEST_F(GatewayApiE2eTest, EveryChangeAnOperatorMakesOrTriesIsInTheAuditTrail) {
  const std::string a_admin = Operator("ada-admin", "bank-a", {"admin", "planner"});
  const std::string a_analyst = Operator("ana-analyst", "bank-a", {"analyst"});
  const std::string a_auditor = Operator("aud-auditor", "bank-a", {"auditor"});
  const std::string b_admin = Operator("bea-admin", "bank-b", {"admin", "planner"});
  const std::string created = "audited-" + RandomHex(3);
  const std::string password = "secret-password-" + RandomHex(4);

  TestResponse made = Admin(
      a_admin, "POST", "/admin/v1/operators",
      {{"id", created}, {"org_id", "bank-a"}, {"roles", {"planner"}}, {"password", password}});
  ASSERT_EQ(made.status, 201) << made.body;
  EXPECT_EQ(Admin(a_admin, "PATCH", "/admin/v1/operators/bea-admin", {{"disabled", true}}).status,
            404);
  EXPECT_EQ(Admin(a_analyst, "POST", "/admin/v1/channels", Json::object()).status, 403);
  EXPECT_EQ(Admin("", "POST", "/admin/v1/sessions",
                  {{"operator_id", "ada-admin"}, {"password", "wrong-" + password}})
                .status,
            401);
  EXPECT_EQ(Admin(a_admin, "GET", "/admin/v1/operators").status, 200);
  // Raw bytes in the path are the client's mistake (400), recorded readably, never a 503 of the
  // trail's database.
  TestResponse raw = Admin(a_admin, "PATCH", "/admin/v1/operators/x\xffy", {{"disabled", true}});
  EXPECT_GE(raw.status, 400) << raw.body;
  EXPECT_LT(raw.status, 500) << raw.body;

  TestResponse trail = Admin(a_auditor, "GET", "/admin/v1/audit/requests?page_size=500");
  ASSERT_EQ(trail.status, 200) << trail.body;
  EXPECT_THAT(trail.body, ::testing::Not(HasSubstr(password)));
  bool creation = false, refused_patch = false, denied = false, failed_sign_in = false,
       raw_recorded = false;
  const Json records = trail.Json()["requests"];
  for (const Json& r : records) {
    EXPECT_NE(r["method"], "GET") << r.dump();
    EXPECT_THAT(r["org_id"].get<std::string>(), ::testing::StartsWith("bank-a")) << r.dump();
    const std::string body = r.value("body", "");
    if (r["route"] == "/admin/v1/operators" && body.find(created) != std::string::npos) {
      creation = true;
      EXPECT_EQ(r["operator_id"], "ada-admin");
      EXPECT_EQ(r["status"], 201);
      EXPECT_THAT(body, HasSubstr("\"password\":\"***\""));
      EXPECT_TRUE(r.contains("finished_at"));
    }
    if (r["path"] == "/admin/v1/operators/x%FFy") raw_recorded = true;
    if (r["path"] == "/admin/v1/operators/bea-admin" && r["method"] == "PATCH") {
      refused_patch = r["status"] == 404;
    }
    if (r["route"] == "/admin/v1/channels" && r["operator_id"] == "ana-analyst") {
      denied = r["status"] == 403 && r["error_code"] == "PERMISSION_DENIED";
    }
    if (r["route"] == "/admin/v1/sessions" && r["operator_id"] == "ada-admin" &&
        r["status"] == 401) {
      failed_sign_in = true;
      EXPECT_EQ(r["error_code"], "TOKEN_INVALID");
      EXPECT_THAT(body, HasSubstr("\"password\":\"***\""));
    }
  }
  EXPECT_TRUE(creation) << trail.body;
  EXPECT_TRUE(refused_patch) << trail.body;
  EXPECT_TRUE(denied) << trail.body;
  EXPECT_TRUE(failed_sign_in) << trail.body;
  // The HTTP parser takes the byte; the operator id refuses it (400); the trail keeps the path
  // readable.
  EXPECT_TRUE(raw_recorded) << raw.body << trail.body;

  // Another bank's auditor or admin does not see bank-a's trail.
  TestResponse other = Admin(b_admin, "GET", "/admin/v1/audit/requests?page_size=500");
  ASSERT_EQ(other.status, 200) << other.body;
  const Json others = other.Json()["requests"];
  for (const Json& r : others) {
    EXPECT_THAT(r["org_id"].get<std::string>(), ::testing::StartsWith("bank-b")) << r.dump();
  }
  EXPECT_EQ(Admin(b_admin, "GET", "/admin/v1/audit/requests?org_id=bank-a").status, 403);
  EXPECT_EQ(Admin(a_analyst, "GET", "/admin/v1/audit/requests").status, 403);
}

TEST_F(GatewayApiE2eTest, FiveWrongPasswordsLockTheAccount) {
  Operator("lou-locked", "bank-a", {"planner"});
  for (int i = 0; i < 5; ++i) {
    TestResponse r =
        Admin("", "POST", "/admin/v1/sessions",
              {{"operator_id", "lou-locked"}, {"password", "wrong password " + std::to_string(i)}});
    EXPECT_EQ(r.status, 401) << r.body;
  }
  TestResponse r = Admin("", "POST", "/admin/v1/sessions",
                         {{"operator_id", "lou-locked"}, {"password", "password-of-lou-locked"}});
  EXPECT_EQ(r.status, 429) << r.body;
  EXPECT_THAT(r.body, HasSubstr("locked"));
  // Retry-After is the rest of the lock (lockout_s, 900 s by default; whole seconds rounded up,
  // the lock's end set by the database's clock, the rest by the gateway's), not a second.
  ASSERT_FALSE(r.Header("retry-after").empty());
  EXPECT_GT(std::stoi(r.Header("retry-after")), 800) << r.Header("retry-after");
  EXPECT_LE(std::stoi(r.Header("retry-after")), 902) << r.Header("retry-after");
  ASSERT_EQ(
      Admin(RootToken(), "PATCH", "/admin/v1/operators/lou-locked", {{"unlock", true}}).status,
      200);
  SignIn("lou-locked", "password-of-lou-locked");
}

TEST_F(GatewayApiE2eTest, SignOutEndsTheSession) {
  const std::string token = Operator("sam-session", "bank-a", {"analyst"});
  ASSERT_EQ(Admin(token, "GET", "/admin/v1/sessions/current").status, 200);
  EXPECT_EQ(Admin(token, "DELETE", "/admin/v1/sessions/current").status, 200);
  TestResponse r = Admin(token, "GET", "/admin/v1/sessions/current");
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.ErrorCode(), "TOKEN_INVALID");
}

// ---- A campaign through its lifecycle
// ------------------------------------------------------------

TEST_F(GatewayApiE2eTest, CampaignLifecycleWithMakerChecker) {
  const std::string planner = Operator("pia-planner", "bank-a", {"planner"});
  const std::string approver = Operator("abe-approver", "bank-a", {"approver"});
  const std::string both = Operator("bo-both", "bank-a", {"planner", "approver"});
  const absl::Time start = absl::Now() + absl::Hours(48);
  Json config = Json::parse(gateway::RenderJson(
      campaigns::test::CompleteCoupon("Lifecycle", start, start + absl::Hours(24))));

  TestResponse created = Admin(planner, "POST", "/admin/v1/campaigns", {{"config", config}},
                               {{"Idempotency-Key", "create-lifecycle"}});
  ASSERT_EQ(created.status, 200) << created.body;
  const std::string id = created.Json()["id"];
  EXPECT_EQ(created.Json()["org_id"], "bank-a");
  EXPECT_EQ(created.Json()["state"], "DRAFT");
  // The same creation replayed does not create a second campaign.
  TestResponse replay = Admin(planner, "POST", "/admin/v1/campaigns", {{"config", config}},
                              {{"Idempotency-Key", "create-lifecycle"}});
  EXPECT_EQ(replay.Json()["id"], id);

  TestResponse step = Admin(planner, "PUT", "/admin/v1/campaigns/" + id + "/steps/STEP_BASICS",
                            {{"config",
                              {{"name", "Lifecycle 2"},
                               {"type", "COUPON_CLAIM"},
                               {"department", "retail"},
                               {"start_time", config["start_time"]},
                               {"end_time", config["end_time"]},
                               {"priority", 10}}},
                             {"expected_revision", created.Json()["revision"]}});
  EXPECT_EQ(step.status, 200) << step.body;
  TestResponse validated = Admin(planner, "POST", "/admin/v1/campaigns/" + id + ":validate");
  EXPECT_EQ(validated.status, 200) << validated.body;
  EXPECT_TRUE(validated.Json()["errors"].empty()) << validated.body;

  EXPECT_EQ(Admin(planner, "POST", "/admin/v1/campaigns/" + id + ":submit").status, 200);
  EXPECT_EQ(Admin(planner, "POST", "/admin/v1/campaigns/" + id + ":approve").status, 403);
  TestResponse approved =
      Admin(approver, "POST", "/admin/v1/campaigns/" + id + ":approve", {{"comment", "fine"}});
  ASSERT_EQ(approved.status, 200) << approved.body;
  TestResponse published = Admin(planner, "POST", "/admin/v1/campaigns/" + id + ":publish");
  ASSERT_EQ(published.status, 200) << published.body;
  EXPECT_EQ(published.Json()["state"], "SCHEDULED");
  EXPECT_EQ(Admin(planner, "GET", "/admin/v1/campaigns/" + id + "/versions").status, 200);

  // Maker-checker: whoever submitted may not approve, even holding the approver role.
  TestResponse second = Admin(both, "POST", "/admin/v1/campaigns", {{"config", config}});
  ASSERT_EQ(second.status, 200) << second.body;
  const std::string id2 = second.Json()["id"];
  ASSERT_EQ(Admin(both, "POST", "/admin/v1/campaigns/" + id2 + ":submit").status, 200);
  TestResponse self = Admin(both, "POST", "/admin/v1/campaigns/" + id2 + ":approve");
  EXPECT_EQ(self.status, 403) << self.body;

  const std::string auditor = Operator("aud-auditor", "bank-a", {"auditor"});
  TestResponse audit = Admin(auditor, "GET", "/admin/v1/audit?campaign_id=" + id);
  ASSERT_EQ(audit.status, 200) << audit.body;
  EXPECT_GE(audit.Json()["entries"].size(), 4u);
  EXPECT_EQ(Admin(planner, "GET", "/admin/v1/audit").status, 403);
}

TEST_F(GatewayApiE2eTest, OpenApiDocumentIsServed) {
  TestResponse r = client_->Send("GET", "/openapi.json");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.Json()["openapi"], "3.0.3");
  EXPECT_TRUE(r.Json()["paths"].contains("/v1/events"));
  EXPECT_TRUE(r.Json()["paths"].contains("/admin/v1/campaigns/{campaign_id}:approve"));
}

}  // namespace
}  // namespace mkt
