#include "services/gateway/admin_auth.h"

#include "absl/strings/escaping.h"
#include "gtest/gtest.h"
#include "libs/core/status.h"
#include "services/gateway/password_hash.h"

namespace mkt::gateway {
namespace {

constexpr ScryptCost kCheap{.n = 1024, .r = 8, .p = 1};

TokenClaims Claims(absl::Time expires) {
  return {"sess1", "alice", "bank-a", {"planner", "approver"}, expires};
}

TEST(TokenSignerTest, RoundTripsClaims) {
  TokenSigner signer("key-1");
  const absl::Time now = absl::FromUnixSeconds(1'800'000'000);
  absl::StatusOr<TokenClaims> claims =
      signer.Verify(signer.Sign(Claims(now + absl::Hours(1))), now);
  ASSERT_TRUE(claims.ok()) << claims.status();
  EXPECT_EQ(claims->operator_id, "alice");
  EXPECT_EQ(claims->org_id, "bank-a");
  EXPECT_EQ(claims->roles, (std::vector<std::string>{"planner", "approver"}));
  EXPECT_EQ(claims->session_id, "sess1");
}

TEST(TokenSignerTest, ExpiredTamperedOrForeignTokensAreRefused) {
  TokenSigner signer("key-1");
  const absl::Time now = absl::FromUnixSeconds(1'800'000'000);
  const std::string token = signer.Sign(Claims(now + absl::Hours(1)));

  auto expect_invalid = [&](const std::string& t, absl::Time at) {
    absl::StatusOr<TokenClaims> c = signer.Verify(t, at);
    ASSERT_FALSE(c.ok()) << t;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kUnauthenticated);
    EXPECT_EQ(ReasonName(ReasonOf(c.status())), "TOKEN_INVALID");
  };
  expect_invalid(token, now + absl::Hours(1));
  expect_invalid(TokenSigner("other-key").Sign(Claims(now + absl::Hours(1))), now);
  // Raise the org in the payload, keep the signature.
  const size_t first = token.find('.'), last = token.rfind('.');
  std::string payload;
  ASSERT_TRUE(absl::WebSafeBase64Unescape(token.substr(first + 1, last - first - 1), &payload));
  const size_t org = payload.find("bank-a");
  ASSERT_NE(org, std::string::npos);
  payload.replace(org, 6, "fed\"  ");
  expect_invalid(absl::StrCat("mkt1.", absl::WebSafeBase64Escape(payload), token.substr(last)),
                 now);
  std::string flipped = token;
  flipped.back() = flipped.back() == '0' ? '1' : '0';
  expect_invalid(flipped, now);
  expect_invalid("not-a-token", now);
  expect_invalid("", now);
}

TEST(PasswordHashTest, VerifiesOnlyTheRightPassword) {
  absl::StatusOr<std::string> hash = HashPassword("correct horse battery", kCheap);
  ASSERT_TRUE(hash.ok());
  EXPECT_EQ(hash->rfind("scrypt$1024$8$1$", 0), 0u);
  EXPECT_TRUE(VerifyPassword("correct horse battery", *hash));
  EXPECT_FALSE(VerifyPassword("correct horse battery!", *hash));
  EXPECT_FALSE(VerifyPassword("", *hash));
  EXPECT_FALSE(VerifyPassword("correct horse battery", "scrypt$1024$8$1$00$00"));
  EXPECT_FALSE(VerifyPassword("x", "plain"));
  // Salted: the same password hashes differently each time.
  EXPECT_NE(*HashPassword("correct horse battery", kCheap), *hash);
}

TEST(OperatorValidationTest, ChecksIdsPasswordsAndRoles) {
  EXPECT_TRUE(ValidateOperatorId("alice.w").ok());
  EXPECT_FALSE(ValidateOperatorId("Al").ok());
  EXPECT_FALSE(ValidateOperatorId("alice smith").ok());
  EXPECT_TRUE(ValidatePassword("twelve chars").ok());
  EXPECT_FALSE(ValidatePassword("short").ok());
  google::protobuf::RepeatedPtrField<std::string> roles;
  EXPECT_FALSE(ValidateRoles(roles).ok());
  *roles.Add() = "planner";
  EXPECT_TRUE(ValidateRoles(roles).ok());
  *roles.Add() = "superuser";
  EXPECT_EQ(FieldOf(ValidateRoles(roles)), "roles");
}

// Display names are shown to people and stored in a text column (which holds no NUL): PostgreSQL
// would refuse malformed UTF-8 with an error that looks like ours (500).
TEST(OperatorValidationTest, DisplayNamesArePrintableTextOfAtMost100Characters) {
  EXPECT_TRUE(ValidateDisplayName("").ok());
  EXPECT_TRUE(ValidateDisplayName("\xE5\xBC\xA0\xE4\xB8\x89 (branch 12)").ok());
  EXPECT_TRUE(ValidateDisplayName(std::string(100, 'a')).ok());
  EXPECT_EQ(FieldOf(ValidateDisplayName(std::string(101, 'a'))), "display_name");
  EXPECT_EQ(FieldOf(ValidateDisplayName(std::string_view("a\0b", 3))), "display_name");
  EXPECT_EQ(FieldOf(ValidateDisplayName("bell\x07")), "display_name");
  EXPECT_EQ(FieldOf(ValidateDisplayName("\xFF")), "display_name");
}

}  // namespace
}  // namespace mkt::gateway
