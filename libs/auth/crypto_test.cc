#include "libs/auth/crypto.h"

#include <atomic>
#include <string>
#include <thread>
#include <vector>

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

// Each thread keeps its HMAC context keyed between calls: a change of key, an empty key or data,
// and other threads must never see a previous key's digest.
TEST(CryptoTest, HmacKeepsNoStateBetweenKeysOrThreads) {
  const std::string jefe = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
  // RFC 4231 test case 1: key 20 × 0x0b, "Hi There".
  const std::string case1 = "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7";
  const std::string key1(20, '\x0b');
  for (int round = 0; round < 3; ++round) {
    EXPECT_EQ(HmacSha256Hex("Jefe", "what do ya want for nothing?"), jefe);
    EXPECT_EQ(HmacSha256Hex("Jefe", "what do ya want for nothing?"), jefe);
    EXPECT_EQ(HmacSha256Hex(key1, "Hi There"), case1);
  }
  EXPECT_EQ(HmacSha256Hex("", ""),
            "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
  EXPECT_EQ(HmacSha256Hex(key1, "Hi There"), case1);
  EXPECT_EQ(HmacSha256Hex(std::string_view(), std::string_view()),
            "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad")
      << "an empty key (even a null one) is the empty key, not the previous one";
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        if ((i + t) % 2 == 0) {
          if (HmacSha256Hex("Jefe", "what do ya want for nothing?") != jefe) ++wrong;
        } else if (HmacSha256Hex(key1, "Hi There") != case1) {
          ++wrong;
        }
        if (Sha256Hex("") != "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") {
          ++wrong;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
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
