#include "services/gateway/credential_store.h"

#include "gtest/gtest.h"
#include "libs/core/status.h"
#include "services/gateway/test_fakes.h"

namespace mkt::gateway {
namespace {

namespace pb = ::marketing::common::v1;
using testing::FakeClock;
using testing::FakeCredentialSource;

class CredentialStoreTest : public ::testing::Test {
 protected:
  CredentialStoreTest()
      : store_(source_, clock_,
               {.ttl = absl::Seconds(60), .negative_ttl = absl::Seconds(5), .max_entries = 100}) {
    source_.Set(Credential{"ch_a", "fed", "secret-a", true, 1});
  }

  FakeClock clock_;
  FakeCredentialSource source_;
  CredentialStore store_;
};

TEST_F(CredentialStoreTest, CachesForTheTtl) {
  absl::StatusOr<Credential> first = store_.Lookup("ch_a", "r1");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->secret, "secret-a");
  EXPECT_EQ(first->org_id, "fed");
  clock_.Advance(absl::Seconds(59));
  ASSERT_TRUE(store_.Lookup("ch_a", "r2").ok());
  EXPECT_EQ(source_.fetches(), 1);

  // After the TTL the source is asked again and its newer answer is used.
  source_.Set(Credential{"ch_a", "fed", "secret-a2", true, 2});
  clock_.Advance(absl::Seconds(1));
  absl::StatusOr<Credential> refreshed = store_.Lookup("ch_a", "r3");
  ASSERT_TRUE(refreshed.ok());
  EXPECT_EQ(refreshed->secret, "secret-a2");
  EXPECT_EQ(source_.fetches(), 2);
}

TEST_F(CredentialStoreTest, InvalidateMakesTheNextLookupAskTheSource) {
  ASSERT_TRUE(store_.Lookup("ch_a", "r1").ok());
  source_.Set(Credential{"ch_a", "fed", "secret-a", /*enabled=*/false, 2});
  EXPECT_TRUE(store_.Lookup("ch_a", "r2")->enabled);  // still cached
  store_.Invalidate("ch_a");
  absl::StatusOr<Credential> after = store_.Lookup("ch_a", "r3");
  ASSERT_TRUE(after.ok());
  EXPECT_FALSE(after->enabled);
  EXPECT_EQ(source_.fetches(), 2);
}

TEST_F(CredentialStoreTest, UnknownChannelsAreRememberedBriefly) {
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<Credential> unknown = store_.Lookup("ch_nobody", "r");
    ASSERT_FALSE(unknown.ok());
    EXPECT_EQ(ReasonOf(unknown.status()), pb::CHANNEL_UNKNOWN);
    EXPECT_EQ(HttpStatusFor(unknown.status()), 401);
  }
  EXPECT_EQ(source_.fetches(), 1);
  clock_.Advance(absl::Seconds(5));
  EXPECT_FALSE(store_.Lookup("ch_nobody", "r").ok());
  EXPECT_EQ(source_.fetches(), 2);
}

TEST_F(CredentialStoreTest, InvalidateAlsoForgetsThatAChannelWasUnknown) {
  EXPECT_FALSE(store_.Lookup("ch_new", "r").ok());
  source_.Set(Credential{"ch_new", "bank-a", "secret-new", true, 1});  // created meanwhile
  store_.Invalidate("ch_new");
  EXPECT_TRUE(store_.Lookup("ch_new", "r").ok());
}

TEST_F(CredentialStoreTest, AFetchThatRacesAnInvalidationIsNotCached) {
  // The fetch reads the old state; the change (and its invalidation) lands before it returns.
  source_.DuringFetch([this] {
    source_.DuringFetch(nullptr);
    store_.Invalidate("ch_a");
  });
  ASSERT_TRUE(store_.Lookup("ch_a", "r1").ok());
  source_.Set(Credential{"ch_a", "fed", "secret-a", /*enabled=*/false, 2});
  absl::StatusOr<Credential> next = store_.Lookup("ch_a", "r2");
  ASSERT_TRUE(next.ok());
  EXPECT_FALSE(next->enabled) << "a credential read before the change outlived its invalidation";
  EXPECT_EQ(source_.fetches(), 2);
}

TEST_F(CredentialStoreTest, SourceFailuresAreNotCachedAndMapToTheirHttpStatus) {
  source_.FailWith(Unavailable("connection refused"));
  absl::StatusOr<Credential> down = store_.Lookup("ch_a", "r");
  ASSERT_FALSE(down.ok());
  EXPECT_EQ(ReasonOf(down.status()), pb::DEPENDENCY_UNAVAILABLE);
  EXPECT_EQ(HttpStatusFor(down.status()), 503);

  source_.FailWith(absl::DeadlineExceededError("slow"));
  EXPECT_EQ(HttpStatusFor(store_.Lookup("ch_a", "r").status()), 504);

  source_.FailWith(absl::PermissionDeniedError("gateway not allowed"));
  absl::StatusOr<Credential> denied = store_.Lookup("ch_a", "r");
  EXPECT_EQ(ReasonOf(denied.status()), pb::INTERNAL) << "must not become the caller's 403";

  source_.FailWith(absl::OkStatus());
  EXPECT_TRUE(store_.Lookup("ch_a", "r").ok());
  EXPECT_EQ(source_.fetches(), 4);
}

TEST_F(CredentialStoreTest, PutKeepsTheNewestVersion) {
  store_.Put(Credential{"ch_b", "fed", "secret-v3", true, 3});
  store_.Put(Credential{"ch_b", "fed", "secret-v2", true, 2});
  absl::StatusOr<Credential> cached = store_.Lookup("ch_b", "r");
  ASSERT_TRUE(cached.ok());
  EXPECT_EQ(cached->secret, "secret-v3");
  EXPECT_EQ(source_.fetches(), 0);
}

TEST_F(CredentialStoreTest, MadeUpChannelIdsCannotGrowTheCacheWithoutBound) {
  for (int i = 0; i < 1000; ++i)
    store_.Lookup("ch_fake_" + std::to_string(i), "r").status().IgnoreError();
  EXPECT_LE(store_.size(), 100u);
}

}  // namespace
}  // namespace mkt::gateway
