// The HTTP server and the request dispatcher together, over real sockets: what a client sees.
#include "services/gateway/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "libs/core/status.h"
#include "services/gateway/channel_auth.h"
#include "services/gateway/credential_store.h"
#include "services/gateway/gateway_routes.h"
#include "services/gateway/http_test_client.h"
#include "services/gateway/nonce_window.h"
#include "services/gateway/request_dispatcher.h"
#include "services/gateway/router.h"
#include "services/gateway/test_fakes.h"

namespace mkt::gateway {
namespace {

using testing::FakeClock;
using testing::FakeCredentialSource;
using ::testing::HasSubstr;
using testing::SignedHeaders;
using testing::TestHttpClient;
using testing::TestResponse;

constexpr size_t kBodyLimit = 4096;
constexpr char kSecret[] = "test-secret-0123456789";

// Sends `data` on a new connection and returns everything read until the server closes it or
// `timeout` passes.
std::string RawExchange(int port, const std::string& data,
                        absl::Duration timeout = absl::Seconds(5)) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return "connect failed";
  }
  timeval tv{static_cast<time_t>(absl::ToInt64Seconds(timeout)), 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  if (!data.empty()) ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
  std::string out;
  char buf[4096];
  while (true) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

// Runs `body` on a helper thread; an exception (a failed HTTP call) fails the test instead of
// terminating the binary.
template <class Body>
void OrFail(Body body) {
  try {
    body();
  } catch (const std::exception& e) {
    ADD_FAILURE() << e.what();
  }
}

class GatewayHttpTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer(); }

  void StartServer(int handler_threads = 4, size_t max_queue = 64,
                   absl::Duration idle_timeout = absl::Seconds(30)) {
    source_.Set(Credential{"ch_test", "bank-a", kSecret, true, 1, "mobile_banking"});
    ASSERT_TRUE(RegisterGatewayRoutes(router_, clock_).ok());
    ASSERT_TRUE(router_
                    .Add("POST", "/test/echo-size", {},
                         [](const RouteRequest& r) -> absl::StatusOr<HttpResponse> {
                           return JsonResponse(std::to_string(r.http.body.size()));
                         })
                    .ok());
    ASSERT_TRUE(router_
                    .Add("GET", "/test/throws", {},
                         [](const RouteRequest&) -> absl::StatusOr<HttpResponse> {
                           throw std::runtime_error("secret internals at 10.0.0.7");
                         })
                    .ok());
    ASSERT_TRUE(router_
                    .Add("GET", "/test/fails", {},
                         [](const RouteRequest&) -> absl::StatusOr<HttpResponse> {
                           return Internal("db password=hunter2 rejected");
                         })
                    .ok());
    ASSERT_TRUE(router_
                    .Add("GET", "/test/slow", {},
                         [this](const RouteRequest&) -> absl::StatusOr<HttpResponse> {
                           slow_started_.fetch_add(1);
                           release_slow_.WaitForNotification();
                           return JsonResponse(R"({"slow":true})");
                         })
                    .ok());
    // A signed route with an async handler answering from a thread of its own (as a backend's
    // reply would arrive), declining requests marked X-Decline; its blocking handler answers too,
    // so each answer says which ran.
    ASSERT_TRUE(
        router_
            .Add(
                "GET", "/test/async", {.channel_auth = true},
                [this](const RouteRequest& r) -> absl::StatusOr<HttpResponse> {
                  pool_runs_.fetch_add(1);
                  return JsonResponse(
                      nlohmann::json{{"ran", "pool"}, {"channel", r.channel->channel_id}}.dump());
                },
                AsyncRouteHandler{
                    [](const HttpRequest& http) {
                      return http.headers.Find("X-Decline") == nullptr;
                    },
                    [this](const RouteRequest& r, RouteDone done) {
                      async_runs_.fetch_add(1);
                      const std::string channel = r.channel->channel_id;
                      // X-Hold: answered only once release_slow_ is notified.
                      const bool hold = r.http.headers.Find("X-Hold") != nullptr;
                      absl::MutexLock lock(&threads_mu_);
                      threads_.emplace_back([this, channel, hold, done = std::move(done)] {
                        if (hold) release_slow_.WaitForNotification();
                        done(JsonResponse(
                            nlohmann::json{{"ran", "async"}, {"channel", channel}}.dump()));
                      });
                    }})
            .ok());
    dispatcher_ =
        std::make_unique<RequestDispatcher>(router_, authenticator_, handler_threads, max_queue);
    HttpServerOptions options;
    options.address = "127.0.0.1:0";
    options.io_threads = 2;
    options.max_body_bytes = kBodyLimit;
    options.idle_timeout = idle_timeout;
    auto server = HttpServer::Start(options, *dispatcher_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  void TearDown() override {
    if (!release_slow_.HasBeenNotified()) release_slow_.Notify();
    if (server_) server_->Shutdown(absl::Seconds(1));
    absl::MutexLock lock(&threads_mu_);
    for (auto& t : threads_) t.join();
  }

  int port() const { return server_->port(); }

  testing::Headers Signed(const std::string& target, const std::string& nonce) {
    return SignedHeaders(kSecret, "ch_test", "GET", target, "", absl::ToUnixSeconds(clock_.Now()),
                         nonce);
  }

  static void ExpectErrorShape(const TestResponse& response, int status, const std::string& code) {
    EXPECT_EQ(response.status, status) << response.body;
    EXPECT_EQ(response.Header("content-type"), "application/json");
    nlohmann::json body = response.Json();
    ASSERT_TRUE(body.is_object()) << response.body;
    EXPECT_EQ(body["error"]["code"], code) << response.body;
    EXPECT_TRUE(body["error"]["message"].is_string());
    EXPECT_FALSE(body["error"]["message"].get<std::string>().empty());
    EXPECT_EQ(body["error"]["request_id"], response.Header("x-request-id"));
  }

  FakeClock clock_;
  FakeCredentialSource source_;
  CredentialStore store_{source_, clock_};
  // Live nonces per channel: enough for every test's requests but one.
  static constexpr size_t kNonceBound = 200;
  NonceWindow nonces_{NonceWindow::RetentionFor(absl::Seconds(300)), kNonceBound};
  ChannelAuthenticator authenticator_{store_, nonces_, clock_, absl::Seconds(300)};
  Router router_;
  std::unique_ptr<RequestDispatcher> dispatcher_;
  std::unique_ptr<HttpServer> server_;
  std::atomic<int> slow_started_{0};
  absl::Notification release_slow_;
  // Runs of /test/async's blocking and async handlers, and the async handler's threads.
  std::atomic<int> pool_runs_{0};
  std::atomic<int> async_runs_{0};
  absl::Mutex threads_mu_;
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(threads_mu_);
};

TEST_F(GatewayHttpTest, HealthzOnAKeepAliveConnection) {
  TestHttpClient client(port());
  for (int i = 0; i < 3; ++i) {
    TestResponse response = client.Send("GET", "/healthz");
    EXPECT_EQ(response.status, 200);
    EXPECT_EQ(response.Json(), nlohmann::json({{"status", "ok"}}));
  }
  EXPECT_EQ(client.connects(), 1);
}

TEST_F(GatewayHttpTest, RequestIdIsEchoedWhenAcceptableAndGeneratedOtherwise) {
  TestHttpClient client(port());
  EXPECT_EQ(
      client.Send("GET", "/healthz", {{"X-Request-Id", "trace-42.a_b"}}).Header("x-request-id"),
      "trace-42.a_b");
  const std::string generated =
      client.Send("GET", "/healthz", {{"X-Request-Id", "evil id\twith spaces"}})
          .Header("x-request-id");
  EXPECT_EQ(generated.size(), 32u);
  EXPECT_NE(generated, client.Send("GET", "/healthz").Header("x-request-id"));
}

TEST_F(GatewayHttpTest, UnknownPathAndWrongMethodAnswerInTheErrorShape) {
  TestHttpClient client(port());
  TestResponse not_found = client.Send("GET", "/v1/nothing-here", {{"X-Request-Id", "rid-404"}});
  ExpectErrorShape(not_found, 404, "NOT_FOUND");
  EXPECT_EQ(not_found.Header("x-request-id"), "rid-404");
  TestResponse wrong_method = client.Send("DELETE", "/v1/channel");
  ExpectErrorShape(wrong_method, 405, "METHOD_NOT_ALLOWED");
  EXPECT_EQ(wrong_method.Header("allow"), "GET");
}

TEST_F(GatewayHttpTest, SignedChannelRequestAndItsFailures) {
  TestHttpClient client(port());
  TestResponse ok = client.Send("GET", "/v1/channel", Signed("/v1/channel", "nonce-0001"));
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(ok.Json(), nlohmann::json({{"channel_id", "ch_test"},
                                       {"org_id", "bank-a"},
                                       {"code", "mobile_banking"},
                                       {"server_time", "2027-01-15T08:00:00Z"},
                                       {"server_time_unix", 1800000000}}));

  ExpectErrorShape(client.Send("GET", "/v1/channel", Signed("/v1/channel", "nonce-0001")), 401,
                   "NONCE_REPLAYED");
  ExpectErrorShape(client.Send("GET", "/v1/channel?x=1", Signed("/v1/channel", "nonce-0002")), 401,
                   "SIGNATURE_INVALID");
  ExpectErrorShape(client.Send("GET", "/v1/channel"), 401, "CREDENTIALS_MISSING");
  // A channel not cached yet, while the registry is down.
  source_.FailWith(Unavailable("registry at 10.1.2.3:20061 refused"));
  TestResponse down = client.Send("GET", "/v1/channel",
                                  SignedHeaders(kSecret, "ch_uncached", "GET", "/v1/channel", "",
                                                absl::ToUnixSeconds(clock_.Now()), "nonce-0003"));
  ExpectErrorShape(down, 503, "DEPENDENCY_UNAVAILABLE");
  EXPECT_THAT(down.body, ::testing::Not(HasSubstr("10.1.2.3")));
}

TEST_F(GatewayHttpTest, AnAsyncRouteRunsWithoutTheHandlerPoolOnceTheCredentialIsCached) {
  TestHttpClient client(port());
  // Not cached yet: fetching it may block, so the request goes to the pool, authenticated once.
  TestResponse first = client.Send("GET", "/test/async", Signed("/test/async", "nonce-a001"));
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_EQ(first.Json()["ran"], "pool");
  EXPECT_EQ(source_.fetches(), 1);

  TestResponse second = client.Send("GET", "/test/async", Signed("/test/async", "nonce-a002"));
  ASSERT_EQ(second.status, 200) << second.body;
  EXPECT_EQ(second.Json(), nlohmann::json({{"ran", "async"}, {"channel", "ch_test"}}));
  EXPECT_EQ(source_.fetches(), 1);
  EXPECT_EQ(pool_runs_.load(), 1);
  EXPECT_EQ(async_runs_.load(), 1);

  // Refused before either handler, with the same codes as on the pool.
  ExpectErrorShape(client.Send("GET", "/test/async", Signed("/test/async", "nonce-a002")), 401,
                   "NONCE_REPLAYED");
  ExpectErrorShape(client.Send("GET", "/test/async?x=1", Signed("/test/async", "nonce-a003")), 401,
                   "SIGNATURE_INVALID");
  ExpectErrorShape(client.Send("GET", "/test/async"), 401, "CREDENTIALS_MISSING");
  EXPECT_EQ(pool_runs_.load() + async_runs_.load(), 2);

  // Not taken by the async handler: the pool runs it.
  testing::Headers declined = Signed("/test/async", "nonce-a004");
  declined.emplace_back("X-Decline", "1");
  TestResponse on_pool = client.Send("GET", "/test/async", declined);
  ASSERT_EQ(on_pool.status, 200) << on_pool.body;
  EXPECT_EQ(on_pool.Json()["ran"], "pool");
  EXPECT_EQ(pool_runs_.load(), 2);
  // Counted off once the answer is handed back, which may be just after the client has it.
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (dispatcher_->async_in_flight() > 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_EQ(dispatcher_->async_in_flight(), 0u);
}

TEST_F(GatewayHttpTest, FailuresOnOurSideNeverShowInternals) {
  TestHttpClient client(port());
  TestResponse thrown = client.Send("GET", "/test/throws");
  ExpectErrorShape(thrown, 500, "INTERNAL");
  EXPECT_THAT(thrown.body, ::testing::Not(HasSubstr("10.0.0.7")));
  TestResponse failed = client.Send("GET", "/test/fails");
  ExpectErrorShape(failed, 500, "INTERNAL");
  EXPECT_THAT(failed.body, ::testing::Not(HasSubstr("hunter2")));
  EXPECT_EQ(client.Send("GET", "/healthz").status, 200);  // the connection and server live on
}

TEST_F(GatewayHttpTest, BodyAtTheLimitIsAcceptedAndOneByteMoreIs413) {
  TestHttpClient client(port());
  TestResponse at_limit = client.Send("POST", "/test/echo-size", {}, std::string(kBodyLimit, 'x'));
  EXPECT_EQ(at_limit.status, 200);
  EXPECT_EQ(at_limit.body, std::to_string(kBodyLimit));

  TestResponse over = client.Send("POST", "/test/echo-size", {{"X-Request-Id", "rid-big"}},
                                  std::string(kBodyLimit + 1, 'x'));
  ExpectErrorShape(over, 413, "BODY_TOO_LARGE");
  EXPECT_EQ(over.Header("x-request-id"), "rid-big");
  EXPECT_EQ(over.Header("connection"), "close");
  // A much larger body too (the server discards what it did not read), and the server still
  // answers the next request.
  ExpectErrorShape(client.Send("POST", "/test/echo-size", {}, std::string(2 << 20, 'y')), 413,
                   "BODY_TOO_LARGE");
  EXPECT_EQ(client.Send("GET", "/healthz").status, 200);
}

TEST_F(GatewayHttpTest, ChunkedBodyOverTheLimitIs413) {
  std::string request =
      "POST /test/echo-size HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 3; ++i) request += "800\r\n" + std::string(0x800, 'z') + "\r\n";
  request += "0\r\n\r\n";
  const std::string response = RawExchange(port(), request);
  EXPECT_TRUE(absl::StartsWith(response, "HTTP/1.1 413")) << response;
  EXPECT_THAT(response, HasSubstr("BODY_TOO_LARGE"));
}

TEST_F(GatewayHttpTest, ExpectContinueIsAnsweredBeforeTheBody) {
  const std::string response = RawExchange(
      port(),
      "POST /test/echo-size HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n"
      "Connection: close\r\n\r\n",
      absl::Seconds(1));
  EXPECT_TRUE(absl::StartsWith(response, "HTTP/1.1 100 Continue")) << response;
}

TEST_F(GatewayHttpTest, MalformedRequestIs400AndClosed) {
  const std::string response = RawExchange(port(), "NOT HTTP AT ALL\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(response, "HTTP/1.1 400")) << response;
  EXPECT_THAT(response, HasSubstr("INVALID_ARGUMENT"));
}

TEST_F(GatewayHttpTest, MetricsCountRequestsByRouteTemplate) {
  TestHttpClient client(port());
  client.Send("GET", "/healthz");
  client.Send("GET", "/v1/channel");
  TestResponse metrics = client.Send("GET", "/metrics");
  EXPECT_EQ(metrics.status, 200);
  EXPECT_THAT(metrics.Header("content-type"), HasSubstr("text/plain"));
  EXPECT_THAT(metrics.body, HasSubstr(R"(mkt_gateway_http_total{method="GET /healthz"})"));
  EXPECT_THAT(
      metrics.body,
      HasSubstr(
          R"(mkt_gateway_http_errors_total{code="CREDENTIALS_MISSING",method="GET /v1/channel"})"));
}

TEST_F(GatewayHttpTest, ConcurrentSignedRequestsFromManyConnections) {
  constexpr int kClients = 8;
  constexpr int kRequests = 20;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      OrFail([&] {
        TestHttpClient client(port());
        for (int i = 0; i < kRequests; ++i) {
          const std::string nonce = "nonce-" + std::to_string(c) + "-" + std::to_string(i);
          if (client.Send("GET", "/v1/channel", Signed("/v1/channel", nonce)).status == 200) {
            ok.fetch_add(1);
          }
        }
      });
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(ok.load(), kClients * kRequests);
}

// Issue 9 B1: a channel over its replay-window bound gets a clear 429 with Retry-After.
TEST_F(GatewayHttpTest, AFullReplayWindowIs429WithRetryAfter) {
  TestHttpClient client(port());
  for (size_t i = 0; i < kNonceBound; ++i) {
    ASSERT_EQ(
        client.Send("GET", "/v1/channel", Signed("/v1/channel", "fill-nonce-" + std::to_string(i)))
            .status,
        200);
  }
  TestResponse full = client.Send("GET", "/v1/channel", Signed("/v1/channel", "one-too-many"));
  ExpectErrorShape(full, 429, "RATE_LIMITED");
  EXPECT_EQ(full.Header("retry-after"), "1");
  EXPECT_NE(full.body.find("nonce_max_per_channel"), std::string::npos) << full.body;
}

class BusyGatewayTest : public GatewayHttpTest {
 protected:
  void SetUp() override { StartServer(/*handler_threads=*/1, /*max_queue=*/1); }
};

TEST_F(BusyGatewayTest, FullHandlerPoolAnswers429WhileHealthzStillAnswers) {
  std::vector<std::thread> blocked;
  std::atomic<int> blocked_ok{0};
  // One request occupies the only handler thread, one waits in the queue.
  for (int i = 0; i < 2; ++i) {
    blocked.emplace_back([&] {
      OrFail([&] {
        TestHttpClient client(port());
        if (client.Send("GET", "/test/slow").status == 200) blocked_ok.fetch_add(1);
      });
    });
    if (i == 0) {
      while (slow_started_.load() == 0) absl::SleepFor(absl::Milliseconds(5));
    }
  }
  while (dispatcher_->queued() == 0) absl::SleepFor(absl::Milliseconds(5));
  TestHttpClient client(port());
  TestResponse busy = client.Send("GET", "/test/fails");
  ExpectErrorShape(busy, 429, "RATE_LIMITED");
  EXPECT_EQ(busy.Header("retry-after"), "1");
  EXPECT_EQ(client.Send("GET", "/healthz").status, 200);  // runs on the I/O thread
  release_slow_.Notify();
  for (std::thread& t : blocked) t.join();
  EXPECT_EQ(blocked_ok.load(), 2);
}

TEST_F(BusyGatewayTest, AnAsyncRouteAnswersWhileEveryHandlerThreadIsBusy) {
  TestHttpClient client(port());
  // Caches the credential (on the pool, which is free now).
  ASSERT_EQ(client.Send("GET", "/test/async", Signed("/test/async", "nonce-b001")).status, 200);

  std::vector<std::thread> blocked;
  for (int i = 0; i < 2; ++i) {
    blocked.emplace_back([&] {
      OrFail([&] {
        TestHttpClient slow_client(port());
        slow_client.Send("GET", "/test/slow");
      });
    });
    if (i == 0) {
      while (slow_started_.load() == 0) absl::SleepFor(absl::Milliseconds(5));
    }
  }
  while (dispatcher_->queued() == 0) absl::SleepFor(absl::Milliseconds(5));

  TestResponse answered = client.Send("GET", "/test/async", Signed("/test/async", "nonce-b002"));
  EXPECT_EQ(answered.status, 200) << answered.body;
  EXPECT_EQ(answered.Json()["ran"], "async");
  // What must go to the pool is refused while it is full, before its nonce is used.
  testing::Headers declined = Signed("/test/async", "nonce-b003");
  declined.emplace_back("X-Decline", "1");
  ExpectErrorShape(client.Send("GET", "/test/async", declined), 429, "RATE_LIMITED");
  release_slow_.Notify();
  for (std::thread& t : blocked) t.join();
  TestResponse retried = client.Send("GET", "/test/async", declined);
  EXPECT_EQ(retried.status, 200) << retried.body;
  EXPECT_EQ(retried.Json()["ran"], "pool");
}

// BusyGatewayTest's max_queue is 1: one async request in flight is the cap.
TEST_F(BusyGatewayTest, PastTheCapOnAsyncRequestsTheyTakeThePool) {
  TestHttpClient client(port());
  ASSERT_EQ(client.Send("GET", "/test/async", Signed("/test/async", "nonce-c001")).status, 200);
  TestResponse held;
  std::thread holder([&] {
    OrFail([&] {
      TestHttpClient holding_client(port());
      testing::Headers h = Signed("/test/async", "nonce-c002");
      h.emplace_back("X-Hold", "1");
      held = holding_client.Send("GET", "/test/async", h);
    });
  });
  while (dispatcher_->async_in_flight() == 0) absl::SleepFor(absl::Milliseconds(1));
  TestResponse over = client.Send("GET", "/test/async", Signed("/test/async", "nonce-c003"));
  EXPECT_EQ(over.status, 200) << over.body;
  EXPECT_EQ(over.Json()["ran"], "pool");
  release_slow_.Notify();
  holder.join();
  EXPECT_EQ(held.status, 200) << held.body;
  EXPECT_EQ(held.Json()["ran"], "async");
}

TEST_F(GatewayHttpTest, ConnectionHandlingFollowsTheRequestsVersion) {
  // HTTP/1.0 without keep-alive: answered as 1.0 and closed.
  std::string reply = RawExchange(port(), "GET /healthz HTTP/1.0\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(reply, "HTTP/1.0 200 OK\r\n")) << reply;
  EXPECT_THAT(reply, ::testing::Not(HasSubstr("Connection:")));
  // HTTP/1.0 asking for keep-alive: says so, and a second request is answered on it.
  reply = RawExchange(port(),
                      "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                      "GET /healthz HTTP/1.0\r\n\r\n");
  EXPECT_THAT(reply, HasSubstr("Connection: keep-alive\r\n")) << reply;
  size_t answers = 0;
  for (size_t at = reply.find("HTTP/1.0 200"); at != std::string::npos;
       at = reply.find("HTTP/1.0 200", at + 1)) {
    ++answers;
  }
  EXPECT_EQ(answers, 2u) << reply;
  // HTTP/1.1 asking to close: "Connection: close", and the server closes.
  reply = RawExchange(port(), "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(reply, "HTTP/1.1 200 OK\r\n")) << reply;
  EXPECT_THAT(reply, HasSubstr("\r\nConnection: close\r\n"));
  EXPECT_THAT(reply, HasSubstr("\r\nContent-Type: application/json\r\n"));
  EXPECT_THAT(reply, HasSubstr("\r\nX-Request-Id: "));
}

TEST(ResponseHeadTest, WritesTheStatusLineAndHeadersOnce) {
  HttpResponse response = JsonResponse(R"({"a":1})", 429);
  response.headers = {{"Retry-After", "1"},
                      {"retry-after", "2"},
                      {"Content-Type", "application/problem+json"},
                      {"Content-Length", "999"},
                      {"Connection", "close"},
                      {"X-Evil", "a\r\nSet-Cookie: x=1"},
                      {"Allow", "GET, POST"}};
  EXPECT_EQ(ResponseHead(response, "req-7", 11, /*keep_alive=*/true),
            "HTTP/1.1 429 Too Many Requests\r\n"
            "Content-Type: application/problem+json\r\n"
            "X-Request-Id: req-7\r\n"
            "Retry-After: 2\r\n"
            "Allow: GET, POST\r\n"
            "Content-Length: 7\r\n"
            "\r\n");
  EXPECT_EQ(ResponseHead(JsonResponse("{}"), "r", 10, /*keep_alive=*/false),
            "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nX-Request-Id: r\r\n"
            "Content-Length: 2\r\n\r\n");
  EXPECT_EQ(ResponseHead(JsonResponse("{}", 503), "r", 11, /*keep_alive=*/false),
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            "X-Request-Id: r\r\nContent-Length: 2\r\nConnection: close\r\n\r\n");
}

TEST_F(GatewayHttpTest, ShutdownLetsARunningRequestFinish) {
  TestResponse slow;
  std::thread caller([&] {
    OrFail([&] {
      TestHttpClient client(port());
      slow = client.Send("GET", "/test/slow");
    });
  });
  while (slow_started_.load() == 0) absl::SleepFor(absl::Milliseconds(5));
  std::thread releaser([&] {
    absl::SleepFor(absl::Milliseconds(200));
    release_slow_.Notify();
  });
  const int port_before = port();
  server_->Shutdown(absl::Seconds(5));
  caller.join();
  releaser.join();
  EXPECT_EQ(slow.status, 200);
  EXPECT_EQ(RawExchange(port_before, "GET /healthz HTTP/1.1\r\n\r\n"), "connect failed");
}

class IdleGatewayTest : public GatewayHttpTest {
 protected:
  void SetUp() override { StartServer(4, 64, absl::Milliseconds(300)); }
};

TEST_F(IdleGatewayTest, IdleConnectionsAreClosed) {
  const absl::Time start = absl::Now();
  EXPECT_EQ(RawExchange(port(), "", absl::Seconds(5)), "");  // the server closed it
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
}

// Records the thread each request is handled on (the connection's I/O thread: the handler runs
// where the request was read), by the request's X-Conn header.
class ThreadRecordingHandler : public HttpHandler {
 public:
  void Handle(HttpRequest request, Respond respond) override {
    const std::string* conn = request.headers.Find("X-Conn");
    {
      absl::MutexLock lock(&mu_);
      threads_[conn == nullptr ? "" : *conn].push_back(std::this_thread::get_id());
    }
    respond(JsonResponse("{}"));
  }
  std::map<std::string, std::vector<std::thread::id>> Threads() {
    absl::MutexLock lock(&mu_);
    return threads_;
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, std::vector<std::thread::id>> threads_ ABSL_GUARDED_BY(mu_);
};

TEST(HttpServerThreadsTest, EachConnectionStaysOnOneIoThreadAndConnectionsTakeThemInTurn) {
  ThreadRecordingHandler handler;
  HttpServerOptions options;
  options.address = "127.0.0.1:0";
  options.io_threads = 2;
  auto server = HttpServer::Start(options, handler);
  ASSERT_TRUE(server.ok()) << server.status();
  // Connected one after the other, so they are accepted in this order.
  std::vector<std::unique_ptr<TestHttpClient>> clients;
  for (int c = 0; c < 4; ++c) {
    clients.push_back(std::make_unique<TestHttpClient>((*server)->port()));
    ASSERT_EQ(clients.back()->Send("GET", "/", {{"X-Conn", std::to_string(c)}}).status, 200);
  }
  for (int round = 0; round < 5; ++round) {
    for (int c = 0; c < 4; ++c) {
      ASSERT_EQ(clients[c]->Send("GET", "/", {{"X-Conn", std::to_string(c)}}).status, 200);
    }
  }
  (*server)->Shutdown(absl::Seconds(1));

  std::map<std::string, std::vector<std::thread::id>> threads = handler.Threads();
  ASSERT_EQ(threads.size(), 4u);
  std::vector<std::thread::id> of(4);
  for (int c = 0; c < 4; ++c) {
    const std::vector<std::thread::id>& seen = threads[std::to_string(c)];
    ASSERT_EQ(seen.size(), 6u);
    for (const std::thread::id& id : seen) EXPECT_EQ(id, seen.front()) << "connection " << c;
    of[c] = seen.front();
  }
  EXPECT_NE(of[0], of[1]);
  EXPECT_EQ(of[0], of[2]);
  EXPECT_EQ(of[1], of[3]);
}

// Answers from threads of its own, as an async route does: "/block-io" instead holds the I/O
// thread it is called on until `release` is notified; "/after-block" answers once "/block-io"
// holds it; "/big" answers an 8 MiB body; anything else answers its own path.
class OtherThreadHandler : public HttpHandler {
 public:
  ~OtherThreadHandler() override {
    absl::MutexLock lock(&mu_);
    for (std::thread& t : threads_) t.join();
  }
  void Handle(HttpRequest request, Respond respond) override {
    if (request.target == "/block-io") {
      io_blocked.Notify();
      release.WaitForNotification();
      respond(JsonResponse("{}"));
      return;
    }
    std::string body = request.target == "/big" ? std::string(8 << 20, 'x')
                                                : "{\"path\":\"" + request.target + "\"}";
    const bool wait = request.target == "/after-block";
    if (wait) after_block_read.Notify();
    absl::MutexLock lock(&mu_);
    threads_.emplace_back([this, wait, respond, body = std::move(body)]() mutable {
      if (wait) io_blocked.WaitForNotification();
      respond(JsonResponse(std::move(body)));
    });
  }
  absl::Notification after_block_read;
  absl::Notification io_blocked;
  absl::Notification release;

 private:
  absl::Mutex mu_;
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
};

HttpServerOptions OneIoThread() {
  HttpServerOptions options;
  options.address = "127.0.0.1:0";
  options.io_threads = 1;
  return options;
}

// The thread that has the response writes it: it reaches the client while the connection's I/O
// thread is busy with another connection (it used to wait for that thread).
TEST(HttpServerWriteTest, AResponseIsWrittenByTheThreadThatDeliversItWhileTheIoThreadIsBusy) {
  OtherThreadHandler handler;
  auto server = HttpServer::Start(OneIoThread(), handler);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  TestResponse answered;
  std::thread client(
      [&] { OrFail([&] { answered = TestHttpClient(port).Send("GET", "/after-block"); }); });
  ASSERT_TRUE(handler.after_block_read.WaitForNotificationWithTimeout(absl::Seconds(10)));
  // Holds the only I/O thread until the first response is in.
  std::thread blocker(
      [&] { RawExchange(port, "GET /block-io HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); });
  ASSERT_TRUE(handler.io_blocked.WaitForNotificationWithTimeout(absl::Seconds(10)));
  client.join();
  const bool io_thread_still_blocked = !handler.release.HasBeenNotified();
  handler.release.Notify();
  blocker.join();
  EXPECT_EQ(answered.status, 200);
  EXPECT_EQ(answered.body, R"({"path":"/after-block"})");
  EXPECT_TRUE(io_thread_still_blocked);
  (*server)->Shutdown(absl::Seconds(1));
}

// Two requests sent at once, before the first is answered, are answered in order.
TEST(HttpServerWriteTest, PipelinedRequestsAreAnsweredInOrder) {
  OtherThreadHandler handler;
  auto server = HttpServer::Start(OneIoThread(), handler);
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string out = RawExchange((*server)->port(),
                                      "GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two "
                                      "HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  const size_t one = out.find(R"({"path":"/one"})");
  const size_t two = out.find(R"({"path":"/two"})");
  ASSERT_NE(one, std::string::npos) << out;
  ASSERT_NE(two, std::string::npos) << out;
  EXPECT_LT(one, two);
  EXPECT_EQ(out.find("HTTP/1.1 200"), 0u);
  EXPECT_NE(out.find("HTTP/1.1 200", one), std::string::npos);
  (*server)->Shutdown(absl::Seconds(1));
}

// A response larger than the socket takes at once is written in part by the thread that has it
// and finished on the I/O thread; the connection then carries on.
TEST(HttpServerWriteTest, AResponseTooLargeToWriteAtOnceIsFinishedOnTheIoThread) {
  OtherThreadHandler handler;
  auto server = HttpServer::Start(OneIoThread(), handler);
  ASSERT_TRUE(server.ok()) << server.status();
  TestHttpClient client((*server)->port());
  OrFail([&] {
    for (int round = 0; round < 3; ++round) {
      const TestResponse big = client.Send("GET", "/big");
      ASSERT_EQ(big.status, 200);
      ASSERT_EQ(big.body.size(), size_t{8} << 20);
      EXPECT_EQ(big.body.find_first_not_of('x'), std::string::npos);
      EXPECT_EQ(client.Send("GET", "/small").body, R"({"path":"/small"})");
    }
  });
  EXPECT_EQ(client.connects(), 1);
  (*server)->Shutdown(absl::Seconds(1));
}

// Every 429 and 503 says when to come back: what the refusal carries (a breaker's remaining open
// time, a locked account's lock, a token bucket's wait), else 1 s; other errors do not.
TEST(ErrorResponseTest, RefusalsToComeBackLaterCarryRetryAfter) {
  auto retry_after = [](const HttpResponse& r) {
    std::string out;
    for (const auto& [name, value] : r.headers) {
      if (name == "Retry-After") out = value;
    }
    return out;
  };
  EXPECT_EQ(retry_after(ErrorResponse(Unavailable("down"), "r1")), "1");
  const absl::Status limited =
      Error(absl::StatusCode::kResourceExhausted, ::marketing::common::v1::RATE_LIMITED, "slow");
  EXPECT_EQ(retry_after(ErrorResponse(limited, "r2")), "1");
  EXPECT_EQ(retry_after(ErrorResponse(WithRetryAfter(limited, absl::Milliseconds(4200)), "r3")),
            "5");
  EXPECT_EQ(
      retry_after(ErrorResponse(WithRetryAfter(Unavailable("open"), absl::Seconds(-3)), "r4")),
      "1");
  const HttpResponse bad = ErrorResponse(InvalidArgument("x", "bad"), "r5");
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(retry_after(bad), "");
  // Only 429 and 503 carry it: a 400 ignores a Retry-After put on its status.
  EXPECT_EQ(retry_after(
                ErrorResponse(WithRetryAfter(InvalidArgument("x", "bad"), absl::Seconds(9)), "r6")),
            "");
}

}  // namespace
}  // namespace mkt::gateway
