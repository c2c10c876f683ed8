// mkt-seed-demo: creates the demo data of the local stack through the services' own APIs and
// writes what a developer needs to call them to a credentials file. Safe to run again: channels
// recorded in an existing file are kept while they still exist.
//
//   mkt-seed-demo --channels 127.0.0.1:20061 --out .local/credentials.json
//                 [--rewards 127.0.0.1:20071] [--segments 127.0.0.1:20041]
//                 [--campaigns 127.0.0.1:20031] [--gateway-url http://127.0.0.1:8080]
// With --rewards it also funds a demo campaign budget per org and grants each demo customer
// welcome points, through the ledger's own idempotent Fund and Grant calls, and creates (and
// activates) the demo benefit templates the demo campaigns grant ("bt-fed-coupon-50", ...).
// With --segments it gives the demo customers an age and a payroll flag (a CSV import) and
// creates the demo segments the demo campaigns target: the segments service names segments
// itself, so they are found again by name, and the campaigns use the ids it gave.
// With --campaigns it creates the member banks and a branch in the campaigns service, takes a
// coupon campaign and an event campaign (a payroll customer's first deposit, the payroll flag
// read from the segments service's tags) of bank-a through maker-checker to ONLINE, saves a
// federation lottery as a template and copies it into a bank-b draft; with --rewards too it funds
// the coupon campaign's budget (bank-a's, which pays the federation coupon's unit cost). Campaign
// ids are the service's, so each step first looks for what an earlier run made and carries on
// from the state it finds. A campaigns service that looks reference data up in the real services
// (MKT_CAMPAIGNS_REFERENCE_SOURCE=services, the default) needs --rewards and --segments in the
// same run; one on its built-in demo catalog (=catalog) takes the catalog's segment ids when
// --segments is not given.
#include <sys/stat.h>

#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "libs/core/status.h"
#include "libs/rpc/actor.h"
#include "libs/rpc/client.h"
#include "libs/rpc/server.h"
#include "libs/tenancy/tenancy.h"
#include "marketing/campaigns/v1/campaigns.grpc.pb.h"
#include "marketing/channels/v1/channels.grpc.pb.h"
#include "marketing/rewards/v1/benefits.grpc.pb.h"
#include "marketing/rewards/v1/ledger.grpc.pb.h"
#include "marketing/segments/v1/segments.grpc.pb.h"
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

// Waits (up to a minute) until the rewards service has funded a campaign's budget in `org` up to
// `cap_fen`, as it does for every published campaign (decision 034); returns what is available.
absl::StatusOr<int64_t> AwaitCampaignBudget(const std::string& target, const std::string& org,
                                            const std::string& campaign_id, int64_t cap_fen) {
  auto stub = ledger::Ledger::NewStub(mkt::rpc::Connect(target));
  ledger::GetCampaignBudgetRequest request;
  request.set_org_id(org);
  request.set_campaign_id(campaign_id);
  absl::Status last = absl::NotFoundError("no budget account yet");
  for (const absl::Time deadline = absl::Now() + absl::Minutes(1); absl::Now() < deadline;
       absl::SleepFor(absl::Milliseconds(250))) {
    grpc::ClientContext ctx;
    mkt::rpc::PrepareClientContext(ctx, absl::Seconds(10), "seed-demo");
    ledger::CampaignBudget budget;
    last = mkt::rpc::FromGrpcStatus(stub->GetCampaignBudget(&ctx, request, &budget));
    if (last.ok() && budget.funded_fen() >= cap_fen) return budget.available_fen();
  }
  return last.ok() ? absl::DeadlineExceededError("funded below its cap after a minute") : last;
}

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

namespace cmp = ::marketing::campaigns::v1;
namespace seg = ::marketing::segments::v1;
using mkt::tenancy::Actor;
using mkt::tenancy::Role;

// The federation admin that owns the demo's reference data (templates, tag values, segments).
Actor ReferenceAdmin() { return Actor{"fed", "root", {Role::kAdmin}}; }

template <class Fn>
absl::Status CallAs(const Actor& actor, Fn fn) {
  grpc::ClientContext ctx;
  mkt::rpc::PrepareClientContext(ctx, absl::Seconds(10), "seed-demo");
  mkt::rpc::AttachActor(ctx, actor);
  return mkt::rpc::FromGrpcStatus(fn(&ctx));
}

// The benefit templates the demo campaigns grant; the same ids and unit costs as the campaigns
// service's built-in demo catalog (services/campaigns/reference_data.cc).
struct DemoTemplate {
  const char* id;
  const char* org;
  ledger::BenefitType type;
  const char* name;
  int64_t face_value;
  int64_t unit_cost_fen;
  const char* gift_sku;
};
constexpr DemoTemplate kTemplates[] = {
    {"bt-fed-coupon-50", "fed", ledger::COUPON_CASH, "50 yuan off", 5000, 5000, ""},
    // A campaign grants `quantity` points or fen of these (campaigns.proto RewardItem), so their
    // unit cost is per point (1 fen) and per fen.
    {"bt-fed-points-100", "fed", ledger::BENEFIT_POINTS, "100 points", 100, 1, ""},
    {"bt-fed-red-envelope-888", "fed", ledger::RED_ENVELOPE, "Red envelope 8.88 yuan", 888, 1, ""},
    {"bt-a-coupon-20", "bank-a", ledger::COUPON_CASH, "Bank A: 20 yuan off", 2000, 2000, ""},
    {"bt-b-rice-gift", "bank-b", ledger::GIFT_VOUCHER, "Bank B: a bag of rice", 0, 3500,
     "rice-5kg"},
};

// Creates and activates each demo template unless it exists; returns what it did.
absl::StatusOr<json> SeedBenefitTemplates(const std::string& target,
                                          std::vector<std::string>& done) {
  auto stub = ledger::Benefits::NewStub(mkt::rpc::Connect(target));
  const Actor admin = ReferenceAdmin();
  json out = json::array();
  for (const DemoTemplate& d : kTemplates) {
    ledger::GetTemplateRequest get;
    get.set_template_id(d.id);
    ledger::BenefitTemplate t;
    absl::Status found =
        CallAs(admin, [&](grpc::ClientContext* c) { return stub->GetTemplate(c, get, &t); });
    if (found.code() == absl::StatusCode::kNotFound) {
      ledger::CreateTemplateRequest create;
      ledger::BenefitTemplate* n = create.mutable_template_();
      n->set_id(d.id);
      n->set_org_id(d.org);
      n->set_type(d.type);
      n->set_name(d.name);
      n->set_face_value(d.face_value);
      n->set_gift_sku(d.gift_sku);
      n->set_unit_cost_fen(d.unit_cost_fen);
      n->set_total_stock(1'000'000);
      n->mutable_validity()->set_days_after_grant(30);
      MKT_RETURN_IF_ERROR(CallAs(
          admin, [&](grpc::ClientContext* c) { return stub->CreateTemplate(c, create, &t); }));
      done.push_back(std::string("created benefit template ") + d.id);
    } else {
      MKT_RETURN_IF_ERROR(found);
    }
    if (t.status() == ledger::TEMPLATE_DRAFT) {
      ledger::ActivateTemplateRequest activate;
      activate.set_template_id(d.id);
      MKT_RETURN_IF_ERROR(CallAs(
          admin, [&](grpc::ClientContext* c) { return stub->ActivateTemplate(c, activate, &t); }));
      done.push_back(std::string("activated benefit template ") + d.id);
    }
    out.push_back({{"template_id", t.id()},
                   {"org_id", t.org_id()},
                   {"unit_cost_fen", t.unit_cost_fen()},
                   {"status", ledger::TemplateStatus_Name(t.status())}});
  }
  return out;
}

// The segments the demo campaigns target, by the key the demo catalog gives them.
struct DemoSegment {
  const char* key;
  const char* org;
  const char* name;
  const char* tag;  // a rule: the int tag "age" >= 18, or the bool tag `tag` is true
};
constexpr DemoSegment kSegments[] = {
    {"seg-fed-all-adults", "fed", "Demo: all adult customers", "age"},
    {"seg-a-payroll", "bank-a", "Demo: bank A payroll customers", "payroll_customer"},
};

// Gives the demo customers an age and a payroll flag (the first two of each org are payroll
// customers), then creates each demo segment unless one of that name and org exists. Returns
// the segment ids by key.
absl::StatusOr<std::map<std::string, std::string>> SeedSegments(
    const std::string& target, const std::map<std::string, std::vector<std::string>>& customers,
    std::vector<std::string>& done) {
  auto stub = seg::Segments::NewStub(mkt::rpc::Connect(target));
  const Actor admin = ReferenceAdmin();
  for (const auto& [org, ids] : customers) {
    seg::ImportTagValuesRequest import;
    import.set_org_id(org);
    std::string csv = "customer_id,age,payroll_customer\n";
    for (size_t i = 0; i < ids.size(); ++i) {
      csv += ids[i] + "," + std::to_string(28 + 11 * static_cast<int>(i)) + "," +
             (i < 2 ? "true" : "false") + "\n";
    }
    import.set_csv(csv);
    seg::ImportTagValuesResponse imported;
    MKT_RETURN_IF_ERROR(CallAs(admin, [&](grpc::ClientContext* c) {
      return stub->ImportTagValues(c, import, &imported);
    }));
    if (imported.rows_rejected() > 0) {
      return absl::InternalError(
          "tag values of " + org + " rejected: " +
          (imported.errors().empty() ? std::string("?") : imported.errors(0).message()));
    }
  }
  std::map<std::string, std::string> existing;  // "<org>/<name>" -> id
  seg::ListSegmentsRequest list;
  list.mutable_page()->set_page_size(500);
  while (true) {
    seg::ListSegmentsResponse page;
    MKT_RETURN_IF_ERROR(
        CallAs(admin, [&](grpc::ClientContext* c) { return stub->ListSegments(c, list, &page); }));
    for (const seg::Segment& s : page.segments()) {
      if (!s.archived()) existing.emplace(s.org_id() + "/" + s.name(), s.id());
    }
    if (page.page().next_page_token().empty()) break;
    list.mutable_page()->set_page_token(page.page().next_page_token());
  }
  std::map<std::string, std::string> ids;
  for (const DemoSegment& d : kSegments) {
    if (auto it = existing.find(std::string(d.org) + "/" + d.name); it != existing.end()) {
      ids[d.key] = it->second;
      continue;
    }
    seg::CreateSegmentRequest create;
    create.set_org_id(d.org);
    create.set_name(d.name);
    create.set_description("Created by mkt-seed-demo for the demo campaigns.");
    seg::Comparison* rule = create.mutable_definition()->mutable_rule()->mutable_compare();
    rule->set_tag(d.tag);
    if (std::string_view(d.tag) == "age") {
      rule->set_op(seg::GE);
      rule->mutable_value()->set_int_value(18);
    } else {
      rule->set_op(seg::EQ);
      rule->mutable_value()->set_bool_value(true);
    }
    seg::Segment created;
    MKT_RETURN_IF_ERROR(CallAs(
        admin, [&](grpc::ClientContext* c) { return stub->CreateSegment(c, create, &created); }));
    done.push_back("created segment " + created.id() + " (" + d.key + ")");
    ids[d.key] = created.id();
  }
  return ids;
}

// The operators the demo acts as. Until the gateway's admin sessions exist, whoever calls the
// campaigns service directly names the operator in metadata (decision 007).
struct DemoOperator {
  const char* key;
  const char* org;
  const char* operator_id;
  Role role;
  const char* use;
};
constexpr DemoOperator kOperators[] = {
    {"root", "fed", "root", Role::kAdmin, "federation admin: creates orgs"},
    {"fred", "fed", "fred", Role::kPlanner, "federation planner: owns the lottery template"},
    {"alice", "bank-a", "alice", Role::kPlanner, "bank-a planner: maker of the coupon campaign"},
    {"bob", "bank-a", "bob", Role::kApprover, "bank-a approver: checker of alice's campaigns"},
    {"beth", "bank-b", "beth", Role::kPlanner, "bank-b planner: owns the draft from the template"},
};

Actor ActorFor(const DemoOperator& op) { return Actor{op.org, op.operator_id, {op.role}}; }

Actor Operator(std::string_view key) {
  for (const DemoOperator& op : kOperators) {
    if (key == op.key) return ActorFor(op);
  }
  return Actor{};
}

struct CampaignOrg {
  const char* id;
  const char* name;
  const char* region;
};
constexpr CampaignOrg kCampaignOrgs[] = {
    {"bank-a", "Member bank A (rural commercial bank)", "north"},
    {"bank-b", "Member bank B (rural credit cooperative)", "south"},
    {"bank-a.branch-01", "Bank A, branch 01", "north"},
};

constexpr char kCouponName[] = "Payroll customers: 50 yuan coupon";
constexpr char kEventName[] = "Payroll customers: 200 points for the first deposit";
constexpr char kLotteryName[] = "New year lottery (federation)";
constexpr char kTemplateName[] = "New year lottery";
constexpr char kBankBDraftName[] = "Bank B new year lottery";
// How long to wait for the scheduler to take the published coupon campaign online.
constexpr absl::Duration kOnlineWait = absl::Seconds(5);

google::protobuf::Timestamp Ts(absl::Time t) {
  google::protobuf::Timestamp ts;
  ts.set_seconds(absl::ToUnixSeconds(t));
  return ts;
}

json ActorJson(const DemoOperator& op) {
  return json{{"org_id", op.org},
              {"operator_id", op.operator_id},
              {"roles", {std::string(mkt::tenancy::RoleName(op.role))}},
              {"use", op.use}};
}

json CampaignJson(const cmp::Campaign& c) {
  json flagged = json::array();
  for (const std::string& f : c.flagged_fields()) flagged.push_back(f);
  return json{{"campaign_id", c.id()},
              {"org_id", c.org_id()},
              {"name", c.draft().name()},
              {"type", cmp::CampaignType_Name(c.draft().type())},
              {"state", cmp::CampaignState_Name(c.state())},
              {"live_version", c.live_version()},
              {"budget_cap_fen",
               c.live_version() > 0 ? c.live().budget_cap_fen() : c.draft().budget_cap_fen()},
              {"flagged_fields", flagged}};
}

// Seeds the campaigns service; `done` collects what this run changed (empty on a replay).
class CampaignSeeder {
 public:
  // `segment_ids` maps the demo catalog's segment keys to the ids to use (the segments
  // service's); a key missing from it is used as it is (the campaigns service's demo catalog).
  CampaignSeeder(const std::string& target, std::map<std::string, std::string> segment_ids)
      : stub_(cmp::Campaigns::NewStub(mkt::rpc::Connect(target))),
        segment_ids_(std::move(segment_ids)) {}

  const std::vector<std::string>& done() const { return done_; }

  // Creates the org unless it exists.
  absl::Status EnsureOrg(const CampaignOrg& org) {
    const Actor root = Operator("root");
    cmp::GetOrgRequest get;
    get.set_id(org.id);
    absl::Status found = Call(root, &cmp::Campaigns::Stub::GetOrg, get).status();
    if (found.ok()) return absl::OkStatus();
    if (found.code() != absl::StatusCode::kNotFound) return found;
    cmp::CreateOrgRequest create;
    create.set_id(org.id);
    create.set_display_name(org.name);
    create.set_region(org.region);
    absl::Status created = Call(root, &cmp::Campaigns::Stub::CreateOrg, create).status();
    if (created.code() == absl::StatusCode::kAlreadyExists) return absl::OkStatus();
    MKT_RETURN_IF_ERROR(created);
    done_.push_back(std::string("created org ") + org.id);
    return absl::OkStatus();
  }

  // Bank-a's coupon campaign, taken as far as ONLINE.
  absl::StatusOr<cmp::Campaign> EnsureCouponCampaign() {
    return EnsureOnlineCampaign(kCouponName, cmp::COUPON_CLAIM, "coupon", [this] {
      return CouponConfig(absl::Now(), SegmentId("seg-a-payroll"));
    });
  }

  // Bank-a's event campaign: a payroll customer's first deposit of 1,000 yuan earns points. Its
  // trigger reads the customer's `payroll_customer` tag from the segments service (decision 032).
  absl::StatusOr<cmp::Campaign> EnsureEventCampaign() {
    return EnsureOnlineCampaign(kEventName, cmp::EVENT_TRIGGER, "event", [this] {
      return EventConfig(absl::Now(), SegmentId("seg-a-payroll"));
    });
  }

  // A campaign of bank-a named `name`, taken as far as ONLINE: created by alice (from `config`),
  // submitted by alice, approved by bob, published by alice, started by the service's scheduler.
  absl::StatusOr<cmp::Campaign> EnsureOnlineCampaign(
      const char* name, cmp::CampaignType type, const std::string& what,
      const std::function<cmp::CampaignConfig()>& config) {
    const Actor alice = Operator("alice");
    const Actor bob = Operator("bob");
    MKT_ASSIGN_OR_RETURN(std::optional<cmp::Campaign> found,
                         FindCampaign(alice, "bank-a", type, [&](const cmp::Campaign& c) {
                           // One that ran its month out (or was archived) leaves room for a
                           // fresh one.
                           return c.draft().name() == name && c.state() != cmp::ENDED &&
                                  c.state() != cmp::ARCHIVED;
                         }));
    cmp::Campaign c;
    if (found) {
      c = *std::move(found);
    } else {
      cmp::CreateCampaignRequest create;
      create.set_org_id("bank-a");
      *create.mutable_config() = config();
      MKT_ASSIGN_OR_RETURN(c, Call(alice, &cmp::Campaigns::Stub::CreateCampaign, create));
      done_.push_back("created " + what + " campaign " + c.id());
    }
    // Carry on from wherever an earlier (interrupted) run left it.
    if (c.state() == cmp::DRAFT) {
      MKT_ASSIGN_OR_RETURN(c, Act(alice, &cmp::Campaigns::Stub::SubmitCampaign, c, "submit"));
    }
    if (c.state() == cmp::PENDING_APPROVAL) {
      MKT_ASSIGN_OR_RETURN(c, Act(bob, &cmp::Campaigns::Stub::ApproveCampaign, c, "approve"));
    }
    if (c.state() == cmp::APPROVED) {
      MKT_ASSIGN_OR_RETURN(c, Act(alice, &cmp::Campaigns::Stub::PublishCampaign, c, "publish"));
    }
    // The scheduler starts it at its window (now); with the scheduler off it stays SCHEDULED.
    const absl::Time deadline = absl::Now() + kOnlineWait;
    while (c.state() == cmp::SCHEDULED && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(200));
      cmp::GetCampaignRequest get;
      get.set_campaign_id(c.id());
      MKT_ASSIGN_OR_RETURN(c, Call(alice, &cmp::Campaigns::Stub::GetCampaign, get));
    }
    return c;
  }

  // The federation's lottery template, saved by fred from a lottery draft of the federation.
  absl::StatusOr<cmp::Template> EnsureLotteryTemplate() {
    const Actor fred = Operator("fred");
    cmp::ListTemplatesRequest list;
    list.set_type(cmp::LOTTERY);
    list.mutable_page()->set_page_size(500);
    while (true) {
      MKT_ASSIGN_OR_RETURN(cmp::ListTemplatesResponse page,
                           Call(fred, &cmp::Campaigns::Stub::ListTemplates, list));
      for (const cmp::Template& t : page.templates()) {
        if (t.org_id() == mkt::tenancy::kFederation && t.name() == kTemplateName) return t;
      }
      if (page.page().next_page_token().empty()) break;
      list.mutable_page()->set_page_token(page.page().next_page_token());
    }
    MKT_ASSIGN_OR_RETURN(
        std::optional<cmp::Campaign> source,
        FindCampaign(fred, mkt::tenancy::kFederation, cmp::LOTTERY, [](const cmp::Campaign& c) {
          return c.org_id() == mkt::tenancy::kFederation && c.draft().name() == kLotteryName;
        }));
    if (!source) {
      cmp::CreateCampaignRequest create;
      create.set_org_id(mkt::tenancy::kFederation);
      *create.mutable_config() = LotteryConfig(absl::Now(), SegmentId("seg-fed-all-adults"));
      MKT_ASSIGN_OR_RETURN(source, Call(fred, &cmp::Campaigns::Stub::CreateCampaign, create));
      done_.push_back("created lottery campaign " + source->id());
    }
    cmp::SaveAsTemplateRequest save;
    save.set_campaign_id(source->id());
    save.set_name(kTemplateName);
    save.set_description(
        "A prize draw for the new year: red envelopes and points, one draw a day per customer. "
        "Set your own window, budget and audience.");
    save.set_org_id(mkt::tenancy::kFederation);
    MKT_ASSIGN_OR_RETURN(cmp::Template t, Call(fred, &cmp::Campaigns::Stub::SaveAsTemplate, save));
    done_.push_back("saved template " + t.id());
    return t;
  }

  // Beth's bank-b draft copied from the template, left as a draft with its flagged fields.
  absl::StatusOr<cmp::Campaign> EnsureDraftFromTemplate(const cmp::Template& t) {
    const Actor beth = Operator("beth");
    MKT_ASSIGN_OR_RETURN(
        std::optional<cmp::Campaign> found,
        FindCampaign(beth, "bank-b", cmp::CAMPAIGN_TYPE_UNSPECIFIED, [&](const cmp::Campaign& c) {
          return c.org_id() == "bank-b" && c.source_template_id() == t.id();
        }));
    if (found) return *std::move(found);
    cmp::CreateFromTemplateRequest create;
    create.set_template_id(t.id());
    create.set_org_id("bank-b");
    create.set_name(kBankBDraftName);
    MKT_ASSIGN_OR_RETURN(cmp::Campaign c,
                         Call(beth, &cmp::Campaigns::Stub::CreateFromTemplate, create));
    done_.push_back("created bank-b draft " + c.id() + " from the template");
    return c;
  }

 private:
  template <class Request, class Response>
  using Method = grpc::Status (cmp::Campaigns::Stub::*)(grpc::ClientContext*, const Request&,
                                                        Response*);

  template <class Request, class Response>
  absl::StatusOr<Response> Call(const Actor& actor, Method<Request, Response> method,
                                const Request& request) {
    grpc::ClientContext ctx;
    mkt::rpc::PrepareClientContext(ctx, absl::Seconds(10), "seed-demo");
    mkt::rpc::AttachActor(ctx, actor);
    Response response;
    MKT_RETURN_IF_ERROR(mkt::rpc::FromGrpcStatus((stub_.get()->*method)(&ctx, request, &response)));
    return response;
  }

  absl::StatusOr<cmp::Campaign> Act(const Actor& actor,
                                    Method<cmp::CampaignActionRequest, cmp::Campaign> method,
                                    const cmp::Campaign& c, const std::string& what) {
    cmp::CampaignActionRequest request;
    request.set_campaign_id(c.id());
    request.set_expected_revision(c.revision());
    request.set_comment("demo data");
    absl::StatusOr<cmp::Campaign> after = Call(actor, method, request);
    if (after.ok()) done_.push_back(what + " " + c.id() + " as " + actor.operator_id);
    return after;
  }

  // The first campaign of `org`'s subtree (of `type` unless unspecified) that `match` accepts.
  absl::StatusOr<std::optional<cmp::Campaign>> FindCampaign(
      const Actor& actor, const std::string& org, cmp::CampaignType type,
      const std::function<bool(const cmp::Campaign&)>& match) {
    cmp::ListCampaignsRequest list;
    list.set_org_id(org);
    list.set_type(type);
    list.mutable_page()->set_page_size(500);
    while (true) {
      MKT_ASSIGN_OR_RETURN(cmp::ListCampaignsResponse page,
                           Call(actor, &cmp::Campaigns::Stub::ListCampaigns, list));
      for (const cmp::Campaign& c : page.campaigns()) {
        if (match(c)) return c;
      }
      if (page.page().next_page_token().empty()) return std::nullopt;
      list.mutable_page()->set_page_token(page.page().next_page_token());
    }
  }

  static void AddChannel(cmp::CampaignConfig& c, const char* title, const char* description,
                         const char* image, const char* rules) {
    cmp::ChannelPlacement* p = c.add_channels();
    p->set_channel("mobile_banking");
    p->mutable_content()->set_title(title);
    p->mutable_content()->set_description(description);
    p->mutable_content()->set_image_url(image);
    p->mutable_content()->set_rules_text(rules);
  }

  std::string SegmentId(const std::string& key) const {
    auto it = segment_ids_.find(key);
    return it == segment_ids_.end() ? key : it->second;
  }

  // Complete in all five steps; benefit ids are the demo templates' (kTemplates).
  static cmp::CampaignConfig CouponConfig(absl::Time now, const std::string& segment_id) {
    cmp::CampaignConfig c;
    c.set_name(kCouponName);
    c.set_type(cmp::COUPON_CLAIM);
    c.set_plan_id("demo-2026-q4");
    c.set_department("retail banking");
    *c.mutable_start_time() = Ts(now);
    *c.mutable_end_time() = Ts(now + absl::Hours(24 * 30));
    c.set_priority(100);
    c.set_description("Payroll customers of bank A claim one 50-yuan coupon each.");
    c.mutable_audience()->add_include()->set_segment_id(segment_id);
    c.mutable_limits()->set_per_customer_total(1);
    cmp::RewardItem* reward = c.add_rewards();
    reward->set_benefit_template_id("bt-fed-coupon-50");
    reward->set_quantity(1);
    c.set_budget_cap_fen(10'000'000);
    AddChannel(c, "50 yuan off for payroll customers",
               "Claim a 50-yuan coupon in the mobile banking app.",
               "https://img.example.cn/demo/coupon-50.png",
               "One coupon per customer while the budget lasts.");
    return c;
  }

  static cmp::CampaignConfig EventConfig(absl::Time now, const std::string& segment_id) {
    cmp::CampaignConfig c;
    c.set_name(kEventName);
    c.set_type(cmp::EVENT_TRIGGER);
    c.set_plan_id("demo-2026-q4");
    c.set_department("retail banking");
    *c.mutable_start_time() = Ts(now);
    *c.mutable_end_time() = Ts(now + absl::Hours(24 * 30));
    c.set_priority(80);
    c.set_description(
        "A payroll customer's first deposit of at least 1,000 yuan earns 200 points, once.");
    c.mutable_audience()->add_include()->set_segment_id(segment_id);
    c.set_trigger_expression(
        "event.type == \"deposit.made\" && event.amount_fen >= 100000 && "
        "customer.tag(\"payroll_customer\")");
    c.mutable_event_trigger()->set_kind(cmp::TRIGGER_FIRST_TIME);
    c.mutable_limits()->set_per_customer_total(1);
    cmp::RewardItem* reward = c.add_rewards();
    reward->set_benefit_template_id("POINTS");
    reward->set_kind(cmp::REWARD_KIND_POINTS);
    reward->set_quantity(200);
    c.set_budget_cap_fen(1'000'000);
    AddChannel(c, "200 points for your first deposit",
               "Payroll customers: deposit 1,000 yuan or more and earn 200 points.",
               "https://img.example.cn/demo/deposit-points.png",
               "Once per customer, for the first deposit of at least 1,000 yuan.");
    return c;
  }

  static cmp::CampaignConfig LotteryConfig(absl::Time now, const std::string& segment_id) {
    cmp::CampaignConfig c;
    c.set_name(kLotteryName);
    c.set_type(cmp::LOTTERY);
    c.set_department("federation marketing");
    *c.mutable_start_time() = Ts(now);
    *c.mutable_end_time() = Ts(now + absl::Hours(24 * 30));
    c.set_priority(50);
    c.set_description("One prize draw a day for every adult customer.");
    c.mutable_audience()->add_include()->set_segment_id(segment_id);
    c.mutable_limits()->set_per_customer_daily(1);
    c.mutable_limits()->set_per_customer_total(7);
    cmp::Prize* red_envelope = c.add_prizes();
    red_envelope->set_name("Red envelope 8.88 yuan");
    red_envelope->set_benefit_template_id("bt-fed-red-envelope-888");
    red_envelope->set_kind(cmp::REWARD_KIND_CASH_FEN);
    red_envelope->set_quantity(888);
    red_envelope->set_probability_bp(2000);
    cmp::Prize* points = c.add_prizes();
    points->set_name("100 points");
    points->set_benefit_template_id("bt-fed-points-100");
    points->set_kind(cmp::REWARD_KIND_POINTS);
    points->set_quantity(100);
    points->set_probability_bp(5000);
    c.set_budget_cap_fen(50'000'000);
    AddChannel(c, "New year lottery", "Draw once a day for a red envelope or points.",
               "https://img.example.cn/demo/new-year-lottery.png",
               "One draw per customer a day, seven in all.");
    return c;
  }

  std::unique_ptr<cmp::Campaigns::Stub> stub_;
  const std::map<std::string, std::string> segment_ids_;
  std::vector<std::string> done_;
};

// Returns the "campaigns" entry of the credentials file.
absl::StatusOr<json> SeedCampaigns(const std::string& target,
                                   std::map<std::string, std::string> segment_ids) {
  CampaignSeeder seeder(target, std::move(segment_ids));
  json orgs = json::array();
  for (const CampaignOrg& org : kCampaignOrgs) {
    MKT_RETURN_IF_ERROR(seeder.EnsureOrg(org));
    orgs.push_back({{"org_id", org.id}, {"name", org.name}, {"region", org.region}});
  }
  absl::StatusOr<cmp::Campaign> seeded_coupon = seeder.EnsureCouponCampaign();
  if (absl::IsInvalidArgument(seeded_coupon.status())) {
    return absl::InvalidArgumentError(
        std::string(seeded_coupon.status().message()) +
        " (a campaigns service with MKT_CAMPAIGNS_REFERENCE_SOURCE=services needs this run to "
        "have --rewards and --segments too)");
  }
  MKT_ASSIGN_OR_RETURN(cmp::Campaign coupon, std::move(seeded_coupon));
  if (coupon.state() != cmp::ONLINE) {
    std::cerr << "note: coupon campaign " << coupon.id() << " is "
              << cmp::CampaignState_Name(coupon.state())
              << ", not ONLINE (is the scheduler off, MKT_CAMPAIGNS_SCHEDULER_INTERVAL_MS=0?)\n";
  }
  MKT_ASSIGN_OR_RETURN(cmp::Campaign event, seeder.EnsureEventCampaign());
  MKT_ASSIGN_OR_RETURN(cmp::Template lottery, seeder.EnsureLotteryTemplate());
  MKT_ASSIGN_OR_RETURN(cmp::Campaign draft, seeder.EnsureDraftFromTemplate(lottery));

  if (seeder.done().empty()) {
    std::cout << "campaigns: already seeded, nothing changed\n";
  } else {
    for (const std::string& d : seeder.done()) std::cout << "campaigns: " << d << "\n";
  }
  json actors = json::object();
  for (const DemoOperator& op : kOperators) actors[op.key] = ActorJson(op);
  return json{
      {"grpc_target", target},
      {"actor_metadata_note",
       "Every call to the campaigns service names its operator in gRPC metadata: x-mkt-org, "
       "x-mkt-operator, x-mkt-roles (comma-separated). Use the actors below."},
      {"actors", actors},
      {"orgs", orgs},
      {"coupon_campaign", CampaignJson(coupon)},
      {"event_campaign", CampaignJson(event)},
      {"lottery_template",
       {{"template_id", lottery.id()},
        {"org_id", lottery.org_id()},
        {"name", lottery.name()},
        {"type", cmp::CampaignType_Name(lottery.type())},
        {"source_campaign_id", lottery.source_campaign_id()}}},
      {"bank_b_draft", CampaignJson(draft)},
  };
}

}  // namespace

int main(int argc, char** argv) {
  std::string channels_target = "127.0.0.1:20061";
  std::string out_path = ".local/credentials.json";
  std::string gateway_url = "http://127.0.0.1:8080";
  std::string rewards_target;
  std::string segments_target;
  std::string campaigns_target;
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
    else if (a == "--segments")
      segments_target = argv[i + 1];
    else if (a == "--campaigns")
      campaigns_target = argv[i + 1];
    else {
      std::cerr << "usage: " << argv[0]
                << " [--channels HOST:PORT] [--rewards HOST:PORT] [--segments HOST:PORT]"
                   " [--campaigns HOST:PORT] [--out FILE] [--gateway-url URL]\n";
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
  std::map<std::string, std::vector<std::string>> customers_by_org;
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
      customers_by_org[org.id].push_back(id);
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

  // The reference data the demo campaigns name, in the services that own it.
  std::vector<std::string> reference_done;
  json templates = nullptr;
  if (!rewards_target.empty()) {
    absl::StatusOr<json> seeded = SeedBenefitTemplates(rewards_target, reference_done);
    if (!seeded.ok()) {
      std::cerr << "seeding the benefit templates failed: " << seeded.status().message() << "\n";
      return 1;
    }
    templates = *std::move(seeded);
  }
  std::map<std::string, std::string> segment_ids;
  json segments = nullptr;
  if (!segments_target.empty()) {
    absl::StatusOr<std::map<std::string, std::string>> seeded =
        SeedSegments(segments_target, customers_by_org, reference_done);
    if (!seeded.ok()) {
      std::cerr << "seeding the segments service failed: " << seeded.status().message() << "\n";
      return 1;
    }
    segment_ids = *std::move(seeded);
    segments = json::object();
    for (const auto& [key, id] : segment_ids) segments[key] = id;
  }
  for (const std::string& d : reference_done) std::cout << "reference data: " << d << "\n";

  json campaigns = nullptr;
  if (!campaigns_target.empty()) {
    absl::StatusOr<json> seeded = SeedCampaigns(campaigns_target, segment_ids);
    if (!seeded.ok()) {
      std::cerr << "seeding the campaigns service failed: " << seeded.status().message() << "\n";
      return 1;
    }
    campaigns = *std::move(seeded);
    // Each published demo campaign pays its rewards from its own budget, which the rewards
    // service funds up to the campaign's cap once the version is published (decision 034).
    if (!rewards_target.empty()) {
      for (const char* key : {"coupon_campaign", "event_campaign"}) {
        if (!campaigns.contains(key)) continue;
        const json& c = campaigns[key];
        const std::string id = c.value("campaign_id", "");
        const int64_t cap = c.value("budget_cap_fen", int64_t{0});
        if (id.empty() || cap <= 0 || c.value("state", "") != "ONLINE") continue;
        absl::StatusOr<int64_t> funded =
            AwaitCampaignBudget(rewards_target, c.value("org_id", ""), id, cap);
        if (!funded.ok()) {
          std::cerr << "note: the budget of campaign " << id
                    << " is not funded yet: " << funded.status().message()
                    << " (mkt-rewards funds it from mkt.campaign-changes.v1; is "
                       "MKT_REWARDS_CAMPAIGN_CHANGES_TOPIC empty?)\n";
        } else {
          std::cout << "rewards: budget of campaign " << id << " holds " << *funded
                    << " fen (its cap " << cap << ")\n";
        }
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
      {"benefit_templates", templates},
      {"segments", segments},
      {"campaigns", campaigns},
      {"operators", json::array()},
      {"operators_note",
       "Operator accounts (one per role and org) arrive with the admin API; none exist yet. "
       "Until then the campaigns service takes the operator from gRPC metadata: see "
       "campaigns.actors."},
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
            << customers.size() << " customers"
            << (campaigns.is_null() ? "" : ", campaigns (see \"campaigns\")") << " -> " << out_path
            << "\n";
  return 0;
}
