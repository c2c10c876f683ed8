// The customers the index knows: the string ids of the core systems mapped to dense integer ids
// (the positions in every bitmap) and back. Kept compact because it holds every customer of the
// federation (10 million): the ids live in one arena and the lookup table holds only dense ids.
// Not thread-safe; TagIndex guards it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_set.h"

namespace mkt::segments {

class CustomerDirectory {
 public:
  CustomerDirectory();
  CustomerDirectory(const CustomerDirectory&) = delete;
  CustomerDirectory& operator=(const CustomerDirectory&) = delete;

  // Records that `customer_id` has dense id `dense_id` (assigned by the database). Idempotent.
  void Put(uint32_t dense_id, std::string_view customer_id);
  // Returns the dense id of `customer_id`, if known.
  std::optional<uint32_t> Find(std::string_view customer_id) const;
  // Returns the customer id at `dense_id`, or "" when there is none.
  std::string_view CustomerId(uint32_t dense_id) const;
  // Reserves room for `customers` customers of about `id_length` characters.
  void Reserve(size_t customers, size_t id_length);
  size_t size() const { return index_.size(); }
  size_t MemoryBytes() const;

 private:
  static constexpr uint64_t kNone = ~uint64_t{0};

  struct Hash {
    using is_transparent = void;
    const CustomerDirectory* dir;
    size_t operator()(uint32_t dense_id) const;
    size_t operator()(std::string_view id) const;
  };
  struct Eq {
    using is_transparent = void;
    const CustomerDirectory* dir;
    bool operator()(uint32_t a, uint32_t b) const { return a == b; }
    bool operator()(uint32_t a, std::string_view b) const { return dir->CustomerId(a) == b; }
    bool operator()(std::string_view a, uint32_t b) const { return a == dir->CustomerId(b); }
  };

  std::string arena_;
  // Per dense id: offset into arena_ << 16 | length, or kNone.
  std::vector<uint64_t> spans_;
  absl::flat_hash_set<uint32_t, Hash, Eq> index_;
};

}  // namespace mkt::segments
