// mkt-rewards: the benefit ledger service.
#include <condition_variable>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "libs/core/ids.h"
#include "libs/core/worker_pool.h"
#include "libs/kafka/kafka.h"
#include "libs/kafka/outbox.h"
#include "libs/log/log.h"
#include "libs/metrics/metrics.h"
#include "libs/pg/migrations.h"
#include "libs/pg/pool.h"
#include "libs/rpc/server.h"
#include "services/rewards/batcher.h"
#include "services/rewards/benefits.h"
#include "services/rewards/benefits_grpc.h"
#include "services/rewards/campaign_budgets.h"
#include "services/rewards/fulfilment.h"
#include "services/rewards/ledger_grpc.h"
#include "services/rewards/ledger_service.h"
#include "services/rewards/payouts.h"
#include "services/rewards/pg_ledger_store.h"
#include "services/rewards/rewards_config.h"
#include "spdlog/spdlog.h"

extern char** environ;

namespace {

using namespace mkt;

int Fail(const absl::Status& status) {
  spdlog::critical("rewards cannot start: {}", status.message());
  return 1;
}

// Runs the ledger's timed jobs (expiry, the pending sweeper) on one thread until Stop().
class Housekeeping {
 public:
  struct Job {
    const char* name;
    absl::Duration interval;  // zero: the job is off
    std::function<void()> run;
    absl::Time next = absl::InfinitePast();
  };

  explicit Housekeeping(std::vector<Job> jobs) : jobs_(std::move(jobs)) {
    thread_ = std::thread([this] { Run(); });
  }
  ~Housekeeping() { Stop(); }

  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      absl::Time now = absl::Now();
      absl::Time wake = now + absl::Seconds(60);
      for (Job& job : jobs_) {
        if (job.interval <= absl::ZeroDuration()) continue;
        if (job.next <= now) {
          lock.unlock();
          job.run();
          lock.lock();
          if (stop_) return;
          job.next = absl::Now() + job.interval;
        }
        wake = std::min(wake, job.next);
      }
      cv_.wait_for(lock,
                   absl::ToChronoNanoseconds(std::max(wake - absl::Now(), absl::Milliseconds(10))),
                   [this] { return stop_; });
    }
  }

  std::vector<Job> jobs_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace

int main(int argc, char** argv) {
  rpc::PrepareServiceProcess();
  int exit_code = 0;
  std::optional<rewards::RewardsConfig> cfg =
      config::LoadForMain(rewards::RewardsConfigSchema(), argc, argv, environ, &exit_code,
                          &rewards::ValidateRewardsConfig);
  if (!cfg) return exit_code;
  log::Init("rewards", log::ParseFormat(cfg->log_format), cfg->log_level);

  auto pool = pg::Pool::Connect({.dsn = cfg->pg_dsn, .size = static_cast<int>(cfg->pg_pool_size)});
  if (!pool.ok()) return Fail(pool.status());
  if (auto s =
          pg::ApplyMigrations(**pool, {&kafka::OutboxMigrations(), &rewards::RewardsMigrations()});
      !s.ok()) {
    return Fail(s);
  }
  if (auto s = metrics::StartExposer(cfg->metrics_address); !s.ok()) return Fail(s);

  const kafka::ClientOptions kafka_options{.bootstrap_servers = cfg->kafka_bootstrap,
                                           .client_id = "rewards"};
  auto producer = kafka::Producer::Create(kafka_options);
  if (!producer.ok()) return Fail(producer.status());
  if (auto s = kafka::EnsureTopic(kafka_options, rewards::kLedgerFactsTopic, 3); !s.ok()) {
    // The relay keeps retrying; a broker that is down now must not keep the ledger offline.
    spdlog::warn("cannot create topic {} yet: {}", rewards::kLedgerFactsTopic, s.message());
  }
  const kafka::RelayOptions relay_options;
  kafka::OutboxRelay relay(**pool, **producer, relay_options);
  std::thread relay_thread([&relay] { relay.Run(); });
  // Every return from here on stops what has started (a joinable thread would abort the process);
  // a return before `shutdown` below does it in reverse order, the relay last.
  absl::Cleanup stop_relay = [&] {
    relay.Stop();
    relay_thread.join();
  };

  // The integrity check expects a fact for every transfer still inside the relay's retention.
  rewards::PgLedgerStore store(**pool, SystemClock(), relay_options.retention);
  std::optional<rewards::GrantBatcher> batcher;
  batcher.emplace(store, rewards::BatcherOptions{
                             .writers = static_cast<int>(cfg->batch_writers),
                             .max_batches = static_cast<int>(cfg->batch_max),
                             .linger = absl::Microseconds(cfg->batch_linger_us),
                             .max_queued = static_cast<int>(cfg->worker_queue),
                         });
  rewards::LedgerService ledger(*batcher, store, SystemClock());
  rewards::Benefits benefits(
      **pool, store, SystemClock(),
      rewards::BenefitsOptions{.lock_ttl = absl::Seconds(cfg->coupon_lock_ttl_s),
                               .qr_ttl = absl::Seconds(cfg->qr_ttl_s),
                               .qr_key = cfg->qr_signing_key,
                               .template_cache_ttl = absl::Milliseconds(cfg->template_cache_ms),
                               .wallet_cache_ttl = absl::Milliseconds(cfg->wallet_cache_ms)});
  benefits.AttachBatcher(&*batcher);
  // Every ledger change to a customer's account, whichever call made it, drops their cached wallet.
  store.OnCustomerChanged([&benefits](const std::string& /*org*/, const std::string& customer) {
    benefits.InvalidateWallet(customer);
  });
  // The batcher is drained while what its commits call back into still exists.
  absl::Cleanup drain_batcher = [&] {
    benefits.AttachBatcher(nullptr);
    batcher.reset();
    store.OnCustomerChanged(nullptr);
  };
  rewards::Payouts payouts(**pool, store, SystemClock());
  for (const char* topic : {rewards::kPayoutCommandsTopic, rewards::kPayoutResultsTopic}) {
    if (auto s = kafka::EnsureTopic(kafka_options, topic, 3); !s.ok()) {
      spdlog::warn("cannot create topic {} yet: {}", topic, s.message());
    }
  }
  // Core banking's payout replies: deduplicated by event id with their effect (payouts.h).
  std::unique_ptr<kafka::Consumer> payout_results;
  std::thread payout_thread;
  absl::Cleanup stop_payout_results = [&] {
    if (payout_results) payout_results->Stop();
    if (payout_thread.joinable()) payout_thread.join();
  };
  if (cfg->consume_payout_results) {
    auto consumer = kafka::Consumer::Create({.client = kafka_options,
                                             .group_id = "rewards-payout-results",
                                             .topics = {rewards::kPayoutResultsTopic},
                                             .metrics_name = "rewards_payout_results"},
                                            producer->get());
    if (!consumer.ok()) return Fail(consumer.status());
    payout_results = *std::move(consumer);
    payout_thread = std::thread([&] {
      payout_results->Run([&](const kafka::IncomingMessage& m) { return payouts.HandleResult(m); });
    });
  }

  // Campaign budgets funded up to their published caps (campaign_budgets.h, decision 034), with
  // a connection of their own: a top-up holds it (with a lock) while the ledger commits on the
  // pool.
  std::unique_ptr<pg::Pool> budgets_pool;
  std::optional<rewards::CampaignBudgets> budgets;
  std::unique_ptr<kafka::Consumer> campaign_changes;
  std::thread budgets_thread;
  absl::Cleanup stop_campaign_changes = [&] {
    if (campaign_changes) campaign_changes->Stop();
    if (budgets_thread.joinable()) budgets_thread.join();
  };
  if (!cfg->campaign_changes_topic.empty()) {
    auto pool_of_budgets = pg::Pool::Connect({.dsn = cfg->pg_dsn, .size = 1});
    if (!pool_of_budgets.ok()) return Fail(pool_of_budgets.status());
    budgets_pool = *std::move(pool_of_budgets);
    budgets.emplace(*budgets_pool, ledger);
    if (auto s = kafka::EnsureTopic(kafka_options, cfg->campaign_changes_topic, 3); !s.ok()) {
      spdlog::warn("cannot create topic {} yet: {}", cfg->campaign_changes_topic, s.message());
    }
    auto consumer = kafka::Consumer::Create({.client = kafka_options,
                                             .group_id = cfg->campaign_budgets_group,
                                             .topics = {cfg->campaign_changes_topic},
                                             .metrics_name = "rewards_campaign_budgets"},
                                            producer->get());
    if (!consumer.ok()) return Fail(consumer.status());
    campaign_changes = *std::move(consumer);
    budgets_thread = std::thread([&] {
      campaign_changes->Run(
          [&budgets](const kafka::IncomingMessage& m) { return budgets->HandleChange(m); });
    });
  }

  // Third-party benefits: commands out through the outbox, supplier results in (fulfilment.h).
  for (const char* topic : {rewards::kFulfilmentCommandsTopic, rewards::kFulfilmentResultsTopic}) {
    if (auto s = kafka::EnsureTopic(kafka_options, topic, 3); !s.ok()) {
      spdlog::warn("cannot create topic {} yet: {}", topic, s.message());
    }
  }
  rewards::KafkaSupplierAdapter supplier(
      {.client = kafka_options, .dead_letters = producer->get()});
  rewards::Fulfilments fulfilments(
      **pool, benefits, supplier, SystemClock(),
      rewards::FulfilmentOptions{
          .backoff_base = absl::Seconds(cfg->fulfilment_backoff_base_s),
          .backoff_max = absl::Seconds(cfg->fulfilment_backoff_max_s),
          .max_attempts = static_cast<int>(cfg->fulfilment_max_attempts),
          .result_timeout = absl::Seconds(cfg->fulfilment_result_timeout_s)});
  if (cfg->consume_fulfilment_results) {
    if (auto s = supplier.Start([&fulfilments](const std::string& event_id,
                                               const rewards::pb::FulfilmentResult& result) {
          return fulfilments.HandleResult(event_id, result);
        });
        !s.ok()) {
      return Fail(s);
    }
  }

  Housekeeping housekeeping({
      {.name = "expiry",
       .interval = absl::Seconds(cfg->expiry_interval_s),
       .run =
           [&ledger] {
             auto done = ledger.RunExpiry({});
             if (!done.ok()) {
               spdlog::warn("points expiry failed (retried next interval): {}", done.status());
             } else if (done->lots_expired() > 0) {
               spdlog::info("points expiry: {} lots, {} points expired", done->lots_expired(),
                            done->points_expired());
             }
           }},
      {.name = "pending-sweep",
       .interval = absl::Seconds(cfg->pending_sweep_interval_s),
       .run =
           [&store] {
             constexpr int kChunk = 1000;
             int total = 0;
             for (int round = 0; round < 100; ++round) {
               auto voided = store.VoidTimedOutPending(absl::Now(), kChunk);
               if (!voided.ok()) {
                 spdlog::warn("voiding timed-out pending transfers failed: {}", voided.status());
                 break;
               }
               total += *voided;
               if (*voided < kChunk) break;
             }
             if (total > 0) spdlog::info("voided {} timed-out pending transfers", total);
           }},
      {.name = "coupon-expiry",
       .interval = absl::Seconds(cfg->coupon_expiry_interval_s),
       .run =
           [&benefits] {
             auto done = benefits.RunCouponExpiry(absl::Now(), 1000);
             if (!done.ok()) {
               spdlog::warn("coupon expiry failed (retried next interval): {}", done.status());
             } else if (done->coupons_expired() + done->locks_released() > 0) {
               spdlog::info("coupon expiry: {} coupons expired, {} locks released",
                            done->coupons_expired(), done->locks_released());
             }
           }},
      {.name = "budget-release",
       .interval = budgets ? absl::Seconds(cfg->budget_release_interval_s) : absl::ZeroDuration(),
       .run =
           [&budgets, &cfg] {
             auto done = budgets->ReleaseEnded(absl::Seconds(cfg->budget_release_after_s), 1000);
             if (!done.ok()) {
               spdlog::warn("releasing ended campaigns' budgets failed (retried next interval): {}",
                            done.status());
             }
           }},
      {.name = "fulfilment-scheduler",
       .interval = absl::Seconds(cfg->fulfilment_interval_s),
       .run =
           [&fulfilments] {
             auto done = fulfilments.RunDue(1000);
             if (!done.ok()) {
               spdlog::warn("fulfilment scheduler failed (retried next interval): {}",
                            done.status());
             } else if (*done > 0) {
               spdlog::info("fulfilment scheduler: {} fulfilments moved on", *done);
             }
           }},
      {.name = "benefits-repair",
       .interval = absl::Seconds(cfg->benefits_repair_interval_s),
       .run =
           [&benefits, &payouts] {
             auto coupons = benefits.RepairLedger(1000);
             auto paid = payouts.RepairLedger(1000);
             if (!coupons.ok() || !paid.ok()) {
               spdlog::warn("benefits repair failed (retried next interval)");
             } else if (*coupons + *paid > 0) {
               spdlog::info("benefits repair: {} coupons, {} payouts brought up to date", *coupons,
                            *paid);
             }
           }},
  });

  std::optional<WorkerPool> workers;
  workers.emplace("rewards", static_cast<int>(cfg->worker_threads),
                  static_cast<size_t>(cfg->worker_queue));
  auto service = rewards::NewLedgerGrpcService(ledger, *workers);
  auto benefits_service =
      rewards::NewBenefitsGrpcService(benefits, payouts, *workers, &fulfilments);
  // From here on every return, a server that cannot start or a signal, stops in this order: the
  // workers finish what they hold (their grants are answered by the batcher), the consumers and
  // timed jobs stop, what is still queued in the batcher is committed, then the relay publishes
  // until it is told to stop.
  absl::Cleanup shutdown = [&] {
    workers.reset();
    std::move(stop_payout_results).Invoke();
    // The budgets consumer funds through the batcher: stopped before it is drained and destroyed.
    std::move(stop_campaign_changes).Invoke();
    supplier.Stop();
    housekeeping.Stop();
    std::move(drain_batcher).Invoke();
    std::move(stop_relay).Invoke();
  };
  auto server = rpc::Server::Start({.service_name = "rewards", .address = cfg->grpc_address},
                                   {service.get(), benefits_service.get()});
  if (!server.ok()) return Fail(server.status());
  spdlog::info("rewards serving on {}", cfg->grpc_address);

  int sig = rpc::WaitForTerminationSignal();
  spdlog::info("rewards stopping on signal {}", sig);
  // Calls first, then the rest in the order of `shutdown`.
  (*server)->Shutdown(absl::Seconds(5));
  std::move(shutdown).Invoke();
  spdlog::info("rewards stopped");
  return 0;
}
