// The OpenAPI 3 document of the REST API, generated from the route table (ApiService::routes())
// and the protobuf descriptors of its request and response messages, so the document cannot
// drift from what the gateway serves. Served at GET /openapi.json and committed as
// docs/api/openapi.json (a test fails when the committed file differs; regenerate with
// `mkt-gateway-openapi > docs/api/openapi.json`).
#pragma once

#include <deque>
#include <string>

#include "services/gateway/api.h"

namespace mkt::gateway {

// Returns the document as pretty-printed JSON (2-space indent, trailing newline).
std::string OpenApiDocument(const std::deque<ApiRoute>& routes);

}  // namespace mkt::gateway
