// For tests of the campaigns service: a client of its gRPC API (one call per method, acting as a
// given operator, statuses turned back into absl::Status with reason and field) and a reader of
// the change topic.
#pragma once

#include <librdkafka/rdkafkacpp.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "libs/core/ids.h"
#include "libs/core/status.h"
#include "libs/rpc/actor.h"
#include "libs/rpc/client.h"
#include "libs/rpc/server.h"
#include "libs/tenancy/tenancy.h"
#include "libs/testing/testing.h"
#include "marketing/campaigns/v1/campaigns.grpc.pb.h"
#include "marketing/common/v1/envelope.pb.h"
#include "services/campaigns/pg_campaign_store.h"

namespace mkt::campaigns::test {

namespace pb = ::marketing::campaigns::v1;

class CampaignsClient {
 public:
  explicit CampaignsClient(const std::string& target)
      : stub_(pb::Campaigns::NewStub(rpc::Connect(target))) {}

  template <class Request, class Response>
  using Method = grpc::Status (pb::Campaigns::Stub::*)(grpc::ClientContext*, const Request&,
                                                       Response*);

  template <class Request, class Response>
  absl::StatusOr<Response> Call(const tenancy::Actor& actor, Method<Request, Response> method,
                                const Request& request) {
    grpc::ClientContext context;
    rpc::PrepareClientContext(context, absl::Seconds(20), "");
    rpc::AttachActor(context, actor);
    Response response;
    grpc::Status status = (stub_.get()->*method)(&context, request, &response);
    if (!status.ok()) return rpc::FromGrpcStatus(status);
    return response;
  }

  absl::StatusOr<pb::Org> CreateOrg(const tenancy::Actor& a, const std::string& id,
                                    const std::string& name) {
    pb::CreateOrgRequest r;
    r.set_id(id);
    r.set_display_name(name);
    r.set_region("north");
    return Call(a, &pb::Campaigns::Stub::CreateOrg, r);
  }
  absl::StatusOr<pb::Campaign> Create(const tenancy::Actor& a, const pb::CampaignConfig& config,
                                      const std::string& org_id = "") {
    pb::CreateCampaignRequest r;
    r.set_org_id(org_id);
    *r.mutable_config() = config;
    return Call(a, &pb::Campaigns::Stub::CreateCampaign, r);
  }
  absl::StatusOr<pb::Campaign> SaveStep(const tenancy::Actor& a, const std::string& id,
                                        pb::Step step, const pb::CampaignConfig& config,
                                        int64_t revision) {
    pb::SaveStepRequest r;
    r.set_campaign_id(id);
    r.set_step(step);
    *r.mutable_config() = config;
    r.set_expected_revision(revision);
    return Call(a, &pb::Campaigns::Stub::SaveStep, r);
  }
  absl::StatusOr<pb::Campaign> Get(const tenancy::Actor& a, const std::string& id) {
    pb::GetCampaignRequest r;
    r.set_campaign_id(id);
    return Call(a, &pb::Campaigns::Stub::GetCampaign, r);
  }
  absl::StatusOr<pb::ListCampaignsResponse> List(const tenancy::Actor& a,
                                                 std::vector<pb::CampaignState> states = {}) {
    pb::ListCampaignsRequest r;
    for (auto s : states) r.add_states(s);
    r.mutable_page()->set_page_size(500);
    return Call(a, &pb::Campaigns::Stub::ListCampaigns, r);
  }
  absl::StatusOr<pb::ValidateCampaignResponse> Validate(const tenancy::Actor& a,
                                                        const std::string& id) {
    pb::ValidateCampaignRequest r;
    r.set_campaign_id(id);
    return Call(a, &pb::Campaigns::Stub::ValidateCampaign, r);
  }
  absl::StatusOr<pb::ListVersionsResponse> Versions(const tenancy::Actor& a,
                                                    const std::string& id) {
    pb::ListVersionsRequest r;
    r.set_campaign_id(id);
    return Call(a, &pb::Campaigns::Stub::ListVersions, r);
  }

  using ActMethod = Method<pb::CampaignActionRequest, pb::Campaign>;
  absl::StatusOr<pb::Campaign> Act(const tenancy::Actor& a, ActMethod method, const std::string& id,
                                   const std::string& comment = "", int64_t expected_revision = 0) {
    pb::CampaignActionRequest r;
    r.set_campaign_id(id);
    r.set_comment(comment);
    r.set_expected_revision(expected_revision);
    return Call(a, method, r);
  }
  absl::StatusOr<pb::Campaign> Submit(const tenancy::Actor& a, const std::string& id) {
    return Act(a, &pb::Campaigns::Stub::SubmitCampaign, id);
  }
  absl::StatusOr<pb::Campaign> Approve(const tenancy::Actor& a, const std::string& id) {
    return Act(a, &pb::Campaigns::Stub::ApproveCampaign, id);
  }
  absl::StatusOr<pb::Campaign> Reject(const tenancy::Actor& a, const std::string& id,
                                      const std::string& why) {
    return Act(a, &pb::Campaigns::Stub::RejectCampaign, id, why);
  }
  absl::StatusOr<pb::Campaign> Publish(const tenancy::Actor& a, const std::string& id) {
    return Act(a, &pb::Campaigns::Stub::PublishCampaign, id);
  }
  absl::StatusOr<pb::Campaign> Pause(const tenancy::Actor& a, const std::string& id) {
    return Act(a, &pb::Campaigns::Stub::PauseCampaign, id);
  }
  absl::StatusOr<pb::Campaign> Resume(const tenancy::Actor& a, const std::string& id) {
    return Act(a, &pb::Campaigns::Stub::ResumeCampaign, id);
  }
  absl::StatusOr<pb::Campaign> End(const tenancy::Actor& a, const std::string& id) {
    return Act(a, &pb::Campaigns::Stub::EndCampaign, id);
  }
  absl::StatusOr<pb::Campaign> Archive(const tenancy::Actor& a, const std::string& id) {
    return Act(a, &pb::Campaigns::Stub::ArchiveCampaign, id);
  }
  absl::StatusOr<pb::Template> SaveAsTemplate(const tenancy::Actor& a, const std::string& id,
                                              const std::string& name) {
    pb::SaveAsTemplateRequest r;
    r.set_campaign_id(id);
    r.set_name(name);
    return Call(a, &pb::Campaigns::Stub::SaveAsTemplate, r);
  }
  absl::StatusOr<pb::ListTemplatesResponse> ListTemplates(const tenancy::Actor& a) {
    pb::ListTemplatesRequest r;
    return Call(a, &pb::Campaigns::Stub::ListTemplates, r);
  }
  absl::StatusOr<pb::Campaign> FromTemplate(const tenancy::Actor& a, const std::string& template_id,
                                            const std::string& name = "") {
    pb::CreateFromTemplateRequest r;
    r.set_template_id(template_id);
    r.set_name(name);
    return Call(a, &pb::Campaigns::Stub::CreateFromTemplate, r);
  }
  absl::StatusOr<pb::Campaign> Copy(const tenancy::Actor& a, const std::string& source_id) {
    pb::CopyCampaignRequest r;
    r.set_source_campaign_id(source_id);
    return Call(a, &pb::Campaigns::Stub::CopyCampaign, r);
  }
  absl::StatusOr<pb::ListAuditResponse> Audit(const tenancy::Actor& a,
                                              const std::string& campaign_id,
                                              const std::string& actor_operator = "") {
    pb::ListAuditRequest r;
    r.set_campaign_id(campaign_id);
    r.set_actor_operator(actor_operator);
    r.mutable_page()->set_page_size(500);
    return Call(a, &pb::Campaigns::Stub::ListAudit, r);
  }

 private:
  std::unique_ptr<pb::Campaigns::Stub> stub_;
};

// Reads mkt.campaign-changes.v1 from the offsets at `since` until it has been quiet for a second
// (or `timeout`), and returns the envelopes of the given orgs.
inline std::vector<::marketing::common::v1::Envelope> ReadChanges(const std::set<std::string>& orgs,
                                                                  absl::Time since, size_t at_least,
                                                                  absl::Duration timeout) {
  std::vector<::marketing::common::v1::Envelope> out;
  std::string error;
  std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
  for (const auto& [k, v] :
       std::map<std::string, std::string>{{"bootstrap.servers", testing::KafkaBootstrap()},
                                          {"group.id", "campaigns-it-" + RandomHex(6)},
                                          {"enable.auto.commit", "false"},
                                          {"enable.partition.eof", "true"}}) {
    if (conf->set(k, v, error) != RdKafka::Conf::CONF_OK) ADD_FAILURE() << k << ": " << error;
  }
  std::unique_ptr<RdKafka::KafkaConsumer> consumer(
      RdKafka::KafkaConsumer::create(conf.get(), error));
  if (!consumer) {
    ADD_FAILURE() << error;
    return out;
  }
  std::unique_ptr<RdKafka::Topic> topic(
      RdKafka::Topic::create(consumer.get(), kCampaignChangesTopic, nullptr, error));
  RdKafka::Metadata* raw = nullptr;
  if (consumer->metadata(false, topic.get(), &raw, 10000) != RdKafka::ERR_NO_ERROR) {
    ADD_FAILURE() << "no metadata for " << kCampaignChangesTopic;
    return out;
  }
  std::unique_ptr<RdKafka::Metadata> metadata(raw);
  std::vector<RdKafka::TopicPartition*> partitions;
  for (const auto* t : *metadata->topics()) {
    if (t->topic() != kCampaignChangesTopic) continue;
    for (const auto* p : *t->partitions()) {
      partitions.push_back(RdKafka::TopicPartition::create(kCampaignChangesTopic, p->id(),
                                                           absl::ToUnixMillis(since)));
    }
  }
  consumer->offsetsForTimes(partitions, 10000);
  for (auto* p : partitions) {
    if (p->offset() < 0) p->set_offset(RdKafka::Topic::OFFSET_END);
  }
  consumer->assign(partitions);
  const size_t partition_count = partitions.size();
  RdKafka::TopicPartition::destroy(partitions);
  std::set<int32_t> at_end;
  absl::Time last = absl::Now();
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    std::unique_ptr<RdKafka::Message> m(consumer->consume(200));
    if (m->err() == RdKafka::ERR__PARTITION_EOF) {
      at_end.insert(m->partition());
    } else if (m->err() == RdKafka::ERR_NO_ERROR) {
      at_end.erase(m->partition());
      last = absl::Now();
      ::marketing::common::v1::Envelope envelope;
      if (envelope.ParseFromArray(m->payload(), static_cast<int>(m->len())) &&
          orgs.count(envelope.org_id()) > 0) {
        out.push_back(std::move(envelope));
      }
    }
    if (out.size() >= at_least && at_end.size() == partition_count &&
        absl::Now() - last > absl::Seconds(1)) {
      break;
    }
  }
  consumer->close();
  return out;
}

}  // namespace mkt::campaigns::test
