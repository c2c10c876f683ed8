#include "services/gateway/openapi.h"

#include <fstream>
#include <set>
#include <sstream>

#include "gtest/gtest.h"
#include "libs/tenancy/tenancy.h"
#include "nlohmann/json.hpp"
#include "services/gateway/api_routes.h"

namespace mkt::gateway {
namespace {

std::string Generate(std::deque<ApiRoute>* routes = nullptr) {
  Router router;
  ApiService api({}, SystemClock(), nullptr, nullptr);
  ApiDependencies deps;
  deps.clock = &SystemClock();
  absl::Status s = RegisterApiRoutes(api, router, deps);
  EXPECT_TRUE(s.ok()) << s;
  if (routes != nullptr) *routes = api.routes();
  return OpenApiDocument(api.routes());
}

TEST(OpenApiTest, EveryRouteIsDocumentedWithItsSecurityAndResponses) {
  std::deque<ApiRoute> routes;
  const nlohmann::json doc = nlohmann::json::parse(Generate(&routes));
  ASSERT_GT(routes.size(), 40u);
  for (const auto& route : routes) {
    std::string method = route.method;
    for (char& c : method) c = static_cast<char>(std::tolower(c));
    ASSERT_TRUE(doc["paths"].contains(route.path)) << route.path;
    const auto& op = doc["paths"][route.path][method];
    ASSERT_TRUE(op.is_object()) << route.method << " " << route.path;
    EXPECT_TRUE(op["responses"].contains(std::to_string(route.success_status))) << route.path;
    EXPECT_TRUE(op["responses"].contains("400"));
    EXPECT_TRUE(op["responses"].contains("429"));
    if (route.access == Access::kOperator) {
      EXPECT_EQ(op["security"][0].begin().key(), "BearerToken") << route.path;
      EXPECT_TRUE(op["responses"].contains("403"));
    }
    if (route.RequiresIdempotencyKey()) {
      bool found = false;
      for (const auto& p : op["parameters"]) {
        found |= p["name"] == "Idempotency-Key" && p["required"] == true;
      }
      EXPECT_TRUE(found) << route.path;
    }
  }
  // Every $ref resolves.
  const std::string text = doc.dump();
  size_t pos = 0;
  while ((pos = text.find("#/components/schemas/", pos)) != std::string::npos) {
    pos += 21;
    const std::string name = text.substr(pos, text.find('"', pos) - pos);
    EXPECT_TRUE(doc["components"]["schemas"].contains(name)) << name;
  }
}

const nlohmann::json& Op(const nlohmann::json& doc, const std::string& method,
                         const std::string& path) {
  return doc["paths"][path][method];
}

// Issue 9 B2: every status a route can answer is documented; in particular the 403 of the rewards
// routes (another customer's coupon or QR token), which the service answers itself.
TEST(OpenApiTest, EveryStatusARouteCanAnswerIsDocumented) {
  std::deque<ApiRoute> routes;
  const nlohmann::json doc = nlohmann::json::parse(Generate(&routes));
  for (const auto& [method, path] : std::vector<std::pair<std::string, std::string>>{
           {"post", "/v1/redemptions"},
           {"post", "/v1/coupons/{coupon_code}/qr"},
           {"post", "/v1/qr-redemptions"},
           {"get", "/v1/customers/{customer_id}/wallet"}}) {
    EXPECT_TRUE(Op(doc, method, path)["responses"].contains("403")) << method << " " << path;
  }
  for (const auto& route : routes) {
    std::string method = route.method;
    for (char& c : method) c = static_cast<char>(std::tolower(c));
    const auto& responses = Op(doc, method, route.path)["responses"];
    for (const auto& [status, text] : DocumentedStatuses(route)) {
      EXPECT_TRUE(responses.contains(std::to_string(status))) << route.path << " " << status;
    }
    for (const auto& code : route.errors) {
      const std::string status = std::to_string(DocumentedStatusOf(route, code));
      ASSERT_TRUE(responses.contains(status)) << route.path << " " << code;
      if (status == "403" || status == "409") continue;
      EXPECT_NE(responses[status]["description"].get<std::string>().find(code), std::string::npos)
          << route.path << " " << code;
    }
    // A backend re-checks org and ownership itself: its 403 can reach any of its routes.
    if (!route.backend.empty()) {
      EXPECT_TRUE(responses.contains("403")) << route.path;
    }
    // A channel's signature may need the channel registry, which can time out: 504 on every
    // channel route, also those that call no service (events, tracking).
    if (route.access == Access::kChannel) {
      EXPECT_TRUE(responses.contains("504")) << route.path;
    }
  }
  EXPECT_TRUE(Op(doc, "get", "/v1/channel")["responses"].contains("504"));
  EXPECT_NE(Op(doc, "post", "/v1/qr-redemptions")["responses"]["409"]["description"]
                .get<std::string>()
                .find("TOKEN_ALREADY_USED"),
            std::string::npos);
}

// Issue 9 B3: fields the gateway fills are not in the documented body.
TEST(OpenApiTest, BodiesLeaveOutWhatThePathHeadersOrChannelFill) {
  const nlohmann::json doc = nlohmann::json::parse(Generate());
  auto body = [&](const std::string& path) {
    return Op(doc, "post", path)["requestBody"]["content"]["application/json"]["schema"];
  };
  for (const char* verb : {"confirm", "cancel", "reverse"}) {
    const auto schema = body(std::string("/v1/redemptions/{redemption_id}:") + verb);
    ASSERT_TRUE(schema.contains("properties")) << schema.dump();
    EXPECT_FALSE(schema["properties"].contains("redemption_id")) << verb;
    EXPECT_TRUE(schema["properties"].contains("reason")) << verb;
    EXPECT_EQ(schema["additionalProperties"], false);
  }
  const auto take_part = body("/v1/campaigns/{campaign_id}/participations");
  EXPECT_FALSE(take_part["properties"].contains("campaign_id"));
  EXPECT_FALSE(take_part["properties"].contains("idempotency_key"));
  EXPECT_TRUE(take_part["properties"].contains("channel")) << "defaulted, may be sent";
  EXPECT_FALSE(body("/v1/coupons/{coupon_code}/qr")["properties"].contains("coupon_code"));
  EXPECT_FALSE(body("/v1/events")["properties"].contains("source"));
  const auto tracking = body("/v1/tracking")["properties"]["events"]["items"];
  ASSERT_TRUE(tracking.contains("properties")) << tracking.dump();
  EXPECT_FALSE(tracking["properties"].contains("channel_id"));
  EXPECT_FALSE(tracking["properties"].contains("org_id"));
  EXPECT_TRUE(tracking["properties"].contains("page"));
  EXPECT_NE(Op(doc, "post", "/v1/redemptions/{redemption_id}:confirm")["description"]
                .get<std::string>()
                .find("`redemption_id` from the path"),
            std::string::npos);
}

// Issue 9 B4 and B5: no field is nullable; required fields are listed (and non-empty).
TEST(OpenApiTest, RequiredFieldsAreListedAndNothingIsNullable) {
  const nlohmann::json doc = nlohmann::json::parse(Generate());
  auto body = [&](const std::string& path) {
    return Op(doc, "post", path)["requestBody"]["content"]["application/json"]["schema"];
  };
  auto required = [](const nlohmann::json& schema) {
    std::set<std::string> out;
    for (const auto& name : schema.value("required", nlohmann::json::array())) out.insert(name);
    return out;
  };
  const auto lock = body("/v1/redemptions");
  EXPECT_EQ(required(lock), (std::set<std::string>{"coupon_code", "customer_id", "order"}));
  EXPECT_EQ(lock["properties"]["coupon_code"]["minLength"], 1);
  EXPECT_EQ(required(lock["properties"]["order"]), std::set<std::string>{"order_id"});
  EXPECT_EQ(required(body("/v1/qr-redemptions")),
            (std::set<std::string>{"token", "merchant_id", "terminal_id"}));
  EXPECT_EQ(required(body("/v1/coupons/{coupon_code}/qr")), std::set<std::string>{"customer_id"});
  EXPECT_EQ(required(body("/v1/campaigns/{campaign_id}/participations")),
            std::set<std::string>{"customer_id"});
  EXPECT_EQ(required(body("/v1/events")),
            (std::set<std::string>{"source_event_id", "event_type", "customer_id"}));
  const auto tracking = body("/v1/tracking");
  EXPECT_EQ(required(tracking), std::set<std::string>{"events"});
  EXPECT_EQ(tracking["properties"]["events"]["minItems"], 1);
  const auto event = tracking["properties"]["events"]["items"];
  EXPECT_EQ(required(event), (std::set<std::string>{"client_event_id", "customer_id", "action"}));
  // A required enum leaves out the proto3 "unset" value.
  for (const auto& v : event["properties"]["action"]["enum"]) {
    EXPECT_NE(v.get<std::string>().find("UNSPECIFIED"), 0u) << v;
    EXPECT_EQ(v.get<std::string>().find("UNSPECIFIED"), std::string::npos) << v;
  }
  EXPECT_EQ(body("/v1/redemptions/{redemption_id}:confirm")["properties"]["reason"]["nullable"],
            false);
  // Keys the services check are documented with their pattern and length.
  EXPECT_EQ(lock["properties"]["customer_id"]["pattern"], "^[A-Za-z0-9._:-]{1,64}$");
  EXPECT_EQ(lock["properties"]["order"]["properties"]["order_id"]["maxLength"], 64);
  EXPECT_EQ(
      body("/v1/campaigns/{campaign_id}/participations")["properties"]["channel"]["maxLength"], 32);
  const auto& param = Op(doc, "post", "/v1/redemptions/{redemption_id}:confirm")["parameters"][0];
  EXPECT_EQ(param["schema"]["pattern"], "^[A-Za-z0-9._:-]{1,64}$");
  // A key has the same pattern in a path as in a body: a customer id a client may send in a
  // body ("cust:1") is one it may also put in a path.
  const auto& wallet = Op(doc, "get", "/v1/customers/{customer_id}/wallet")["parameters"][0];
  EXPECT_EQ(wallet["schema"]["pattern"], lock["properties"]["customer_id"]["pattern"]);
  // Every property of every component that is not a reference says it is not nullable.
  for (const auto& [name, schema] : doc["components"]["schemas"].items()) {
    if (name == "Error") continue;
    for (const auto& [field, property] : schema["properties"].items()) {
      if (property.contains("$ref")) continue;
      EXPECT_EQ(property.value("nullable", true), false) << name << "." << field;
    }
  }
}

// The configurable numbers of the introduction are described as configuration with defaults.
TEST(OpenApiTest, ConfigurableLimitsAreDescribedAsConfiguration) {
  const nlohmann::json doc = nlohmann::json::parse(Generate());
  const std::string intro = doc["info"]["description"];
  EXPECT_EQ(intro.find("Five wrong passwords"), std::string::npos);
  EXPECT_EQ(intro.find("for 15 minutes"), std::string::npos);
  for (const char* key :
       {"`lockout_failures`", "`lockout_s`", "`token_ttl_s`", "`idempotency_retention_h`",
        "`timestamp_window_s`", "`nonce_max_per_channel`", "`nonce_max_total`"}) {
    EXPECT_NE(intro.find(key), std::string::npos) << key;
  }
  EXPECT_NE(intro.find("(default 5)"), std::string::npos);
  EXPECT_NE(intro.find("(default 900 s = 15 minutes"), std::string::npos);
  const std::string sign_in = Op(doc, "post", "/admin/v1/sessions")["description"];
  EXPECT_EQ(sign_in.find("Five wrong"), std::string::npos);
  EXPECT_NE(sign_in.find("`lockout_failures`"), std::string::npos);
}

// An org a request names (the customer's org, an operator's org scope) is checked as an org id
// before anything else; the document says so, so clients and test generators send valid ones.
TEST(OpenApiTest, OrgFieldsCarryTheOrgIdPattern) {
  const nlohmann::json doc = nlohmann::json::parse(Generate());
  auto property = [&](const std::string& path, const std::string& name) {
    return Op(doc, "post",
              path)["requestBody"]["content"]["application/json"]["schema"]["properties"][name];
  };
  for (const auto& [path, name] : std::vector<std::pair<std::string, std::string>>{
           {"/v1/campaigns/{campaign_id}/participations", "customer_org_id"},
           {"/v1/events", "org_id"},
           {"/admin/v1/benefit-templates", "org_id"}}) {
    const nlohmann::json schema = property(path, name);
    EXPECT_EQ(schema.value("pattern", ""), tenancy::OrgIdPattern()) << path << " " << name;
    EXPECT_EQ(schema.value("maxLength", 0), 64) << path << " " << name;
  }
}

TEST(OpenApiTest, CommittedDocumentMatchesTheRouteTable) {
  std::ifstream in(std::string(MKT_SOURCE_DIR) + "/docs/api/openapi.json");
  std::stringstream committed;
  committed << in.rdbuf();
  EXPECT_TRUE(committed.str() == Generate())
      << "docs/api/openapi.json is out of date; regenerate it with\n"
         "  build/debug/services/gateway/mkt-gateway-openapi > docs/api/openapi.json";
}

}  // namespace
}  // namespace mkt::gateway
