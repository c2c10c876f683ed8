// The segments service's rules: who may see and use which tag and segment (libs/tenancy), what a
// valid rule, list or composition is, and how membership questions are answered from the bitmap
// index. Changes commit to PostgreSQL first (PgSegmentStore) and reach the index after commit.
//
// Visibility: a tag or segment owned by org O is readable and usable by actors whose org covers
// O; "fed"-owned ones by everyone. Only actors covering O may change it. Every answer about
// customers is restricted to the customers whose home org the asking org covers, so a bank never
// counts, samples or materialises another bank's customers, even through a federation segment.
//
// Replicas (decision 037): each keeps its own index. A replica applies its own writes after they
// commit and every replica's writes (its own again included) through CatchUp, which re-reads the
// customers logged in tag_changes; a state is applied only when it is newer (by the customer's
// revision) than the one the index holds, so appliers on different threads may run in any order.
#pragma once

#include <cstdint>
#include <deque>
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
  // How long change rows are kept after their transaction ended (PruneChanges): a replica whose
  // catching up stalls longer than this re-reads every customer.
  absl::Duration changes_retention = absl::Hours(1);
};

class SegmentService {
 public:
  SegmentService(PgSegmentStore& store, TagIndex& index, const Clock& clock,
                 ServiceOptions options = {});

  // Loads the dictionary, every customer and every tag value into the index (start-up), and
  // where CatchUp starts.
  absl::Status Rebuild();

  // ---- Replicas (decision 037)
  // Applies to the index what every replica committed since the last call (since Rebuild for the
  // first): the dictionary when a tag was created or changed, then the committed state of every
  // customer logged in tag_changes by a transaction that has ended. Returns how many customers
  // were re-read. Called every changes_poll_ms; on error the next call reads the same changes.
  absl::StatusOr<int64_t> CatchUp();
  // The transaction id below which every transaction's changes are in the index (the `from` of
  // the next CatchUp): a write that committed before pg_snapshot_xmax of some snapshot is applied
  // once this reaches that xmax.
  uint64_t CaughtUpTo();
  // Deletes the change rows of transactions that ended more than changes_retention ago (by the
  // clock: it remembers a snapshot xmin every sixth of the retention). Returns how many were
  // deleted.
  absl::StatusOr<int64_t> PruneChanges();
  // Applies a committed state to the index unless the index holds one at least as new (a higher
  // or equal revision): a state read before another writer's commit may reach the index after
  // that writer's. Fails (applying nothing) only when a tag of the state cannot be read.
  absl::Status ApplyState(const CustomerState& state);

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
  // Applies the states a write of this replica committed; a failure is logged (CatchUp applies
  // them later).
  void ApplyCommitted(const std::vector<CustomerState>& states);
  // Reads and applies the committed states of `dense_ids`, a batch at a time.
  absl::Status ApplyStatesOf(const std::vector<uint32_t>& dense_ids);
  // The tag as stored now (after another replica added allowed values), put in the index.
  absl::StatusOr<TagSchema> RefreshTag(const std::string& name);
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

  // Serialises ApplyState: the revision check and the index change are one step.
  absl::Mutex apply_mu_;
  // Per dense id, the revision of the state the index holds (0: none).
  std::vector<int64_t> applied_ ABSL_GUARDED_BY(apply_mu_);
  // Makes room in applied_ for `dense_id`.
  void GrowApplied(uint32_t dense_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);

  absl::Mutex changes_mu_;
  // Where the next ReadChanges starts (a snapshot xmin).
  uint64_t changes_from_ ABSL_GUARDED_BY(changes_mu_) = 0;
  // The dictionary's version last applied (-1: not read by CatchUp yet).
  int64_t tags_version_ ABSL_GUARDED_BY(changes_mu_) = -1;

  absl::Mutex prune_mu_;
  // (when, snapshot xmin then), oldest first: rows below an xmin older than the retention go.
  std::deque<std::pair<absl::Time, uint64_t>> prune_marks_ ABSL_GUARDED_BY(prune_mu_);
};

// True when an actor of `actor_org` may read or use what `owner_org` owns.
bool Readable(std::string_view actor_org, std::string_view owner_org);

// Returns the RFM group (a value of the rfm_group tag) of scores r, f, m given the population's
// mean scores.
std::string RfmGroup(int r, int f, int m, double mean_r, double mean_f, double mean_m);

}  // namespace mkt::segments
