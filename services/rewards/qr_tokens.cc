#include "services/rewards/qr_tokens.h"

#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "libs/auth/crypto.h"
#include "libs/core/status.h"

namespace mkt::rewards {
namespace {

namespace cpb = ::marketing::common::v1;

constexpr char kPrefix[] = "q1.";
constexpr size_t kMaxTokenLength = 1024;

std::string HexOf(std::string_view data) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(data.size() * 2);
  for (unsigned char c : data) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

int Nibble(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

bool FromHex(std::string_view hex, std::string* out) {
  if (hex.size() % 2 != 0) return false;
  out->clear();
  for (size_t i = 0; i < hex.size(); i += 2) {
    const int hi = Nibble(hex[i]);
    const int lo = Nibble(hex[i + 1]);
    if (hi < 0 || lo < 0) return false;
    *out += static_cast<char>(hi * 16 + lo);
  }
  return true;
}

absl::Status Invalid() {
  // Bad input from the terminal, not a failed authentication of the caller: 400.
  return Error(absl::StatusCode::kInvalidArgument, cpb::TOKEN_INVALID,
               "the QR token is not one this service issued (malformed or altered)", "token");
}

}  // namespace

std::string QrTokenSigner::Sign(const QrClaims& claims) const {
  const std::string body = absl::StrCat(
      kPrefix, HexOf(absl::StrCat(claims.jti, "\n", claims.coupon_code, "\n", claims.customer_id,
                                  "\n", absl::ToUnixSeconds(claims.expires_at))));
  return absl::StrCat(body, ".", auth::HmacSha256Hex(key_, body));
}

absl::StatusOr<QrClaims> QrTokenSigner::Verify(std::string_view token) const {
  if (token.size() > kMaxTokenLength || token.substr(0, 3) != kPrefix) return Invalid();
  const size_t dot = token.rfind('.');
  if (dot <= 2) return Invalid();
  const std::string_view body = token.substr(0, dot);
  const std::string_view mac = token.substr(dot + 1);
  if (!auth::ConstantTimeEquals(mac, auth::HmacSha256Hex(key_, body))) return Invalid();
  std::string text;
  if (!FromHex(body.substr(3), &text)) return Invalid();
  std::vector<std::string> parts = absl::StrSplit(text, '\n');
  int64_t expires = 0;
  if (parts.size() != 4 || !absl::SimpleAtoi(parts[3], &expires)) return Invalid();
  return QrClaims{.jti = parts[0],
                  .coupon_code = parts[1],
                  .customer_id = parts[2],
                  .expires_at = absl::FromUnixSeconds(expires)};
}

}  // namespace mkt::rewards
