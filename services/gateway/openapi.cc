#include "services/gateway/openapi.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "libs/tenancy/tenancy.h"
#include "nlohmann/json.hpp"
#include "services/gateway/gateway_config.h"
#include "services/gateway/json_codec.h"

namespace mkt::gateway {
namespace {

namespace gpb = ::google::protobuf;
using Json = nlohmann::ordered_json;

// The document's introduction. The numbers in it are configuration keys of the gateway, given
// with their defaults (from GatewayConfig), so the text cannot drift from the code.
std::string Description() {
  const GatewayConfig d;
  return absl::StrCat(
      "The REST interface of the marketing middle platform, served by the gateway: `/v1` for the "
      "customer-facing channel systems (mobile banking, payment QR, WeCom, counter, "
      "mini-program, credit card, cloud portal) and `/admin/v1` for operators (the admin "
      "console). Generated from the gateway's route table; do not edit by hand. Numbers in "
      "`code` style below are gateway configuration keys (MKT_GATEWAY_<KEY>), shown with their "
      "defaults.\n\n"
      "## Channel authentication (/v1)\n"
      "Every `/v1` request carries four headers. `X-Channel-Id`: the channel id issued by the "
      "channel registry. `X-Timestamp`: unix seconds; refused when more than "
      "`timestamp_window_s` (default ",
      d.timestamp_window_s,
      " s) away from the server clock. `X-Nonce`: 8–64 characters of `[A-Za-z0-9_-]`, never "
      "reused by the channel within the window. `X-Signature`: lowercase hex of "
      "HMAC-SHA256(channel secret, `METHOD\\nPATH?QUERY\\nTIMESTAMP\\nNONCE\\nhex(SHA256(body))`), "
      "where PATH?QUERY is the request target exactly as sent and body is the raw body (empty "
      "for GET). Failures answer 401 with a distinct code: CREDENTIALS_MISSING, "
      "TIMESTAMP_OUT_OF_WINDOW, CHANNEL_UNKNOWN, CHANNEL_DISABLED, SIGNATURE_INVALID, "
      "NONCE_REPLAYED. Nonces are remembered for 2 × `timestamp_window_s` + 10 s, at most "
      "`nonce_max_per_channel` per channel (default: what the channel's rate limit "
      "`channel_rate` allows in that time, +10 %) and `nonce_max_total` in all (default ",
      d.nonce_max_total,
      "); beyond them a request is refused — never is a nonce forgotten early — with 429 "
      "RATE_LIMITED (the channel's bound) or 503 DEPENDENCY_UNAVAILABLE (the gateway's), both "
      "with Retry-After.\n\n"
      "## Operator authentication (/admin/v1)\n"
      "`POST /admin/v1/sessions` with operator id and password answers a bearer token; send it "
      "as `Authorization: Bearer <token>`. Tokens expire after `token_ttl_s` (default ",
      d.token_ttl_s / 3600,
      " h) and end at sign-out, on a password or role change and when the account is disabled. "
      "`lockout_failures` wrong passwords in a row (default ",
      d.lockout_failures, ") lock the account for `lockout_s` (default ", d.lockout_s,
      " s = ", d.lockout_s / 60,
      " minutes; 429). Each route names the roles it needs (403 PERMISSION_DENIED otherwise); an "
      "operator sees their org and its descendants only — another member bank's resources "
      "answer 404 (or 403 when the request names the other org).\n\n"
      "## Idempotency\n"
      "Every `/v1` POST needs an `Idempotency-Key` header (1–128 printable ASCII characters); "
      "`/admin/v1` POSTs accept one. A replay with the same key and the same request returns the "
      "first response (header `Idempotent-Replayed: true`); the same key with a different "
      "request is 409 IDEMPOTENCY_KEY_REUSED. Keys are kept `idempotency_retention_h` (default ",
      d.idempotency_retention_h,
      " hours) per channel or operator. One exception: `POST /v1/campaigns/{campaign_id}/"
      "participations` keeps its key in the campaigns service, per channel and campaign, for as "
      "long as the participation; a refusal that stored nothing (sold out, a limit reached, not "
      "open) is decided again on a retry (see that operation).\n\n"
      "## Errors\n"
      "Every error is `{\"error\": {\"code\", \"message\", \"request_id\"}}`. `code` is "
      "machine-readable and stable; `message` is for a person; `request_id` matches the "
      "`X-Request-Id` response header. 400 bad input (unknown JSON fields are refused, naming the "
      "field), 401, 403, 404, 409 business rejection or conflict, 413 body too large, 429 rate "
      "limited (with Retry-After), 503 a service is unavailable (with Retry-After), 504 a service "
      "did not answer in time. Each operation lists the statuses it can answer and, for 403 and "
      "409, the codes.\n\n"
      "## JSON\n"
      "Bodies follow the protobuf JSON mapping: field names as shown, 64-bit integers as strings, "
      "enums by name, timestamps in RFC 3339, bytes in base64; a field left out takes its default "
      "(\"\", 0, false, the first enum value, an empty list). Parsing is strict: an unknown field "
      "is a 400 naming it, and so is `null` for any field (no field is nullable: leave it out "
      "instead). Fields the gateway fills from the path, a header or the calling channel are not "
      "part of a request body: sending them is a 400 naming the field (the path value is never "
      "silently overridden). `required` fields are checked by the gateway before any service is "
      "called (400 naming the field).");
}

std::string SchemaName(const gpb::Descriptor* d) { return d->full_name(); }

Json Ref(const gpb::Descriptor* d) {
  return Json{{"$ref", absl::StrCat("#/components/schemas/", SchemaName(d))}};
}

// An org id field: the pattern and length IsValidOrgId accepts.
void OrgIdSchema(Json& schema) {
  schema["pattern"] = tenancy::OrgIdPattern();
  schema["maxLength"] = tenancy::kMaxOrgIdLength;
}

class SchemaBuilder {
 public:
  Json FieldSchema(const gpb::FieldDescriptor* f) {
    Json item = SingleSchema(f->is_map() ? f->message_type()->map_value() : f);
    if (f->is_map()) item = Json{{"type", "object"}, {"additionalProperties", item}};
    if (f->is_repeated() && !f->is_map()) item = Json{{"type", "array"}, {"items", item}};
    // The gateway refuses null for every field (json_codec.h); said explicitly for clients and
    // test generators ($ref schemas take no siblings in OpenAPI 3.0).
    if (!item.contains("$ref")) item["nullable"] = false;
    return item;
  }

  // The inline schema of a route's request body: `d` (at `prefix` within the body) without the
  // fields the gateway fills, with the required ones listed. Messages with nothing to leave out
  // or require below them stay references to the shared component.
  Json BodySchema(const gpb::Descriptor* d, const std::string& prefix,
                  const std::vector<RefusedBodyField>& refused,
                  const std::vector<std::string>& required, const std::map<std::string, int>& keys,
                  const std::string& org_field) {
    auto under = [&](const std::string& path) {
      return prefix.empty() || path.rfind(prefix, 0) == 0;
    };
    bool special = !org_field.empty() && under(org_field);
    for (const auto& r : refused) special |= under(r.path);
    for (const auto& r : required) special |= under(r);
    for (const auto& [k, length] : keys) special |= under(k);
    if (!special) return MessageSchema(d);
    Json properties = Json::object();
    Json required_names = Json::array();
    for (int i = 0; i < d->field_count(); ++i) {
      const gpb::FieldDescriptor* f = d->field(i);
      const std::string path = prefix + f->name();
      if (std::any_of(refused.begin(), refused.end(),
                      [&](const RefusedBodyField& r) { return r.path == path; })) {
        continue;
      }
      Json schema;
      const bool nested = f->message_type() != nullptr && !f->is_map() &&
                          f->message_type()->full_name().rfind("google.protobuf.", 0) != 0;
      if (nested) {
        Json item = BodySchema(f->message_type(), path + ".", refused, required, keys, org_field);
        schema = f->is_repeated() ? Json{{"type", "array"}, {"items", item}} : item;
        if (f->is_repeated()) schema["nullable"] = false;
      } else {
        schema = FieldSchema(f);
      }
      if (auto key = keys.find(path); key != keys.end() && schema.value("type", "") == "string") {
        schema["pattern"] = absl::StrCat("^[A-Za-z0-9._:-]{1,", key->second, "}$");
        schema["maxLength"] = key->second;
      }
      if (path == org_field && schema.value("type", "") == "string") OrgIdSchema(schema);
      if (std::find(required.begin(), required.end(), path) != required.end()) {
        required_names.push_back(f->name());
        if (schema.value("type", "") == "string" && !schema.contains("enum")) {
          schema["minLength"] = 1;
        }
        if (schema.value("type", "") == "array") schema["minItems"] = 1;
        if (schema.contains("enum")) {
          // The first enum value is "unset" in proto3: a required enum needs another one.
          Json names = Json::array();
          for (size_t k = 1; k < schema["enum"].size(); ++k) names.push_back(schema["enum"][k]);
          schema["enum"] = names;
        }
      }
      properties[f->name()] = std::move(schema);
    }
    Json schema = {{"type", "object"}, {"properties", properties}, {"additionalProperties", false}};
    if (!required_names.empty()) schema["required"] = required_names;
    return schema;
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

}  // namespace

int DocumentedStatusOf(const ApiRoute& route, const std::string& code) {
  if (code == "PERMISSION_DENIED") return 403;
  if (code == "NOT_FOUND") return 404;
  if (code == "RATE_LIMITED") return 429;
  if (code == "BODY_TOO_LARGE") return 413;
  if (code == "DEPENDENCY_UNAVAILABLE") return 503;
  if (code == "DEADLINE_EXCEEDED") return 504;
  if (code == "INVALID_ARGUMENT") return 400;
  // A bad QR or refresh token is bad input; only sign-in answers it as a failed login.
  if (code == "TOKEN_INVALID") return route.access == Access::kPublic ? 401 : 400;
  // The business refusals and conflicts (ErrorResponse forces the refusals to 409).
  return 409;
}

std::map<int, std::string> DocumentedStatuses(const ApiRoute& route) {
  std::map<int, std::string> out;
  out[route.success_status] = "Success.";
  out[400] = "Bad input: INVALID_ARGUMENT (the message names the field).";
  if (route.access == Access::kPublic) {
    out[401] = "TOKEN_INVALID: wrong operator id or password.";
  } else {
    out[401] = route.access == Access::kChannel ? "Channel authentication failed."
                                                : "No, expired, tampered or ended bearer token.";
  }
  // Who may get a 403: operators (roles, org scope), routes naming an org or a channel code, and
  // every backend call: the services re-check the caller's org and ownership themselves (defence
  // in depth), and their PERMISSION_DENIED passes through.
  std::vector<std::string> denied;
  if (route.access == Access::kOperator) denied.push_back("missing role");
  if (!route.scope_field.empty()) denied.push_back("another org's data");
  if (!route.channel_code_field.empty()) denied.push_back("another channel's code");
  if (!route.backend.empty()) denied.push_back("refused by the service");
  std::vector<std::string> conflicts;
  if (route.method != "GET") conflicts = {"ALREADY_EXISTS", "CONFLICT", "IDEMPOTENCY_KEY_REUSED"};
  std::map<int, std::vector<std::string>> extra;
  for (const auto& code : route.errors) {
    const int status = DocumentedStatusOf(route, code);
    if (status == 409) {
      conflicts.push_back(code);
    } else if (status != 403) {
      extra[status].push_back(code);
    } else if (denied.empty()) {
      denied.push_back("refused");
    }
  }
  if (!denied.empty()) {
    std::string why;
    for (const auto& d : denied) absl::StrAppend(&why, why.empty() ? "" : ", ", d);
    out[403] = absl::StrCat("PERMISSION_DENIED: ", why, ".");
  }
  if (route.access == Access::kOperator || !route.PathParams().empty() || !route.backend.empty()) {
    out[404] = "NOT_FOUND (also for another member bank's resources).";
  }
  if (!conflicts.empty()) {
    std::string codes;
    for (const auto& c : conflicts) absl::StrAppend(&codes, codes.empty() ? "" : ", ", c);
    out[409] = absl::StrCat("Rejected: ", codes, ".");
  }
  if (!route.body.empty()) out[413] = "BODY_TOO_LARGE.";
  out[429] = "RATE_LIMITED; see Retry-After.";
  out[503] = "DEPENDENCY_UNAVAILABLE; see Retry-After.";
  // A channel request's signature needs the channel's credential, which the gateway may have to
  // ask the channel registry for.
  if (!route.backend.empty() || route.access == Access::kChannel) {
    out[504] = "DEADLINE_EXCEEDED.";
  }
  for (const auto& [status, codes] : extra) {
    std::string& text = out[status];
    for (const auto& c : codes) {
      if (text.find(c) == std::string::npos)
        absl::StrAppend(&text, text.empty() ? "" : " ", c, ".");
    }
  }
  return out;
}

namespace {

// The route's key fields, as paths within its body.
// `path` (a field path of the request) relative to the route's body; "" when it is not in it.
std::string InBody(const ApiRoute& route, const std::string& path) {
  if (path.empty() || route.body.empty()) return "";
  if (route.body == "*") return path;
  if (path.rfind(route.body + ".", 0) == 0) return path.substr(route.body.size() + 1);
  return "";
}

std::map<std::string, int> KeysInBody(const ApiRoute& route) {
  std::map<std::string, int> out;
  for (const auto& [path, length] : route.key_fields) {
    if (std::string in = InBody(route, path); !in.empty()) out[in] = length;
  }
  return out;
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
  if (const auto refused = route.RefusedBodyFields(); !refused.empty()) {
    std::string fields;
    for (const auto& r : refused) {
      absl::StrAppend(&fields, fields.empty() ? "" : "; ", "`", r.path, "` from ", r.source);
    }
    absl::StrAppend(&description, description.empty() ? "" : "\n\n",
                    "Filled by the gateway, not part of the body (sending them is a 400 naming "
                    "the field): ",
                    fields, ".");
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
      if (auto key = route.key_fields.find(field); key != route.key_fields.end()) {
        // The same characters as the key in a body (a customer id "cust:1" is one in both): the
        // router takes the ":action" suffix off the end, so a ':' inside the key is kept.
        schema["pattern"] = absl::StrCat("^[A-Za-z0-9._:-]{1,", key->second, "}$");
        schema["maxLength"] = key->second;
      }
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
      if (q.field_path == route.scope_field && schema.value("type", "") == "string") {
        OrgIdSchema(schema);
      }
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
        {"content",
         {{"application/json",
           {{"schema", schemas.BodySchema(body_type, "", route.RefusedBodyFields(),
                                          route.RequiredBodyFields(), KeysInBody(route),
                                          InBody(route, route.scope_field))}}}}}};
  }

  Json responses = Json::object();
  for (const auto& [status, text] : DocumentedStatuses(route)) {
    if (status == route.success_status) {
      responses[std::to_string(status)] = {
          {"description", text},
          {"content",
           {{"application/json", {{"schema", schemas.MessageSchema(route.response_type)}}}}}};
    } else {
      responses[std::to_string(status)] = ErrorResponse(text);
    }
  }
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
        {"503", ErrorResponse("The channel registry is unavailable.")},
        {"504", ErrorResponse("The channel registry did not answer in time.")}}}};
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
        {"description", Description()}}},
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
