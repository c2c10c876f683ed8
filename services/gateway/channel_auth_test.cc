#include "services/gateway/channel_auth.h"

#include <atomic>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "libs/auth/channel_signature.h"
#include "libs/core/status.h"
#include "services/gateway/credential_store.h"
#include "services/gateway/nonce_window.h"
#include "services/gateway/test_fakes.h"

namespace mkt::gateway {
namespace {

namespace pb = ::marketing::common::v1;
using testing::FakeClock;
using testing::FakeCredentialSource;
using ::testing::HasSubstr;

constexpr char kChannelId[] = "ch_3f9a1c0b7d2e4a51";
constexpr char kSecret[] = "0123456789abcdef0123456789abcdef";
constexpr absl::Duration kWindow = absl::Seconds(300);

class ChannelAuthTest : public ::testing::Test {
 protected:
  ChannelAuthTest()
      : store_(source_, clock_),
        nonces_(NonceWindow::RetentionFor(kWindow), 1000),
        authenticator_(store_, nonces_, clock_, kWindow) {
    source_.Set(Credential{kChannelId, "fed", kSecret, /*enabled=*/true, /*version=*/1,
                           /*code=*/"mobile_banking"});
  }

  int64_t Now() const { return absl::ToUnixSeconds(clock_.Now()); }

  // A request signed with `secret` at `timestamp` (default: now).
  HttpRequest Signed(std::string nonce = "nonce-0001", std::optional<int64_t> timestamp = {},
                     std::string secret = kSecret, std::string channel_id = kChannelId) {
    HttpRequest request;
    request.method = "POST";
    request.target = "/v1/events?source=app";
    request.body = R"({"type":"login"})";
    request.request_id = "req-1";
    const std::string ts = std::to_string(timestamp.value_or(Now()));
    request.headers.Add("X-Channel-Id", channel_id);
    request.headers.Add("X-Timestamp", ts);
    request.headers.Add("X-Nonce", nonce);
    request.headers.Add("X-Signature", auth::SignRequest(secret, {request.method, request.target,
                                                                  ts, nonce, request.body}));
    return request;
  }

  // The same request with one header replaced (or dropped when `value` is nullopt).
  static HttpRequest With(const HttpRequest& original, std::string_view name,
                          std::optional<std::string> value) {
    HttpRequest request = original;
    request.headers = HttpHeaders();
    for (const auto& [key, v] : original.headers.entries()) {
      if (key == absl::AsciiStrToLower(AsAbsl(name))) continue;
      request.headers.Add(key, v);
    }
    if (value) request.headers.Add(name, *value);
    return request;
  }

  // Asserts that `request` is refused with `reason` (and HTTP 401).
  void ExpectRefused(const HttpRequest& request, ErrorReason reason,
                     std::string_view message_part = "") {
    absl::StatusOr<AuthenticatedChannel> result = authenticator_.Authenticate(request);
    ASSERT_FALSE(result.ok()) << "accepted a request that must fail with " << ReasonName(reason);
    EXPECT_EQ(ReasonName(ReasonOf(result.status())), ReasonName(reason)) << result.status();
    EXPECT_EQ(HttpStatusFor(result.status()), 401) << result.status();
    EXPECT_THAT(std::string(result.status().message()), HasSubstr(std::string(message_part)));
  }

  FakeClock clock_;
  FakeCredentialSource source_;
  CredentialStore store_;
  NonceWindow nonces_;
  ChannelAuthenticator authenticator_;
};

TEST_F(ChannelAuthTest, AcceptsACorrectlySignedRequest) {
  absl::StatusOr<AuthenticatedChannel> channel = authenticator_.Authenticate(Signed());
  ASSERT_TRUE(channel.ok()) << channel.status();
  EXPECT_EQ(channel->channel_id, kChannelId);
  EXPECT_EQ(channel->org_id, "fed");
  EXPECT_EQ(channel->code, "mobile_banking") << "routes naming a channel code bind this one";
  EXPECT_EQ(source_.last_request_id(), "req-1");  // the request id reaches the registry
}

TEST_F(ChannelAuthTest, HeaderNamesAreCaseInsensitive) {
  HttpRequest request = Signed();
  HttpRequest lower = request;
  lower.headers = HttpHeaders();
  for (const auto& [key, value] : request.headers.entries()) {
    lower.headers.Add(absl::AsciiStrToUpper(key), value);
  }
  EXPECT_TRUE(authenticator_.Authenticate(lower).ok());
}

TEST_F(ChannelAuthTest, MissingHeadersAreNamed) {
  HttpRequest unsigned_request;
  unsigned_request.method = "GET";
  unsigned_request.target = "/v1/channel";
  ExpectRefused(unsigned_request, pb::CREDENTIALS_MISSING,
                "X-Channel-Id, X-Timestamp, X-Nonce, X-Signature");
  for (const char* header : {"X-Channel-Id", "X-Timestamp", "X-Nonce", "X-Signature"}) {
    SCOPED_TRACE(header);
    ExpectRefused(With(Signed(), header, std::nullopt), pb::CREDENTIALS_MISSING,
                  std::string("missing header ") + header);
  }
  EXPECT_EQ(source_.fetches(), 0);
}

TEST_F(ChannelAuthTest, MalformedHeadersAreRefusedAsMissingCredentials) {
  const HttpRequest good = Signed();
  struct Case {
    const char* header;
    std::string value;
  };
  const std::vector<Case> cases = {
      {"X-Channel-Id", ""},
      {"X-Channel-Id", "ch bad"},
      {"X-Channel-Id", std::string(65, 'a')},
      {"X-Timestamp", "soon"},
      {"X-Timestamp", "-1700000000"},
      {"X-Timestamp", "1700000000.5"},
      {"X-Timestamp", "99999999999999999999"},
      {"X-Nonce", "short"},
      {"X-Nonce", std::string(65, 'n')},
      {"X-Nonce", "has space!"},
      {"X-Signature", "abc"},
      {"X-Signature", std::string(64, 'g')},
      {"X-Signature", std::string(64, 'A')},  // lowercase hex only
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.header) + "=" + c.value);
    ExpectRefused(With(good, c.header, c.value), pb::CREDENTIALS_MISSING, c.header);
  }
  HttpRequest twice = good;
  twice.headers.Add("x-nonce", "another-nonce");
  ExpectRefused(twice, pb::CREDENTIALS_MISSING, "more than once");
  EXPECT_EQ(source_.fetches(), 0);
}

TEST_F(ChannelAuthTest, TimestampWindowIsInclusiveAt300SecondsBothWays) {
  EXPECT_TRUE(authenticator_.Authenticate(Signed("nonce-past-300", Now() - 300)).ok());
  EXPECT_TRUE(authenticator_.Authenticate(Signed("nonce-future-300", Now() + 300)).ok());
  ExpectRefused(Signed("nonce-past-301", Now() - 301), pb::TIMESTAMP_OUT_OF_WINDOW, "301 s old");
  ExpectRefused(Signed("nonce-future-301", Now() + 301), pb::TIMESTAMP_OUT_OF_WINDOW,
                "in the future");
}

TEST_F(ChannelAuthTest, TimestampIsCheckedBeforeTheRegistryIsAsked) {
  ExpectRefused(Signed("nonce-0001", Now() - 3600, kSecret, "ch_unknown"),
                pb::TIMESTAMP_OUT_OF_WINDOW);
  EXPECT_EQ(source_.fetches(), 0);
}

TEST_F(ChannelAuthTest, UnknownChannel) {
  ExpectRefused(Signed("nonce-0001", {}, kSecret, "ch_unknown"), pb::CHANNEL_UNKNOWN);
}

TEST_F(ChannelAuthTest, DisabledChannelIsRefusedEvenWithAGoodSignature) {
  source_.Set(Credential{kChannelId, "fed", kSecret, /*enabled=*/false, 2});
  ExpectRefused(Signed(), pb::CHANNEL_DISABLED);
}

TEST_F(ChannelAuthTest, WrongSecretIsSignatureInvalid) {
  ExpectRefused(Signed("nonce-0001", {}, "another-secret"), pb::SIGNATURE_INVALID);
}

TEST_F(ChannelAuthTest, SignatureCoversMethodTargetQueryTimestampNonceAndBody) {
  const HttpRequest good = Signed();
  HttpRequest method = good;
  method.method = "PUT";
  HttpRequest query = good;
  query.target = "/v1/events?source=web";
  HttpRequest path = good;
  path.target = "/v1/events";
  HttpRequest body = good;
  body.body = R"({"type":"logout"})";
  for (const HttpRequest* tampered : {&method, &query, &path, &body}) {
    ExpectRefused(*tampered, pb::SIGNATURE_INVALID);
  }
  // Timestamp and nonce: other values that are still well-formed and in the window.
  ExpectRefused(With(good, "X-Timestamp", std::to_string(Now() - 1)), pb::SIGNATURE_INVALID);
  ExpectRefused(With(good, "X-Nonce", "nonce-0002"), pb::SIGNATURE_INVALID);
  EXPECT_TRUE(authenticator_.Authenticate(good).ok());
}

TEST_F(ChannelAuthTest, ReplayIsRefusedAndOnlyAfterTheSignatureVerified) {
  // A forged request carrying the nonce does not use it up...
  ExpectRefused(Signed("nonce-abcdefgh", {}, "forged-secret"), pb::SIGNATURE_INVALID);
  // ...so the genuine request with that nonce passes, once.
  const HttpRequest genuine = Signed("nonce-abcdefgh");
  EXPECT_TRUE(authenticator_.Authenticate(genuine).ok());
  ExpectRefused(genuine, pb::NONCE_REPLAYED);
  // Still refused at the far end of the window, when the timestamp alone would pass.
  clock_.Advance(absl::Seconds(300));
  ExpectRefused(genuine, pb::NONCE_REPLAYED);
  clock_.Advance(absl::Seconds(1));
  ExpectRefused(genuine, pb::TIMESTAMP_OUT_OF_WINDOW);
}

TEST_F(ChannelAuthTest, NoncesAreRememberedPerChannel) {
  source_.Set(Credential{"ch_other", "bank-a", "other-secret", true, 1});
  EXPECT_TRUE(authenticator_.Authenticate(Signed("shared-nonce")).ok());
  EXPECT_TRUE(
      authenticator_.Authenticate(Signed("shared-nonce", {}, "other-secret", "ch_other")).ok());
}

TEST_F(ChannelAuthTest, ConcurrentReplaysLetExactlyOneThrough) {
  const HttpRequest request = Signed("nonce-race-0001");
  ASSERT_TRUE(store_.Lookup(kChannelId, "warm-up").ok());
  constexpr int kThreads = 8;
  std::atomic<int> accepted{0};
  std::atomic<int> replayed{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&] {
      absl::StatusOr<AuthenticatedChannel> result = authenticator_.Authenticate(request);
      if (result.ok()) accepted.fetch_add(1);
      if (!result.ok() && ReasonOf(result.status()) == pb::NONCE_REPLAYED) replayed.fetch_add(1);
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(accepted.load(), 1);
  EXPECT_EQ(replayed.load(), kThreads - 1);
}

TEST(ChannelAuthBoundsTest, AFullReplayWindowIsA429ForTheChannelAndA503ForTheGateway) {
  FakeClock clock;
  FakeCredentialSource source;
  CredentialStore store(source, clock);
  source.Set(Credential{"ch_a", "bank-a", kSecret, true, 1, "mobile_banking"});
  source.Set(Credential{"ch_b", "bank-a", kSecret, true, 1, "wecom"});
  NonceWindow nonces(NonceWindow::RetentionFor(kWindow), /*max_per_channel=*/2, /*max_total=*/3);
  ChannelAuthenticator authenticator(store, nonces, clock, kWindow);
  auto signed_by = [&](const std::string& channel, const std::string& nonce) {
    HttpRequest request;
    request.method = "GET";
    request.target = "/v1/channel";
    const std::string ts = std::to_string(absl::ToUnixSeconds(clock.Now()));
    request.headers.Add("X-Channel-Id", channel);
    request.headers.Add("X-Timestamp", ts);
    request.headers.Add("X-Nonce", nonce);
    request.headers.Add(
        "X-Signature", auth::SignRequest(kSecret, {request.method, request.target, ts, nonce, ""}));
    return request;
  };
  ASSERT_TRUE(authenticator.Authenticate(signed_by("ch_a", "nonce-a-1")).ok());
  ASSERT_TRUE(authenticator.Authenticate(signed_by("ch_a", "nonce-a-2")).ok());
  absl::StatusOr<AuthenticatedChannel> full =
      authenticator.Authenticate(signed_by("ch_a", "nonce-a-3"));
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(HttpStatusFor(full.status()), 429);
  EXPECT_EQ(ReasonOf(full.status()), pb::RATE_LIMITED);
  EXPECT_THAT(std::string(full.status().message()), HasSubstr("nonce_max_per_channel"));
  ASSERT_TRUE(authenticator.Authenticate(signed_by("ch_b", "nonce-b-1")).ok());
  absl::StatusOr<AuthenticatedChannel> gateway_full =
      authenticator.Authenticate(signed_by("ch_b", "nonce-b-2"));
  ASSERT_FALSE(gateway_full.ok());
  EXPECT_EQ(HttpStatusFor(gateway_full.status()), 503);
  EXPECT_EQ(ReasonOf(gateway_full.status()), pb::DEPENDENCY_UNAVAILABLE);
  EXPECT_THAT(std::string(gateway_full.status().message()), HasSubstr("nonce_max_total"));
  // Once the retention passed, both channels are served again.
  clock.Advance(NonceWindow::RetentionFor(kWindow));
  EXPECT_TRUE(authenticator.Authenticate(signed_by("ch_a", "nonce-a-3")).ok());
  EXPECT_TRUE(authenticator.Authenticate(signed_by("ch_b", "nonce-b-2")).ok());
}

TEST_F(ChannelAuthTest, RegistryUnavailableIs503NotA401) {
  source_.FailWith(Unavailable("connection refused"));
  absl::StatusOr<AuthenticatedChannel> result = authenticator_.Authenticate(Signed());
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(ReasonOf(result.status()), pb::DEPENDENCY_UNAVAILABLE);
  EXPECT_EQ(HttpStatusFor(result.status()), 503);
  // The nonce was not used up by the failed attempt.
  source_.FailWith(absl::OkStatus());
  EXPECT_TRUE(authenticator_.Authenticate(Signed()).ok());
}

TEST_F(ChannelAuthTest, WithoutWaitingAnswersOnlyFromTheCacheAndUsesNoNonceOtherwise) {
  // Not cached: no answer, no fetch, the nonce still unused.
  EXPECT_FALSE(authenticator_.AuthenticateWithoutWaiting(Signed("nonce-w001")).has_value());
  EXPECT_EQ(source_.fetches(), 0);
  // Refusals that need no credential are answered anyway.
  std::optional<absl::StatusOr<AuthenticatedChannel>> missing =
      authenticator_.AuthenticateWithoutWaiting(With(Signed("nonce-w002"), "X-Nonce", {}));
  ASSERT_TRUE(missing.has_value());
  EXPECT_EQ(ReasonOf(missing->status()), pb::CREDENTIALS_MISSING);

  ASSERT_TRUE(authenticator_.Authenticate(Signed("nonce-w001")).ok());  // fetches and caches
  EXPECT_EQ(source_.fetches(), 1);
  std::optional<absl::StatusOr<AuthenticatedChannel>> cached =
      authenticator_.AuthenticateWithoutWaiting(Signed("nonce-w003"));
  ASSERT_TRUE(cached.has_value());
  ASSERT_TRUE(cached->ok()) << cached->status();
  EXPECT_EQ((*cached)->channel_id, kChannelId);
  EXPECT_EQ((*cached)->code, "mobile_banking");
  // The same checks as Authenticate: the nonce is now used, a wrong secret does not verify.
  EXPECT_EQ(ReasonOf(authenticator_.AuthenticateWithoutWaiting(Signed("nonce-w003"))->status()),
            pb::NONCE_REPLAYED);
  EXPECT_EQ(ReasonOf(authenticator_
                         .AuthenticateWithoutWaiting(
                             Signed("nonce-w004", {}, "another-secret-0123456789abcdef"))
                         ->status()),
            pb::SIGNATURE_INVALID);
  EXPECT_EQ(source_.fetches(), 1);

  // An unknown channel, once asked about, is answered from the cache too.
  const HttpRequest unknown = Signed("nonce-w005", {}, kSecret, "ch_nobody");
  EXPECT_FALSE(authenticator_.AuthenticateWithoutWaiting(unknown).has_value());
  EXPECT_EQ(ReasonOf(authenticator_.Authenticate(unknown).status()), pb::CHANNEL_UNKNOWN);
  EXPECT_EQ(ReasonOf(authenticator_.AuthenticateWithoutWaiting(unknown)->status()),
            pb::CHANNEL_UNKNOWN);
  EXPECT_EQ(source_.fetches(), 2);

  // An expired entry is not an answer: it must be fetched again.
  clock_.Advance(absl::Minutes(2));
  EXPECT_FALSE(authenticator_.AuthenticateWithoutWaiting(Signed("nonce-w006")).has_value());
}

}  // namespace
}  // namespace mkt::gateway
