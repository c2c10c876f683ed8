#include "libs/core/bloom_filter.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace mkt {
namespace {

uint64_t Fnv1a64(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

BloomFilter BloomFilter::ForKeys(size_t keys, double false_positive_rate) {
  const double rate = std::clamp(false_positive_rate, 1e-9, 0.5);
  const double ln2 = std::log(2.0);
  const double n = static_cast<double>(std::max<size_t>(keys, 1));
  const double bits = std::ceil(-n * std::log(rate) / (ln2 * ln2));
  const size_t bytes = std::max<size_t>(8, static_cast<size_t>(std::ceil(bits / 8)));
  const int hashes = std::clamp(static_cast<int>(std::lround(bits / n * ln2)), 1, 32);
  return BloomFilter(std::string(bytes, '\0'), hashes);
}

std::optional<BloomFilter> BloomFilter::FromBytes(std::string bits, int hashes) {
  if (bits.empty() || hashes < 1 || hashes > 32) return std::nullopt;
  return BloomFilter(std::move(bits), hashes);
}

BloomFilter::Probe BloomFilter::ProbeOf(std::string_view key) {
  const uint64_t h1 = Fnv1a64(key);
  // Odd, so that the probes of one key never all fall on one bit.
  return {h1, SplitMix64(h1) | 1};
}

void BloomFilter::Add(std::string_view key) {
  const uint64_t m = bits_.size() * 8;
  const Probe p = ProbeOf(key);
  for (int i = 0; i < hashes_; ++i) {
    const uint64_t bit = (p.h1 + static_cast<uint64_t>(i) * p.h2) % m;
    bits_[bit / 8] =
        static_cast<char>(static_cast<unsigned char>(bits_[bit / 8]) | (1u << (bit % 8)));
  }
}

bool BloomFilter::MayContain(std::string_view key) const {
  const uint64_t m = bits_.size() * 8;
  const Probe p = ProbeOf(key);
  for (int i = 0; i < hashes_; ++i) {
    const uint64_t bit = (p.h1 + static_cast<uint64_t>(i) * p.h2) % m;
    if ((static_cast<unsigned char>(bits_[bit / 8]) & (1u << (bit % 8))) == 0) return false;
  }
  return true;
}

}  // namespace mkt
