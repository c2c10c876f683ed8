#include "libs/core/ids.h"

#include <set>

#include "gtest/gtest.h"

namespace mkt {
namespace {

TEST(IdsTest, RequestIdsAreHexAndDistinct) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    std::string id = NewRequestId();
    ASSERT_EQ(id.size(), 32u);
    ASSERT_TRUE(IsValidRequestId(id));
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 1000u);
}

TEST(IdsTest, EventIdIsUuidV4) {
  std::string id = NewEventId();
  ASSERT_EQ(id.size(), 36u);
  EXPECT_EQ(id[8], '-');
  EXPECT_EQ(id[14], '4');
}

TEST(IdsTest, RejectsHostileRequestIds) {
  EXPECT_FALSE(IsValidRequestId(""));
  EXPECT_FALSE(IsValidRequestId(std::string(65, 'a')));
  EXPECT_FALSE(IsValidRequestId("abc\"def"));
  EXPECT_FALSE(IsValidRequestId("line\nbreak"));
  EXPECT_TRUE(IsValidRequestId("req-2026.11_26"));
}

}  // namespace
}  // namespace mkt
