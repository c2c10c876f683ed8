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

}  // namespace
}  // namespace mkt
