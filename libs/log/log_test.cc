#include "libs/log/log.h"

#include <cstdio>
#include <fstream>
#include <sstream>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace mkt::log {
namespace {

TEST(LogTest, MaskKeepsOnlyEnds) {
  EXPECT_EQ(Mask("13800138000"), "138****8000");
  EXPECT_EQ(Mask("short"), "*****");
  EXPECT_EQ(Mask(""), "");
}

TEST(LogTest, JsonEscape) { EXPECT_EQ(JsonEscape("a\"b\\c\nd\x01"), "a\\\"b\\\\c\\nd\\u0001"); }

TEST(LogTest, ScopedRequestIdNests) {
  EXPECT_EQ(CurrentRequestId(), "-");
  {
    ScopedRequestId outer("r1");
    EXPECT_EQ(CurrentRequestId(), "r1");
    {
      ScopedRequestId inner("r2");
      EXPECT_EQ(CurrentRequestId(), "r2");
    }
    EXPECT_EQ(CurrentRequestId(), "r1");
  }
  EXPECT_EQ(CurrentRequestId(), "-");
}

TEST(LogTest, JsonLinesCarryRequestIdAndEscapedMessage) {
  // Redirect stderr to a file to read what the logger wrote.
  std::string path = ::testing::TempDir() + "/log_test.jsonl";
  fflush(stderr);
  FILE* saved = freopen(path.c_str(), "w", stderr);
  ASSERT_NE(saved, nullptr);
  Init("unit-svc", Format::kJson, "info");
  {
    ScopedRequestId id("req-42");
    spdlog::info("granted \"{}\" points\nto {}", 100, Mask("6222020000001234"));
  }
  spdlog::debug("not shown at info");
  spdlog::default_logger()->flush();
  fflush(stderr);
  std::ifstream in(path);
  std::string line;
  std::vector<nlohmann::json> lines;
  while (std::getline(in, line)) lines.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["service"], "unit-svc");
  EXPECT_EQ(lines[0]["request_id"], "req-42");
  EXPECT_EQ(lines[0]["level"], "info");
  EXPECT_EQ(lines[0]["msg"], "granted \"100\" points\nto 622*********1234");
  spdlog::drop_all();
}

}  // namespace
}  // namespace mkt::log
