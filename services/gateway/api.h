// The REST API as a route table. Each ApiRoute row says: method and path template, who may call
// (channel signature, operator bearer token with one of some roles, or anyone), the protobuf
// request and response types, how the body and the path/query parameters fill the request, how
// the call is carried out (a backend RPC or a local function), which request field names the
// owning org (checked against the caller's org subtree) and which response field names it, and
// the documented outcomes. ApiService turns every row into a router handler running the same
// pipeline, in this order:
//   operator authentication and role check (channel signatures are checked by the dispatcher)
//   → rate limits (per channel or operator, per customer, per route; 429 + Retry-After)
//   → body limits and strict JSON parsing into the request message, path and query binding
//   → org scope and channel code of the request → idempotency (POST with Idempotency-Key) → the
//   call → org scope of the response → JSON.
// The same table generates the OpenAPI document (openapi.h), so the two cannot drift.
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "libs/core/ids.h"
#include "libs/tenancy/tenancy.h"
#include "services/gateway/admin_auth.h"
#include "services/gateway/audit_trail.h"
#include "services/gateway/backend.h"
#include "services/gateway/idempotency_store.h"
#include "services/gateway/json_codec.h"
#include "services/gateway/rate_limiter.h"
#include "services/gateway/router.h"

namespace mkt::gateway {

enum class Access {
  kPublic,    // no credentials (sign-in)
  kChannel,   // /v1: HMAC-signed by a registered channel
  kOperator,  // /admin/v1: an operator's bearer token
};

enum class Idempotency {
  kDefault,  // POST: required on channel routes, optional on operator routes; others: none
  kNone,     // never stored (sign-in: the response holds a token)
};

// What a route's call sees.
struct ApiCall {
  const HttpRequest& http;
  std::optional<AuthenticatedChannel> channel;
  std::optional<OperatorSession> session;
  // The operator, or for channel routes the channel's org (operator id "channel:<id>", no roles).
  tenancy::Actor actor;
  CallerIdentity caller;
  // Set by a backend that answered from the stored outcome of an earlier request under the same
  // idempotency key (routes with an idempotency_field); caller.replayed points here.
  bool replayed = false;
};

using Invoker =
    std::function<absl::Status(const ApiCall& call, const google::protobuf::Message& request,
                               google::protobuf::Message* response)>;
// The same call without a thread waiting for it (Backend::CallAsync): `done` runs once, on any
// thread, after *response is filled; `call`, `request` and `response` stay alive until then.
using AsyncInvoker = std::function<void(
    const ApiCall& call, const google::protobuf::Message& request,
    google::protobuf::Message* response, std::function<void(absl::Status)> done)>;

struct ApiRoute {
  std::string method;
  // Router template; every {param} binds to the request field named in path_fields, else the
  // field of the same name.
  std::string path;
  Access access = Access::kOperator;
  // The operator needs one of these roles; empty: any operator.
  std::vector<tenancy::Role> roles;
  const google::protobuf::Descriptor* request_type = nullptr;
  const google::protobuf::Descriptor* response_type = nullptr;
  // "*": the JSON body is the request message; "<field>": the body is that message field; "":
  // no body, query parameters fill the request's scalar fields (json_codec QueryParametersOf).
  std::string body = "*";
  std::map<std::string, std::string> path_fields;
  // The backend the call goes to ("" for the gateway itself), for documentation.
  std::string backend;
  Invoker invoke;
  // Optional, the same call made without blocking; channel and public routes only (Add refuses it
  // on operator routes). Requests that need no idempotency record (GET; a POST without an
  // Idempotency-Key on a route that does not require one, or with one on a route that takes none)
  // then start on the I/O thread and are answered from the thread the backend's reply arrives on
  // (RequestDispatcher). Both calls must do the same: a request may take either.
  AsyncInvoker invoke_async;
  int success_status = 200;
  // A request field naming the owning org: filled with the caller's org when empty; refused
  // (403) when outside the caller's subtree.
  std::string scope_field;
  // A response field naming the owning org: a resource outside the caller's subtree is 404.
  std::string owner_field;
  // A path parameter naming the customer: rate-limited per customer, masked in the access log.
  std::string customer_param;
  // For routes that name the customer in the body instead: the request field holding it, rate
  // limited per customer (the same buckets) once the request is parsed.
  std::string customer_field;
  // A request field the Idempotency-Key header fills, for a backend that is idempotent by the key
  // itself (participations): the gateway then keeps no record of its own, and the request can
  // take the async path. The value is "<channel id>:<key>" so two channels' keys never meet
  // (keys too long for that are hashed); the body may not set it. A replay's
  // Idempotent-Replayed header comes from the backend (rpc::kIdempotentReplayedKey).
  std::string idempotency_field;
  // A request field holding a channel code (Channel.code: mobile_banking, wecom, ...), on channel
  // routes: filled with the calling channel's own code when empty, and any other code is refused
  // (403), so a channel cannot act as another one (claim a WeCom-only campaign from mobile
  // banking, use a coupon restricted to the counter). The code comes from the channel registry
  // with the credential.
  std::string channel_code_field;
  // Public names of query parameters that differ from their field path ("customer_org_id" →
  // "org"). Only the public name is accepted.
  std::map<std::string, std::string> query_names;
  // Request fields the gateway sets itself from the caller (field path → where the value comes
  // from, e.g. {"source", "the calling channel's id"}). Like path-bound fields and
  // idempotency_field they are left out of the documented body and a body that sends them is
  // refused (400 naming the field): the strict-parsing rule (an unknown field of this route's body
  // is a 400), never a silent override.
  std::map<std::string, std::string> server_fields;
  // Request fields that must be set (paths; through a repeated message field each element's):
  // documented as `required` and checked by the gateway before the call (400 naming the field).
  // They mirror the validation of the service behind the route.
  std::vector<std::string> required;
  // Request fields the service behind validates as keys (ids, codes: letters, digits, '.', '_',
  // ':' and '-', up to the length given), documented with that pattern so clients and test
  // generators send acceptable values; the service does the checking.
  std::map<std::string, int> key_fields;
  Idempotency idempotency = Idempotency::kDefault;
  std::string summary;
  std::string description;
  // OpenAPI tag ("campaigns", "events", ...).
  std::string tag;
  // Error codes this route documents besides the common ones of its access kind.
  std::vector<std::string> errors;
  // 0: the server's limit.
  size_t max_body_bytes = 0;

  // Derived: whether POST requests must / may carry an Idempotency-Key.
  bool RequiresIdempotencyKey() const;
  bool AcceptsIdempotencyKey() const;
  // The {param} names of `path`, in order.
  std::vector<std::string> PathParams() const;
  // The request field a path parameter fills.
  std::string FieldForParam(const std::string& param) const;
  // The query parameters of a bodiless route, under their public names.
  std::vector<QueryParameter> QueryParameters() const;
  // The fields of the body message (paths relative to it) that the body may not carry: those the
  // path fills, idempotency_field and server_fields.
  std::vector<RefusedBodyField> RefusedBodyFields() const;
  // The required fields within the body message (paths relative to it).
  std::vector<std::string> RequiredBodyFields() const;
};

struct ApiOptions {
  int max_json_depth = 32;
  size_t max_body_bytes = 1 << 20;
  RateLimit per_channel;
  RateLimit per_customer;
  RateLimit per_route;
  RateLimit per_operator;
  // How long a duplicate waits for the first request with its Idempotency-Key.
  absl::Duration idempotency_wait = absl::Seconds(5);
};

class ApiService {
 public:
  // `admin` and `idempotency` may be null (routes that need them then answer 503).
  ApiService(ApiOptions options, const Clock& clock, AdminAuth* admin,
             IdempotencyStore* idempotency);

  // Validates `route` (types, invoker, path parameters bound to existing fields) and adds it to
  // the router and the table.
  absl::Status Add(Router& router, ApiRoute route);
  const std::deque<ApiRoute>& routes() const { return routes_; }
  // Records every operator request but a GET, and sign-in attempts (audit_trail.h); null: none
  // (tests of other things).
  void set_audit_trail(AuditTrail* audit) { audit_ = audit; }

 private:
  struct AsyncCall;

  // The route's handler: the whole pipeline on the calling thread.
  absl::StatusOr<HttpResponse> Serve(const ApiRoute& route, const RouteRequest& request);
  // The route's async handler: the same pipeline, with the call made by route.invoke_async.
  void ServeAsync(const ApiRoute& route, const RouteRequest& request, RouteDone done);
  // Whether ServeAsync takes the request: decided from the route and the headers alone, before
  // anything is counted or stored.
  bool TakesWithoutWaiting(const ApiRoute& route, const HttpRequest& http) const;

  // The pipeline's steps.
  static ApiCall NewCall(const RouteRequest& request);
  // Who is calling and the rate limits before the body is read; returns the refusal to answer
  // (403 for a missing role, 429), if any.
  absl::StatusOr<std::optional<HttpResponse>> Admit(const ApiRoute& route,
                                                    const RouteRequest& request, ApiCall& call,
                                                    std::string& log_note);
  // The request message from the body, query and path, checked (required fields, org scope,
  // channel code, the backend's idempotency key); or *answer set to the refusal (429 for a
  // customer named in the body).
  absl::StatusOr<std::unique_ptr<google::protobuf::Message>> BuildRequest(
      const ApiRoute& route, const RouteRequest& request, ApiCall& call, std::string& log_note,
      std::optional<HttpResponse>* answer);
  // Everything after the request is built: the idempotency record and the call (blocking).
  absl::StatusOr<HttpResponse> Execute(const ApiRoute& route, const RouteRequest& request,
                                       ApiCall& call, std::string& log_note);
  // What the call's outcome answers: the response's org scope, then JSON or the error shape;
  // sets *failure to the error.
  StoredResponse Answer(const ApiRoute& route, const ApiCall& call, absl::Status status,
                        const google::protobuf::Message& response, absl::Status* failure);
  // The answer as the HTTP response (a server error stays a status, for the dispatcher's log).
  static absl::StatusOr<HttpResponse> ToHttp(StoredResponse stored, const absl::Status& failure,
                                             bool replayed);
  // The response the route answers: the log note, and for errors the JSON error shape.
  static HttpResponse Finish(absl::StatusOr<HttpResponse> result, const std::string& request_id,
                             const std::string& log_note);
  // Whether the request goes into the audit trail, and its record before it runs.
  bool Audited(const ApiRoute& route, const ApiCall& call) const;
  static marketing::gateway::v1::AdminRequestRecord AuditRecordOf(const ApiRoute& route,
                                                                  const RouteRequest& request,
                                                                  const ApiCall& call);
  // Returns 429 with Retry-After when one of `keys`' buckets is empty.
  std::optional<HttpResponse> Throttle(RateLimiter& limiter, const std::string& key,
                                       const std::string& request_id);

  const ApiOptions options_;
  AdminAuth* admin_;
  IdempotencyStore* idempotency_;
  AuditTrail* audit_ = nullptr;
  RateLimiter per_channel_;
  RateLimiter per_customer_;
  RateLimiter per_route_;
  RateLimiter per_operator_;
  std::deque<ApiRoute> routes_;
};

// Returns the customer id masked for logs: first two and last two characters.
std::string MaskCustomerId(std::string_view customer_id);

}  // namespace mkt::gateway
