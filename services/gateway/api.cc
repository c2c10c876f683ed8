#include "services/gateway/api.h"

#include <algorithm>
#include <atomic>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/message.h"
#include "libs/auth/crypto.h"
#include "libs/core/status.h"
#include "libs/core/text.h"
#include "nlohmann/json.hpp"
#include "services/gateway/json_codec.h"
#include "spdlog/spdlog.h"

namespace mkt::gateway {
namespace {

namespace gpb = ::google::protobuf;
namespace pb = ::marketing::common::v1;
namespace gw = ::marketing::gateway::v1;

constexpr char kIdempotencyHeader[] = "Idempotency-Key";

bool ValidIdempotencyKey(const std::string& key) {
  return !key.empty() && key.size() <= 128 &&
         std::all_of(key.begin(), key.end(), [](unsigned char c) { return c > 32 && c < 127; });
}

std::string QueryOf(const std::string& target) {
  const size_t q = target.find('?');
  return q == std::string::npos ? "" : target.substr(q + 1);
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

absl::StatusOr<std::string> DecodeQueryComponent(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '+') {
      out.push_back(' ');
    } else if (text[i] == '%') {
      const int hi = i + 2 < text.size() ? HexDigit(text[i + 1]) : -1;
      const int lo = i + 2 < text.size() ? HexDigit(text[i + 2]) : -1;
      if (hi < 0 || lo < 0) {
        return InvalidArgument("query", "broken percent-encoding in the query string");
      }
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

// Fills `message` from the query string: each name=value sets the field QueryParametersOf maps
// the name to. Unknown names are a 400, like unknown JSON fields.
absl::Status BindQuery(const std::string& query, const ApiRoute& route, gpb::Message* message) {
  if (query.empty()) return absl::OkStatus();
  const std::vector<QueryParameter> params = route.QueryParameters();
  size_t start = 0;
  while (start <= query.size()) {
    size_t amp = query.find('&', start);
    if (amp == std::string::npos) amp = query.size();
    const std::string_view pair(query.data() + start, amp - start);
    start = amp + 1;
    if (pair.empty()) continue;
    const size_t eq = pair.find('=');
    MKT_ASSIGN_OR_RETURN(std::string name, DecodeQueryComponent(pair.substr(0, eq)));
    MKT_ASSIGN_OR_RETURN(
        std::string value,
        DecodeQueryComponent(eq == std::string_view::npos ? "" : pair.substr(eq + 1)));
    auto it = std::find_if(params.begin(), params.end(),
                           [&](const QueryParameter& p) { return p.name == name; });
    if (it == params.end()) {
      return InvalidArgument(name, absl::StrCat("unknown query parameter \"", name, "\""));
    }
    MKT_RETURN_IF_ERROR(SetFieldFromText(message, it->field_path, value, name));
  }
  return absl::OkStatus();
}

absl::Status SetStringField(gpb::Message* message, const std::string& path,
                            const std::string& value) {
  return SetFieldFromText(message, path, value, path);
}

// The request's Idempotency-Key: null when it has none (or the route takes none), 400 when a
// route that needs one lacks it or the key is malformed.
absl::StatusOr<const std::string*> IdempotencyKeyOf(const ApiRoute& route,
                                                    const HttpRequest& http) {
  const std::string* key = http.headers.Find(kIdempotencyHeader);
  if (key != nullptr && !route.AcceptsIdempotencyKey()) key = nullptr;
  if (key == nullptr) {
    if (!route.RequiresIdempotencyKey() && route.idempotency_field.empty()) return key;
    return InvalidArgument(kIdempotencyHeader,
                           "every POST needs an Idempotency-Key header (1..128 printable ASCII "
                           "characters, new for each new request)");
  }
  if (!ValidIdempotencyKey(*key)) {
    return InvalidArgument(kIdempotencyHeader,
                           "Idempotency-Key must be 1..128 printable ASCII characters");
  }
  return key;
}

// The backend's idempotency key for a channel's Idempotency-Key: scoped by the channel, like the
// gateway's own records, and within the 128 bytes backends accept.
std::string BackendIdempotencyKey(const ApiCall& call, const std::string& key) {
  const std::string scope = call.channel ? call.channel->channel_id : call.actor.operator_id;
  std::string scoped = absl::StrCat(scope, ":", key);
  if (scoped.size() <= 128) return scoped;
  return absl::StrCat(scope, ":sha256:", auth::Sha256Hex(key)).substr(0, 128);
}

// Fills the route's channel-code field with the caller's code, or refuses another code.
absl::Status BindChannelCode(const ApiRoute& route, const ApiCall& call, gpb::Message* message) {
  const std::string own = call.channel ? call.channel->code : "";
  if (own.empty()) {
    // Only a registry older than the gateway sends no code; acting on the caller's word would
    // reopen the hole this check closes.
    return Internal(absl::StrCat("the channel registry gave no code for channel ",
                                 call.channel ? call.channel->channel_id : "(none)",
                                 "; cannot bind ", route.channel_code_field));
  }
  const std::string asked = GetStringField(*message, route.channel_code_field);
  if (asked.empty()) return SetStringField(message, route.channel_code_field, own);
  if (asked != own) {
    constexpr size_t kShown = 64;
    return Error(absl::StatusCode::kPermissionDenied, pb::PERMISSION_DENIED,
                 absl::StrCat("this channel is ", own, "; it cannot act as ",
                              asked.substr(0, kShown), asked.size() > kShown ? "..." : ""),
                 route.channel_code_field);
  }
  return absl::OkStatus();
}

// Whether a response type holds a lasting credential anywhere (a field named secret or
// password): a channel's secret on creation and rotation. (A session's token is opted out by its
// route; a QR token lives 60 s and is single-use, so its answer may be replayed.)
bool CarriesCredential(const gpb::Descriptor* type, int depth = 0) {
  if (type == nullptr || depth > 8) return false;
  for (int i = 0; i < type->field_count(); ++i) {
    const gpb::FieldDescriptor* f = type->field(i);
    if (f->name() == "secret" || f->name() == "password") return true;
    if (f->type() == gpb::FieldDescriptor::TYPE_MESSAGE &&
        CarriesCredential(f->message_type(), depth + 1)) {
      return true;
    }
  }
  return false;
}

// Deeper than a sign-in body ({"operator_id":…,"password":…}) ever is.
constexpr int kMaxSignInDepth = 8;

// A customer id is its member bank's own (decision 014): two banks may both have a "10001". The
// per-customer budget is therefore kept per caller's org and customer, so one bank's traffic
// never throttles another bank's customer.
std::string CustomerBucket(const tenancy::Actor& caller, std::string_view customer) {
  return absl::StrCat(caller.org_id, "/", std::string(customer));
}

std::string RequestHash(const HttpRequest& http) {
  return auth::Sha256Hex(absl::StrCat(http.method, "\n", http.target, "\n", http.body));
}

}  // namespace

bool ApiRoute::RequiresIdempotencyKey() const {
  return method == "POST" && access == Access::kChannel && idempotency == Idempotency::kDefault;
}

bool ApiRoute::AcceptsIdempotencyKey() const {
  return method == "POST" && access != Access::kPublic && idempotency == Idempotency::kDefault;
}

std::vector<std::string> ApiRoute::PathParams() const {
  std::vector<std::string> out;
  size_t pos = 0;
  while ((pos = path.find('{', pos)) != std::string::npos) {
    const size_t close = path.find('}', pos);
    if (close == std::string::npos) break;
    out.push_back(path.substr(pos + 1, close - pos - 1));
    pos = close + 1;
  }
  return out;
}

std::string ApiRoute::FieldForParam(const std::string& param) const {
  auto it = path_fields.find(param);
  return it == path_fields.end() ? param : it->second;
}

std::vector<QueryParameter> ApiRoute::QueryParameters() const {
  std::vector<std::string> bound;
  for (const auto& p : PathParams()) bound.push_back(FieldForParam(p));
  if (!idempotency_field.empty()) bound.push_back(idempotency_field);
  std::vector<QueryParameter> params = QueryParametersOf(request_type, bound);
  for (auto& p : params) {
    if (auto it = query_names.find(p.field_path); it != query_names.end()) p.name = it->second;
  }
  return params;
}

namespace {

// `path` relative to the body field `body` ("*": the whole request), or nullopt when it lies
// outside the body.
std::optional<std::string> InBody(const std::string& body, const std::string& path) {
  if (body == "*") return path;
  if (body.empty()) return std::nullopt;
  if (path.size() > body.size() && path.compare(0, body.size(), body) == 0 &&
      path[body.size()] == '.') {
    return path.substr(body.size() + 1);
  }
  return std::nullopt;
}

}  // namespace

std::vector<RefusedBodyField> ApiRoute::RefusedBodyFields() const {
  std::vector<RefusedBodyField> out;
  auto add = [&](const std::string& path, std::string source) {
    if (auto in = InBody(body, path)) out.push_back({*in, std::move(source)});
  };
  for (const auto& param : PathParams()) {
    add(FieldForParam(param), absl::StrCat("the path ({", param, "})"));
  }
  if (!idempotency_field.empty()) {
    add(idempotency_field, absl::StrCat("the ", kIdempotencyHeader, " header"));
  }
  for (const auto& [field, source] : server_fields) add(field, source);
  return out;
}

std::vector<std::string> ApiRoute::RequiredBodyFields() const {
  std::vector<std::string> out;
  for (const auto& path : required) {
    if (auto in = InBody(body, path)) out.push_back(*in);
  }
  return out;
}

std::string MaskCustomerId(std::string_view customer_id) {
  if (customer_id.size() <= 4) return std::string(customer_id.size(), '*');
  return absl::StrCat(AsAbsl(customer_id.substr(0, 2)), std::string(customer_id.size() - 4, '*'),
                      AsAbsl(customer_id.substr(customer_id.size() - 2)));
}

ApiService::ApiService(ApiOptions options, const Clock& clock, AdminAuth* admin,
                       IdempotencyStore* idempotency)
    : options_(options),
      admin_(admin),
      idempotency_(idempotency),
      per_channel_(options.per_channel, clock),
      per_customer_(options.per_customer, clock),
      per_route_(options.per_route, clock),
      per_operator_(options.per_operator, clock) {}

absl::Status ApiService::Add(Router& router, ApiRoute route) {
  const std::string name = absl::StrCat(route.method, " ", route.path);
  if (route.request_type == nullptr || route.response_type == nullptr || !route.invoke) {
    return Internal(absl::StrCat(name, ": a route needs request and response types and a call"));
  }
  for (const auto& param : route.PathParams()) {
    if (ResolveFieldPath(route.request_type, route.FieldForParam(param)).empty()) {
      return Internal(absl::StrCat(name, ": {", param, "} names no field of ",
                                   route.request_type->full_name()));
    }
  }
  // Decision 003: a credential in an answer is shown once and kept nowhere in clear text, so an
  // answer that carries one is never stored for replays (a retry runs the call again: a second
  // rotation, or ALREADY_EXISTS for a second registration).
  if (CarriesCredential(route.response_type)) route.idempotency = Idempotency::kNone;
  if (route.invoke_async && route.access == Access::kOperator) {
    // Operator sign-in may read the database, and admin calls are few: they take the pool.
    return Internal(absl::StrCat(name, ": operator routes have no async call"));
  }
  if (!route.channel_code_field.empty() && route.access != Access::kChannel) {
    return Internal(absl::StrCat(name, ": only channel routes have a caller's channel code"));
  }
  for (const std::string* field : {&route.customer_field, &route.idempotency_field,
                                   &route.scope_field, &route.channel_code_field}) {
    if (field->empty()) continue;
    auto fields = ResolveFieldPath(route.request_type, *field);
    if (fields.empty() || fields.back()->type() != gpb::FieldDescriptor::TYPE_STRING ||
        fields.back()->is_repeated()) {
      return Internal(absl::StrCat(name, ": ", *field, " is not a string field of ",
                                   route.request_type->full_name()));
    }
  }
  for (const auto& [field, query_name] : route.query_names) {
    if (ResolveFieldPath(route.request_type, field).empty() || query_name.empty()) {
      return Internal(absl::StrCat(name, ": query name for ", field, " names no field"));
    }
  }
  {
    const gpb::Message* prototype =
        gpb::MessageFactory::generated_factory()->GetPrototype(route.request_type);
    for (const auto& path : route.required) {
      absl::Status known = CheckRequiredField(*prototype, path);
      if (known.code() == absl::StatusCode::kInternal) {
        return Internal(absl::StrCat(name, ": required ", path, " names no field"));
      }
    }
    for (const auto& [field, length] : route.key_fields) {
      auto fields = ResolveFieldPath(route.request_type, field);
      if (fields.empty() || fields.back()->type() != gpb::FieldDescriptor::TYPE_STRING ||
          length < 1) {
        return Internal(absl::StrCat(name, ": key field ", field, " is not a string field"));
      }
    }
    for (const auto& [field, source] : route.server_fields) {
      if (field.empty() || source.empty() ||
          CheckRequiredField(*prototype, field).code() == absl::StatusCode::kInternal) {
        return Internal(absl::StrCat(name, ": server field ", field, " names no field"));
      }
    }
  }
  if (!route.body.empty() && route.body != "*") {
    auto fields = ResolveFieldPath(route.request_type, route.body);
    if (fields.empty() || fields.back()->message_type() == nullptr) {
      return Internal(absl::StrCat(name, ": body field ", route.body, " is not a message field"));
    }
  }
  routes_.push_back(std::move(route));
  const ApiRoute& stored = routes_.back();
  AsyncRouteHandler async_handler;
  if (stored.invoke_async) {
    async_handler.takes = [this, &stored](const HttpRequest& http) {
      return TakesWithoutWaiting(stored, http);
    };
    async_handler.run = [this, &stored](const RouteRequest& request, RouteDone done) {
      ServeAsync(stored, request, std::move(done));
    };
  }
  return router.Add(
      stored.method, stored.path, {.channel_auth = stored.access == Access::kChannel},
      [this, &stored](const RouteRequest& request) { return Serve(stored, request); },
      std::move(async_handler));
}

std::optional<HttpResponse> ApiService::Throttle(RateLimiter& limiter, const std::string& key,
                                                 const std::string& request_id) {
  const absl::Duration wait = limiter.Acquire(key);
  if (wait <= absl::ZeroDuration()) return std::nullopt;
  return ErrorResponse(
      WithRetryAfter(Error(absl::StatusCode::kResourceExhausted, pb::RATE_LIMITED,
                           "too many requests; retry after the number of seconds in Retry-After"),
                     wait),
      request_id);
}

ApiCall ApiService::NewCall(const RouteRequest& request) {
  return ApiCall{request.http, request.channel, std::nullopt, {}, {request.http.request_id, {}}};
}

absl::StatusOr<std::optional<HttpResponse>> ApiService::Admit(const ApiRoute& route,
                                                              const RouteRequest& request,
                                                              ApiCall& call,
                                                              std::string& log_note) {
  const std::string& request_id = request.http.request_id;

  // Who is calling.
  if (route.access == Access::kOperator) {
    if (admin_ == nullptr) return Unavailable("operator sign-in is not configured");
    MKT_ASSIGN_OR_RETURN(OperatorSession session,
                         admin_->Authenticate(request.http.headers.Find("Authorization")));
    call.actor = session.actor;
    call.session = std::move(session);
    log_note = absl::StrCat("operator=", call.actor.operator_id);
    if (!route.roles.empty() && std::none_of(route.roles.begin(), route.roles.end(),
                                             [&](tenancy::Role r) { return call.actor.Has(r); })) {
      std::string names;
      for (auto r : route.roles)
        absl::StrAppend(&names, names.empty() ? "" : ", ", AsAbsl(tenancy::RoleName(r)));
      return ErrorResponse(Error(absl::StatusCode::kPermissionDenied, pb::PERMISSION_DENIED,
                                 absl::StrCat("this needs one of the roles: ", names)),
                           request_id);
    }
    call.caller.actor = call.actor;
  } else if (route.access == Access::kChannel) {
    call.actor.org_id = request.channel->org_id;
    call.actor.operator_id = absl::StrCat("channel:", request.channel->channel_id);
    call.caller.actor = call.actor;
  }

  // Rate limits, cheapest key first; a refused request takes no token from the later buckets.
  std::optional<HttpResponse> throttled;
  if (route.access == Access::kChannel) {
    throttled = Throttle(per_channel_, request.channel->channel_id, request_id);
  } else if (route.access == Access::kOperator) {
    throttled = Throttle(per_operator_, call.actor.operator_id, request_id);
  }
  if (!throttled && !route.customer_param.empty()) {
    if (auto it = request.params.find(route.customer_param); it != request.params.end()) {
      absl::StrAppend(&log_note, log_note.empty() ? "" : " ",
                      "customer=", MaskCustomerId(it->second));
      throttled = Throttle(per_customer_, CustomerBucket(call.actor, it->second), request_id);
    }
  }
  if (!throttled)
    throttled = Throttle(per_route_, absl::StrCat(route.method, " ", route.path), request_id);
  return throttled;
}

HttpResponse ApiService::Finish(absl::StatusOr<HttpResponse> result, const std::string& request_id,
                                const std::string& log_note) {
  if (result.ok()) {
    result->log_note = log_note;
    return *std::move(result);
  }
  HttpResponse response = ErrorResponse(result.status(), request_id);
  response.log_note = log_note;
  if (response.status >= 500) {
    absl::StrAppend(&response.log_note, " cause=\"", result.status().message(), "\"");
  }
  return response;
}

absl::StatusOr<HttpResponse> ApiService::Serve(const ApiRoute& route, const RouteRequest& request) {
  ApiCall call = NewCall(request);
  call.caller.replayed = &call.replayed;
  std::string log_note;
  MKT_ASSIGN_OR_RETURN(std::optional<HttpResponse> refused, Admit(route, request, call, log_note));
  const bool audited = Audited(route, call);
  if (refused) {
    if (audited) {
      gw::AdminRequestRecord record = AuditRecordOf(route, request, call);
      record.set_status(refused->status);
      record.set_error_code(refused->error_code);
      if (absl::Status s = audit_->Record(record); !s.ok()) {
        spdlog::error("audit trail: cannot record refused request {}: {}", request.http.request_id,
                      s.ToString());
      }
    }
    return Finish(*std::move(refused), request.http.request_id, log_note);
  }
  // A change is never made unrecorded: without its record, nothing runs.
  std::optional<int64_t> audit_id;
  if (audited) {
    absl::StatusOr<int64_t> id = audit_->Begin(AuditRecordOf(route, request, call));
    if (!id.ok()) {
      return Finish(Error(absl::StatusCode::kUnavailable, pb::DEPENDENCY_UNAVAILABLE,
                          absl::StrCat("the audit trail cannot be written, so nothing was done: ",
                                       id.status().message())),
                    request.http.request_id, log_note);
    }
    audit_id = *id;
  }
  HttpResponse response =
      Finish(Execute(route, request, call, log_note), request.http.request_id, log_note);
  if (audit_id) {
    if (absl::Status s = audit_->Finish(*audit_id, response.status, response.error_code); !s.ok()) {
      spdlog::error("audit trail: cannot add the answer {} of request {} (record {}): {}",
                    response.status, request.http.request_id, *audit_id, s.ToString());
    }
  }
  return response;
}

bool ApiService::Audited(const ApiRoute& route, const ApiCall& call) const {
  if (audit_ == nullptr || route.method == "GET") return false;
  if (route.access == Access::kOperator) return call.session.has_value();
  // Sign-in attempts (the only public POST).
  return route.access == Access::kPublic;
}

gw::AdminRequestRecord ApiService::AuditRecordOf(const ApiRoute& route, const RouteRequest& request,
                                                 const ApiCall& call) {
  gw::AdminRequestRecord record;
  record.set_request_id(request.http.request_id);
  record.set_method(route.method);
  record.set_route(route.path);
  // Raw bytes of the request target are the client's: kept readable and storable (text).
  std::string path;
  for (const char c : request.http.path()) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte >= 0x7F) {
      absl::StrAppendFormat(&path, "%%%02X", byte);
    } else {
      path.push_back(c);
    }
  }
  record.set_path(std::move(path));
  record.set_body(MaskedBody(request.http.body));
  if (call.session) {
    record.set_operator_id(call.actor.operator_id);
    record.set_org_id(call.actor.org_id);
    for (tenancy::Role r : call.actor.roles) record.add_roles(std::string(tenancy::RoleName(r)));
  } else {
    // A sign-in names its operator in the body; the trail finds the org. A body nested too deep
    // is refused later and is not parsed here either.
    nlohmann::json body;
    if (CheckJsonDepth(request.http.body, kMaxSignInDepth).ok()) {
      body = nlohmann::json::parse(request.http.body, nullptr, false);
    }
    if (body.is_object() && body.contains("operator_id") && body["operator_id"].is_string()) {
      std::string named = body["operator_id"].get<std::string>();
      if (IsWellFormedUtf8(named) && named.size() <= 128) record.set_operator_id(named);
    }
  }
  return record;
}

bool ApiService::TakesWithoutWaiting(const ApiRoute& route, const HttpRequest& http) const {
  if (!route.invoke_async) return false;
  // A backend that keeps the key itself needs no record here.
  if (!route.idempotency_field.empty()) return true;
  // The idempotency store is a database: requests that use it (or are refused for lacking the
  // key) take the blocking path.
  const bool has_key = http.headers.Find(kIdempotencyHeader) != nullptr;
  if (has_key && route.AcceptsIdempotencyKey()) return false;
  return !route.RequiresIdempotencyKey();
}

// A request on its way through ServeAsync: what must outlive the backend call.
struct ApiService::AsyncCall {
  explicit AsyncCall(const RouteRequest& request) : call(NewCall(request)) {
    call.caller.replayed = &call.replayed;
  }
  ApiCall call;
  std::string log_note;
  std::unique_ptr<gpb::Message> message;
  std::unique_ptr<gpb::Message> response;
};

void ApiService::ServeAsync(const ApiRoute& route, const RouteRequest& request, RouteDone done) {
  const std::string& request_id = request.http.request_id;
  auto state = std::make_shared<AsyncCall>(request);
  // Set when the request ends before the call.
  std::optional<absl::StatusOr<HttpResponse>> early;
  try {
    absl::StatusOr<std::optional<HttpResponse>> refused =
        Admit(route, request, state->call, state->log_note);
    if (!refused.ok()) {
      early = refused.status();
    } else if (*refused) {
      early = Finish(**std::move(refused), request_id, state->log_note);
    } else {
      std::optional<HttpResponse> answer;
      absl::StatusOr<std::unique_ptr<gpb::Message>> message =
          BuildRequest(route, request, state->call, state->log_note, &answer);
      if (!message.ok()) {
        early = Finish(message.status(), request_id, state->log_note);
      } else if (answer) {
        early = Finish(*std::move(answer), request_id, state->log_note);
      } else {
        state->message = *std::move(message);
        state->response.reset(
            gpb::MessageFactory::generated_factory()->GetPrototype(route.response_type)->New());
      }
    }
  } catch (const std::exception& e) {
    early = Internal(absl::StrCat("route handler threw: ", e.what()));
  }
  if (early) return done(*std::move(early));

  // `done` runs once: from the invoker's callback, or here if the invoker throws before it took
  // the call. The state's call, request and response are alive until the invoker is done.
  auto answered = std::make_shared<std::atomic<bool>>(false);
  auto answer_once = [answered, done = std::move(done)](absl::StatusOr<HttpResponse> response) {
    if (!answered->exchange(true)) done(std::move(response));
  };
  try {
    route.invoke_async(state->call, *state->message, state->response.get(),
                       [this, &route, state, answer_once](absl::Status status) {
                         absl::StatusOr<HttpResponse> response = absl::UnknownError("unanswered");
                         try {
                           absl::Status failure;
                           StoredResponse stored = Answer(route, state->call, std::move(status),
                                                          *state->response, &failure);
                           response =
                               Finish(ToHttp(std::move(stored), failure, state->call.replayed),
                                      state->call.caller.request_id, state->log_note);
                         } catch (const std::exception& e) {
                           response = Internal(absl::StrCat("answering failed: ", e.what()));
                         }
                         answer_once(std::move(response));
                       });
  } catch (const std::exception& e) {
    answer_once(Internal(absl::StrCat("the call could not start: ", e.what())));
  }
}

absl::StatusOr<std::unique_ptr<gpb::Message>> ApiService::BuildRequest(
    const ApiRoute& route, const RouteRequest& request, ApiCall& call, std::string& log_note,
    std::optional<HttpResponse>* answer) {
  const HttpRequest& http = request.http;
  const size_t max_body = route.max_body_bytes > 0 ? route.max_body_bytes : options_.max_body_bytes;
  if (http.body.size() > max_body) {
    return Error(
        absl::StatusCode::kResourceExhausted, pb::BODY_TOO_LARGE,
        absl::StrCat("the request body exceeds this route's limit of ", max_body, " bytes"));
  }

  // The request message: body, then query, then path parameters (which win).
  const gpb::Message* prototype =
      gpb::MessageFactory::generated_factory()->GetPrototype(route.request_type);
  std::unique_ptr<gpb::Message> message(prototype->New());
  if (route.body.empty()) {
    if (!http.body.empty() && http.body.find_first_not_of(" \t\r\n") != std::string::npos) {
      return InvalidArgument("body", "this request takes no body");
    }
    MKT_RETURN_IF_ERROR(BindQuery(QueryOf(http.target), route, message.get()));
  } else {
    if (!QueryOf(http.target).empty()) {
      return InvalidArgument("query", "this request takes its parameters in the JSON body");
    }
    gpb::Message* target = message.get();
    if (route.body != "*") {
      for (const auto* f : ResolveFieldPath(route.request_type, route.body)) {
        target = target->GetReflection()->MutableMessage(target, f);
      }
    }
    if (http.body.find_first_not_of(" \t\r\n") != std::string::npos) {
      MKT_RETURN_IF_ERROR(
          ParseJsonInto(http.body, target, options_.max_json_depth, route.RefusedBodyFields()));
    }
  }
  for (const auto& [param, value] : request.params) {
    MKT_RETURN_IF_ERROR(SetFieldFromText(message.get(), route.FieldForParam(param), value, param));
  }
  for (const auto& path : route.required) {
    MKT_RETURN_IF_ERROR(CheckRequiredField(*message, path));
  }
  if (!route.idempotency_field.empty() &&
      !GetStringField(*message, route.idempotency_field).empty()) {
    return InvalidArgument(route.idempotency_field,
                           absl::StrCat(route.idempotency_field, " is taken from the ",
                                        kIdempotencyHeader, " header; do not send it"));
  }

  if (!route.idempotency_field.empty()) {
    MKT_ASSIGN_OR_RETURN(const std::string* key, IdempotencyKeyOf(route, http));
    MKT_RETURN_IF_ERROR(
        SetStringField(message.get(), route.idempotency_field, BackendIdempotencyKey(call, *key)));
  }

  // The customer named in the body has the same per-customer budget as one named in the path.
  if (!route.customer_field.empty()) {
    const std::string customer = GetStringField(*message, route.customer_field);
    if (!customer.empty()) {
      absl::StrAppend(&log_note, log_note.empty() ? "" : " ",
                      "customer=", MaskCustomerId(customer));
      if (auto throttled =
              Throttle(per_customer_, CustomerBucket(call.actor, customer), http.request_id)) {
        *answer = *std::move(throttled);
        return message;
      }
    }
  }

  // Org scope of the request.
  if (!route.scope_field.empty()) {
    const std::string org = GetStringField(*message, route.scope_field);
    if (org.empty()) {
      MKT_RETURN_IF_ERROR(SetStringField(message.get(), route.scope_field, call.actor.org_id));
    } else if (!tenancy::IsValidOrgId(org)) {
      return InvalidArgument(route.scope_field, absl::StrCat("\"", org, "\" is not an org id"));
    } else if (!tenancy::Covers(call.actor.org_id, org)) {
      return Error(
          absl::StatusCode::kPermissionDenied, pb::PERMISSION_DENIED,
          absl::StrCat("org \"", org, "\" is outside your organisation (", call.actor.org_id, ")"),
          route.scope_field);
    }
  }

  // The channel code is the caller's own: the signature says which channel is calling, the
  // registry which code that channel has.
  if (!route.channel_code_field.empty()) {
    MKT_RETURN_IF_ERROR(BindChannelCode(route, call, message.get()));
  }
  return message;
}

StoredResponse ApiService::Answer(const ApiRoute& route, const ApiCall& call, absl::Status status,
                                  const gpb::Message& response, absl::Status* failure) {
  if (status.ok() && !route.owner_field.empty()) {
    const std::string owner = GetStringField(response, route.owner_field);
    if (!owner.empty() && !tenancy::Covers(call.actor.org_id, owner)) {
      // Another bank's resource is indistinguishable from a missing one.
      status = NotFound("no such resource in your organisation");
    }
  }
  if (!status.ok()) {
    *failure = status;
    HttpResponse error = ErrorResponse(status, call.caller.request_id);
    return {error.status, error.content_type, error.body};
  }
  return {route.success_status, "application/json", RenderJson(response)};
}

absl::StatusOr<HttpResponse> ApiService::ToHttp(StoredResponse stored, const absl::Status& failure,
                                                bool replayed) {
  if (!failure.ok() && HttpStatusFor(failure) >= 500) return failure;
  HttpResponse response;
  response.status = stored.status;
  response.content_type = stored.content_type;
  response.body = std::move(stored.body);
  if (!failure.ok()) response.error_code = ReasonName(ReasonOf(failure));
  // A refusal to come back later (a locked account, a campaign's own rate cap) says when.
  if (!failure.ok() && (response.status == 429 || response.status == 503)) {
    response.headers.emplace_back("Retry-After", RetryAfterOf(failure));
  }
  if (replayed) response.headers.emplace_back("Idempotent-Replayed", "true");
  return response;
}

absl::StatusOr<HttpResponse> ApiService::Execute(const ApiRoute& route, const RouteRequest& request,
                                                 ApiCall& call, std::string& log_note) {
  const HttpRequest& http = request.http;
  std::optional<HttpResponse> answer;
  MKT_ASSIGN_OR_RETURN(std::unique_ptr<gpb::Message> message,
                       BuildRequest(route, request, call, log_note, &answer));
  if (answer) return *std::move(answer);

  absl::Status failure;
  auto run = [&]() -> StoredResponse {
    std::unique_ptr<gpb::Message> response(
        gpb::MessageFactory::generated_factory()->GetPrototype(route.response_type)->New());
    absl::Status status = route.invoke(call, *message, response.get());
    return Answer(route, call, std::move(status), *response, &failure);
  };

  StoredResponse stored;
  bool replayed = false;
  // A route with an idempotency_field had its key checked and bound by BuildRequest.
  const std::string* key = nullptr;
  if (route.idempotency_field.empty()) {
    MKT_ASSIGN_OR_RETURN(key, IdempotencyKeyOf(route, http));
  }
  if (key != nullptr) {
    if (idempotency_ == nullptr) return Unavailable("the idempotency store is not configured");
    const std::string scope = call.channel ? absl::StrCat("channel:", call.channel->channel_id)
                                           : absl::StrCat("operator:", call.actor.operator_id);
    MKT_ASSIGN_OR_RETURN(stored, RunIdempotently(*idempotency_, scope, *key, RequestHash(http), run,
                                                 &replayed, options_.idempotency_wait));
  } else {
    // No key, or a backend that is idempotent by the key itself (BuildRequest passed it on).
    stored = run();
    replayed = call.replayed;
  }
  return ToHttp(std::move(stored), failure, replayed);
}

}  // namespace mkt::gateway
