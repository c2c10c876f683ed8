// The two facts this service needs from its neighbours while configuring a campaign: which
// segments exist (owner, current version, size) and which benefit templates exist (owner, unit
// cost, what they grant). Each is a small interface: the gRPC clients of the segments and rewards
// services (remote_reference.h) and the in-memory directories (tests, the demo file) answer it
// alike, and this service never reads their tables.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "marketing/campaigns/v1/campaigns.pb.h"

namespace mkt::campaigns {

struct SegmentInfo {
  std::string owner_org;
  // The current version; a campaign may pin any version from 1 to this one.
  int64_t version = 0;
  // Customers in the current version.
  int64_t size = 0;
};

struct TagInfo {
  std::string owner_org;
};

class SegmentDirectory {
 public:
  virtual ~SegmentDirectory() = default;
  // NOT_FOUND when the segment does not exist; UNAVAILABLE when the directory cannot answer.
  virtual absl::StatusOr<SegmentInfo> Lookup(std::string_view segment_id) const = 0;
  // The tag dictionary, for the `customer.tag("x")` conditions of event campaigns: NOT_FOUND when
  // there is no such tag; UNAVAILABLE when the directory cannot answer; UNIMPLEMENTED when this
  // directory does not know tags (they are then not checked).
  virtual absl::StatusOr<TagInfo> LookupTag(std::string_view name) const;
};

struct BenefitInfo {
  std::string owner_org;
  // What one unit costs the campaign's budget, in fen.
  int64_t unit_cost_fen = 0;
  // The reward kind the template can be granted as (a coupon template as a coupon, a points
  // template as points, ...) and the template's type as the rewards service names it, for
  // messages. Unset when the source does not say: the kind is then not checked.
  std::optional<marketing::campaigns::v1::RewardKind> kind;
  std::string type;
};

class BenefitCatalog {
 public:
  virtual ~BenefitCatalog() = default;
  // NOT_FOUND when the benefit template does not exist; UNAVAILABLE when it cannot answer.
  virtual absl::StatusOr<BenefitInfo> Lookup(std::string_view template_id) const = 0;
};

// In-memory directories: the tests' fakes and, filled from a JSON file, the configured default.
class InMemorySegmentDirectory final : public SegmentDirectory {
 public:
  void Put(std::string id, SegmentInfo info);
  absl::StatusOr<SegmentInfo> Lookup(std::string_view segment_id) const override;
  // Tags are checked once the directory knows one (or KnowTags() was called).
  void PutTag(std::string name, TagInfo info);
  void KnowTags();
  absl::StatusOr<TagInfo> LookupTag(std::string_view name) const override;

 private:
  mutable absl::Mutex mu_;
  std::map<std::string, SegmentInfo, std::less<>> segments_ ABSL_GUARDED_BY(mu_);
  bool knows_tags_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, TagInfo, std::less<>> tags_ ABSL_GUARDED_BY(mu_);
};

class InMemoryBenefitCatalog final : public BenefitCatalog {
 public:
  void Put(std::string id, BenefitInfo info);
  absl::StatusOr<BenefitInfo> Lookup(std::string_view template_id) const override;

 private:
  mutable absl::Mutex mu_;
  std::map<std::string, BenefitInfo, std::less<>> benefits_ ABSL_GUARDED_BY(mu_);
};

struct ReferenceData {
  std::unique_ptr<InMemorySegmentDirectory> segments;
  std::unique_ptr<InMemoryBenefitCatalog> benefits;
};

// Reads {"segments": [{"id", "org", "version", "size"}], "tags": [{"name", "org"}], "benefits":
// [{"id", "org", "unit_cost_fen"}]} from `path`; an empty path gives the built-in demo set (the
// federation and banks bank-a/bank-b, see DemoReferenceDataJson()). Without a "tags" key the tags
// of event conditions are not checked.
absl::StatusOr<ReferenceData> LoadReferenceData(const std::string& path);
absl::StatusOr<ReferenceData> ParseReferenceData(std::string_view json);
std::string_view DemoReferenceDataJson();

}  // namespace mkt::campaigns
