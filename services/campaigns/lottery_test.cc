#include "services/campaigns/lottery.h"

#include <vector>

#include "gtest/gtest.h"

namespace mkt::campaigns {
namespace {

namespace pb = ::marketing::campaigns::v1;

pb::CampaignConfig Table(const std::vector<int>& bps, int fallback = -1) {
  pb::CampaignConfig c;
  for (size_t i = 0; i < bps.size(); ++i) {
    pb::Prize* p = c.add_prizes();
    p->set_name("p" + std::to_string(i));
    p->set_probability_bp(bps[i]);
    p->set_fallback(static_cast<int>(i) == fallback);
  }
  return c;
}

TEST(LotteryTest, ValuesSelectPrizesByTheirShareAndTheRestWinsNothing) {
  const PrizeTable t = BuildPrizeTable(Table({100, 900, 4000}, 2));
  EXPECT_EQ(t.fallback, 2);
  EXPECT_EQ(SelectPrize(t, 0), 0);
  EXPECT_EQ(SelectPrize(t, 99), 0);
  EXPECT_EQ(SelectPrize(t, 100), 1);
  EXPECT_EQ(SelectPrize(t, 999), 1);
  EXPECT_EQ(SelectPrize(t, 1000), 2);
  EXPECT_EQ(SelectPrize(t, 4999), 2);
  EXPECT_EQ(SelectPrize(t, 5000), -1);
  EXPECT_EQ(SelectPrize(t, 9999), -1);
}

TEST(LotteryTest, SecureUniformStaysInRange) {
  for (int i = 0; i < 10000; ++i) {
    const int64_t v = SecureUniform(7);
    ASSERT_GE(v, 0);
    ASSERT_LT(v, 7);
  }
  EXPECT_EQ(SecureUniform(1), 0);
}

// The chi-square statistic (3 degrees of freedom) of 100,000 draws of values in [0, range) through
// the prize table {0.5 %, 9.5 %, 30 %, no prize 60 %}.
double ChiSquareOfDraws(int64_t range) {
  const PrizeTable t = BuildPrizeTable(Table({50, 950, 3000}));
  constexpr int kDraws = 100000;
  std::vector<int64_t> seen(4, 0);
  for (int i = 0; i < kDraws; ++i) {
    const int prize = SelectPrize(t, SecureUniform(range));
    ++seen[prize < 0 ? 3 : prize];
  }
  const std::vector<double> p = {0.005, 0.095, 0.3, 0.6};
  double chi2 = 0;
  for (int i = 0; i < 4; ++i) {
    const double expected = p[i] * kDraws;
    chi2 += (seen[i] - expected) * (seen[i] - expected) / expected;
  }
  return chi2;
}

// The 10^-6 critical value of chi-square with 3 degrees of freedom: a correct generator fails the
// test below once in a million runs (at 10^-3, 16.27, it failed a ./dev test run), and a draw
// biased as the one further down scores ≈ 180.
constexpr double kCritical = 30.66;

// 100,000 draws through the CSPRNG: the realised frequencies of the prizes and of "no prize"
// match the table.
TEST(LotteryTest, RealisedFrequenciesMatchTheWeightsByChiSquare) {
  EXPECT_LT(ChiSquareOfDraws(kDrawRange), kCritical);
}

// The same statistic must reject a biased generator, or the test above proves nothing.
TEST(LotteryTest, ChiSquareRejectsABiasedDraw) {
  // Biased: never draws the top 5% of the range.
  EXPECT_GT(ChiSquareOfDraws(kDrawRange - 500), kCritical);
}

}  // namespace
}  // namespace mkt::campaigns
