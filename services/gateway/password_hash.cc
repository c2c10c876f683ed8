#include "services/gateway/password_hash.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "libs/auth/crypto.h"
#include "libs/core/status.h"

namespace mkt::gateway {
namespace {

constexpr size_t kSaltBytes = 16;
constexpr size_t kHashBytes = 32;
constexpr uint64_t kMaxMemory = 256ull << 20;

absl::StatusOr<std::string> Scrypt(std::string_view password, std::string_view salt,
                                   const ScryptCost& cost) {
  std::string out(kHashBytes, '\0');
  if (EVP_PBE_scrypt(password.data(), password.size(),
                     reinterpret_cast<const unsigned char*>(salt.data()), salt.size(), cost.n,
                     cost.r, cost.p, kMaxMemory, reinterpret_cast<unsigned char*>(out.data()),
                     out.size()) != 1) {
    return Internal("scrypt failed (parameters out of range?)");
  }
  return out;
}

}  // namespace

absl::StatusOr<std::string> HashPassword(std::string_view password, const ScryptCost& cost) {
  std::string salt(kSaltBytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(salt.data()), salt.size()) != 1) {
    return Internal("no random bytes for a salt");
  }
  MKT_ASSIGN_OR_RETURN(std::string hash, Scrypt(password, salt, cost));
  return absl::StrCat("scrypt$", cost.n, "$", cost.r, "$", cost.p, "$",
                      absl::BytesToHexString(salt), "$", absl::BytesToHexString(hash));
}

bool VerifyPassword(std::string_view password, std::string_view stored) {
  std::vector<std::string> parts = absl::StrSplit(AsAbsl(stored), '$');
  ScryptCost cost;
  if (parts.size() != 6 || parts[0] != "scrypt" || !absl::SimpleAtoi(parts[1], &cost.n) ||
      !absl::SimpleAtoi(parts[2], &cost.r) || !absl::SimpleAtoi(parts[3], &cost.p) ||
      parts[5].size() != 2 * kHashBytes) {
    return false;
  }
  const std::string salt = absl::HexStringToBytes(parts[4]);
  absl::StatusOr<std::string> hash = Scrypt(password, salt, cost);
  return hash.ok() && auth::ConstantTimeEquals(absl::BytesToHexString(*hash), parts[5]);
}

}  // namespace mkt::gateway
