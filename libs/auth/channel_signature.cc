#include "libs/auth/channel_signature.h"

#include "libs/auth/crypto.h"

namespace mkt::auth {

std::string CanonicalString(const SignedRequest& r) {
  std::string out;
  out.reserve(r.method.size() + r.target.size() + r.timestamp.size() + r.nonce.size() + 68);
  for (std::string_view part : {r.method, r.target, r.timestamp, r.nonce}) {
    out.append(part);
    out.push_back('\n');
  }
  out.append(Sha256Hex(r.body));
  return out;
}

std::string SignRequest(std::string_view secret, const SignedRequest& request) {
  return HmacSha256Hex(secret, CanonicalString(request));
}

bool VerifySignature(std::string_view secret, const SignedRequest& request,
                     std::string_view signature) {
  return ConstantTimeEquals(SignRequest(secret, request), signature);
}

}  // namespace mkt::auth
