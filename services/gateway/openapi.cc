#include "services/gateway/openapi.h"

#include <cctype>
#include <map>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "nlohmann/json.hpp"
#include "services/gateway/json_codec.h"

namespace mkt::gateway {
namespace {

namespace gpb = ::google::protobuf;
using Json = nlohmann::ordered_json;

constexpr char kDescription[] =
    "The REST interface of the marketing middle platform, served by the gateway: `/v1` for the "
    "customer-facing channel systems (mobile banking, payment QR, WeCom, counter, mini-program, "
    "credit card, cloud portal) and `/admin/v1` for operators (the admin console). Generated "
    "from the gateway's route table; do not edit by hand.\n\n"
    "## Channel authentication (/v1)\n"
    "Every `/v1` request carries four headers. `X-Channel-Id`: the channel id issued by the "
    "channel registry. `X-Timestamp`: unix seconds; refused when more than 300 s away from the "
    "server clock. `X-Nonce`: 8–64 characters of `[A-Za-z0-9_-]`, never reused by the channel "
    "within the window. `X-Signature`: lowercase hex of HMAC-SHA256(channel secret, "
    "`METHOD\\nPATH?QUERY\\nTIMESTAMP\\nNONCE\\nhex(SHA256(body))`), where PATH?QUERY is the "
    "request target exactly as sent and body is the raw body (empty for GET). Failures answer "
    "401 with a distinct code: CREDENTIALS_MISSING, TIMESTAMP_OUT_OF_WINDOW, CHANNEL_UNKNOWN, "
    "CHANNEL_DISABLED, SIGNATURE_INVALID, NONCE_REPLAYED.\n\n"
    "## Operator authentication (/admin/v1)\n"
    "`POST /admin/v1/sessions` with operator id and password answers a bearer token; send it as "
    "`Authorization: Bearer <token>`. Tokens expire (8 h by default) and end at sign-out, on a "
    "password or role change and when the account is disabled. Five wrong passwords in a row "
    "lock the account for 15 minutes (429). Each route names the roles it needs (403 "
    "PERMISSION_DENIED otherwise); an operator sees their org and its descendants only — another "
    "member bank's resources answer 404 (or 403 when the request names the other org).\n\n"
    "## Idempotency\n"
    "Every `/v1` POST needs an `Idempotency-Key` header (1–128 printable ASCII characters); "
    "`/admin/v1` POSTs accept one. A replay with the same key and the same request returns the "
    "first response (header `Idempotent-Replayed: true`); the same key with a different request "
    "is 409 IDEMPOTENCY_KEY_REUSED. Keys are kept 24 hours per channel or operator.\n\n"
    "## Errors\n"
    "Every error is `{\"error\": {\"code\", \"message\", \"request_id\"}}`. `code` is "
    "machine-readable and stable; `message` is for a person; `request_id` matches the "
    "`X-Request-Id` response header. 400 bad input (unknown JSON fields are refused, naming the "
    "field), 401, 403, 404, 409 business rejection or conflict, 413 body too large, 429 rate "
    "limited (with Retry-After), 503 a service is unavailable (with Retry-After), 504 a service "
    "did not answer in time.\n\n"
    "## JSON\n"
    "Bodies follow the protobuf JSON mapping: field names as shown, 64-bit integers as strings, "
    "enums by name, timestamps in RFC 3339, bytes in base64.";

std::string SchemaName(const gpb::Descriptor* d) { return d->full_name(); }

Json Ref(const gpb::Descriptor* d) {
  return Json{{"$ref", absl::StrCat("#/components/schemas/", SchemaName(d))}};
}

class SchemaBuilder {
 public:
  Json FieldSchema(const gpb::FieldDescriptor* f) {
    Json item = SingleSchema(f->is_map() ? f->message_type()->map_value() : f);
    if (f->is_map()) return Json{{"type", "object"}, {"additionalProperties", item}};
    if (f->is_repeated()) return Json{{"type", "array"}, {"items", item}};
    return item;
  }

  Json SingleSchema(const gpb::FieldDescriptor* f) {
    switch (f->type()) {
      case gpb::FieldDescriptor::TYPE_STRING:
        return {{"type", "string"}};
      case gpb::FieldDescriptor::TYPE_BYTES:
        return {{"type", "string"}, {"format", "byte"}};
      case gpb::FieldDescriptor::TYPE_BOOL:
        return {{"type", "boolean"}};
      case gpb::FieldDescriptor::TYPE_DOUBLE:
      case gpb::FieldDescriptor::TYPE_FLOAT:
        return {{"type", "number"}};
      case gpb::FieldDescriptor::TYPE_INT32:
      case gpb::FieldDescriptor::TYPE_SINT32:
      case gpb::FieldDescriptor::TYPE_SFIXED32:
        return {{"type", "integer"}, {"format", "int32"}};
      case gpb::FieldDescriptor::TYPE_UINT32:
      case gpb::FieldDescriptor::TYPE_FIXED32:
        return {{"type", "integer"}, {"format", "int32"}, {"minimum", 0}};
      case gpb::FieldDescriptor::TYPE_INT64:
      case gpb::FieldDescriptor::TYPE_SINT64:
      case gpb::FieldDescriptor::TYPE_SFIXED64:
        return {{"type", "string"}, {"format", "int64"}, {"pattern", "^-?[0-9]{1,19}$"}};
      case gpb::FieldDescriptor::TYPE_UINT64:
      case gpb::FieldDescriptor::TYPE_FIXED64:
        return {{"type", "string"}, {"format", "uint64"}, {"pattern", "^[0-9]{1,20}$"}};
      case gpb::FieldDescriptor::TYPE_ENUM: {
        Json names = Json::array();
        for (int i = 0; i < f->enum_type()->value_count(); ++i) {
          names.push_back(f->enum_type()->value(i)->name());
        }
        return {{"type", "string"}, {"enum", names}};
      }
      default:
        return MessageSchema(f->message_type());
    }
  }

  // A reference to the message's schema (adding it to the components), or an inline schema for
  // the well-known types whose JSON form is not an object of fields.
  Json MessageSchema(const gpb::Descriptor* d) {
    const std::string& name = d->full_name();
    if (name == "google.protobuf.Timestamp") return {{"type", "string"}, {"format", "date-time"}};
    if (name == "google.protobuf.Duration")
      return {{"type", "string"}, {"pattern", "^-?[0-9.]+s$"}};
    if (name == "google.protobuf.Empty")
      return {{"type", "object"}, {"additionalProperties", false}};
    if (name.rfind("google.protobuf.", 0) == 0) return {{"type", "object"}};
    Add(d);
    return Ref(d);
  }

  void Add(const gpb::Descriptor* d) {
    if (!seen_.insert(d->full_name()).second) return;
    Json properties = Json::object();
    for (int i = 0; i < d->field_count(); ++i) {
      properties[d->field(i)->name()] = FieldSchema(d->field(i));
    }
    Json schema = {{"type", "object"}, {"properties", properties}, {"additionalProperties", false}};
    schemas_[SchemaName(d)] = std::move(schema);
  }

  Json Take() {
    // Sorted, so the document does not depend on the order routes reach a type.
    Json sorted = Json::object();
    for (const auto& [name, schema] : schemas_) sorted[name] = schema;
    return sorted;
  }

 private:
  std::set<std::string> seen_;
  std::map<std::string, Json> schemas_;
};

Json ErrorSchema() {
  return {{"type", "object"},
          {"required", {"error"}},
          {"properties",
           {{"error",
             {{"type", "object"},
              {"required", {"code", "message", "request_id"}},
              {"properties",
               {{"code", {{"type", "string"}, {"example", "INVALID_ARGUMENT"}}},
                {"message", {{"type", "string"}}},
                {"request_id", {{"type", "string"}}}}}}}}}};
}

Json ErrorResponse(const std::string& description) {
  return {
      {"description", description},
      {"content", {{"application/json", {{"schema", {{"$ref", "#/components/schemas/Error"}}}}}}}};
}

std::string OperationId(const ApiRoute& route) {
  std::string id = absl::AsciiStrToLower(route.method);
  for (char c : route.path) {
    id.push_back(std::isalnum(static_cast<unsigned char>(c)) ? c : '_');
  }
  // Collapse runs of '_' and trim.
  std::string out;
  for (char c : id) {
    if (c == '_' && (!out.empty() && out.back() == '_')) continue;
    out.push_back(c);
  }
  while (!out.empty() && out.back() == '_') out.pop_back();
  return out;
}

// The name a request field goes by in the query string or the body.
std::string PublicName(const ApiRoute& route, const std::string& field_path) {
  auto it = route.query_names.find(field_path);
  return it == route.query_names.end() ? field_path : it->second;
}

Json Operation(const ApiRoute& route, SchemaBuilder& schemas) {
  Json op = Json::object();
  op["operationId"] = OperationId(route);
  op["summary"] = route.summary;
  std::string description = route.description;
  if (!route.roles.empty()) {
    std::string roles;
    for (auto r : route.roles)
      absl::StrAppend(&roles, roles.empty() ? "" : ", ", std::string(tenancy::RoleName(r)));
    absl::StrAppend(&description, description.empty() ? "" : "\n\n", "Roles: ", roles, ".");
  }
  if (!route.channel_code_field.empty()) {
    absl::StrAppend(&description, description.empty() ? "" : "\n\n", "`",
                    PublicName(route, route.channel_code_field),
                    "` is the calling channel's own code (Channel.code) and may be left out; "
                    "another channel's code is refused with 403 PERMISSION_DENIED (\"this channel "
                    "is mobile_banking; it cannot act as wecom\").");
  }
  if (!description.empty()) op["description"] = description;
  if (!route.tag.empty()) op["tags"] = Json::array({route.tag});
  switch (route.access) {
    case Access::kPublic:
      op["security"] = Json::array();
      break;
    case Access::kChannel:
      op["security"] = Json::array({Json{{"ChannelId", Json::array()},
                                         {"Timestamp", Json::array()},
                                         {"Nonce", Json::array()},
                                         {"Signature", Json::array()}}});
      break;
    case Access::kOperator:
      op["security"] = Json::array({Json{{"BearerToken", Json::array()}}});
      break;
  }

  Json parameters = Json::array();
  for (const auto& param : route.PathParams()) {
    const std::string field = route.FieldForParam(param);
    auto fields = ResolveFieldPath(route.request_type, field);
    Json schema = schemas.SingleSchema(fields.back());
    if (schema.value("type", "") == "string" && !schema.contains("enum")) {
      schema["minLength"] = 1;
      // A path segment cannot hold '/'; and the router splits a trailing ":action" off.
      schema["pattern"] = "^[^/:?#]+$";
    }
    parameters.push_back({{"name", param}, {"in", "path"}, {"required", true}, {"schema", schema}});
  }
  if (route.body.empty()) {
    for (const auto& q : route.QueryParameters()) {
      // A channel's org is the default; only routes that give it a public name document it.
      if (route.access == Access::kChannel && q.field_path == route.scope_field &&
          route.query_names.count(q.field_path) == 0) {
        continue;
      }
      Json schema = schemas.FieldSchema(q.field);
      Json p = {{"name", q.name}, {"in", "query"}, {"required", false}, {"schema", schema}};
      if (q.field_path == route.channel_code_field) {
        p["description"] =
            "Default: the calling channel's code; another channel's code is refused (403).";
      }
      if (q.field->is_repeated()) {
        p["style"] = "form";
        p["explode"] = true;
      }
      parameters.push_back(p);
    }
  }
  if (route.AcceptsIdempotencyKey()) {
    parameters.push_back(
        {{"name", "Idempotency-Key"},
         {"in", "header"},
         {"required", route.RequiresIdempotencyKey()},
         {"schema",
          {{"type", "string"}, {"minLength", 1}, {"maxLength", 128}, {"pattern", "^[!-~]+$"}}}});
  }
  if (!parameters.empty()) op["parameters"] = parameters;

  if (!route.body.empty()) {
    const gpb::Descriptor* body_type = route.request_type;
    if (route.body != "*")
      body_type = ResolveFieldPath(route.request_type, route.body).back()->message_type();
    op["requestBody"] = {
        {"required", false},
        {"content", {{"application/json", {{"schema", schemas.MessageSchema(body_type)}}}}}};
  }

  Json responses = Json::object();
  responses[std::to_string(route.success_status)] = {
      {"description", "Success."},
      {"content",
       {{"application/json", {{"schema", schemas.MessageSchema(route.response_type)}}}}}};
  responses["400"] = ErrorResponse("Bad input: INVALID_ARGUMENT (the message names the field).");
  if (route.access != Access::kPublic) {
    responses["401"] = ErrorResponse(route.access == Access::kChannel
                                         ? "Channel authentication failed."
                                         : "No, expired, tampered or ended bearer token.");
  } else {
    responses["401"] = ErrorResponse("TOKEN_INVALID: wrong operator id or password.");
  }
  if (!route.channel_code_field.empty()) {
    responses["403"] = ErrorResponse(route.scope_field.empty()
                                         ? "PERMISSION_DENIED: another channel's code."
                                         : "PERMISSION_DENIED: another org's data, or another "
                                           "channel's code.");
  } else if (route.access == Access::kOperator || !route.scope_field.empty()) {
    responses["403"] = ErrorResponse("PERMISSION_DENIED: missing role or another org's data.");
  }
  if (route.access == Access::kOperator || !route.PathParams().empty() || !route.backend.empty()) {
    responses["404"] = ErrorResponse("NOT_FOUND (also for another member bank's resources).");
  }
  std::string conflicts = "ALREADY_EXISTS, CONFLICT, IDEMPOTENCY_KEY_REUSED";
  for (const auto& e : route.errors) absl::StrAppend(&conflicts, ", ", e);
  if (route.method != "GET")
    responses["409"] = ErrorResponse(absl::StrCat("Rejected: ", conflicts, "."));
  if (!route.body.empty()) responses["413"] = ErrorResponse("BODY_TOO_LARGE.");
  responses["429"] = ErrorResponse("RATE_LIMITED; see Retry-After.");
  responses["503"] = ErrorResponse("DEPENDENCY_UNAVAILABLE; see Retry-After.");
  if (!route.backend.empty()) responses["504"] = ErrorResponse("DEADLINE_EXCEEDED.");
  op["responses"] = responses;
  return op;
}

Json StaticPaths() {
  Json paths = Json::object();
  paths["/healthz"]["get"] = {{"operationId", "get_healthz"},
                              {"summary", "Liveness of the gateway process"},
                              {"tags", {"gateway"}},
                              {"security", Json::array()},
                              {"responses",
                               {{"200",
                                 {{"description", "The gateway is serving."},
                                  {"content",
                                   {{"application/json",
                                     {{"schema",
                                       {{"type", "object"},
                                        {"properties", {{"status", {{"type", "string"}}}}},
                                        {"required", {"status"}}}}}}}}}}}}};
  paths["/openapi.json"]["get"] = {
      {"operationId", "get_openapi_json"},
      {"summary", "This document"},
      {"tags", {"gateway"}},
      {"security", Json::array()},
      {"responses",
       {{"200",
         {{"description", "The OpenAPI document."},
          {"content", {{"application/json", {{"schema", {{"type", "object"}}}}}}}}}}}};
  paths["/v1/channel"]["get"] = {
      {"operationId", "get_v1_channel"},
      {"summary", "Who the signed caller is, and the server time to check clocks against"},
      {"tags", {"channel"}},
      {"security", Json::array({Json{{"ChannelId", Json::array()},
                                     {"Timestamp", Json::array()},
                                     {"Nonce", Json::array()},
                                     {"Signature", Json::array()}}})},
      {"responses",
       {{"200",
         {{"description", "The authenticated channel."},
          {"content",
           {{"application/json",
             {{"schema",
               {{"type", "object"},
                {"properties",
                 {{"channel_id", {{"type", "string"}}},
                  {"org_id", {{"type", "string"}}},
                  {"code",
                   {{"type", "string"},
                    {"description",
                     "The channel code this channel acts as (mobile_banking, wecom, ...)."}}},
                  {"server_time", {{"type", "string"}, {"format", "date-time"}}},
                  {"server_time_unix", {{"type", "integer"}}}}},
                {"required",
                 {"channel_id", "org_id", "code", "server_time", "server_time_unix"}}}}}}}}}},
        {"401", ErrorResponse("Channel authentication failed.")},
        {"429", ErrorResponse("RATE_LIMITED.")},
        {"503", ErrorResponse("The channel registry is unavailable.")}}}};
  return paths;
}

}  // namespace

std::string OpenApiDocument(const std::deque<ApiRoute>& routes) {
  SchemaBuilder schemas;
  Json paths = StaticPaths();
  for (const auto& route : routes) {
    paths[route.path][absl::AsciiStrToLower(route.method)] = Operation(route, schemas);
  }
  // Paths sorted for a stable, reviewable document.
  std::map<std::string, Json> sorted_paths;
  for (auto& [path, item] : paths.items()) sorted_paths[path] = item;
  Json sorted = Json::object();
  for (auto& [path, item] : sorted_paths) sorted[path] = item;

  Json components_schemas = schemas.Take();
  components_schemas["Error"] = ErrorSchema();
  Json doc = {
      {"openapi", "3.0.3"},
      {"info",
       {{"title", "Marketing middle platform — REST API (channels and operators)"},
        {"version", "1.1.0"},
        {"description", kDescription}}},
      {"servers", {{{"url", "http://127.0.0.1:8080"}, {"description", "local stack (./dev up)"}}}},
      {"paths", sorted},
      {"components",
       {{"securitySchemes",
         {{"ChannelId", {{"type", "apiKey"}, {"in", "header"}, {"name", "X-Channel-Id"}}},
          {"Timestamp", {{"type", "apiKey"}, {"in", "header"}, {"name", "X-Timestamp"}}},
          {"Nonce", {{"type", "apiKey"}, {"in", "header"}, {"name", "X-Nonce"}}},
          {"Signature", {{"type", "apiKey"}, {"in", "header"}, {"name", "X-Signature"}}},
          {"BearerToken", {{"type", "http"}, {"scheme", "bearer"}}}}},
        {"schemas", components_schemas}}}};
  return doc.dump(2) + "\n";
}

}  // namespace mkt::gateway
