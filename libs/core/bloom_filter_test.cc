#include "libs/core/bloom_filter.h"

#include <string>

#include "gtest/gtest.h"

namespace mkt {
namespace {

TEST(BloomFilterTest, EveryAddedKeyIsFoundAndFewOthersAre) {
  BloomFilter f = BloomFilter::ForKeys(10'000, 0.01);
  for (int i = 0; i < 10'000; ++i) f.Add("key-" + std::to_string(i));
  for (int i = 0; i < 10'000; ++i) EXPECT_TRUE(f.MayContain("key-" + std::to_string(i))) << i;
  int false_positives = 0;
  for (int i = 0; i < 100'000; ++i) false_positives += f.MayContain("other-" + std::to_string(i));
  // 1 % expected: 1,000 of 100,000; well under 2 % leaves room for chance, not for a bad hash.
  EXPECT_LT(false_positives, 2'000);
  EXPECT_EQ(f.hashes(), 7);
  EXPECT_EQ(f.bytes().size(), 11'982u);  // 95,851 bits: 9.6 bits per key
}

TEST(BloomFilterTest, AnEmptyFilterHoldsNothing) {
  BloomFilter f = BloomFilter::ForKeys(0);
  EXPECT_FALSE(f.MayContain(""));
  EXPECT_FALSE(f.MayContain("k"));
  EXPECT_GE(f.bytes().size(), 8u);
}

// The bits travel between processes: the same keys give the same bytes in any process, and a
// copy made from them answers as the original.
TEST(BloomFilterTest, ACopyFromItsBytesAnswersAsTheOriginal) {
  BloomFilter f = BloomFilter::ForKeys(3);
  f.Add("idem-1");
  f.Add("idem-2");
  f.Add("");
  std::optional<BloomFilter> copy = BloomFilter::FromBytes(f.bytes(), f.hashes());
  ASSERT_TRUE(copy.has_value());
  for (const char* k : {"idem-1", "idem-2", ""}) EXPECT_TRUE(copy->MayContain(k)) << k;
  EXPECT_EQ(copy->MayContain("idem-3"), f.MayContain("idem-3"));
  // Pinned: a change of hash would make gateways and campaigns replicas of different versions
  // disagree during a rolling upgrade.
  BloomFilter pinned = BloomFilter::ForKeys(1);
  pinned.Add("idem-1");
  std::string hex;
  for (unsigned char c : pinned.bytes()) {
    static constexpr char kDigits[] = "0123456789abcdef";
    hex += kDigits[c >> 4];
    hex += kDigits[c & 0xf];
  }
  EXPECT_EQ(hex, "0000000000007f00");
}

TEST(BloomFilterTest, BytesThatCannotBeAFilterAreRefused) {
  EXPECT_FALSE(BloomFilter::FromBytes("", 3).has_value());
  EXPECT_FALSE(BloomFilter::FromBytes("12345678", 0).has_value());
  EXPECT_FALSE(BloomFilter::FromBytes("12345678", 33).has_value());
  EXPECT_TRUE(BloomFilter::FromBytes("12345678", 32).has_value());
}

}  // namespace
}  // namespace mkt
