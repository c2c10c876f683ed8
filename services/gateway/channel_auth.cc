#include "services/gateway/channel_auth.h"

#include <algorithm>
#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "libs/auth/channel_signature.h"
#include "libs/core/status.h"
#include "services/gateway/credential_store.h"
#include "services/gateway/nonce_window.h"

namespace mkt::gateway {
namespace {

namespace pb = ::marketing::common::v1;

constexpr char kChannelIdHeader[] = "X-Channel-Id";
constexpr char kTimestampHeader[] = "X-Timestamp";
constexpr char kNonceHeader[] = "X-Nonce";
constexpr char kSignatureHeader[] = "X-Signature";

absl::Status Unauthenticated(ErrorReason reason, std::string_view message) {
  return Error(absl::StatusCode::kUnauthenticated, reason, message);
}

absl::Status Malformed(std::string_view header, std::string_view rule) {
  return Unauthenticated(pb::CREDENTIALS_MISSING,
                         absl::StrCat("header ", AsAbsl(header), " ", AsAbsl(rule)));
}

bool IsTokenChar(unsigned char c) { return std::isalnum(c) || c == '_' || c == '-'; }

bool AllOf(std::string_view text, bool (*pred)(unsigned char)) {
  return std::all_of(text.begin(), text.end(), [pred](char c) { return pred(c); });
}

bool IsIdChar(unsigned char c) { return IsTokenChar(c) || c == '.'; }
bool IsDigit(unsigned char c) { return c >= '0' && c <= '9'; }
bool IsLowerHex(unsigned char c) { return IsDigit(c) || (c >= 'a' && c <= 'f'); }

struct SignatureHeaders {
  std::string_view channel_id;
  std::string_view timestamp;
  int64_t timestamp_s = 0;
  std::string_view nonce;
  std::string_view signature;
};

// Step 1: every header present exactly once and well-formed; names every missing header.
absl::StatusOr<SignatureHeaders> ReadHeaders(const HttpHeaders& headers) {
  std::vector<std::string_view> missing;
  for (std::string_view name :
       {kChannelIdHeader, kTimestampHeader, kNonceHeader, kSignatureHeader}) {
    const int count = headers.Count(name);
    if (count == 0) missing.push_back(name);
    if (count > 1) return Malformed(name, "is sent more than once");
  }
  if (!missing.empty()) {
    return Unauthenticated(
        pb::CREDENTIALS_MISSING,
        absl::StrCat("missing header", missing.size() > 1 ? "s " : " ",
                     absl::StrJoin(missing, ", ",
                                   [](std::string* out, std::string_view s) { out->append(s); }),
                     "; every /v1 request is signed"));
  }
  SignatureHeaders h;
  h.channel_id = *headers.Find(kChannelIdHeader);
  h.timestamp = *headers.Find(kTimestampHeader);
  h.nonce = *headers.Find(kNonceHeader);
  h.signature = *headers.Find(kSignatureHeader);
  if (h.channel_id.empty() || h.channel_id.size() > 64 || !AllOf(h.channel_id, IsIdChar)) {
    return Malformed(kChannelIdHeader, "must be 1..64 characters of [A-Za-z0-9._-]");
  }
  if (h.timestamp.empty() || h.timestamp.size() > 12 || !AllOf(h.timestamp, IsDigit) ||
      !absl::SimpleAtoi(AsAbsl(h.timestamp), &h.timestamp_s)) {
    return Malformed(kTimestampHeader, "must be the request time in unix seconds");
  }
  if (h.nonce.size() < 8 || h.nonce.size() > 64 || !AllOf(h.nonce, IsTokenChar)) {
    return Malformed(kNonceHeader, "must be 8..64 characters of [A-Za-z0-9_-], new per request");
  }
  if (h.signature.size() != 64 || !AllOf(h.signature, IsLowerHex)) {
    return Malformed(kSignatureHeader, "must be 64 lowercase hex characters (HMAC-SHA256)");
  }
  return h;
}

}  // namespace

ChannelAuthenticator::ChannelAuthenticator(CredentialStore& credentials, NonceWindow& nonces,
                                           const Clock& clock, absl::Duration window)
    : credentials_(credentials), nonces_(nonces), clock_(clock), window_(window) {}

absl::StatusOr<AuthenticatedChannel> ChannelAuthenticator::Authenticate(
    const HttpRequest& request) const {
  return *Check(request, /*may_fetch=*/true);
}

std::optional<absl::StatusOr<AuthenticatedChannel>>
ChannelAuthenticator::AuthenticateWithoutWaiting(const HttpRequest& request) const {
  return Check(request, /*may_fetch=*/false);
}

std::optional<absl::StatusOr<AuthenticatedChannel>> ChannelAuthenticator::Check(
    const HttpRequest& request, bool may_fetch) const {
  absl::StatusOr<SignatureHeaders> headers = ReadHeaders(request.headers);
  if (!headers.ok()) return headers.status();
  const SignatureHeaders& h = *headers;

  const absl::Time now = clock_.Now();
  const absl::Duration skew = now - absl::FromUnixSeconds(h.timestamp_s);
  if (absl::AbsDuration(skew) > window_) {
    return Unauthenticated(
        pb::TIMESTAMP_OUT_OF_WINDOW,
        absl::StrCat("X-Timestamp is ", absl::ToInt64Seconds(absl::AbsDuration(skew)), " s ",
                     skew > absl::ZeroDuration() ? "old" : "in the future", "; at most ",
                     absl::ToInt64Seconds(window_), " s either way is accepted (server time ",
                     absl::ToUnixSeconds(now), ")"));
  }

  absl::StatusOr<Credential> looked_up = absl::UnknownError("not looked up");
  if (may_fetch) {
    looked_up = credentials_.Lookup(h.channel_id, request.request_id);
  } else if (auto cached = credentials_.Cached(h.channel_id)) {
    looked_up = *std::move(cached);
  } else {
    return std::nullopt;
  }
  if (!looked_up.ok()) return looked_up.status();
  const Credential& credential = *looked_up;
  if (!credential.enabled) {
    return Unauthenticated(pb::CHANNEL_DISABLED, "this channel is disabled");
  }

  const auth::SignedRequest signed_request{request.method, request.target, h.timestamp, h.nonce,
                                           request.body};
  if (!auth::VerifySignature(credential.secret, signed_request, h.signature)) {
    return Unauthenticated(pb::SIGNATURE_INVALID,
                           "X-Signature does not match; sign METHOD\\nTARGET\\nTIMESTAMP\\nNONCE\\n"
                           "hex(SHA256(body)) with the channel secret, TARGET as sent (path and "
                           "query)");
  }

  switch (nonces_.CheckAndRemember(h.channel_id, h.nonce, now)) {
    case NonceWindow::Check::kFresh:
      break;
    case NonceWindow::Check::kReplayed:
      return Unauthenticated(pb::NONCE_REPLAYED,
                             "this X-Nonce was already used; send a new nonce per request");
    case NonceWindow::Check::kChannelFull:
      return Error(absl::StatusCode::kResourceExhausted, pb::RATE_LIMITED,
                   absl::StrCat("this channel has sent ", nonces_.max_per_channel(),
                                " requests within the replay window (nonce_max_per_channel); "
                                "slow down and retry after the seconds in Retry-After"));
    case NonceWindow::Check::kGatewayFull:
      return Error(absl::StatusCode::kUnavailable, pb::DEPENDENCY_UNAVAILABLE,
                   "the gateway's replay window is full (nonce_max_total); retry after the "
                   "seconds in Retry-After");
  }
  return AuthenticatedChannel{credential.channel_id, credential.org_id, credential.code};
}

}  // namespace mkt::gateway
