#include "services/segments/segments_grpc.h"

#include "libs/rpc/actor.h"
#include "libs/rpc/server.h"
#include "marketing/segments/v1/segments.grpc.pb.h"

namespace mkt::segments {
namespace {

using grpc::CallbackServerContext;
using grpc::ServerUnaryReactor;

class SegmentsGrpcService final : public pb::Segments::CallbackService {
 public:
  SegmentsGrpcService(SegmentService& service, WorkerPool& pool) : s_(service), pool_(pool) {}

#define MKT_ADMIN_RPC(Method, Request, Response)                                             \
  ServerUnaryReactor* Method(CallbackServerContext* ctx, const pb::Request* req,             \
                             pb::Response* resp) override {                                  \
    return rpc::RunBlockingInto(ctx, pool_, resp,                                            \
                                [this, ctx, req]() -> absl::StatusOr<pb::Response> {         \
                                  absl::StatusOr<tenancy::Actor> actor = rpc::ActorOf(*ctx); \
                                  if (!actor.ok()) return actor.status();                    \
                                  return s_.Method(*actor, *req);                            \
                                });                                                          \
  }
#define MKT_MEMBERSHIP_RPC(Method, Request, Response)                                       \
  ServerUnaryReactor* Method(CallbackServerContext* ctx, const pb::Request* req,            \
                             pb::Response* resp) override {                                 \
    return rpc::RunBlockingInto(ctx, pool_, resp, [this, req] { return s_.Method(*req); }); \
  }

  MKT_ADMIN_RPC(CreateTag, CreateTagRequest, Tag)
  MKT_ADMIN_RPC(GetTag, GetTagRequest, Tag)
  MKT_ADMIN_RPC(ListTags, ListTagsRequest, ListTagsResponse)
  MKT_ADMIN_RPC(UpdateTag, UpdateTagRequest, Tag)
  MKT_ADMIN_RPC(ImportTagValues, ImportTagValuesRequest, ImportTagValuesResponse)
  MKT_ADMIN_RPC(CreateSegment, CreateSegmentRequest, Segment)
  MKT_ADMIN_RPC(UpdateSegment, UpdateSegmentRequest, Segment)
  MKT_ADMIN_RPC(GetSegment, GetSegmentRequest, Segment)
  MKT_ADMIN_RPC(ListSegments, ListSegmentsRequest, ListSegmentsResponse)
  MKT_ADMIN_RPC(ArchiveSegment, ArchiveSegmentRequest, Segment)
  MKT_ADMIN_RPC(Preview, PreviewRequest, PreviewResponse)

  ServerUnaryReactor* RecomputeRfm(CallbackServerContext* ctx, const pb::RecomputeRfmRequest*,
                                   pb::RecomputeRfmResponse* resp) override {
    return rpc::RunBlockingInto(ctx, pool_, resp,
                                [this, ctx]() -> absl::StatusOr<pb::RecomputeRfmResponse> {
                                  absl::StatusOr<tenancy::Actor> actor = rpc::ActorOf(*ctx);
                                  if (!actor.ok()) return actor.status();
                                  return s_.RecomputeRfm(*actor);
                                });
  }

  MKT_MEMBERSHIP_RPC(IsMember, IsMemberRequest, IsMemberResponse)
  MKT_MEMBERSHIP_RPC(BatchIsMember, BatchIsMemberRequest, BatchIsMemberResponse)
  MKT_MEMBERSHIP_RPC(Count, CountRequest, CountResponse)
  MKT_MEMBERSHIP_RPC(Sample, SampleRequest, SampleResponse)
  MKT_MEMBERSHIP_RPC(Overlap, OverlapRequest, OverlapResponse)
  MKT_MEMBERSHIP_RPC(Materialize, MaterializeRequest, Snapshot)
  MKT_MEMBERSHIP_RPC(ReadSnapshot, ReadSnapshotRequest, ReadSnapshotResponse)

#undef MKT_ADMIN_RPC
#undef MKT_MEMBERSHIP_RPC

 private:
  SegmentService& s_;
  WorkerPool& pool_;
};

}  // namespace

std::unique_ptr<grpc::Service> NewSegmentsGrpcService(SegmentService& service, WorkerPool& pool) {
  return std::make_unique<SegmentsGrpcService>(service, pool);
}

}  // namespace mkt::segments
