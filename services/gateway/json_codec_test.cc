#include "services/gateway/json_codec.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "libs/core/status.h"
#include "marketing/campaigns/v1/campaigns.pb.h"
#include "marketing/gateway/v1/gateway.pb.h"
#include "marketing/segments/v1/segments.pb.h"

namespace mkt::gateway {
namespace {

namespace campaigns_pb = ::marketing::campaigns::v1;
namespace gw = ::marketing::gateway::v1;
using ::testing::HasSubstr;

TEST(JsonCodecTest, ParsesKnownFieldsByProtoOrJsonName) {
  gw::TrackingBatch batch;
  ASSERT_TRUE(
      ParseJsonInto(R"({"events":[{"customer_id":"c1","action":"CLICK","clientEventId":"e1"}]})",
                    &batch, 8)
          .ok());
  ASSERT_EQ(batch.events_size(), 1);
  EXPECT_EQ(batch.events(0).customer_id(), "c1");
  EXPECT_EQ(batch.events(0).action(), gw::CLICK);
  EXPECT_EQ(batch.events(0).client_event_id(), "e1");
}

TEST(JsonCodecTest, UnknownFieldIsInvalidArgumentNamingTheField) {
  gw::CreateSessionRequest request;
  absl::Status s = ParseJsonInto(R"({"operator_id":"a","pasword":"x"})", &request, 8);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FieldOf(s), "pasword");
  EXPECT_THAT(std::string(s.message()), HasSubstr("pasword"));

  campaigns_pb::CreateCampaignRequest nested;
  s = ParseJsonInto(R"({"config":{"name":"n","colour":"red"}})", &nested, 8);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(FieldOf(s), HasSubstr("colour"));
}

TEST(JsonCodecTest, WrongTypesAndMalformedJsonAreInvalidArgument) {
  gw::TrackingAccepted accepted;
  EXPECT_EQ(ParseJsonInto(R"({"accepted":"many"})", &accepted, 8).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseJsonInto(R"({"accepted":)", &accepted, 8).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseJsonInto(R"([1,2])", &accepted, 8).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseJsonInto("", &accepted, 8).code(), absl::StatusCode::kInvalidArgument);
}

TEST(JsonCodecTest, DepthLimitRefusesDeepNestingBeforeParsing) {
  std::string deep;
  for (int i = 0; i < 100; ++i) deep += "[";
  EXPECT_EQ(CheckJsonDepth(deep, 32).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(CheckJsonDepth(R"({"a":[{"b":"[[[[[[[[[[["}]})", 3).ok())
      << "brackets inside strings do not count";
  EXPECT_EQ(CheckJsonDepth(R"({"a":[{"b":[]}]})", 3).code(), absl::StatusCode::kInvalidArgument);
  gw::TrackingBatch batch;
  EXPECT_EQ(ParseJsonInto(R"({"events":[{"attributes":{}}]})", &batch, 2).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(JsonCodecTest, RenderUsesProtoNamesAndPrintsDefaults) {
  gw::Operator op;
  op.set_id("alice");
  const std::string json = RenderJson(op);
  EXPECT_THAT(json, HasSubstr(R"("id":"alice")"));
  EXPECT_THAT(json, HasSubstr(R"("failed_sign_ins":0)"));
  EXPECT_THAT(json, HasSubstr(R"("display_name":"")"));
}

TEST(JsonCodecTest, SetsFieldsFromTextByType) {
  campaigns_pb::SaveStepRequest save;
  ASSERT_TRUE(SetFieldFromText(&save, "campaign_id", "cmp_1", "campaign_id").ok());
  ASSERT_TRUE(SetFieldFromText(&save, "step", "STEP_AUDIENCE", "step").ok());
  ASSERT_TRUE(SetFieldFromText(&save, "expected_revision", "7", "r").ok());
  EXPECT_EQ(save.campaign_id(), "cmp_1");
  EXPECT_EQ(save.step(), campaigns_pb::STEP_AUDIENCE);
  EXPECT_EQ(save.expected_revision(), 7);
  absl::Status bad = SetFieldFromText(&save, "step", "STEP_NOPE", "step");
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FieldOf(bad), "step");
  EXPECT_EQ(SetFieldFromText(&save, "expected_revision", "x", "r").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SetFieldFromText(&save, "config", "x", "config").code(),
            absl::StatusCode::kInvalidArgument);

  campaigns_pb::ListCampaignsRequest list;
  ASSERT_TRUE(SetFieldFromText(&list, "states", "DRAFT", "states").ok());
  ASSERT_TRUE(SetFieldFromText(&list, "states", "ONLINE", "states").ok());
  ASSERT_TRUE(SetFieldFromText(&list, "page.page_size", "20", "page_size").ok());
  EXPECT_EQ(list.states_size(), 2);
  EXPECT_EQ(list.page().page_size(), 20);

  ::marketing::segments::v1::GetSegmentRequest get;
  ASSERT_TRUE(SetFieldFromText(&get, "segment.segment_id", "seg_1", "segment_id").ok());
  EXPECT_EQ(GetStringField(get, "segment.segment_id"), "seg_1");
}

TEST(JsonCodecTest, QueryParametersFlattenOneLevelAndSkipPathFields) {
  auto params = QueryParametersOf(campaigns_pb::ListCampaignsRequest::descriptor(), {});
  std::map<std::string, std::string> by_name;
  for (const auto& p : params) by_name[p.name] = p.field_path;
  EXPECT_EQ(by_name["org_id"], "org_id");
  EXPECT_EQ(by_name["states"], "states");
  EXPECT_EQ(by_name["page_size"], "page.page_size");
  EXPECT_EQ(by_name["page_token"], "page.page_token");

  auto get = QueryParametersOf(::marketing::segments::v1::GetSegmentRequest::descriptor(),
                               {"segment.segment_id"});
  ASSERT_EQ(get.size(), 1u);
  EXPECT_EQ(get[0].name, "version");
}

}  // namespace
}  // namespace mkt::gateway
