#include "services/events/segments_client.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "libs/core/status.h"
#include "libs/log/log.h"
#include "libs/metrics/metrics.h"
#include "libs/rpc/client.h"
#include "libs/rpc/server.h"
#include "libs/tenancy/tenancy.h"
#include "marketing/segments/v1/segments.grpc.pb.h"
#include "spdlog/spdlog.h"

namespace mkt::events {
namespace {

namespace spb = ::marketing::segments::v1;

// The segments service's limits per BatchGetTagValues call.
constexpr size_t kCustomersPerCall = 1000;
constexpr size_t kTagsPerCall = 64;

metrics::OperationMetrics& SegmentsCallMetrics() {
  static auto* m = new metrics::OperationMetrics(
      "mkt_events_segments_call", "Calls of the events service to the segments service");
  return *m;
}

// One call of `method`, bounded by `timeout`, counted in the segments call metrics; a failure's
// message names the segments service.
template <class Request, class Response>
absl::Status CallSegments(spb::Segments::Stub& stub, absl::Duration timeout, const char* name,
                          grpc::Status (spb::Segments::Stub::*method)(grpc::ClientContext*,
                                                                      const Request&, Response*),
                          const Request& request, Response& response) {
  grpc::ClientContext context;
  rpc::PrepareClientContext(context, timeout, log::CurrentRequestId());
  const absl::Time start = absl::Now();
  const absl::Status result = rpc::FromGrpcStatus((stub.*method)(&context, request, &response));
  SegmentsCallMetrics().Record(name, result.ok() ? "" : absl::StatusCodeToString(result.code()),
                               absl::ToDoubleSeconds(absl::Now() - start));
  if (result.ok()) return result;
  return absl::Status(result.code(), absl::StrCat("segments service: ", result.message()));
}

// A name the segments service could hold ([a-z][a-z0-9_]{0,63}); `customer.tag("Age")` names no
// tag, so it is never asked for (and stays missing) rather than failing the call.
bool CouldBeTagName(const std::string& name) {
  if (name.empty() || name.size() > 64 || name[0] < 'a' || name[0] > 'z') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

// The value as conditions compare it; a multi-valued enum (a set) has no scalar form and stays
// missing (audiences test sets, decision 032).
std::optional<TagValue> FromProto(const spb::TagValue& v) {
  switch (v.value_case()) {
    case spb::TagValue::kBoolValue:
      return TagValue::Bool(v.bool_value());
    case spb::TagValue::kEnumValue:
      return TagValue::Text(v.enum_value());
    case spb::TagValue::kIntValue:
      return TagValue::Number(v.int_value());
    case spb::TagValue::kDateValue:
      return TagValue::Text(v.date_value());
    default:
      return std::nullopt;
  }
}

class SegmentTags final : public CustomerTags {
 public:
  SegmentTags(std::shared_ptr<grpc::Channel> channel, absl::Duration timeout)
      : stub_(spb::Segments::NewStub(std::move(channel))), timeout_(timeout) {}

  absl::Status Fetch(const TagQueries& queries, TagSnapshot& into) const override {
    for (const auto& [org, query] : queries) {
      // An org id the segments service would refuse has no customers there.
      if (!tenancy::IsValidOrgId(org)) continue;
      std::vector<std::string> tags;
      for (const std::string& t : query.tags) {
        if (CouldBeTagName(t)) tags.push_back(t);
      }
      if (tags.empty()) continue;
      const std::vector<std::string> customers(query.customers.begin(), query.customers.end());
      for (size_t c = 0; c < customers.size(); c += kCustomersPerCall) {
        for (size_t t = 0; t < tags.size(); t += kTagsPerCall) {
          spb::BatchGetTagValuesRequest request;
          request.set_org_id(org);
          for (size_t i = c; i < std::min(customers.size(), c + kCustomersPerCall); ++i) {
            request.add_customer_ids(customers[i]);
          }
          for (size_t i = t; i < std::min(tags.size(), t + kTagsPerCall); ++i) {
            request.add_tags(tags[i]);
          }
          MKT_RETURN_IF_ERROR(Call(request, into));
        }
      }
    }
    return absl::OkStatus();
  }

 private:
  absl::Status Call(const spb::BatchGetTagValuesRequest& request, TagSnapshot& into) const {
    spb::BatchGetTagValuesResponse response;
    MKT_RETURN_IF_ERROR(CallSegments(*stub_, timeout_, "BatchGetTagValues",
                                     &spb::Segments::Stub::BatchGetTagValues, request, response));
    for (const auto& row : response.rows()) {
      for (const auto& v : row.values()) {
        if (std::optional<TagValue> value = FromProto(v)) {
          into.Put(request.org_id(), row.customer_id(), v.tag(), *std::move(value));
        }
      }
    }
    return absl::OkStatus();
  }

  std::unique_ptr<spb::Segments::Stub> stub_;
  const absl::Duration timeout_;
};

// Whether the status means "nobody could answer now" (retry the batch) rather than "this audience
// cannot be answered" (a segment gone since approval).
bool Transient(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kFailedPrecondition:
      return false;
    default:
      return true;
  }
}

class SegmentAudiences final : public Audiences {
 public:
  SegmentAudiences(std::shared_ptr<grpc::Channel> channel, absl::Duration timeout)
      : stub_(spb::Segments::NewStub(std::move(channel))), timeout_(timeout) {}

  absl::Status Fetch(const AudienceQueries& queries, AudienceSnapshot& into) const override {
    for (const auto& [key, query] : queries) {
      const std::vector<std::string> customers(query.customers.begin(), query.customers.end());
      for (size_t c = 0; c < customers.size(); c += kCustomersPerCall) {
        spb::BatchIsMemberRequest request;
        request.set_org_id(query.org_id);
        for (size_t i = c; i < std::min(customers.size(), c + kCustomersPerCall); ++i) {
          request.add_customer_ids(customers[i]);
        }
        for (const auto* list : {&query.audience.include(), &query.audience.exclude()}) {
          for (const auto& ref : *list) {
            spb::SegmentRef* r = request.add_segments();
            r->set_segment_id(ref.segment_id());
            r->set_version(ref.version());
          }
        }
        spb::BatchIsMemberResponse response;
        const absl::Status status =
            CallSegments(*stub_, timeout_, "BatchIsMember", &spb::Segments::Stub::BatchIsMember,
                         request, response);
        if (!status.ok()) {
          if (Transient(status.code())) return status;
          // Left unknown: nobody in this audience is rewarded until it can be answered.
          spdlog::warn(
              "events: audience {} of org {} cannot be resolved, its rules reward nobody: {}", key,
              query.org_id, status.message());
          break;
        }
        const int included = query.audience.include_size();
        for (const auto& row : response.rows()) {
          if (row.member_size() != request.segments_size()) {
            return absl::UnavailableError("segments answered a row of the wrong size");
          }
          bool in = included == 0;
          for (int i = 0; i < included; ++i) in = in || row.member(i);
          for (int i = included; i < row.member_size(); ++i) in = in && !row.member(i);
          into.Put(key, row.customer_id(), in);
        }
      }
    }
    return absl::OkStatus();
  }

 private:
  std::unique_ptr<spb::Segments::Stub> stub_;
  const absl::Duration timeout_;
};

}  // namespace

std::unique_ptr<Audiences> NewSegmentAudiences(std::shared_ptr<grpc::Channel> channel,
                                               absl::Duration timeout) {
  return std::make_unique<SegmentAudiences>(std::move(channel), timeout);
}

std::unique_ptr<CustomerTags> NewSegmentTags(std::shared_ptr<grpc::Channel> channel,
                                             absl::Duration timeout) {
  return std::make_unique<SegmentTags>(std::move(channel), timeout);
}

}  // namespace mkt::events
