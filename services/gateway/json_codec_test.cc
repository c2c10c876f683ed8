#include "services/gateway/json_codec.h"

#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "libs/core/status.h"
#include "marketing/campaigns/v1/campaigns.pb.h"
#include "marketing/campaigns/v1/participation.pb.h"
#include "marketing/gateway/v1/gateway.pb.h"
#include "marketing/rewards/v1/benefits.pb.h"
#include "marketing/rewards/v1/ledger.pb.h"
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

// Only strict JSON: what protobuf's lenient parser alone would take (a trailing comma, single
// quotes, a bare key) is refused, with the place named and none of the client's bytes echoed.
TEST(JsonCodecTest, OnlyStrictJsonIsAccepted) {
  for (const char* lenient :
       {R"({"id":"bob","roles":["admin"],})", R"({'id':'bob'})", R"({id:"bob"})",
        R"({"id":"bob"} trailing)", "{\"id\":\"\xff\xfe\"x}"}) {
    gw::UpdateOperatorRequest update;
    absl::Status s = ParseJsonInto(lenient, &update, 8);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << lenient;
    EXPECT_EQ(FieldOf(s), "body") << s;
    EXPECT_NE(s.message().find("not valid JSON: parse error at line 1, column"), std::string::npos)
        << s;
    EXPECT_EQ(s.message().find("last read"), std::string::npos) << s;
    EXPECT_EQ(s.message().find("json.exception"), std::string::npos) << s;
    EXPECT_TRUE(update.id().empty()) << lenient;
  }
  // A number beyond a double is a client's mistake too (it threw out_of_range, a 500).
  gw::TrackingAccepted accepted;
  const absl::Status huge = ParseJsonInto(R"({"accepted":1e400})", &accepted, 8);
  EXPECT_EQ(huge.code(), absl::StatusCode::kInvalidArgument) << huge;
  EXPECT_EQ(FieldOf(huge), "body") << huge;
}

// A value of a kind its field cannot take is refused in the API's words, naming the field and
// both kinds; and protobuf's parser refuses every one of these bodies too, so the screen changes
// the message, never what is accepted.
TEST(JsonCodecTest, AValueOfTheWrongKindIsNamedInPlainWords) {
  struct Case {
    std::string body;
    std::string field;
    std::string message;
  };
  auto check = [](const ::google::protobuf::Message& prototype, const std::vector<Case>& cases) {
    for (const Case& c : cases) {
      std::unique_ptr<::google::protobuf::Message> m(prototype.New());
      const absl::Status s = ParseJsonInto(c.body, m.get(), 8);
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.body;
      EXPECT_EQ(FieldOf(s), c.field) << c.body;
      EXPECT_EQ(std::string(s.message()), c.message) << c.body;
      std::unique_ptr<::google::protobuf::Message> theirs(prototype.New());
      ::google::protobuf::util::JsonParseOptions options;
      EXPECT_FALSE(
          ::google::protobuf::util::JsonStringToMessage(c.body, theirs.get(), options).ok())
          << "protobuf accepts " << c.body;
    }
  };
  check(
      campaigns_pb::ListEligibleRequest::default_instance(),
      {{R"({"customer_id":["c1"]})", "customer_id", "customer_id: expected a string, got an array"},
       {R"({"customer_id":{"a":1}})", "customer_id",
        "customer_id: expected a string, got an object"},
       {R"({"customer_id":7})", "customer_id", "customer_id: expected a string, got a number"},
       {R"({"customer_id":false})", "customer_id",
        "customer_id: expected a string, got true or false"},
       {R"({"explain":[true]})", "explain", "explain: expected true or false, got an array"}});
  check(campaigns_pb::CreateCampaignRequest::default_instance(),
        {{R"({"config":"c"})", "config", "config: expected an object, got a string"},
         {R"({"config":{"priority":true}})", "config.priority",
          "config.priority: expected a number, got true or false"},
         {R"({"config":{"limits":{"global_total":{}}}})", "config.limits.global_total",
          "config.limits.global_total: expected a number, got an object"},
         {R"({"config":{"prizes":["p"]}})", "config.prizes[0]",
          "config.prizes[0]: expected an object, got a string"},
         {R"({"config":{"prizes":[{"kind":true}]}})", "config.prizes[0].kind",
          "config.prizes[0].kind: expected one of the enum's names, got true or false"}});
  check(gw::TrackingBatch::default_instance(),
        {{R"({"events":[{"attributes":["a"]}]})", "events[0].attributes",
          "events[0].attributes: expected an object (a map), got an array"}});
}

// The direct fill must give exactly what protobuf's parser gives, and never accept what it
// refuses: every body below goes through ParseJsonInto and through JsonStringToMessage.
TEST(JsonCodecTest, TheDirectFillAgreesWithProtobufsParser) {
  namespace gpb = ::google::protobuf;
  namespace rpb = ::marketing::rewards::v1;
  namespace spb = ::marketing::segments::v1;
  struct Case {
    const gpb::Descriptor* type;
    std::string json;
    bool direct;  // expected to take the direct fill
  };
  const std::vector<Case> cases = {
      {campaigns_pb::ParticipateRequest::descriptor(),
       R"({"customer_id":"C1","channel":"mobile_banking"})", true},
      {campaigns_pb::ParticipateRequest::descriptor(), R"({"customerId":"C1","itemId":"x"})", true},
      {campaigns_pb::ParticipateRequest::descriptor(), R"({"customer_id":"C1","customerId":"C2"})",
       false},
      {campaigns_pb::ParticipateRequest::descriptor(),
       R"({"customer_id":"中文 \u00e9 \ud83d\ude00 \"q\" \\"})", true},
      {campaigns_pb::ParticipateRequest::descriptor(), R"({"customer_id":5})", false},
      {campaigns_pb::ParticipateRequest::descriptor(), R"({"nope":"x"})", false},
      {gw::TrackingBatch::descriptor(),
       R"({"events":[{"customer_id":"c1","action":"CLICK"},{"customer_id":"c2"}]})", true},
      {gw::TrackingBatch::descriptor(), R"({"events":[{"action":1}]})", false},
      {gw::TrackingBatch::descriptor(), R"({"events":[{"action":"NO_SUCH_ACTION"}]})", false},
      {gw::TrackingBatch::descriptor(), R"({"events":{"customer_id":"c1"}})", false},
      {gw::TrackingBatch::descriptor(), R"({"events":[{"attributes":{"k":"v"}}]})", false},
      {gw::TrackingAccepted::descriptor(), R"({"accepted":2147483647})", true},
      {gw::TrackingAccepted::descriptor(), R"({"accepted":-2147483648})", true},
      {gw::TrackingAccepted::descriptor(), R"({"accepted":2147483648})", false},
      {gw::TrackingAccepted::descriptor(), R"({"accepted":1.0})", false},
      {gw::TrackingAccepted::descriptor(), R"({"accepted":1.5})", false},
      {gw::TrackingAccepted::descriptor(), R"({"accepted":"7"})", false},
      {gw::TrackingAccepted::descriptor(), R"({"accepted":true})", false},
      {rpb::OrderInfo::descriptor(), R"({"amount_fen":"9223372036854775807"})", true},
      {rpb::OrderInfo::descriptor(), R"({"amount_fen":"-9223372036854775808"})", true},
      {rpb::OrderInfo::descriptor(), R"({"amount_fen":9007199254740993})", true},
      {rpb::OrderInfo::descriptor(), R"({"amount_fen":-42,"products":["a","b"]})", true},
      {rpb::OrderInfo::descriptor(), R"({"amount_fen":"9223372036854775808"})", false},
      {rpb::OrderInfo::descriptor(), R"({"amount_fen":"007"})", false},
      {rpb::OrderInfo::descriptor(), R"({"amount_fen":"-0"})", false},
      {rpb::OrderInfo::descriptor(), R"({"amount_fen":"+7"})", false},
      {rpb::OrderInfo::descriptor(), R"({"amount_fen":" 7"})", false},
      {rpb::OrderInfo::descriptor(), R"({"amount_fen":"1e3"})", false},
      {rpb::OrderInfo::descriptor(), R"({"products":["a",1]})", false},
      {spb::SampleRequest::descriptor(),
       R"({"org_id":"bank-a","size":3,"seed":"18446744073709551615","segment":{}})", true},
      {spb::SampleRequest::descriptor(), R"({"seed":18446744073709551615})", true},
      {spb::SampleRequest::descriptor(), R"({"seed":"18446744073709551616"})", false},
      {spb::SampleRequest::descriptor(), R"({"seed":-1})", false},
      {spb::SampleRequest::descriptor(), R"({"seed":"-1"})", false},
      {spb::TagValue::descriptor(), R"({"tag":"t","bool_value":false})", true},
      {spb::TagValue::descriptor(), R"({"int_value":"12","bool_value":true})", false},
      {spb::TagValue::descriptor(), R"({"enum_set":{"values":["a"]}})", true},
      {gw::UpdateOperatorRequest::descriptor(), R"({"id":"o","disabled":false,"roles":[]})", true},
      {rpb::PointsExpiry::descriptor(), R"({"days_after_grant":30})", true},
      {rpb::PointsExpiry::descriptor(), R"({"fixed_at":"2026-01-01T00:00:00Z"})", false},
      {rpb::PointsExpiry::descriptor(), R"({"days_after_grant":30,"end_of_year_plus_years":1})",
       false},
      {campaigns_pb::CreateCampaignRequest::descriptor(),
       R"({"config":{"name":"n","type":"COUPON_CLAIM","priority":3}})", true},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.json);
    const gpb::Message* prototype = gpb::MessageFactory::generated_factory()->GetPrototype(c.type);
    std::unique_ptr<gpb::Message> ours(prototype->New());
    std::unique_ptr<gpb::Message> theirs(prototype->New());
    const absl::Status parsed = ParseJsonInto(c.json, ours.get(), 16);
    const auto reference = gpb::util::JsonStringToMessage(c.json, theirs.get());
    EXPECT_EQ(ParsesDirectly(c.json, c.type), c.direct);
    EXPECT_EQ(parsed.ok(), reference.ok()) << parsed << " / " << reference.ToString();
    if (parsed.ok() && reference.ok()) {
      EXPECT_TRUE(gpb::util::MessageDifferencer::Equals(*ours, *theirs))
          << ours->ShortDebugString() << " / " << theirs->ShortDebugString();
    }
  }
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
  // Percent-decoded path and query values that are not UTF-8 (GBK's 张三, a lone 0xFF) or hold
  // NUL are the caller's mistake: the service could not parse them.
  for (std::string_view text : {std::string_view("\xD5\xC5\xC8\xFD"), std::string_view("a\xFF"),
                                std::string_view("a\0b", 3)}) {
    absl::Status not_text = SetFieldFromText(&save, "campaign_id", text, "campaign_id");
    EXPECT_EQ(not_text.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(FieldOf(not_text), "campaign_id");
  }
  EXPECT_EQ(save.campaign_id(), "cmp_1");
  ASSERT_TRUE(SetFieldFromText(&save, "campaign_id", "\xE5\xBC\xA0\xE4\xB8\x89", "c").ok());
  EXPECT_EQ(save.campaign_id(), "\xE5\xBC\xA0\xE4\xB8\x89");

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

TEST(JsonCodecTest, TimestampsAreQueryParametersInRfc3339) {
  auto params = QueryParametersOf(campaigns_pb::ListAuditRequest::descriptor(), {});
  std::map<std::string, std::string> by_name;
  for (const auto& p : params) by_name[p.name] = p.field_path;
  EXPECT_EQ(by_name["since"], "since");
  EXPECT_EQ(by_name["until"], "until");

  campaigns_pb::ListAuditRequest audit;
  ASSERT_TRUE(SetFieldFromText(&audit, "since", "2026-11-26T10:00:00+08:00", "since").ok());
  EXPECT_EQ(audit.since().seconds(), 1'795'658'400);
  for (const char* bad : {"yesterday", "2026-11-26", "1795658400", ""}) {
    absl::Status refused = SetFieldFromText(&audit, "until", bad, "until");
    EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(refused.message()), HasSubstr("until: must be a time in RFC 3339"));
  }
  EXPECT_FALSE(audit.has_until());
}

}  // namespace
}  // namespace mkt::gateway
