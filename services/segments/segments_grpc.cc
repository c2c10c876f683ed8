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

  ServerUnaryReactor* IsMember(CallbackServerContext* ctx, const pb::IsMemberRequest* req,
                               pb::IsMemberResponse* resp) override {
    if (s_.Cached(req->segments())) {  // as BatchIsMember below
      ServerUnaryReactor* reactor = ctx->DefaultReactor();
      absl::StatusOr<pb::IsMemberResponse> answer = s_.IsMember(*req);
      if (answer.ok()) *resp = *std::move(answer);
      reactor->Finish(rpc::ToGrpcStatus(answer.status()));
      return reactor;
    }
    return rpc::RunBlockingInto(ctx, pool_, resp, [this, req] { return s_.IsMember(*req); });
  }

  // Answered on the callback thread when every segment is in memory (the usual case: pinned
  // versions are cached for good): microseconds of bitmap probes do not pay for a hop to the
  // worker pool and back. A segment not yet cached is read from PostgreSQL on the pool.
  ServerUnaryReactor* BatchIsMember(CallbackServerContext* ctx, const pb::BatchIsMemberRequest* req,
                                    pb::BatchIsMemberResponse* resp) override {
    if (s_.Cached(req->segments())) {
      ServerUnaryReactor* reactor = ctx->DefaultReactor();
      reactor->Finish(rpc::ToGrpcStatus(s_.BatchIsMemberInto(*req, resp)));
      return reactor;
    }
    return rpc::RunBlockingInto(ctx, pool_, resp, [this, req] { return s_.BatchIsMember(*req); });
  }
  // Bitmap probes only: answered on the callback thread.
  ServerUnaryReactor* BatchGetTagValues(CallbackServerContext* ctx,
                                        const pb::BatchGetTagValuesRequest* req,
                                        pb::BatchGetTagValuesResponse* resp) override {
    ServerUnaryReactor* reactor = ctx->DefaultReactor();
    reactor->Finish(rpc::ToGrpcStatus(s_.BatchGetTagValuesInto(*req, resp)));
    return reactor;
  }
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
