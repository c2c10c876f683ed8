// Benchmark P1's driver (run by bench/p1.sh, not a test): event → reward, end to end.
//
// Against a running mkt-events and mkt-rewards it loads 200 active trigger rules (4 event types ×
// 50 rules, each `product_code == "Pnn" && amount_fen >= 100`, so every event is evaluated against
// the 50 rules of its type and matches exactly one: one grant per event) and funds their 200
// campaign budgets. Every grant is 10 POINTS plus 1 fen of budget: the rows the ledger-grants
// ceiling writes (two transfers, a lot, two outbox facts, account totals).
//
//   throughput: business events are produced onto the events topic as fast as the producer can
//               while at most `max_backlog` are unfinished (so the pipeline is never idle and
//               Kafka is not filled for minutes); an event is finished when its grant's fact
//               (TransferPosted of the benefit leg) is read back from mkt.ledger-facts.v1.
//               Events/s = finished events in the measured window / window.
//   latency:    events at a fixed rate; event-to-ledger latency = the fact's arrival minus the
//               moment the event was handed to the producer, and also the grant's commit time in
//               the ledger (transfers.recorded_at) minus that moment.
// Afterwards every produced event must have exactly one grant in the ledger ("verified").
//
// Ends with "RESULT key=value ..." lines that the script parses.
#include <grpcpp/grpcpp.h>
#include <librdkafka/rdkafkacpp.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <pqxx/pqxx>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "libs/core/ids.h"
#include "libs/kafka/kafka.h"
#include "libs/kafka/outbox.h"
#include "libs/rpc/actor.h"
#include "libs/rpc/client.h"
#include "libs/rpc/server.h"
#include "marketing/common/v1/envelope.pb.h"
#include "marketing/events/v1/business_event.pb.h"
#include "marketing/events/v1/events.grpc.pb.h"
#include "marketing/rewards/v1/ledger.grpc.pb.h"

namespace mkt::bench {
namespace {

namespace epb = ::marketing::events::v1;
namespace rpb = ::marketing::rewards::v1;

constexpr char kFactsTopic[] = "mkt.ledger-facts.v1";
constexpr char kSource[] = "p1";
// Event types whose schemas need nothing beyond an amount (payment.merchant_qr: a merchant id).
constexpr const char* kEventTypes[] = {"credit_card.spend", "deposit.made", "wealth.subscribed",
                                       "payment.merchant_qr"};
constexpr int kRulesPerType = 50;

// ---- Flags ("--name=value") --------------------------------------------------------------------

class Flags {
 public:
  Flags(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
      std::string_view arg(argv[i]);
      const size_t eq = arg.find('=');
      if (arg.substr(0, 2) != "--" || eq == std::string_view::npos) {
        std::fprintf(stderr, "ignoring argument %s (expected --name=value)\n", argv[i]);
        continue;
      }
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

struct Options {
  std::string events_target;
  std::string rewards_target;
  std::string bootstrap;
  std::string events_topic;
  std::string rewards_dsn;
  std::string org;
  int customers = 10000;
  absl::Duration warmup = absl::Seconds(5);
  absl::Duration measure = absl::Seconds(60);
  int64_t max_backlog = 100000;
  int64_t latency_rate = 5000;
  absl::Duration latency_warmup = absl::Seconds(5);
  absl::Duration latency_measure = absl::Seconds(30);
  absl::Duration drain_timeout = absl::Seconds(300);
  int64_t max_events = 4'000'000;
};

int64_t NowUs() { return absl::ToUnixMicros(absl::Now()); }

double PercentileMs(std::vector<int64_t>& sorted_us, double p) {
  if (sorted_us.empty()) return 0;
  const size_t index = std::min(sorted_us.size() - 1,
                                static_cast<size_t>(p * static_cast<double>(sorted_us.size())));
  return static_cast<double>(sorted_us[index]) / 1000.0;
}

// ---- Rules and budgets -------------------------------------------------------------------------

std::string CampaignOf(int rule) { return absl::StrCat("p1-camp-", rule); }

bool Setup(const Options& options) {
  auto events = epb::EventsAdmin::NewStub(rpc::Connect(options.events_target));
  auto ledger = rpb::Ledger::NewStub(rpc::Connect(options.rewards_target));
  int rule = 0;
  for (const char* type : kEventTypes) {
    for (int p = 0; p < kRulesPerType; ++p, ++rule) {
      epb::TriggerRule r;
      r.set_rule_id(absl::StrCat("p1-rule-", rule));
      r.set_campaign_id(CampaignOf(rule));
      r.set_org_id(options.org);
      r.set_event_type(type);
      r.set_kind(epb::EVERY_MATCH);
      r.set_window(epb::CAMPAIGN_WINDOW);
      r.set_condition(absl::StrCat("product_code == \"P", p, "\" && amount_fen >= 100"));
      r.mutable_reward()->set_asset(rpb::POINTS);
      r.mutable_reward()->set_quantity(10);
      r.mutable_reward()->set_budget_cost_fen(1);
      r.mutable_reward()->set_points_expiry_days(365);
      r.set_active(true);
      r.set_revision(1);
      r.mutable_start_time()->set_seconds(absl::ToUnixSeconds(absl::Now() - absl::Hours(24)));
      r.mutable_end_time()->set_seconds(absl::ToUnixSeconds(absl::Now() + absl::Hours(24 * 30)));
      grpc::ClientContext context;
      rpc::PrepareClientContext(context, absl::Seconds(30), NewRequestId());
      rpc::AttachActor(context, tenancy::SystemActor("bench-p1"));
      epb::UpsertRuleResponse response;
      grpc::Status status = events->UpsertRule(&context, r, &response);
      if (!status.ok()) {
        std::fprintf(stderr, "UpsertRule %s: %s\n", r.rule_id().c_str(),
                     rpc::FromGrpcStatus(status).ToString().c_str());
        return false;
      }
      rpb::FundRequest fund;
      fund.set_request_id(absl::StrCat("p1-fund-", options.org, "-", rule));
      fund.set_org_id(options.org);
      fund.set_asset(rpb::BUDGET_FEN);
      fund.set_owner_id(CampaignOf(rule));
      fund.set_amount(1'000'000'000'000);
      grpc::ClientContext fund_context;
      rpc::PrepareClientContext(fund_context, absl::Seconds(30), NewRequestId());
      rpb::FundResponse funded;
      status = ledger->Fund(&fund_context, fund, &funded);
      if (!status.ok()) {
        std::fprintf(stderr, "Fund %s: %s\n", CampaignOf(rule).c_str(),
                     rpc::FromGrpcStatus(status).ToString().c_str());
        return false;
      }
    }
  }
  std::printf("setup: %d active rules over %zu event types, %d campaign budgets funded\n", rule,
              std::size(kEventTypes), rule);
  return true;
}

// ---- Event bookkeeping -------------------------------------------------------------------------

// Per event sequence number: when it was handed to the producer and when its fact was read.
class EventBook {
 public:
  explicit EventBook(int64_t capacity)
      : capacity_(capacity),
        produced_us_(new std::atomic<int64_t>[capacity]),
        fact_us_(new std::atomic<int64_t>[capacity]) {
    for (int64_t i = 0; i < capacity; ++i) {
      produced_us_[i].store(0, std::memory_order_relaxed);
      fact_us_[i].store(0, std::memory_order_relaxed);
    }
  }
  int64_t capacity() const { return capacity_; }
  void Produced(int64_t seq, int64_t us) { produced_us_[seq].store(us); }
  // Returns false for a fact seen before (the relay delivers at least once).
  bool Fact(int64_t seq, int64_t us) {
    if (seq < 0 || seq >= capacity_) return false;
    int64_t expected = 0;
    if (!fact_us_[seq].compare_exchange_strong(expected, us)) {
      ++duplicate_facts_;
      return false;
    }
    ++facts_;
    return true;
  }
  int64_t produced_at(int64_t seq) const { return produced_us_[seq].load(); }
  int64_t fact_at(int64_t seq) const { return fact_us_[seq].load(); }
  int64_t facts() const { return facts_.load(); }
  int64_t duplicate_facts() const { return duplicate_facts_.load(); }

 private:
  int64_t capacity_;
  std::unique_ptr<std::atomic<int64_t>[]> produced_us_;
  std::unique_ptr<std::atomic<int64_t>[]> fact_us_;
  std::atomic<int64_t> facts_{0};
  std::atomic<int64_t> duplicate_facts_{0};
};

// The event key's tail after "p1:<run>." is the sequence number.
int64_t SeqOf(std::string_view event_key, std::string_view prefix) {
  if (event_key.substr(0, prefix.size()) != prefix) return -1;
  int64_t seq = -1;
  if (!absl::SimpleAtoi(std::string(event_key.substr(prefix.size())), &seq)) return -1;
  return seq;
}

// Reads mkt.ledger-facts.v1 from its current end and records the benefit legs of our grants.
class FactWatcher {
 public:
  FactWatcher(const Options& options, std::string prefix, EventBook& book)
      : options_(options), prefix_(std::move(prefix)), book_(book) {}
  ~FactWatcher() { Stop(); }

  bool Start() {
    std::string err;
    std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
    for (const auto& [k, v] :
         std::map<std::string, std::string>{{"bootstrap.servers", options_.bootstrap},
                                            {"group.id", "bench-p1-" + RandomHex(6)},
                                            {"enable.auto.commit", "false"},
                                            {"fetch.wait.max.ms", "5"},
                                            {"isolation.level", "read_committed"}}) {
      if (conf->set(k, v, err) != RdKafka::Conf::CONF_OK) {
        std::fprintf(stderr, "facts consumer %s: %s\n", k.c_str(), err.c_str());
        return false;
      }
    }
    consumer_.reset(RdKafka::KafkaConsumer::create(conf.get(), err));
    if (consumer_ == nullptr) {
      std::fprintf(stderr, "facts consumer: %s\n", err.c_str());
      return false;
    }
    // Explicit end offsets: nothing we produce can be missed while a group assignment settles.
    RdKafka::Metadata* metadata = nullptr;
    std::unique_ptr<RdKafka::Topic> topic(
        RdKafka::Topic::create(consumer_.get(), kFactsTopic, nullptr, err));
    if (consumer_->metadata(false, topic.get(), &metadata, 10000) != RdKafka::ERR_NO_ERROR ||
        metadata->topics()->empty()) {
      std::fprintf(stderr, "facts consumer: no metadata for %s\n", kFactsTopic);
      delete metadata;
      return false;
    }
    std::vector<RdKafka::TopicPartition*> partitions;
    for (const auto* p : *metadata->topics()->at(0)->partitions()) {
      int64_t low = 0, high = 0;
      if (consumer_->query_watermark_offsets(kFactsTopic, p->id(), &low, &high, 10000) !=
          RdKafka::ERR_NO_ERROR) {
        std::fprintf(stderr, "facts consumer: no watermark for partition %d\n", p->id());
        delete metadata;
        return false;
      }
      partitions.push_back(RdKafka::TopicPartition::create(kFactsTopic, p->id(), high));
    }
    delete metadata;
    const bool assigned = consumer_->assign(partitions) == RdKafka::ERR_NO_ERROR;
    RdKafka::TopicPartition::destroy(partitions);
    if (!assigned) return false;
    thread_ = std::thread([this] { Run(); });
    return true;
  }

  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    if (consumer_ != nullptr) {
      consumer_->close();
      consumer_.reset();
    }
  }

 private:
  void Run() {
    while (!stop_) {
      std::unique_ptr<RdKafka::Message> m(consumer_->consume(50));
      if (m == nullptr || m->err() != RdKafka::ERR_NO_ERROR) continue;
      const int64_t now = NowUs();
      marketing::common::v1::Envelope envelope;
      if (!envelope.ParseFromArray(m->payload(), static_cast<int>(m->len()))) continue;
      if (envelope.org_id() != options_.org) continue;
      rpb::TransferPosted fact;
      if (!envelope.payload().UnpackTo(&fact)) continue;
      const rpb::Transfer& t = fact.transfer();
      const std::string_view id = t.id();
      if (id.size() < 8 || id.substr(id.size() - 8) != ":benefit") continue;
      book_.Fact(SeqOf(t.event_id(), prefix_), now);
    }
  }

  const Options& options_;
  std::string prefix_;
  EventBook& book_;
  std::unique_ptr<RdKafka::KafkaConsumer> consumer_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
};

// ---- Load --------------------------------------------------------------------------------------

class Load {
 public:
  Load(const Options& options, std::string run, EventBook& book, kafka::Producer& producer)
      : options_(options), run_(std::move(run)), book_(book), producer_(producer), rng_(1126) {}

  int64_t produced() const { return next_seq_; }

  // Produces `n` events (one chunk); false when the producer failed.
  bool Produce(int n) {
    n = static_cast<int>(std::min<int64_t>(n, book_.capacity() - next_seq_));
    if (n <= 0) return false;
    std::vector<kafka::OutgoingMessage> out;
    out.reserve(n);
    const int64_t first = next_seq_;
    for (int i = 0; i < n; ++i) {
      const int64_t seq = next_seq_++;
      epb::BusinessEvent e;
      e.set_source(kSource);
      e.set_source_event_id(absl::StrCat(run_, ".", seq));
      const int type = std::uniform_int_distribution<int>(0, std::size(kEventTypes) - 1)(rng_);
      e.set_event_type(kEventTypes[type]);
      e.set_customer_id(absl::StrCat(
          "cust-", std::uniform_int_distribution<int>(0, options_.customers - 1)(rng_)));
      e.set_org_id(options_.org);
      e.mutable_occurred_at()->set_seconds(absl::ToUnixSeconds(absl::Now()));
      e.set_amount_fen(std::uniform_int_distribution<int64_t>(100, 100000)(rng_));
      e.set_product_code(
          absl::StrCat("P", std::uniform_int_distribution<int>(0, kRulesPerType - 1)(rng_)));
      if (type == 3) (*e.mutable_attributes())["merchant_id"] = "M0001";
      out.push_back(
          {options_.events_topic,
           e.customer_id(),
           kafka::MakeEnvelope("events.BusinessEvent", e.org_id(), "", e).SerializeAsString(),
           {}});
    }
    const int64_t handed_over = NowUs();
    for (int64_t seq = first; seq < next_seq_; ++seq) book_.Produced(seq, handed_over);
    absl::Status status = producer_.Publish(out, absl::Seconds(60));
    if (!status.ok()) {
      std::fprintf(stderr, "producing events failed: %s\n", status.ToString().c_str());
      return false;
    }
    return true;
  }

  // Waits until every produced event's fact was read; returns whether it happened in time.
  bool Drain(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (book_.facts() < next_seq_ && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(50));
    }
    return book_.facts() >= next_seq_;
  }

 private:
  const Options& options_;
  std::string run_;
  EventBook& book_;
  kafka::Producer& producer_;
  std::mt19937 rng_;
  int64_t next_seq_ = 0;
};

// The grants' commit times in the ledger (microseconds), indexed by sequence number; 0: none.
// Also counts benefit transfers per event, for the exactly-once check.
struct Commits {
  std::vector<int64_t> at_us;
  int64_t rows = 0;
  int64_t events_with_one = 0;
  int64_t events_with_more = 0;
};

Commits ReadCommits(const Options& options, const std::string& prefix, int64_t produced) {
  Commits c;
  c.at_us.assign(produced, 0);
  std::vector<int> per_event(produced, 0);
  pqxx::connection conn(options.rewards_dsn);
  pqxx::nontransaction tx(conn);
  for (const auto& row :
       tx.exec_params("SELECT event_id, (extract(epoch FROM recorded_at) * 1000000)::bigint "
                      "FROM transfers WHERE event_id LIKE $1 AND id LIKE '%:benefit'",
                      prefix + "%")) {
    const int64_t seq = SeqOf(row[0].as<std::string>(), prefix);
    ++c.rows;
    if (seq < 0 || seq >= produced) continue;
    c.at_us[seq] = row[1].as<int64_t>();
    ++per_event[seq];
  }
  for (int n : per_event) {
    if (n == 1) ++c.events_with_one;
    if (n > 1) ++c.events_with_more;
  }
  return c;
}

int Run(const Options& options) {
  if (!Setup(options)) return 1;
  const std::string run = RandomHex(4);
  const std::string prefix = absl::StrCat(kSource, ":", run, ".");
  EventBook book(options.max_events);
  FactWatcher watcher(options, prefix, book);
  if (!watcher.Start()) return 1;
  auto producer = kafka::Producer::Create({.bootstrap_servers = options.bootstrap,
                                           .client_id = "bench-p1",
                                           .properties = {{"linger.ms", "2"}}});
  if (!producer.ok()) {
    std::fprintf(stderr, "producer: %s\n", producer.status().ToString().c_str());
    return 1;
  }
  Load load(options, run, book, **producer);

  // 1. Throughput: the producer at full speed, bounded by the backlog of unfinished events.
  const absl::Time start = absl::Now();
  const absl::Time measure_from = start + options.warmup;
  const absl::Time end = measure_from + options.measure;
  int64_t max_backlog_seen = 0;
  while (absl::Now() < end) {
    const int64_t backlog = load.produced() - book.facts();
    max_backlog_seen = std::max(max_backlog_seen, backlog);
    if (backlog >= options.max_backlog) {
      absl::SleepFor(absl::Milliseconds(2));
      continue;
    }
    if (!load.Produce(static_cast<int>(std::min<int64_t>(2000, options.max_backlog - backlog)))) {
      return 1;
    }
  }
  const int64_t throughput_events = load.produced();
  const double produce_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  std::printf(
      "throughput: produced %lld events in %.1f s (backlog bounded at %lld, max seen %lld)\n",
      static_cast<long long>(throughput_events), produce_seconds,
      static_cast<long long>(options.max_backlog), static_cast<long long>(max_backlog_seen));
  const absl::Time drain_start = absl::Now();
  if (!load.Drain(options.drain_timeout)) {
    std::fprintf(stderr, "throughput: only %lld of %lld events finished after draining %.0f s\n",
                 static_cast<long long>(book.facts()), static_cast<long long>(load.produced()),
                 absl::ToDoubleSeconds(options.drain_timeout));
    return 1;
  }
  std::printf("throughput: backlog drained in %.1f s\n",
              absl::ToDoubleSeconds(absl::Now() - drain_start));
  int64_t finished_in_window = 0;
  const int64_t from_us = absl::ToUnixMicros(measure_from), to_us = absl::ToUnixMicros(end);
  for (int64_t seq = 0; seq < throughput_events; ++seq) {
    const int64_t at = book.fact_at(seq);
    if (at >= from_us && at < to_us) ++finished_in_window;
  }
  const double window_s = absl::ToDoubleSeconds(options.measure);
  const double events_per_s = static_cast<double>(finished_in_window) / window_s;

  // 2. Latency at a fixed rate.
  const int64_t latency_first = load.produced();
  const absl::Time latency_start = absl::Now();
  const absl::Time latency_from = latency_start + options.latency_warmup;
  const absl::Time latency_end = latency_from + options.latency_measure;
  int64_t latency_measured_first = -1;
  while (absl::Now() < latency_end) {
    const absl::Time now = absl::Now();
    if (latency_measured_first < 0 && now >= latency_from) {
      latency_measured_first = load.produced();
    }
    const int64_t due = static_cast<int64_t>(absl::ToDoubleSeconds(now - latency_start) *
                                             static_cast<double>(options.latency_rate));
    const int64_t behind = due - (load.produced() - latency_first);
    if (behind > 0 && !load.Produce(static_cast<int>(behind))) return 1;
    absl::SleepFor(absl::Milliseconds(5));
  }
  const int64_t latency_last = load.produced();
  const double achieved_rate = static_cast<double>(latency_last - latency_first) /
                               absl::ToDoubleSeconds(absl::Now() - latency_start);
  if (!load.Drain(options.drain_timeout)) {
    std::fprintf(stderr, "latency: only %lld of %lld events finished\n",
                 static_cast<long long>(book.facts()), static_cast<long long>(load.produced()));
    return 1;
  }
  watcher.Stop();

  // 3. The ledger's own record: commit times and exactly one grant per event.
  Commits commits;
  try {
    commits = ReadCommits(options, prefix, load.produced());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "reading the ledger: %s\n", e.what());
    return 1;
  }
  int64_t committed_in_window = 0;
  for (int64_t seq = 0; seq < throughput_events; ++seq) {
    if (commits.at_us[seq] >= from_us && commits.at_us[seq] < to_us) ++committed_in_window;
  }
  std::vector<int64_t> to_fact, to_commit;
  for (int64_t seq = latency_measured_first; seq < latency_last; ++seq) {
    to_fact.push_back(book.fact_at(seq) - book.produced_at(seq));
    to_commit.push_back(commits.at_us[seq] - book.produced_at(seq));
  }
  std::sort(to_fact.begin(), to_fact.end());
  std::sort(to_commit.begin(), to_commit.end());
  const bool verified = commits.events_with_one == load.produced() &&
                        commits.events_with_more == 0 && commits.rows == load.produced();
  std::printf(
      "ledger: %lld events produced, %lld with exactly one grant, %lld with more, %lld grant rows; "
      "%lld duplicate facts read (at-least-once relay): %s\n",
      static_cast<long long>(load.produced()), static_cast<long long>(commits.events_with_one),
      static_cast<long long>(commits.events_with_more), static_cast<long long>(commits.rows),
      static_cast<long long>(book.duplicate_facts()), verified ? "ok" : "MISMATCH");
  std::printf(
      "RESULT events_per_s=%.0f ledger_events_per_s=%.0f grants_per_event=%.2f produced=%lld "
      "window_s=%.0f verified=%d\n",
      events_per_s, static_cast<double>(committed_in_window) / window_s,
      static_cast<double>(commits.rows) /
          static_cast<double>(std::max<int64_t>(1, load.produced())),
      static_cast<long long>(throughput_events), window_s, verified ? 1 : 0);
  std::printf(
      "RESULT latency_rate=%.0f latency_events=%zu p50_ms=%.1f p99_ms=%.1f max_ms=%.1f "
      "commit_p50_ms=%.1f commit_p99_ms=%.1f\n",
      achieved_rate, to_fact.size(), PercentileMs(to_fact, 0.50), PercentileMs(to_fact, 0.99),
      to_fact.empty() ? 0.0 : static_cast<double>(to_fact.back()) / 1000.0,
      PercentileMs(to_commit, 0.50), PercentileMs(to_commit, 0.99));
  return verified ? 0 : 1;
}

int Main(int argc, char** argv) {
  Flags flags(argc, argv);
  Options options;
  options.events_target = flags.Str("events", "127.0.0.1:20051");
  options.rewards_target = flags.Str("rewards", "127.0.0.1:20071");
  options.bootstrap = flags.Str("bootstrap", "127.0.0.1:29092");
  options.events_topic = flags.Str("topic", "mkt.business-events.v1");
  options.rewards_dsn = flags.Str("rewards_dsn", "");
  options.org = flags.Str("org", "bench-p1-" + RandomHex(3));
  options.customers = static_cast<int>(flags.Int("customers", options.customers));
  options.warmup = absl::Seconds(flags.Int("warmup_seconds", 5));
  options.measure = absl::Seconds(flags.Int("seconds", 60));
  options.max_backlog = flags.Int("max_backlog", options.max_backlog);
  options.latency_rate = flags.Int("latency_rate", options.latency_rate);
  options.latency_warmup = absl::Seconds(flags.Int("latency_warmup_seconds", 5));
  options.latency_measure = absl::Seconds(flags.Int("latency_seconds", 30));
  options.drain_timeout = absl::Seconds(flags.Int("drain_timeout_seconds", 300));
  options.max_events = flags.Int("max_events", options.max_events);
  if (options.rewards_dsn.empty()) {
    std::fprintf(stderr,
                 "usage: %s --rewards_dsn=DSN [--events=HOST:PORT --rewards=HOST:PORT "
                 "--bootstrap=HOST:PORT --topic=T --org=ORG --seconds=60 --warmup_seconds=5 "
                 "--max_backlog=100000 --latency_rate=5000 --latency_seconds=30 "
                 "--customers=10000]\n",
                 argv[0]);
    return 2;
  }
  return Run(options);
}

}  // namespace
}  // namespace mkt::bench

int main(int argc, char** argv) { return mkt::bench::Main(argc, argv); }
