#include "libs/core/text.h"

#include <string>

#include "gtest/gtest.h"

namespace mkt {
namespace {

TEST(TextTest, AcceptsWellFormedText) {
  EXPECT_TRUE(IsWellFormedUtf8(""));
  EXPECT_TRUE(IsWellFormedUtf8("plain"));
  EXPECT_TRUE(IsWellFormedUtf8("手机银行 💳"));
  EXPECT_EQ(PrintableUtf8Length("手机银行"), 4);
  EXPECT_EQ(PrintableUtf8Length("a💳b"), 3);
}

TEST(TextTest, RefusesMalformedUtf8) {
  for (std::string bad : {std::string("\xff"), std::string("\xc0\xaf"),  // overlong '/'
                          std::string("\xed\xa0\x80"),                   // surrogate
                          std::string("\xf4\x90\x80\x80"),               // > U+10FFFF
                          std::string("abc\xe6\x89"),                    // truncated
                          std::string("a\0b", 3)}) {
    EXPECT_FALSE(IsWellFormedUtf8(bad));
    EXPECT_EQ(PrintableUtf8Length(bad), -1);
  }
}

TEST(TextTest, ControlCharactersAreNotPrintable) {
  EXPECT_TRUE(IsWellFormedUtf8("tab\there"));
  EXPECT_EQ(PrintableUtf8Length("tab\there"), -1);
  EXPECT_EQ(PrintableUtf8Length("del\x7f"), -1);
  EXPECT_EQ(PrintableUtf8Length("line\nbreak"), -1);
}

std::string Repeat(std::string_view s, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += s;
  return out;
}

TEST(StorableTextTest, CutsOnACharacterBoundary) {
  const std::string three = Repeat("失", 200);  // 3 bytes each
  EXPECT_EQ(StorableText(three, 500), three.substr(0, 498));
  EXPECT_EQ(StorableText(three, 501), three.substr(0, 501));
  EXPECT_EQ(StorableText(three, 600), three);
  EXPECT_EQ(StorableText(three, 2), "");
  const std::string four = Repeat("😀", 10);  // 4 bytes each
  EXPECT_EQ(StorableText(four, 7), four.substr(0, 4));
  EXPECT_EQ(StorableText("ascii text", 5), "ascii");
  EXPECT_EQ(StorableText("", 5), "");
  for (size_t max = 0; max < 40; ++max) {
    const std::string cut = StorableText("a失😀é" + four, max);
    EXPECT_LE(cut.size(), max);
    EXPECT_TRUE(IsWellFormedUtf8(cut)) << max;
  }
}

TEST(StorableTextTest, ReplacesMalformedBytesAndNul) {
  EXPECT_EQ(StorableText(std::string("a\0b", 3), 10), "a\uFFFDb");
  EXPECT_EQ(StorableText("a\xff"
                         "b",
                         10),
            "a\uFFFDb");
  EXPECT_EQ(StorableText("ok\xe5\xa4", 10), "ok\uFFFD\uFFFD");        // a truncated character
  EXPECT_EQ(StorableText("\xc0\xaf", 10), "\uFFFD\uFFFD");            // overlong '/'
  EXPECT_EQ(StorableText("\xed\xa0\x80", 10), "\uFFFD\uFFFD\uFFFD");  // a UTF-16 surrogate
  // A replacement that would not fit is left out whole.
  EXPECT_EQ(StorableText("ab\xff", 4), "ab");
  EXPECT_TRUE(IsWellFormedUtf8(StorableText(std::string("\0\x80\xf5 x", 5), 100)));
}

}  // namespace
}  // namespace mkt
