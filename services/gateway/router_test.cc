#include "services/gateway/router.h"

#include "gtest/gtest.h"
#include "libs/core/status.h"

namespace mkt::gateway {
namespace {

namespace pb = ::marketing::common::v1;

RouteHandler Named(std::string name) {
  return [name](const RouteRequest&) -> absl::StatusOr<HttpResponse> { return JsonResponse(name); };
}

class RouterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(router_.Add("GET", "/healthz", {}, Named("health")).ok());
    ASSERT_TRUE(router_
                    .Add("GET", "/v1/customers/{customer_id}/wallet", {.channel_auth = true},
                         Named("wallet"))
                    .ok());
    ASSERT_TRUE(router_.Add("POST", "/v1/redemptions", {}, Named("lock")).ok());
    ASSERT_TRUE(router_.Add("POST", "/v1/redemptions/{id}:confirm", {}, Named("confirm")).ok());
    ASSERT_TRUE(router_.Add("POST", "/v1/redemptions/{id}", {}, Named("plain")).ok());
    ASSERT_TRUE(router_.Add("GET", "/v1/coupons/{code}", {}, Named("coupon")).ok());
    ASSERT_TRUE(router_.Add("GET", "/v1/coupons/mine", {}, Named("mine")).ok());
    ASSERT_TRUE(router_.Add("PUT", "/v1/coupons/{code}", {}, Named("put")).ok());
  }

  // Returns the body of the handler the match picked.
  std::string Matched(std::string_view method, std::string_view path,
                      PathParams* params = nullptr) {
    absl::StatusOr<RouteMatch> match = router_.Match(method, path);
    if (!match.ok()) return "error: " + match.status().ToString();
    if (params != nullptr) *params = match->params;
    HttpRequest http;
    return match->route->handler(RouteRequest{http, match->params, std::nullopt})->body;
  }

  Router router_;
};

TEST_F(RouterTest, MatchesLiteralsAndExtractsParameters) {
  EXPECT_EQ(Matched("GET", "/healthz"), "health");
  PathParams params;
  EXPECT_EQ(Matched("GET", "/v1/customers/c-0042/wallet", &params), "wallet");
  EXPECT_EQ(params.at("customer_id"), "c-0042");
  absl::StatusOr<RouteMatch> match = router_.Match("GET", "/v1/customers/c-1/wallet");
  ASSERT_TRUE(match.ok());
  EXPECT_TRUE(match->route->options.channel_auth);
  EXPECT_EQ(match->route->name, "GET /v1/customers/{customer_id}/wallet");
}

TEST_F(RouterTest, ParametersArePercentDecoded) {
  PathParams params;
  EXPECT_EQ(Matched("GET", "/v1/customers/a%20b%2Fc/wallet", &params), "wallet");
  EXPECT_EQ(params.at("customer_id"), "a b/c");
  absl::StatusOr<RouteMatch> broken = router_.Match("GET", "/v1/customers/a%2/wallet");
  ASSERT_FALSE(broken.ok());
  EXPECT_EQ(HttpStatusFor(broken.status()), 400);
}

TEST_F(RouterTest, CustomMethodSuffixes) {
  PathParams params;
  EXPECT_EQ(Matched("POST", "/v1/redemptions/r-7:confirm", &params), "confirm");
  EXPECT_EQ(params.at("id"), "r-7");
  EXPECT_EQ(Matched("POST", "/v1/redemptions/r-7", &params), "plain");
  EXPECT_EQ(params.at("id"), "r-7");
  EXPECT_EQ(Matched("POST", "/v1/redemptions"), "lock");
  // The parameter before the suffix must not be empty.
  EXPECT_NE(Matched("POST", "/v1/redemptions/:confirm"), "confirm");
}

TEST_F(RouterTest, LiteralSegmentsWinOverParameters) {
  EXPECT_EQ(Matched("GET", "/v1/coupons/mine"), "mine");
  EXPECT_EQ(Matched("GET", "/v1/coupons/CPN-1"), "coupon");
}

TEST_F(RouterTest, UnknownPathIs404) {
  for (std::string_view path : {"/", "/nope", "/healthz/", "/v1/customers//wallet",
                                "/v1/customers/c-1/wallet/extra", "/HEALTHZ"}) {
    SCOPED_TRACE(path);
    absl::StatusOr<RouteMatch> match = router_.Match("GET", path);
    ASSERT_FALSE(match.ok());
    EXPECT_EQ(ReasonOf(match.status()), pb::NOT_FOUND);
    EXPECT_EQ(HttpStatusFor(match.status()), 404);
  }
}

TEST_F(RouterTest, KnownPathWithAnotherMethodIs405WithTheAllowedMethods) {
  std::string allowed;
  absl::StatusOr<RouteMatch> match = router_.Match("DELETE", "/v1/coupons/CPN-1", &allowed);
  ASSERT_FALSE(match.ok());
  EXPECT_EQ(ReasonOf(match.status()), pb::METHOD_NOT_ALLOWED);
  EXPECT_EQ(HttpStatusFor(match.status()), 405);
  EXPECT_EQ(allowed, "GET, PUT");
  allowed.clear();
  EXPECT_FALSE(router_.Match("POST", "/healthz", &allowed).ok());
  EXPECT_EQ(allowed, "GET");
}

TEST_F(RouterTest, RejectsMalformedTemplatesAndDuplicates) {
  Router router;
  EXPECT_FALSE(router.Add("GET", "no-slash", {}, Named("x")).ok());
  EXPECT_FALSE(router.Add("GET", "/a//b", {}, Named("x")).ok());
  EXPECT_FALSE(router.Add("GET", "/a/{1bad}", {}, Named("x")).ok());
  EXPECT_FALSE(router.Add("GET", "/a/{unclosed", {}, Named("x")).ok());
  EXPECT_FALSE(router.Add("GET", "/a/x{y}", {}, Named("x")).ok());
  EXPECT_FALSE(router.Add("GET", "/a/{x}{y}", {}, Named("x")).ok());
  ASSERT_TRUE(router.Add("GET", "/a/{x}", {}, Named("x")).ok());
  EXPECT_EQ(router.Add("GET", "/a/{x}", {}, Named("x")).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(router.Add("POST", "/a/{x}", {}, Named("x")).ok());
}

}  // namespace
}  // namespace mkt::gateway
