// The channel registry over the real PostgreSQL: rows and their outbox facts commit together.
#include <atomic>
#include <latch>
#include <thread>

#include "google/protobuf/any.pb.h"
#include "gtest/gtest.h"
#include "libs/core/status.h"
#include "libs/kafka/outbox.h"
#include "libs/testing/testing.h"
#include "services/channels/channel_registry.h"
#include "services/channels/pg_channel_repository.h"

namespace mkt::channels {
namespace {

class ChannelsPgTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pool = pg::Pool::Connect({.dsn = db_.dsn(), .size = 8});
    ASSERT_TRUE(pool.ok()) << pool.status();
    pool_ = std::move(*pool);
    ASSERT_TRUE(
        pg::ApplyMigrations(*pool_, {&kafka::OutboxMigrations(), &ChannelsMigrations()}).ok());
    repo_ = std::make_unique<PgChannelRepository>(*pool_);
    registry_ = std::make_unique<ChannelRegistry>(*repo_, *auth::SecretBox::FromHexKey(kKey));
  }

  // Returns the ChannelChanged facts in the outbox, in order.
  std::vector<pb::ChannelChanged> Facts() {
    std::vector<pb::ChannelChanged> out;
    auto lease = pool_->Acquire();
    pqxx::work tx(**lease);
    for (const auto& row : tx.exec("SELECT topic, msg_key, msg_value FROM outbox ORDER BY id")) {
      EXPECT_EQ(row[0].as<std::string>(), kChannelChangesTopic);
      pqxx::binarystring value(row[2]);
      kafka::IncomingMessage msg;
      msg.value = value.str();
      auto envelope = kafka::ParseEnvelope(msg);
      EXPECT_TRUE(envelope.ok());
      pb::ChannelChanged fact;
      EXPECT_TRUE(envelope->payload().UnpackTo(&fact));
      EXPECT_EQ(pqxx::binarystring(row[1]).str(), fact.channel().id());
      out.push_back(fact);
    }
    return out;
  }

  pb::ChannelWithSecret Create(const std::string& code, const std::string& org = "fed") {
    pb::CreateChannelRequest req;
    req.set_code(code);
    req.set_org_id(org);
    req.set_display_name("Channel " + code);
    auto created = registry_->Create(req, "req-create");
    EXPECT_TRUE(created.ok()) << created.status();
    return created.ok() ? *created : pb::ChannelWithSecret();
  }

  static constexpr char kKey[] = "5f1d3c0e2b4a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
  testing::TestDatabase db_;
  std::unique_ptr<pg::Pool> pool_;
  std::unique_ptr<PgChannelRepository> repo_;
  std::unique_ptr<ChannelRegistry> registry_;
};

TEST_F(ChannelsPgTest, CreateStoresRowAndCreatedFactTogether) {
  auto created = Create("mobile_banking");
  pb::GetChannelRequest get;
  get.set_id(created.channel().id());
  auto channel = registry_->Get(get);
  ASSERT_TRUE(channel.ok());
  EXPECT_EQ(channel->code(), "mobile_banking");
  EXPECT_GT(channel->created_at().seconds(), 1700000000);
  auto facts = Facts();
  ASSERT_EQ(facts.size(), 1u);
  EXPECT_EQ(facts[0].change(), pb::ChannelChanged::CREATED);
  EXPECT_EQ(facts[0].channel().id(), created.channel().id());
  // The stored secret is sealed, never the plaintext.
  auto lease = pool_->Acquire();
  pqxx::work tx(**lease);
  auto n = tx.exec_params("SELECT count(*) FROM channels WHERE sealed_secret LIKE '%' || $1 || '%'",
                          created.secret())[0][0]
               .as<int>();
  EXPECT_EQ(n, 0);
}

TEST_F(ChannelsPgTest, DuplicateCodeIsAlreadyExistsAndWritesNothing) {
  Create("counter");
  pb::CreateChannelRequest req;
  req.set_code("counter");
  req.set_org_id("fed");
  req.set_display_name("Counter again");
  auto dup = registry_->Create(req, "r");
  EXPECT_EQ(dup.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(FieldOf(dup.status()), "code");
  EXPECT_EQ(Facts().size(), 1u);
}

TEST_F(ChannelsPgTest, EveryRealChangeBumpsVersionAndPublishesOneFact) {
  auto created = Create("wecom");
  const std::string id = created.channel().id();
  ASSERT_TRUE(registry_->SetEnabled(id, false, "r").ok());
  ASSERT_TRUE(registry_->SetEnabled(id, false, "r").ok());  // no-op
  pb::UpdateChannelRequest update;
  update.set_id(id);
  update.set_display_name("企业微信");
  ASSERT_TRUE(registry_->Update(update, "r").ok());
  pb::RotateSecretRequest rotate;
  rotate.set_id(id);
  auto rotated = registry_->RotateSecret(rotate, "r");
  ASSERT_TRUE(rotated.ok());
  EXPECT_GT(rotated->channel().secret_rotated_at().seconds(), 0);
  pb::GetCredentialRequest cred;
  cred.set_id(id);
  auto credential = registry_->GetCredential(cred);
  ASSERT_TRUE(credential.ok());
  EXPECT_EQ(credential->secret(), rotated->secret());
  EXPECT_FALSE(credential->enabled());
  EXPECT_EQ(credential->version(), 4);

  auto facts = Facts();
  ASSERT_EQ(facts.size(), 4u);
  EXPECT_EQ(facts[1].change(), pb::ChannelChanged::DISABLED);
  EXPECT_EQ(facts[2].change(), pb::ChannelChanged::UPDATED);
  EXPECT_EQ(facts[2].channel().display_name(), "企业微信");
  EXPECT_EQ(facts[3].change(), pb::ChannelChanged::SECRET_ROTATED);
  for (size_t i = 0; i < facts.size(); ++i) EXPECT_EQ(facts[i].channel().version(), int64_t(i + 1));
}

// Many operators flipping one channel at once: row locks serialise them, so versions and facts
// match the number of real changes exactly and the fact order follows the versions.
TEST_F(ChannelsPgTest, ConcurrentTogglesKeepVersionsAndFactsConsistent) {
  const std::string id = Create("payment_qr").channel().id();
  constexpr int kThreads = 6, kPerThread = 15;
  std::latch start(kThreads);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      for (int i = 0; i < kPerThread; ++i) {
        if (!registry_->SetEnabled(id, (t + i) % 2 == 0, "r").ok()) failures++;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  pb::GetChannelRequest get;
  get.set_id(id);
  int64_t version = registry_->Get(get)->version();
  auto facts = Facts();
  ASSERT_EQ(static_cast<int64_t>(facts.size()), version);
  for (size_t i = 1; i < facts.size(); ++i) {
    EXPECT_EQ(facts[i].channel().version(), int64_t(i + 1));
    EXPECT_NE(facts[i].channel().enabled(), facts[i - 1].channel().enabled())
        << "only real changes are published";
  }
}

TEST_F(ChannelsPgTest, ListFiltersByOrgAndPages) {
  for (int i = 0; i < 5; ++i) Create("code_" + std::to_string(i), i < 3 ? "bank-a" : "bank-b");
  pb::ListChannelsRequest req;
  req.set_org_id("bank-a");
  req.mutable_page()->set_page_size(2);
  auto first = registry_->List(req);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->channels_size(), 2);
  ASSERT_FALSE(first->page().next_page_token().empty());
  req.mutable_page()->set_page_token(first->page().next_page_token());
  auto second = registry_->List(req);
  EXPECT_EQ(second->channels_size(), 1);
  EXPECT_TRUE(second->page().next_page_token().empty());
  for (const auto& c : second->channels()) EXPECT_EQ(c.org_id(), "bank-a");
}

}  // namespace
}  // namespace mkt::channels
