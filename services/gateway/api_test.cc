// The API pipeline (ApiService) on local routes, without HTTP or backends: parsing, binding,
// idempotency, rate limits, org scope. Operator routes need the database and are covered by
// gateway_pg_test and tests/e2e/gateway_api_e2e_test.cc.
#include "services/gateway/api.h"

#include <atomic>
#include <map>
#include <set>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "libs/core/status.h"
#include "libs/core/text.h"
#include "marketing/campaigns/v1/participation.pb.h"
#include "marketing/channels/v1/channels.pb.h"
#include "marketing/gateway/v1/gateway.pb.h"
#include "marketing/rewards/v1/benefits.pb.h"
#include "nlohmann/json.hpp"
#include "services/gateway/test_fakes.h"

namespace mkt::gateway {
namespace {

namespace gpb = ::google::protobuf;
namespace gw = ::marketing::gateway::v1;
namespace cpb = ::marketing::campaigns::v1;
namespace rpb = ::marketing::rewards::v1;
namespace chpb = ::marketing::channels::v1;
using ::testing::HasSubstr;

// Idempotency records in memory, with the same claim semantics as the PostgreSQL store.
class MemoryIdempotencyStore final : public IdempotencyStore {
 public:
  absl::StatusOr<BeginResult> Begin(std::string_view scope, std::string_view key,
                                    std::string_view hash) override {
    absl::MutexLock lock(&mu_);
    auto [it, inserted] =
        records_.try_emplace(Key(scope, key), Record{std::string(hash), {}, false});
    if (inserted) return BeginResult{Claim::kProceed, {}};
    if (it->second.hash != hash) return BeginResult{Claim::kMismatch, {}};
    if (!it->second.done) return BeginResult{Claim::kInProgress, {}};
    return BeginResult{Claim::kReplay, it->second.response};
  }
  absl::Status Complete(std::string_view scope, std::string_view key,
                        const StoredResponse& response) override {
    absl::MutexLock lock(&mu_);
    Record& r = records_[Key(scope, key)];
    r.response = response;
    r.done = true;
    return absl::OkStatus();
  }
  absl::Status Abandon(std::string_view scope, std::string_view key) override {
    absl::MutexLock lock(&mu_);
    records_.erase(Key(scope, key));
    return absl::OkStatus();
  }
  size_t size() {
    absl::MutexLock lock(&mu_);
    return records_.size();
  }

 private:
  struct Record {
    std::string hash;
    StoredResponse response;
    bool done;
  };
  static std::string Key(std::string_view scope, std::string_view key) {
    return std::string(scope) + "|" + std::string(key);
  }
  absl::Mutex mu_;
  std::map<std::string, Record> records_;
};

// Every test runs twice: with blocking invokers only (the handler pool's path), and with each
// route also given an async invoker that answers from another thread (the I/O thread's path,
// which the pipeline takes for requests that need no idempotency record).
class ApiTest : public ::testing::TestWithParam<bool> {
 protected:
  ApiTest() : api_(Options(), clock_, nullptr, &store_) {}

  ~ApiTest() override {
    absl::MutexLock lock(&threads_mu_);
    for (auto& t : threads_) t.join();
  }

  bool async() const { return GetParam(); }

  // Adds `route`; in the async runs with an async invoker running its invoker on a new thread.
  absl::Status Add(ApiRoute route) {
    if (async()) {
      route.invoke_async = [this, invoke = route.invoke](
                               const ApiCall& call, const gpb::Message& request,
                               gpb::Message* response, std::function<void(absl::Status)> done) {
        absl::MutexLock lock(&threads_mu_);
        threads_.emplace_back([&call, &request, response, invoke, done = std::move(done)] {
          done(invoke(call, request, response));
        });
      };
    }
    return api_.Add(router_, std::move(route));
  }

  static ApiOptions Options() {
    ApiOptions o;
    o.max_json_depth = 6;
    o.max_body_bytes = 4096;
    o.per_channel = {.per_second = 1, .burst = 5};
    o.per_customer = {.per_second = 1, .burst = 3};
    o.idempotency_wait = absl::Seconds(2);
    return o;
  }

  void SetUp() override {
    // A channel POST counting its executions; echoes how many events it got.
    ApiRoute track;
    track.method = "POST";
    track.path = "/v1/tracking";
    track.access = Access::kChannel;
    track.request_type = gw::TrackingBatch::descriptor();
    track.response_type = gw::TrackingAccepted::descriptor();
    track.success_status = 202;
    track.invoke = [this](const ApiCall&, const gpb::Message& req, gpb::Message* resp) {
      executions_.fetch_add(1);
      std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms_.load()));
      const auto& batch = static_cast<const gw::TrackingBatch&>(req);
      if (batch.events_size() == 0) return InvalidArgument("events", "no events");
      if (batch.events(0).page() == "fail") return Unavailable("backend down");
      static_cast<gw::TrackingAccepted*>(resp)->set_accepted(batch.events_size());
      return absl::OkStatus();
    };
    ASSERT_TRUE(Add(track).ok());

    // A channel GET with a customer path parameter and an org-scoped request field; answers the
    // org it was asked for as the owner.
    ApiRoute list;
    list.method = "GET";
    list.path = "/v1/customers/{org_id}/operators";
    list.access = Access::kChannel;
    list.request_type = gw::ListOperatorsRequest::descriptor();
    list.response_type = gw::Operator::descriptor();
    list.body = "";
    list.customer_param = "org_id";
    list.owner_field = "org_id";
    list.invoke = [](const ApiCall&, const gpb::Message& req, gpb::Message* resp) {
      const auto& r = static_cast<const gw::ListOperatorsRequest&>(req);
      if (r.page().page_token() == "down") return Unavailable("backend down");
      auto* op = static_cast<gw::Operator*>(resp);
      op->set_org_id(r.org_id());
      op->set_failed_sign_ins(r.page().page_size());
      op->set_id(r.page().page_token());
      return absl::OkStatus();
    };
    ASSERT_TRUE(Add(list).ok());

    ApiRoute scoped;
    scoped.method = "POST";
    scoped.path = "/v1/scoped";
    scoped.access = Access::kChannel;
    scoped.request_type = gw::CreateOperatorRequest::descriptor();
    scoped.response_type = gw::Operator::descriptor();
    scoped.scope_field = "org_id";
    scoped.invoke = [](const ApiCall&, const gpb::Message& req, gpb::Message* resp) {
      static_cast<gw::Operator*>(resp)->set_org_id(
          static_cast<const gw::CreateOperatorRequest&>(req).org_id());
      return absl::OkStatus();
    };
    ASSERT_TRUE(Add(scoped).ok());

    // Shaped like the participation rows: customer in the body, the Idempotency-Key passed on,
    // the customer's org scoped; echoes what the backend would have been sent.
    ApiRoute take_part;
    take_part.method = "POST";
    take_part.path = "/v1/campaigns/{campaign_id}/participations";
    take_part.access = Access::kChannel;
    take_part.request_type = cpb::ParticipateRequest::descriptor();
    take_part.response_type = cpb::Participation::descriptor();
    take_part.scope_field = "customer_org_id";
    take_part.customer_field = "customer_id";
    take_part.idempotency_field = "idempotency_key";
    take_part.channel_code_field = "channel";
    take_part.success_status = 201;
    take_part.invoke = [this](const ApiCall& call, const gpb::Message& req, gpb::Message* resp) {
      backend_calls_.fetch_add(1);
      const auto& r = static_cast<const cpb::ParticipateRequest&>(req);
      // Like the campaigns service: a key seen before is a replay, said through the caller.
      {
        absl::MutexLock lock(&threads_mu_);
        if (!participation_keys_.insert(r.idempotency_key()).second &&
            call.caller.replayed != nullptr) {
          *call.caller.replayed = true;
        }
      }
      auto* p = static_cast<cpb::Participation*>(resp);
      p->set_campaign_id(r.campaign_id());
      p->set_customer_id(r.customer_id());
      p->set_customer_org_id(r.customer_org_id());
      p->set_idempotency_key(r.idempotency_key());
      p->set_channel(r.channel());
      return absl::OkStatus();
    };
    ASSERT_TRUE(Add(take_part).ok());

    ApiRoute eligible;
    eligible.method = "GET";
    eligible.path = "/v1/customers/{customer_id}/campaigns";
    eligible.access = Access::kChannel;
    eligible.body = "";
    eligible.request_type = cpb::ListEligibleRequest::descriptor();
    eligible.response_type = cpb::ListEligibleResponse::descriptor();
    eligible.scope_field = "customer_org_id";
    eligible.customer_param = "customer_id";
    eligible.query_names = {{"customer_org_id", "org"}};
    eligible.channel_code_field = "channel";
    eligible.invoke = [this](const ApiCall&, const gpb::Message& req, gpb::Message* resp) {
      backend_calls_.fetch_add(1);
      const auto& r = static_cast<const cpb::ListEligibleRequest&>(req);
      auto* c = static_cast<cpb::ListEligibleResponse*>(resp)->add_campaigns();
      c->set_campaign_id(r.channel());
      c->set_org_id(r.customer_org_id());
      c->set_open(r.explain());
      return absl::OkStatus();
    };
    ASSERT_TRUE(Add(eligible).ok());

    // Shaped like POST /v1/redemptions: the channel code inside a nested message; echoes the
    // order's channel as the redemption's.
    ApiRoute lock;
    lock.method = "POST";
    lock.path = "/v1/redemptions";
    lock.access = Access::kChannel;
    lock.request_type = rpb::LockCouponRequest::descriptor();
    lock.response_type = rpb::Redemption::descriptor();
    lock.channel_code_field = "order.channel";
    lock.invoke = [this](const ApiCall&, const gpb::Message& req, gpb::Message* resp) {
      backend_calls_.fetch_add(1);
      const auto& r = static_cast<const rpb::LockCouponRequest&>(req);
      auto* redemption = static_cast<rpb::Redemption*>(resp);
      redemption->set_channel(r.order().channel());
      redemption->set_order_id(r.order().order_id());
      return absl::OkStatus();
    };
    ASSERT_TRUE(Add(lock).ok());
  }

  HttpResponse Send(const std::string& method, const std::string& target, const std::string& body,
                    const std::string& idempotency_key = "", const std::string& channel = "ch_a",
                    const std::string& code = "mobile_banking", const std::string& org = "bank-a") {
    HttpRequest http;
    http.method = method;
    http.target = target;
    http.body = body;
    http.request_id = "req-1";
    if (!idempotency_key.empty()) http.headers.Add("Idempotency-Key", idempotency_key);
    absl::StatusOr<RouteMatch> match = router_.Match(method, http.path());
    if (!match.ok()) return ErrorResponse(match.status(), http.request_id);
    AuthenticatedChannel ch{channel, org, code};
    const RouteRequest route_request{http, match->params, ch};
    absl::StatusOr<HttpResponse> r = absl::UnknownError("not answered");
    bool answered = false;
    if (match->route->async_handler && match->route->async_handler.takes(http)) {
      // Shared with the answering thread, which may outlive a timed-out wait.
      struct Answer {
        absl::Notification done;
        absl::StatusOr<HttpResponse> response = absl::UnknownError("not answered");
      };
      auto answer = std::make_shared<Answer>();
      match->route->async_handler.run(route_request, [answer](absl::StatusOr<HttpResponse> result) {
        answer->response = std::move(result);
        answer->done.Notify();
      });
      EXPECT_TRUE(answer->done.WaitForNotificationWithTimeout(absl::Seconds(10)));
      if (answer->done.HasBeenNotified()) r = answer->response;
      answered = true;
      served_async_.fetch_add(1);
    }
    if (!answered) r = match->route->handler(route_request);
    if (!r.ok()) return ErrorResponse(r.status(), http.request_id);
    return *r;
  }

  // Send from a channel of its own each time, so the per-channel limit never interferes.
  HttpResponse SendFresh(const std::string& method, const std::string& target,
                         const std::string& body, const std::string& idempotency_key) {
    return Send(method, target, body, idempotency_key, "fresh_" + std::to_string(++fresh_));
  }

  static std::string Code(const HttpResponse& r) {
    auto j = nlohmann::json::parse(r.body, nullptr, false);
    return j.is_object() && j.contains("error") ? j["error"]["code"].get<std::string>() : "";
  }

  testing::FakeClock clock_;
  MemoryIdempotencyStore store_;
  Router router_;
  ApiService api_;
  std::atomic<int> executions_{0};
  std::atomic<int> delay_ms_{0};
  // Calls that reached the participation, eligibility and lock "backends".
  std::atomic<int> backend_calls_{0};
  int fresh_ = 0;
  // Requests an async handler answered.
  std::atomic<int> served_async_{0};
  absl::Mutex threads_mu_;
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(threads_mu_);
  // The keys the participation "backend" has seen.
  std::set<std::string> participation_keys_ ABSL_GUARDED_BY(threads_mu_);
};

INSTANTIATE_TEST_SUITE_P(BlockingAndAsync, ApiTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Async" : "Blocking";
                         });

constexpr char kBatch[] = R"({"events":[{"customer_id":"c1","action":"CLICK"}]})";

TEST_P(ApiTest, ParsesTheBodyAndAnswersWithTheRouteStatus) {
  HttpResponse r = Send("POST", "/v1/tracking", kBatch, "k1");
  EXPECT_EQ(r.status, 202) << r.body;
  EXPECT_EQ(nlohmann::json::parse(r.body)["accepted"], 1);
}

TEST_P(ApiTest, UnknownFieldsAndBadJsonAre400NamingTheField) {
  HttpResponse r = Send("POST", "/v1/tracking", R"({"events":[],"evnts":[]})", "k1");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(Code(r), "INVALID_ARGUMENT");
  EXPECT_THAT(r.body, HasSubstr("evnts"));
  EXPECT_EQ(Send("POST", "/v1/tracking", "{", "k2").status, 400);
  EXPECT_EQ(Send("POST", "/v1/tracking", "[[[[[[[[[[]]]]]]]]]]", "k3").status, 400);
  EXPECT_EQ(executions_.load(), 0);
}

TEST_P(ApiTest, BodyOverTheRouteLimitIs413) {
  HttpResponse r = Send("POST", "/v1/tracking", std::string(5000, ' '), "k1");
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(Code(r), "BODY_TOO_LARGE");
}

TEST_P(ApiTest, ChannelPostsNeedAnIdempotencyKey) {
  HttpResponse r = Send("POST", "/v1/tracking", kBatch);
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, HasSubstr("Idempotency-Key"));
  EXPECT_EQ(Send("POST", "/v1/tracking", kBatch, std::string(200, 'k')).status, 400);
}

TEST_P(ApiTest, ReplayReturnsTheFirstResponseAndADifferentBodyIs409) {
  HttpResponse first = Send("POST", "/v1/tracking", kBatch, "key-1");
  HttpResponse again = Send("POST", "/v1/tracking", kBatch, "key-1");
  EXPECT_EQ(again.status, 202);
  EXPECT_EQ(again.body, first.body);
  EXPECT_EQ(executions_.load(), 1);
  bool replay_header = false;
  for (const auto& [name, value] : again.headers) replay_header |= name == "Idempotent-Replayed";
  EXPECT_TRUE(replay_header);

  HttpResponse other = Send("POST", "/v1/tracking",
                            R"({"events":[{"customer_id":"c2","action":"CLICK"}]})", "key-1");
  EXPECT_EQ(other.status, 409);
  EXPECT_EQ(Code(other), "IDEMPOTENCY_KEY_REUSED");
  // Keys are per channel: another channel may use the same key.
  EXPECT_EQ(Send("POST", "/v1/tracking", kBatch, "key-1", "ch_b").status, 202);
  EXPECT_EQ(executions_.load(), 2);
}

TEST_P(ApiTest, ClientErrorsAreStoredButServerErrorsAreNot) {
  EXPECT_EQ(Send("POST", "/v1/tracking", R"({"events":[]})", "k-bad").status, 400);
  EXPECT_EQ(Send("POST", "/v1/tracking", R"({"events":[]})", "k-bad").status, 400);
  EXPECT_EQ(executions_.load(), 1);
  const std::string failing = R"({"events":[{"page":"fail"}]})";
  EXPECT_EQ(Send("POST", "/v1/tracking", failing, "k-503").status, 503);
  EXPECT_EQ(Send("POST", "/v1/tracking", failing, "k-503").status, 503);
  EXPECT_EQ(executions_.load(), 3) << "a 503 is retried, not replayed";
}

TEST_P(ApiTest, ConcurrentDuplicatesExecuteOnce) {
  delay_ms_ = 200;
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      if (Send("POST", "/v1/tracking", kBatch, "same-key").status == 202) ok.fetch_add(1);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 4);
  EXPECT_EQ(executions_.load(), 1);
}

TEST_P(ApiTest, ChannelOverItsLimitGets429WithRetryAfterOthersUnaffected) {
  int limited = 0;
  std::string retry_after;
  for (int i = 0; i < 8; ++i) {
    HttpResponse r = Send("POST", "/v1/tracking", kBatch, "k" + std::to_string(i));
    if (r.status == 429) {
      ++limited;
      EXPECT_EQ(Code(r), "RATE_LIMITED");
      for (const auto& [name, value] : r.headers) {
        if (name == "Retry-After") retry_after = value;
      }
    }
  }
  EXPECT_EQ(limited, 3);
  EXPECT_EQ(retry_after, "1");
  EXPECT_EQ(Send("POST", "/v1/tracking", kBatch, "x", "ch_b").status, 202);
}

TEST_P(ApiTest, CustomerLimitAppliesPerCustomer) {
  int limited = 0;
  for (int i = 0; i < 5; ++i) {
    if (Send("GET", "/v1/customers/bank-a/operators", "", "", "ch_" + std::to_string(i)).status ==
        429) {
      ++limited;
    }
  }
  EXPECT_EQ(limited, 2);
  EXPECT_EQ(Send("GET", "/v1/customers/bank-a.branch-01/operators", "", "", "ch_z").status, 200);
  // Customer ids are each bank's own: another org's channel asking for the same id has a budget
  // of its own.
  EXPECT_EQ(
      Send("GET", "/v1/customers/bank-a/operators", "", "", "ch_f", "mobile_banking", "fed").status,
      200);
}

// Decision 003: a route whose answer holds a credential (a channel's secret) stores no answer for
// replays, even when the client sends an Idempotency-Key; a retry runs the call again.
TEST_P(ApiTest, AnswersHoldingASecretAreNeverStoredForReplays) {
  ApiRoute rotate;
  rotate.method = "POST";
  rotate.path = "/v1/secrets";
  rotate.access = Access::kChannel;
  rotate.request_type = chpb::GetChannelRequest::descriptor();
  rotate.response_type = chpb::ChannelWithSecret::descriptor();
  int rotations = 0;
  rotate.invoke = [&rotations](const ApiCall&, const gpb::Message&, gpb::Message* resp) {
    static_cast<chpb::ChannelWithSecret*>(resp)->set_secret(absl::StrCat("secret-", ++rotations));
    return absl::OkStatus();
  };
  ASSERT_TRUE(Add(rotate).ok());
  const size_t stored = store_.size();
  HttpResponse first = Send("POST", "/v1/secrets", R"({"id":"ch_1"})", "rotate-1");
  HttpResponse again = Send("POST", "/v1/secrets", R"({"id":"ch_1"})", "rotate-1");
  ASSERT_EQ(first.status, 200) << first.body;
  ASSERT_EQ(again.status, 200) << again.body;
  EXPECT_THAT(first.body, HasSubstr("secret-1"));
  EXPECT_THAT(again.body, HasSubstr("secret-2"));
  EXPECT_EQ(store_.size(), stored);
}

TEST_P(ApiTest, QueryParametersBindAndUnknownOnesAre400) {
  HttpResponse r =
      Send("GET", "/v1/customers/bank-a.q1/operators?page_size=7&page_token=abc%20d", "");
  ASSERT_EQ(r.status, 200) << r.body;
  auto j = nlohmann::json::parse(r.body);
  EXPECT_EQ(j["failed_sign_ins"], 7);
  EXPECT_EQ(j["id"], "abc d");
  r = Send("GET", "/v1/customers/bank-a.q2/operators?pagesize=7", "");
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, HasSubstr("pagesize"));
  EXPECT_EQ(Send("GET", "/v1/customers/bank-a.q3/operators?page_size=x", "").status, 400);
  EXPECT_EQ(Send("GET", "/v1/customers/bank-a.q4/operators", "{\"a\":1}").status, 400);
}

TEST_P(ApiTest, ResponsesOwnedOutsideTheCallersOrgAre404) {
  EXPECT_EQ(Send("GET", "/v1/customers/bank-a.branch-01/operators", "").status, 200);
  HttpResponse r = Send("GET", "/v1/customers/bank-b/operators", "");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(Code(r), "NOT_FOUND");
}

TEST_P(ApiTest, RequestScopeIsFilledOrCheckedAgainstTheCallersOrg) {
  HttpResponse r = Send("POST", "/v1/scoped", "{}", "s1");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(nlohmann::json::parse(r.body)["org_id"], "bank-a");
  r = Send("POST", "/v1/scoped", R"({"org_id":"bank-b"})", "s2");
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(Code(r), "PERMISSION_DENIED");
  EXPECT_EQ(Send("POST", "/v1/scoped", R"({"org_id":"bank-a.x"})", "s3").status, 200);
  EXPECT_EQ(Send("POST", "/v1/scoped", R"({"org_id":"BANK"})", "s4").status, 400);
}

TEST_P(ApiTest, RowsWithBrokenBindingsAreRefusedAtRegistration) {
  ApiRoute bad;
  bad.method = "GET";
  bad.path = "/v1/x/{nope}";
  bad.request_type = gw::GetOperatorRequest::descriptor();
  bad.response_type = gw::Operator::descriptor();
  bad.invoke = [](const ApiCall&, const gpb::Message&, gpb::Message*) { return absl::OkStatus(); };
  EXPECT_FALSE(api_.Add(router_, bad).ok());
  bad.path = "/v1/x/{id}";
  bad.body = "id";
  EXPECT_FALSE(api_.Add(router_, bad).ok());
}

TEST_P(ApiTest, TheIdempotencyKeyReachesTheBackendScopedByTheChannel) {
  HttpResponse r = Send("POST", "/v1/campaigns/cmp_1/participations",
                        R"({"customer_id":"C1","channel":"mobile_banking"})", "k-1");
  ASSERT_EQ(r.status, 201) << r.body;
  auto j = nlohmann::json::parse(r.body);
  EXPECT_EQ(j["idempotency_key"], "ch_a:k-1");
  EXPECT_EQ(j["campaign_id"], "cmp_1");
  EXPECT_EQ(j["customer_org_id"], "bank-a") << "the channel's org is the default";
  // A key that would not fit with its channel prefix is hashed, still per channel.
  const std::string long_key(128, 'k');
  r = Send("POST", "/v1/campaigns/cmp_1/participations", R"({"customer_id":"C2"})", long_key);
  ASSERT_EQ(r.status, 201) << r.body;
  const std::string sent = nlohmann::json::parse(r.body)["idempotency_key"];
  EXPECT_LE(sent.size(), 128u);
  EXPECT_EQ(sent.rfind("ch_a:sha256:", 0), 0u) << sent;
  // The body may not choose the backend's key, nor another bank's customers.
  r = Send("POST", "/v1/campaigns/cmp_1/participations",
           R"({"customer_id":"C3","idempotency_key":"mine"})", "k-2");
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, HasSubstr("idempotency_key"));
  r = Send("POST", "/v1/campaigns/cmp_1/participations",
           R"({"customer_id":"C3","customer_org_id":"bank-b"})", "k-3");
  EXPECT_EQ(r.status, 403);
}

TEST_P(ApiTest, RoutesWhoseBackendKeepsTheKeyWriteNoRecord) {
  // The participation passes its key on and the backend answers replays: no record here, the
  // backend is called again, and its word makes the Idempotent-Replayed header.
  const std::string body = R"({"customer_id":"C1"})";
  HttpResponse first = Send("POST", "/v1/campaigns/cmp_1/participations", body, "k-1");
  ASSERT_EQ(first.status, 201) << first.body;
  auto replayed = [](const HttpResponse& r) {
    for (const auto& [name, value] : r.headers) {
      if (name == "Idempotent-Replayed") return value == "true";
    }
    return false;
  };
  EXPECT_FALSE(replayed(first));
  HttpResponse again = Send("POST", "/v1/campaigns/cmp_1/participations", body, "k-1");
  EXPECT_EQ(again.status, 201);
  EXPECT_EQ(again.body, first.body);
  EXPECT_TRUE(replayed(again));
  EXPECT_EQ(backend_calls_.load(), 2);
  EXPECT_EQ(store_.size(), 0u);
  // The key is still required and checked, on either path.
  HttpResponse r = Send("POST", "/v1/campaigns/cmp_1/participations", body, "");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_THAT(r.body, HasSubstr("Idempotency-Key"));
  r = Send("POST", "/v1/campaigns/cmp_1/participations", body, "bad\x01key");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_THAT(r.body, HasSubstr("printable"));
  EXPECT_EQ(backend_calls_.load(), 2);
  // Tracking has no key of its own downstream: its record is the gateway's.
  EXPECT_EQ(Send("POST", "/v1/tracking", kBatch, "k-1").status, 202);
  EXPECT_EQ(store_.size(), 1u);
}

TEST_P(ApiTest, ACustomerNamedInTheBodyHasTheCustomerLimit) {
  int limited = 0;
  for (int i = 0; i < 5; ++i) {
    // Different channels and keys: only the customer's bucket (burst 3) can refuse.
    HttpResponse r =
        Send("POST", "/v1/campaigns/cmp_1/participations", R"({"customer_id":"C-busy"})",
             "b" + std::to_string(i), "ch_" + std::to_string(i));
    if (r.status == 429) {
      ++limited;
      EXPECT_EQ(Code(r), "RATE_LIMITED");
    }
  }
  EXPECT_EQ(limited, 2);
  EXPECT_EQ(
      Send("POST", "/v1/campaigns/cmp_1/participations", R"({"customer_id":"C-calm"})", "c", "ch_x")
          .status,
      201);
}

TEST_P(ApiTest, QueryParametersAnswerToTheirPublicNames) {
  HttpResponse r = Send(
      "GET", "/v1/customers/Q1/campaigns?channel=mobile_banking&org=bank-a.b1&explain=true", "");
  ASSERT_EQ(r.status, 200) << r.body;
  auto c = nlohmann::json::parse(r.body)["campaigns"][0];
  EXPECT_EQ(c["campaign_id"], "mobile_banking");
  EXPECT_EQ(c["org_id"], "bank-a.b1");
  EXPECT_EQ(c["open"], true);
  r = Send("GET", "/v1/customers/Q2/campaigns?channel=mobile_banking", "");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(nlohmann::json::parse(r.body)["campaigns"][0]["org_id"], "bank-a");
  r = Send("GET", "/v1/customers/Q3/campaigns?customer_org_id=bank-a", "");
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, HasSubstr("customer_org_id"));
  EXPECT_EQ(Send("GET", "/v1/customers/Q4/campaigns?org=bank-b", "").status, 403);
}

TEST_P(ApiTest, AnOmittedChannelCodeIsTheCallersOwn) {
  // Body field.
  HttpResponse r =
      Send("POST", "/v1/campaigns/cmp_1/participations", R"({"customer_id":"C1"})", "k-1");
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(nlohmann::json::parse(r.body)["channel"], "mobile_banking");
  r = Send("POST", "/v1/campaigns/cmp_1/participations",
           R"({"customer_id":"C1","channel":"mobile_banking"})", "k-2");
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(nlohmann::json::parse(r.body)["channel"], "mobile_banking");
  // Another channel of the same bank acts as its own code.
  r = Send("POST", "/v1/campaigns/cmp_1/participations", R"({"customer_id":"C1"})", "k-3", "ch_w",
           "wecom");
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(nlohmann::json::parse(r.body)["channel"], "wecom");
  // Query parameter.
  r = Send("GET", "/v1/customers/Q1/campaigns", "");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(nlohmann::json::parse(r.body)["campaigns"][0]["campaign_id"], "mobile_banking");
  // A field inside a nested message (the order of a coupon lock), also when the message is absent.
  r = Send("POST", "/v1/redemptions", R"({"coupon_code":"CPN1","order":{"order_id":"O1"}})", "l-1");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(nlohmann::json::parse(r.body)["channel"], "mobile_banking");
  EXPECT_EQ(nlohmann::json::parse(r.body)["order_id"], "O1");
  r = Send("POST", "/v1/redemptions", R"({"coupon_code":"CPN1"})", "l-2");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(nlohmann::json::parse(r.body)["channel"], "mobile_banking");
  EXPECT_EQ(backend_calls_.load(), 6);
}

TEST_P(ApiTest, AnotherChannelsCodeIs403AndReachesNoBackend) {
  HttpResponse r = Send("POST", "/v1/campaigns/cmp_1/participations",
                        R"({"customer_id":"C1","channel":"wecom"})", "k-1");
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_EQ(Code(r), "PERMISSION_DENIED");
  EXPECT_THAT(r.body, HasSubstr("this channel is mobile_banking; it cannot act as wecom"));
  r = Send("GET", "/v1/customers/Q1/campaigns?channel=wecom", "");
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_EQ(Code(r), "PERMISSION_DENIED");
  r = Send("POST", "/v1/redemptions", R"({"coupon_code":"CPN1","order":{"channel":"counter"}})",
           "l-1");
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_THAT(r.body, HasSubstr("it cannot act as counter"));
  // The WeCom channel may not act as mobile banking either; codes compare exactly.
  EXPECT_EQ(Send("POST", "/v1/campaigns/cmp_1/participations",
                 R"({"customer_id":"C2","channel":"mobile_banking"})", "k-2", "ch_w", "wecom")
                .status,
            403);
  EXPECT_EQ(Send("POST", "/v1/campaigns/cmp_1/participations",
                 R"({"customer_id":"C3","channel":"Mobile_Banking"})", "k-3")
                .status,
            403);
  EXPECT_EQ(backend_calls_.load(), 0);
  // The refusal is not an idempotent outcome: the same key with the caller's own code goes on.
  r = Send("POST", "/v1/campaigns/cmp_1/participations", R"({"customer_id":"C1"})", "k-1");
  EXPECT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(backend_calls_.load(), 1);
}

TEST_P(ApiTest, ACallerWithoutAKnownCodeCannotNameOne) {
  // A registry that sent no code: the gateway cannot tell which code is the caller's, so it
  // refuses rather than trusting the request.
  const std::vector<std::string> bodies = {R"({"customer_id":"C1"})",
                                           R"({"customer_id":"C1","channel":"wecom"})"};
  for (size_t i = 0; i < bodies.size(); ++i) {
    HttpResponse r = Send("POST", "/v1/campaigns/cmp_1/participations", bodies[i],
                          "k-" + std::to_string(i), "ch_old", "");
    EXPECT_EQ(r.status, 500) << r.body;
  }
  EXPECT_EQ(backend_calls_.load(), 0);
}

TEST_P(ApiTest, ChannelCodeFieldsAreCheckedAtRegistration) {
  ApiRoute bad;
  bad.method = "POST";
  bad.path = "/v1/bad-code";
  bad.access = Access::kChannel;
  bad.request_type = cpb::ParticipateRequest::descriptor();
  bad.response_type = cpb::Participation::descriptor();
  bad.invoke = [](const ApiCall&, const gpb::Message&, gpb::Message*) { return absl::OkStatus(); };
  bad.channel_code_field = "chanel";
  EXPECT_FALSE(api_.Add(router_, bad).ok());
  // Operators have no channel code.
  bad.channel_code_field = "channel";
  bad.access = Access::kOperator;
  EXPECT_FALSE(api_.Add(router_, bad).ok());
}

// Issue 9 B3: a field the path (or a header) fills is not part of the body; sending it anyway is a
// 400 naming it, and the backend is not called (before: the path silently won).
TEST_P(ApiTest, FieldsThePathFillsAreRefusedInTheBody) {
  for (const std::string body : {R"({"customer_id":"C1","campaign_id":"cmp_other"})",
                                 R"({"customer_id":"C1","campaignId":"cmp_other"})"}) {
    HttpResponse r = SendFresh("POST", "/v1/campaigns/cmp_1/participations", body, "k-" + body);
    EXPECT_EQ(r.status, 400) << body << " → " << r.body;
    EXPECT_EQ(Code(r), "INVALID_ARGUMENT");
    EXPECT_THAT(r.body, HasSubstr("campaign_id is taken from the path ({campaign_id})"));
  }
  HttpResponse r = SendFresh("POST", "/v1/campaigns/cmp_1/participations",
                             R"({"customer_id":"C1","idempotency_key":"x"})", "k-idem");
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, HasSubstr("idempotency_key is taken from the Idempotency-Key header"));
  EXPECT_EQ(backend_calls_.load(), 0);
  // The same field with the path's own value is refused too: the rule does not depend on values.
  r = SendFresh("POST", "/v1/campaigns/cmp_1/participations",
                R"({"customer_id":"C1","campaign_id":"cmp_1"})", "k-same");
  EXPECT_EQ(r.status, 400);
  r = SendFresh("POST", "/v1/campaigns/cmp_1/participations", R"({"customer_id":"C1"})", "k-ok");
  EXPECT_EQ(r.status, 201) << r.body;
}

TEST_P(ApiTest, ServerFilledFieldsAreRefusedAtAnyDepth) {
  ApiRoute route;
  route.method = "POST";
  route.path = "/v1/tracked";
  route.access = Access::kChannel;
  route.request_type = gw::TrackingBatch::descriptor();
  route.response_type = gw::TrackingAccepted::descriptor();
  route.server_fields = {{"events.channel_id", "the calling channel"}};
  route.invoke = [this](const ApiCall&, const gpb::Message&, gpb::Message*) {
    backend_calls_.fetch_add(1);
    return absl::OkStatus();
  };
  ASSERT_TRUE(Add(route).ok());
  HttpResponse r =
      SendFresh("POST", "/v1/tracked",
                R"({"events":[{"customer_id":"c1"},{"customer_id":"c2","channel_id":"x"}]})", "k1");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_THAT(r.body, HasSubstr("events[1].channel_id is taken from the calling channel"));
  EXPECT_EQ(backend_calls_.load(), 0);
  route.path = "/v1/tracked2";
  route.server_fields = {{"events.no_such_field", "x"}};
  EXPECT_FALSE(api_.Add(router_, route).ok()) << "a server field must name a field";
}

// Issue 9 B4: null is not a value of any field (protobuf would read it as the default); 400 naming
// the field, at any depth (before: accepted).
TEST_P(ApiTest, NullIsRefusedForEveryFieldNamingIt) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"customer_id":null})", "customer_id: null"},
      {R"({"customer_id":"C1","item_id":null})", "item_id: null"},
  };
  for (const auto& [body, expected] : cases) {
    HttpResponse r = SendFresh("POST", "/v1/campaigns/cmp_1/participations", body, "k-" + body);
    EXPECT_EQ(r.status, 400) << body << " → " << r.body;
    EXPECT_THAT(r.body, HasSubstr(expected));
  }
  const std::vector<std::pair<std::string, std::string>> nested = {
      {R"({"coupon_code":"C","customer_id":"U","order":{"order_id":null}})", "order.order_id"},
      {R"({"coupon_code":"C","customer_id":"U","order":null})", "order: null"},
      {R"({"coupon_code":"C","customer_id":"U","order":{"order_id":"o","products":["a",null]}})",
       "order.products[1]"},
  };
  for (const auto& [body, expected] : nested) {
    HttpResponse r = SendFresh("POST", "/v1/redemptions", body, "k-" + body);
    EXPECT_EQ(r.status, 400) << body << " → " << r.body;
    EXPECT_THAT(r.body, HasSubstr(expected));
  }
  HttpResponse r =
      SendFresh("POST", "/v1/tracking", R"({"events":[{"customer_id":"c1","page":null}]})", "k-t");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_THAT(r.body, HasSubstr("events[0].page: null"));
  EXPECT_EQ(backend_calls_.load(), 0);
  EXPECT_EQ(executions_.load(), 0);
}

// Issue 9 B5: required fields are checked before the call, 400 naming the (first) missing one.
TEST_P(ApiTest, RequiredFieldsAreCheckedBeforeTheCall) {
  ApiRoute route;
  route.method = "POST";
  route.path = "/v1/locks";
  route.access = Access::kChannel;
  route.request_type = rpb::LockCouponRequest::descriptor();
  route.response_type = rpb::Redemption::descriptor();
  route.required = {"coupon_code", "order", "order.order_id"};
  route.invoke = [this](const ApiCall&, const gpb::Message&, gpb::Message*) {
    backend_calls_.fetch_add(1);
    return absl::OkStatus();
  };
  ASSERT_TRUE(Add(route).ok());
  HttpResponse r = SendFresh("POST", "/v1/locks", R"({"order":{"order_id":"o"}})", "k1");
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, HasSubstr("coupon_code is required"));
  r = SendFresh("POST", "/v1/locks", R"({"coupon_code":"C"})", "k2");
  EXPECT_THAT(r.body, HasSubstr("order is required"));
  r = SendFresh("POST", "/v1/locks", R"({"coupon_code":"C","order":{"order_id":""}})", "k3");
  EXPECT_THAT(r.body, HasSubstr("order.order_id is required"));
  EXPECT_EQ(backend_calls_.load(), 0);
  r = SendFresh("POST", "/v1/locks", R"({"coupon_code":"C","order":{"order_id":"o"}})", "k4");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(backend_calls_.load(), 1);
  route.path = "/v1/locks2";
  route.required = {"order.no_such"};
  EXPECT_FALSE(api_.Add(router_, route).ok()) << "a required field must exist";
  // Through a repeated message field, every element.
  ApiRoute batch;
  batch.method = "POST";
  batch.path = "/v1/batch";
  batch.access = Access::kChannel;
  batch.request_type = gw::TrackingBatch::descriptor();
  batch.response_type = gw::TrackingAccepted::descriptor();
  batch.required = {"events", "events.customer_id"};
  batch.invoke = route.invoke;
  ASSERT_TRUE(Add(batch).ok());
  EXPECT_THAT(SendFresh("POST", "/v1/batch", R"({})", "b1").body, HasSubstr("events is required"));
  EXPECT_THAT(SendFresh("POST", "/v1/batch", R"({"events":[{"customer_id":"a"},{}]})", "b2").body,
              HasSubstr("events[1].customer_id is required"));
}

TEST_P(ApiTest, OnlyRequestsThatNeedNoIdempotencyRecordAreServedWithoutWaiting) {
  const int async_runs = async() ? 1 : 0;
  HttpResponse r = Send("GET", "/v1/customers/bank-a.w1/operators?page_size=3", "");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(nlohmann::json::parse(r.body)["failed_sign_ins"], 3);
  EXPECT_EQ(served_async_.load(), async_runs);

  // Another bank's resource is a 404 on either path, answered by the async one.
  r = Send("GET", "/v1/customers/bank-b/operators", "");
  EXPECT_EQ(r.status, 404) << r.body;
  EXPECT_EQ(served_async_.load(), 2 * async_runs);

  // A POST with an Idempotency-Key writes a record (a database): the blocking path.
  r = SendFresh("POST", "/v1/tracking", kBatch, "k-async");
  EXPECT_EQ(r.status, 202) << r.body;
  // Without the key this route requires, the blocking path refuses it.
  r = SendFresh("POST", "/v1/tracking", kBatch, "");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(served_async_.load(), 2 * async_runs);

  // A POST whose backend keeps the key itself writes no record: the async path, with or
  // without its key (refused there).
  r = SendFresh("POST", "/v1/campaigns/cmp_1/participations", R"({"customer_id":"C1"})", "k-9");
  EXPECT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(served_async_.load(), 3 * async_runs);
  r = SendFresh("POST", "/v1/campaigns/cmp_1/participations", R"({"customer_id":"C1"})", "");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(served_async_.load(), 4 * async_runs);
}

TEST_P(ApiTest, OperatorRoutesCannotHaveAnAsyncCall) {
  ApiRoute route;
  route.method = "GET";
  route.path = "/admin/v1/async";
  route.access = Access::kOperator;
  route.request_type = gw::ListOperatorsRequest::descriptor();
  route.response_type = gw::Operator::descriptor();
  route.body = "";
  route.invoke = [](const ApiCall&, const gpb::Message&, gpb::Message*) {
    return absl::OkStatus();
  };
  route.invoke_async = [](const ApiCall&, const gpb::Message&, gpb::Message*,
                          std::function<void(absl::Status)> done) { done(absl::OkStatus()); };
  EXPECT_FALSE(api_.Add(router_, route).ok());
}

TEST_P(ApiTest, ABackendFailureIs503WithRetryAfterOnEitherPath) {
  HttpResponse r = Send("GET", "/v1/customers/bank-a/operators?page_token=down", "");
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_EQ(Code(r), "DEPENDENCY_UNAVAILABLE");
  EXPECT_THAT(r.log_note, HasSubstr("backend down"));
  bool retry_after = false;
  for (const auto& [name, value] : r.headers) retry_after |= name == "Retry-After";
  EXPECT_TRUE(retry_after);
  EXPECT_EQ(served_async_.load(), async() ? 1 : 0);
}

TEST(MaskCustomerIdTest, KeepsOnlyTheEnds) {
  EXPECT_EQ(MaskCustomerId("C1234567890"), "C1*******90");
  EXPECT_EQ(MaskCustomerId("abc"), "***");
}

// A body nested far deeper than any route accepts is recorded by its size, without walking it (a
// recursive walk of a million levels would overflow the stack: the whole gateway down).
TEST(MaskedBodyTest, ABodyNestedTooDeepIsRecordedByItsSizeOnly) {
  const std::string deep = std::string(500'000, '[') + std::string(500'000, ']');
  EXPECT_EQ(MaskedBody(deep), "(JSON nested deeper than 64 levels: 1000000 bytes)");
  const std::string fine = std::string(60, '[') + std::string(60, ']');
  EXPECT_EQ(MaskedBody(fine), fine);
}

TEST(MaskedBodyTest, PasswordsAndSecretsAreMaskedAtAnyDepthAndLongBodiesCut) {
  EXPECT_EQ(MaskedBody(R"({"id":"x","password":"hunter2","roles":["admin"]})"),
            R"({"id":"x","password":"***","roles":["admin"]})");
  EXPECT_EQ(MaskedBody(R"({"a":[{"new_Password":"p","ClientSecret":{"k":1},"name":"n"}]})"),
            R"({"a":[{"ClientSecret":"***","name":"n","new_Password":"***"}]})");
  EXPECT_EQ(MaskedBody(""), "");
  EXPECT_EQ(MaskedBody("{not json"), "(not JSON: 9 bytes)");
  // Cut on a character boundary (each 张 is three bytes), with the full size said.
  const std::string name = "\xE5\xBC\xA0";
  std::string big = "{\"n\":\"";
  for (int i = 0; i < 100; ++i) big += name;
  big += "\"}";
  const std::string cut = MaskedBody(big, 20);
  EXPECT_EQ(cut, "{\"n\":\"" + name + name + name + name + "... (308 bytes)") << cut;
  EXPECT_TRUE(IsWellFormedUtf8(cut));
}

}  // namespace
}  // namespace mkt::gateway
