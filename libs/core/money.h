// Bounds on amounts that arrive from outside (business events, channel requests).
#pragma once

#include <cstdint>
#include <limits>

namespace mkt {

// The largest amount in fen one business event may carry: 10^15 fen, ten trillion yuan, far above
// any real transaction. Sums of up to ~9,000 such amounts still fit in int64, and the places that
// add amounts up for a customer saturate at the int64 maximum (SaturatingAdd) rather than wrap.
inline constexpr int64_t kMaxEventAmountFen = 1'000'000'000'000'000;

// a + b for non-negative a and b, held at the int64 maximum instead of overflowing.
inline int64_t SaturatingAdd(int64_t a, int64_t b) {
  int64_t sum;
  if (__builtin_add_overflow(a, b, &sum)) {
    return b > 0 ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
  }
  return sum;
}

}  // namespace mkt
