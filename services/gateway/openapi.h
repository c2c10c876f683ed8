// The OpenAPI 3 document of the REST API, generated from the route table (ApiService::routes())
// and the protobuf descriptors of its request and response messages, so the document cannot
// drift from what the gateway serves. Served at GET /openapi.json and committed as
// docs/api/openapi.json (a test fails when the committed file differs; regenerate with
// `mkt-gateway-openapi > docs/api/openapi.json`).
#pragma once

#include <deque>
#include <map>
#include <string>

#include "services/gateway/api.h"

namespace mkt::gateway {

// Returns every HTTP status `route` can answer with its documentation text, derived from the
// row (access, org scope, channel code, backend, body, method and its `errors` codes), so a
// status the gateway or a service can give is documented wherever it can happen.
std::map<int, std::string> DocumentedStatuses(const ApiRoute& route);
// Returns the status an error code of ApiRoute::errors is answered with on `route`.
int DocumentedStatusOf(const ApiRoute& route, const std::string& code);

// Returns the document as pretty-printed JSON (2-space indent, trailing newline).
std::string OpenApiDocument(const std::deque<ApiRoute>& routes);

}  // namespace mkt::gateway
