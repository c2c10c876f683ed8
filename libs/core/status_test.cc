#include "libs/core/status.h"

#include "gtest/gtest.h"

namespace mkt {
namespace {

namespace pb = ::marketing::common::v1;

TEST(StatusTest, ReasonAndFieldSurviveCopies) {
  absl::Status s = Error(absl::StatusCode::kFailedPrecondition, pb::STOCK_EXHAUSTED,
                         "no stock left", "template_id");
  absl::Status copy = s;
  EXPECT_EQ(ReasonOf(copy), pb::STOCK_EXHAUSTED);
  EXPECT_EQ(FieldOf(copy), "template_id");
  EXPECT_EQ(ReasonName(ReasonOf(copy)), "STOCK_EXHAUSTED");
  EXPECT_EQ(HttpStatusFor(copy), 409);
}

TEST(StatusTest, CodeImpliesReasonWhenNoneAttached) {
  EXPECT_EQ(ReasonOf(absl::NotFoundError("x")), pb::NOT_FOUND);
  EXPECT_EQ(ReasonOf(absl::UnavailableError("x")), pb::DEPENDENCY_UNAVAILABLE);
  EXPECT_EQ(ReasonOf(absl::UnknownError("x")), pb::INTERNAL);
  EXPECT_EQ(FieldOf(absl::NotFoundError("x")), "");
}

TEST(StatusTest, HttpStatusForEachClass) {
  EXPECT_EQ(HttpStatusFor(InvalidArgument("code", "bad")), 400);
  EXPECT_EQ(HttpStatusFor(Error(absl::StatusCode::kUnauthenticated, pb::NONCE_REPLAYED, "x")), 401);
  EXPECT_EQ(HttpStatusFor(Error(absl::StatusCode::kResourceExhausted, pb::BODY_TOO_LARGE, "x")),
            413);
  EXPECT_EQ(HttpStatusFor(Error(absl::StatusCode::kResourceExhausted, pb::RATE_LIMITED, "x")), 429);
  EXPECT_EQ(HttpStatusFor(Unavailable("down")), 503);
  EXPECT_EQ(HttpStatusFor(Internal("bug")), 500);
}

absl::StatusOr<int> Half(int x) {
  if (x % 2 != 0) return InvalidArgument("x", "must be even");
  return x / 2;
}

absl::StatusOr<int> Quarter(int x) {
  MKT_ASSIGN_OR_RETURN(int h, Half(x));
  MKT_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

TEST(StatusTest, AssignOrReturnPropagates) {
  EXPECT_EQ(*Quarter(8), 2);
  EXPECT_EQ(FieldOf(Quarter(6).status()), "x");
}

}  // namespace
}  // namespace mkt
