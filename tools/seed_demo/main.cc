// mkt-seed-demo: creates the demo data of the local stack through the services' own APIs and
// writes what a developer needs to call them to a credentials file. Safe to run again: channels
// recorded in an existing file are kept while they still exist.
//
//   mkt-seed-demo --channels 127.0.0.1:20061 --out .local/credentials.json
//                 [--rewards 127.0.0.1:20071] [--gateway-url http://127.0.0.1:8080]
// With --rewards it also funds a demo campaign budget per org and grants each demo customer
// welcome points, through the ledger's own idempotent Fund and Grant calls.
#include <sys/stat.h>

#include <fstream>
#include <iostream>
#include <map>
#include <string>

#include "libs/core/status.h"
#include "libs/rpc/client.h"
#include "libs/rpc/server.h"
#include "marketing/channels/v1/channels.grpc.pb.h"
#include "marketing/rewards/v1/ledger.grpc.pb.h"
#include "nlohmann/json.hpp"

namespace {

namespace pb = ::marketing::channels::v1;
using nlohmann::json;

struct DemoOrg {
  const char* id;
  const char* name;
  const char* parent;
};
constexpr DemoOrg kOrgs[] = {
    {"fed", "Provincial Rural Credit Federation", ""},
    {"bank-a", "Member bank A (rural commercial bank)", "fed"},
    {"bank-b", "Member bank B (rural credit cooperative)", "fed"},
};
constexpr std::pair<const char*, const char*> kChannels[] = {
    {"mobile_banking", "Mobile banking app"},
    {"payment_qr", "Aggregated payment (merchant QR)"},
    {"wecom", "WeCom (enterprise WeChat)"},
    {"counter", "Branch counter / teller"},
};

class Seeder {
 public:
  explicit Seeder(const std::string& target)
      : stub_(pb::ChannelRegistry::NewStub(mkt::rpc::Connect(target))) {}

  // Returns the channel's id and secret, reusing `known` when it still works.
  absl::StatusOr<json> EnsureChannel(const std::string& org, const std::string& code,
                                     const std::string& name, const json& known) {
    if (known.is_object()) {
      pb::GetCredentialRequest req;
      req.set_id(known.value("channel_id", ""));
      pb::ChannelCredential cred;
      if (Call([&](grpc::ClientContext* c) { return stub_->GetCredential(c, req, &cred); }).ok() &&
          cred.secret() == known.value("secret", "")) {
        if (!cred.enabled()) MKT_RETURN_IF_ERROR(Enable(cred.channel_id()));
        return known;
      }
    }
    // Not known: create it, or take over an existing one of that code by rotating its secret.
    pb::CreateChannelRequest create;
    create.set_org_id(org);
    create.set_code(code);
    create.set_display_name(name);
    pb::ChannelWithSecret created;
    absl::Status s =
        Call([&](grpc::ClientContext* c) { return stub_->CreateChannel(c, create, &created); });
    if (s.code() == absl::StatusCode::kAlreadyExists) {
      MKT_ASSIGN_OR_RETURN(std::string id, FindId(org, code));
      pb::RotateSecretRequest rotate;
      rotate.set_id(id);
      s = Call([&](grpc::ClientContext* c) { return stub_->RotateSecret(c, rotate, &created); });
      if (s.ok() && !created.channel().enabled()) s = Enable(id);
    }
    MKT_RETURN_IF_ERROR(s);
    return json{{"org_id", org},
                {"code", code},
                {"channel_id", created.channel().id()},
                {"secret", created.secret()}};
  }

 private:
  template <class Fn>
  absl::Status Call(Fn fn) {
    grpc::ClientContext ctx;
    mkt::rpc::PrepareClientContext(ctx, absl::Seconds(5), "seed-demo");
    return mkt::rpc::FromGrpcStatus(fn(&ctx));
  }

  absl::Status Enable(const std::string& id) {
    pb::SetChannelEnabledRequest req;
    req.set_id(id);
    pb::Channel out;
    return Call([&](grpc::ClientContext* c) { return stub_->EnableChannel(c, req, &out); });
  }

  absl::StatusOr<std::string> FindId(const std::string& org, const std::string& code) {
    pb::ListChannelsRequest req;
    req.set_org_id(org);
    req.mutable_page()->set_page_size(500);
    pb::ListChannelsResponse resp;
    MKT_RETURN_IF_ERROR(
        Call([&](grpc::ClientContext* c) { return stub_->ListChannels(c, req, &resp); }));
    for (const auto& ch : resp.channels()) {
      if (ch.code() == code) return ch.id();
    }
    return absl::NotFoundError("channel " + code + " of " + org + " vanished");
  }

  std::unique_ptr<pb::ChannelRegistry::Stub> stub_;
};

namespace ledger = ::marketing::rewards::v1;

constexpr char kDemoCampaign[] = "demo-welcome";
constexpr int64_t kDemoBudgetFen = 1000000;  // 10,000 yuan
constexpr int64_t kWelcomePoints = 1000;
constexpr int64_t kWelcomeCostFen = 100;

// Funds the org's demo campaign and grants each customer welcome points, once: the request ids
// are fixed, so a second run is a replay that changes nothing.
absl::Status SeedLedger(const std::string& target, const std::string& org,
                        const std::vector<std::string>& customer_ids) {
  auto stub = ledger::Ledger::NewStub(mkt::rpc::Connect(target));
  auto call = [](auto fn) {
    grpc::ClientContext ctx;
    mkt::rpc::PrepareClientContext(ctx, absl::Seconds(10), "seed-demo");
    return mkt::rpc::FromGrpcStatus(fn(&ctx));
  };
  ledger::FundRequest fund;
  fund.set_request_id("seed-" + org + "-budget");
  fund.set_org_id(org);
  fund.set_asset(ledger::BUDGET_FEN);
  fund.set_owner_id(kDemoCampaign);
  fund.set_amount(kDemoBudgetFen);
  ledger::FundResponse funded;
  MKT_RETURN_IF_ERROR(call([&](grpc::ClientContext* c) { return stub->Fund(c, fund, &funded); }));
  for (const std::string& customer : customer_ids) {
    ledger::GrantRequest grant;
    grant.set_request_id("seed-" + customer + "-welcome");
    grant.set_org_id(org);
    grant.set_campaign_id(kDemoCampaign);
    grant.set_customer_id(customer);
    grant.set_asset(ledger::POINTS);
    grant.set_quantity(kWelcomePoints);
    grant.set_budget_cost_fen(kWelcomeCostFen);
    grant.mutable_expiry()->set_days_after_grant(365);
    ledger::GrantResponse granted;
    MKT_RETURN_IF_ERROR(
        call([&](grpc::ClientContext* c) { return stub->Grant(c, grant, &granted); }));
  }
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  std::string channels_target = "127.0.0.1:20061";
  std::string out_path = ".local/credentials.json";
  std::string gateway_url = "http://127.0.0.1:8080";
  std::string rewards_target;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--channels")
      channels_target = argv[i + 1];
    else if (a == "--out")
      out_path = argv[i + 1];
    else if (a == "--gateway-url")
      gateway_url = argv[i + 1];
    else if (a == "--rewards")
      rewards_target = argv[i + 1];
    else {
      std::cerr
          << "usage: " << argv[0]
          << " [--channels HOST:PORT] [--rewards HOST:PORT] [--out FILE] [--gateway-url URL]\n";
      return 2;
    }
  }

  json previous = json::object();
  if (std::ifstream in(out_path); in) {
    previous = json::parse(in, nullptr, false);
    if (previous.is_discarded()) previous = json::object();
  }
  std::map<std::string, json> known;
  for (const auto& ch : previous.value("channels", json::array())) {
    known[ch.value("org_id", "") + "/" + ch.value("code", "")] = ch;
  }

  Seeder seeder(channels_target);
  json orgs = json::array();
  json channels = json::array();
  json customers = json::array();
  for (const DemoOrg& org : kOrgs) {
    orgs.push_back({{"org_id", org.id},
                    {"name", org.name},
                    {"parent_org_id", org.parent[0] ? json(org.parent) : json(nullptr)}});
    for (const auto& [code, name] : kChannels) {
      auto ch = seeder.EnsureChannel(org.id, code, name, known[std::string(org.id) + "/" + code]);
      if (!ch.ok()) {
        std::cerr << "seeding channel " << code << " of " << org.id
                  << " failed: " << ch.status().message() << "\n";
        return 1;
      }
      channels.push_back(*ch);
    }
    std::vector<std::string> ids;
    for (int i = 1; i <= 3; ++i) {
      char id[32];
      std::snprintf(id, sizeof(id), "%s-cust-%04d", org.id, i);
      ids.push_back(id);
      json customer = {{"customer_id", id}, {"org_id", org.id}};
      if (!rewards_target.empty()) customer["welcome_points"] = kWelcomePoints;
      customers.push_back(customer);
    }
    if (!rewards_target.empty()) {
      if (absl::Status s = SeedLedger(rewards_target, org.id, ids); !s.ok()) {
        std::cerr << "seeding the ledger of " << org.id << " failed: " << s.message() << "\n";
        return 1;
      }
    }
  }

  json doc = {
      {"gateway_url", gateway_url},
      {"orgs", orgs},
      {"channels", channels},
      {"customers", customers},
      {"demo_campaign", rewards_target.empty() ? json(nullptr)
                                               : json{{"campaign_id", kDemoCampaign},
                                                      {"budget_fen_per_org", kDemoBudgetFen}}},
      {"operators", json::array()},
      {"operators_note",
       "Operator accounts (one per role and org) arrive with the admin API; none exist yet."},
  };
  std::string tmp = out_path + ".tmp";
  {
    std::ofstream out(tmp);
    out << doc.dump(2) << "\n";
    if (!out) {
      std::cerr << "cannot write " << tmp << "\n";
      return 1;
    }
  }
  chmod(tmp.c_str(), 0600);
  if (std::rename(tmp.c_str(), out_path.c_str()) != 0) {
    std::cerr << "cannot write " << out_path << "\n";
    return 1;
  }
  std::cout << "demo data: " << orgs.size() << " orgs, " << channels.size() << " channels, "
            << customers.size() << " customers -> " << out_path << "\n";
  return 0;
}
