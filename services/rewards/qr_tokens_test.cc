#include "services/rewards/qr_tokens.h"

#include <gtest/gtest.h>

#include "libs/core/status.h"

namespace mkt::rewards {
namespace {

namespace cpb = ::marketing::common::v1;

const QrClaims kClaims{.jti = "j1",
                       .coupon_code = "CABC",
                       .customer_id = "cust-1",
                       .expires_at = absl::FromUnixSeconds(1'800'000'000)};

TEST(QrTokenSignerTest, RoundTripsItsOwnTokens) {
  QrTokenSigner signer("k-0123456789-0123456789-0123456789");
  auto claims = signer.Verify(signer.Sign(kClaims));
  ASSERT_TRUE(claims.ok()) << claims.status();
  EXPECT_EQ(claims->jti, "j1");
  EXPECT_EQ(claims->coupon_code, "CABC");
  EXPECT_EQ(claims->customer_id, "cust-1");
  EXPECT_EQ(claims->expires_at, kClaims.expires_at);
}

TEST(QrTokenSignerTest, RefusesEveryAlteration) {
  QrTokenSigner signer("k-0123456789-0123456789-0123456789");
  const std::string token = signer.Sign(kClaims);
  for (size_t i = 0; i < token.size(); ++i) {
    std::string forged = token;
    forged[i] = forged[i] == '0' ? '1' : '0';
    if (forged == token) continue;
    EXPECT_EQ(ReasonOf(signer.Verify(forged).status()), cpb::TOKEN_INVALID) << i;
  }
  EXPECT_FALSE(signer.Verify("").ok());
  EXPECT_FALSE(signer.Verify("q1.").ok());
  EXPECT_FALSE(signer.Verify(token + "00").ok());
  EXPECT_FALSE(QrTokenSigner("another-key-0123456789-0123456789").Verify(token).ok());
}

}  // namespace
}  // namespace mkt::rewards
