// The operators' view of batch grants (marketing.campaigns.v1.BatchGrants): progress, the failure
// report and cancellation, scoped like every campaigns call (an actor sees the batches of
// campaigns of its org and descendants; anything else is NOT_FOUND), plus its gRPC face.
#pragma once

#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/codegen/service_type.h>

#include <cstddef>
#include <memory>

#include "absl/status/statusor.h"
#include "libs/core/worker_pool.h"
#include "libs/tenancy/tenancy.h"
#include "marketing/campaigns/v1/batch_grants.pb.h"
#include "services/campaigns/batch_grant_store.h"
#include "services/campaigns/pg_campaign_store.h"

namespace mkt::campaigns {

// CancelBatchGrant: the longest reason, in bytes of UTF-8; also SettleBatchGrantItem's note.
inline constexpr size_t kMaxCancelReasonBytes = 500;

class BatchGrantService {
 public:
  BatchGrantService(PgCampaignStore& campaigns, PgBatchGrantStore& store)
      : campaigns_(campaigns), store_(store) {}

  absl::StatusOr<pb::BatchGrant> Get(const tenancy::Actor& actor,
                                     const pb::GetBatchGrantRequest& request);
  absl::StatusOr<pb::ListBatchGrantFailuresResponse> ListFailures(
      const tenancy::Actor& actor, const pb::ListBatchGrantFailuresRequest& request);
  absl::StatusOr<pb::ListBatchGrantStuckResponse> ListStuck(
      const tenancy::Actor& actor, const pb::ListBatchGrantStuckRequest& request);
  // Approver or admin only.
  absl::StatusOr<pb::BatchGrant> Settle(const tenancy::Actor& actor,
                                        const pb::SettleBatchGrantItemRequest& request);
  // Approver or admin only.
  absl::StatusOr<pb::BatchGrant> Cancel(const tenancy::Actor& actor,
                                        const pb::CancelBatchGrantRequest& request);

 private:
  absl::StatusOr<pb::Campaign> LoadBatchCampaign(const tenancy::Actor& actor,
                                                 const std::string& campaign_id);

  PgCampaignStore& campaigns_;
  PgBatchGrantStore& store_;
};

// Returns the gRPC service (callback API) serving `service` on `pool`.
std::unique_ptr<grpc::Service> NewBatchGrantsGrpcService(BatchGrantService& service,
                                                         WorkerPool& pool);

}  // namespace mkt::campaigns
