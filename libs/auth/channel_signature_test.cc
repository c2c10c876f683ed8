#include "libs/auth/channel_signature.h"

#include "gtest/gtest.h"
#include "libs/auth/crypto.h"

namespace mkt::auth {
namespace {

TEST(ChannelSignatureTest, CanonicalStringMatchesTheContract) {
  SignedRequest r{"POST", "/v1/events?x=1", "1764150000", "n-1", "{}"};
  EXPECT_EQ(CanonicalString(r), "POST\n/v1/events?x=1\n1764150000\nn-1\n" + Sha256Hex("{}"));
}

TEST(ChannelSignatureTest, VerifiesOnlyTheExactRequest) {
  SignedRequest r{"GET", "/v1/channel", "1764150000", "n-1", ""};
  std::string sig = SignRequest("secret", r);
  EXPECT_EQ(sig.size(), 64u);
  EXPECT_TRUE(VerifySignature("secret", r, sig));
  EXPECT_FALSE(VerifySignature("other", r, sig));
  SignedRequest changed = r;
  changed.nonce = "n-2";
  EXPECT_FALSE(VerifySignature("secret", changed, sig));
  changed = r;
  changed.target = "/v1/channel?a=1";
  EXPECT_FALSE(VerifySignature("secret", changed, sig));
  changed = r;
  changed.body = "x";
  EXPECT_FALSE(VerifySignature("secret", changed, sig));
}

}  // namespace
}  // namespace mkt::auth
