// mkt-gateway-openapi: prints the gateway's OpenAPI document (generated from the route table) to
// stdout, for docs/api/openapi.json: `mkt-gateway-openapi > docs/api/openapi.json`.
#include <cstdio>

#include "libs/core/ids.h"
#include "services/gateway/api_routes.h"
#include "services/gateway/openapi.h"

int main() {
  mkt::gateway::Router router;
  mkt::gateway::ApiService api({}, mkt::SystemClock(), nullptr, nullptr);
  mkt::gateway::ApiDependencies deps;
  deps.clock = &mkt::SystemClock();
  if (absl::Status s = mkt::gateway::RegisterApiRoutes(api, router, deps); !s.ok()) {
    std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
    return 1;
  }
  std::fputs(mkt::gateway::OpenApiDocument(api.routes()).c_str(), stdout);
  return 0;
}
