// Cryptographic building blocks over OpenSSL: hashes, HMAC, constant-time comparison, and the
// authenticated encryption that keeps channel secrets unreadable at rest.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace mkt::auth {

// Returns the lowercase hex SHA-256 of `data`.
std::string Sha256Hex(std::string_view data);

// Returns the lowercase hex HMAC-SHA256 of `data` under `key`.
std::string HmacSha256Hex(std::string_view key, std::string_view data);

// Compares without leaking where the first difference is.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

// AES-256-GCM with a 32-byte key given as 64 hex characters. Sealed text is
// hex(nonce[12] || ciphertext || tag[16]); `associated` binds it to a context (e.g. channel id),
// so a sealed value copied to another row does not open.
class SecretBox {
 public:
  static absl::StatusOr<SecretBox> FromHexKey(std::string_view hex_key);

  std::string Seal(std::string_view plaintext, std::string_view associated) const;
  // Fails (INTERNAL: the data or key is wrong) when the text was tampered with or the key differs.
  absl::StatusOr<std::string> Open(std::string_view sealed_hex, std::string_view associated) const;

 private:
  explicit SecretBox(std::string key) : key_(std::move(key)) {}
  std::string key_;  // 32 raw bytes
};

}  // namespace mkt::auth
