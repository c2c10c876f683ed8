// Offline QR tokens: short-lived, single-use, HMAC-signed claims that a customer presents to a
// merchant or counter terminal to redeem one coupon or gift voucher. This unit only signs and
// verifies; single use is enforced by the qr_tokens table (benefits.h), expiry by the caller's
// clock.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace mkt::rewards {

struct QrClaims {
  // The token's unique id: the row that makes it single-use.
  std::string jti;
  std::string coupon_code;
  std::string customer_id;
  absl::Time expires_at;
};

class QrTokenSigner {
 public:
  // `key` is the secret from config (rewards.qr_signing_key); at least 32 bytes.
  explicit QrTokenSigner(std::string key) : key_(std::move(key)) {}

  // Returns "q1.<hex claims>.<hex HMAC-SHA256>".
  std::string Sign(const QrClaims& claims) const;
  // Returns the claims of a token this key signed; TOKEN_INVALID (UNAUTHENTICATED, field "token")
  // for anything else (malformed, altered, another key). Does not look at the expiry.
  absl::StatusOr<QrClaims> Verify(std::string_view token) const;

 private:
  std::string key_;
};

}  // namespace mkt::rewards
