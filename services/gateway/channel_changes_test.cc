#include "services/gateway/channel_changes.h"

#include "gtest/gtest.h"
#include "libs/kafka/outbox.h"
#include "marketing/channels/v1/channels.pb.h"
#include "services/gateway/credential_store.h"
#include "services/gateway/test_fakes.h"

namespace mkt::gateway {
namespace {

namespace channels_pb = ::marketing::channels::v1;
using testing::FakeClock;
using testing::FakeCredentialSource;

kafka::IncomingMessage MessageWith(const google::protobuf::Message& payload) {
  kafka::IncomingMessage message;
  message.topic = kChannelChangesTopic;
  message.value =
      kafka::MakeEnvelope("channels.ChannelChanged", "fed", "trace-1", payload).SerializeAsString();
  return message;
}

class ChannelChangesTest : public ::testing::Test {
 protected:
  ChannelChangesTest() : store_(source_, clock_) {
    source_.Set(Credential{"ch_a", "fed", "secret", true, 1});
    source_.Set(Credential{"ch_b", "fed", "secret", true, 1});
  }

  FakeClock clock_;
  FakeCredentialSource source_;
  CredentialStore store_;
};

TEST_F(ChannelChangesTest, AChangeDropsOnlyThatChannelsCachedCredential) {
  ASSERT_TRUE(store_.Lookup("ch_a", "r").ok());
  ASSERT_TRUE(store_.Lookup("ch_b", "r").ok());
  channels_pb::ChannelChanged change;
  change.set_change(channels_pb::ChannelChanged::DISABLED);
  change.mutable_channel()->set_id("ch_a");
  change.mutable_channel()->set_version(2);
  source_.Set(Credential{"ch_a", "fed", "secret", /*enabled=*/false, 2});

  ASSERT_TRUE(ApplyChannelChange(MessageWith(change), store_).ok());

  EXPECT_FALSE(store_.Lookup("ch_a", "r")->enabled);
  EXPECT_TRUE(store_.Lookup("ch_b", "r").ok());
  EXPECT_EQ(source_.fetches(), 3);  // ch_a twice, ch_b once
}

TEST_F(ChannelChangesTest, UndecodableMessagesArePermanentErrors) {
  kafka::IncomingMessage garbage;
  garbage.value = "\xff\xfe not protobuf";
  absl::Status status = ApplyChannelChange(garbage, store_);
  EXPECT_TRUE(kafka::IsPermanent(status)) << status;

  channels_pb::Channel not_a_change;  // an envelope around the wrong message type
  not_a_change.set_id("ch_a");
  status = ApplyChannelChange(MessageWith(not_a_change), store_);
  EXPECT_TRUE(kafka::IsPermanent(status)) << status;

  channels_pb::ChannelChanged without_id;
  without_id.set_change(channels_pb::ChannelChanged::UPDATED);
  status = ApplyChannelChange(MessageWith(without_id), store_);
  EXPECT_TRUE(kafka::IsPermanent(status)) << status;
}

}  // namespace
}  // namespace mkt::gateway
