#include "libs/core/ids.h"

#include <set>
#include <thread>
#include <vector>

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

TEST(IdsTest, RequestIdsFromManyThreadsAreDistinct) {
  constexpr int kThreads = 4;
  constexpr int kEach = 2000;
  std::vector<std::vector<std::string>> ids(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&ids, t] {
      for (int i = 0; i < kEach; ++i) ids[t].push_back(NewRequestId());
    });
  }
  for (auto& th : threads) th.join();
  std::set<std::string> seen;
  for (const auto& per_thread : ids) seen.insert(per_thread.begin(), per_thread.end());
  EXPECT_EQ(seen.size(), static_cast<size_t>(kThreads * kEach));
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
