// Operator passwords at rest: salted scrypt (OpenSSL EVP_PBE_scrypt), stored with its parameters
// as "scrypt$N$r$p$<salt hex>$<hash hex>" so the cost can be raised later without invalidating
// existing hashes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace mkt::gateway {

struct ScryptCost {
  // CPU/memory cost (a power of two); 2^14 with r = 8 takes ~16 MiB and tens of milliseconds.
  uint64_t n = 1 << 14;
  uint64_t r = 8;
  uint64_t p = 1;
};

// Returns the stored form of `password` with a fresh random salt.
absl::StatusOr<std::string> HashPassword(std::string_view password, const ScryptCost& cost = {});

// Returns true when `password` matches `stored` (constant-time comparison); false for a
// malformed stored value.
bool VerifyPassword(std::string_view password, std::string_view stored);

}  // namespace mkt::gateway
