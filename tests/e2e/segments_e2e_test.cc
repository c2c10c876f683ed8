// mkt-segments as its own process on a fresh database and the real Kafka broker: a profile update
// published on the profile topic changes membership within 2 seconds; admin calls carry the actor
// as metadata and a member bank can neither read, list, use nor ask about another bank's tags and
// segments over gRPC; the process rebuilds its index from PostgreSQL after a restart.
#include <csignal>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "libs/core/ids.h"
#include "libs/core/status.h"
#include "libs/kafka/kafka.h"
#include "libs/kafka/outbox.h"
#include "libs/rpc/actor.h"
#include "libs/rpc/client.h"
#include "libs/rpc/server.h"
#include "libs/testing/testing.h"
#include "marketing/segments/v1/segments.grpc.pb.h"

namespace mkt {
namespace {

namespace pb = ::marketing::segments::v1;

tenancy::Actor Operator(const std::string& org) {
  return {.org_id = org, .operator_id = "op-" + org, .roles = {tenancy::Role::kAdmin}};
}

pb::SegmentRef Ref(const std::string& id, int64_t version = 0) {
  pb::SegmentRef r;
  r.set_segment_id(id);
  r.set_version(version);
  return r;
}

class SegmentsProcess {
 public:
  SegmentsProcess(std::string dsn, std::string profiles_topic)
      : dsn_(std::move(dsn)),
        profiles_topic_(std::move(profiles_topic)),
        port_(testing::FreePort()),
        log_(::testing::TempDir() + "segments_e2e_" + RandomHex(4) + ".log") {}

  bool Start() {
    std::map<std::string, std::string> env = {
        {"MKT_SEGMENTS_PG_DSN", dsn_},
        {"MKT_SEGMENTS_KAFKA_BOOTSTRAP", testing::KafkaBootstrap()},
        {"MKT_SEGMENTS_GRPC_ADDRESS", absl::StrCat("127.0.0.1:", port_)},
        {"MKT_SEGMENTS_METRICS_ADDRESS", absl::StrCat("127.0.0.1:", testing::FreePort())},
        {"MKT_SEGMENTS_PROFILES_TOPIC", profiles_topic_},
        {"MKT_SEGMENTS_BUSINESS_EVENTS_TOPIC", ""},
        {"MKT_SEGMENTS_DEAD_LETTER_TOPIC", profiles_topic_ + ".dead"},
        {"MKT_SEGMENTS_REPLICA_ID", "e2e-" + RandomHex(4)},
        {"MKT_SEGMENTS_RFM_INTERVAL_S", "0"},
        {"MKT_SEGMENTS_LOG_FORMAT", "json"},
    };
    process_ = std::make_unique<testing::ChildProcess>(
        std::vector<std::string>{testing::BinDir() + "/services/segments/mkt-segments"}, env, log_);
    auto channel = rpc::Connect(target());
    if (!testing::WaitForPort(port_, absl::Seconds(60)) ||
        !testing::WaitForGrpcHealth(channel, absl::Seconds(30))) {
      ADD_FAILURE() << "mkt-segments did not start; its log:\n" << testing::Tail(log_, 40);
      return false;
    }
    stub_ = pb::Segments::NewStub(channel);
    return true;
  }

  void Stop() {
    if (!process_) return;
    EXPECT_EQ(process_->Kill(SIGTERM), 0) << "mkt-segments did not exit 0 on SIGTERM";
    process_.reset();
  }

  std::string target() const { return absl::StrCat("127.0.0.1:", port_); }
  pb::Segments::Stub& stub() { return *stub_; }
  std::string LogTail() const { return testing::Tail(log_, 30); }

 private:
  std::string dsn_;
  std::string profiles_topic_;
  int port_;
  std::string log_;
  std::unique_ptr<testing::ChildProcess> process_;
  std::unique_ptr<pb::Segments::Stub> stub_;
};

// Calls `method` on the stub with `actor` (if any) attached; returns the status.
template <class Req, class Resp, class Method>
absl::Status Call(SegmentsProcess& p, Method method, const Req& req, Resp* resp,
                  const tenancy::Actor* actor) {
  grpc::ClientContext ctx;
  rpc::PrepareClientContext(ctx, absl::Seconds(10), NewRequestId());
  if (actor != nullptr) rpc::AttachActor(ctx, *actor);
  return rpc::FromGrpcStatus((p.stub().*method)(&ctx, req, resp));
}

class SegmentsE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    topic_ = testing::NewTopic("segments-e2e-profiles", 3);
    process_ = std::make_unique<SegmentsProcess>(db_.dsn(), topic_);
    ASSERT_TRUE(process_->Start());
    auto producer =
        kafka::Producer::Create({.bootstrap_servers = testing::KafkaBootstrap(), .client_id = "t"});
    ASSERT_TRUE(producer.ok()) << producer.status();
    producer_ = *std::move(producer);
  }
  void TearDown() override {
    if (process_) process_->Stop();
  }

  void PublishProfile(const std::string& customer, const std::string& org, int64_t age,
                      int64_t version) {
    pb::CustomerProfileChanged p;
    p.set_customer_id(customer);
    p.set_org_id(org);
    p.set_version(version);
    auto* v = p.add_set_values();
    v->set_tag("age");
    v->set_int_value(age);
    auto envelope = kafka::MakeEnvelope("segments.CustomerProfileChanged", org, "e2e", p);
    ASSERT_TRUE(producer_
                    ->Publish({{.topic = topic_,
                                .key = customer,
                                .value = envelope.SerializeAsString(),
                                .headers = {{"event_id", envelope.event_id()}}}},
                              absl::Seconds(10))
                    .ok());
  }

  std::string CreateSegment(const std::string& org, const pb::Condition& rule) {
    pb::CreateSegmentRequest req;
    req.set_name("e2e");
    *req.mutable_definition()->mutable_rule() = rule;
    pb::Segment seg;
    tenancy::Actor actor = Operator(org);
    absl::Status s = Call(*process_, &pb::Segments::Stub::CreateSegment, req, &seg, &actor);
    EXPECT_TRUE(s.ok()) << s;
    return seg.id();
  }

  absl::StatusOr<bool> IsMember(const std::string& org, const std::string& customer,
                                const std::string& segment) {
    pb::IsMemberRequest req;
    req.set_org_id(org);
    req.set_customer_id(customer);
    *req.add_segments() = Ref(segment);
    pb::IsMemberResponse resp;
    MKT_RETURN_IF_ERROR(Call(*process_, &pb::Segments::Stub::IsMember, req, &resp, nullptr));
    return resp.member(0);
  }

  // Polls until `customer`'s membership is `want`; returns how long it took, or nullopt.
  std::optional<absl::Duration> WaitForMembership(const std::string& org,
                                                  const std::string& customer,
                                                  const std::string& segment, bool want,
                                                  absl::Duration timeout) {
    const absl::Time start = absl::Now();
    while (absl::Now() - start < timeout) {
      absl::StatusOr<bool> m = IsMember(org, customer, segment);
      if (m.ok() && *m == want) return absl::Now() - start;
      absl::SleepFor(absl::Milliseconds(10));
    }
    return std::nullopt;
  }

  testing::TestDatabase db_;
  std::string topic_;
  std::unique_ptr<SegmentsProcess> process_;
  std::unique_ptr<kafka::Producer> producer_;
};

pb::Condition AgeAtLeast(int64_t age) {
  pb::Condition c;
  c.mutable_compare()->set_tag("age");
  c.mutable_compare()->set_op(pb::GE);
  c.mutable_compare()->mutable_value()->set_int_value(age);
  return c;
}

TEST_F(SegmentsE2eTest, AProfileUpdateOnKafkaChangesMembershipWithinTwoSeconds) {
  const std::string seg = CreateSegment("bank-a", AgeAtLeast(30));
  // Warm-up: the consumer joins its group and reads the topic from the start.
  PublishProfile("p-1", "bank-a", 25, 1);
  ASSERT_TRUE(WaitForMembership("bank-a", "p-1", seg, false, absl::Seconds(30)))
      << process_->LogTail();
  absl::StatusOr<bool> before = IsMember("bank-a", "p-1", seg);
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_FALSE(*before);

  for (int round = 0; round < 3; ++round) {
    const bool want = round % 2 == 0;
    PublishProfile("p-1", "bank-a", want ? 45 : 20, 2 + round);
    std::optional<absl::Duration> took =
        WaitForMembership("bank-a", "p-1", seg, want, absl::Seconds(2));
    ASSERT_TRUE(took.has_value()) << "membership did not change within 2 s (round " << round
                                  << ")\n"
                                  << process_->LogTail();
    std::cout << "round " << round << ": membership changed after " << absl::FormatDuration(*took)
              << "\n";
  }
  // A new customer appearing on the topic.
  PublishProfile("p-2", "bank-a", 60, 1);
  EXPECT_TRUE(WaitForMembership("bank-a", "p-2", seg, true, absl::Seconds(2)));

  // After a restart the index is rebuilt from PostgreSQL.
  process_->Stop();
  process_ = std::make_unique<SegmentsProcess>(db_.dsn(), topic_);
  ASSERT_TRUE(process_->Start());
  EXPECT_EQ(*IsMember("bank-a", "p-2", seg), true);
  EXPECT_EQ(*IsMember("bank-a", "p-1", seg), true);  // round 2 left p-1 at 45
}

TEST_F(SegmentsE2eTest, TenantIsolationOverGrpc) {
  const tenancy::Actor bank_a = Operator("bank-a"), bank_b = Operator("bank-b"),
                       fed = Operator("fed");
  pb::CreateTagRequest tag_req;
  tag_req.mutable_tag()->set_name("bank_a_level");
  tag_req.mutable_tag()->set_type(pb::TAG_TYPE_ENUM);
  tag_req.mutable_tag()->add_allowed_values("vip");
  tag_req.mutable_tag()->add_allowed_values("normal");
  pb::Tag tag;
  ASSERT_TRUE(Call(*process_, &pb::Segments::Stub::CreateTag, tag_req, &tag, &bank_a).ok());
  // Without an actor, admin calls are refused.
  EXPECT_EQ(Call(*process_, &pb::Segments::Stub::CreateTag, tag_req, &tag, nullptr).code(),
            absl::StatusCode::kUnauthenticated);

  pb::ImportTagValuesRequest import;
  import.set_csv("customer_id,bank_a_level\na-1,vip\na-2,normal\n");
  pb::ImportTagValuesResponse imported;
  ASSERT_TRUE(
      Call(*process_, &pb::Segments::Stub::ImportTagValues, import, &imported, &bank_a).ok());
  EXPECT_EQ(imported.rows_imported(), 2);
  import.set_csv("customer_id\nb-1\n");
  ASSERT_TRUE(
      Call(*process_, &pb::Segments::Stub::ImportTagValues, import, &imported, &bank_b).ok());

  pb::Condition vip;
  vip.mutable_compare()->set_tag("bank_a_level");
  vip.mutable_compare()->set_op(pb::EQ);
  vip.mutable_compare()->mutable_value()->set_enum_value("vip");
  const std::string seg_a = CreateSegment("bank-a", vip);
  const std::string seg_fed = CreateSegment("fed", AgeAtLeast(0));

  // Read.
  pb::GetTagRequest get_tag;
  get_tag.set_name("bank_a_level");
  EXPECT_EQ(Call(*process_, &pb::Segments::Stub::GetTag, get_tag, &tag, &bank_b).code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(Call(*process_, &pb::Segments::Stub::GetTag, get_tag, &tag, &fed).ok());
  pb::GetSegmentRequest get_seg;
  *get_seg.mutable_segment() = Ref(seg_a);
  pb::Segment seg;
  EXPECT_EQ(Call(*process_, &pb::Segments::Stub::GetSegment, get_seg, &seg, &bank_b).code(),
            absl::StatusCode::kNotFound);
  *get_seg.mutable_segment() = Ref(seg_fed);
  EXPECT_TRUE(Call(*process_, &pb::Segments::Stub::GetSegment, get_seg, &seg, &bank_b).ok());
  // List.
  pb::ListSegmentsResponse list;
  ASSERT_TRUE(
      Call(*process_, &pb::Segments::Stub::ListSegments, pb::ListSegmentsRequest(), &list, &bank_b)
          .ok());
  ASSERT_EQ(list.segments_size(), 1);
  EXPECT_EQ(list.segments(0).id(), seg_fed);
  pb::ListTagsResponse tags;
  ASSERT_TRUE(
      Call(*process_, &pb::Segments::Stub::ListTags, pb::ListTagsRequest(), &tags, &bank_b).ok());
  for (const auto& t : tags.tags()) EXPECT_NE(t.name(), "bank_a_level");
  // Use in a rule.
  pb::CreateSegmentRequest steal;
  steal.set_name("steal");
  *steal.mutable_definition()->mutable_rule() = vip;
  EXPECT_EQ(Call(*process_, &pb::Segments::Stub::CreateSegment, steal, &seg, &bank_b).code(),
            absl::StatusCode::kInvalidArgument);
  // Is-member.
  EXPECT_EQ(*IsMember("bank-a", "a-1", seg_a), true);
  EXPECT_EQ(*IsMember("bank-a", "a-2", seg_a), false);
  EXPECT_EQ(IsMember("bank-b", "a-1", seg_a).status().code(), absl::StatusCode::kNotFound);
  pb::CountRequest count;
  count.set_org_id("bank-b");
  *count.mutable_segment() = Ref(seg_a);
  pb::CountResponse counted;
  EXPECT_EQ(Call(*process_, &pb::Segments::Stub::Count, count, &counted, nullptr).code(),
            absl::StatusCode::kNotFound);
  // A batch over customers of both banks answers only for the asking bank's customers.
  pb::BatchIsMemberRequest batch;
  batch.set_org_id("bank-a");
  batch.add_customer_ids("a-1");
  batch.add_customer_ids("b-1");
  *batch.add_segments() = Ref(seg_a);
  pb::BatchIsMemberResponse rows;
  ASSERT_TRUE(Call(*process_, &pb::Segments::Stub::BatchIsMember, batch, &rows, nullptr).ok());
  ASSERT_EQ(rows.rows_size(), 2);
  EXPECT_TRUE(rows.rows(0).member(0));
  EXPECT_FALSE(rows.rows(1).member(0));
}

}  // namespace
}  // namespace mkt
