// The events service's defence against an event whose data the database refuses (a value
// validation did not foresee): the batch is applied in parts until that event stands alone, it is
// set aside for the dead-letter topic, and the rest of the batch is applied in order. Transient
// failures are never taken for refusals.
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "libs/core/status.h"
#include "services/events/event_store.h"
#include "services/events/events_service.h"

namespace mkt::events {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::IsEmpty;

// A store stand-in over events 0..n-1: a range holding a poisoned event fails with a data
// exception (as PostgreSQL's 22P02 would), `transient_at` fails the n-th call with ABORTED.
struct FakeBatches {
  std::set<size_t> poisoned;
  int transient_at = -1;
  int calls = 0;
  std::vector<size_t> applied;
  std::vector<size_t> refused;
  std::vector<std::string> reasons;

  absl::Status Apply(size_t begin, size_t end) {
    if (calls++ == transient_at) {
      return absl::AbortedError("transaction aborted by a concurrent one: deadlock detected");
    }
    for (size_t i = begin; i < end; ++i) {
      if (poisoned.count(i) > 0) {
        return DataException("22P02", "PostgreSQL error 22P02: malformed array literal");
      }
    }
    for (size_t i = begin; i < end; ++i) applied.push_back(i);
    return absl::OkStatus();
  }

  absl::Status Run(size_t count) {
    return ApplyIsolatingRefusedEvents(
        count, [this](size_t b, size_t e) { return Apply(b, e); },
        [this](size_t i, const absl::Status& s) {
          refused.push_back(i);
          reasons.emplace_back(s.message());
        });
  }
};

std::vector<size_t> AllBut(size_t n, const std::set<size_t>& skip) {
  std::vector<size_t> out;
  for (size_t i = 0; i < n; ++i) {
    if (skip.count(i) == 0) out.push_back(i);
  }
  return out;
}

TEST(ApplyIsolatingRefusedEventsTest, AGoodBatchIsOneTransaction) {
  FakeBatches f;
  EXPECT_TRUE(f.Run(500).ok());
  EXPECT_EQ(f.calls, 1);
  EXPECT_EQ(f.applied.size(), 500u);
  EXPECT_THAT(f.refused, IsEmpty());
}

TEST(ApplyIsolatingRefusedEventsTest, OneRefusedEventIsSetAsideAndTheOthersAppliedOnceInOrder) {
  for (size_t bad : {size_t{0}, size_t{1}, size_t{250}, size_t{499}}) {
    FakeBatches f;
    f.poisoned = {bad};
    ASSERT_TRUE(f.Run(500).ok());
    EXPECT_THAT(f.refused, ElementsAre(bad));
    EXPECT_THAT(f.reasons, ElementsAre("PostgreSQL error 22P02: malformed array literal"));
    EXPECT_THAT(f.applied, ElementsAreArray(AllBut(500, {bad})));
    // Bisection: two transactions per level, not one per event.
    EXPECT_LE(f.calls, 1 + 2 * 9);
  }
}

TEST(ApplyIsolatingRefusedEventsTest, SeveralRefusedEventsEvenAll) {
  FakeBatches f;
  f.poisoned = {3, 4, 17, 18, 19, 31};
  ASSERT_TRUE(f.Run(32).ok());
  EXPECT_THAT(f.refused, ElementsAre(3, 4, 17, 18, 19, 31));
  EXPECT_THAT(f.applied, ElementsAreArray(AllBut(32, f.poisoned)));

  FakeBatches all;
  for (size_t i = 0; i < 7; ++i) all.poisoned.insert(i);
  ASSERT_TRUE(all.Run(7).ok());
  EXPECT_THAT(all.refused, ElementsAre(0, 1, 2, 3, 4, 5, 6));
  EXPECT_THAT(all.applied, IsEmpty());

  FakeBatches single;
  single.poisoned = {0};
  ASSERT_TRUE(single.Run(1).ok());
  EXPECT_THAT(single.refused, ElementsAre(0));
  EXPECT_EQ(single.calls, 1);
}

TEST(ApplyIsolatingRefusedEventsTest, TransientFailuresAreReturnedNeverRefused) {
  // At once: the whole batch is retried by the consumer, nothing is set aside.
  FakeBatches first;
  first.transient_at = 0;
  absl::Status s = first.Run(10);
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted);
  EXPECT_THAT(first.refused, IsEmpty());
  EXPECT_THAT(first.applied, IsEmpty());

  // In the middle of the search: what was applied stays (a retry finds it deduplicated), the
  // failure is returned, and the part that failed is not taken for refused data.
  FakeBatches middle;
  middle.poisoned = {7};
  middle.transient_at = 2;  // 0: whole batch (refused), 1: [0,5) applied, 2: [5,10) aborted
  s = middle.Run(10);
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted);
  EXPECT_THAT(middle.applied, ElementsAre(0, 1, 2, 3, 4));
  EXPECT_THAT(middle.refused, IsEmpty());

  // Errors that are not data exceptions (INTERNAL, UNAVAILABLE) are never bisected either.
  int calls = 0;
  std::vector<size_t> refused;
  for (absl::Status failure : {Internal("PostgreSQL error 42P01: relation does not exist"),
                               Unavailable("lost the connection to PostgreSQL")}) {
    EXPECT_EQ(ApplyIsolatingRefusedEvents(
                  8,
                  [&](size_t, size_t) {
                    ++calls;
                    return failure;
                  },
                  [&](size_t i, const absl::Status&) { refused.push_back(i); }),
              failure);
  }
  EXPECT_EQ(calls, 2);
  EXPECT_THAT(refused, IsEmpty());
}

TEST(DataExceptionTest, CarriesItsSqlState) {
  absl::Status s = DataException("22P05", "unsupported Unicode escape sequence");
  EXPECT_TRUE(IsDataException(s));
  EXPECT_EQ(DataExceptionSqlState(s), "22P05");
  EXPECT_FALSE(IsDataException(Internal("PostgreSQL error 22P02: malformed array literal")));
  EXPECT_FALSE(IsDataException(absl::InvalidArgumentError("x")));
  EXPECT_FALSE(IsDataException(absl::OkStatus()));
}

}  // namespace
}  // namespace mkt::events
