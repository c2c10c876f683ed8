// A Bloom filter over strings whose bits can travel between processes (decision 023: the
// campaigns service's sold-out board, copied into the gateway). The hashes are FNV-1a and
// SplitMix64, fixed here rather than absl::Hash, whose seed differs between processes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mkt {

class BloomFilter {
 public:
  // An empty filter sized for `keys` keys at about `false_positive_rate` (0 < rate < 1).
  static BloomFilter ForKeys(size_t keys, double false_positive_rate = 0.01);
  // A filter from bits and a hash count made by bytes() and hashes(); nullopt when they cannot
  // be one (no bits, or a hash count outside 1..32).
  static std::optional<BloomFilter> FromBytes(std::string bits, int hashes);

  void Add(std::string_view key);
  // False: `key` was never added. True: it probably was.
  bool MayContain(std::string_view key) const;

  // Bit i is bit (i % 8) of byte i / 8.
  const std::string& bytes() const { return bits_; }
  int hashes() const { return hashes_; }

 private:
  BloomFilter(std::string bits, int hashes) : bits_(std::move(bits)), hashes_(hashes) {}
  // The i-th bit index of `key` (double hashing).
  struct Probe {
    uint64_t h1, h2;
  };
  static Probe ProbeOf(std::string_view key);

  std::string bits_;
  int hashes_;
};

}  // namespace mkt
