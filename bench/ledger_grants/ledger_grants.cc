// The ledger-grants benchmark's driver (run by bench/ledger-grants.sh, not a test).
//
//   grants:  funds one campaign budget through mkt-rewards' gRPC API, grants every customer
//            once (their accounts exist afterwards, as the ceiling's do), then keeps `in_flight`
//            single-customer POINTS grants (budget leg + benefit leg, no stock) in flight with
//            the gRPC callback API for a fixed time, and reports grants/s and latency
//            percentiles over the measured window (after a warm-up).
//   ceiling: writes the rows those grants produce (two transfers, one points lot, two outbox
//            facts, the customer's and the three hot accounts' totals) straight into the same
//            PostgreSQL schema, 100 grants per durable transaction with multi-row statements,
//            for a fixed time: what the database alone can take, the figure the service is
//            measured against.
//
// Both end with a "RESULT key=value ..." line that the script parses.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <pqxx/pqxx>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "libs/core/ids.h"
#include "libs/core/status.h"
#include "libs/kafka/outbox.h"
#include "libs/pg/arrays.h"
#include "libs/rpc/client.h"
#include "libs/rpc/server.h"
#include "marketing/rewards/v1/ledger.grpc.pb.h"

namespace mkt::bench {
namespace {

namespace pb = ::marketing::rewards::v1;

// ---- Flags ("--name=value") --------------------------------------------------------------------

class Flags {
 public:
  Flags(int argc, char** argv) {
    for (int i = 2; i < argc; ++i) {
      std::string_view arg(argv[i]);
      if (arg.substr(0, 2) != "--" || arg.find('=') == std::string_view::npos) {
        std::fprintf(stderr, "ignoring argument %s (expected --name=value)\n", argv[i]);
        continue;
      }
      const size_t eq = arg.find('=');
      values_[std::string(arg.substr(2, eq - 2))] = std::string(arg.substr(eq + 1));
    }
  }
  std::string Str(const std::string& name, const std::string& fallback) const {
    auto it = values_.find(name);
    return it == values_.end() ? fallback : it->second;
  }
  int64_t Int(const std::string& name, int64_t fallback) const {
    int64_t value = fallback;
    auto it = values_.find(name);
    if (it != values_.end() && !absl::SimpleAtoi(it->second, &value)) {
      std::fprintf(stderr, "--%s=%s is not an integer; using %lld\n", name.c_str(),
                   it->second.c_str(), static_cast<long long>(fallback));
      value = fallback;
    }
    return value;
  }

 private:
  std::map<std::string, std::string> values_;
};

double Percentile(std::vector<int64_t>& sorted_us, double p) {
  if (sorted_us.empty()) return 0;
  const size_t index = std::min(sorted_us.size() - 1,
                                static_cast<size_t>(p * static_cast<double>(sorted_us.size())));
  return static_cast<double>(sorted_us[index]) / 1000.0;
}

// ---- grants: load through the gRPC API ---------------------------------------------------------

struct GrantOptions {
  std::string target;
  std::string org;
  std::string campaign;
  int customers = 10000;
  int in_flight = 128;
  int channels = 4;
  absl::Duration warmup = absl::Seconds(3);
  absl::Duration measure = absl::Seconds(20);
  int64_t points = 10;
  int64_t cost_fen = 1;
  int64_t fund_fen = 1'000'000'000'000;
};

// Keeps `in_flight` grants outstanding until the end of the measured window: each completion
// records its latency and starts the next grant of its lane.
class GrantLoad {
 public:
  explicit GrantLoad(GrantOptions options) : options_(std::move(options)) {
    for (int c = 0; c < options_.channels; ++c) {
      grpc::ChannelArguments args;
      // Separate connections (and client threads) instead of one shared subchannel.
      args.SetInt("mkt.bench.channel", c);
      stubs_.push_back(pb::Ledger::NewStub(
          grpc::CreateCustomChannel(options_.target, grpc::InsecureChannelCredentials(), args)));
    }
    run_ = RandomHex(4);
  }

  int Run() {
    if (!Fund()) return 1;
    lanes_.resize(options_.in_flight);
    for (int i = 0; i < options_.in_flight; ++i) {
      Lane& lane = lanes_[i];
      lane.index = i;
      lane.stub = stubs_[i % stubs_.size()].get();
      lane.rng.seed(i);
    }
    // First every customer once, so that the measured grants find their accounts, as the
    // ceiling's do (it creates them before it starts); these grants are not measured.
    const absl::Time priming_started = absl::Now();
    priming_ = true;
    RunLanes();
    std::printf("grants: primed %d customer accounts in %.1f s\n", options_.customers,
                absl::ToDoubleSeconds(absl::Now() - priming_started));
    priming_ = false;
    for (Lane& lane : lanes_) lane.samples.clear();
    start_ = absl::Now();
    measure_from_ = start_ + options_.warmup;
    end_ = measure_from_ + options_.measure;
    RunLanes();
    return Report();
  }

 private:
  struct Sample {
    absl::Time completed;
    int64_t latency_us;
    bool ok;
  };
  struct Lane {
    int index = 0;
    pb::Ledger::Stub* stub = nullptr;
    std::mt19937 rng;
    int64_t sequence = 0;
    std::unique_ptr<grpc::ClientContext> context;
    pb::GrantRequest request;
    pb::GrantResponse response;
    absl::Time started;
    std::vector<Sample> samples;
    std::map<std::string, int64_t> errors;
    int64_t ok_total = 0;
  };

  bool Fund() {
    pb::FundRequest request;
    request.set_request_id("bench-fund-" + run_);
    request.set_org_id(options_.org);
    request.set_asset(pb::BUDGET_FEN);
    request.set_owner_id(options_.campaign);
    request.set_amount(options_.fund_fen);
    pb::FundResponse response;
    grpc::ClientContext context;
    rpc::PrepareClientContext(context, absl::Seconds(30), "bench-fund");
    grpc::Status status = stubs_[0]->Fund(&context, request, &response);
    if (!status.ok()) {
      std::fprintf(stderr, "funding the campaign budget failed: %s\n",
                   rpc::FromGrpcStatus(status).ToString().c_str());
      return false;
    }
    budget_ref_ = response.account().ref();
    budget_debits_before_ = response.account().debits_posted();
    return true;
  }

  // Runs every lane until it stops (end of the window, or every customer primed).
  void RunLanes() {
    active_ = options_.in_flight;
    for (Lane& lane : lanes_) Launch(lane);
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return active_ == 0; });
  }

  void Launch(Lane& lane) {
    lane.context = std::make_unique<grpc::ClientContext>();
    lane.context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    lane.request.Clear();
    lane.request.set_request_id(
        absl::StrCat("bench-", run_, "-", lane.index, "-", lane.sequence++));
    lane.request.set_org_id(options_.org);
    lane.request.set_campaign_id(options_.campaign);
    const int customer =
        priming_ ? next_new_customer_++
                 : std::uniform_int_distribution<int>(0, options_.customers - 1)(lane.rng);
    lane.request.set_customer_id(absl::StrCat("cust-", customer));
    lane.request.set_asset(pb::POINTS);
    lane.request.set_quantity(options_.points);
    lane.request.set_budget_cost_fen(options_.cost_fen);
    lane.request.mutable_expiry()->set_days_after_grant(365);
    lane.response.Clear();
    lane.started = absl::Now();
    lane.stub->async()->Grant(lane.context.get(), &lane.request, &lane.response,
                              [this, &lane](grpc::Status status) { Done(lane, status); });
  }

  void Done(Lane& lane, const grpc::Status& status) {
    const absl::Time now = absl::Now();
    lane.samples.push_back({now, absl::ToInt64Microseconds(now - lane.started), status.ok()});
    if (status.ok()) {
      ++lane.ok_total;
    } else {
      ++lane.errors[ReasonName(ReasonOf(rpc::FromGrpcStatus(status))) + "/" +
                    std::to_string(status.error_code())];
    }
    if (priming_ ? next_new_customer_ < options_.customers : now < end_) {
      Launch(lane);
      return;
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (--active_ == 0) cv_.notify_all();
  }

  int Report() {
    int64_t ok_in_window = 0;
    int64_t ok_total = 0;
    std::vector<int64_t> latencies;
    std::map<std::string, int64_t> errors;
    for (const Lane& lane : lanes_) {
      ok_total += lane.ok_total;
      for (const auto& [name, count] : lane.errors) errors[name] += count;
      for (const Sample& s : lane.samples) {
        if (s.completed < measure_from_ || s.completed >= end_) continue;
        if (s.ok) ++ok_in_window;
        latencies.push_back(s.latency_us);
      }
    }
    std::sort(latencies.begin(), latencies.end());
    const double seconds = absl::ToDoubleSeconds(options_.measure);
    const double rate = static_cast<double>(ok_in_window) / seconds;
    std::string error_text;
    for (const auto& [name, count] : errors) absl::StrAppend(&error_text, " ", name, "=", count);
    std::printf("grants: %d in flight over %d channels, %.0f s measured after %.0f s warm-up\n",
                options_.in_flight, options_.channels, seconds,
                absl::ToDoubleSeconds(options_.warmup));
    std::printf("grants: %lld ok in the window (%lld in all), errors:%s\n",
                static_cast<long long>(ok_in_window), static_cast<long long>(ok_total),
                error_text.empty() ? " none" : error_text.c_str());

    // The budget account must have been debited exactly once per acknowledged grant.
    pb::GetAccountRequest request;
    *request.mutable_ref() = budget_ref_;
    pb::Account account;
    grpc::ClientContext context;
    rpc::PrepareClientContext(context, absl::Seconds(30), "bench-verify");
    grpc::Status status = stubs_[0]->GetAccount(&context, request, &account);
    const int64_t expected = budget_debits_before_ + ok_total * options_.cost_fen;
    const bool verified = status.ok() && account.debits_posted() == expected;
    std::printf("grants: budget debited %lld fen, expected %lld: %s\n",
                static_cast<long long>(account.debits_posted()), static_cast<long long>(expected),
                verified ? "ok" : "MISMATCH");
    std::printf(
        "RESULT grants_per_s=%.0f p50_ms=%.2f p99_ms=%.2f ok=%lld errors=%lld verified=%d\n", rate,
        Percentile(latencies, 0.50), Percentile(latencies, 0.99), static_cast<long long>(ok_total),
        static_cast<long long>(static_cast<int64_t>(latencies.size()) - ok_in_window),
        verified ? 1 : 0);
    return verified ? 0 : 1;
  }

  GrantOptions options_;
  std::vector<std::unique_ptr<pb::Ledger::Stub>> stubs_;
  std::string run_;
  pb::AccountRef budget_ref_;
  int64_t budget_debits_before_ = 0;
  std::vector<Lane> lanes_;
  absl::Time start_;
  absl::Time measure_from_;
  absl::Time end_;
  std::mutex mu_;
  std::condition_variable cv_;
  int active_ = 0;
  std::atomic<bool> priming_{false};
  std::atomic<int> next_new_customer_{0};
};

// ---- ceiling: the same rows straight into PostgreSQL -------------------------------------------

// The enum numbers the ledger stores (marketing.rewards.v1).
constexpr int kOwnerCustomer = pb::CUSTOMER;
constexpr int kOwnerCampaign = pb::CAMPAIGN;
constexpr int kOwnerSystem = pb::SYSTEM;

constexpr char kInsertAccount[] =
    "INSERT INTO accounts (org_id, asset, asset_ref, owner_kind, owner_id, "
    "debits_must_not_exceed_credits, credits_must_not_exceed_debits, credits_posted, created_at) "
    "VALUES ($1, $2, '', $3, $4, $5, false, $6, now()) RETURNING id";
constexpr char kInsertCustomers[] =
    "INSERT INTO accounts (org_id, asset, asset_ref, owner_kind, owner_id, "
    "debits_must_not_exceed_credits, credits_must_not_exceed_debits, created_at) "
    "SELECT $1, $2, '', $3, 'cust-' || n, true, false, now() FROM generate_series(0, $4 - 1) n "
    "ORDER BY n RETURNING id";
constexpr char kLockAccounts[] =
    "SELECT id, debits_posted, credits_posted FROM accounts WHERE id = ANY($1::bigint[]) "
    "ORDER BY id FOR UPDATE";
constexpr char kUpdateTotals[] =
    "UPDATE accounts a SET debits_posted = a.debits_posted + u.debits, "
    "credits_posted = a.credits_posted + u.credits "
    "FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS u(id, debits, credits) "
    "WHERE a.id = u.id";
constexpr char kInsertTransfers[] =
    "INSERT INTO transfers (id, batch_id, debit_account_id, credit_account_id, asset, amount, "
    "code, state, pending, campaign_id, event_id, order_id, metadata, reverses_transfer_id, "
    "pending_id, content_hash, debit_balance_after, credit_balance_after, created_at) "
    "SELECT u.id, u.batch_id, u.debit, u.credit, u.asset, u.amount, u.code, 2, false, $9, '', '', "
    "'{}'::jsonb, '', '', u.hash, u.debit_after, u.credit_after, now() "
    "FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::smallint[], "
    "$6::bigint[], $7::smallint[], $8::text[], $10::bigint[], $11::bigint[]) WITH ORDINALITY "
    "AS u(id, batch_id, debit, credit, asset, amount, code, hash, debit_after, credit_after, ord) "
    "ORDER BY u.ord";
constexpr char kInsertLots[] =
    "INSERT INTO lots (account_id, amount, remaining, expires_at, granted_by_transfer_id, "
    "created_at) SELECT u.account, u.amount, u.amount, now() + interval '365 days', u.transfer, "
    "now() FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS u(account, amount, transfer)";

struct CeilingOptions {
  std::string dsn;
  int customers = 10000;
  int grants_per_transaction = 100;
  // One: the hot budget and issuance rows serialise writers anyway (two measured no faster).
  int writers = 1;
  absl::Duration duration = absl::Seconds(15);
  int64_t points = 10;
  int64_t cost_fen = 1;
};

struct Accounts {
  int64_t budget = 0;
  int64_t expense = 0;
  int64_t issuance = 0;
  std::vector<int64_t> customers;
};

Accounts CreateAccounts(pqxx::connection& conn, const CeilingOptions& options,
                        const std::string& org) {
  pqxx::work tx(conn);
  Accounts accounts;
  accounts.budget = tx.exec_params1(kInsertAccount, org, static_cast<int>(pb::BUDGET_FEN),
                                    kOwnerCampaign, "camp-ceiling", true, int64_t{1} << 60)[0]
                        .as<int64_t>();
  accounts.expense = tx.exec_params1(kInsertAccount, org, static_cast<int>(pb::BUDGET_FEN),
                                     kOwnerSystem, "expense", false, 0)[0]
                         .as<int64_t>();
  accounts.issuance = tx.exec_params1(kInsertAccount, org, static_cast<int>(pb::POINTS),
                                      kOwnerSystem, "issuance", false, 0)[0]
                          .as<int64_t>();
  for (const auto& row : tx.exec_params(kInsertCustomers, org, static_cast<int>(pb::POINTS),
                                        kOwnerCustomer, options.customers)) {
    accounts.customers.push_back(row[0].as<int64_t>());
  }
  tx.commit();
  return accounts;
}

// Where a writer's time went, per step of its transactions.
struct StepTimes {
  absl::Duration lock, build, totals, transfers, lots, outbox, commit;
  void Add(const StepTimes& o) {
    lock += o.lock;
    build += o.build;
    totals += o.totals;
    transfers += o.transfers;
    lots += o.lots;
    outbox += o.outbox;
    commit += o.commit;
  }
};

// One writer: transactions of `grants_per_transaction` grants until `until`; returns the grants.
int64_t WriteCeiling(const CeilingOptions& options, const Accounts& accounts,
                     const std::string& org, int writer, absl::Time until, StepTimes& times) {
  pqxx::connection conn(options.dsn);
  // Durable, like the ledger's own commits (the server default; said here so it cannot drift).
  pqxx::nontransaction(conn).exec("SET synchronous_commit = on");
  std::mt19937 rng(writer);
  const std::string run = RandomHex(4);
  int64_t grants = 0;
  int64_t sequence = 0;
  const int n = options.grants_per_transaction;
  while (absl::Now() < until) {
    // The grants of this transaction: a customer each.
    std::vector<int64_t> customers(n);
    for (auto& c : customers) {
      c = accounts.customers[std::uniform_int_distribution<size_t>(
          0, accounts.customers.size() - 1)(rng)];
    }
    std::vector<int64_t> ids = {accounts.budget, accounts.expense, accounts.issuance};
    ids.insert(ids.end(), customers.begin(), customers.end());
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());

    absl::Time mark = absl::Now();
    auto step = [&mark](absl::Duration& into) {
      const absl::Time now = absl::Now();
      into += now - mark;
      mark = now;
    };
    pqxx::work tx(conn);
    // Lock in id order and read the totals, as a group-committing writer must.
    std::map<int64_t, int64_t> balance;  // credits - debits
    for (const auto& row : tx.exec_params(kLockAccounts, mkt::pg::IntArrayLiteral(ids))) {
      balance[row[0].as<int64_t>()] = row[2].as<int64_t>() - row[1].as<int64_t>();
    }
    step(times.lock);
    std::map<int64_t, std::pair<int64_t, int64_t>> delta;  // id -> (debits, credits)
    std::vector<std::string> transfer_ids, batch_ids, hashes;
    std::vector<int64_t> debits, credits, amounts, debit_after, credit_after;
    std::vector<int64_t> assets, codes;
    std::vector<int64_t> lot_accounts, lot_amounts;
    std::vector<std::string> lot_transfers;
    std::vector<kafka::OutboxMessage> facts;
    auto add = [&](const std::string& id, const std::string& batch, int64_t debit, int64_t credit,
                   pb::Asset asset, int64_t amount) {
      balance[debit] -= amount;
      balance[credit] += amount;
      delta[debit].first += amount;
      delta[credit].second += amount;
      transfer_ids.push_back(id);
      batch_ids.push_back(batch);
      debits.push_back(debit);
      credits.push_back(credit);
      assets.push_back(asset);
      amounts.push_back(amount);
      codes.push_back(pb::GRANT);
      hashes.push_back(RandomHex(32));  // 64 hex characters, like the SHA-256 content hash
      debit_after.push_back(balance[debit]);
      credit_after.push_back(balance[credit]);
      // The fact as the ledger publishes it.
      pb::TransferPosted posted;
      pb::Transfer& t = *posted.mutable_transfer();
      t.set_id(id);
      t.set_batch_id(batch);
      t.set_debit_account_id(debit);
      t.set_credit_account_id(credit);
      t.set_asset(asset);
      t.set_amount(amount);
      t.set_code(pb::GRANT);
      t.set_state(pb::POSTED);
      t.set_campaign_id("camp-ceiling");
      t.mutable_debit()->set_org_id(org);
      t.mutable_credit()->set_org_id(org);
      t.mutable_created_at()->set_seconds(absl::ToUnixSeconds(absl::Now()));
      kafka::OutboxMessage fact;
      fact.topic = "mkt.ledger-facts.v1";
      fact.key = batch;
      fact.envelope = kafka::MakeEnvelope("rewards.TransferPosted", org, "", posted);
      fact.envelope.set_event_id("ledger:" + id);
      facts.push_back(std::move(fact));
    };
    for (int g = 0; g < n; ++g) {
      const std::string batch = absl::StrCat("ceil-", run, "-", writer, "-", sequence++);
      add(batch + ":budget", batch, accounts.budget, accounts.expense, pb::BUDGET_FEN,
          options.cost_fen);
      add(batch + ":benefit", batch, accounts.issuance, customers[g], pb::POINTS, options.points);
      lot_accounts.push_back(customers[g]);
      lot_amounts.push_back(options.points);
      lot_transfers.push_back(batch + ":benefit");
    }
    std::vector<int64_t> delta_ids, delta_debits, delta_credits;
    for (const auto& [id, d] : delta) {
      delta_ids.push_back(id);
      delta_debits.push_back(d.first);
      delta_credits.push_back(d.second);
    }
    step(times.build);
    tx.exec_params(kUpdateTotals, mkt::pg::IntArrayLiteral(delta_ids),
                   mkt::pg::IntArrayLiteral(delta_debits), mkt::pg::IntArrayLiteral(delta_credits));
    step(times.totals);
    tx.exec_params(kInsertTransfers, mkt::pg::TextArrayLiteral(transfer_ids),
                   mkt::pg::TextArrayLiteral(batch_ids), mkt::pg::IntArrayLiteral(debits),
                   mkt::pg::IntArrayLiteral(credits), mkt::pg::IntArrayLiteral(assets),
                   mkt::pg::IntArrayLiteral(amounts), mkt::pg::IntArrayLiteral(codes),
                   mkt::pg::TextArrayLiteral(hashes), "camp-ceiling",
                   mkt::pg::IntArrayLiteral(debit_after), mkt::pg::IntArrayLiteral(credit_after));
    step(times.transfers);
    tx.exec_params(kInsertLots, mkt::pg::IntArrayLiteral(lot_accounts),
                   mkt::pg::IntArrayLiteral(lot_amounts), mkt::pg::TextArrayLiteral(lot_transfers));
    step(times.lots);
    kafka::AppendManyToOutbox(tx, facts);
    step(times.outbox);
    tx.commit();
    step(times.commit);
    grants += n;
  }
  return grants;
}

int RunCeiling(const CeilingOptions& options) {
  const std::string org = "bench-ceiling-" + RandomHex(4);
  Accounts accounts;
  try {
    pqxx::connection conn(options.dsn);
    accounts = CreateAccounts(conn, options, org);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ceiling: cannot prepare the accounts: %s\n", e.what());
    return 1;
  }
  std::atomic<int64_t> grants{0};
  std::atomic<bool> failed{false};
  const absl::Time start = absl::Now();
  const absl::Time until = start + options.duration;
  std::vector<std::thread> writers;
  std::vector<StepTimes> times(options.writers);
  for (int w = 0; w < options.writers; ++w) {
    writers.emplace_back([&, w] {
      try {
        grants += WriteCeiling(options, accounts, org, w, until, times[w]);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "ceiling writer %d: %s\n", w, e.what());
        failed = true;
      }
    });
  }
  for (auto& w : writers) w.join();
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (failed) return 1;
  // Per grant: two transfers, one lot, two outbox rows, the customer's totals; the three hot
  // accounts once per transaction.
  const double rows_per_grant = 6.0 + 3.0 / options.grants_per_transaction;
  const double grants_per_s = static_cast<double>(grants) / seconds;
  std::printf("ceiling: %lld grants in %.1f s by %d writers, %d grants per transaction\n",
              static_cast<long long>(grants.load()), seconds, options.writers,
              options.grants_per_transaction);
  StepTimes total;
  for (const StepTimes& t : times) total.Add(t);
  const double all =
      absl::ToDoubleSeconds(total.lock + total.build + total.totals + total.transfers + total.lots +
                            total.outbox + total.commit);
  auto share = [all](absl::Duration d) { return 100.0 * absl::ToDoubleSeconds(d) / all; };
  std::printf(
      "ceiling: time per step: lock %.0f%%, build rows %.0f%%, account totals %.0f%%, transfers "
      "%.0f%%, lots %.0f%%, outbox %.0f%%, commit %.0f%%\n",
      share(total.lock), share(total.build), share(total.totals), share(total.transfers),
      share(total.lots), share(total.outbox), share(total.commit));
  std::printf("RESULT ceiling_grants_per_s=%.0f ceiling_rows_per_s=%.0f rows_per_grant=%.2f\n",
              grants_per_s, grants_per_s * rows_per_grant, rows_per_grant);
  return 0;
}

int Main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  Flags flags(argc, argv);
  if (mode == "grants") {
    GrantOptions options;
    options.target = flags.Str("target", "127.0.0.1:20071");
    options.org = flags.Str("org", "bench-org-" + RandomHex(4));
    options.campaign = flags.Str("campaign", "bench-campaign");
    options.customers = static_cast<int>(flags.Int("customers", options.customers));
    options.in_flight = static_cast<int>(flags.Int("in_flight", options.in_flight));
    options.channels = static_cast<int>(flags.Int("channels", options.channels));
    options.warmup = absl::Seconds(flags.Int("warmup_seconds", 3));
    options.measure = absl::Seconds(flags.Int("seconds", 20));
    return GrantLoad(options).Run();
  }
  if (mode == "ceiling") {
    CeilingOptions options;
    options.dsn = flags.Str("dsn", "");
    options.customers = static_cast<int>(flags.Int("customers", options.customers));
    options.grants_per_transaction =
        static_cast<int>(flags.Int("grants_per_transaction", options.grants_per_transaction));
    options.writers = static_cast<int>(flags.Int("writers", options.writers));
    options.duration = absl::Seconds(flags.Int("seconds", 15));
    return RunCeiling(options);
  }
  std::fprintf(stderr,
               "usage: %s grants --target=HOST:PORT [--seconds=20 --warmup_seconds=3 "
               "--in_flight=128 --channels=4 --customers=10000 --org=ORG --campaign=ID]\n"
               "       %s ceiling --dsn=DSN [--seconds=15 --writers=1 "
               "--grants_per_transaction=100 --customers=10000]\n",
               argv[0], argv[0]);
  return 2;
}

}  // namespace
}  // namespace mkt::bench

int main(int argc, char** argv) { return mkt::bench::Main(argc, argv); }
