// Channel authentication for the /v1 REST API (docs/api/openapi.yaml, "Authentication"): every
// request carries X-Channel-Id, X-Timestamp (unix seconds), X-Nonce and X-Signature =
// hex(HMAC-SHA256(secret, METHOD\nTARGET\nTIMESTAMP\nNONCE\nhex(SHA256(body)))).
//
// Checks run cheapest and least revealing first, and each failure has its own 401 code:
//   1. the four headers are present once and well-formed          CREDENTIALS_MISSING
//   2. the timestamp is within ±window of our clock               TIMESTAMP_OUT_OF_WINDOW
//   3. the channel exists                                         CHANNEL_UNKNOWN
//      and is enabled                                             CHANNEL_DISABLED
//   4. the signature verifies                                     SIGNATURE_INVALID
//   5. the nonce was not used within the replay window            NONCE_REPLAYED
// The nonce is remembered only after the signature verified, so forged requests cannot use up
// a channel's nonces.
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "libs/core/ids.h"
#include "services/gateway/http_message.h"

namespace mkt::gateway {

class CredentialStore;
class NonceWindow;

// Who is calling, once the signature verified.
struct AuthenticatedChannel {
  std::string channel_id;
  std::string org_id;
  // The channel code it acts as (mobile_banking, wecom, ...); routes naming a channel code take
  // this one (ApiRoute::channel_code_field).
  std::string code;
};

class ChannelAuthenticator {
 public:
  // `window` is how far a request's timestamp may be from our clock, either way (300 s).
  ChannelAuthenticator(CredentialStore& credentials, NonceWindow& nonces, const Clock& clock,
                       absl::Duration window);

  // Returns the channel `request` is from, or the 401 (or 503 when the registry cannot be
  // asked) to answer with. Uses request.method, .target, .headers, .body and .request_id.
  absl::StatusOr<AuthenticatedChannel> Authenticate(const HttpRequest& request) const;

  // The same checks, answered only when the channel's credential is cached: nullopt when it
  // would have to be fetched from the registry, in which case nothing was checked or remembered
  // (the nonce stays unused) and the caller authenticates with Authenticate where it may block.
  std::optional<absl::StatusOr<AuthenticatedChannel>> AuthenticateWithoutWaiting(
      const HttpRequest& request) const;

 private:
  // Authenticate, fetching an uncached credential only when `may_fetch`.
  std::optional<absl::StatusOr<AuthenticatedChannel>> Check(const HttpRequest& request,
                                                            bool may_fetch) const;

  CredentialStore& credentials_;
  NonceWindow& nonces_;
  const Clock& clock_;
  const absl::Duration window_;
};

}  // namespace mkt::gateway
