#include "services/gateway/api_routes.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "google/protobuf/descriptor.h"
#include "libs/auth/crypto.h"
#include "libs/core/money.h"
#include "libs/core/status.h"
#include "libs/core/text.h"
#include "libs/kafka/outbox.h"
#include "marketing/campaigns/v1/batch_grants.pb.h"
#include "marketing/campaigns/v1/campaigns.pb.h"
#include "marketing/campaigns/v1/participation.pb.h"
#include "marketing/channels/v1/channels.pb.h"
#include "marketing/events/v1/business_event.pb.h"
#include "marketing/events/v1/events.pb.h"
#include "marketing/gateway/v1/gateway.pb.h"
#include "marketing/rewards/v1/benefits.pb.h"
#include "marketing/rewards/v1/ledger.pb.h"
#include "marketing/segments/v1/segments.pb.h"

namespace mkt::gateway {
namespace {

namespace gpb = ::google::protobuf;
namespace gw = ::marketing::gateway::v1;
namespace pb = ::marketing::common::v1;
using tenancy::Role;

constexpr size_t kMaxTrackingBatch = 500;
// Who may read a customer's own data (balances, history, events) through the admin API.
std::vector<Role> CustomerDataReaders() {
  return {Role::kAdmin, Role::kPlanner, Role::kAnalyst, Role::kAuditor};
}
// The events service dead-letters a business event larger than this once encoded (kMaxEventBytes
// in services/events/event_types.h); the gateway refuses it with 413 instead.
constexpr size_t kMaxBusinessEventBytes = 64 * 1024;

// Makes sure the generated descriptors of every backend's protos are linked in (a static
// library's object files are only linked when referenced).
void TouchDescriptors() {
  (void)::marketing::campaigns::v1::Campaign::descriptor();
  (void)::marketing::campaigns::v1::Participation::descriptor();
  (void)::marketing::campaigns::v1::BatchGrant::descriptor();
  (void)::marketing::segments::v1::Segment::descriptor();
  (void)::marketing::channels::v1::Channel::descriptor();
  (void)::marketing::rewards::v1::Wallet::descriptor();
  (void)::marketing::events::v1::BusinessEvent::descriptor();
  (void)::marketing::events::v1::EventType::descriptor();
  (void)gw::Operator::descriptor();
}

// One row that maps a path onto a backend RPC ("marketing.campaigns.v1.Campaigns.GetCampaign").
struct RpcRow {
  std::string method;
  std::string path;
  std::string rpc;
  std::vector<Role> roles;
  std::string summary;
  std::string body = "*";
  std::string scope_field;
  std::string owner_field;
  std::map<std::string, std::string> path_fields;
  std::vector<std::string> errors;
  std::string customer_param;
  std::string customer_field;
  std::string idempotency_field;
  std::string channel_code_field;
  std::map<std::string, std::string> query_names;
  int success_status = 200;
  std::string description;
  // ApiRoute::required: what the service behind refuses when missing.
  std::vector<std::string> required;
  // ApiRoute::key_fields: what the service behind checks as keys (field → longest length).
  std::map<std::string, int> key_fields;
};

Invoker CallBackend(Backend* backend, const gpb::MethodDescriptor* method) {
  return [backend, method](const ApiCall& call, const gpb::Message& request,
                           gpb::Message* response) -> absl::Status {
    if (backend == nullptr) return Unavailable("backend not configured");
    return backend->Call(*method, request, response, call.caller);
  };
}

AsyncInvoker CallBackendAsync(Backend* backend, const gpb::MethodDescriptor* method) {
  return [backend, method](const ApiCall& call, const gpb::Message& request, gpb::Message* response,
                           std::function<void(absl::Status)> done) {
    if (backend == nullptr) return done(Unavailable("backend not configured"));
    backend->CallAsync(*method, request, response, call.caller, std::move(done));
  };
}

absl::StatusOr<ApiRoute> FromRpc(const RpcRow& row, Access access, Backend* backend,
                                 const std::string& backend_name, const std::string& tag) {
  const gpb::MethodDescriptor* method =
      gpb::DescriptorPool::generated_pool()->FindMethodByName(row.rpc);
  if (method == nullptr) return Internal(absl::StrCat("no RPC ", row.rpc, " is linked in"));
  ApiRoute route;
  route.method = row.method;
  route.path = row.path;
  route.access = access;
  route.roles = row.roles;
  route.request_type = method->input_type();
  route.response_type = method->output_type();
  route.body = row.body;
  route.path_fields = row.path_fields;
  route.backend = backend_name;
  route.invoke = CallBackend(backend, method);
  // Operator routes authenticate against the database first: they always take the pool.
  if (access != Access::kOperator) route.invoke_async = CallBackendAsync(backend, method);
  route.scope_field = row.scope_field;
  route.owner_field = row.owner_field;
  route.customer_param = row.customer_param;
  route.customer_field = row.customer_field;
  route.idempotency_field = row.idempotency_field;
  route.channel_code_field = row.channel_code_field;
  route.query_names = row.query_names;
  route.success_status = row.success_status;
  route.summary = row.summary;
  route.description = absl::StrCat(row.description, row.description.empty() ? "" : "\n\n",
                                   "Calls `", row.rpc, "` on the ", backend_name, " service.");
  route.tag = tag;
  route.errors = row.errors;
  route.required = row.required;
  route.key_fields = row.key_fields;
  return route;
}

absl::Status AddRows(ApiService& api, Router& router, const std::vector<RpcRow>& rows,
                     Access access, Backend* backend, const std::string& backend_name,
                     const std::string& tag) {
  for (const auto& row : rows) {
    MKT_ASSIGN_OR_RETURN(ApiRoute route, FromRpc(row, access, backend, backend_name, tag));
    MKT_RETURN_IF_ERROR(api.Add(router, std::move(route)));
  }
  return absl::OkStatus();
}

// The channel registry serves every org and trusts its callers, so the gateway checks that the
// channel being changed belongs to the operator's subtree before changing it.
Invoker ScopedChannelCall(Backend* backend, const gpb::MethodDescriptor* method) {
  const gpb::MethodDescriptor* get = gpb::DescriptorPool::generated_pool()->FindMethodByName(
      "marketing.channels.v1.ChannelRegistry.GetChannel");
  return [backend, method, get](const ApiCall& call, const gpb::Message& request,
                                gpb::Message* response) -> absl::Status {
    if (backend == nullptr) return Unavailable("backend not configured");
    ::marketing::channels::v1::GetChannelRequest get_request;
    get_request.set_id(request.GetReflection()->GetString(
        request, request.GetDescriptor()->FindFieldByName("id")));
    ::marketing::channels::v1::Channel channel;
    MKT_RETURN_IF_ERROR(backend->Call(*get, get_request, &channel, call.caller));
    if (!tenancy::Covers(call.actor.org_id, channel.org_id())) {
      return NotFound("no such channel in your organisation");
    }
    return backend->Call(*method, request, response, call.caller);
  };
}

// ---- Local calls -------------------------------------------------------------------------------

absl::Status PublishEvent(const ApiDependencies& deps, const ApiCall& call,
                          const gpb::Message& request, gpb::Message* response) {
  auto event = static_cast<const ::marketing::events::v1::BusinessEvent&>(request);
  if (event.source_event_id().empty() || event.source_event_id().size() > 128) {
    return InvalidArgument("source_event_id", "source_event_id is required (1..128 characters)");
  }
  if (event.event_type().empty()) return InvalidArgument("event_type", "event_type is required");
  if (event.customer_id().empty() || event.customer_id().size() > 64) {
    return InvalidArgument("customer_id", "customer_id is required (1..64 characters)");
  }
  if (event.amount_fen() < 0 || event.amount_fen() > kMaxEventAmountFen) {
    return InvalidArgument("amount_fen",
                           absl::StrCat("amount_fen must be 0..", kMaxEventAmountFen, " (fen)"));
  }
  // What the events service would dead-letter after the 202 is refused here (decision 026): ids,
  // type, org, product code and attribute names are printable text; attribute values may hold
  // tab and line breaks (free text) but no NUL, which the events database cannot store.
  for (const auto& [field, text] : {std::pair<std::string_view, const std::string*>{
                                        "source_event_id", &event.source_event_id()},
                                    {"event_type", &event.event_type()},
                                    {"customer_id", &event.customer_id()},
                                    {"org_id", &event.org_id()},
                                    {"product_code", &event.product_code()}}) {
    if (PrintableUtf8Length(*text) < 0) {
      return InvalidArgument(
          field, absl::StrCat(AsAbsl(field), " must be text without NUL or control characters"));
    }
  }
  for (const auto& [name, value] : event.attributes()) {
    if (PrintableUtf8Length(name) < 0) {
      return InvalidArgument("attributes",
                             "attributes: attribute names must be text without NUL or control "
                             "characters");
    }
    if (!IsWellFormedUtf8(value)) {
      return InvalidArgument("attributes", absl::StrCat("attributes: the value of \"", name,
                                                        "\" must be text without NUL"));
    }
  }
  // Events reported through the gateway are the channel's: its id is the source.
  event.set_source(call.channel->channel_id);
  if (!event.has_occurred_at()) {
    event.mutable_occurred_at()->set_seconds(absl::ToUnixSeconds(deps.clock->Now()));
  }
  if (deps.publisher == nullptr) return Unavailable("event publishing is not configured");
  pb::Envelope envelope =
      kafka::MakeEnvelope("events.BusinessEvent", event.org_id(), call.caller.request_id, event);
  // The same source event always gets the same envelope id, so consumers dedupe replays.
  envelope.set_event_id(absl::StrCat(
      "gw-",
      auth::Sha256Hex(absl::StrCat(event.source(), "\n", event.source_event_id())).substr(0, 32)));
  kafka::OutgoingMessage message{deps.business_events_topic,
                                 event.customer_id(),
                                 envelope.SerializeAsString(),
                                 {{"event_id", envelope.event_id()}}};
  // The events service dead-letters larger events; refuse them here, where the caller hears it.
  if (message.value.size() > kMaxBusinessEventBytes) {
    return Error(absl::StatusCode::kResourceExhausted, pb::BODY_TOO_LARGE,
                 absl::StrCat("the event is ", message.value.size(),
                              " bytes once encoded; an event may have at most ",
                              kMaxBusinessEventBytes, " (mostly its attributes)"));
  }
  // An event that does not fit its type is the channel's mistake, told now rather than found
  // in the dead-letter topic after a 202 (decision 028).
  if (deps.event_types != nullptr) {
    MKT_RETURN_IF_ERROR(deps.event_types->Check(event, envelope.event_id()));
  }
  absl::Status published = deps.publisher->Publish({message}, deps.publish_timeout);
  if (!published.ok()) {
    return Error(absl::StatusCode::kUnavailable, pb::DEPENDENCY_UNAVAILABLE,
                 absl::StrCat("cannot publish the event: ", published.message()));
  }
  static_cast<gw::EventAccepted*>(response)->set_event_id(envelope.event_id());
  return absl::OkStatus();
}

absl::Status PublishTracking(const ApiDependencies& deps, const ApiCall& call,
                             const gpb::Message& request, gpb::Message* response) {
  const auto& batch = static_cast<const gw::TrackingBatch&>(request);
  if (batch.events().empty() || batch.events_size() > static_cast<int>(kMaxTrackingBatch)) {
    return InvalidArgument("events", "send 1..500 events");
  }
  std::vector<kafka::OutgoingMessage> messages;
  for (int i = 0; i < batch.events_size(); ++i) {
    gw::TrackingEvent event = batch.events(i);
    const std::string at = absl::StrCat("events[", i, "]");
    if (event.customer_id().empty()) {
      return InvalidArgument(absl::StrCat(at, ".customer_id"), "customer_id is required");
    }
    if (event.action() == gw::TRACKING_ACTION_UNSPECIFIED) {
      return InvalidArgument(absl::StrCat(at, ".action"), "action is EXPOSURE or CLICK");
    }
    if (event.client_event_id().empty() || event.client_event_id().size() > 64) {
      return InvalidArgument(absl::StrCat(at, ".client_event_id"),
                             "client_event_id is required (1..64 characters)");
    }
    event.set_channel_id(call.channel->channel_id);
    event.set_org_id(call.channel->org_id);
    if (!event.has_occurred_at()) {
      event.mutable_occurred_at()->set_seconds(absl::ToUnixSeconds(deps.clock->Now()));
    }
    pb::Envelope envelope =
        kafka::MakeEnvelope("gateway.TrackingEvent", event.org_id(), call.caller.request_id, event);
    envelope.set_event_id(absl::StrCat(
        "gw-trk-", auth::Sha256Hex(absl::StrCat(event.channel_id(), "\n", event.client_event_id()))
                       .substr(0, 32)));
    messages.push_back({deps.tracking_topic,
                        event.customer_id(),
                        envelope.SerializeAsString(),
                        {{"event_id", envelope.event_id()}}});
  }
  if (deps.publisher == nullptr) return Unavailable("event publishing is not configured");
  absl::Status published = deps.publisher->Publish(messages, deps.publish_timeout);
  if (!published.ok()) {
    return Error(absl::StatusCode::kUnavailable, pb::DEPENDENCY_UNAVAILABLE,
                 absl::StrCat("cannot publish tracking events: ", published.message()));
  }
  static_cast<gw::TrackingAccepted*>(response)->set_accepted(batch.events_size());
  return absl::OkStatus();
}

ApiRoute Local(std::string method, std::string path, Access access, std::vector<Role> roles,
               const gpb::Descriptor* request, const gpb::Descriptor* response, Invoker invoke,
               std::string summary, std::string tag) {
  ApiRoute route;
  route.method = std::move(method);
  route.path = std::move(path);
  route.access = access;
  route.roles = std::move(roles);
  route.request_type = request;
  route.response_type = response;
  route.invoke = std::move(invoke);
  route.summary = std::move(summary);
  route.tag = std::move(tag);
  return route;
}

absl::Status AddChannelApi(ApiService& api, Router& router, const ApiDependencies& deps) {
  ApiRoute events = Local(
      "POST", "/v1/events", Access::kChannel, {},
      ::marketing::events::v1::BusinessEvent::descriptor(), gw::EventAccepted::descriptor(),
      [deps](const ApiCall& call, const gpb::Message& req, gpb::Message* resp) {
        return PublishEvent(deps, call, req, resp);
      },
      "Report a business event", "events");
  events.success_status = 202;
  events.scope_field = "org_id";
  events.server_fields = {{"source", "the calling channel (its id)"}};
  events.required = {"source_event_id", "event_type", "customer_id"};
  events.description =
      "Publishes the event on mkt.business-events.v1 for the events service. `source` is set to "
      "the calling channel's id; `org_id` defaults to the channel's org and must be inside it. "
      "The same source_event_id is accepted again idempotently (same event id). The event is "
      "checked against its type in the registry (`GET /admin/v1/event-types`): an unknown type, "
      "a missing required attribute, an attribute of the wrong type or not in the schema, or a "
      "missing amount where the type needs one is 400 INVALID_ARGUMENT saying which, instead of "
      "a dead letter after the 202.";
  MKT_RETURN_IF_ERROR(api.Add(router, std::move(events)));

  ApiRoute tracking = Local(
      "POST", "/v1/tracking", Access::kChannel, {}, gw::TrackingBatch::descriptor(),
      gw::TrackingAccepted::descriptor(),
      [deps](const ApiCall& call, const gpb::Message& req, gpb::Message* resp) {
        return PublishTracking(deps, call, req, resp);
      },
      "Report a batch of exposure and click events", "tracking");
  tracking.success_status = 202;
  tracking.server_fields = {{"events.channel_id", "the calling channel (its id)"},
                            {"events.org_id", "the calling channel (its org)"}};
  tracking.required = {"events", "events.client_event_id", "events.customer_id", "events.action"};
  tracking.description =
      "Publishes 1..500 events on mkt.tracking.v1; channel_id and org_id are set by the gateway.";
  MKT_RETURN_IF_ERROR(api.Add(router, std::move(tracking)));

  // Taking part and what is open to a customer: the campaigns service's Participations API. The
  // customer's org defaults to the channel's and must be inside it; the channel code is always the
  // calling channel's (a mobile-banking integration cannot claim a WeCom-only campaign).
  const std::string p = "marketing.campaigns.v1.Participations.";
  // ACCOUNT_NOT_FOUND: the campaign's stock or budget is not funded yet.
  const std::vector<std::string> refusals = {
      "NOT_ELIGIBLE",        "LIMIT_REACHED",        "STOCK_EXHAUSTED",  "BUDGET_EXHAUSTED",
      "CAMPAIGN_NOT_ACTIVE", "INSUFFICIENT_BALANCE", "ACCOUNT_NOT_FOUND"};
  const std::vector<RpcRow> participation = {
      {.method = "GET",
       .path = "/v1/customers/{customer_id}/campaigns",
       .rpc = p + "ListEligible",
       .summary = "Campaigns open to the customer on a channel, ranked",
       .body = "",
       .scope_field = "customer_org_id",
       .customer_param = "customer_id",
       .channel_code_field = "channel",
       .query_names = {{"customer_org_id", "org"}},
       .description =
           "`channel` is the channel code the customer is on (mobile_banking, wecom, ...); `org` "
           "the customer's org, by default the calling channel's (it must be inside it). Each "
           "campaign says what the customer can still do (remaining_total, remaining_today, "
           "claimed, free draws, sold_out); with `explain=true` the campaigns of the channel that "
           "are not open follow, with not_open_because and not_open_reason."},
      {.method = "POST",
       .path = "/v1/campaigns/{campaign_id}/participations",
       .rpc = p + "Participate",
       .summary = "Take part: claim a coupon, draw a lottery, exchange points, enrol in a task",
       .scope_field = "customer_org_id",
       .errors = refusals,
       .customer_field = "customer_id",
       .idempotency_field = "idempotency_key",
       .channel_code_field = "channel",
       .success_status = 201,
       .description =
           "Body: customer_id, channel (the channel code), customer_org_id (default: the calling "
           "channel's org), item_id (exchanges with several items). The answer is the "
           "participation with its status (GRANTED, NO_PRIZE, ENROLLED for an asset-growth task "
           "with its baseline, ...) and the rewards granted. Refusals are 409 with the reason "
           "as the code; an unknown campaign is 404. Idempotency here is the campaigns "
           "service's: the Idempotency-Key reaches it as idempotency_key (which the body must "
           "not set), per channel and campaign. A participation it stored (granted, no prize, "
           "enrolled, or refused by the ledger) is answered as stored to a replay, with "
           "Idempotent-Replayed: true, for as long as the participation is kept; the same key "
           "for another customer or item is 409 IDEMPOTENCY_KEY_REUSED. A refusal that stored "
           "nothing (sold out, a limit reached, not open, not in the audience, rate limited) is "
           "decided again on a retry, so a retry never takes part twice and never misses a "
           "restock.",
       .required = {"customer_id"},
       .key_fields = {{"campaign_id", 64}, {"customer_id", 64}, {"channel", 32}, {"item_id", 64}}},
      {.method = "GET",
       .path = "/v1/customers/{customer_id}/coupons",
       .rpc = p + "ListCoupons",
       .summary = "The coupon centre: coupon campaigns for the customer on a channel",
       .body = "",
       .scope_field = "customer_org_id",
       .customer_param = "customer_id",
       .channel_code_field = "channel",
       .query_names = {{"customer_org_id", "org"}},
       .description =
           "The coupon-claim campaigns open to the customer on `channel`, ranked like "
           "/v1/customers/{customer_id}/campaigns; sold-out and already claimed ones stay listed "
           "(sold_out, claimed) so the channel can grey them out."},
  };
  for (const RpcRow& row : participation) {
    MKT_ASSIGN_OR_RETURN(ApiRoute route, FromRpc(row, Access::kChannel, deps.campaigns, "campaigns",
                                                 "participation"));
    if (row.rpc == p + "Participate" && deps.sold_out_boards != nullptr) {
      GuardWithSoldOutBoards(route, FetchBoardFrom(deps.campaigns), *deps.sold_out_boards);
    }
    MKT_RETURN_IF_ERROR(api.Add(router, std::move(route)));
  }

  // Wallet, redemptions and QR: the rewards service's Benefits API.
  const std::string b = "marketing.rewards.v1.Benefits.";
  const std::vector<RpcRow> rewards = {
      {.method = "GET",
       .path = "/v1/customers/{customer_id}/wallet",
       .rpc = b + "GetWallet",
       .summary = "The customer's points, cash, lottery chances and coupons by state",
       .body = "",
       .scope_field = "org_id",
       .customer_param = "customer_id",
       .description = "Under load the gateway gathers concurrent wallet reads of one org into "
                      "`GetWallets` calls (decision 029); each read is answered as `GetWallet` "
                      "answers it.",
       .key_fields = {{"customer_id", 64}}},
      {.method = "POST",
       .path = "/v1/redemptions",
       .rpc = b + "LockCoupon",
       .summary = "Lock a coupon against an order (online checkout)",
       .errors = {"COUPON_NOT_USABLE", "PERMISSION_DENIED"},
       // A coupon's usage rules may name the channels it is good on.
       .channel_code_field = "order.channel",
       .description = "`order.channel` is checked against the coupon's usage rules. A coupon of "
                      "another customer is 403 PERMISSION_DENIED.",
       .required = {"coupon_code", "customer_id", "order", "order.order_id"},
       .key_fields = {{"coupon_code", 64},
                      {"customer_id", 64},
                      {"order.order_id", 64},
                      {"order.channel", 64},
                      {"order.merchant_id", 64},
                      {"order.merchant_category", 64},
                      {"order.terminal_id", 64}}},
      {.method = "POST",
       .path = "/v1/redemptions/{redemption_id}:confirm",
       .rpc = b + "ConfirmRedemption",
       .summary = "Confirm a locked redemption (order paid)",
       .errors = {"COUPON_NOT_USABLE"},
       .key_fields = {{"redemption_id", 64}}},
      {.method = "POST",
       .path = "/v1/redemptions/{redemption_id}:cancel",
       .rpc = b + "CancelRedemption",
       .summary = "Cancel a locked redemption (order abandoned)",
       .errors = {"COUPON_NOT_USABLE"},
       .key_fields = {{"redemption_id", 64}}},
      {.method = "POST",
       .path = "/v1/redemptions/{redemption_id}:reverse",
       .rpc = b + "ReverseRedemption",
       .summary = "Reverse a confirmed redemption (refund)",
       .errors = {"COUPON_NOT_USABLE"},
       .key_fields = {{"redemption_id", 64}}},
      {.method = "POST",
       .path = "/v1/coupons/{coupon_code}/qr",
       .rpc = b + "IssueQrToken",
       .summary = "A short-lived one-time QR token for offline use",
       .errors = {"COUPON_NOT_USABLE", "PERMISSION_DENIED"},
       .description = "A coupon of another customer is 403 PERMISSION_DENIED.",
       .required = {"customer_id"},
       .key_fields = {{"coupon_code", 64}, {"customer_id", 64}}},
      {.method = "POST",
       .path = "/v1/qr-redemptions",
       .rpc = b + "RedeemQrToken",
       .summary = "A merchant or counter redeems a QR token",
       .errors = {"COUPON_NOT_USABLE", "TOKEN_EXPIRED", "TOKEN_ALREADY_USED", "TOKEN_INVALID",
                  "PERMISSION_DENIED", "CONFLICT"},
       .description = "`customer_id` is optional; when given it must be the token's customer "
                      "(403 PERMISSION_DENIED otherwise). A token that is not one of ours is 400 "
                      "TOKEN_INVALID. The terminal that redeemed a token may send the same "
                      "order again (its answer was lost) and gets the same redemption, even "
                      "after the token expired; the same order with another amount or merchant "
                      "is 409 CONFLICT, and any other use of a used token 409 "
                      "TOKEN_ALREADY_USED.",
       .required = {"token", "merchant_id", "terminal_id"},
       .key_fields = {{"merchant_id", 64}, {"terminal_id", 64}, {"customer_id", 64}}},
  };
  for (const RpcRow& row : rewards) {
    MKT_ASSIGN_OR_RETURN(ApiRoute route,
                         FromRpc(row, Access::kChannel, deps.rewards, "rewards", "rewards"));
    if (row.rpc == b + "GetWallet" && deps.wallet_reads != nullptr) {
      // Gathered into GetWallets calls (decision 029); the route's blocking invoker stays.
      route.invoke_async = [reads = deps.wallet_reads](
                               const ApiCall& call, const gpb::Message& request,
                               gpb::Message* response, std::function<void(absl::Status)> done) {
        reads->Read(static_cast<const ::marketing::rewards::v1::GetWalletRequest&>(request),
                    static_cast<::marketing::rewards::v1::Wallet*>(response), call.caller,
                    std::move(done));
      };
    }
    MKT_RETURN_IF_ERROR(api.Add(router, std::move(route)));
  }
  return absl::OkStatus();
}

absl::Status AddSessionAndOperatorApi(ApiService& api, Router& router,
                                      const ApiDependencies& deps) {
  AdminAuth* admin = deps.admin;
  ApiRoute sign_in = Local(
      "POST", "/admin/v1/sessions", Access::kPublic, {}, gw::CreateSessionRequest::descriptor(),
      gw::Session::descriptor(),
      [admin](const ApiCall&, const gpb::Message& req, gpb::Message* resp) -> absl::Status {
        if (admin == nullptr) return Unavailable("sign-in is not configured");
        MKT_ASSIGN_OR_RETURN(*static_cast<gw::Session*>(resp),
                             admin->SignIn(static_cast<const gw::CreateSessionRequest&>(req)));
        return absl::OkStatus();
      },
      "Sign in: a bearer token for /admin/v1", "sessions");
  sign_in.success_status = 201;
  sign_in.idempotency = Idempotency::kNone;
  sign_in.description =
      "`lockout_failures` wrong passwords in a row (gateway configuration, default 5) lock the "
      "account for `lockout_s` (default 900 s; 429 until the lock ends or an admin unlocks it). "
      "The token expires after `token_ttl_s` (default 8 h); DELETE /admin/v1/sessions/current "
      "ends it earlier.";
  sign_in.errors = {"TOKEN_INVALID", "RATE_LIMITED", "PERMISSION_DENIED"};
  MKT_RETURN_IF_ERROR(api.Add(router, std::move(sign_in)));

  MKT_RETURN_IF_ERROR(api.Add(
      router, Local(
                  "GET", "/admin/v1/sessions/current", Access::kOperator, {},
                  gw::GetCurrentSessionRequest::descriptor(), gw::SessionInfo::descriptor(),
                  [](const ApiCall& call, const gpb::Message&, gpb::Message* resp) {
                    auto* info = static_cast<gw::SessionInfo*>(resp);
                    const TokenClaims& c = call.session->claims;
                    info->set_session_id(c.session_id);
                    info->set_operator_id(c.operator_id);
                    info->set_org_id(c.org_id);
                    for (const auto& r : c.roles) info->add_roles(r);
                    info->mutable_expires_at()->set_seconds(absl::ToUnixSeconds(c.expires_at));
                    return absl::OkStatus();
                  },
                  "Who the bearer token is for", "sessions")));
  ApiRoute sign_out = Local(
      "DELETE", "/admin/v1/sessions/current", Access::kOperator, {},
      gw::DeleteSessionRequest::descriptor(), gw::SessionEnded::descriptor(),
      [admin](const ApiCall& call, const gpb::Message&, gpb::Message* resp) -> absl::Status {
        MKT_RETURN_IF_ERROR(admin->SignOut(*call.session));
        static_cast<gw::SessionEnded*>(resp)->set_session_id(call.session->claims.session_id);
        return absl::OkStatus();
      },
      "Sign out: the token stops working at once", "sessions");
  sign_out.body = "";
  MKT_RETURN_IF_ERROR(api.Add(router, std::move(sign_out)));

  ApiRoute create = Local(
      "POST", "/admin/v1/operators", Access::kOperator, {Role::kAdmin},
      gw::CreateOperatorRequest::descriptor(), gw::Operator::descriptor(),
      [admin](const ApiCall& call, const gpb::Message& req, gpb::Message* resp) -> absl::Status {
        MKT_ASSIGN_OR_RETURN(
            *static_cast<gw::Operator*>(resp),
            admin->CreateOperator(call.actor, static_cast<const gw::CreateOperatorRequest&>(req)));
        return absl::OkStatus();
      },
      "Create an operator in your org or below", "operators");
  create.success_status = 201;
  create.scope_field = "org_id";
  MKT_RETURN_IF_ERROR(api.Add(router, std::move(create)));

  ApiRoute list = Local(
      "GET", "/admin/v1/operators", Access::kOperator, {Role::kAdmin, Role::kAuditor},
      gw::ListOperatorsRequest::descriptor(), gw::ListOperatorsResponse::descriptor(),
      [admin](const ApiCall& call, const gpb::Message& req, gpb::Message* resp) -> absl::Status {
        MKT_ASSIGN_OR_RETURN(
            *static_cast<gw::ListOperatorsResponse*>(resp),
            admin->ListOperators(call.actor, static_cast<const gw::ListOperatorsRequest&>(req)));
        return absl::OkStatus();
      },
      "Operators of your org's subtree", "operators");
  list.body = "";
  list.scope_field = "org_id";
  MKT_RETURN_IF_ERROR(api.Add(router, std::move(list)));

  ApiRoute get = Local(
      "GET", "/admin/v1/operators/{id}", Access::kOperator, {Role::kAdmin, Role::kAuditor},
      gw::GetOperatorRequest::descriptor(), gw::Operator::descriptor(),
      [admin](const ApiCall& call, const gpb::Message& req, gpb::Message* resp) -> absl::Status {
        MKT_ASSIGN_OR_RETURN(
            *static_cast<gw::Operator*>(resp),
            admin->GetOperator(call.actor, static_cast<const gw::GetOperatorRequest&>(req).id()));
        return absl::OkStatus();
      },
      "One operator", "operators");
  get.body = "";
  MKT_RETURN_IF_ERROR(api.Add(router, std::move(get)));

  ApiRoute update = Local(
      "PATCH", "/admin/v1/operators/{id}", Access::kOperator, {Role::kAdmin},
      gw::UpdateOperatorRequest::descriptor(), gw::Operator::descriptor(),
      [admin](const ApiCall& call, const gpb::Message& req, gpb::Message* resp) -> absl::Status {
        MKT_ASSIGN_OR_RETURN(
            *static_cast<gw::Operator*>(resp),
            admin->UpdateOperator(call.actor, static_cast<const gw::UpdateOperatorRequest&>(req)));
        return absl::OkStatus();
      },
      "Change roles, password, display name; disable or unlock", "operators");
  MKT_RETURN_IF_ERROR(api.Add(router, std::move(update)));

  // The gateway's audit trail of operator requests (audit_trail.h).
  AuditTrail* audit = deps.audit;
  ApiRoute requests = Local(
      "GET", "/admin/v1/audit/requests", Access::kOperator, {Role::kAuditor, Role::kAdmin},
      gw::ListAdminRequestsRequest::descriptor(), gw::ListAdminRequestsResponse::descriptor(),
      [audit](const ApiCall&, const gpb::Message& req, gpb::Message* resp) -> absl::Status {
        if (audit == nullptr) return Unavailable("the audit trail is not configured");
        MKT_ASSIGN_OR_RETURN(*static_cast<gw::ListAdminRequestsResponse*>(resp),
                             audit->List(static_cast<const gw::ListAdminRequestsRequest&>(req)));
        return absl::OkStatus();
      },
      "Every change operators made or tried, sign-ins included, newest first", "audit");
  requests.body = "";
  requests.scope_field = "org_id";
  requests.description =
      "Every /admin/v1 request but a GET, recorded before it ran, with its answer (`status` 0: "
      "the gateway stopped before answering), and every sign-in attempt; passwords and secrets "
      "in bodies are masked. Requests of operators of `org_id`'s subtree (default: yours); "
      "filter by `operator_id` and `since`/`until` (RFC 3339); page with `page_size` (1..500) and "
      "`page_token`. The campaigns service's own trail (`GET /admin/v1/audit`) adds each "
      "configuration before and after the change.";
  return api.Add(router, std::move(requests));
}

absl::Status AddCampaignsAdmin(ApiService& api, Router& router, const ApiDependencies& deps) {
  const std::string c = "marketing.campaigns.v1.Campaigns.";
  const std::vector<Role> editors = {Role::kPlanner, Role::kAdmin};
  const std::vector<Role> approvers = {Role::kApprover};
  const std::vector<RpcRow> orgs = {
      {.method = "POST",
       .path = "/admin/v1/orgs",
       .rpc = c + "CreateOrg",
       .roles = {Role::kAdmin},
       .summary = "Create an org below one you administer"},
      {.method = "GET",
       .path = "/admin/v1/orgs",
       .rpc = c + "ListOrgs",
       .summary = "Your org, its descendants and ancestors",
       .body = ""},
      {.method = "GET",
       .path = "/admin/v1/orgs/{id}",
       .rpc = c + "GetOrg",
       .summary = "One org",
       .body = ""},
  };
  MKT_RETURN_IF_ERROR(
      AddRows(api, router, orgs, Access::kOperator, deps.campaigns, "campaigns", "orgs"));

  std::vector<RpcRow> campaigns = {
      {.method = "POST",
       .path = "/admin/v1/campaigns",
       .rpc = c + "CreateCampaign",
       .roles = editors,
       .summary = "Create a campaign draft (step 1, or a complete config)",
       .scope_field = "org_id"},
      {.method = "GET",
       .path = "/admin/v1/campaigns",
       .rpc = c + "ListCampaigns",
       .summary = "Campaigns of your org's subtree",
       .body = "",
       .scope_field = "org_id"},
      {.method = "GET",
       .path = "/admin/v1/campaigns/{campaign_id}",
       .rpc = c + "GetCampaign",
       .summary = "One campaign",
       .body = "",
       .owner_field = "org_id"},
      {.method = "PUT",
       .path = "/admin/v1/campaigns/{campaign_id}/steps/{step}",
       .rpc = c + "SaveStep",
       .roles = editors,
       .summary = "Save one step of the guided set-up (STEP_BASICS ... STEP_REVIEW)"},
      {.method = "POST",
       .path = "/admin/v1/campaigns/{campaign_id}:validate",
       .rpc = c + "ValidateCampaign",
       .summary = "Check the draft and forecast its cost"},
      {.method = "POST",
       .path = "/admin/v1/campaigns/{campaign_id}:forecast",
       .rpc = c + "ForecastCost",
       .summary = "Forecast the cost of the draft"},
      {.method = "GET",
       .path = "/admin/v1/campaigns/{campaign_id}/versions",
       .rpc = c + "ListVersions",
       .summary = "Submitted versions and their decisions",
       .body = ""},
      {.method = "POST",
       .path = "/admin/v1/campaigns/{campaign_id}:copy",
       .rpc = c + "CopyCampaign",
       .roles = editors,
       .summary = "Copy a campaign into a new draft",
       .scope_field = "org_id",
       .path_fields = {{"campaign_id", "source_campaign_id"}}},
      {.method = "POST",
       .path = "/admin/v1/campaigns/{campaign_id}:save-as-template",
       .rpc = c + "SaveAsTemplate",
       .roles = editors,
       .summary = "Save a campaign as a template",
       .scope_field = "org_id"},
      {.method = "GET",
       .path = "/admin/v1/templates",
       .rpc = c + "ListTemplates",
       .summary = "Templates visible to your org",
       .body = ""},
      {.method = "GET",
       .path = "/admin/v1/templates/{template_id}",
       .rpc = c + "GetTemplate",
       .summary = "One template",
       .body = ""},
      {.method = "POST",
       .path = "/admin/v1/templates/{template_id}:instantiate",
       .rpc = c + "CreateFromTemplate",
       .roles = editors,
       .summary = "Create a campaign draft from a template",
       .scope_field = "org_id"},
      {.method = "GET",
       .path = "/admin/v1/audit",
       .rpc = c + "ListAudit",
       .roles = {Role::kAuditor, Role::kAdmin},
       .summary = "The audit trail of configuration changes",
       .body = ""},
  };
  struct Action {
    const char* verb;
    const char* rpc;
    std::vector<Role> roles;
    const char* summary;
  };
  const std::vector<Action> actions = {
      {"submit", "SubmitCampaign", editors, "Submit the draft for approval"},
      {"approve", "ApproveCampaign", approvers, "Approve (not by the submitter: maker-checker)"},
      {"reject", "RejectCampaign", approvers, "Reject with a comment"},
      {"publish", "PublishCampaign", editors, "Publish an approved campaign"},
      {"pause", "PauseCampaign", editors, "Pause a running campaign"},
      {"resume", "ResumeCampaign", editors, "Resume a paused campaign"},
      {"end", "EndCampaign", editors, "End a campaign now"},
      {"archive", "ArchiveCampaign", editors, "Archive an ended campaign"},
  };
  for (const auto& a : actions) {
    campaigns.push_back({.method = "POST",
                         .path = absl::StrCat("/admin/v1/campaigns/{campaign_id}:", a.verb),
                         .rpc = c + a.rpc,
                         .roles = a.roles,
                         .summary = a.summary});
  }
  // BATCH_GRANT campaigns: progress, the failure report, cancel (the service checks the
  // campaign's org: another bank's batch is 404).
  const std::string b = "marketing.campaigns.v1.BatchGrants.";
  campaigns.push_back(
      {.method = "GET",
       .path = "/admin/v1/campaigns/{campaign_id}/batch-grant",
       .rpc = b + "GetBatchGrant",
       .summary = "Progress of a batch grant: state, total, granted, failed, pending",
       .body = ""});
  campaigns.push_back({.method = "GET",
                       .path = "/admin/v1/campaigns/{campaign_id}/batch-grant/failures",
                       .rpc = b + "ListBatchGrantFailures",
                       .summary = "The failure report of a batch grant: customer, reason, message",
                       .body = ""});
  campaigns.push_back(
      {.method = "GET",
       .path = "/admin/v1/campaigns/{campaign_id}/batch-grant/stuck",
       .rpc = b + "ListBatchGrantStuck",
       .summary = "The recipients whose grant could not be confirmed, to check in the ledger",
       .body = "",
       .description = "Each item names the ledger request id its grant was sent under. The "
                      "runner sends it again (same id, never granted twice) every 10 minutes "
                      "until it is settled."});
  campaigns.push_back(
      {.method = "POST",
       .path = "/admin/v1/campaigns/{campaign_id}/batch-grant/stuck/{customer_id}:settle",
       .rpc = b + "SettleBatchGrantItem",
       .roles = {Role::kApprover, Role::kAdmin},
       .summary = "Settle a stuck recipient as granted or not, after checking the ledger",
       .description = "`settlement` is `BATCH_GRANT_SETTLED_GRANTED` (the ledger holds the "
                      "grant) or `BATCH_GRANT_SETTLED_NOT_GRANTED` (it does not: counted failed, "
                      "never sent again); `note` says what the ledger showed. A batch whose last "
                      "pending recipient is settled completes.",
       .required = {"settlement", "note"},
       .key_fields = {{"campaign_id", 64}, {"customer_id", 128}}});
  // A lottery's realised outcomes against its table, for audits of its fairness.
  campaigns.push_back(
      {.method = "GET",
       .path = "/admin/v1/campaigns/{campaign_id}/draw-stats",
       .rpc = "marketing.campaigns.v1.Participations.GetDrawStats",
       .summary = "A lottery's draws: per prize how often drawn and awarded, fallbacks",
       .body = "",
       .owner_field = "org_id",
       .description = "`drawn[i]` and `awarded[i]` are per prize of the live table, in its "
                      "order; compare `drawn` with the weights to check the distribution."});
  campaigns.push_back(
      {.method = "POST",
       .path = "/admin/v1/campaigns/{campaign_id}/batch-grant:cancel",
       .rpc = b + "CancelBatchGrant",
       .roles = {Role::kApprover, Role::kAdmin},
       .summary = "Cancel what a batch grant has not granted yet (kept: what it has)"});
  return AddRows(api, router, campaigns, Access::kOperator, deps.campaigns, "campaigns",
                 "campaigns");
}

absl::Status AddSegmentsAdmin(ApiService& api, Router& router, const ApiDependencies& deps) {
  const std::string s = "marketing.segments.v1.Segments.";
  const std::vector<Role> editors = {Role::kPlanner, Role::kAdmin};
  const std::vector<RpcRow> rows = {
      {.method = "POST",
       .path = "/admin/v1/tags",
       .rpc = s + "CreateTag",
       .roles = editors,
       .summary = "Add a tag to the dictionary",
       .body = "tag"},
      {.method = "GET",
       .path = "/admin/v1/tags",
       .rpc = s + "ListTags",
       .summary = "The tag dictionary",
       .body = ""},
      {.method = "GET",
       .path = "/admin/v1/tags/{name}",
       .rpc = s + "GetTag",
       .summary = "One tag",
       .body = ""},
      {.method = "PATCH",
       .path = "/admin/v1/tags/{name}",
       .rpc = s + "UpdateTag",
       .roles = editors,
       .summary = "Change a tag's description, source or allowed values"},
      {.method = "POST",
       .path = "/admin/v1/tags:import",
       .rpc = s + "ImportTagValues",
       .roles = editors,
       .summary = "Import tag values from CSV (base64 in `csv`)",
       .scope_field = "org_id"},
      {.method = "POST",
       .path = "/admin/v1/segments",
       .rpc = s + "CreateSegment",
       .roles = editors,
       .summary = "Create a segment",
       .scope_field = "org_id"},
      {.method = "GET",
       .path = "/admin/v1/segments",
       .rpc = s + "ListSegments",
       .summary = "Segments visible to your org",
       .body = ""},
      {.method = "GET",
       .path = "/admin/v1/segments/{segment_id}",
       .rpc = s + "GetSegment",
       .summary = "One segment (latest, or ?version=)",
       .body = "",
       .path_fields = {{"segment_id", "segment.segment_id"}}},
      {.method = "PATCH",
       .path = "/admin/v1/segments/{segment_id}",
       .rpc = s + "UpdateSegment",
       .roles = editors,
       .summary = "Store a new version of a segment"},
      {.method = "POST",
       .path = "/admin/v1/segments/{segment_id}:archive",
       .rpc = s + "ArchiveSegment",
       .roles = editors,
       .summary = "Archive a segment"},
      {.method = "GET",
       .path = "/admin/v1/segments/{segment_id}/count",
       .rpc = s + "Count",
       .roles = {Role::kPlanner, Role::kAdmin, Role::kAnalyst},
       .summary = "How many customers a segment holds now (latest, or ?version=)",
       .body = "",
       .scope_field = "org_id",
       .path_fields = {{"segment_id", "segment.segment_id"}}},
      {.method = "POST",
       .path = "/admin/v1/segments:overlap",
       .rpc = s + "Overlap",
       .roles = {Role::kPlanner, Role::kAdmin, Role::kAnalyst},
       .summary = "How two segments overlap: each one's size, both, only one",
       .scope_field = "org_id"},
      {.method = "POST",
       .path = "/admin/v1/segments:preview",
       .rpc = s + "Preview",
       .roles = {Role::kPlanner, Role::kAdmin, Role::kAnalyst},
       .summary = "Size and sample of a rule while it is edited",
       .scope_field = "org_id"},
  };
  return AddRows(api, router, rows, Access::kOperator, deps.segments, "segments", "segments");
}

absl::Status AddChannelsAdmin(ApiService& api, Router& router, const ApiDependencies& deps) {
  const std::string r = "marketing.channels.v1.ChannelRegistry.";
  const std::vector<RpcRow> rows = {
      {.method = "POST",
       .path = "/admin/v1/channels",
       .rpc = r + "CreateChannel",
       .roles = {Role::kAdmin},
       .summary = "Register a channel; the answer holds its secret once",
       .scope_field = "org_id"},
      {.method = "GET",
       .path = "/admin/v1/channels",
       .rpc = r + "ListChannels",
       .summary = "Channels of one org (default: yours)",
       .body = "",
       .scope_field = "org_id"},
      {.method = "GET",
       .path = "/admin/v1/channels/{id}",
       .rpc = r + "GetChannel",
       .summary = "One channel",
       .body = "",
       .owner_field = "org_id"},
  };
  MKT_RETURN_IF_ERROR(
      AddRows(api, router, rows, Access::kOperator, deps.channels, "channels", "channels"));
  struct Change {
    const char* method;
    const char* path;
    const char* rpc;
    const char* summary;
  };
  const std::vector<Change> changes = {
      {"PATCH", "/admin/v1/channels/{id}", "UpdateChannel", "Rename a channel"},
      {"POST", "/admin/v1/channels/{id}:disable", "DisableChannel",
       "Disable a channel (its requests fail within 2 s)"},
      {"POST", "/admin/v1/channels/{id}:enable", "EnableChannel", "Enable a channel again"},
      {"POST", "/admin/v1/channels/{id}:rotate-secret", "RotateSecret",
       "Issue a new secret (the old one stops working within 2 s)"},
  };
  for (const auto& ch : changes) {
    RpcRow row{.method = ch.method,
               .path = ch.path,
               .rpc = r + ch.rpc,
               .roles = {Role::kAdmin},
               .summary = ch.summary};
    MKT_ASSIGN_OR_RETURN(ApiRoute route,
                         FromRpc(row, Access::kOperator, deps.channels, "channels", "channels"));
    route.invoke = ScopedChannelCall(
        deps.channels, gpb::DescriptorPool::generated_pool()->FindMethodByName(row.rpc));
    MKT_RETURN_IF_ERROR(api.Add(router, std::move(route)));
  }
  return absl::OkStatus();
}

absl::Status AddBenefitsAdmin(ApiService& api, Router& router, const ApiDependencies& deps) {
  const std::string b = "marketing.rewards.v1.Benefits.";
  const std::vector<Role> editors = {Role::kPlanner, Role::kAdmin};
  const std::vector<RpcRow> rows = {
      {.method = "POST",
       .path = "/admin/v1/benefit-templates",
       .rpc = b + "CreateTemplate",
       .roles = editors,
       .summary = "Create a benefit template (coupon, points, gift, ...)",
       .body = "template",
       .scope_field = "template.org_id"},
      {.method = "GET",
       .path = "/admin/v1/benefit-templates/{template_id}",
       .rpc = b + "GetTemplate",
       .summary = "One benefit template",
       .body = "",
       .owner_field = "org_id"},
      {.method = "POST",
       .path = "/admin/v1/benefit-templates/{template_id}:activate",
       .rpc = b + "ActivateTemplate",
       .roles = editors,
       .summary = "Activate a template (funds its stock)"},
      {.method = "POST",
       .path = "/admin/v1/benefit-templates/{template_id}:retire",
       .rpc = b + "RetireTemplate",
       .roles = editors,
       .summary = "Retire a template"},
  };
  MKT_RETURN_IF_ERROR(
      AddRows(api, router, rows, Access::kOperator, deps.rewards, "rewards", "benefit-templates"));

  // A customer's points and their history, for answering the customer (approvers decide on
  // configurations and do not need customers' data).
  const std::string l = "marketing.rewards.v1.Ledger.";
  const std::vector<RpcRow> ledger = {
      {.method = "GET",
       .path = "/admin/v1/customers/{customer_id}/balances",
       .rpc = l + "GetBalances",
       .roles = CustomerDataReaders(),
       .summary = "A customer's accounts (points, cash, lottery chances) at one bank",
       .body = "",
       .scope_field = "org_id",
       .customer_param = "customer_id",
       .description = "`org_id` is the customer's bank (default: the operator's org).",
       .key_fields = {{"customer_id", 64}}},
      {.method = "GET",
       .path = "/admin/v1/customers/{customer_id}/history",
       .rpc = l + "ListHistory",
       .roles = CustomerDataReaders(),
       .summary = "A customer's ledger transfers at one bank, newest first",
       .body = "",
       .scope_field = "org_id",
       .customer_param = "customer_id",
       .description = "`org_id` is the customer's bank (default: the operator's org). Pages "
                      "with `page_size` and the `next_page_token` of the previous answer.",
       .key_fields = {{"customer_id", 64}}},
  };
  MKT_RETURN_IF_ERROR(
      AddRows(api, router, ledger, Access::kOperator, deps.rewards, "rewards", "customers"));

  // Where a campaign's budget stands, from the ledger (decision 034).
  const std::vector<RpcRow> budgets = {
      {.method = "GET",
       .path = "/admin/v1/campaigns/{campaign_id}/budget",
       .rpc = l + "GetCampaignBudget",
       .summary = "A campaign's budget: funded, spent, given back, held and available (fen)",
       .body = "",
       .scope_field = "org_id",
       .owner_field = "org_id",
       .description =
           "`org_id` is the campaign's org (default: the operator's org), where its budget "
           "lives. The budget is funded up to the campaign's `budget_cap_fen` when a version is "
           "published; 404 `ACCOUNT_NOT_FOUND` until then. `available_fen` = `funded_fen` + "
           "`returned_fen` - `spent_fen` - `held_fen`.",
       .key_fields = {{"campaign_id", 64}}},
  };
  MKT_RETURN_IF_ERROR(
      AddRows(api, router, budgets, Access::kOperator, deps.rewards, "rewards", "campaigns"));

  // Where a third-party benefit (a mobile top-up, a supplier's gift) is, for answering the
  // customer who did not get it.
  const std::vector<RpcRow> fulfilments = {
      {.method = "GET",
       .path = "/admin/v1/fulfilments/{fulfilment_id}",
       .rpc = b + "GetFulfilment",
       .roles = CustomerDataReaders(),
       .summary = "A third-party benefit's delivery: state, attempts, the supplier's answer",
       .body = "",
       .owner_field = "org_id",
       .key_fields = {{"fulfilment_id", 64}}},
      {.method = "GET",
       .path = "/admin/v1/coupons/{coupon_code}/fulfilment",
       .rpc = b + "GetFulfilment",
       .roles = CustomerDataReaders(),
       .summary = "The delivery of the third-party benefit behind a coupon",
       .body = "",
       .owner_field = "org_id",
       .key_fields = {{"coupon_code", 64}}},
  };
  MKT_RETURN_IF_ERROR(
      AddRows(api, router, fulfilments, Access::kOperator, deps.rewards, "rewards", "fulfilments"));

  // The ledger's invariants, checked on one snapshot: platform-wide, so the federation's.
  RpcRow integrity{.method = "GET",
                   .path = "/admin/v1/ledger/integrity",
                   .rpc = l + "CheckIntegrity",
                   .roles = {Role::kAuditor, Role::kAdmin},
                   .summary = "Check the ledger's invariants now (the federation's auditors)",
                   .body = "",
                   .description =
                       "Zero sum per asset, no flagged account below zero, account totals equal "
                       "to their transfers, points lots equal to what is available, no transfer "
                       "or lot naming a missing account, one fact per posted transfer. The "
                       "ledger serves every member bank, so only operators of the federation "
                       "(org `fed`) may run it; others get 403."};
  MKT_ASSIGN_OR_RETURN(ApiRoute route,
                       FromRpc(integrity, Access::kOperator, deps.rewards, "rewards", "ledger"));
  route.invoke = [inner = route.invoke](const ApiCall& call, const gpb::Message& request,
                                        gpb::Message* response) -> absl::Status {
    if (call.actor.org_id != tenancy::kFederation) {
      return Error(absl::StatusCode::kPermissionDenied, pb::PERMISSION_DENIED,
                   "the ledger serves every member bank: its integrity check is for operators "
                   "of the federation");
    }
    return inner(call, request, response);
  };
  return api.Add(router, std::move(route));
}

// The events service: the event type registry, trigger rules (read-only: campaigns configure
// them), the event log by customer and the explanation of an (event, rule) pair. The service
// checks the operator's org again (defence in depth).
absl::Status AddEventsAdmin(ApiService& api, Router& router, const ApiDependencies& deps) {
  const std::string e = "marketing.events.v1.EventsAdmin.";
  const std::vector<RpcRow> rows = {
      {.method = "GET",
       .path = "/admin/v1/event-types",
       .rpc = e + "ListEventTypes",
       .summary = "The business event types and their attribute schemas",
       .body = ""},
      {.method = "PUT",
       .path = "/admin/v1/event-types/{name}",
       .rpc = e + "UpsertEventType",
       .roles = {Role::kAdmin},
       .summary = "Define or change a business event type (the federation's admins)",
       .description = "Every member bank's core systems send these types, so only an admin of "
                      "the federation (org `fed`) may change them; others get 403. The answer "
                      "carries the new `version`.",
       .required = {"name"},
       .key_fields = {{"name", 64}}},
      {.method = "GET",
       .path = "/admin/v1/trigger-rules",
       .rpc = e + "ListRules",
       .summary = "The trigger rules of your subtree's event campaigns (filter: campaign_id)",
       .body = ""},
      {.method = "GET",
       .path = "/admin/v1/customers/{customer_id}/events",
       .rpc = e + "ListCustomerEvents",
       .roles = CustomerDataReaders(),
       .summary = "A customer's business events from the event log, newest first",
       .body = "",
       .scope_field = "org_id",
       .customer_param = "customer_id",
       .description = "Events of `org_id` and the orgs below it (default: the operator's org); "
                      "`from` and `to` (RFC 3339) bound `occurred_at`, `limit` is 1..1000 "
                      "(default 100).",
       .key_fields = {{"customer_id", 64}}},
      {.method = "GET",
       .path = "/admin/v1/events/{event_key}/rules/{rule_id}/explanation",
       .rpc = e + "Explain",
       .roles = CustomerDataReaders(),
       .summary = "Why an event did or did not grant under a rule",
       .body = "",
       .description = "`event_key` is `<source>:<source_event_id>` (a channel's events have the "
                      "channel id as source). The answer names the check that failed, with the "
                      "values seen, and the grants made with their state. Another bank's event "
                      "or rule is 404.",
       .key_fields = {{"event_key", 200}, {"rule_id", 128}}},
  };
  return AddRows(api, router, rows, Access::kOperator, deps.events, "events", "events");
}

}  // namespace

absl::Status RegisterApiRoutes(ApiService& api, Router& router, const ApiDependencies& deps) {
  TouchDescriptors();
  MKT_RETURN_IF_ERROR(AddChannelApi(api, router, deps));
  MKT_RETURN_IF_ERROR(AddSessionAndOperatorApi(api, router, deps));
  MKT_RETURN_IF_ERROR(AddCampaignsAdmin(api, router, deps));
  MKT_RETURN_IF_ERROR(AddSegmentsAdmin(api, router, deps));
  MKT_RETURN_IF_ERROR(AddChannelsAdmin(api, router, deps));
  MKT_RETURN_IF_ERROR(AddEventsAdmin(api, router, deps));
  return AddBenefitsAdmin(api, router, deps);
}

}  // namespace mkt::gateway
