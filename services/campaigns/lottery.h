// The lottery's arithmetic (R15), without I/O: a prize table built from a campaign's published
// prizes, a uniform random value from the OS CSPRNG, the prize a value selects, and the fallback
// when the selected prize's stock or daily cap is used up. Kept pure so the distribution can be
// tested over many draws without a database.
#pragma once

#include <cstdint>
#include <vector>

#include "marketing/campaigns/v1/campaigns.pb.h"

namespace mkt::campaigns {

// Probabilities are in basis points: a value in [0, 10000) selects a prize.
inline constexpr int64_t kDrawRange = 10000;

struct PrizeTable {
  // The published prizes, in order; prize i owns the values [start[i], start[i] + bp[i]).
  std::vector<::marketing::campaigns::v1::Prize> prizes;
  std::vector<int64_t> start;
  // Index of the fallback prize, or -1.
  int fallback = -1;
};

// Builds the table; prizes with a non-positive probability own no values. The first prize marked
// fallback is the fallback.
PrizeTable BuildPrizeTable(const ::marketing::campaigns::v1::CampaignConfig& config);

// Returns the index of the prize `value` (in [0, kDrawRange)) selects, or -1 for no prize.
int SelectPrize(const PrizeTable& table, int64_t value);

// Returns a uniform integer in [0, bound) from the OS CSPRNG (getrandom), without modulo bias.
int64_t SecureUniform(int64_t bound);

}  // namespace mkt::campaigns
