// The channel REST contract (ARCHITECTURE.md, "Channel REST contract") through the real services:
// mkt-rewards, mkt-segments, mkt-campaigns, mkt-channels and mkt-gateway run as processes on fresh
// databases and the real Kafka. Setup goes through the admin REST API as an operator would (orgs,
// operators, a channel, a segment, benefit templates, campaigns through maker-checker), except
// what only the platform's internal gRPC APIs do (funding a campaign budget, issuing a coupon
// outside a campaign). Then every /v1 endpoint is driven with signed requests, success and error
// paths, and the status codes and error codes are checked against the contract. Last, the rewards
// process is stopped and started again: the wallet fails fast while it is down, other routes keep
// working, and the gateway's breaker closes again once it is back.
#include <algorithm>
#include <csignal>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "libs/core/ids.h"
#include "libs/rpc/client.h"
#include "libs/testing/testing.h"
#include "marketing/rewards/v1/benefits.grpc.pb.h"
#include "marketing/rewards/v1/ledger.grpc.pb.h"
#include "services/campaigns/test_configs.h"
#include "services/gateway/api_routes.h"
#include "services/gateway/http_test_client.h"
#include "services/gateway/json_codec.h"
#include "services/gateway/openapi.h"

namespace mkt {
namespace {

namespace rpb = ::marketing::rewards::v1;
using gateway::testing::Headers;
using gateway::testing::SignedHeaders;
using gateway::testing::TestHttpClient;
using gateway::testing::TestResponse;
using ::testing::HasSubstr;
using Json = nlohmann::json;

constexpr char kAdminPassword[] = "contract-admin-password";
constexpr char kTokenKey[] = "contract-token-key-0123456789";
constexpr int kBreakerOpenMs = 1500;
// Customers of bank-a; the campaigns' segment lists the first four.
constexpr char kAlice[] = "CUSTALICE01";
constexpr char kBob[] = "CUSTBOB0001";
constexpr char kCarol[] = "CUSTCAROL01";
constexpr char kDave[] = "CUSTDAVE001";
constexpr char kEve[] = "CUSTEVE0001";  // not in the segment

struct Process {
  std::unique_ptr<testing::ChildProcess> child;
  std::string log;
  int port = 0;
};

std::string Addr(int port) { return absl::StrCat("127.0.0.1:", port); }

class GatewayContractE2eTest : public ::testing::Test {
 protected:
  struct Env {
    testing::TestDatabase rewards_db, segments_db, campaigns_db, channels_db, events_db, gateway_db;
    Process rewards, segments, campaigns, channels, events, gateway;
    int rewards_metrics_port = 0;
    std::string events_topic, tracking_topic;
    bool healthy = false;

    Process Spawn(const std::string& name, const std::string& binary,
                  std::map<std::string, std::string> env, int port) {
      Process p;
      p.log = ::testing::TempDir() + "gateway_contract_" + name + "_" + RandomHex(3) + ".log";
      p.port = port;
      p.child = std::make_unique<testing::ChildProcess>(
          std::vector<std::string>{testing::BinDir() + binary}, std::move(env), p.log);
      return p;
    }

    // Same port and database every time, so a restart is the same service coming back.
    void SpawnRewards() {
      rewards = Spawn("rewards", "/services/rewards/mkt-rewards",
                      {{"MKT_REWARDS_PG_DSN", rewards_db.dsn()},
                       {"MKT_REWARDS_KAFKA_BOOTSTRAP", testing::KafkaBootstrap()},
                       {"MKT_REWARDS_GRPC_ADDRESS", Addr(rewards.port)},
                       {"MKT_REWARDS_METRICS_ADDRESS", Addr(rewards_metrics_port)},
                       {"MKT_REWARDS_EXPIRY_INTERVAL_S", "0"},
                       // The test funds its budgets; the shared change topic is not its own.
                       {"MKT_REWARDS_CAMPAIGN_CHANGES_TOPIC", ""},
                       {"MKT_REWARDS_QR_SIGNING_KEY", "contract-qr-key-0123456789abcdef"}},
                      rewards.port);
    }

    bool WaitGrpc(const Process& p) {
      if (testing::WaitForPort(p.port, absl::Seconds(60)) &&
          testing::WaitForGrpcHealth(rpc::Connect(Addr(p.port)), absl::Seconds(30))) {
        return true;
      }
      std::cerr << "a backend did not start; its log:\n" << testing::Tail(p.log, 40);
      return false;
    }

    void Start() {
      events_topic = testing::NewTopic("contract.business-events", 1);
      tracking_topic = testing::NewTopic("contract.tracking", 1);
      const std::string profiles = testing::NewTopic("contract.profiles", 1);
      rewards.port = testing::FreePort();
      rewards_metrics_port = testing::FreePort();
      SpawnRewards();
      const int segments_port = testing::FreePort();
      segments = Spawn("segments", "/services/segments/mkt-segments",
                       {{"MKT_SEGMENTS_PG_DSN", segments_db.dsn()},
                        {"MKT_SEGMENTS_KAFKA_BOOTSTRAP", testing::KafkaBootstrap()},
                        {"MKT_SEGMENTS_GRPC_ADDRESS", Addr(segments_port)},
                        {"MKT_SEGMENTS_METRICS_ADDRESS", Addr(testing::FreePort())},
                        {"MKT_SEGMENTS_PROFILES_TOPIC", profiles},
                        {"MKT_SEGMENTS_BUSINESS_EVENTS_TOPIC", ""},
                        {"MKT_SEGMENTS_DEAD_LETTER_TOPIC", profiles + ".dead"},
                        {"MKT_SEGMENTS_REPLICA_ID", "contract-" + RandomHex(4)},
                        {"MKT_SEGMENTS_RFM_INTERVAL_S", "0"}},
                       segments_port);
      const int channels_port = testing::FreePort();
      channels = Spawn("channels", "/services/channels/mkt-channels",
                       {{"MKT_CHANNELS_PG_DSN", channels_db.dsn()},
                        {"MKT_CHANNELS_KAFKA_BOOTSTRAP", testing::KafkaBootstrap()},
                        {"MKT_CHANNELS_GRPC_ADDRESS", Addr(channels_port)},
                        {"MKT_CHANNELS_METRICS_ADDRESS", Addr(testing::FreePort())},
                        {"MKT_CHANNELS_SECRET_KEY", RandomHex(32)}},
                       channels_port);
      // The events service: the registry the gateway checks events against and campaigns check
      // triggers against; it logs what the gateway publishes and grants through rewards.
      const int events_port = testing::FreePort();
      events =
          Spawn("events", "/services/events/mkt-events",
                {{"MKT_EVENTS_PG_DSN", events_db.dsn()},
                 {"MKT_EVENTS_KAFKA_BOOTSTRAP", testing::KafkaBootstrap()},
                 {"MKT_EVENTS_GRPC_ADDRESS", Addr(events_port)},
                 {"MKT_EVENTS_METRICS_ADDRESS", Addr(testing::FreePort())},
                 {"MKT_EVENTS_EVENTS_TOPIC", events_topic},
                 {"MKT_EVENTS_DEAD_LETTER_TOPIC", events_topic + ".dead"},
                 {"MKT_EVENTS_CAMPAIGN_CHANGES_TOPIC", testing::NewTopic("contract.changes", 1)},
                 {"MKT_EVENTS_CONSUMER_GROUP", "contract-" + RandomHex(4)},
                 {"MKT_EVENTS_REWARDS_ADDRESS", Addr(rewards.port)}},
                events_port);
      const int campaigns_port = testing::FreePort();
      campaigns = Spawn("campaigns", "/services/campaigns/mkt-campaigns",
                        {{"MKT_CAMPAIGNS_PG_DSN", campaigns_db.dsn()},
                         {"MKT_CAMPAIGNS_KAFKA_BOOTSTRAP", testing::KafkaBootstrap()},
                         {"MKT_CAMPAIGNS_GRPC_ADDRESS", Addr(campaigns_port)},
                         {"MKT_CAMPAIGNS_METRICS_ADDRESS", Addr(testing::FreePort())},
                         {"MKT_CAMPAIGNS_REWARDS_ADDRESS", Addr(rewards.port)},
                         {"MKT_CAMPAIGNS_SEGMENTS_ADDRESS", Addr(segments_port)},
                         {"MKT_CAMPAIGNS_EVENTS_ADDRESS", Addr(events_port)},
                         // Segments, templates and event types are looked up in their services.
                         {"MKT_CAMPAIGNS_REFERENCE_SOURCE", "services"},
                         {"MKT_CAMPAIGNS_SCHEDULER_INTERVAL_MS", "200"}},
                        campaigns_port);
      const int gateway_port = testing::FreePort();
      gateway = Spawn("gateway", "/services/gateway/mkt-gateway",
                      {{"MKT_GATEWAY_HTTP_ADDRESS", Addr(gateway_port)},
                       {"MKT_GATEWAY_GRPC_ADDRESS", Addr(testing::FreePort())},
                       {"MKT_GATEWAY_CHANNELS_TARGET", Addr(channels_port)},
                       {"MKT_GATEWAY_CAMPAIGNS_TARGET", Addr(campaigns_port)},
                       {"MKT_GATEWAY_SEGMENTS_TARGET", Addr(segments_port)},
                       {"MKT_GATEWAY_REWARDS_TARGET", Addr(rewards.port)},
                       {"MKT_GATEWAY_EVENTS_TARGET", Addr(events_port)},
                       {"MKT_GATEWAY_KAFKA_BOOTSTRAP", testing::KafkaBootstrap()},
                       {"MKT_GATEWAY_PG_DSN", gateway_db.dsn()},
                       {"MKT_GATEWAY_BUSINESS_EVENTS_TOPIC", events_topic},
                       {"MKT_GATEWAY_TRACKING_TOPIC", tracking_topic},
                       {"MKT_GATEWAY_TOKEN_KEY", kTokenKey},
                       {"MKT_GATEWAY_BOOTSTRAP_ADMIN_PASSWORD", kAdminPassword},
                       {"MKT_GATEWAY_SCRYPT_N", "1024"},
                       {"MKT_GATEWAY_OPERATOR_RATE", "0"},
                       {"MKT_GATEWAY_MAX_BODY_BYTES", "65536"},
                       {"MKT_GATEWAY_BREAKER_OPEN_MS", std::to_string(kBreakerOpenMs)}},
                      gateway_port);
      for (const Process* p : {&rewards, &segments, &channels, &events, &campaigns}) {
        if (!WaitGrpc(*p)) return;
      }
      if (!testing::WaitForHttp(gateway.port, "/healthz", absl::Seconds(60))) {
        std::cerr << "gateway did not start:\n" << testing::Tail(gateway.log, 40);
        return;
      }
      healthy = true;
    }

    void Stop() {
      if (gateway.child) {
        EXPECT_EQ(gateway.child->Kill(SIGTERM), 0) << testing::Tail(gateway.log, 30);
      }
      for (Process* p : {&campaigns, &events, &channels, &segments, &rewards}) {
        if (p->child) p->child->Kill(SIGTERM);
      }
    }
  };

  // What the admin API set up for every test: two banks, a planner and an approver of bank-a, a
  // mobile-banking channel of bank-a and one of bank-b, and a WeCom channel of bank-a.
  struct Bank {
    std::string root, planner, approver;
    std::string channel_id, channel_secret;
    std::string other_channel_id, other_channel_secret;
    std::string wecom_channel_id, wecom_channel_secret;
  };

  static void SetUpTestSuite() {
    env_ = new Env();
    env_->Start();
  }
  static void TearDownTestSuite() {
    // Every status any test of the suite got is documented on its route.
    for (const auto& missing : Undocumented()) ADD_FAILURE() << "undocumented: " << missing;
    env_->Stop();
    delete env_;
    env_ = nullptr;
    delete bank_;
    bank_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(env_, nullptr);
    ASSERT_TRUE(env_->healthy) << "the services did not start";
    client_ = std::make_unique<TestHttpClient>(env_->gateway.port);
    if (bank_ == nullptr) {
      bank_ = new Bank();
      SetUpBank(*bank_);
    }
    ASSERT_FALSE(bank_->channel_secret.empty()) << "the bank was not set up";
  }

  void TearDown() override {
    if (HasFailure()) {
      std::cerr << "---- mkt-gateway log (tail) ----\n" << testing::Tail(env_->gateway.log, 40);
      std::cerr << "---- mkt-campaigns log (tail) ----\n" << testing::Tail(env_->campaigns.log, 20);
      std::cerr << "---- mkt-rewards log (tail) ----\n" << testing::Tail(env_->rewards.log, 20);
    }
  }

  // ---- HTTP helpers ----------------------------------------------------------------------------

  TestResponse Admin(const std::string& token, const std::string& method, const std::string& target,
                     const Json& body = nullptr) {
    Headers headers;
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

  // A request signed as bank-a's mobile-banking channel (or with the given credentials).
  TestResponse Signed(const std::string& method, const std::string& target,
                      const std::string& body = "", const std::string& idempotency_key = "") {
    return SignedAs(bank_->channel_id, bank_->channel_secret, method, target, body,
                    idempotency_key);
  }
  TestResponse SignedAs(const std::string& channel, const std::string& secret,
                        const std::string& method, const std::string& target,
                        const std::string& body, const std::string& idempotency_key = "",
                        int64_t timestamp = 0, const std::string& nonce = "") {
    Headers h = SignedHeaders(secret, channel, method, target, body,
                              timestamp != 0 ? timestamp : absl::ToUnixSeconds(absl::Now()),
                              nonce.empty() ? "n" + RandomHex(8) : nonce);
    if (!idempotency_key.empty()) h.emplace_back("Idempotency-Key", idempotency_key);
    h.emplace_back("Content-Type", "application/json");
    TestResponse r = client_->Send(method, target, h, body);
    Answered(method, target, r.status);
    return r;
  }

  // Every status a signed request of this suite got, by route, to check against the document
  // (issue 9 B2: a status a route answers must be documented on it).
  static void Answered(const std::string& method, const std::string& target, int status) {
    const std::string path = target.substr(0, target.find('?'));
    absl::StatusOr<gateway::RouteMatch> match = RouteTable().router.Match(method, path);
    if (!match.ok()) return;
    answered_->insert({method, match->route->path_template, status});
  }

  // Returns the (method, path template, status) answers the document does not list.
  static std::vector<std::string> Undocumented() {
    const Json doc = Json::parse(gateway::OpenApiDocument(RouteTable().api.routes()));
    std::vector<std::string> out;
    for (const auto& [method, path, status] : *answered_) {
      std::string lower = method;
      for (char& c : lower) c = static_cast<char>(std::tolower(c));
      const Json& op = doc["paths"][path][lower];
      if (!op.is_object() || !op["responses"].contains(std::to_string(status))) {
        out.push_back(absl::StrCat(method, " ", path, " answered ", status));
      }
    }
    return out;
  }

  // Takes part as bank-a's mobile-banking channel; `channel` is the code sent in the body ("":
  // none, the gateway fills in the caller's).
  TestResponse Participate(const std::string& campaign, const std::string& customer,
                           const std::string& key, const std::string& channel = "mobile_banking") {
    Json body{{"customer_id", customer}};
    if (!channel.empty()) body["channel"] = channel;
    return Signed("POST", "/v1/campaigns/" + campaign + "/participations", body.dump(), key);
  }

  // ---- Setup through the admin API -----------------------------------------------------------

  void SetUpBank(Bank& bank) {
    bank.root = SignIn("admin", kAdminPassword);
    for (const std::string& org : {std::string("bank-a"), std::string("bank-b")}) {
      TestResponse r = Admin(bank.root, "POST", "/admin/v1/orgs",
                             {{"id", org}, {"display_name", org}, {"region", "north"}});
      ASSERT_TRUE(r.status == 200 || r.status == 409) << r.body;
    }
    for (const auto& [id, role] : std::vector<std::pair<std::string, std::string>>{
             {"pat-planner", "planner"}, {"amy-approver", "approver"}}) {
      TestResponse r = Admin(bank.root, "POST", "/admin/v1/operators",
                             {{"id", id},
                              {"org_id", "bank-a"},
                              {"roles", std::vector<std::string>{role}},
                              {"password", "password-of-" + id}});
      ASSERT_EQ(r.status, 201) << r.body;
    }
    bank.planner = SignIn("pat-planner", "password-of-pat-planner");
    bank.approver = SignIn("amy-approver", "password-of-amy-approver");
    TestResponse a = Admin(bank.root, "POST", "/admin/v1/channels",
                           {{"code", "mobile_banking"},
                            {"display_name", "Bank A mobile banking"},
                            {"org_id", "bank-a"}});
    ASSERT_EQ(a.status, 200) << a.body;
    TestResponse b = Admin(bank.root, "POST", "/admin/v1/channels",
                           {{"code", "mobile_banking"},
                            {"display_name", "Bank B mobile banking"},
                            {"org_id", "bank-b"}});
    ASSERT_EQ(b.status, 200) << b.body;
    bank.other_channel_id = b.Json()["channel"]["id"].get<std::string>();
    bank.other_channel_secret = b.Json()["secret"].get<std::string>();
    bank.channel_id = a.Json()["channel"]["id"].get<std::string>();
    bank.channel_secret = a.Json()["secret"].get<std::string>();
    TestResponse w =
        Admin(bank.root, "POST", "/admin/v1/channels",
              {{"code", "wecom"}, {"display_name", "Bank A WeCom"}, {"org_id", "bank-a"}});
    ASSERT_EQ(w.status, 200) << w.body;
    bank.wecom_channel_id = w.Json()["channel"]["id"].get<std::string>();
    bank.wecom_channel_secret = w.Json()["secret"].get<std::string>();
  }

  // A list segment of bank-a holding the four customers; returns its id.
  std::string Segment() {
    TestResponse r =
        Admin(bank_->planner, "POST", "/admin/v1/segments",
              {{"name", "Contract customers " + RandomHex(2)},
               {"definition", {{"list", {{"customer_ids", {kAlice, kBob, kCarol, kDave}}}}}}});
    EXPECT_EQ(r.status, 200) << r.body;
    return r.Json().value("id", "");
  }

  // An active coupon template of bank-a (10 yuan off, valid 30 days) with `stock` instances.
  std::string CouponTemplate(int64_t stock, int64_t unit_cost_fen) {
    const std::string id = "bt-contract-" + RandomHex(4);
    TestResponse r = Admin(bank_->planner, "POST", "/admin/v1/benefit-templates",
                           {{"id", id},
                            {"org_id", "bank-a"},
                            {"type", "COUPON_CASH"},
                            {"name", "10 yuan off"},
                            {"face_value", "1000"},
                            {"unit_cost_fen", std::to_string(unit_cost_fen)},
                            {"total_stock", std::to_string(stock)},
                            {"validity", {{"days_after_grant", 30}}}});
    EXPECT_EQ(r.status, 200) << r.body;
    r = Admin(bank_->planner, "POST", "/admin/v1/benefit-templates/" + id + ":activate",
              Json::object());
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.Json().value("status", ""), "TEMPLATE_ACTIVE") << r.body;
    return id;
  }

  // Creates a coupon-claim campaign of bank-a over REST, takes it through submit, approve (by
  // another operator) and publish; returns its id.
  std::string PublishedCouponCampaign(const std::string& name, absl::Time start,
                                      const std::string& segment, const std::string& tmpl) {
    auto config = campaigns::test::CompleteCoupon(name, start, start + absl::Hours(6), segment);
    config.mutable_rewards(0)->set_benefit_template_id(tmpl);
    TestResponse created = Admin(bank_->planner, "POST", "/admin/v1/campaigns",
                                 {{"config", Json::parse(gateway::RenderJson(config))}});
    EXPECT_EQ(created.status, 200) << created.body;
    const std::string id = created.Json().value("id", "");
    if (id.empty()) return "";
    TestResponse r = Admin(bank_->planner, "POST", "/admin/v1/campaigns/" + id + ":submit");
    EXPECT_EQ(r.status, 200) << r.body;
    r = Admin(bank_->approver, "POST", "/admin/v1/campaigns/" + id + ":approve",
              {{"comment", "ok"}});
    EXPECT_EQ(r.status, 200) << r.body;
    r = Admin(bank_->planner, "POST", "/admin/v1/campaigns/" + id + ":publish");
    EXPECT_EQ(r.status, 200) << r.body;
    return id;
  }

  // Funds a campaign's budget by hand through the ledger (the rewards service's own funding from
  // published caps, decision 034, is off in this test: it reads the shared change topic).
  void FundBudget(const std::string& campaign, int64_t fen) {
    auto ledger = rpb::Ledger::NewStub(rpc::Connect(Addr(env_->rewards.port)));
    rpb::FundRequest request;
    request.set_request_id("fund-" + campaign);
    request.set_org_id("bank-a");
    request.set_asset(rpb::BUDGET_FEN);
    request.set_owner_id(campaign);
    request.set_amount(fen);
    grpc::ClientContext context;
    rpc::PrepareClientContext(context, absl::Seconds(10), "");
    rpb::FundResponse response;
    grpc::Status s = ledger->Fund(&context, request, &response);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  // Waits until the campaign is open to `customer` on mobile banking (published, started, seen by
  // the campaigns service's cache).
  bool WaitUntilOpen(const std::string& campaign, const std::string& customer) {
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (absl::Now() < deadline) {
      TestResponse r = Signed(
          "GET", "/v1/customers/" + std::string(customer) + "/campaigns?channel=mobile_banking");
      if (r.status == 200 && r.body.find(campaign) != std::string::npos) return true;
      absl::SleepFor(absl::Milliseconds(200));
    }
    return false;
  }

  // Issues a coupon of `tmpl` to `customer` outside any campaign (the Benefits API, as the events
  // service does for rule rewards); returns its code.
  std::string IssueCoupon(const std::string& tmpl, const std::string& customer) {
    auto benefits = rpb::Benefits::NewStub(rpc::Connect(Addr(env_->rewards.port)));
    rpb::IssueCouponRequest request;
    request.set_request_id("issue-" + RandomHex(6));
    request.set_template_id(tmpl);
    request.set_customer_id(customer);
    grpc::ClientContext context;
    rpc::PrepareClientContext(context, absl::Seconds(10), "");
    rpb::Coupon coupon;
    grpc::Status s = benefits->IssueCoupon(&context, request, &coupon);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return coupon.code();
  }

  // The gateway's route table, built in this process.
  struct Table {
    gateway::Router router;
    gateway::ApiService api{{}, SystemClock(), nullptr, nullptr};
  };
  static Table& RouteTable() {
    static Table* table = [] {
      auto* t = new Table();
      gateway::ApiDependencies deps;
      deps.clock = &SystemClock();
      EXPECT_TRUE(gateway::RegisterApiRoutes(t->api, t->router, deps).ok());
      return t;
    }();
    return *table;
  }
  // Every route of the gateway's table.
  static std::vector<gateway::ApiRoute> Routes() {
    return {RouteTable().api.routes().begin(), RouteTable().api.routes().end()};
  }

  static std::string Concrete(const std::string& path) {
    std::string out;
    for (size_t i = 0; i < path.size(); ++i) {
      if (path[i] == '{') {
        i = path.find('}', i);
        out += "x1";
      } else {
        out.push_back(path[i]);
      }
    }
    return out;
  }

  static Env* env_;
  static Bank* bank_;
  static std::set<std::tuple<std::string, std::string, int>>* answered_;
  std::unique_ptr<TestHttpClient> client_;
};

GatewayContractE2eTest::Env* GatewayContractE2eTest::env_ = nullptr;
GatewayContractE2eTest::Bank* GatewayContractE2eTest::bank_ = nullptr;
std::set<std::tuple<std::string, std::string, int>>* GatewayContractE2eTest::answered_ =
    new std::set<std::tuple<std::string, std::string, int>>();

// Authentication, body limits and strict JSON on every channel route; events and tracking.
TEST_F(GatewayContractE2eTest, EveryChannelRouteAuthenticatesAndEventsAndTrackingAreAccepted) {
  int routes = 0;
  for (const auto& route : Routes()) {
    if (route.access != gateway::Access::kChannel) continue;
    ++routes;
    const std::string target = Concrete(route.path);
    const std::string body = route.body.empty() ? "" : "{}";
    TestResponse r = client_->Send(route.method, target, {{"Idempotency-Key", "k"}}, body);
    EXPECT_EQ(r.status, 401) << route.method << " " << target;
    EXPECT_EQ(r.ErrorCode(), "CREDENTIALS_MISSING") << route.method << " " << target;
    r = SignedAs(bank_->channel_id, std::string(bank_->channel_secret.size(), 'f'), route.method,
                 target, body, "k");
    EXPECT_EQ(r.status, 401) << route.method << " " << target;
    EXPECT_EQ(r.ErrorCode(), "SIGNATURE_INVALID") << route.method << " " << target;
  }
  EXPECT_EQ(routes, 12) << "the contract has 12 channel routes besides GET /v1/channel";

  // Other refusals of the signature check.
  const std::string event = Json{
      {"source_event_id", "TX-" + RandomHex(4)},
      {"event_type", "card.activated"},
      {"customer_id", kAlice},
      {"amount_fen", "5000"}}.dump();
  TestResponse r = SignedAs(bank_->channel_id, bank_->channel_secret, "POST", "/v1/events", event,
                            "ev-old", absl::ToUnixSeconds(absl::Now()) - 600);
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.ErrorCode(), "TIMESTAMP_OUT_OF_WINDOW");
  r = SignedAs("ch_0123456789abcdef", bank_->channel_secret, "POST", "/v1/events", event, "ev-x");
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.ErrorCode(), "CHANNEL_UNKNOWN");
  const std::string nonce = "nonce" + RandomHex(6);
  r = SignedAs(bank_->channel_id, bank_->channel_secret, "GET", "/v1/channel", "", "", 0, nonce);
  EXPECT_EQ(r.status, 200) << r.body;
  r = SignedAs(bank_->channel_id, bank_->channel_secret, "GET", "/v1/channel", "", "", 0, nonce);
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.ErrorCode(), "NONCE_REPLAYED");

  // Events: 202; a replay (same key) is the first answer; the same source event under a new key
  // is accepted again with the same event id; a bad body is 400.
  TestResponse first = Signed("POST", "/v1/events", event, "ev-1");
  ASSERT_EQ(first.status, 202) << first.body;
  const std::string event_id = first.Json().value("event_id", "");
  EXPECT_FALSE(event_id.empty());
  TestResponse replay = Signed("POST", "/v1/events", event, "ev-1");
  EXPECT_EQ(replay.status, 202);
  EXPECT_EQ(replay.body, first.body);
  EXPECT_EQ(replay.Header("idempotent-replayed"), "true");
  TestResponse duplicate = Signed("POST", "/v1/events", event, "ev-2");
  EXPECT_EQ(duplicate.status, 202) << duplicate.body;
  EXPECT_EQ(duplicate.Json().value("event_id", ""), event_id);
  r = Signed("POST", "/v1/events", R"({"event_type":"card.activated","customer_id":"C1"})", "ev-3");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.ErrorCode(), "INVALID_ARGUMENT");
  EXPECT_THAT(r.body, HasSubstr("source_event_id"));
  r = Signed("POST", "/v1/events", "{\"source_event_id\":", "ev-4");
  EXPECT_EQ(r.status, 400);
  r = Signed("POST", "/v1/events",
             R"({"source_event_id":"e9","event_type":"x","customer_id":"C1","amout_fen":"1"})",
             "ev-5");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.ErrorCode(), "INVALID_ARGUMENT");
  EXPECT_THAT(r.body, HasSubstr("amout_fen"));
  r = Signed("POST", "/v1/events", event, "");
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, HasSubstr("Idempotency-Key"));
  // Text the events database would refuse (NUL) and amounts beyond any real one are 400 here,
  // not accepted and then stuck or dead-lettered behind the 202.
  r = Signed("POST", "/v1/events",
             R"({"source_event_id":"e10","event_type":"card.activated","customer_id":"C1\u0000x"})",
             "ev-nul");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_THAT(r.body, HasSubstr("customer_id"));
  // An escape character in an id is dead-lettered by the events service, so it is a 400 here too.
  r = Signed("POST", "/v1/events",
             R"({"source_event_id":"e10\u001b","event_type":"card.activated","customer_id":"C1"})",
             "ev-esc");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_THAT(r.body, HasSubstr("source_event_id"));
  r = Signed("POST", "/v1/events",
             R"({"source_event_id":"e11","event_type":"card.activated","customer_id":"C1",)"
             R"("attributes":{"note":"a\u0000b"}})",
             "ev-nul-attr");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_THAT(r.body, HasSubstr("attributes"));
  r = Signed("POST", "/v1/events",
             R"({"source_event_id":"e12","event_type":"deposit.made","customer_id":"C1",)"
             R"("amount_fen":"9223372036854775807"})",
             "ev-huge");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_THAT(r.body, HasSubstr("amount_fen"));
  // A body just under the route's 64 KiB limit whose event, once wrapped in its envelope (event
  // id, type, source, request id), is over what the events service takes (64 KiB): 413 with the
  // reason, not a 202 followed by a dead letter.
  Json big = Json::parse(event);
  big["source_event_id"] = "e13";
  big["attributes"]["a"] = "";
  big["attributes"]["a"] = std::string(65530 - big.dump().size(), 'x');
  ASSERT_EQ(big.dump().size(), 65530u);
  r = Signed("POST", "/v1/events", big.dump(), "ev-big");
  EXPECT_EQ(r.status, 413) << r.body;
  EXPECT_EQ(r.ErrorCode(), "BODY_TOO_LARGE");
  EXPECT_THAT(r.body, HasSubstr("bytes once encoded"));
  r = Signed("POST", "/v1/events",
             absl::StrCat(R"({"source_event_id":")", std::string(70000, 'x'), R"("})"), "ev-6");
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(r.ErrorCode(), "BODY_TOO_LARGE");
  client_ = std::make_unique<TestHttpClient>(env_->gateway.port);  // 413 closes the connection

  // Tracking.
  r = Signed("POST", "/v1/tracking",
             Json{{"events",
                   {{{"client_event_id", "t1"}, {"customer_id", kAlice}, {"action", "EXPOSURE"}},
                    {{"client_event_id", "t2"}, {"customer_id", kAlice}, {"action", "CLICK"}}}}}
                 .dump(),
             "trk-1");
  EXPECT_EQ(r.status, 202) << r.body;
  EXPECT_EQ(r.Json()["accepted"], 2);
  r = Signed("POST", "/v1/tracking", R"({"events":[{"client_event_id":"t3","customer_id":"C1"}]})",
             "trk-2");
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, HasSubstr("action"));
}

// Eligible campaigns, the coupon centre and participation with every refusal of the contract.
TEST_F(GatewayContractE2eTest, ParticipationAndTheCouponCentreAnswerTheContract) {
  const std::string segment = Segment();
  ASSERT_FALSE(segment.empty());
  // Two coupons in stock: Alice and Bob get one, Carol finds them gone.
  const std::string tmpl = CouponTemplate(/*stock=*/2, /*unit_cost_fen=*/500);
  const std::string campaign =
      PublishedCouponCampaign("Contract coupons", absl::Now() - absl::Minutes(1), segment, tmpl);
  ASSERT_FALSE(campaign.empty());
  FundBudget(campaign, 100'000);
  // Published for tomorrow: scheduled, not active yet.
  const std::string later =
      PublishedCouponCampaign("Tomorrow's coupons", absl::Now() + absl::Hours(24), segment, tmpl);
  ASSERT_FALSE(later.empty());
  ASSERT_TRUE(WaitUntilOpen(campaign, kAlice)) << "the campaign never opened to the customer";

  // Eligible campaigns: open to Alice, with what she can still do; not to Eve (explained).
  TestResponse r =
      Signed("GET", std::string("/v1/customers/") + kAlice + "/campaigns?channel=mobile_banking");
  ASSERT_EQ(r.status, 200) << r.body;
  Json listed = r.Json()["campaigns"];
  ASSERT_EQ(listed.size(), 1u) << r.body;
  EXPECT_EQ(listed[0]["campaign_id"], campaign);
  EXPECT_EQ(listed[0]["open"], true);
  EXPECT_EQ(listed[0]["claimed"], false);
  EXPECT_EQ(listed[0]["remaining_total"], "1");
  EXPECT_EQ(listed[0]["content"]["title"], "50 yuan off");
  r = Signed("GET", std::string("/v1/customers/") + kEve +
                        "/campaigns?channel=mobile_banking&explain=true");
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(r.Json()["campaigns"].size(), 1u) << r.body;
  EXPECT_EQ(r.Json()["campaigns"][0]["open"], false);
  EXPECT_EQ(r.Json()["campaigns"][0]["not_open_reason"], "NOT_ELIGIBLE");
  r = Signed("GET", std::string("/v1/customers/") + kEve + "/campaigns?channel=mobile_banking");
  EXPECT_EQ(r.Json()["campaigns"].size(), 0u) << r.body;
  // The channel code is the caller's: left out it is mobile_banking; a mobile-banking channel
  // cannot look as WeCom; the org is the channel's or one below it.
  r = Signed("GET", std::string("/v1/customers/") + kAlice + "/campaigns");
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(r.Json()["campaigns"].size(), 1u) << r.body;
  EXPECT_EQ(r.Json()["campaigns"][0]["campaign_id"], campaign);
  r = Signed("GET", std::string("/v1/customers/") + kAlice + "/campaigns?channel=wecom");
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_EQ(r.ErrorCode(), "PERMISSION_DENIED");
  EXPECT_THAT(r.body, HasSubstr("this channel is mobile_banking; it cannot act as wecom"));
  r = Signed("GET", std::string("/v1/customers/") + kAlice + "/coupons?channel=wecom");
  EXPECT_EQ(r.status, 403) << r.body;
  r = Signed("GET", std::string("/v1/customers/") + kAlice +
                        "/campaigns?channel=mobile_banking&org=bank-b");
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(r.ErrorCode(), "PERMISSION_DENIED");
  r = Signed("GET", std::string("/v1/customers/") + kAlice + "/campaigns?chanel=mobile_banking");
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, HasSubstr("chanel"));
  // Bank B's channel does not see bank A's campaign.
  r = SignedAs(bank_->other_channel_id, bank_->other_channel_secret, "GET",
               std::string("/v1/customers/") + kAlice + "/campaigns?channel=mobile_banking", "");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Json()["campaigns"].size(), 0u) << r.body;

  // The coupon centre lists it for Alice.
  r = Signed("GET", std::string("/v1/customers/") + kAlice + "/coupons?channel=mobile_banking");
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(r.Json()["coupons"].size(), 1u) << r.body;
  EXPECT_EQ(r.Json()["coupons"][0]["campaign_id"], campaign);
  EXPECT_EQ(r.Json()["coupons"][0]["sold_out"], false);

  // Bob claims as WeCom through the mobile-banking channel: refused before the campaigns service,
  // so nothing is taken (he claims once below, and the stock of two is still there for him).
  r = Participate(campaign, kBob, "claim-bob-wecom", "wecom");
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_EQ(r.ErrorCode(), "PERMISSION_DENIED");
  EXPECT_THAT(r.body, HasSubstr("this channel is mobile_banking; it cannot act as wecom"));
  // Bank A's real WeCom channel names no code and acts as WeCom: the mobile-banking campaign is
  // not offered there (so the code the campaigns service saw is the caller's, not a default).
  r = SignedAs(bank_->wecom_channel_id, bank_->wecom_channel_secret, "GET",
               std::string("/v1/customers/") + kBob + "/campaigns", "");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Json()["campaigns"].size(), 0u) << r.body;
  r = SignedAs(bank_->wecom_channel_id, bank_->wecom_channel_secret, "POST",
               "/v1/campaigns/" + campaign + "/participations", Json{{"customer_id", kBob}}.dump(),
               "claim-bob-on-wecom");
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_EQ(r.ErrorCode(), "NOT_ELIGIBLE");
  r = SignedAs(bank_->wecom_channel_id, bank_->wecom_channel_secret, "POST",
               "/v1/campaigns/" + campaign + "/participations",
               Json{{"customer_id", kBob}, {"channel", "mobile_banking"}}.dump(),
               "claim-bob-as-mobile");
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_THAT(r.body, HasSubstr("this channel is wecom; it cannot act as mobile_banking"));
  r = Signed("GET", std::string("/v1/customers/") + kBob + "/campaigns?channel=mobile_banking");
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(r.Json()["campaigns"].size(), 1u) << r.body;
  EXPECT_EQ(r.Json()["campaigns"][0]["claimed"], false) << r.body;
  EXPECT_EQ(r.Json()["campaigns"][0]["remaining_total"], "1") << r.body;

  // Alice claims without naming the channel: 201 with the participation and the coupon granted,
  // on the calling channel's code.
  TestResponse claim = Participate(campaign, kAlice, "claim-alice-1", "");
  ASSERT_EQ(claim.status, 201) << claim.body;
  EXPECT_EQ(claim.Json()["status"], "GRANTED");
  EXPECT_EQ(claim.Json()["channel"], "mobile_banking");
  EXPECT_EQ(claim.Json()["customer_id"], kAlice);
  EXPECT_EQ(claim.Json()["customer_org_id"], "bank-a");
  ASSERT_EQ(claim.Json()["rewards"].size(), 1u);
  EXPECT_EQ(claim.Json()["rewards"][0]["benefit_template_id"], tmpl);
  // The replay is the first answer, byte for byte.
  TestResponse replay = Participate(campaign, kAlice, "claim-alice-1", "");
  EXPECT_EQ(replay.status, 201);
  EXPECT_EQ(replay.body, claim.body);
  EXPECT_EQ(replay.Header("idempotent-replayed"), "true");
  // The same key for another request.
  r = Participate(campaign, kBob, "claim-alice-1");
  EXPECT_EQ(r.status, 409);
  EXPECT_EQ(r.ErrorCode(), "IDEMPOTENCY_KEY_REUSED");
  // A second claim: the limit is one per customer.
  r = Participate(campaign, kAlice, "claim-alice-2");
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_EQ(r.ErrorCode(), "LIMIT_REACHED");
  // Not in the audience.
  r = Participate(campaign, kEve, "claim-eve-1");
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_EQ(r.ErrorCode(), "NOT_ELIGIBLE");
  // Not started yet; no such campaign.
  r = Participate(later, kBob, "claim-bob-later");
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_EQ(r.ErrorCode(), "CAMPAIGN_NOT_ACTIVE");
  r = Participate("cmp_doesnotexist0001", kBob, "claim-bob-nothing");
  EXPECT_EQ(r.status, 404) << r.body;
  EXPECT_EQ(r.ErrorCode(), "NOT_FOUND");
  // Bad input: the body may not name the backend's key, or another bank's customers, or
  // unknown fields.
  r = Signed(
      "POST", "/v1/campaigns/" + campaign + "/participations",
      Json{{"customer_id", kBob}, {"channel", "mobile_banking"}, {"idempotency_key", "x"}}.dump(),
      "claim-bob-key");
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, HasSubstr("idempotency_key"));
  r = Signed(
      "POST", "/v1/campaigns/" + campaign + "/participations",
      Json{{"customer_id", kBob}, {"channel", "mobile_banking"}, {"customer_org_id", "bank-b"}}
          .dump(),
      "claim-bob-org");
  EXPECT_EQ(r.status, 403);
  r = Signed("POST", "/v1/campaigns/" + campaign + "/participations",
             Json{{"customer", kBob}, {"channel", "mobile_banking"}}.dump(), "claim-bob-field");
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, HasSubstr("customer"));
  r = Signed("POST", "/v1/campaigns/" + campaign + "/participations",
             Json{{"customer_id", kBob}, {"channel", "mobile_banking"}}.dump());
  EXPECT_EQ(r.status, 400) << "no Idempotency-Key";

  // Bob takes the last coupon; Carol finds the stock gone.
  r = Participate(campaign, kBob, "claim-bob-1");
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(r.Json()["status"], "GRANTED");
  r = Participate(campaign, kCarol, "claim-carol-1");
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_EQ(r.ErrorCode(), "STOCK_EXHAUSTED");
  // Her retry with the same key is answered the same way.
  TestResponse again = Participate(campaign, kCarol, "claim-carol-1");
  EXPECT_EQ(again.status, 409);
  EXPECT_EQ(again.ErrorCode(), "STOCK_EXHAUSTED");

  // Now Alice's entry says she claimed; the coupon centre shows it sold out to Dave.
  r = Signed("GET", std::string("/v1/customers/") + kAlice +
                        "/campaigns?channel=mobile_banking&explain=true");
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(r.Json()["campaigns"].size(), 1u) << r.body;
  EXPECT_EQ(r.Json()["campaigns"][0]["claimed"], true);
  EXPECT_EQ(r.Json()["campaigns"][0]["remaining_total"], "0");
  EXPECT_EQ(r.Json()["campaigns"][0]["open"], false);
  r = Signed("GET", std::string("/v1/customers/") + kDave + "/coupons?channel=mobile_banking");
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(r.Json()["coupons"].size(), 1u) << r.body;
  EXPECT_EQ(r.Json()["coupons"][0]["sold_out"], true);
  EXPECT_EQ(r.Json()["coupons"][0]["open"], false);

  // The campaign's budget, from the ledger (decision 034): two coupons of 5 yuan spent.
  r = Admin(bank_->planner, "GET", "/admin/v1/campaigns/" + campaign + "/budget");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Json()["org_id"], "bank-a");
  EXPECT_EQ(r.Json()["campaign_id"], campaign);
  EXPECT_EQ(r.Json()["funded_fen"], "100000") << r.body;
  EXPECT_EQ(r.Json()["spent_fen"], "1000") << r.body;
  EXPECT_EQ(r.Json()["returned_fen"], "0") << r.body;
  EXPECT_EQ(r.Json()["held_fen"], "0") << r.body;
  EXPECT_EQ(r.Json()["available_fen"], "99000") << r.body;
  // Nothing funded or charged yet (this test funds by hand); another bank's org; a bad id.
  r = Admin(bank_->planner, "GET", "/admin/v1/campaigns/" + later + "/budget");
  EXPECT_EQ(r.status, 404) << r.body;
  EXPECT_EQ(r.ErrorCode(), "ACCOUNT_NOT_FOUND") << r.body;
  EXPECT_THAT(r.body, HasSubstr("funded up to its cap when a version is published"));
  r = Admin(bank_->planner, "GET", "/admin/v1/campaigns/" + campaign + "/budget?org_id=bank-b");
  EXPECT_EQ(r.status, 403) << r.body;
  r = Admin(bank_->planner, "GET", "/admin/v1/campaigns/no%20such/budget");
  EXPECT_EQ(r.status, 400) << r.body;
}

// The wallet, online redemption (lock, confirm, cancel, reverse) and offline QR redemption
// against the real Benefits API.
// An event campaign whose trigger the events service could not turn into a rule is refused when
// it is configured, with the events service's own words, not published to be dead-lettered; so is
// one reading a tag the segments service does not have.
TEST_F(GatewayContractE2eTest, EventCampaignTriggersAreCheckedAgainstTheEventTypeRegistry) {
  const absl::Time start = absl::Now() + absl::Hours(1);
  auto config =
      campaigns::test::CompleteCoupon("Loan bonus", start, start + absl::Hours(6), Segment());
  config.set_type(::marketing::campaigns::v1::EVENT_TRIGGER);
  config.mutable_rewards(0)->set_benefit_template_id("POINTS");
  config.mutable_rewards(0)->set_kind(::marketing::campaigns::v1::REWARD_KIND_POINTS);
  config.mutable_rewards(0)->set_quantity(500);
  // Kept through the REST API (decision 034: step 3 used to drop it); a client's price is not.
  config.mutable_event_trigger()->set_kind(::marketing::campaigns::v1::TRIGGER_FIRST_TIME);
  config.mutable_rewards(0)->set_unit_cost_fen(999);
  struct Case {
    std::string trigger;
    std::string says;  // empty: accepted
  };
  const std::vector<Case> cases = {
      {"event.type == \"loan.disbursed\" && event.amount_fen >= 5000000 && "
       "event.tenor_months >= 12",
       ""},
      {"event.type == \"loan.disbursd\"", "there is no event type \"loan.disbursd\""},
      {"event.type == \"loan.cancelled\"", "a reversal type"},
      {"event.type == \"loan.disbursed\" && event.tenor == 12", "tenor"},
      // Tags are looked up in the real segments service (decision 032).
      {"event.type == \"loan.disbursed\" && customer.tag(\"payroll_customer\")", ""},
      {"event.type == \"loan.disbursed\" && customer.tag(\"payrol_customer\")",
       "unknown tag 'payrol_customer'"},
  };
  for (const Case& c : cases) {
    config.set_trigger_expression(c.trigger);
    TestResponse r = Admin(bank_->planner, "POST", "/admin/v1/campaigns",
                           {{"config", Json::parse(gateway::RenderJson(config))}});
    if (c.says.empty()) {
      EXPECT_EQ(r.status, 200) << c.trigger << ": " << r.body;
      const Json draft = r.Json()["draft"];
      EXPECT_EQ(draft["event_trigger"].value("kind", ""), "TRIGGER_FIRST_TIME") << r.body;
      EXPECT_EQ(draft["rewards"][0].value("unit_cost_fen", "0"), "0") << r.body;
    } else {
      EXPECT_EQ(r.status, 400) << c.trigger << ": " << r.body;
      EXPECT_THAT(r.Json()["error"].value("message", ""), HasSubstr(c.says)) << r.body;
    }
  }
}

TEST_F(GatewayContractE2eTest, WalletRedemptionsAndQrAnswerTheContract) {
  const std::string tmpl = CouponTemplate(/*stock=*/10, /*unit_cost_fen=*/0);
  const std::string customer = "CUSTWALLET" + RandomHex(2);
  const std::string online = IssueCoupon(tmpl, customer);
  const std::string abandoned = IssueCoupon(tmpl, customer);
  const std::string counter = IssueCoupon(tmpl, customer);
  ASSERT_FALSE(online.empty() || abandoned.empty() || counter.empty());
  const std::string wallet_path = "/v1/customers/" + customer + "/wallet";

  TestResponse r = Signed("GET", wallet_path);
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(r.Json()["coupons"].size(), 1u) << r.body;
  EXPECT_EQ(r.Json()["coupons"][0]["state"], "COUPON_ISSUED");
  ASSERT_EQ(r.Json()["coupons"][0]["coupons"].size(), 3u) << r.body;
  const Json issued = r.Json()["coupons"][0]["coupons"];
  for (const auto& c : issued) {
    EXPECT_EQ(c["template_id"], tmpl);
    EXPECT_EQ(c["name"], "10 yuan off");
  }
  // Another bank's org in the query, and another bank's channel: not this wallet.
  r = Signed("GET", wallet_path + "?org_id=bank-b");
  EXPECT_EQ(r.status, 403);
  r = SignedAs(bank_->other_channel_id, bank_->other_channel_secret, "GET", wallet_path, "");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Json()["coupons"].size(), 0u) << "bank-b's wallet of the customer is empty";

  // The order's channel ("": left out, the gateway fills in the caller's code).
  auto lock = [&](const std::string& code, const std::string& order, const std::string& key,
                  const std::string& channel = "mobile_banking") {
    Json order_info{{"order_id", order}, {"amount_fen", "5000"}};
    if (!channel.empty()) order_info["channel"] = channel;
    return Signed(
        "POST", "/v1/redemptions",
        Json{{"coupon_code", code}, {"customer_id", customer}, {"order", order_info}}.dump(), key);
  };
  // A coupon cannot be used as another channel (its usage rules may name channels).
  r = lock(online, "ORDER-0", "lock-0", "counter");
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_EQ(r.ErrorCode(), "PERMISSION_DENIED");
  EXPECT_THAT(r.body, HasSubstr("this channel is mobile_banking; it cannot act as counter"));
  // Lock, confirm, reverse.
  TestResponse locked = lock(online, "ORDER-1", "lock-1");
  ASSERT_EQ(locked.status, 200) << locked.body;
  EXPECT_EQ(locked.Json()["state"], "REDEMPTION_LOCKED");
  EXPECT_EQ(locked.Json()["discount_fen"], "1000");
  EXPECT_EQ(locked.Json()["channel"], "mobile_banking");
  const std::string redemption = locked.Json()["id"];
  r = lock(online, "ORDER-2", "lock-2");
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_EQ(r.ErrorCode(), "COUPON_NOT_USABLE");
  r = Signed("POST", "/v1/redemptions/" + redemption + ":confirm", "{}", "confirm-1");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Json()["state"], "REDEMPTION_CONFIRMED");
  r = Signed("POST", "/v1/redemptions/" + redemption + ":reverse", R"({"reason":"refund"})",
             "reverse-1");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Json()["state"], "REDEMPTION_REVERSED");
  // Lock, cancel; a cancelled redemption cannot be confirmed.
  TestResponse second = lock(abandoned, "ORDER-3", "lock-3", "");
  ASSERT_EQ(second.status, 200) << second.body;
  EXPECT_EQ(second.Json()["channel"], "mobile_banking") << "the caller's code fills the order's";
  const std::string cancelled = second.Json()["id"];
  r = Signed("POST", "/v1/redemptions/" + cancelled + ":cancel", "{}", "cancel-1");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Json()["state"], "REDEMPTION_CANCELLED");
  r = Signed("POST", "/v1/redemptions/" + cancelled + ":confirm", "{}", "confirm-2");
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_EQ(r.ErrorCode(), "CONFLICT");
  // The same order locking the coupon again (a new key) hears that its redemption was
  // cancelled, not a 200 with the cancelled redemption; the coupon is free for a new order id.
  r = lock(abandoned, "ORDER-3", "lock-3-again", "");
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_EQ(r.ErrorCode(), "CONFLICT");
  EXPECT_THAT(r.body, HasSubstr("new order id"));
  r = Signed("POST", "/v1/redemptions/rdm_doesnotexist:confirm", "{}", "confirm-3");
  EXPECT_EQ(r.status, 404) << r.body;
  EXPECT_EQ(r.ErrorCode(), "NOT_FOUND");
  r = lock("NOSUCHCOUPON", "ORDER-4", "lock-4");
  EXPECT_EQ(r.status, 404) << r.body;
  EXPECT_EQ(r.ErrorCode(), "NOT_FOUND");

  // QR: a token for the counter; redeemed once; the terminal's retry of the same order (its
  // answer was lost) gets the same redemption; any other use is refused.
  r = Signed("POST", "/v1/coupons/" + counter + "/qr", Json{{"customer_id", customer}}.dump(),
             "qr-1");
  ASSERT_EQ(r.status, 200) << r.body;
  const std::string token = r.Json()["token"];
  ASSERT_FALSE(token.empty());
  const std::string redeem = Json{
      {"token", token},
      {"merchant_id", "M001"},
      {"terminal_id", "T001"},
      {"order_amount_fen", "8800"},
      {"order_id", "COUNTER-1"}}.dump();
  r = Signed("POST", "/v1/qr-redemptions", redeem, "qr-redeem-1");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Json()["coupon_code"], counter);
  EXPECT_EQ(r.Json()["offline"], true);
  const std::string redemption_id = r.Json()["id"];
  r = Signed("POST", "/v1/qr-redemptions", redeem, "qr-redeem-2");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Json()["id"], redemption_id);
  const std::string other_order = Json{
      {"token", token},
      {"merchant_id", "M001"},
      {"terminal_id", "T001"},
      {"order_amount_fen", "8800"},
      {"order_id", "COUNTER-2"}}.dump();
  r = Signed("POST", "/v1/qr-redemptions", other_order, "qr-redeem-4");
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_EQ(r.ErrorCode(), "TOKEN_ALREADY_USED");
  r = Signed("POST", "/v1/qr-redemptions", R"({"token":"garbage"})", "qr-redeem-3");
  EXPECT_GE(r.status, 400);
  EXPECT_LT(r.status, 500) << r.body;

  // The wallet shows where each coupon stands now.
  r = Signed("GET", wallet_path);
  ASSERT_EQ(r.status, 200) << r.body;
  std::map<std::string, std::string> state_of;
  const Json groups = r.Json()["coupons"];
  for (const auto& group : groups) {
    for (const auto& c : group["coupons"]) {
      state_of[c["code"].get<std::string>()] = group["state"].get<std::string>();
    }
  }
  EXPECT_EQ(state_of[abandoned], "COUPON_ISSUED") << r.body;
  EXPECT_EQ(state_of[counter], "COUPON_REDEEMED") << r.body;
  EXPECT_NE(state_of[online], "COUPON_LOCKED") << r.body;

  // The bank's operators answer the customer from the ledger: accounts and history.
  const std::string admin_customer = "/admin/v1/customers/" + customer;
  TestResponse balances = Admin(bank_->planner, "GET", admin_customer + "/balances");
  ASSERT_EQ(balances.status, 200) << balances.body;
  EXPECT_FALSE(balances.Json()["accounts"].empty()) << balances.body;
  TestResponse history = Admin(bank_->planner, "GET", admin_customer + "/history?page_size=2");
  ASSERT_EQ(history.status, 200) << history.body;
  EXPECT_EQ(history.Json()["transfers"].size(), 2u) << history.body;
  EXPECT_FALSE(history.Json()["page"].value("next_page_token", "").empty()) << history.body;
  EXPECT_EQ(Admin(bank_->planner, "GET", admin_customer + "/balances?org_id=bank-b").status, 403);
  // The ledger's invariants, for the federation's operators only.
  TestResponse integrity = Admin(bank_->root, "GET", "/admin/v1/ledger/integrity");
  ASSERT_EQ(integrity.status, 200) << integrity.body;
  EXPECT_TRUE(integrity.Json().value("ok", false)) << integrity.body;
  EXPECT_EQ(Admin(bank_->planner, "GET", "/admin/v1/ledger/integrity").status, 403);
  EXPECT_EQ(Admin(bank_->planner, "GET", "/admin/v1/fulfilments/no-such-fulfilment").status, 404);
}

// Issue 9 B2-B5 through the real services: another customer's coupon or QR token is a 403 that
// the document lists on those routes; a body naming a field the path fills, or null for a field,
// or missing a required field is a 400 naming the field, and nothing is acted on.
TEST_F(GatewayContractE2eTest, RefusalsAreDocumentedAndBodiesAreStrict) {
  const std::string tmpl = CouponTemplate(/*stock=*/10, /*unit_cost_fen=*/0);
  const std::string owner = "CUSTOWNER" + RandomHex(2);
  const std::string other = "CUSTOTHER" + RandomHex(2);
  const std::string first = IssueCoupon(tmpl, owner);
  const std::string second = IssueCoupon(tmpl, owner);
  ASSERT_FALSE(first.empty() || second.empty());

  // B2: someone else's coupon, to lock, to turn into a QR token, and a QR token redeemed for
  // someone else.
  TestResponse r = Signed("POST", "/v1/redemptions",
                          Json{{"coupon_code", first},
                               {"customer_id", other},
                               {"order", {{"order_id", "ORD-X1"}, {"amount_fen", "5000"}}}}
                              .dump(),
                          "b2-lock");
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_EQ(r.ErrorCode(), "PERMISSION_DENIED");
  r = Signed("POST", "/v1/coupons/" + first + "/qr", Json{{"customer_id", other}}.dump(), "b2-qr");
  EXPECT_EQ(r.status, 403) << r.body;
  r = Signed("POST", "/v1/coupons/" + second + "/qr", Json{{"customer_id", owner}}.dump(),
             "b2-qr-own");
  ASSERT_EQ(r.status, 200) << r.body;
  const std::string token = r.Json()["token"];
  r = Signed("POST", "/v1/qr-redemptions",
             Json{{"token", token},
                  {"merchant_id", "M001"},
                  {"terminal_id", "T001"},
                  {"order_amount_fen", "8800"},
                  {"customer_id", other}}
                 .dump(),
             "b2-redeem");
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_EQ(r.ErrorCode(), "PERMISSION_DENIED");
  // The served document lists it on all three.
  const Json doc = client_->Send("GET", "/openapi.json", {}, "").Json();
  for (const char* path :
       {"/v1/redemptions", "/v1/coupons/{coupon_code}/qr", "/v1/qr-redemptions"}) {
    EXPECT_TRUE(doc["paths"][path]["post"]["responses"].contains("403")) << path;
  }

  // B3: a locked redemption; a body naming another redemption is refused, not silently acted on
  // for the path's one.
  TestResponse locked = Signed("POST", "/v1/redemptions",
                               Json{{"coupon_code", first},
                                    {"customer_id", owner},
                                    {"order", {{"order_id", "ORD-X2"}, {"amount_fen", "5000"}}}}
                                   .dump(),
                               "b3-lock");
  ASSERT_EQ(locked.status, 200) << locked.body;
  const std::string redemption = locked.Json()["id"];
  r = Signed("POST", "/v1/redemptions/" + redemption + ":cancel",
             R"({"redemption_id":"rdm_someone_else"})", "b3-cancel-1");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(r.ErrorCode(), "INVALID_ARGUMENT");
  EXPECT_THAT(r.body, HasSubstr("redemption_id is taken from the path"));
  // B4: null for a field.
  r = Signed("POST", "/v1/redemptions/" + redemption + ":confirm", R"({"reason":null})",
             "b4-confirm");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_THAT(r.body, HasSubstr("reason: null"));
  // B5: a required field left out.
  r = Signed("POST", "/v1/redemptions",
             Json{{"coupon_code", second}, {"customer_id", owner}}.dump(), "b5-lock");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_THAT(r.body, HasSubstr("order is required"));
  r = Signed("POST", "/v1/events",
             Json{{"source_event_id", "EV-" + RandomHex(4)}, {"customer_id", owner}}.dump(),
             "b5-event");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_THAT(r.body, HasSubstr("event_type is required"));
  // B6: path values that are not UTF-8 once decoded (a customer id in GBK, a lone 0xFF) or hold
  // NUL are the caller's mistake: 400 naming the parameter, never the service's parse failure
  // (500), and so never counted against the backend's breaker: twelve of them leave the wallet
  // answering.
  for (int i = 0; i < 4; ++i) {
    for (const char* path : {"/v1/customers/%D5%C5%C8%FD/wallet", "/v1/customers/A%00B/coupons",
                             "/v1/customers/%FF/campaigns"}) {
      r = Signed("GET", path, "", "");
      EXPECT_EQ(r.status, 400) << path << " " << r.body;
      EXPECT_EQ(r.ErrorCode(), "INVALID_ARGUMENT") << path;
      EXPECT_THAT(r.body, HasSubstr("customer_id")) << path;
    }
  }
  r = Signed("POST", "/v1/redemptions/%FF:confirm", "{}", "b6-confirm");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_THAT(r.body, HasSubstr("redemption_id"));
  r = Signed("GET", "/v1/customers/" + owner + "/wallet", "", "");
  EXPECT_EQ(r.status, 200) << r.body;
  // A ':' inside a key is part of it (OpenAPI's pattern allows it in paths as in bodies).
  r = Signed("GET", "/v1/customers/CUST:" + owner + "/wallet", "", "");
  EXPECT_EQ(r.status, 200) << r.body;
  // The redemption was not touched by any of that: it is still LOCKED, and cancels now.
  r = Signed("POST", "/v1/redemptions/" + redemption + ":cancel", "{}", "b3-cancel-2");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Json()["state"], "REDEMPTION_CANCELLED");

  const std::vector<std::string> undocumented = Undocumented();
  EXPECT_TRUE(undocumented.empty()) << ::testing::PrintToString(undocumented);
}

// The rewards process goes away and comes back: the wallet answers 503 fast (the breaker), other
// routes keep working, and after the restart the breaker closes again.
TEST_F(GatewayContractE2eTest, WalletFailsFastWhileRewardsIsDownAndRecoversAfterRestart) {
  TestResponse r = Signed("GET", "/v1/customers/CUSTUP000/wallet");
  ASSERT_EQ(r.status, 200) << r.body;

  ASSERT_EQ(env_->rewards.child->Kill(SIGTERM), 0) << testing::Tail(env_->rewards.log, 20);
  env_->rewards.child.reset();

  // A customer each, so only the backend's health decides the answer (not the customer limit).
  std::vector<double> ms;
  for (int i = 0; i < 100; ++i) {
    const absl::Time start = absl::Now();
    r = Signed("GET", "/v1/customers/CUSTDOWN" + std::to_string(i) + "/wallet");
    ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
    EXPECT_EQ(r.status, 503) << r.body;
    EXPECT_EQ(r.ErrorCode(), "DEPENDENCY_UNAVAILABLE") << r.body;
    // Whole seconds until the breaker lets a probe through: 1..its open time.
    const std::string after = r.Header("retry-after");
    ASSERT_FALSE(after.empty());
    EXPECT_GE(std::stoi(after), 1);
    EXPECT_LE(std::stoi(after), std::max<int64_t>(1, (kBreakerOpenMs + 999) / 1000)) << after;
  }
  std::sort(ms.begin(), ms.end());
  // Nearest-rank p99 of 100: the 99th value.
  EXPECT_LT(ms[98], 50) << "p99 " << ms[98] << " ms, max " << ms.back()
                        << " ms: a 503 must not wait for a deadline";
  std::cerr << "wallet with rewards down: p50 " << ms[49] << " ms, p99 " << ms[98] << " ms, max "
            << ms.back() << " ms\n";
  // Most of them never reached the network: the breaker refused them.
  TestResponse metrics = client_->Send("GET", "/metrics");
  ASSERT_EQ(metrics.status, 200);
  const std::string rejections = "mkt_gateway_circuit_rejections_total{backend=\"rewards\"} ";
  const size_t at = metrics.body.find(rejections);
  ASSERT_NE(at, std::string::npos) << "the rewards breaker never refused a call";
  EXPECT_GE(std::stod(metrics.body.substr(at + rejections.size())), 50);

  // Routes that do not need rewards are unaffected.
  r = Signed("POST", "/v1/events",
             Json{{"source_event_id", "down-" + RandomHex(4)},
                  {"event_type", "card.activated"},
                  {"customer_id", kAlice}}
                 .dump(),
             "down-event");
  EXPECT_EQ(r.status, 202) << r.body;
  r = Signed("GET", std::string("/v1/customers/") + kAlice + "/campaigns?channel=mobile_banking");
  EXPECT_EQ(r.status, 200) << r.body;

  // Back on the same port and database.
  env_->SpawnRewards();
  ASSERT_TRUE(env_->WaitGrpc(env_->rewards));
  const absl::Time back = absl::Now();
  // Open interval, then the probes; the gateway's channel reconnects within its 2 s backoff cap.
  const absl::Time deadline = back + absl::Milliseconds(kBreakerOpenMs) + absl::Seconds(10);
  int status = 0;
  int i = 0;
  while (absl::Now() < deadline) {
    status = Signed("GET", "/v1/customers/CUSTBACK" + std::to_string(i++) + "/wallet").status;
    if (status == 200) break;
    EXPECT_EQ(status, 503);
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_EQ(status, 200) << "the wallet did not recover within "
                         << absl::FormatDuration(deadline - back);
  std::cerr << "wallet answered 200 again " << absl::FormatDuration(absl::Now() - back)
            << " after mkt-rewards was healthy\n";
  for (int j = 0; j < 5; ++j) {
    EXPECT_EQ(Signed("GET", "/v1/customers/CUSTAFTER" + std::to_string(j) + "/wallet").status, 200);
  }
}

}  // namespace
}  // namespace mkt
