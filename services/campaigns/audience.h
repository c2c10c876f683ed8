// Whether a customer is in a campaign's audience: in at least one included segment (at the
// pinned version) and in no excluded one. A small seam: the segments service's IsMember over gRPC
// in production, an in-memory membership in tests and on a stack without the segments service.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "marketing/campaigns/v1/campaigns.pb.h"

namespace grpc {
class Channel;
}  // namespace grpc

namespace mkt::campaigns {

class AudienceMembership {
 public:
  virtual ~AudienceMembership() = default;
  // `campaign_org` is the org the question is asked for (the campaign's owner). UNAVAILABLE when
  // the membership cannot be answered now.
  virtual absl::StatusOr<bool> InAudience(const std::string& campaign_org,
                                          const std::string& customer_id,
                                          const ::marketing::campaigns::v1::Audience& audience) = 0;
};

// Members listed per segment; a segment marked open has every customer as a member.
class InMemoryMembership final : public AudienceMembership {
 public:
  void Add(const std::string& segment_id, const std::string& customer_id);
  void SetOpen(const std::string& segment_id);
  // Every segment not listed otherwise is open (the local stack without segments data).
  void SetAllOpen(bool open);
  absl::StatusOr<bool> InAudience(const std::string& campaign_org, const std::string& customer_id,
                                  const ::marketing::campaigns::v1::Audience& audience) override;

 private:
  bool IsMember(const std::string& segment_id, const std::string& customer_id) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  mutable absl::Mutex mu_;
  std::map<std::string, std::set<std::string>> members_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> open_ ABSL_GUARDED_BY(mu_);
  bool all_open_ ABSL_GUARDED_BY(mu_) = false;
};

// Reads {"open": bool, "segments": {"<segment id>": ["customer", ...] or "*"}}.
absl::StatusOr<std::unique_ptr<InMemoryMembership>> LoadMembership(const std::string& path);

// Asks marketing.segments.v1.Segments/IsMember (one call for all of an audience's segments).
std::unique_ptr<AudienceMembership> NewSegmentsMembership(std::shared_ptr<grpc::Channel> channel,
                                                          absl::Duration timeout);

}  // namespace mkt::campaigns
