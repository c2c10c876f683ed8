// protojson::ToJson against protobuf's own JSON printer, on random messages of every type our
// protos define, in both modes: the same JSON value (object member order and equivalent string
// escapes aside), or both "{}" when protobuf refuses the message.
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/dynamic_message.h"
#include "google/protobuf/message.h"
#include "google/protobuf/timestamp.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "libs/protojson/protojson.h"
#include "marketing/campaigns/v1/batch_grants.pb.h"
#include "marketing/campaigns/v1/campaigns.pb.h"
#include "marketing/campaigns/v1/participation.pb.h"
#include "marketing/channels/v1/channels.pb.h"
#include "marketing/common/v1/common.pb.h"
#include "marketing/common/v1/envelope.pb.h"
#include "marketing/common/v1/errors.pb.h"
#include "marketing/events/v1/business_event.pb.h"
#include "marketing/events/v1/events.pb.h"
#include "marketing/gateway/v1/gateway.pb.h"
#include "marketing/rewards/v1/benefits.pb.h"
#include "marketing/rewards/v1/ledger.pb.h"
#include "marketing/segments/v1/segments.pb.h"
#include "nlohmann/json.hpp"

namespace mkt::protojson {
namespace {

namespace gpb = ::google::protobuf;
using FieldDescriptor = gpb::FieldDescriptor;

std::string ByProtobuf(const gpb::Message& message, Fields fields = Fields::kAll) {
  gpb::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = fields == Fields::kAll;
  std::string out;
  if (!gpb::util::MessageToJsonString(message, &out, options).ok()) return "{}";
  return out;
}

// Fills messages with values chosen to find differences: extremes, defaults, strings that need
// escaping, enum numbers no value names, timestamps with every precision (and now and then one
// out of range).
class RandomFiller {
 public:
  explicit RandomFiller(uint32_t seed) : rng_(seed) {}

  void Fill(gpb::Message* m, int depth) {
    const gpb::Descriptor* d = m->GetDescriptor();
    if (d->full_name() == "google.protobuf.Timestamp") {
      FillTimestamp(m);
      return;
    }
    if (d->file()->package() == "google.protobuf") return;  // Any: left empty
    const gpb::Reflection* r = m->GetReflection();
    for (int i = 0; i < d->field_count(); ++i) {
      const FieldDescriptor* f = d->field(i);
      if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE && depth >= 3) continue;
      if (f->is_repeated()) {
        const int n = Pick(4);
        for (int k = 0; k < n; ++k) {
          if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
            Fill(r->AddMessage(m, f), depth + 1);
          } else {
            AddScalar(m, f);
          }
        }
      } else if (Pick(3) != 0) {
        if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
          Fill(r->MutableMessage(m, f), depth + 1);
        } else {
          SetScalar(m, f);
        }
      }
    }
  }

 private:
  int Pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng_); }
  template <class T>
  T OneOf(const std::vector<T>& values) {
    return values[Pick(static_cast<int>(values.size()))];
  }

  int64_t Int64() {
    return OneOf<int64_t>({0, 1, -1, 42, 100'000'000'000, std::numeric_limits<int64_t>::max(),
                           std::numeric_limits<int64_t>::min(), static_cast<int64_t>(rng_())});
  }
  int32_t Int32() {
    return OneOf<int32_t>({0, 1, -1, 7, std::numeric_limits<int32_t>::max(),
                           std::numeric_limits<int32_t>::min(), static_cast<int32_t>(rng_())});
  }
  std::string Text() {
    return OneOf<std::string>({"", "abc", "bank-a-cust-0001", "引号\"与\\反斜杠",
                               "line\nbreak\ttab\r", std::string("nul\0and\x01\x1f\x7f", 10),
                               "<script>&amp;</script>", "sep\u2028arator\u2029", "emoji 😀 and é",
                               std::string(300, 'x'), "/slash'quote"});
  }
  std::string Bytes() {
    std::string b(static_cast<size_t>(Pick(20)), '\0');
    for (char& c : b) c = static_cast<char>(rng_());
    return b;
  }
  int EnumNumber(const FieldDescriptor* f) {
    const gpb::EnumDescriptor* e = f->enum_type();
    if (Pick(10) == 0) return 977;  // a number this build has no name for
    return e->value(Pick(e->value_count()))->number();
  }

  void FillTimestamp(gpb::Message* m) {
    auto* ts = static_cast<gpb::Timestamp*>(m);
    ts->set_seconds(OneOf<int64_t>({0, 1'795'000'000, -62135596800, 253402300799, 951782400,
                                    static_cast<int64_t>(rng_() % 4'000'000'000)}));
    ts->set_nanos(OneOf<int32_t>({0, 0, 1'000'000, 123'000'000, 123'456'000, 123'456'789, 5}));
    if (Pick(50) == 0) ts->set_seconds(253402300800);  // out of range: protobuf refuses it
  }

  void SetScalar(gpb::Message* m, const FieldDescriptor* f) {
    const gpb::Reflection* r = m->GetReflection();
    switch (f->cpp_type()) {
      case FieldDescriptor::CPPTYPE_INT32:
        r->SetInt32(m, f, Int32());
        break;
      case FieldDescriptor::CPPTYPE_INT64:
        r->SetInt64(m, f, Int64());
        break;
      case FieldDescriptor::CPPTYPE_UINT32:
        r->SetUInt32(m, f, static_cast<uint32_t>(Int32()));
        break;
      case FieldDescriptor::CPPTYPE_UINT64:
        r->SetUInt64(m, f, static_cast<uint64_t>(Int64()));
        break;
      case FieldDescriptor::CPPTYPE_BOOL:
        r->SetBool(m, f, Pick(2) == 1);
        break;
      case FieldDescriptor::CPPTYPE_ENUM:
        r->SetEnumValue(m, f, EnumNumber(f));
        break;
      case FieldDescriptor::CPPTYPE_STRING:
        r->SetString(m, f, f->type() == FieldDescriptor::TYPE_BYTES ? Bytes() : Text());
        break;
      case FieldDescriptor::CPPTYPE_DOUBLE:
        r->SetDouble(m, f, Pick(2) == 0 ? 0.1 : 1e300);
        break;
      case FieldDescriptor::CPPTYPE_FLOAT:
        r->SetFloat(m, f, 0.5f);
        break;
      default:
        break;
    }
  }
  void AddScalar(gpb::Message* m, const FieldDescriptor* f) {
    const gpb::Reflection* r = m->GetReflection();
    switch (f->cpp_type()) {
      case FieldDescriptor::CPPTYPE_INT32:
        r->AddInt32(m, f, Int32());
        break;
      case FieldDescriptor::CPPTYPE_INT64:
        r->AddInt64(m, f, Int64());
        break;
      case FieldDescriptor::CPPTYPE_UINT32:
        r->AddUInt32(m, f, static_cast<uint32_t>(Int32()));
        break;
      case FieldDescriptor::CPPTYPE_UINT64:
        r->AddUInt64(m, f, static_cast<uint64_t>(Int64()));
        break;
      case FieldDescriptor::CPPTYPE_BOOL:
        r->AddBool(m, f, Pick(2) == 1);
        break;
      case FieldDescriptor::CPPTYPE_ENUM:
        r->AddEnumValue(m, f, EnumNumber(f));
        break;
      case FieldDescriptor::CPPTYPE_STRING:
        r->AddString(m, f, f->type() == FieldDescriptor::TYPE_BYTES ? Bytes() : Text());
        break;
      default:
        break;
    }
  }

  std::mt19937 rng_;
};

// Every message type of our proto files (nested ones included).
std::vector<const gpb::Descriptor*> AllMessageTypes() {
  std::vector<const gpb::Descriptor*> out;
  std::vector<const gpb::Descriptor*> stack;
  // One type of each file: naming it links the generated file into the test.
  for (const gpb::Descriptor* named : {
           ::marketing::campaigns::v1::BatchGrant::descriptor(),
           ::marketing::campaigns::v1::Org::descriptor(),
           ::marketing::campaigns::v1::ParticipateRequest::descriptor(),
           ::marketing::channels::v1::Channel::descriptor(),
           ::marketing::common::v1::OrgId::descriptor(),
           ::marketing::common::v1::Envelope::descriptor(),
           ::marketing::common::v1::ErrorDetail::descriptor(),
           ::marketing::events::v1::BusinessEvent::descriptor(),
           ::marketing::events::v1::EventType::descriptor(),
           ::marketing::gateway::v1::EventAccepted::descriptor(),
           ::marketing::rewards::v1::Validity::descriptor(),
           ::marketing::rewards::v1::AccountRef::descriptor(),
           ::marketing::segments::v1::Tag::descriptor(),
       }) {
    const gpb::FileDescriptor* file = named->file();
    for (int i = 0; i < file->message_type_count(); ++i) stack.push_back(file->message_type(i));
  }
  while (!stack.empty()) {
    const gpb::Descriptor* d = stack.back();
    stack.pop_back();
    if (d->map_key() == nullptr) out.push_back(d);  // map entries are rendered as maps
    for (int i = 0; i < d->nested_type_count(); ++i) stack.push_back(d->nested_type(i));
  }
  return out;
}

class ProtojsonTest : public ::testing::TestWithParam<Fields> {};

TEST_P(ProtojsonTest, WritesWhatProtobufWritesForEveryMessageType) {
  const Fields fields = GetParam();
  const std::vector<const gpb::Descriptor*> types = AllMessageTypes();
  ASSERT_GT(types.size(), 200u);
  RandomFiller filler(20261127);
  int compared = 0;
  for (const gpb::Descriptor* type : types) {
    const gpb::Message* prototype = gpb::MessageFactory::generated_factory()->GetPrototype(type);
    ASSERT_NE(prototype, nullptr) << type->full_name();
    for (int round = 0; round < 60; ++round) {
      std::unique_ptr<gpb::Message> m(prototype->New());
      if (round > 0) filler.Fill(m.get(), 0);  // round 0: the empty message
      const std::string mine = ToJson(*m, fields);
      const std::string theirs = ByProtobuf(*m, fields);
      const auto mine_json = nlohmann::json::parse(mine, nullptr, /*allow_exceptions=*/false);
      ASSERT_FALSE(mine_json.is_discarded()) << type->full_name() << ": not JSON: " << mine;
      ASSERT_EQ(mine_json, nlohmann::json::parse(theirs))
          << type->full_name() << "\nmine:     " << mine << "\nprotobuf: " << theirs << "\n"
          << m->DebugString();
      ++compared;
    }
  }
  EXPECT_EQ(compared, static_cast<int>(types.size()) * 60);
}

INSTANTIATE_TEST_SUITE_P(BothModes, ProtojsonTest, ::testing::Values(Fields::kAll, Fields::kSet),
                         [](const ::testing::TestParamInfo<Fields>& info) {
                           return info.param == Fields::kAll ? "AllFields" : "SetFields";
                         });

TEST(ProtojsonShapeTest, AllFieldsWritesTheApiShape) {
  ::marketing::rewards::v1::Wallet wallet;
  wallet.set_points(450);
  auto* group = wallet.add_coupons();
  group->set_state(::marketing::rewards::v1::COUPON_ISSUED);
  auto* coupon = group->add_coupons();
  coupon->set_code("C1");
  coupon->mutable_issued_at()->set_seconds(1'795'000'000);
  coupon->mutable_issued_at()->set_nanos(123'000'000);
  const nlohmann::json json = nlohmann::json::parse(ToJson(wallet, Fields::kAll));
  EXPECT_EQ(json["points"], "450") << "64-bit integers are strings";
  EXPECT_EQ(json["cash_fen"], "0") << "defaults are written";
  EXPECT_EQ(json["coupons"][0]["state"], "COUPON_ISSUED") << "enums by name";
  EXPECT_EQ(json["coupons"][0]["coupons"][0]["issued_at"], "2026-11-18T11:06:40.123Z");
  EXPECT_FALSE(json["coupons"][0]["coupons"][0].contains("valid_until"))
      << "an unset message field is left out";
}

TEST(ProtojsonShapeTest, SetFieldsLeavesDefaultsOut) {
  ::marketing::rewards::v1::Wallet wallet;
  wallet.set_points(450);
  wallet.add_coupons()->set_state(::marketing::rewards::v1::COUPON_ISSUED);
  const nlohmann::json json = nlohmann::json::parse(ToJson(wallet, Fields::kSet));
  EXPECT_EQ(json,
            nlohmann::json::parse(R"({"points":"450","coupons":[{"state":"COUPON_ISSUED"}]})"))
      << "zeros, empty repeated fields and unset messages are left out";
  EXPECT_EQ(ToJson(::marketing::rewards::v1::Wallet(), Fields::kSet), "{}");
}

TEST(ProtojsonShapeTest, EscapesWhatJsonNeedsAndLeavesBrokenUtf8ToProtobuf) {
  ::marketing::segments::v1::Segment segment;
  segment.set_name(std::string("a\"b\\c\nd\x01<", 9));
  const std::string json = ToJson(segment, Fields::kAll);
  EXPECT_NE(json.find(R"("name":"a\"b\\c\nd\u0001\u003c")"), std::string::npos) << json;
  EXPECT_EQ(nlohmann::json::parse(json)["name"], std::string("a\"b\\c\nd\x01<"));
  // Not UTF-8 (a stray byte, a cut sequence, an overlong form, a surrogate): protobuf's own way.
  for (const std::string& broken : {std::string("x\xffy"),
                                    std::string("\xE2"
                                                "a"),
                                    std::string("\xC0\x80"), std::string("\xED\xA0\x80")}) {
    segment.set_name(broken);
    EXPECT_EQ(ToJson(segment, Fields::kAll), ByProtobuf(segment, Fields::kAll));
    EXPECT_EQ(ToJson(segment, Fields::kSet), ByProtobuf(segment, Fields::kSet));
  }
}

TEST(ProtojsonShapeTest, TimestampsAndStringsAreWrittenAsProtobufWritesThem) {
  ::marketing::rewards::v1::Coupon coupon;
  // The range's ends, and every fraction width protobuf chooses (none, 3, 6 and 9 digits).
  const std::pair<int64_t, int32_t> times[] = {{-62'135'596'800, 0},
                                               {253'402'300'799, 999'999'999},
                                               {0, 0},
                                               {1'795'000'000, 5'000'000},
                                               {1'795'000'000, 120'000},
                                               {1'795'000'000, 7},
                                               {951'782'400, 1},
                                               {-1, 999'000'000}};
  for (const auto& [seconds, nanos] : times) {
    coupon.mutable_issued_at()->set_seconds(seconds);
    coupon.mutable_issued_at()->set_nanos(nanos);
    // Plain runs around every kind of escape, and multi-byte UTF-8 (U+2028 is escaped).
    coupon.set_code(
        std::string("plain ascii run \"q\" back\\slash <tag> \t tab 优惠券 \xE2\x80\xA8 end"));
    EXPECT_EQ(ToJson(coupon, Fields::kSet), ByProtobuf(coupon, Fields::kSet))
        << seconds << "." << nanos;
  }
}

}  // namespace
}  // namespace mkt::protojson
