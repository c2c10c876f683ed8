#include "services/campaigns/lottery.h"

#include <sys/random.h>

#include <cerrno>
#include <cstdlib>

namespace mkt::campaigns {

PrizeTable BuildPrizeTable(const ::marketing::campaigns::v1::CampaignConfig& config) {
  PrizeTable table;
  int64_t next = 0;
  for (const auto& prize : config.prizes()) {
    table.start.push_back(next);
    if (prize.probability_bp() > 0) next += prize.probability_bp();
    if (prize.fallback() && table.fallback < 0) {
      table.fallback = static_cast<int>(table.prizes.size());
    }
    table.prizes.push_back(prize);
  }
  return table;
}

int SelectPrize(const PrizeTable& table, int64_t value) {
  for (size_t i = 0; i < table.prizes.size(); ++i) {
    const int64_t bp = table.prizes[i].probability_bp();
    if (bp > 0 && value >= table.start[i] && value < table.start[i] + bp) {
      return static_cast<int>(i);
    }
  }
  return -1;
}

int64_t SecureUniform(int64_t bound) {
  if (bound <= 1) return 0;
  const uint64_t range = static_cast<uint64_t>(bound);
  // The largest multiple of `range` representable: values at or above it are redrawn so every
  // residue is equally likely.
  const uint64_t limit = UINT64_MAX - UINT64_MAX % range;
  for (;;) {
    uint64_t raw = 0;
    size_t got = 0;
    while (got < sizeof(raw)) {
      ssize_t n = getrandom(reinterpret_cast<char*>(&raw) + got, sizeof(raw) - got, 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        // The kernel's CSPRNG is unavailable only on a broken system; a lottery must not fall
        // back to a predictable generator.
        std::abort();
      }
      got += static_cast<size_t>(n);
    }
    if (raw < limit) return static_cast<int64_t>(raw % range);
  }
}

}  // namespace mkt::campaigns
