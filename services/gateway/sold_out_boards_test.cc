// The gateway's copies of the campaigns' sold-out boards (decision 023), around the Participate
// route's invokers, with a fake service behind them.
#include "services/gateway/sold_out_boards.h"

#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "libs/core/status.h"
#include "services/gateway/test_fakes.h"

namespace mkt::gateway {
namespace {

namespace cpb = ::marketing::campaigns::v1;
namespace gpb = ::google::protobuf;
using testing::FakeClock;

const absl::Status kSoldOut =
    Error(absl::StatusCode::kFailedPrecondition, ::marketing::common::v1::STOCK_EXHAUSTED,
          "the campaign's rewards are all given out");

class SoldOutBoardsTest : public ::testing::TestWithParam<bool> {
 protected:
  SoldOutBoardsTest() {
    route_.invoke = [this](const ApiCall&, const gpb::Message& request, gpb::Message*) {
      const auto& claim = static_cast<const cpb::ParticipateRequest&>(request);
      service_calls_.push_back(claim.idempotency_key());
      return stored_.contains(claim.idempotency_key()) ? absl::OkStatus() : kSoldOut;
    };
    route_.invoke_async = [this](const ApiCall& call, const gpb::Message& request,
                                 gpb::Message* response, std::function<void(absl::Status)> done) {
      done(route_invoke_(call, request, response));
    };
    route_invoke_ = route_.invoke;
    GuardWithSoldOutBoards(
        route_,
        [this](const std::string& campaign_id, const CallerIdentity& caller,
               std::function<void(absl::StatusOr<cpb::SoldOutBoard>)> done) {
          fetches_.push_back(campaign_id + " as " + caller.request_id);
          if (!board_ready_) {
            cpb::SoldOutBoard not_yet;
            not_yet.set_campaign_id(campaign_id);
            return done(not_yet);
          }
          BloomFilter filter = BloomFilter::ForKeys(stored_.size());
          for (const std::string& key : stored_) filter.Add(key);
          cpb::SoldOutBoard board;
          board.set_campaign_id(campaign_id);
          board.set_sold_out(true);
          board.set_valid_ms(10'000);
          board.set_filter(filter.bytes());
          board.set_filter_hashes(filter.hashes());
          board.set_org_id("bank-a");
          done(board);
        },
        boards_);
  }

  // A claim through the wrapped route, blocking or async by the test's parameter.
  absl::Status Claim(const std::string& key, const std::string& campaign = "cmp-1",
                     const std::string& customer_org = "bank-a.branch-01") {
    cpb::ParticipateRequest request;
    request.set_campaign_id(campaign);
    request.set_idempotency_key(key);
    request.set_customer_org_id(customer_org);
    cpb::Participation response;
    HttpRequest http;
    ApiCall call{http, std::nullopt, std::nullopt, {}, {"req-" + key, {}}};
    if (!GetParam()) return route_.invoke(call, request, &response);
    absl::Status out = absl::UnknownError("not answered");
    route_.invoke_async(call, request, &response, [&](absl::Status s) { out = std::move(s); });
    return out;
  }

  FakeClock clock_;
  SoldOutBoards boards_{clock_};
  ApiRoute route_;
  Invoker route_invoke_;
  // Keys with a stored participation at the service; a claim of any other key is sold out.
  std::set<std::string> stored_ = {"ch:granted-1", "ch:granted-2"};
  bool board_ready_ = true;
  std::vector<std::string> service_calls_;
  std::vector<std::string> fetches_;
};

INSTANTIATE_TEST_SUITE_P(BlockingAndAsync, SoldOutBoardsTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Async" : "Blocking";
                         });

TEST_P(SoldOutBoardsTest, AfterTheFirstSoldOutAnswerUnknownKeysAreRefusedHereAsTheServiceWould) {
  const absl::Status first = Claim("ch:first");
  EXPECT_EQ(first, kSoldOut);
  EXPECT_EQ(fetches_, (std::vector<std::string>{"cmp-1 as req-ch:first"}));

  // Refused without a call, with the service's own status, reason and message.
  for (int i = 0; i < 100; ++i) {
    const absl::Status refused = Claim("ch:new-" + std::to_string(i));
    EXPECT_EQ(refused, kSoldOut);
    EXPECT_EQ(ReasonOf(refused), ::marketing::common::v1::STOCK_EXHAUSTED);
  }
  // About 1 in 100 unknown keys passes the filter and is answered by the service itself.
  EXPECT_LE(service_calls_.size(), 1u + 5u);
  // A stored key always goes to the service, which answers it as stored.
  const size_t before = service_calls_.size();
  EXPECT_TRUE(Claim("ch:granted-1").ok());
  EXPECT_TRUE(Claim("ch:granted-2").ok());
  EXPECT_EQ(service_calls_.size(), before + 2);
  EXPECT_EQ(fetches_.size(), 1u) << "one fetch while the copy stands";
  // Other campaigns are not affected.
  EXPECT_EQ(Claim("ch:x", "cmp-2"), kSoldOut);
  EXPECT_EQ(service_calls_.back(), "ch:x");
}

// The copy refuses only the campaign's own customers: a claim from another bank goes to the
// service, which answers it as an unknown campaign (decision 023, amended): a sold-out answer
// would tell that bank the campaign exists.
TEST_P(SoldOutBoardsTest, AnotherBanksClaimIsNeverRefusedFromTheCopy) {
  ASSERT_EQ(Claim("ch:first"), kSoldOut);
  ASSERT_EQ(Claim("ch:a"), kSoldOut);
  const size_t calls = service_calls_.size();
  ASSERT_EQ(Claim("ch:b"), kSoldOut);
  EXPECT_EQ(service_calls_.size(), calls) << "the campaign's own customer: refused here";
  (void)Claim("ch:c", "cmp-1", "bank-b");
  EXPECT_EQ(service_calls_.size(), calls + 1) << "another bank's customer: the service answers";
  EXPECT_EQ(service_calls_.back(), "ch:c");
}

TEST_P(SoldOutBoardsTest, TheCopyEndsWithTheServicesMark) {
  ASSERT_EQ(Claim("ch:first"), kSoldOut);
  ASSERT_EQ(Claim("ch:a"), kSoldOut);
  const size_t calls = service_calls_.size();
  clock_.Advance(absl::Milliseconds(9'999));
  ASSERT_EQ(Claim("ch:b"), kSoldOut);
  EXPECT_EQ(service_calls_.size(), calls) << "still refused here";
  clock_.Advance(absl::Milliseconds(1));
  // A restock shows: the service decides again, and a new board is fetched on its next refusal.
  stored_.insert("ch:c");
  EXPECT_TRUE(Claim("ch:c").ok());
  EXPECT_EQ(service_calls_.back(), "ch:c");
  EXPECT_EQ(fetches_.size(), 1u);
  EXPECT_EQ(Claim("ch:d"), kSoldOut);
  EXPECT_EQ(fetches_.size(), 2u);
}

TEST_P(SoldOutBoardsTest, ABoardTheServiceDoesNotHandOutYetRefusesNothingAndIsAskedAgainLater) {
  board_ready_ = false;
  ASSERT_EQ(Claim("ch:first"), kSoldOut);
  ASSERT_EQ(Claim("ch:second"), kSoldOut);
  EXPECT_EQ(service_calls_.size(), 2u) << "no copy: every claim reaches the service";
  EXPECT_EQ(fetches_.size(), 1u) << "not asked again at once";
  clock_.Advance(SoldOutBoards::kRefetchAfter);
  board_ready_ = true;
  ASSERT_EQ(Claim("ch:third"), kSoldOut);
  EXPECT_EQ(fetches_.size(), 2u);
  ASSERT_EQ(Claim("ch:fourth"), kSoldOut);
  EXPECT_EQ(service_calls_.size(), 3u) << "refused here once the board came";
}

// The ledger's refusal comes first; the service's own sold-out answer follows once it marked the
// campaign, and that is what claims refused here get.
TEST(SoldOutBoardsLimitTest, TheLatestRefusalIsTheOneGiven) {
  FakeClock clock;
  SoldOutBoards boards(clock);
  const absl::Status ledger = Error(absl::StatusCode::kFailedPrecondition,
                                    ::marketing::common::v1::STOCK_EXHAUSTED, "stock is used up");
  ASSERT_TRUE(boards.ShouldFetch("a", ledger));
  EXPECT_FALSE(boards.ShouldFetch("a", kSoldOut));
  BloomFilter none = BloomFilter::ForKeys(0);
  cpb::SoldOutBoard board;
  board.set_sold_out(true);
  board.set_valid_ms(1000);
  board.set_filter(none.bytes());
  board.set_filter_hashes(none.hashes());
  boards.Store("a", board);
  EXPECT_FALSE(boards.Refusal("a", "k", "bank-a").has_value()) << "a board naming no org";
  board.set_org_id("bank-a");
  boards.Store("a", board);
  EXPECT_EQ(boards.Refusal("a", "k", "bank-a"), kSoldOut);
}

TEST(SoldOutBoardsLimitTest, OneFetchAtATimeAndTheCopiesAreBounded) {
  FakeClock clock;
  SoldOutBoards boards(clock, /*max_campaigns=*/1);
  EXPECT_TRUE(boards.ShouldFetch("a", kSoldOut));
  EXPECT_FALSE(boards.ShouldFetch("a", kSoldOut)) << "a fetch is running";
  EXPECT_FALSE(boards.ShouldFetch("b", kSoldOut)) << "no room while a's fetch runs";
  boards.Failed("a");
  clock.Advance(SoldOutBoards::kRefetchAfter);
  // a's entry holds no copy and no fetch: it makes room.
  EXPECT_TRUE(boards.ShouldFetch("b", kSoldOut));
  EXPECT_FALSE(boards.Refusal("b", "k", "bank-a").has_value()) << "nothing stored yet";
}

}  // namespace
}  // namespace mkt::gateway
