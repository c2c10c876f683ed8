#include "services/gateway/openapi.h"

#include <fstream>
#include <sstream>

#include "gtest/gtest.h"
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
