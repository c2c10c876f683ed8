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

// 100,000 draws through the CSPRNG: the realised frequencies of the prizes and of "no prize"
// match the table (chi-square, 3 degrees of freedom; 16.27 is the 0.1% critical value, so a
// correct generator fails this one time in a thousand).
TEST(LotteryTest, RealisedFrequenciesMatchTheWeightsByChiSquare) {
  const std::vector<int> bps = {50, 950, 3000};
  const PrizeTable t = BuildPrizeTable(Table(bps));
  constexpr int kDraws = 100000;
  std::vector<int64_t> seen(4, 0);
  for (int i = 0; i < kDraws; ++i) {
    const int prize = SelectPrize(t, SecureUniform(kDrawRange));
    ++seen[prize < 0 ? 3 : prize];
  }
  const std::vector<double> p = {0.005, 0.095, 0.3, 0.6};
  double chi2 = 0;
  for (int i = 0; i < 4; ++i) {
    const double expected = p[i] * kDraws;
    chi2 += (seen[i] - expected) * (seen[i] - expected) / expected;
  }
  EXPECT_LT(chi2, 16.27) << "observed " << seen[0] << " " << seen[1] << " " << seen[2] << " "
                         << seen[3];
}

// The same statistic must reject a biased generator, or the test above proves nothing.
TEST(LotteryTest, ChiSquareRejectsABiasedDraw) {
  const PrizeTable t = BuildPrizeTable(Table({50, 950, 3000}));
  constexpr int kDraws = 100000;
  std::vector<int64_t> seen(4, 0);
  for (int i = 0; i < kDraws; ++i) {
    // Biased: never draws the top 5% of the range.
    const int prize = SelectPrize(t, SecureUniform(kDrawRange - 500));
    ++seen[prize < 0 ? 3 : prize];
  }
  const std::vector<double> p = {0.005, 0.095, 0.3, 0.6};
  double chi2 = 0;
  for (int i = 0; i < 4; ++i) {
    const double expected = p[i] * kDraws;
    chi2 += (seen[i] - expected) * (seen[i] - expected) / expected;
  }
  EXPECT_GT(chi2, 16.27);
}

}  // namespace
}  // namespace mkt::campaigns
