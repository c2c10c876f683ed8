// The channel REST signature (docs/api/openapi.yaml, "Authentication"):
//   X-Signature = hex(HMAC-SHA256(secret, METHOD "\n" PATH[?QUERY] "\n" TIMESTAMP "\n" NONCE "\n"
//                                         hex(SHA256(body))))
// Used by the gateway to verify and by clients, tests and tools to sign.
#pragma once

#include <string>
#include <string_view>

namespace mkt::auth {

struct SignedRequest {
  std::string_view method;  // "GET"
  std::string_view target;  // path with the query string exactly as sent: "/v1/x?a=1"
  std::string_view timestamp;
  std::string_view nonce;
  std::string_view body;
};

// Returns the string that is signed.
std::string CanonicalString(const SignedRequest& request);

// Returns the signature a channel holding `secret` sends for `request`.
std::string SignRequest(std::string_view secret, const SignedRequest& request);

// Returns true if `signature` is the right one for `request` (constant-time comparison).
bool VerifySignature(std::string_view secret, const SignedRequest& request,
                     std::string_view signature);

}  // namespace mkt::auth
