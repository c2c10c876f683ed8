#include "services/campaigns/remote_reference.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <optional>

#include "libs/core/status.h"
#include "libs/log/log.h"
#include "libs/rpc/actor.h"
#include "libs/rpc/client.h"
#include "libs/rpc/server.h"
#include "libs/tenancy/tenancy.h"
#include "marketing/rewards/v1/benefits.grpc.pb.h"
#include "marketing/segments/v1/segments.grpc.pb.h"

namespace mkt::campaigns {
namespace {

namespace spb = ::marketing::segments::v1;
namespace rpb = ::marketing::rewards::v1;
namespace cpb = ::marketing::campaigns::v1;

constexpr char kComponent[] = "campaigns";

void Prepare(grpc::ClientContext& context, absl::Duration timeout) {
  rpc::PrepareClientContext(context, timeout, log::CurrentRequestId());
  rpc::AttachActor(context, tenancy::SystemActor(kComponent));
}

// The interface knows two failures: the thing does not exist, or nobody can say now. A refusal
// (permission, malformed id, overload, internal error) is the latter from the rules' point of
// view: the draft is not wrong, the check could not be made.
absl::Status Classify(const grpc::Status& status, const std::string& neighbour,
                      const std::string& what) {
  // A malformed id names nothing that could exist: unknown, like a well-formed id nobody made.
  if (status.error_code() == grpc::StatusCode::NOT_FOUND ||
      status.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
    return NotFound("unknown " + what);
  }
  absl::Status s = rpc::FromGrpcStatus(status);
  return Unavailable(neighbour + " cannot answer for " + what + ": " +
                     std::string(absl::StatusCodeToString(s.code())) + ": " +
                     std::string(s.message()));
}

// The reward kind a template of `type` is granted as: coupon instances through
// Benefits.IssueCoupon, the rest as assets through Ledger.Grant (reward_issuer.h AssetOf).
std::optional<cpb::RewardKind> KindOf(rpb::BenefitType type) {
  switch (type) {
    case rpb::COUPON_CASH:
    case rpb::COUPON_THRESHOLD:
    case rpb::COUPON_DISCOUNT:
    case rpb::COUPON_FINANCIAL:
    case rpb::GIFT_VOUCHER:
    case rpb::THIRD_PARTY:
      return cpb::REWARD_KIND_COUPON;
    case rpb::BENEFIT_POINTS:
      return cpb::REWARD_KIND_POINTS;
    case rpb::RED_ENVELOPE:
      return cpb::REWARD_KIND_CASH_FEN;
    case rpb::BENEFIT_LOTTERY_CHANCE:
      return cpb::REWARD_KIND_LOTTERY_CHANCE;
    default:
      return std::nullopt;  // a type this build does not know: not checked
  }
}

bool Fresh(absl::Time fetched_at, absl::Time now, absl::Duration ttl) {
  return ttl > absl::ZeroDuration() && now - fetched_at < ttl;
}

}  // namespace

class GrpcSegmentDirectory::Stub {
 public:
  explicit Stub(std::shared_ptr<grpc::Channel> channel)
      : stub(spb::Segments::NewStub(std::move(channel))) {}
  std::unique_ptr<spb::Segments::Stub> stub;
};

GrpcSegmentDirectory::GrpcSegmentDirectory(std::shared_ptr<grpc::Channel> channel,
                                           RemoteReferenceOptions options, const Clock& clock)
    : stub_(std::make_unique<Stub>(std::move(channel))), options_(options), clock_(clock) {}

GrpcSegmentDirectory::~GrpcSegmentDirectory() = default;

absl::StatusOr<SegmentInfo> GrpcSegmentDirectory::Lookup(std::string_view segment_id) const {
  const absl::Time now = clock_.Now();
  {
    absl::MutexLock lock(&mu_);
    auto it = cache_.find(segment_id);
    if (it != cache_.end() && Fresh(it->second.second, now, options_.cache_ttl)) {
      return it->second.first;
    }
  }
  std::string id(segment_id);
  absl::StatusOr<SegmentInfo> info = Fetch(id);
  if (info.ok() && options_.cache_ttl > absl::ZeroDuration()) {
    absl::MutexLock lock(&mu_);
    cache_[std::move(id)] = {*info, now};
  }
  return info;
}

absl::StatusOr<TagInfo> GrpcSegmentDirectory::LookupTag(std::string_view name) const {
  const std::string what = "tag '" + std::string(name) + "'";
  spb::GetTagRequest get;
  get.set_name(std::string(name));
  spb::Tag tag;
  grpc::ClientContext context;
  Prepare(context, options_.timeout);
  grpc::Status status = stub_->stub->GetTag(&context, get, &tag);
  if (!status.ok()) return Classify(status, "segments", what);
  return TagInfo{tag.org_id()};
}

absl::StatusOr<SegmentInfo> GrpcSegmentDirectory::Fetch(const std::string& segment_id) const {
  const std::string what = "segment '" + segment_id + "'";
  // An empty id would mean nothing to the service; ids are never empty.
  if (segment_id.empty()) return NotFound("unknown segment ''");
  spb::GetSegmentRequest get;
  get.mutable_segment()->set_segment_id(segment_id);  // version 0: the latest
  spb::Segment segment;
  {
    grpc::ClientContext context;
    Prepare(context, options_.timeout);
    grpc::Status status = stub_->stub->GetSegment(&context, get, &segment);
    if (!status.ok()) return Classify(status, "segments", what);
  }
  if (segment.archived()) return NotFound(what + " is archived");
  SegmentInfo info;
  info.owner_org = segment.org_id();
  info.version = std::max(segment.version(), segment.latest_version());
  if (segment.kind() == spb::SEGMENT_KIND_LIST) {
    info.size = segment.list_size();
    return info;
  }
  // Rule and composed segments have no stored size: count the current version, as its owner.
  spb::CountRequest count;
  count.set_org_id(segment.org_id());
  count.mutable_segment()->set_segment_id(segment_id);
  count.mutable_segment()->set_version(info.version);
  spb::CountResponse counted;
  grpc::ClientContext context;
  Prepare(context, options_.timeout);
  grpc::Status status = stub_->stub->Count(&context, count, &counted);
  if (!status.ok()) {
    // It existed a moment ago: a NOT_FOUND now is a race with nothing to report but "try again".
    if (status.error_code() == grpc::StatusCode::NOT_FOUND) {
      return Unavailable("segments cannot count " + what + " now: " + status.error_message());
    }
    return Classify(status, "segments", what);
  }
  info.size = counted.count();
  return info;
}

class GrpcBenefitCatalog::Stub {
 public:
  explicit Stub(std::shared_ptr<grpc::Channel> channel)
      : stub(rpb::Benefits::NewStub(std::move(channel))) {}
  std::unique_ptr<rpb::Benefits::Stub> stub;
};

GrpcBenefitCatalog::GrpcBenefitCatalog(std::shared_ptr<grpc::Channel> channel,
                                       RemoteReferenceOptions options, bool hide_retired,
                                       const Clock& clock)
    : stub_(std::make_unique<Stub>(std::move(channel))),
      options_(options),
      hide_retired_(hide_retired),
      clock_(clock) {}

GrpcBenefitCatalog::~GrpcBenefitCatalog() = default;

absl::StatusOr<BenefitInfo> GrpcBenefitCatalog::Lookup(std::string_view template_id) const {
  const absl::Time now = clock_.Now();
  std::optional<Cached> hit;
  bool refreshing = false;  // this call marked the stale entry as being fetched
  {
    absl::MutexLock lock(&mu_);
    auto it = cache_.find(template_id);
    if (it != cache_.end()) {
      if (Fresh(it->second.fetched_at, now, options_.cache_ttl) || it->second.refreshing) {
        hit = it->second;
      } else {
        it->second.refreshing = refreshing = true;
      }
    }
  }
  if (!hit) {
    std::string id(template_id);
    absl::StatusOr<Cached> fetched = Fetch(id);
    if (!fetched.ok()) {
      if (refreshing) {
        absl::MutexLock lock(&mu_);
        if (auto it = cache_.find(id); it != cache_.end()) it->second.refreshing = false;
      }
      return fetched.status();
    }
    fetched->fetched_at = now;
    if (options_.cache_ttl > absl::ZeroDuration()) {
      absl::MutexLock lock(&mu_);
      cache_[std::move(id)] = *fetched;
    }
    hit = *std::move(fetched);
  }
  if (hit->retired && hide_retired_) {
    return NotFound("benefit template '" + std::string(template_id) +
                    "' is retired and grants nothing new");
  }
  return hit->info;
}

absl::StatusOr<GrpcBenefitCatalog::Cached> GrpcBenefitCatalog::Fetch(
    const std::string& template_id) const {
  const std::string what = "benefit template '" + template_id + "'";
  if (template_id.empty()) return NotFound("unknown benefit template ''");
  rpb::GetTemplateRequest get;
  get.set_template_id(template_id);
  rpb::BenefitTemplate t;
  grpc::ClientContext context;
  Prepare(context, options_.timeout);
  grpc::Status status = stub_->stub->GetTemplate(&context, get, &t);
  if (!status.ok()) return Classify(status, "rewards", what);
  Cached out;
  out.info.owner_org = t.org_id();
  out.info.unit_cost_fen = t.unit_cost_fen();
  out.info.kind = KindOf(t.type());
  out.info.type = rpb::BenefitType_Name(t.type());
  out.retired = t.status() == rpb::TEMPLATE_RETIRED;
  return out;
}

}  // namespace mkt::campaigns
