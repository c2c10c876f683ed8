// P3 (PERFORMANCE.md): the gateway's overhead on a wallet read. bench/p3.sh starts mkt-rewards,
// mkt-channels and mkt-gateway and drives the signed REST side with wrk; this driver does the
// rest, in three sub-commands:
//   seed  — gives N customers points (some expiring within 30 days) and two coupons each in
//           mkt-rewards (also used by tests/api/check_api.sh to have real wallets and coupons);
//   sign  — writes pre-signed wallet (or /v1/channel) requests, one fresh nonce each, for wrk's
//           Lua script to send (wrk's Lua has no HMAC, and the gateway refuses a reused nonce);
//   grpc  — the ceiling: the same GetWallet calls on the same customers straight to mkt-rewards
//           over plain gRPC, as many in flight as wrk keeps connections.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "libs/auth/channel_signature.h"
#include "libs/core/ids.h"
#include "libs/rpc/actor.h"
#include "libs/rpc/client.h"
#include "marketing/rewards/v1/benefits.grpc.pb.h"
#include "marketing/rewards/v1/ledger.grpc.pb.h"

namespace {

namespace rpb = ::marketing::rewards::v1;
using mkt::tenancy::Actor;
using mkt::tenancy::Role;

std::string Flag(int argc, char** argv, const std::string& name, const std::string& fallback) {
  const std::string prefix = "--" + name + "=";
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind(prefix, 0) == 0) return a.substr(prefix.size());
  }
  return fallback;
}

std::string Customer(const std::string& prefix, int i) {
  char digits[16];
  std::snprintf(digits, sizeof(digits), "%06d", i);
  return prefix + digits;
}

// Calls `rpc` up to a few times: the service may still be warming up its connections.
template <class F>
bool Retry(const std::string& what, F rpc) {
  grpc::Status s;
  for (int attempt = 0; attempt < 5; ++attempt) {
    grpc::ClientContext ctx;
    mkt::rpc::PrepareClientContext(ctx, absl::Seconds(30), "");
    mkt::rpc::AttachActor(ctx, Actor{"fed", "p3-bench", {Role::kAdmin}});
    s = rpc(&ctx);
    if (s.ok() || s.error_code() == grpc::StatusCode::ALREADY_EXISTS) return true;
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE) break;
    absl::SleepFor(absl::Milliseconds(200));
  }
  std::fprintf(stderr, "p3: %s failed: %s\n", what.c_str(), s.error_message().c_str());
  return false;
}

// Funds a campaign budget, creates and activates a coupon template, then grants each customer
// points in two lots (one expiring within 30 days) and issues two coupons. Request ids derive from
// the prefix, so a rerun on the same database changes nothing. With --locks=K it also locks the
// first coupon of the first K customers against an order, with --qr=K it issues a QR token for
// their second one; --fund_campaigns=ID,... funds those campaigns' budgets. With --out, writes
// "coupon<TAB>customer<TAB>code", "redemption<TAB>id" and "qr<TAB>token<TAB>customer" lines
// (tests/api/schemathesis_hooks.py reads them).
int Seed(int argc, char** argv) {
  const std::string target = Flag(argc, argv, "rewards", "127.0.0.1:20071");
  const std::string org = Flag(argc, argv, "org", "bank-a");
  const std::string prefix = Flag(argc, argv, "prefix", "P3C");
  const int customers = std::stoi(Flag(argc, argv, "customers", "1000"));
  const int threads = std::stoi(Flag(argc, argv, "threads", "16"));
  const std::string out_path = Flag(argc, argv, "out", "");
  // Coupons locked against an order (customer i's first) and QR tokens issued (their second).
  const int locks = std::stoi(Flag(argc, argv, "locks", "0"));
  const int qr = std::stoi(Flag(argc, argv, "qr", "0"));
  auto channel = mkt::rpc::Connect(target);
  auto ledger = rpb::Ledger::NewStub(channel);
  auto benefits = rpb::Benefits::NewStub(channel);

  const std::string campaign = prefix + "-campaign";
  const std::string tmpl = "bt-" + prefix + "-cash-10";
  rpb::FundRequest fund;
  fund.set_request_id(prefix + "-fund");
  fund.set_org_id(org);
  fund.set_asset(rpb::BUDGET_FEN);
  fund.set_owner_id(campaign);
  fund.set_amount(int64_t{100} * customers + 1000);
  rpb::FundResponse funded;
  if (!Retry("Fund", [&](grpc::ClientContext* c) { return ledger->Fund(c, fund, &funded); })) {
    return 1;
  }
  // Budgets of campaigns created elsewhere (the API check's demo campaign), so taking part can
  // succeed: in the org and in "fed", because a coupon issue charges the budget account of the
  // template's org (the demo campaign of bank-a grants a federation template), points grants
  // that of the campaign's org.
  const std::vector<std::string> fund_campaigns =
      absl::StrSplit(Flag(argc, argv, "fund_campaigns", ""), ',', absl::SkipEmpty());
  for (const std::string& id : fund_campaigns) {
    for (const std::string& budget_org : {org, std::string("fed")}) {
      rpb::FundRequest budget;
      budget.set_request_id(prefix + "-fund-" + budget_org + "-" + id);
      budget.set_org_id(budget_org);
      budget.set_asset(rpb::BUDGET_FEN);
      budget.set_owner_id(id);
      budget.set_amount(100'000'000);
      if (!Retry("Fund",
                 [&](grpc::ClientContext* c) { return ledger->Fund(c, budget, &funded); })) {
        return 1;
      }
      if (budget_org == "fed") break;
    }
  }
  rpb::CreateTemplateRequest create;
  rpb::BenefitTemplate* t = create.mutable_template_();
  t->set_id(tmpl);
  t->set_org_id(org);
  t->set_type(rpb::COUPON_CASH);
  t->set_name("10 yuan off");
  t->set_face_value(1000);
  t->set_total_stock(int64_t{2} * customers + 10);
  t->mutable_validity()->set_days_after_grant(30);
  rpb::BenefitTemplate created;
  if (!Retry("CreateTemplate", [&](grpc::ClientContext* c) {
        return benefits->CreateTemplate(c, create, &created);
      })) {
    return 1;
  }
  rpb::ActivateTemplateRequest activate;
  activate.set_template_id(tmpl);
  grpc::Status activated;
  {
    grpc::ClientContext ctx;
    mkt::rpc::PrepareClientContext(ctx, absl::Seconds(30), "");
    mkt::rpc::AttachActor(ctx, Actor{"fed", "p3-bench", {Role::kAdmin}});
    activated = benefits->ActivateTemplate(&ctx, activate, &created);
  }
  // On a rerun the template is active already (FAILED_PRECONDITION): fine.
  if (!activated.ok() && activated.error_code() != grpc::StatusCode::FAILED_PRECONDITION) {
    std::fprintf(stderr, "p3: ActivateTemplate failed: %s\n", activated.error_message().c_str());
    return 1;
  }

  std::atomic<int> next{0};
  std::atomic<bool> failed{false};
  std::mutex mu;
  std::vector<std::pair<std::string, std::string>> coupons;
  std::vector<std::thread> workers;
  for (int w = 0; w < threads; ++w) {
    workers.emplace_back([&] {
      for (int i = next++; i < customers && !failed; i = next++) {
        const std::string customer = Customer(prefix, i);
        for (int lot = 0; lot < 2; ++lot) {
          rpb::GrantRequest grant;
          grant.set_request_id(absl::StrCat(prefix, "-g", lot, "-", i));
          grant.set_org_id(org);
          grant.set_campaign_id(campaign);
          grant.set_customer_id(customer);
          grant.set_asset(rpb::POINTS);
          grant.set_quantity(lot == 0 ? 300 + i % 100 : 150);
          grant.set_budget_cost_fen(1);
          grant.mutable_expiry()->set_days_after_grant(lot == 0 ? 365 : 20);
          rpb::GrantResponse granted;
          if (!Retry("Grant",
                     [&](grpc::ClientContext* c) { return ledger->Grant(c, grant, &granted); })) {
            failed = true;
            return;
          }
        }
        for (int k = 0; k < 2; ++k) {
          rpb::IssueCouponRequest issue;
          issue.set_request_id(absl::StrCat(prefix, "-c", k, "-", i));
          issue.set_template_id(tmpl);
          issue.set_customer_id(customer);
          rpb::Coupon coupon;
          if (!Retry("IssueCoupon", [&](grpc::ClientContext* c) {
                return benefits->IssueCoupon(c, issue, &coupon);
              })) {
            failed = true;
            return;
          }
          std::lock_guard<std::mutex> lock(mu);
          coupons.emplace_back(customer, coupon.code());
        }
      }
    });
  }
  for (auto& w : workers) w.join();
  if (failed) return 1;
  // Sorted, a customer's two coupons sit at 2i and 2i + 1 (ids are zero-padded).
  std::sort(coupons.begin(), coupons.end());
  std::vector<std::string> redemptions, qr_tokens;
  for (int i = 0; i < std::min(locks, customers); ++i) {
    rpb::LockCouponRequest lock;
    lock.set_coupon_code(coupons[2 * i].second);
    lock.set_customer_id(coupons[2 * i].first);
    lock.mutable_order()->set_order_id(absl::StrCat(prefix, "-order-", i));
    lock.mutable_order()->set_amount_fen(10000);
    lock.mutable_order()->set_channel("mobile_banking");
    rpb::Redemption redemption;
    if (!Retry("LockCoupon", [&](grpc::ClientContext* c) {
          return benefits->LockCoupon(c, lock, &redemption);
        })) {
      return 1;
    }
    redemptions.push_back(redemption.id());
  }
  for (int i = 0; i < std::min(qr, customers); ++i) {
    rpb::IssueQrTokenRequest issue;
    issue.set_coupon_code(coupons[2 * i + 1].second);
    issue.set_customer_id(coupons[2 * i + 1].first);
    rpb::QrToken token;
    if (!Retry("IssueQrToken",
               [&](grpc::ClientContext* c) { return benefits->IssueQrToken(c, issue, &token); })) {
      return 1;
    }
    qr_tokens.push_back(token.token() + "\t" + coupons[2 * i + 1].first);
  }
  if (!out_path.empty()) {
    std::ofstream out(out_path);
    for (const auto& [customer, code] : coupons)
      out << "coupon\t" << customer << '\t' << code << '\n';
    for (const auto& id : redemptions) out << "redemption\t" << id << '\n';
    for (const auto& token : qr_tokens) out << "qr\t" << token << '\n';
  }
  std::printf("p3: seeded %d customers of %s (points in two lots, 2 coupons each)\n", customers,
              org.c_str());
  return 0;
}

// Reads "channel_id<TAB>secret" lines.
std::vector<std::pair<std::string, std::string>> ReadChannels(const std::string& path) {
  std::vector<std::pair<std::string, std::string>> channels;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    const size_t tab = line.find('\t');
    if (tab == std::string::npos) continue;
    channels.emplace_back(line.substr(0, tab), line.substr(tab + 1));
  }
  return channels;
}

// Writes --count lines "target<TAB>channel_id<TAB>timestamp<TAB>nonce<TAB>signature", customers
// in turn, channels in turn, each with a nonce never used before (run id + counter).
int Sign(int argc, char** argv) {
  const auto channels = ReadChannels(Flag(argc, argv, "channels", ""));
  const std::string prefix = Flag(argc, argv, "prefix", "P3C");
  const int customers = std::stoi(Flag(argc, argv, "customers", "1000"));
  const int64_t count = std::stoll(Flag(argc, argv, "count", "100000"));
  const std::string what = Flag(argc, argv, "target", "wallet");
  const std::string out_path = Flag(argc, argv, "out", "");
  if (channels.empty() || out_path.empty()) {
    std::fprintf(stderr, "p3 sign: needs --channels=FILE (id<TAB>secret lines) and --out=FILE\n");
    return 2;
  }
  const std::string run = mkt::RandomHex(6);
  const std::string timestamp = std::to_string(absl::ToUnixSeconds(absl::Now()));
  std::ofstream out(out_path);
  std::string line;
  for (int64_t i = 0; i < count; ++i) {
    const auto& [channel_id, secret] = channels[i % channels.size()];
    const std::string target = what == "channel"
                                   ? std::string("/v1/channel")
                                   : "/v1/customers/" + Customer(prefix, i % customers) + "/wallet";
    const std::string nonce = absl::StrCat("p3", run, "n", i);
    const std::string signature =
        mkt::auth::SignRequest(secret, {"GET", target, timestamp, nonce, ""});
    line.clear();
    absl::StrAppend(&line, target, "\t", channel_id, "\t", timestamp, "\t", nonce, "\t", signature,
                    "\n");
    out << line;
  }
  return out.good() ? 0 : 1;
}

// The ceiling: --concurrency GetWallet calls kept in flight with gRPC's callback API (each answer
// starts the next call for the next customer), over the same customers as the REST runs (several
// gRPC channels, so one HTTP/2 connection is not the limit); --warmup seconds unmeasured, then
// --seconds measured. Prints grpc_req_per_s, p50_ms, p99_ms and errors. The callback API rather
// than one blocking thread per call: 64 blocking client threads cost this 2-core machine more
// than the service they measure (the ceiling came out below the REST figure).
int Grpc(int argc, char** argv) {
  const std::string target = Flag(argc, argv, "rewards", "127.0.0.1:20071");
  const std::string org = Flag(argc, argv, "org", "bank-a");
  const std::string prefix = Flag(argc, argv, "prefix", "P3C");
  const int customers = std::stoi(Flag(argc, argv, "customers", "1000"));
  const int concurrency = std::stoi(Flag(argc, argv, "concurrency", "64"));
  const double warmup = std::stod(Flag(argc, argv, "warmup", "2"));
  const double seconds = std::stod(Flag(argc, argv, "seconds", "10"));
  // The actor the gateway attaches for a channel of `org`.
  const Actor actor{org, "channel:p3-grpc", {}};

  std::vector<std::unique_ptr<rpb::Benefits::Stub>> stubs;
  for (int i = 0; i < 4; ++i) {
    grpc::ChannelArguments args;
    args.SetInt("grpc.channel_id", i);  // distinct subchannels
    stubs.push_back(rpb::Benefits::NewStub(
        grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args)));
  }
  std::atomic<int> phase{0};  // 0 warm-up, 1 measured, 2 stop
  std::atomic<int64_t> errors{0};
  std::mutex mu;
  std::condition_variable all_done;
  int in_flight = concurrency;  // guarded by mu
  // Customers in turn across all calls, as wrk's connections take the pre-signed lines: were each
  // call to step through the customers on its own, calls would bunch up on one customer and all
  // miss its cached wallet together when it expires.
  std::atomic<int64_t> next_customer{0};
  // One call in flight per slot; a slot's calls follow one another, so its fields need no lock.
  struct Slot {
    rpb::Benefits::Stub* stub = nullptr;
    std::unique_ptr<grpc::ClientContext> ctx;
    rpb::GetWalletRequest request;
    rpb::Wallet wallet;
    absl::Time sent;
    int measured = 0;
    std::vector<double> latencies_ms;
  };
  std::vector<Slot> slots(concurrency);
  std::function<void(Slot&)> send = [&](Slot& slot) {
    slot.request.set_org_id(org);
    slot.request.set_customer_id(Customer(prefix, static_cast<int>(next_customer++ % customers)));
    slot.ctx = std::make_unique<grpc::ClientContext>();
    mkt::rpc::PrepareClientContext(*slot.ctx, absl::Seconds(10), "");
    mkt::rpc::AttachActor(*slot.ctx, actor);
    slot.wallet.Clear();
    slot.measured = phase.load();
    slot.sent = absl::Now();
    slot.stub->async()->GetWallet(
        slot.ctx.get(), &slot.request, &slot.wallet, [&, s = &slot](grpc::Status status) {
          if (s->measured == 1) {
            if (status.ok()) {
              s->latencies_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - s->sent));
            } else if (errors++ == 0) {
              std::fprintf(stderr, "p3 grpc: %s\n", status.error_message().c_str());
            }
          }
          if (phase.load() < 2) {
            send(*s);
            return;
          }
          std::lock_guard<std::mutex> lock(mu);
          if (--in_flight == 0) all_done.notify_all();
        });
  };
  for (int t = 0; t < concurrency; ++t) {
    slots[t].stub = stubs[t % stubs.size()].get();
    slots[t].latencies_ms.reserve(200000);
    send(slots[t]);
  }
  absl::SleepFor(absl::Seconds(warmup));
  phase = 1;
  const absl::Time start = absl::Now();
  absl::SleepFor(absl::Seconds(seconds));
  phase = 2;
  const absl::Time end = absl::Now();
  {
    std::unique_lock<std::mutex> lock(mu);
    all_done.wait(lock, [&] { return in_flight == 0; });
  }
  std::vector<double> latencies_ms;
  for (const Slot& slot : slots) {
    latencies_ms.insert(latencies_ms.end(), slot.latencies_ms.begin(), slot.latencies_ms.end());
  }
  std::sort(latencies_ms.begin(), latencies_ms.end());
  auto pct = [&](double p) {
    return latencies_ms.empty() ? 0.0 : latencies_ms[static_cast<size_t>(latencies_ms.size() * p)];
  };
  // Calls answered within the measured window only (a call sent in it and answered after is
  // counted, one sent before it is not), over the window's length.
  const double rate = latencies_ms.size() / absl::ToDoubleSeconds(end - start);
  std::printf(
      "p3 grpc: %zu wallets in %.1f s with %d calls in flight grpc_req_per_s=%.0f p50_ms=%.2f "
      "p99_ms=%.2f errors=%lld\n",
      latencies_ms.size(), absl::ToDoubleSeconds(end - start), concurrency, rate, pct(0.50),
      pct(0.99), static_cast<long long>(errors.load()));
  return errors.load() == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string command = argc > 1 ? argv[1] : "";
  if (command == "seed") return Seed(argc, argv);
  if (command == "sign") return Sign(argc, argv);
  if (command == "grpc") return Grpc(argc, argv);
  std::fprintf(
      stderr,
      "usage: mkt-bench-p3 seed --rewards=ADDR --org=ORG --customers=N [--locks=K] [--qr=K] "
      "[--out=FILE]\n"
      "       mkt-bench-p3 sign --channels=FILE --customers=N --count=N --out=FILE "
      "[--target=wallet|channel]\n"
      "       mkt-bench-p3 grpc --rewards=ADDR --org=ORG --customers=N --concurrency=C "
      "--seconds=S\n");
  return 2;
}
