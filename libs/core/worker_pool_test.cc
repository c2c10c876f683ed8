#include "libs/core/worker_pool.h"

#include <atomic>
#include <latch>

#include "gtest/gtest.h"

namespace mkt {
namespace {

TEST(WorkerPoolTest, RunsEveryAcceptedTask) {
  std::atomic<int> done{0};
  {
    WorkerPool pool("t", 3, 1000);
    for (int i = 0; i < 500; ++i) ASSERT_TRUE(pool.TrySubmit([&] { done++; }));
  }
  EXPECT_EQ(done.load(), 500);
}

TEST(WorkerPoolTest, RefusesWhenQueueIsFull) {
  std::latch release(1);
  std::latch started(1);
  WorkerPool pool("t", 1, 2);
  ASSERT_TRUE(pool.TrySubmit([&] {
    started.count_down();
    release.wait();
  }));
  started.wait();
  EXPECT_TRUE(pool.TrySubmit([] {}));
  EXPECT_TRUE(pool.TrySubmit([] {}));
  EXPECT_FALSE(pool.TrySubmit([] {}));
  release.count_down();
}

}  // namespace
}  // namespace mkt
