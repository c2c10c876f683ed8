#include "libs/auth/crypto.h"

#include "gtest/gtest.h"

namespace mkt::auth {
namespace {

constexpr char kKey[] = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

TEST(CryptoTest, KnownDigests) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  // RFC 4231 test case 2.
  EXPECT_EQ(HmacSha256Hex("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(CryptoTest, ConstantTimeEquals) {
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abcd"));
}

TEST(SecretBoxTest, SealsAndOpens) {
  auto box = SecretBox::FromHexKey(kKey);
  ASSERT_TRUE(box.ok());
  std::string sealed = box->Seal("s3cret", "ch_1");
  EXPECT_EQ(sealed.find("s3cret"), std::string::npos);
  EXPECT_NE(sealed, box->Seal("s3cret", "ch_1")) << "each seal uses a fresh nonce";
  auto opened = box->Open(sealed, "ch_1");
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(*opened, "s3cret");
}

TEST(SecretBoxTest, RefusesTamperingOtherContextAndOtherKey) {
  auto box = SecretBox::FromHexKey(kKey);
  std::string sealed = box->Seal("s3cret", "ch_1");
  EXPECT_FALSE(box->Open(sealed, "ch_2").ok());
  std::string tampered = sealed;
  tampered[30] = tampered[30] == 'a' ? 'b' : 'a';
  EXPECT_FALSE(box->Open(tampered, "ch_1").ok());
  auto other = SecretBox::FromHexKey(std::string(64, 'f'));
  EXPECT_FALSE(other->Open(sealed, "ch_1").ok());
  EXPECT_FALSE(box->Open("zz", "ch_1").ok());
}

TEST(SecretBoxTest, RejectsBadKeys) {
  EXPECT_FALSE(SecretBox::FromHexKey("").ok());
  EXPECT_FALSE(SecretBox::FromHexKey(std::string(63, 'a')).ok());
  EXPECT_FALSE(SecretBox::FromHexKey(std::string(64, 'g')).ok());
}

}  // namespace
}  // namespace mkt::auth
