// The segments service's rules: who may see and use which tag and segment (libs/tenancy), what a
// valid rule, list or composition is, and how membership questions are answered from the bitmap
// index. Changes commit to PostgreSQL first (PgSegmentStore) and reach the index after commit.
//
// Visibility: a tag or segment owned by org O is readable and usable by actors whose org covers
// O; "fed"-owned ones by everyone. Only actors covering O may change it. Every answer about
// customers is restricted to the customers whose home org the asking org covers, so a bank never
// counts, samples or materialises another bank's customers, even through a federation segment.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "libs/core/ids.h"
#include "libs/kafka/kafka.h"
#include "libs/tenancy/tenancy.h"
#include "marketing/segments/v1/segments.pb.h"
#include "services/segments/pg_segment_store.h"
#include "services/segments/tag_index.h"

namespace mkt::segments {

// The consumer names recorded in processed_events.
inline constexpr char kProfileConsumer[] = "segments.profiles";
inline constexpr char kRfmConsumer[] = "segments.rfm";
// The attribute by which a business event names the event it reverses (a refund or a cancel, see
// marketing.events.v1.ReversalKind): its presence marks the event as a reversal.
inline constexpr char kOriginalEventAttribute[] = "original_event_id";

struct ServiceOptions {
  // How long the latest version of a segment is cached before it is read again (other replicas
  // may have changed it).
  absl::Duration latest_version_ttl = absl::Seconds(1);
  // Import rows above this many are refused (split the file).
  int64_t max_import_rows = 200000;
};

class SegmentService {
 public:
  SegmentService(PgSegmentStore& store, TagIndex& index, const Clock& clock,
                 ServiceOptions options = {});

  // Loads the dictionary, every customer and every tag value into the index (start-up).
  absl::Status Rebuild();

  // ---- Admin (actor from metadata)
  absl::StatusOr<pb::Tag> CreateTag(const tenancy::Actor& actor, const pb::CreateTagRequest& req);
  absl::StatusOr<pb::Tag> GetTag(const tenancy::Actor& actor, const pb::GetTagRequest& req);
  absl::StatusOr<pb::ListTagsResponse> ListTags(const tenancy::Actor& actor,
                                                const pb::ListTagsRequest& req);
  absl::StatusOr<pb::Tag> UpdateTag(const tenancy::Actor& actor, const pb::UpdateTagRequest& req);
  absl::StatusOr<pb::ImportTagValuesResponse> ImportTagValues(
      const tenancy::Actor& actor, const pb::ImportTagValuesRequest& req);
  absl::StatusOr<pb::Segment> CreateSegment(const tenancy::Actor& actor,
                                            const pb::CreateSegmentRequest& req);
  absl::StatusOr<pb::Segment> UpdateSegment(const tenancy::Actor& actor,
                                            const pb::UpdateSegmentRequest& req);
  absl::StatusOr<pb::Segment> GetSegment(const tenancy::Actor& actor,
                                         const pb::GetSegmentRequest& req);
  absl::StatusOr<pb::ListSegmentsResponse> ListSegments(const tenancy::Actor& actor,
                                                        const pb::ListSegmentsRequest& req);
  absl::StatusOr<pb::Segment> ArchiveSegment(const tenancy::Actor& actor,
                                             const pb::ArchiveSegmentRequest& req);
  absl::StatusOr<pb::PreviewResponse> Preview(const tenancy::Actor& actor,
                                              const pb::PreviewRequest& req);
  absl::StatusOr<pb::RecomputeRfmResponse> RecomputeRfm(const tenancy::Actor& actor);

  // ---- Membership (the org the caller acts for is in the request)
  absl::StatusOr<pb::IsMemberResponse> IsMember(const pb::IsMemberRequest& req);
  absl::StatusOr<pb::BatchIsMemberResponse> BatchIsMember(const pb::BatchIsMemberRequest& req);
  // Whether every segment of `refs` is in memory, so a membership question about them does not
  // touch PostgreSQL (the gRPC adapter answers those on the callback thread).
  bool Cached(const google::protobuf::RepeatedPtrField<pb::SegmentRef>& refs);
  // BatchIsMember filling `out` (for a caller that owns the response, e.g. the gRPC adapter).
  absl::Status BatchIsMemberInto(const pb::BatchIsMemberRequest& req,
                                 pb::BatchIsMemberResponse* out);
  // Answered from the index alone (the gRPC adapter answers it on the callback thread).
  absl::Status BatchGetTagValuesInto(const pb::BatchGetTagValuesRequest& req,
                                     pb::BatchGetTagValuesResponse* out) const;
  absl::StatusOr<pb::CountResponse> Count(const pb::CountRequest& req);
  absl::StatusOr<pb::SampleResponse> Sample(const pb::SampleRequest& req);
  absl::StatusOr<pb::OverlapResponse> Overlap(const pb::OverlapRequest& req);
  absl::StatusOr<pb::Snapshot> Materialize(const pb::MaterializeRequest& req);
  absl::StatusOr<pb::ReadSnapshotResponse> ReadSnapshot(const pb::ReadSnapshotRequest& req);

  // ---- Consumers (kafka::Handler semantics: permanent errors are dead-lettered)
  // A message of mkt.customer-profiles.v1.
  absl::Status HandleProfileMessage(const kafka::IncomingMessage& message);
  // A message of mkt.business-events.v1 (transactions feed the RFM aggregates).
  absl::Status HandleBusinessEvent(const kafka::IncomingMessage& message);
  // Scores every customer with transactions and writes the RFM tags; returns how many.
  absl::StatusOr<int64_t> ScoreRfm();

 private:
  using SegmentPtr = std::shared_ptr<const SegmentVersion>;

  absl::StatusOr<TagSchema> TagFor(const std::string& name);
  absl::Status ValidateRule(const pb::Condition& rule, const std::string& owner_org, int depth,
                            int* leaves, const std::string& field);
  // Checks a definition for a segment owned by `owner_org`; fills `list_members` for lists
  // (creating unknown customers when `create_customers`).
  absl::Status ValidateDefinition(const pb::SegmentDefinition& definition,
                                  const std::string& owner_org, const std::string& self_id,
                                  bool create_customers, pb::SegmentKind* kind,
                                  std::shared_ptr<const Roaring>* list_members);
  // Fixes the operands of a composed definition given as version 0 (latest) to the version they
  // have now, so a stored version of a composition keeps meaning what it meant when written.
  absl::Status PinOperands(pb::SegmentDefinition* definition);
  absl::StatusOr<SegmentPtr> Resolve(const pb::SegmentRef& ref);
  // Resolves a segment `org` may use; NOT_FOUND when it does not exist or is not visible.
  absl::StatusOr<SegmentPtr> ResolveFor(const std::string& org, const pb::SegmentRef& ref,
                                        const std::string& field);
  // `root` is the segment asked about (named when compositions nest too deeply; "" for a preview).
  absl::StatusOr<Roaring> Members(const SegmentVersion& segment, int32_t today, int depth,
                                  std::string_view root);
  // Resolves the segments of a membership question (NOT_FOUND names segments[i]).
  absl::Status ResolveAll(const std::string& org,
                          const google::protobuf::RepeatedPtrField<pb::SegmentRef>& refs,
                          std::vector<SegmentPtr>* out);
  // Answers, for one customer, each of `segments` into `member`.
  absl::Status MemberOf(const std::string& org, const std::string& customer_id,
                        const std::vector<SegmentPtr>& segments, int32_t today,
                        google::protobuf::RepeatedField<bool>* member);
  absl::StatusOr<bool> Contains(const SegmentVersion& segment, uint32_t dense_id, int32_t today,
                                int depth, std::string_view root);
  // Members of the segment as seen by `org` (scoped to its customers).
  absl::StatusOr<Roaring> MembersFor(const std::string& org, const pb::SegmentRef& ref,
                                     const std::string& field, SegmentPtr* resolved = nullptr);
  absl::Status ReachesSegment(const pb::SegmentRef& ref, const std::string& target, int depth);
  void ApplyState(const CustomerState& state);
  pb::Segment ToProto(const SegmentVersion& segment) const;
  void ForgetLatest(const std::string& segment_id);

  PgSegmentStore& store_;
  TagIndex& index_;
  const Clock& clock_;
  const ServiceOptions options_;

  absl::Mutex cache_mu_;
  // Segment id -> version -> definition: looked up on every membership question (under a
  // reader lock, without building a key).
  std::map<std::string, std::map<int64_t, SegmentPtr>, std::less<>> pinned_
      ABSL_GUARDED_BY(cache_mu_);
  std::map<std::string, std::pair<SegmentPtr, absl::Time>, std::less<>> latest_
      ABSL_GUARDED_BY(cache_mu_);
  std::map<std::string, std::shared_ptr<const Roaring>> snapshots_ ABSL_GUARDED_BY(cache_mu_);
};

// True when an actor of `actor_org` may read or use what `owner_org` owns.
bool Readable(std::string_view actor_org, std::string_view owner_org);

// Returns the RFM group (a value of the rfm_group tag) of scores r, f, m given the population's
// mean scores.
std::string RfmGroup(int r, int f, int m, double mean_r, double mean_f, double mean_m);

}  // namespace mkt::segments
