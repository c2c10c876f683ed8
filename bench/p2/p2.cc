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
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <pqxx/pqxx>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
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

// Many keep-alive connections driven by one epoll loop, each with one request outstanding (a
// closed loop per connection, as one customer's app would): the load of `connections` customers
// without a thread each, so that the driver's own thread switches do not take the CPU the
// gateway needs. `next` gives the next request to send (nullopt: none left) and `answered` gets
// each answer (status 0 after a transport failure).
class HttpLoop {
 public:
  struct Request {
    std::string text;
    std::string tag;
  };
  struct Answer {
    int status = 0;
    std::string body;
  };
  using Next = std::function<std::optional<Request>()>;
  using Answered = std::function<void(const std::string& tag, absl::Time sent, absl::Time got,
                                      const Answer& answer)>;

  HttpLoop(const std::string& host_port, int connections, Next next, Answered answered)
      : next_(std::move(next)), answered_(std::move(answered)) {
    const std::vector<std::string> parts = absl::StrSplit(host_port, ':');
    int port = 0;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[1], &port)) {
      std::fprintf(stderr, "p2: bad --gateway %s\n", host_port.c_str());
      std::exit(2);
    }
    addr_.sin_family = AF_INET;
    addr_.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, parts[0].c_str(), &addr_.sin_addr);
    epoll_ = epoll_create1(0);
    conns_.resize(static_cast<size_t>(connections));
  }
  ~HttpLoop() {
    for (Conn& c : conns_) Close(c);
    close(epoll_);
  }

  // Runs until no connection has a request left.
  void Run() {
    size_t active = conns_.size();
    for (size_t i = 0; i < conns_.size(); ++i) idle_.push_back(i);
    std::vector<epoll_event> events(512);
    while (true) {
      while (!idle_.empty()) {
        const size_t i = idle_.back();
        idle_.pop_back();
        if (!StartNext(i)) {
          Close(conns_[i]);
          --active;
        }
      }
      if (active == 0) return;
      const int n = epoll_wait(epoll_, events.data(), static_cast<int>(events.size()), 1000);
      for (int e = 0; e < n; ++e) Progress(static_cast<size_t>(events[e].data.u64));
    }
  }

 private:
  struct Conn {
    int fd = -1;
    std::string out;
    size_t written = 0;
    std::string in;
    std::string tag;
    absl::Time sent;
    bool waiting = false;
    bool retried = false;
  };

  bool Open(size_t i) {
    Conn& c = conns_[i];
    c.fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c.fd < 0) return false;
    int one = 1;
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c.fd, reinterpret_cast<sockaddr*>(&addr_), sizeof(addr_)) != 0) {
      Close(c);
      return false;
    }
    fcntl(c.fd, F_SETFL, fcntl(c.fd, F_GETFL) | O_NONBLOCK);
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLET;
    ev.data.u64 = i;
    epoll_ctl(epoll_, EPOLL_CTL_ADD, c.fd, &ev);
    c.in.clear();
    return true;
  }
  static void Close(Conn& c) {
    if (c.fd >= 0) close(c.fd);
    c.fd = -1;
  }

  // Takes the next request for connection i and starts writing it; false when none is left.
  bool StartNext(size_t i) {
    std::optional<Request> r = next_();
    if (!r) return false;
    Conn& c = conns_[i];
    c.out = std::move(r->text);
    c.tag = std::move(r->tag);
    c.written = 0;
    c.waiting = true;
    c.retried = false;
    c.sent = absl::Now();
    if (c.fd < 0 && !Open(i)) {
      Finish(i, Answer{});
      return true;
    }
    Send(i);
    return true;
  }

  void Send(size_t i) {
    Conn& c = conns_[i];
    while (c.written < c.out.size()) {
      const ssize_t n =
          send(c.fd, c.out.data() + c.written, c.out.size() - c.written, MSG_NOSIGNAL);
      if (n > 0) {
        c.written += static_cast<size_t>(n);
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        return;  // EPOLLOUT goes on with it
      } else {
        return Resend(i);
      }
    }
  }

  // The server closed a kept-alive connection under the request: once more on a fresh one.
  void Resend(size_t i) {
    Conn& c = conns_[i];
    Close(c);
    if (c.retried || !Open(i)) return Finish(i, Answer{});
    c.retried = true;
    c.written = 0;
    Send(i);
  }

  void Progress(size_t i) {
    Conn& c = conns_[i];
    if (c.fd < 0 || !c.waiting) return;
    if (c.written < c.out.size()) {
      Send(i);
      if (c.fd < 0 || !c.waiting || c.written < c.out.size()) return;
    }
    char chunk[16384];
    bool closed = false;
    while (true) {
      const ssize_t n = recv(c.fd, chunk, sizeof(chunk), 0);
      if (n > 0) {
        c.in.append(chunk, static_cast<size_t>(n));
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        break;
      } else {
        closed = true;
        break;
      }
    }
    if (std::optional<Answer> answer = TakeAnswer(c.in)) {
      if (closed) Close(c);
      return Finish(i, *std::move(answer));
    }
    if (closed) Resend(i);
  }

  // The first whole response in `in`, removed from it.
  static std::optional<Answer> TakeAnswer(std::string& in) {
    const size_t head_end = in.find("\r\n\r\n");
    if (head_end == std::string::npos) return std::nullopt;
    const absl::string_view head = absl::string_view(in).substr(0, head_end);
    Answer a;
    if (head.size() < 12 || !absl::SimpleAtoi(head.substr(9, 3), &a.status)) a.status = 0;
    size_t length = 0;
    for (absl::string_view line : absl::StrSplit(head, "\r\n")) {
      if (line.size() > 15 && absl::EqualsIgnoreCase(line.substr(0, 15), "content-length:")) {
        if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(line.substr(15)), &length)) length = 0;
      }
    }
    const size_t total = head_end + 4 + length;
    if (in.size() < total) return std::nullopt;
    a.body.assign(in, head_end + 4, length);
    in.erase(0, total);
    return a;
  }

  void Finish(size_t i, Answer answer) {
    Conn& c = conns_[i];
    c.waiting = false;
    answered_(c.tag, c.sent, absl::Now(), answer);
    idle_.push_back(i);
  }

  Next next_;
  Answered answered_;
  sockaddr_in addr_{};
  int epoll_ = -1;
  std::vector<Conn> conns_;
  // Connections without a request outstanding.
  std::vector<size_t> idle_;
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
  // Concurrent customers: keep-alive connections (gateway, driven by --loops epoll loops) or
  // threads with one call each (gRPC).
  const int threads = std::stoi(Flag(argc, argv, "threads", via == "gateway" ? "2000" : "256"));
  // Through the gateway the connections are driven by this many epoll loops (one thread each).
  const int loops = std::max(1, std::stoi(Flag(argc, argv, "loops", "2")));
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
  // The first answer body of each refusal reason through the gateway.
  std::map<std::string, std::string> examples;
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
  if (via == "gateway") {
    const std::string target = "/v1/campaigns/" + campaign.id() + "/participations";
    // Copied into each loop's thread, which outlives this block.
    auto next_request = [&, target]() -> std::optional<HttpLoop::Request> {
      const int i = next++;
      if (i >= attempts) return std::nullopt;
      const std::string customer = "p2c-" + std::to_string(i % customers);
      const std::string json =
          absl::StrCat(R"({"customer_id":")", customer, R"(","customer_org_id":"bank-a"})");
      const std::string timestamp = std::to_string(absl::ToUnixSeconds(absl::Now()));
      const std::string nonce = absl::StrCat("p2", run, "n", i);
      const std::string signature =
          mkt::auth::SignRequest(channel_secret, {"POST", target, timestamp, nonce, json});
      return HttpLoop::Request{
          absl::StrCat(
              "POST ", target, " HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n",
              "X-Channel-Id: ", channel_id, "\r\nX-Timestamp: ", timestamp, "\r\nX-Nonce: ", nonce,
              "\r\nX-Signature: ", signature, "\r\nIdempotency-Key: p2-", run, "-", i,
              "\r\nContent-Length: ", json.size(), "\r\n\r\n", json),
          customer};
    };
    auto answered = [&](const std::string& customer, absl::Time sent, absl::Time got,
                        const HttpLoop::Answer& answer) {
      std::string reason = absl::StrCat("HTTP_", answer.status);
      if (answer.status >= 400) {
        // The error body's code ({"error":{"code":"STOCK_EXHAUSTED",...}}).
        const size_t at = answer.body.find(R"("code":")");
        const size_t end = at == std::string::npos ? at : answer.body.find('"', at + 8);
        if (end != std::string::npos) reason = answer.body.substr(at + 8, end - at - 8);
        std::lock_guard<std::mutex> lock(mu);
        examples.try_emplace(reason, answer.body.substr(0, 300));
      }
      record(customer, sent, got, answer.status == 201 || answer.status == 200, reason);
    };
    // The answers of one loop are recorded on its thread; `record` takes its own lock.
    for (int l = 0; l < loops; ++l) {
      const int connections = threads / loops + (l < threads % loops ? 1 : 0);
      workers.emplace_back([&gateway_target, connections, next_request, answered] {
        HttpLoop loop(gateway_target, connections, next_request, answered);
        loop.Run();
      });
    }
  }
  for (int t = 0; via != "gateway" && t < threads; ++t) {
    workers.emplace_back([&, t] {
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
  for (const auto& [reason, body] : examples) {
    if (reason != "STOCK_EXHAUSTED") {
      std::printf("p2: the first %s answer: %s\n", reason.c_str(), body.c_str());
    }
  }
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
