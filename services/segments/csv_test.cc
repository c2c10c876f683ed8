// The CSV reader: quoting, line numbers of records spanning lines, malformed records.
#include "services/segments/csv.h"

#include "gtest/gtest.h"

namespace mkt::segments {
namespace {

TEST(CsvTest, FieldsQuotesAndLineNumbers) {
  auto records = ParseCsv(
      "\xEF\xBB\xBF"
      "customer_id,a,b\r\n"
      "c1,\"x,y\",\"say \"\"hi\"\"\"\r\n"
      "\n"
      "c2,\"two\nlines\",\n"
      "c3,\"open\n");
  ASSERT_EQ(records.size(), 4u);
  EXPECT_EQ(records[0].fields, (std::vector<std::string>{"customer_id", "a", "b"}));
  EXPECT_EQ(records[0].line, 1);
  EXPECT_EQ(records[1].fields, (std::vector<std::string>{"c1", "x,y", "say \"hi\""}));
  EXPECT_EQ(records[1].line, 2);
  EXPECT_EQ(records[2].line, 4);
  EXPECT_EQ(records[2].fields, (std::vector<std::string>{"c2", "two\nlines", ""}));
  EXPECT_EQ(records[3].line, 6);
  EXPECT_FALSE(records[3].error.empty());
  EXPECT_TRUE(records[1].error.empty());
}

TEST(CsvTest, TextAfterClosingQuoteIsAnError) {
  auto records = ParseCsv("a,\"b\"c,d\n");
  ASSERT_EQ(records.size(), 1u);
  EXPECT_FALSE(records[0].error.empty());
}

}  // namespace
}  // namespace mkt::segments
