#include "services/campaigns/batch_grant_service.h"

#include <algorithm>
#include <string>

#include "libs/core/status.h"
#include "libs/core/text.h"
#include "libs/rpc/actor.h"
#include "libs/rpc/server.h"
#include "marketing/campaigns/v1/batch_grants.grpc.pb.h"
#include "services/campaigns/lifecycle.h"

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

absl::StatusOr<pb::BatchGrant> BatchGrantService::Cancel(
    const tenancy::Actor& actor, const pb::CancelBatchGrantRequest& request) {
  MKT_ASSIGN_OR_RETURN(pb::Campaign campaign, LoadBatchCampaign(actor, request.campaign_id()));
  if (!actor.Has(tenancy::Role::kApprover) && !actor.Has(tenancy::Role::kAdmin)) {
    return Error(absl::StatusCode::kPermissionDenied, common::PERMISSION_DENIED,
                 "only an approver or an admin may cancel a batch grant");
  }
  // Stored in a text column (batch_grant_runs.cancel_reason), which holds no NUL: refused rather
  // than cut off. The limit is in bytes of UTF-8 (a Chinese character takes three).
  if (request.reason().size() > kMaxCancelReasonBytes) {
    return InvalidArgument("reason", "is " + std::to_string(request.reason().size()) +
                                         " bytes; at most " +
                                         std::to_string(kMaxCancelReasonBytes) + " bytes of UTF-8");
  }
  if (!IsWellFormedUtf8(request.reason())) {
    return InvalidArgument("reason", "must be well-formed UTF-8 without NUL characters");
  }
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
