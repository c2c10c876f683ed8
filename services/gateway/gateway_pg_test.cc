// The gateway's PostgreSQL stores on a fresh database of the real server: idempotency claims
// (including concurrent duplicates from real threads), operator accounts, sign-in with lock-out,
// session revocation, and the audit trail of operator requests.
#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "libs/core/status.h"
#include "libs/testing/testing.h"
#include "services/gateway/admin_auth.h"
#include "services/gateway/audit_trail.h"
#include "services/gateway/gateway_database.h"
#include "services/gateway/idempotency_store.h"
#include "services/gateway/operator_store.h"
#include "services/gateway/test_fakes.h"

namespace mkt::gateway {
namespace {

namespace gw = ::marketing::gateway::v1;

class GatewayPgTest : public ::testing::Test {
 protected:
  GatewayPgTest()
      : database_({.dsn = db_.dsn(), .size = 8}, nullptr),
        idempotency_(database_.Getter(), absl::Hours(24)),
        operators_(database_.Getter()),
        auth_(operators_, clock_,
              {.token_key = "test-key",
               .token_ttl = absl::Hours(1),
               .lockout = {.max_failures = 5, .lock_for = absl::Minutes(15)},
               .scrypt = {.n = 1024}}) {}

  tenancy::Actor Admin(const std::string& org) {
    return {org, "root-" + org, {tenancy::Role::kAdmin}};
  }

  gw::Operator MakeOperator(const std::string& id, const std::string& org,
                            const std::vector<std::string>& roles) {
    gw::CreateOperatorRequest request;
    request.set_id(id);
    request.set_org_id(org);
    for (const auto& r : roles) request.add_roles(r);
    request.set_password("password-of-" + id);
    absl::StatusOr<gw::Operator> op = auth_.CreateOperator(Admin("fed"), request);
    EXPECT_TRUE(op.ok()) << op.status();
    return op.ok() ? *op : gw::Operator();
  }

  absl::StatusOr<gw::Session> SignIn(const std::string& id, const std::string& password) {
    gw::CreateSessionRequest request;
    request.set_operator_id(id);
    request.set_password(password);
    return auth_.SignIn(request);
  }

  testing::FakeClock clock_{absl::Now()};
  mkt::testing::TestDatabase db_;
  GatewayDatabase database_;
  PgIdempotencyStore idempotency_;
  OperatorStore operators_;
  AdminAuth auth_;
};

TEST_F(GatewayPgTest, IdempotencyClaimReplayMismatch) {
  auto begun = idempotency_.Begin("channel:a", "k1", "h1");
  ASSERT_TRUE(begun.ok()) << begun.status();
  EXPECT_EQ(begun->claim, IdempotencyStore::Claim::kProceed);
  EXPECT_EQ(idempotency_.Begin("channel:a", "k1", "h1")->claim,
            IdempotencyStore::Claim::kInProgress);
  ASSERT_TRUE(
      idempotency_.Complete("channel:a", "k1", {202, "application/json", "{\"x\":1}"}).ok());
  begun = idempotency_.Begin("channel:a", "k1", "h1");
  EXPECT_EQ(begun->claim, IdempotencyStore::Claim::kReplay);
  EXPECT_EQ(begun->response.status, 202);
  EXPECT_EQ(begun->response.body, "{\"x\":1}");
  EXPECT_EQ(idempotency_.Begin("channel:a", "k1", "h2")->claim, IdempotencyStore::Claim::kMismatch);
  EXPECT_EQ(idempotency_.Begin("channel:b", "k1", "h2")->claim, IdempotencyStore::Claim::kProceed);
  // Abandoned claims free the key.
  ASSERT_TRUE(idempotency_.Abandon("channel:b", "k1").ok());
  EXPECT_EQ(idempotency_.Begin("channel:b", "k1", "h3")->claim, IdempotencyStore::Claim::kProceed);
}

TEST_F(GatewayPgTest, ConcurrentDuplicatesRunOnce) {
  std::atomic<int> executions{0};
  std::atomic<int> answered{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 6; ++i) {
    threads.emplace_back([&] {
      bool replayed = false;
      auto r = RunIdempotently(
          idempotency_, "channel:a", "dup", "h",
          [&] {
            executions.fetch_add(1);
            std::this_thread::sleep_for(std::chrono::milliseconds(300));
            return StoredResponse{202, "application/json", "{}"};
          },
          &replayed);
      if (r.ok() && r->status == 202) answered.fetch_add(1);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(executions.load(), 1);
  EXPECT_EQ(answered.load(), 6);
}

TEST_F(GatewayPgTest, OperatorsAreScopedToTheAdminsSubtree) {
  MakeOperator("alice", "bank-a", {"planner"});
  MakeOperator("abe", "bank-a.branch-01", {"analyst"});
  MakeOperator("beth", "bank-b", {"planner"});

  EXPECT_TRUE(auth_.GetOperator(Admin("bank-a"), "abe").ok());
  EXPECT_EQ(auth_.GetOperator(Admin("bank-a"), "beth").status().code(),
            absl::StatusCode::kNotFound);
  gw::ListOperatorsRequest list;
  auto listed = auth_.ListOperators(Admin("bank-a"), list);
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->operators_size(), 2);
  EXPECT_EQ(listed->operators(0).id(), "abe");
  list.set_org_id("bank-b");
  EXPECT_EQ(auth_.ListOperators(Admin("bank-a"), list).status().code(),
            absl::StatusCode::kPermissionDenied);

  gw::CreateOperatorRequest elsewhere;
  elsewhere.set_id("mallory");
  elsewhere.set_org_id("bank-b");
  elsewhere.add_roles("admin");
  elsewhere.set_password("long enough password");
  EXPECT_EQ(auth_.CreateOperator(Admin("bank-a"), elsewhere).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(
      auth_.CreateOperator({"bank-a", "p", {tenancy::Role::kPlanner}}, elsewhere).status().code(),
      absl::StatusCode::kPermissionDenied);
  gw::UpdateOperatorRequest update;
  update.set_id("beth");
  update.set_disabled(true);
  EXPECT_EQ(auth_.UpdateOperator(Admin("bank-a"), update).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(GatewayPgTest, SignInIssuesATokenThatAuthenticatesUntilSignOut) {
  MakeOperator("alice", "bank-a", {"planner", "approver"});
  auto session = SignIn("alice", "password-of-alice");
  ASSERT_TRUE(session.ok()) << session.status();
  const std::string header = "Bearer " + session->token();
  auto authenticated = auth_.Authenticate(&header);
  ASSERT_TRUE(authenticated.ok()) << authenticated.status();
  EXPECT_EQ(authenticated->actor.org_id, "bank-a");
  EXPECT_TRUE(authenticated->actor.Has(tenancy::Role::kApprover));
  EXPECT_FALSE(authenticated->actor.Has(tenancy::Role::kAdmin));

  ASSERT_TRUE(auth_.SignOut(*authenticated).ok());
  EXPECT_EQ(ReasonName(ReasonOf(auth_.Authenticate(&header).status())), "TOKEN_INVALID");
  EXPECT_EQ(ReasonName(ReasonOf(auth_.Authenticate(nullptr).status())), "CREDENTIALS_MISSING");

  // A role change ends existing sessions.
  session = SignIn("alice", "password-of-alice");
  ASSERT_TRUE(session.ok());
  const std::string second = "Bearer " + session->token();
  ASSERT_TRUE(auth_.Authenticate(&second).ok());
  gw::UpdateOperatorRequest update;
  update.set_id("alice");
  update.add_roles("analyst");
  ASSERT_TRUE(auth_.UpdateOperator(Admin("fed"), update).ok());
  EXPECT_FALSE(auth_.Authenticate(&second).ok());

  // Expiry is checked against the clock.
  session = SignIn("alice", "password-of-alice");
  const std::string third = "Bearer " + session->token();
  clock_.Advance(absl::Hours(2));
  EXPECT_EQ(ReasonName(ReasonOf(auth_.Authenticate(&third).status())), "TOKEN_INVALID");
}

TEST_F(GatewayPgTest, FiveWrongPasswordsLockTheAccountUntilUnlocked) {
  MakeOperator("bob", "bank-a", {"approver"});
  EXPECT_EQ(SignIn("nobody", "whatever password").status().code(),
            absl::StatusCode::kUnauthenticated);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(SignIn("bob", "wrong password!").status().code(), absl::StatusCode::kUnauthenticated);
  }
  auto signed_in = SignIn("bob", "password-of-bob");
  ASSERT_TRUE(signed_in.ok()) << "four failures do not lock; success resets";
  const std::string token = "Bearer " + signed_in->token();
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(SignIn("bob", "wrong password!").status().code(), absl::StatusCode::kUnauthenticated);
  }
  auto locked = SignIn("bob", "password-of-bob");
  EXPECT_EQ(locked.status().code(), absl::StatusCode::kResourceExhausted) << locked.status();
  EXPECT_TRUE(auth_.GetOperator(Admin("fed"), "bob")->has_locked_until());
  // Guessing locks the account, but does not sign its operator out: the session bob had before
  // still works (anyone could otherwise end an operator's sessions by guessing).
  EXPECT_TRUE(auth_.Authenticate(&token).ok());

  gw::UpdateOperatorRequest unlock;
  unlock.set_id("bob");
  unlock.set_unlock(true);
  ASSERT_TRUE(auth_.UpdateOperator(Admin("bank-a"), unlock).ok());
  EXPECT_TRUE(SignIn("bob", "password-of-bob").ok());
}

TEST_F(GatewayPgTest, ConcurrentWrongPasswordsCannotExceedTheLimit) {
  MakeOperator("carol", "bank-a", {"planner"});
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] { (void)SignIn("carol", "wrong password!"); });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(SignIn("carol", "password-of-carol").status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST_F(GatewayPgTest, BootstrapAdminIsCreatedOnceAndDisabledAccountsCannotSignIn) {
  ASSERT_TRUE(auth_.EnsureBootstrapAdmin("admin", "fed", "bootstrap password").ok());
  ASSERT_TRUE(auth_.EnsureBootstrapAdmin("admin", "fed", "another password!").ok());
  ASSERT_TRUE(SignIn("admin", "bootstrap password").ok());
  gw::UpdateOperatorRequest disable;
  disable.set_id("admin");
  disable.set_disabled(true);
  ASSERT_TRUE(auth_.UpdateOperator(Admin("fed"), disable).ok());
  EXPECT_EQ(SignIn("admin", "bootstrap password").status().code(),
            absl::StatusCode::kPermissionDenied);
  // A wrong password on a disabled account is answered like one on an unknown id: whether the
  // account exists is told only to whoever knows its password.
  const absl::Status wrong = SignIn("admin", "not the password").status();
  const absl::Status unknown = SignIn("no-such-admin", "not the password").status();
  EXPECT_EQ(wrong.code(), absl::StatusCode::kUnauthenticated) << wrong;
  EXPECT_EQ(wrong.message(), unknown.message());
}

TEST_F(GatewayPgTest, TheAuditTrailIsScopedMaskedPagedAndKeepsUnfinishedRequests) {
  PgAuditTrail audit(database_.Getter());
  MakeOperator("ann", "bank-a.branch-01", {"planner"});
  auto record = [](const std::string& op, const std::string& org, const std::string& body) {
    gw::AdminRequestRecord r;
    r.set_request_id("req-" + op);
    r.set_operator_id(op);
    r.set_org_id(org);
    r.add_roles("admin");
    r.set_method("POST");
    r.set_route("/admin/v1/operators");
    r.set_path("/admin/v1/operators");
    r.set_body(MaskedBody(body));
    return r;
  };
  // Written before the request runs; the answer added after.
  absl::StatusOr<int64_t> first =
      audit.Begin(record("ada", "bank-a", R"({"id":"x","password":"hunter2"})"));
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(audit.Finish(*first, 201, "").ok());
  absl::StatusOr<int64_t> unfinished = audit.Begin(record("ada", "bank-a", "{}"));
  ASSERT_TRUE(unfinished.ok());
  gw::AdminRequestRecord refused = record("bea", "bank-b", "{}");
  refused.set_status(403);
  refused.set_error_code("PERMISSION_DENIED");
  ASSERT_TRUE(audit.Record(refused).ok());
  // A sign-in attempt: the org is the named operator's, or none for an unknown one.
  ASSERT_TRUE(audit.Record(record("ann", "", R"({"operator_id":"ann","password":"x"})")).ok());
  ASSERT_TRUE(audit.Record(record("mallory", "", "{}")).ok());

  auto list = [&](const std::string& org, const std::string& op = "", int page_size = 0,
                  const std::string& token = "") {
    gw::ListAdminRequestsRequest request;
    request.set_org_id(org);
    request.set_operator_id(op);
    request.mutable_page()->set_page_size(page_size);
    request.mutable_page()->set_page_token(token);
    absl::StatusOr<gw::ListAdminRequestsResponse> r = audit.List(request);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : gw::ListAdminRequestsResponse();
  };
  gw::ListAdminRequestsResponse bank_a = list("bank-a");
  ASSERT_EQ(bank_a.requests_size(), 3);  // newest first: ann's sign-in, the unfinished, the first
  EXPECT_EQ(bank_a.requests(0).operator_id(), "ann");
  EXPECT_EQ(bank_a.requests(0).org_id(), "bank-a.branch-01");
  EXPECT_EQ(bank_a.requests(0).body(), R"({"operator_id":"ann","password":"***"})");
  EXPECT_EQ(bank_a.requests(1).status(), 0);
  EXPECT_FALSE(bank_a.requests(1).has_finished_at());
  EXPECT_EQ(bank_a.requests(2).status(), 201);
  EXPECT_TRUE(bank_a.requests(2).has_finished_at());
  EXPECT_EQ(bank_a.requests(2).body(), R"({"id":"x","password":"***"})");
  EXPECT_EQ(bank_a.requests(2).roles(0), "admin");
  EXPECT_EQ(list("bank-a.branch-01").requests_size(), 1);
  gw::ListAdminRequestsResponse bank_b = list("bank-b");
  ASSERT_EQ(bank_b.requests_size(), 1);
  EXPECT_EQ(bank_b.requests(0).error_code(), "PERMISSION_DENIED");
  EXPECT_EQ(list("fed").requests_size(), 5);  // the unknown operator's attempt too
  EXPECT_EQ(list("fed", "ada").requests_size(), 2);

  // Pages of two, newest first, without overlap.
  gw::ListAdminRequestsResponse page1 = list("fed", "", 2);
  ASSERT_EQ(page1.requests_size(), 2);
  ASSERT_FALSE(page1.page().next_page_token().empty());
  gw::ListAdminRequestsResponse page2 = list("fed", "", 2, page1.page().next_page_token());
  ASSERT_EQ(page2.requests_size(), 2);
  EXPECT_GT(page1.requests(1).id(), page2.requests(0).id());
  gw::ListAdminRequestsResponse page3 = list("fed", "", 2, page2.page().next_page_token());
  EXPECT_EQ(page3.requests_size(), 1);
  EXPECT_TRUE(page3.page().next_page_token().empty());
  gw::ListAdminRequestsRequest bad;
  bad.set_org_id("fed");
  bad.mutable_page()->set_page_token("not-a-token");
  EXPECT_EQ(audit.List(bad).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mkt::gateway
