#include "services/campaigns/batch_grant_service.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "libs/core/status.h"
#include "libs/core/text.h"
#include "libs/rpc/actor.h"
#include "libs/rpc/server.h"
#include "marketing/campaigns/v1/batch_grants.grpc.pb.h"
#include "services/campaigns/batch_grant_runner.h"
#include "services/campaigns/lifecycle.h"
#include "spdlog/spdlog.h"

namespace mkt::campaigns {
namespace {

namespace common = ::marketing::common::v1;

void SetTime(google::protobuf::Timestamp* ts, absl::Time t) {
  const int64_t micros = absl::ToUnixMicros(t);
  ts->set_seconds(micros / 1'000'000);
  ts->set_nanos(static_cast<int32_t>(micros % 1'000'000) * 1000);
}

pb::BatchGrantState StateOf(const std::string& state) {
  if (state == kRunMaterialising) return pb::BATCH_GRANT_MATERIALISING;
  if (state == kRunRunning) return pb::BATCH_GRANT_RUNNING;
  if (state == kRunCompleted) return pb::BATCH_GRANT_COMPLETED;
  if (state == kRunCancelled) return pb::BATCH_GRANT_CANCELLED;
  return pb::BATCH_GRANT_STATE_UNSPECIFIED;
}

pb::BatchGrant ToProto(const pb::Campaign& campaign, const std::optional<BatchGrantRun>& run) {
  pb::BatchGrant out;
  out.set_campaign_id(campaign.id());
  out.set_org_id(campaign.org_id());
  if (!run) {
    out.set_state(pb::BATCH_GRANT_NOT_STARTED);
    return out;
  }
  out.set_state(StateOf(run->state));
  out.set_total(run->total);
  out.set_granted(run->granted);
  out.set_failed(run->failed);
  out.set_cancelled(run->cancelled);
  // Before materialisation ends, total is not known yet: nothing is pending.
  out.set_pending(run->state == kRunMaterialising ? 0 : std::max<int64_t>(0, run->pending()));
  SetTime(out.mutable_started_at(), run->started_at);
  if (run->finished_at) SetTime(out.mutable_finished_at(), *run->finished_at);
  SetTime(out.mutable_updated_at(), run->updated_at);
  out.set_last_error(run->last_error);
  for (const auto& id : run->snapshot_ids) out.add_snapshot_ids(id);
  out.set_cancelled_by(run->cancelled_by);
  out.set_cancel_reason(run->cancel_reason);
  out.set_stuck(run->stuck);
  return out;
}

}  // namespace

absl::StatusOr<pb::Campaign> BatchGrantService::LoadBatchCampaign(const tenancy::Actor& actor,
                                                                  const std::string& campaign_id) {
  if (campaign_id.empty()) return InvalidArgument("campaign_id", "is required");
  if (campaign_id.size() > 64) return InvalidArgument("campaign_id", "at most 64 characters");
  absl::StatusOr<pb::Campaign> campaign = campaigns_.GetCampaign(campaign_id);
  // Another bank's campaign answers exactly like a missing one.
  if (campaign.ok() && !CanSee(actor, campaign->org_id())) {
    return NotFound("no campaign \"" + campaign_id + "\"");
  }
  if (!campaign.ok()) return campaign.status();
  const pb::CampaignType type =
      campaign->live_version() > 0 ? campaign->live().type() : campaign->draft().type();
  if (type != pb::BATCH_GRANT) {
    return Error(absl::StatusCode::kFailedPrecondition, common::INVALID_ARGUMENT,
                 "campaign " + campaign_id + " is not a BATCH_GRANT campaign", "campaign_id");
  }
  return campaign;
}

absl::StatusOr<pb::BatchGrant> BatchGrantService::Get(const tenancy::Actor& actor,
                                                      const pb::GetBatchGrantRequest& request) {
  MKT_ASSIGN_OR_RETURN(pb::Campaign campaign, LoadBatchCampaign(actor, request.campaign_id()));
  MKT_ASSIGN_OR_RETURN(std::optional<BatchGrantRun> run, store_.Get(campaign.id()));
  return ToProto(campaign, run);
}

absl::StatusOr<pb::ListBatchGrantFailuresResponse> BatchGrantService::ListFailures(
    const tenancy::Actor& actor, const pb::ListBatchGrantFailuresRequest& request) {
  MKT_ASSIGN_OR_RETURN(pb::Campaign campaign, LoadBatchCampaign(actor, request.campaign_id()));
  const int size =
      request.page().page_size() <= 0 ? 100 : std::min(request.page().page_size(), 1000);
  if (!IsWellFormedUtf8(request.page().page_token())) {
    return InvalidArgument("page.page_token", "is not a token this list gave");
  }
  MKT_ASSIGN_OR_RETURN(std::vector<BatchGrantFailureRow> rows,
                       store_.Failures(campaign.id(), request.page().page_token(), size + 1));
  pb::ListBatchGrantFailuresResponse out;
  for (int i = 0; i < static_cast<int>(rows.size()) && i < size; ++i) {
    auto* f = out.add_failures();
    f->set_customer_id(rows[i].customer_id);
    f->set_reason(rows[i].reason);
    f->set_message(rows[i].message);
    SetTime(f->mutable_failed_at(), rows[i].failed_at);
  }
  if (static_cast<int>(rows.size()) > size) {
    out.mutable_page()->set_next_page_token(rows[size - 1].customer_id);
  }
  return out;
}

absl::StatusOr<pb::ListBatchGrantStuckResponse> BatchGrantService::ListStuck(
    const tenancy::Actor& actor, const pb::ListBatchGrantStuckRequest& request) {
  MKT_ASSIGN_OR_RETURN(pb::Campaign campaign, LoadBatchCampaign(actor, request.campaign_id()));
  const int size =
      request.page().page_size() <= 0 ? 100 : std::min(request.page().page_size(), 1000);
  if (!IsWellFormedUtf8(request.page().page_token())) {
    return InvalidArgument("page.page_token", "is not a token this list gave");
  }
  MKT_ASSIGN_OR_RETURN(std::vector<BatchGrantFailureRow> rows,
                       store_.Stuck(campaign.id(), request.page().page_token(), size + 1));
  pb::ListBatchGrantStuckResponse out;
  for (int i = 0; i < static_cast<int>(rows.size()) && i < size; ++i) {
    auto* item = out.add_items();
    item->set_customer_id(rows[i].customer_id);
    item->set_grant_request_id(BatchGrantRunner::RequestId(campaign.id(), rows[i].customer_id));
    item->set_message(rows[i].message);
    SetTime(item->mutable_stuck_since(), rows[i].failed_at);
  }
  if (static_cast<int>(rows.size()) > size) {
    out.mutable_page()->set_next_page_token(rows[size - 1].customer_id);
  }
  return out;
}

namespace {

// Who may end what a batch grant does: an approver or an admin (the maker-checker's checker).
absl::Status RequireApprover(const tenancy::Actor& actor, const char* what) {
  if (actor.Has(tenancy::Role::kApprover) || actor.Has(tenancy::Role::kAdmin)) {
    return absl::OkStatus();
  }
  return Error(absl::StatusCode::kPermissionDenied, common::PERMISSION_DENIED,
               absl::StrCat("only an approver or an admin may ", what));
}

// An operator's text stored in a text column, which holds no NUL: refused rather than cut off. The
// limit is in bytes of UTF-8 (a Chinese character takes three).
absl::Status CheckOperatorText(const std::string& text, const std::string& field) {
  if (text.size() > kMaxCancelReasonBytes) {
    return InvalidArgument(field, "is " + std::to_string(text.size()) + " bytes; at most " +
                                      std::to_string(kMaxCancelReasonBytes) + " bytes of UTF-8");
  }
  if (!IsWellFormedUtf8(text)) {
    return InvalidArgument(field, "must be well-formed UTF-8 without NUL characters");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<pb::BatchGrant> BatchGrantService::Settle(
    const tenancy::Actor& actor, const pb::SettleBatchGrantItemRequest& request) {
  MKT_ASSIGN_OR_RETURN(pb::Campaign campaign, LoadBatchCampaign(actor, request.campaign_id()));
  MKT_RETURN_IF_ERROR(RequireApprover(actor, "settle a batch grant's item"));
  if (request.customer_id().empty()) return InvalidArgument("customer_id", "is required");
  if (request.customer_id().size() > 128) {
    return InvalidArgument("customer_id", "at most 128 characters");
  }
  if (!IsWellFormedUtf8(request.customer_id())) {
    return InvalidArgument("customer_id", "must be well-formed UTF-8 without NUL characters");
  }
  const bool granted = request.settlement() == pb::BATCH_GRANT_SETTLED_GRANTED;
  if (!granted && request.settlement() != pb::BATCH_GRANT_SETTLED_NOT_GRANTED) {
    return InvalidArgument("settlement",
                           "is BATCH_GRANT_SETTLED_GRANTED (the ledger holds the grant) or "
                           "BATCH_GRANT_SETTLED_NOT_GRANTED (it does not)");
  }
  if (request.note().empty()) {
    return InvalidArgument("note", "is required: say what the ledger showed");
  }
  MKT_RETURN_IF_ERROR(CheckOperatorText(request.note(), "note"));
  const std::string message =
      absl::StrCat("settled by ", actor.org_id, "/", actor.operator_id, ": ", request.note());
  MKT_ASSIGN_OR_RETURN(BatchGrantRun run,
                       store_.Settle(campaign.id(), request.customer_id(), kStuckReason, granted,
                                     granted ? "SETTLED_GRANTED" : "SETTLED_NOT_GRANTED", message));
  spdlog::info("batch grant {}: the stuck grant to {} settled {} by {}/{}", campaign.id(),
               request.customer_id(), granted ? "granted" : "not granted", actor.org_id,
               actor.operator_id);
  // The settlement is committed: a failed re-read (for the stuck count) must not answer an error,
  // which a retry would meet as "not stuck".
  absl::StatusOr<std::optional<BatchGrantRun>> now = store_.Get(campaign.id());
  return ToProto(campaign, now.ok() && *now ? *now : std::optional<BatchGrantRun>(run));
}

absl::StatusOr<pb::BatchGrant> BatchGrantService::Cancel(
    const tenancy::Actor& actor, const pb::CancelBatchGrantRequest& request) {
  MKT_ASSIGN_OR_RETURN(pb::Campaign campaign, LoadBatchCampaign(actor, request.campaign_id()));
  MKT_RETURN_IF_ERROR(RequireApprover(actor, "cancel a batch grant"));
  MKT_RETURN_IF_ERROR(CheckOperatorText(request.reason(), "reason"));
  const std::string by = actor.org_id + "/" + actor.operator_id;
  MKT_ASSIGN_OR_RETURN(BatchGrantRun run,
                       store_.Cancel(campaign.id(), campaign.org_id(), by, request.reason()));
  return ToProto(campaign, run);
}

namespace {

using grpc::CallbackServerContext;
using grpc::ServerUnaryReactor;

class BatchGrantsGrpcService final : public pb::BatchGrants::CallbackService {
 public:
  BatchGrantsGrpcService(BatchGrantService& service, WorkerPool& pool)
      : service_(service), pool_(pool) {}

  ServerUnaryReactor* GetBatchGrant(CallbackServerContext* ctx, const pb::GetBatchGrantRequest* req,
                                    pb::BatchGrant* resp) override {
    return Run(ctx, resp, [=, this](const tenancy::Actor& a) { return service_.Get(a, *req); });
  }
  ServerUnaryReactor* ListBatchGrantFailures(CallbackServerContext* ctx,
                                             const pb::ListBatchGrantFailuresRequest* req,
                                             pb::ListBatchGrantFailuresResponse* resp) override {
    return Run(ctx, resp,
               [=, this](const tenancy::Actor& a) { return service_.ListFailures(a, *req); });
  }
  ServerUnaryReactor* ListBatchGrantStuck(CallbackServerContext* ctx,
                                          const pb::ListBatchGrantStuckRequest* req,
                                          pb::ListBatchGrantStuckResponse* resp) override {
    return Run(ctx, resp,
               [=, this](const tenancy::Actor& a) { return service_.ListStuck(a, *req); });
  }
  ServerUnaryReactor* SettleBatchGrantItem(CallbackServerContext* ctx,
                                           const pb::SettleBatchGrantItemRequest* req,
                                           pb::BatchGrant* resp) override {
    return Run(ctx, resp, [=, this](const tenancy::Actor& a) { return service_.Settle(a, *req); });
  }
  ServerUnaryReactor* CancelBatchGrant(CallbackServerContext* ctx,
                                       const pb::CancelBatchGrantRequest* req,
                                       pb::BatchGrant* resp) override {
    return Run(ctx, resp, [=, this](const tenancy::Actor& a) { return service_.Cancel(a, *req); });
  }

 private:
  // Resolves the actor on the gRPC thread (cheap), then runs `call` on the worker pool.
  template <class Response, class Call>
  ServerUnaryReactor* Run(CallbackServerContext* ctx, Response* response, Call call) {
    absl::StatusOr<tenancy::Actor> actor = rpc::ActorOf(*ctx);
    return rpc::RunBlockingInto(
        ctx, pool_, response,
        [actor = std::move(actor), call = std::move(call)]() -> absl::StatusOr<Response> {
          if (!actor.ok()) return actor.status();
          return call(*actor);
        });
  }

  BatchGrantService& service_;
  WorkerPool& pool_;
};

}  // namespace

std::unique_ptr<grpc::Service> NewBatchGrantsGrpcService(BatchGrantService& service,
                                                         WorkerPool& pool) {
  return std::make_unique<BatchGrantsGrpcService>(service, pool);
}

}  // namespace mkt::campaigns
