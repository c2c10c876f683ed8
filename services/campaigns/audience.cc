#include "services/campaigns/audience.h"

#include <grpcpp/grpcpp.h>

#include <fstream>
#include <sstream>

#include "libs/core/status.h"
#include "libs/log/log.h"
#include "libs/rpc/client.h"
#include "libs/rpc/server.h"
#include "marketing/segments/v1/segments.grpc.pb.h"
#include "nlohmann/json.hpp"

namespace mkt::campaigns {

void InMemoryMembership::Add(const std::string& segment_id, const std::string& customer_id) {
  absl::MutexLock lock(&mu_);
  members_[segment_id].insert(customer_id);
}

void InMemoryMembership::SetOpen(const std::string& segment_id) {
  absl::MutexLock lock(&mu_);
  open_.insert(segment_id);
}

void InMemoryMembership::SetAllOpen(bool open) {
  absl::MutexLock lock(&mu_);
  all_open_ = open;
}

bool InMemoryMembership::IsMember(const std::string& segment_id,
                                  const std::string& customer_id) const {
  if (open_.count(segment_id) > 0) return true;
  auto it = members_.find(segment_id);
  if (it == members_.end()) return all_open_;
  return it->second.count(customer_id) > 0;
}

absl::StatusOr<bool> InMemoryMembership::InAudience(
    const std::string&, const std::string& customer_id,
    const ::marketing::campaigns::v1::Audience& audience) {
  absl::MutexLock lock(&mu_);
  for (const auto& s : audience.exclude()) {
    if (IsMember(s.segment_id(), customer_id)) return false;
  }
  for (const auto& s : audience.include()) {
    if (IsMember(s.segment_id(), customer_id)) return true;
  }
  return false;
}

absl::StatusOr<std::unique_ptr<InMemoryMembership>> LoadMembership(const std::string& path) {
  auto membership = std::make_unique<InMemoryMembership>();
  std::ifstream in(path);
  if (!in) return InvalidArgument("membership_file", "cannot read " + path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  try {
    auto json = nlohmann::json::parse(buffer.str());
    membership->SetAllOpen(json.value("open", false));
    if (!json.contains("segments")) return membership;
    const nlohmann::json& segments = json.at("segments");
    for (auto it = segments.begin(); it != segments.end(); ++it) {
      const std::string segment = it.key();
      const nlohmann::json& members = it.value();
      if (members.is_string() && members.get<std::string>() == "*") {
        membership->SetOpen(segment);
        continue;
      }
      for (const auto& c : members) membership->Add(segment, c.get<std::string>());
    }
  } catch (const std::exception& e) {
    return InvalidArgument("membership_file",
                           std::string("malformed membership file: ") + e.what());
  }
  return membership;
}

namespace {

namespace spb = ::marketing::segments::v1;

class SegmentsMembership final : public AudienceMembership {
 public:
  SegmentsMembership(std::shared_ptr<grpc::Channel> channel, absl::Duration timeout)
      : stub_(spb::Segments::NewStub(std::move(channel))), timeout_(timeout) {}

  absl::StatusOr<bool> InAudience(const std::string& campaign_org, const std::string& customer_id,
                                  const ::marketing::campaigns::v1::Audience& audience) override {
    spb::IsMemberRequest request;
    request.set_org_id(campaign_org);
    request.set_customer_id(customer_id);
    for (const auto* list : {&audience.include(), &audience.exclude()}) {
      for (const auto& s : *list) {
        auto* ref = request.add_segments();
        ref->set_segment_id(s.segment_id());
        ref->set_version(s.version());
      }
    }
    grpc::ClientContext context;
    rpc::PrepareClientContext(context, timeout_, log::CurrentRequestId());
    spb::IsMemberResponse response;
    grpc::Status status = stub_->IsMember(&context, request, &response);
    if (!status.ok()) return rpc::FromGrpcStatus(status);
    if (response.member_size() != request.segments_size()) {
      return Unavailable("segments answered " + std::to_string(response.member_size()) +
                         " memberships for " + std::to_string(request.segments_size()) +
                         " segments");
    }
    const int included = audience.include_size();
    for (int i = included; i < response.member_size(); ++i) {
      if (response.member(i)) return false;
    }
    for (int i = 0; i < included; ++i) {
      if (response.member(i)) return true;
    }
    return false;
  }

 private:
  std::unique_ptr<spb::Segments::Stub> stub_;
  const absl::Duration timeout_;
};

}  // namespace

std::unique_ptr<AudienceMembership> NewSegmentsMembership(std::shared_ptr<grpc::Channel> channel,
                                                          absl::Duration timeout) {
  return std::make_unique<SegmentsMembership>(std::move(channel), timeout);
}

}  // namespace mkt::campaigns
