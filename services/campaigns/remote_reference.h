// The reference-data seam (reference_data.h) filled by the neighbours that own the facts: segments
// from marketing.segments.v1.Segments (GetSegment for owner and current version, Count or the
// list size for how many customers the current version holds) and benefit templates from
// marketing.rewards.v1.Benefits (GetTemplate for owner, unit cost and status). This service never
// reads their tables.
//
// Both call as the platform's system actor (tenancy::SystemActor, org "fed"): the directory must
// answer for any segment or template so the campaign rules can apply their own visibility rule
// (the owner must cover the campaign's org) and report another org's ids as unknown. Answers are
// cached for a few seconds because validating one draft looks the same ids up many times (every
// step, the forecast, submission); failures are never cached.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "libs/core/ids.h"
#include "services/campaigns/reference_data.h"

namespace grpc {
class Channel;
}  // namespace grpc

namespace mkt::campaigns {

struct RemoteReferenceOptions {
  // Deadline of one call to the neighbour.
  absl::Duration timeout = absl::Milliseconds(500);
  // How long a successful answer is reused; zero turns the cache off.
  absl::Duration cache_ttl = absl::Seconds(5);
};

// Segments through the segments service. An archived segment is reported NOT_FOUND: it may not be
// chosen for a campaign any more. Every other failure to answer (unreachable, deadline, refused)
// is UNAVAILABLE, as the interface promises.
class GrpcSegmentDirectory final : public SegmentDirectory {
 public:
  GrpcSegmentDirectory(std::shared_ptr<grpc::Channel> channel, RemoteReferenceOptions options,
                       const Clock& clock = SystemClock());
  ~GrpcSegmentDirectory() override;
  absl::StatusOr<SegmentInfo> Lookup(std::string_view segment_id) const override;
  // Segments.GetTag (not cached: a draft names few tags, and a tag created a moment ago counts).
  absl::StatusOr<TagInfo> LookupTag(std::string_view name) const override;

 private:
  absl::StatusOr<SegmentInfo> Fetch(const std::string& segment_id) const;

  class Stub;
  std::unique_ptr<Stub> stub_;
  const RemoteReferenceOptions options_;
  const Clock& clock_;
  mutable absl::Mutex mu_;
  mutable std::map<std::string, std::pair<SegmentInfo, absl::Time>, std::less<>> cache_
      ABSL_GUARDED_BY(mu_);
};

// Benefit templates through the rewards service's Benefits API. With `hide_retired` a RETIRED
// template is reported NOT_FOUND — what configuring and forecasting a campaign needs, since a
// retired template grants nothing new. Without it every template that exists answers with its
// real cost — what charging the budget of a running campaign needs.
class GrpcBenefitCatalog final : public BenefitCatalog {
 public:
  GrpcBenefitCatalog(std::shared_ptr<grpc::Channel> channel, RemoteReferenceOptions options,
                     bool hide_retired, const Clock& clock = SystemClock());
  ~GrpcBenefitCatalog() override;
  absl::StatusOr<BenefitInfo> Lookup(std::string_view template_id) const override;

 private:
  struct Cached {
    BenefitInfo info;
    bool retired = false;
    absl::Time fetched_at;
    // A call is fetching this entry afresh: the others answer from it meanwhile, so an expiry
    // under load costs one call to the rewards service, not one per request in flight.
    bool refreshing = false;
  };
  absl::StatusOr<Cached> Fetch(const std::string& template_id) const;

  class Stub;
  std::unique_ptr<Stub> stub_;
  const RemoteReferenceOptions options_;
  const bool hide_retired_;
  const Clock& clock_;
  mutable absl::Mutex mu_;
  mutable std::map<std::string, Cached, std::less<>> cache_ ABSL_GUARDED_BY(mu_);
};

}  // namespace mkt::campaigns
