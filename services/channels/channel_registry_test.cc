#include "services/channels/channel_registry.h"

#include <map>

#include "gtest/gtest.h"
#include "libs/core/status.h"

namespace mkt::channels {
namespace {

namespace cpb = ::marketing::common::v1;

// An in-memory repository that records the facts it would publish.
class FakeRepository final : public ChannelRepository {
 public:
  absl::StatusOr<ChannelRecord> Insert(const ChannelRecord& record, const std::string&) override {
    for (const auto& [id, r] : rows_) {
      if (r.org_id == record.org_id && r.code == record.code) {
        return Error(absl::StatusCode::kAlreadyExists, cpb::ALREADY_EXISTS, "dup", "code");
      }
    }
    ChannelRecord stored = record;
    stored.created_at = stored.updated_at = stored.secret_rotated_at = absl::Now();
    rows_[record.id] = stored;
    facts.push_back(pb::ChannelChanged::CREATED);
    return stored;
  }
  absl::StatusOr<ChannelRecord> Get(const std::string& id) override {
    auto it = rows_.find(id);
    if (it == rows_.end()) return NotFound("no channel");
    return it->second;
  }
  absl::StatusOr<std::vector<ChannelRecord>> List(const std::string& org_id,
                                                  const std::string& after_id, int limit) override {
    std::vector<ChannelRecord> out;
    for (auto it = rows_.upper_bound(after_id); it != rows_.end() && (int)out.size() < limit;
         ++it) {
      if (org_id.empty() || it->second.org_id == org_id) out.push_back(it->second);
    }
    return out;
  }
  absl::StatusOr<ChannelRecord> Update(const std::string& id, Change change,
                                       const std::function<bool(ChannelRecord&)>& mutate,
                                       const std::string&) override {
    auto it = rows_.find(id);
    if (it == rows_.end()) return NotFound("no channel");
    ChannelRecord copy = it->second;
    if (!mutate(copy)) return it->second;
    copy.version++;
    it->second = copy;
    facts.push_back(change);
    return copy;
  }

  std::vector<Change> facts;

 private:
  std::map<std::string, ChannelRecord> rows_;
};

class ChannelRegistryTest : public ::testing::Test {
 protected:
  ChannelRegistryTest() : registry_(repo_, *auth::SecretBox::FromHexKey(std::string(64, 'a'))) {}

  pb::ChannelWithSecret CreateOk(const std::string& code, const std::string& org = "fed") {
    pb::CreateChannelRequest req;
    req.set_code(code);
    req.set_org_id(org);
    req.set_display_name("手机银行 Mobile banking");
    auto created = registry_.Create(req, "req-1");
    EXPECT_TRUE(created.ok()) << created.status();
    return created.ok() ? *created : pb::ChannelWithSecret();
  }

  FakeRepository repo_;
  ChannelRegistry registry_;
};

TEST_F(ChannelRegistryTest, CreateReturnsSecretOnceAndStoresItSealed) {
  auto created = CreateOk("mobile_banking");
  EXPECT_TRUE(IsWellFormedChannelId(created.channel().id()));
  EXPECT_EQ(created.secret().size(), 64u);
  EXPECT_TRUE(created.channel().enabled());
  EXPECT_EQ(created.channel().version(), 1);
  auto stored = repo_.Get(created.channel().id());
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->sealed_secret.find(created.secret()), std::string::npos);
  pb::GetChannelRequest get;
  get.set_id(created.channel().id());
  auto channel = registry_.Get(get);
  ASSERT_TRUE(channel.ok());
  EXPECT_EQ(channel->DebugString().find(created.secret()), std::string::npos);
  pb::GetCredentialRequest cred_req;
  cred_req.set_id(created.channel().id());
  auto cred = registry_.GetCredential(cred_req);
  ASSERT_TRUE(cred.ok()) << cred.status();
  EXPECT_EQ(cred->secret(), created.secret());
  EXPECT_EQ(cred->org_id(), "fed");
  // The gateway acts for the channel only under this code.
  EXPECT_EQ(cred->code(), "mobile_banking");
  EXPECT_EQ(repo_.facts, std::vector<Change>{pb::ChannelChanged::CREATED});
}

TEST_F(ChannelRegistryTest, RejectsBadInputNamingTheField) {
  struct Case {
    std::string code, org, name, field;
  } cases[] = {
      {"Mobile", "fed", "x", "code"},
      {"m", "fed", "x", "code"},
      {"1abc", "fed", "x", "code"},
      {"mobile-banking", "fed", "x", "code"},
      {"mobile", "", "x", "org_id"},
      {"mobile", "Fed!", "x", "org_id"},
      {"mobile", "fed", "", "display_name"},
      {"mobile", "fed", std::string(65, 'x'), "display_name"},
      {"mobile", "fed", "bad\x01", "display_name"},
      {"mobile", "fed", "\xff\xfe", "display_name"},
  };
  for (const auto& c : cases) {
    pb::CreateChannelRequest req;
    req.set_code(c.code);
    req.set_org_id(c.org);
    req.set_display_name(c.name);
    auto result = registry_.Create(req, "r");
    ASSERT_FALSE(result.ok()) << c.code << "/" << c.org;
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(FieldOf(result.status()), c.field) << result.status();
  }
  EXPECT_TRUE(repo_.facts.empty()) << "bad input changes nothing";
  // 64 Chinese characters are 64 characters, not 192 bytes' worth.
  pb::CreateChannelRequest req;
  req.set_code("wecom");
  req.set_org_id("bank-a");
  std::string name;
  for (int i = 0; i < 64; ++i) name += "企";
  req.set_display_name(name);
  EXPECT_TRUE(registry_.Create(req, "r").ok());
}

TEST_F(ChannelRegistryTest, DuplicateCodeInOrgIsAlreadyExistsButOtherOrgIsFine) {
  CreateOk("counter", "fed");
  pb::CreateChannelRequest req;
  req.set_code("counter");
  req.set_org_id("fed");
  req.set_display_name("Counter");
  EXPECT_EQ(registry_.Create(req, "r").status().code(), absl::StatusCode::kAlreadyExists);
  CreateOk("counter", "bank-a");
}

TEST_F(ChannelRegistryTest, DisableEnableAreIdempotentAndPublishOnlyRealChanges) {
  auto id = CreateOk("payment_qr").channel().id();
  auto disabled = registry_.SetEnabled(id, false, "r");
  ASSERT_TRUE(disabled.ok());
  EXPECT_FALSE(disabled->enabled());
  EXPECT_EQ(disabled->version(), 2);
  auto again = registry_.SetEnabled(id, false, "r");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->version(), 2);
  auto enabled = registry_.SetEnabled(id, true, "r");
  EXPECT_TRUE(enabled->enabled());
  EXPECT_EQ(repo_.facts,
            (std::vector<Change>{pb::ChannelChanged::CREATED, pb::ChannelChanged::DISABLED,
                                 pb::ChannelChanged::ENABLED}));
}

TEST_F(ChannelRegistryTest, RotateSecretReplacesTheSecret) {
  auto created = CreateOk("mini_program");
  pb::RotateSecretRequest req;
  req.set_id(created.channel().id());
  auto rotated = registry_.RotateSecret(req, "r");
  ASSERT_TRUE(rotated.ok());
  EXPECT_NE(rotated->secret(), created.secret());
  pb::GetCredentialRequest cred_req;
  cred_req.set_id(created.channel().id());
  EXPECT_EQ(registry_.GetCredential(cred_req)->secret(), rotated->secret());
}

TEST_F(ChannelRegistryTest, UnknownOrMalformedIdsAreNotFound) {
  for (std::string id : {"ch_0000000000000000", "nope", "", "ch_ZZZZZZZZZZZZZZZZ"}) {
    pb::GetChannelRequest get;
    get.set_id(id);
    EXPECT_EQ(registry_.Get(get).status().code(), absl::StatusCode::kNotFound) << id;
    EXPECT_EQ(registry_.SetEnabled(id, false, "r").status().code(), absl::StatusCode::kNotFound);
  }
}

TEST_F(ChannelRegistryTest, ListPagesThroughEveryChannelOnce) {
  for (int i = 0; i < 7; ++i) CreateOk("ch_code_" + std::to_string(i), i % 2 ? "bank-a" : "fed");
  std::set<std::string> seen;
  pb::ListChannelsRequest req;
  req.mutable_page()->set_page_size(3);
  int pages = 0;
  do {
    auto page = registry_.List(req);
    ASSERT_TRUE(page.ok()) << page.status();
    for (const auto& c : page->channels()) EXPECT_TRUE(seen.insert(c.id()).second);
    req.mutable_page()->set_page_token(page->page().next_page_token());
    ++pages;
  } while (!req.page().page_token().empty());
  EXPECT_EQ(seen.size(), 7u);
  EXPECT_EQ(pages, 3);
  req.set_org_id("bank-a");
  req.mutable_page()->set_page_size(0);
  EXPECT_EQ(registry_.List(req)->channels_size(), 3);
  req.mutable_page()->set_page_size(501);
  EXPECT_EQ(FieldOf(registry_.List(req).status()), "page.page_size");
  req.mutable_page()->set_page_size(10);
  req.mutable_page()->set_page_token("garbage");
  EXPECT_EQ(FieldOf(registry_.List(req).status()), "page.page_token");
}

TEST_F(ChannelRegistryTest, CredentialOfAChannelSealedUnderAnotherKeyIsAnInternalError) {
  auto id = CreateOk("cloud_portal").channel().id();
  ChannelRegistry other(repo_, *auth::SecretBox::FromHexKey(std::string(64, 'b')));
  pb::GetCredentialRequest req;
  req.set_id(id);
  auto cred = other.GetCredential(req);
  EXPECT_EQ(cred.status().code(), absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace mkt::channels
