// P2 (PERFORMANCE.md): a coupon grab — 10,000 stock, 2,000 concurrent customers, 50,000 claim
// attempts, one coupon per customer — through the REST gateway (--via=gateway: signed
// `POST /v1/campaigns/{id}/participations` over keep-alive HTTP/1.1 connections, one per
// concurrent customer) or straight to the campaigns service's gRPC participation API
// (--via=grpc), against the services started by bench/p2.sh. Prints the claim rate, the
// sold-out rejection rate and p99, checks exactly-once (claims == stock, nobody twice and, given
// --rewards_dsn, one coupon instance with its own code per claim), then
// measures the ceiling: a bare `UPDATE ... SET n = n - 1 WHERE n > 0` loop on one row of the same
// PostgreSQL from 16 connections, and prints `BENCH P2 <claims/s> claims/s ceiling=<x> ratio=<r>`.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>
#include <pqxx/pqxx>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "libs/auth/channel_signature.h"
#include "libs/core/ids.h"
#include "libs/core/status.h"
#include "libs/rpc/actor.h"
#include "libs/rpc/client.h"
#include "libs/rpc/server.h"
#include "marketing/campaigns/v1/campaigns.grpc.pb.h"
#include "marketing/campaigns/v1/participation.grpc.pb.h"
#include "marketing/rewards/v1/benefits.grpc.pb.h"
#include "marketing/rewards/v1/ledger.grpc.pb.h"
#include "nlohmann/json.hpp"

namespace {

namespace cpb = ::marketing::campaigns::v1;
namespace rpb = ::marketing::rewards::v1;
using mkt::tenancy::Actor;
using mkt::tenancy::Role;

std::string Flag(int argc, char** argv, const std::string& name, const std::string& fallback) {
  const std::string prefix = "--" + name + "=";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind(prefix, 0) == 0) return a.substr(prefix.size());
  }
  return fallback;
}

[[noreturn]] void Die(const std::string& what, const grpc::Status& s) {
  std::fprintf(stderr, "p2: %s failed: %s\n", what.c_str(), s.error_message().c_str());
  std::exit(1);
}

template <class Stub, class Req, class Resp>
Resp Call(Stub* stub, grpc::Status (Stub::*method)(grpc::ClientContext*, const Req&, Resp*),
          const Req& req, const Actor* actor, const std::string& what) {
  grpc::ClientContext ctx;
  mkt::rpc::PrepareClientContext(ctx, absl::Seconds(30), "");
  if (actor) mkt::rpc::AttachActor(ctx, *actor);
  Resp resp;
  grpc::Status s = (stub->*method)(&ctx, req, &resp);
  if (!s.ok()) Die(what, s);
  return resp;
}

// A keep-alive HTTP/1.1 connection to the gateway: one request at a time, Content-Length bodies.
class HttpConnection {
 public:
  explicit HttpConnection(const std::string& host_port) {
    const std::vector<std::string> parts = absl::StrSplit(host_port, ':');
    addr_.sin_family = AF_INET;
    int port = 0;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[1], &port)) {
      std::fprintf(stderr, "p2: bad --gateway %s\n", host_port.c_str());
      std::exit(2);
    }
    addr_.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, parts[0].c_str(), &addr_.sin_addr);
  }
  ~HttpConnection() { Close(); }

  // Sends `request` and returns the status code and body; 0 on a transport failure.
  int RoundTrip(const std::string& request, std::string* body) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (fd_ < 0 && !Open()) return 0;
      if (SendAll(request)) {
        const int status = ReadResponse(body);
        if (status > 0) return status;
      }
      Close();  // the server closed a kept-alive connection: once more on a fresh one
    }
    return 0;
  }

 private:
  bool Open() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) return false;
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd_, reinterpret_cast<sockaddr*>(&addr_), sizeof(addr_)) != 0) {
      Close();
      return false;
    }
    buffer_.clear();
    return true;
  }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }
  bool SendAll(const std::string& data) {
    size_t sent = 0;
    while (sent < data.size()) {
      const ssize_t n = send(fd_, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<size_t>(n);
    }
    return true;
  }
  bool Fill() {
    char chunk[16384];
    const ssize_t n = recv(fd_, chunk, sizeof(chunk), 0);
    if (n <= 0) return false;
    buffer_.append(chunk, static_cast<size_t>(n));
    return true;
  }
  int ReadResponse(std::string* body) {
    size_t head_end;
    while ((head_end = buffer_.find("\r\n\r\n")) == std::string::npos) {
      if (!Fill()) return 0;
    }
    const std::string head = buffer_.substr(0, head_end);
    int status = 0;
    if (head.size() < 12 || !absl::SimpleAtoi(head.substr(9, 3), &status)) return 0;
    size_t length = 0;
    for (absl::string_view line : absl::StrSplit(head, "\r\n")) {
      const std::string lower = absl::AsciiStrToLower(line);
      if (lower.rfind("content-length:", 0) == 0) {
        absl::SimpleAtoi(absl::StripAsciiWhitespace(line.substr(15)), &length);
      }
    }
    const size_t total = head_end + 4 + length;
    while (buffer_.size() < total) {
      if (!Fill()) return 0;
    }
    body->assign(buffer_, head_end + 4, length);
    buffer_.erase(0, total);
    return status;
  }

  sockaddr_in addr_{};
  int fd_ = -1;
  std::string buffer_;
};

google::protobuf::Timestamp Ts(absl::Time t) {
  google::protobuf::Timestamp ts;
  ts.set_seconds(absl::ToUnixSeconds(t));
  return ts;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string campaigns_target = Flag(argc, argv, "campaigns", "127.0.0.1:20031");
  const std::string rewards_target = Flag(argc, argv, "rewards", "127.0.0.1:20071");
  const std::string dsn = Flag(argc, argv, "dsn", "");
  // The rewards database, to count the coupon instances issued (optional).
  const std::string rewards_dsn = Flag(argc, argv, "rewards_dsn", "");
  const int stock = std::stoi(Flag(argc, argv, "stock", "10000"));
  // 2,000 customers in flight at a time (threads × channels), 25,000 distinct customers so the
  // stock of 10,000 can sell out under a limit of one per customer.
  const int customers = std::stoi(Flag(argc, argv, "customers", "25000"));
  const int attempts = std::stoi(Flag(argc, argv, "attempts", "50000"));
  // gateway: signed REST through mkt-gateway (needs --gateway, --channel_id, --channel_secret);
  // grpc: the campaigns service's Participate directly.
  const std::string via = Flag(argc, argv, "via", "gateway");
  const std::string gateway_target = Flag(argc, argv, "gateway", "");
  const std::string channel_id = Flag(argc, argv, "channel_id", "");
  const std::string channel_secret = Flag(argc, argv, "channel_secret", "");
  // Concurrent customers: threads, each with its own connection (gateway) or call (gRPC).
  const int threads = std::stoi(Flag(argc, argv, "threads", via == "gateway" ? "2000" : "256"));
  if (via == "gateway" &&
      (gateway_target.empty() || channel_id.empty() || channel_secret.empty())) {
    std::fprintf(stderr, "p2: --via=gateway needs --gateway, --channel_id and --channel_secret\n");
    return 2;
  }

  auto campaigns = cpb::Campaigns::NewStub(mkt::rpc::Connect(campaigns_target));
  auto ledger = rpb::Ledger::NewStub(mkt::rpc::Connect(rewards_target));
  auto benefits = rpb::Benefits::NewStub(mkt::rpc::Connect(rewards_target));
  const Actor root{"fed", "root", {Role::kAdmin}};
  const Actor planner{"bank-a", "alice", {Role::kPlanner}};
  const Actor approver{"bank-a", "bob", {Role::kApprover}};

  cpb::CreateOrgRequest org;
  org.set_id("bank-a");
  org.set_display_name("Bank A");
  {
    grpc::ClientContext ctx;
    mkt::rpc::PrepareClientContext(ctx, absl::Seconds(30), "");
    mkt::rpc::AttachActor(ctx, root);
    cpb::Org out;
    campaigns->CreateOrg(&ctx, org, &out);  // exists already on a rerun: fine
  }
  cpb::CreateCampaignRequest create;
  cpb::CampaignConfig& c = *create.mutable_config();
  c.set_name("P2 grab " + mkt::RandomHex(3));
  c.set_type(cpb::COUPON_CLAIM);
  c.set_department("retail");
  *c.mutable_start_time() = Ts(absl::Now() - absl::Minutes(1));
  *c.mutable_end_time() = Ts(absl::Now() + absl::Hours(2));
  c.set_priority(10);
  c.mutable_audience()->add_include()->set_segment_id("seg-a-payroll");
  c.mutable_limits()->set_per_customer_total(1);
  auto* reward = c.add_rewards();
  reward->set_benefit_template_id("bt-a-coupon-20");
  reward->set_quantity(1);
  c.set_budget_cap_fen(1'000'000'000);
  auto* placement = c.add_channels();
  placement->set_channel("mobile_banking");
  placement->mutable_content()->set_title("20 yuan off");
  cpb::Campaign campaign = Call(campaigns.get(), &cpb::Campaigns::Stub::CreateCampaign, create,
                                &planner, "CreateCampaign");
  cpb::CampaignActionRequest act;
  act.set_campaign_id(campaign.id());
  Call(campaigns.get(), &cpb::Campaigns::Stub::SubmitCampaign, act, &planner, "Submit");
  Call(campaigns.get(), &cpb::Campaigns::Stub::ApproveCampaign, act, &approver, "Approve");
  Call(campaigns.get(), &cpb::Campaigns::Stub::PublishCampaign, act, &planner, "Publish");
  for (int i = 0;; ++i) {
    cpb::GetCampaignRequest get;
    get.set_campaign_id(campaign.id());
    if (Call(campaigns.get(), &cpb::Campaigns::Stub::GetCampaign, get, &planner, "Get").state() ==
        cpb::ONLINE) {
      break;
    }
    if (i > 100) {
      std::fprintf(stderr, "p2: the campaign did not go online\n");
      return 1;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  // The coupon template the campaign grants (the catalog's bt-a-coupon-20): activating it funds
  // its stock; each claim is a coupon instance issued by the rewards service.
  rpb::CreateTemplateRequest tpl;
  rpb::BenefitTemplate& t = *tpl.mutable_template_();
  t.set_id("bt-a-coupon-20");
  t.set_org_id("bank-a");
  t.set_type(rpb::COUPON_CASH);
  t.set_name("20 yuan off");
  t.set_face_value(2000);
  t.set_unit_cost_fen(2000);
  t.set_total_stock(stock);
  t.mutable_validity()->set_days_after_grant(30);
  Call(benefits.get(), &rpb::Benefits::Stub::CreateTemplate, tpl, &planner, "CreateTemplate");
  rpb::ActivateTemplateRequest activate;
  activate.set_template_id(t.id());
  Call(benefits.get(), &rpb::Benefits::Stub::ActivateTemplate, activate, &planner,
       "ActivateTemplate");
  rpb::FundRequest fund;
  fund.set_request_id("p2-fund-" + mkt::RandomHex(6));
  fund.set_org_id("bank-a");
  fund.set_asset(rpb::BUDGET_FEN);
  fund.set_owner_id(campaign.id());
  fund.set_amount(1'000'000'000);
  Call(ledger.get(), &rpb::Ledger::Stub::Fund, fund, nullptr, "Fund");
  absl::SleepFor(absl::Milliseconds(1200));  // the service's campaign cache

  // Several channels so one HTTP/2 connection is not the bottleneck.
  std::vector<std::unique_ptr<cpb::Participations::Stub>> stubs;
  for (int i = 0; i < 8; ++i) {
    grpc::ChannelArguments args;
    args.SetInt("grpc.channel_id", i);  // distinct subchannels
    stubs.push_back(cpb::Participations::NewStub(
        grpc::CreateCustomChannel(campaigns_target, grpc::InsecureChannelCredentials(), args)));
  }
  std::atomic<int> next{0};
  std::mutex mu;
  std::map<std::string, int> wins;
  std::map<std::string, int> reasons;
  std::vector<double> latencies_ms;
  latencies_ms.reserve(attempts);
  absl::Time last_claim = absl::InfinitePast();
  absl::Time sold_out_first = absl::InfiniteFuture(), sold_out_last = absl::InfinitePast();
  int64_t sold_out_count = 0;
  // (sent, answered) of every sold-out refusal, to tell those after the last claim from the rest.
  std::vector<std::pair<absl::Time, absl::Time>> sold_out_times;
  sold_out_times.reserve(attempts);
  const absl::Time start = absl::Now();
  std::vector<std::thread> workers;
  auto record = [&](const std::string& customer, absl::Time sent, absl::Time got, bool won,
                    const std::string& reason) {
    std::lock_guard<std::mutex> lock(mu);
    latencies_ms.push_back(absl::ToDoubleMilliseconds(got - sent));
    if (won) {
      ++wins[customer];
      last_claim = std::max(last_claim, got);
      return;
    }
    ++reasons[reason];
    if (reason == "STOCK_EXHAUSTED") {
      ++sold_out_count;
      sold_out_first = std::min(sold_out_first, sent);
      sold_out_last = std::max(sold_out_last, got);
      sold_out_times.emplace_back(sent, got);
    }
  };
  const std::string run = mkt::RandomHex(4);
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      if (via == "gateway") {
        HttpConnection http(gateway_target);
        const std::string target = "/v1/campaigns/" + campaign.id() + "/participations";
        std::string body;
        for (int i = next++; i < attempts; i = next++) {
          const std::string customer = "p2c-" + std::to_string(i % customers);
          const std::string json =
              absl::StrCat(R"({"customer_id":")", customer, R"(","customer_org_id":"bank-a"})");
          const std::string timestamp = std::to_string(absl::ToUnixSeconds(absl::Now()));
          const std::string nonce = absl::StrCat("p2", run, "n", i);
          const std::string signature =
              mkt::auth::SignRequest(channel_secret, {"POST", target, timestamp, nonce, json});
          const std::string request = absl::StrCat(
              "POST ", target, " HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n",
              "X-Channel-Id: ", channel_id, "\r\nX-Timestamp: ", timestamp, "\r\nX-Nonce: ", nonce,
              "\r\nX-Signature: ", signature, "\r\nIdempotency-Key: p2-", run, "-", i,
              "\r\nContent-Length: ", json.size(), "\r\n\r\n", json);
          const absl::Time sent = absl::Now();
          const int status = http.RoundTrip(request, &body);
          const absl::Time got = absl::Now();
          std::string reason = absl::StrCat("HTTP_", status);
          if (status >= 400) {
            const auto parsed = nlohmann::json::parse(body, nullptr, false);
            if (parsed.is_object() && parsed.contains("error") && parsed["error"].is_object() &&
                parsed["error"].contains("code") && parsed["error"]["code"].is_string()) {
              reason = parsed["error"]["code"].get<std::string>();
            }
          }
          record(customer, sent, got, status == 201 || status == 200, reason);
        }
        return;
      }
      auto* stub = stubs[t % stubs.size()].get();
      for (int i = next++; i < attempts; i = next++) {
        const std::string customer = "p2c-" + std::to_string(i % customers);
        cpb::ParticipateRequest r;
        r.set_campaign_id(campaign.id());
        r.set_customer_id(customer);
        r.set_customer_org_id("bank-a");
        r.set_channel("mobile_banking");
        r.set_idempotency_key("p2-" + std::to_string(i));
        grpc::ClientContext ctx;
        mkt::rpc::PrepareClientContext(ctx, absl::Seconds(30), "");
        cpb::Participation out;
        const absl::Time sent = absl::Now();
        grpc::Status st = stub->Participate(&ctx, r, &out);
        const absl::Time got = absl::Now();
        record(customer, sent, got, st.ok(),
               st.ok() ? "" : mkt::ReasonName(mkt::ReasonOf(mkt::rpc::FromGrpcStatus(st))));
      }
    });
  }
  for (auto& w : workers) w.join();
  const absl::Time end = absl::Now();

  int claims = 0, twice = 0;
  for (const auto& [customer, n] : wins) {
    claims += n;
    if (n > 1) ++twice;
  }
  std::sort(latencies_ms.begin(), latencies_ms.end());
  const double p99 = latencies_ms.empty() ? 0 : latencies_ms[latencies_ms.size() * 99 / 100];
  const double claim_seconds = absl::ToDoubleSeconds(last_claim - start);
  const double claims_per_s = claim_seconds > 0 ? claims / claim_seconds : 0;
  const double sold_out_seconds = absl::ToDoubleSeconds(sold_out_last - sold_out_first);
  std::printf(
      "p2: via %s: %d attempts in %.2f s by %d concurrent customers; claims=%d (stock %d) "
      "customers-twice=%d\n",
      via.c_str(), attempts, absl::ToDoubleSeconds(end - start), threads, claims, stock, twice);
  for (const auto& [reason, n] : reasons) std::printf("p2: refused %s: %d\n", reason.c_str(), n);
  std::printf("p2: claims/s=%.0f over %.2f s; sold-out rejections/s=%.0f; p99=%.1f ms\n",
              claims_per_s, claim_seconds,
              sold_out_seconds > 0 ? sold_out_count / sold_out_seconds : 0.0, p99);
  // The figure above counts from the first sold-out answer, which comes while claims still run;
  // this one only the refusals sent once the last claim was answered (informative).
  int64_t after_count = 0;
  absl::Time after_last = last_claim;
  for (const auto& [sent, got] : sold_out_times) {
    if (sent < last_claim) continue;
    ++after_count;
    after_last = std::max(after_last, got);
  }
  const double after_seconds = absl::ToDoubleSeconds(after_last - last_claim);
  std::printf("p2: after the last claim: %lld sold-out rejections in %.2f s (%.0f/s)\n",
              static_cast<long long>(after_count), after_seconds,
              after_seconds > 0 ? after_count / after_seconds : 0.0);
  bool exact = claims == stock && twice == 0;
  if (!rewards_dsn.empty()) {
    try {
      pqxx::connection conn(rewards_dsn);
      pqxx::work tx(conn);
      const pqxx::row r = tx.exec1(
          "SELECT count(*), count(DISTINCT code), count(DISTINCT customer_id) FROM coupons "
          "WHERE state = 1 AND template_id = 'bt-a-coupon-20'");
      const int64_t coupons = r[0].as<int64_t>();
      std::printf("p2: coupons issued=%lld distinct codes=%lld customers=%lld\n",
                  static_cast<long long>(coupons), static_cast<long long>(r[1].as<int64_t>()),
                  static_cast<long long>(r[2].as<int64_t>()));
      exact = exact && coupons == claims && r[1].as<int64_t>() == claims &&
              r[2].as<int64_t>() == claims;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "p2: counting coupons failed: %s\n", e.what());
      return 1;
    }
  }
  if (!exact) std::printf("p2: EXACTLY-ONCE VIOLATED\n");

  // The ceiling: one hot row, 16 connections, 3 seconds.
  double ceiling = 0;
  try {
    {
      pqxx::connection conn(dsn);
      pqxx::work tx(conn);
      tx.exec("DROP TABLE IF EXISTS p2_hot_row");
      tx.exec("CREATE TABLE p2_hot_row (id int PRIMARY KEY, n bigint NOT NULL)");
      tx.exec("INSERT INTO p2_hot_row VALUES (1, 1000000000)");
      tx.commit();
    }
    std::atomic<int64_t> updates{0};
    std::atomic<bool> stop{false};
    std::vector<std::thread> hot;
    for (int i = 0; i < 16; ++i) {
      hot.emplace_back([&] {
        pqxx::connection conn(dsn);
        while (!stop) {
          pqxx::work tx(conn);
          tx.exec("UPDATE p2_hot_row SET n = n - 1 WHERE id = 1 AND n > 0");
          tx.commit();
          ++updates;
        }
      });
    }
    const absl::Time hot_start = absl::Now();
    absl::SleepFor(absl::Seconds(3));
    stop = true;
    for (auto& h : hot) h.join();
    ceiling = updates / absl::ToDoubleSeconds(absl::Now() - hot_start);
    pqxx::connection conn(dsn);
    pqxx::work tx(conn);
    tx.exec("DROP TABLE p2_hot_row");
    tx.commit();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "p2: ceiling failed: %s\n", e.what());
    return 1;
  }
  std::printf("BENCH P2 %.0f claims/s ceiling=%.0f ratio=%.2f\n", claims_per_s, ceiling,
              ceiling > 0 ? claims_per_s / ceiling : 0.0);
  return exact ? 0 : 1;
}
