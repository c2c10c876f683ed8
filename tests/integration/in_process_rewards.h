// The rewards service inside a test's process: its ledger and benefits over gRPC on an ephemeral
// port, on the test's own database. For integration tests of the services that call rewards
// (participation, batch grants, asset growth), which also reach into it directly (templates,
// wallets, the database).
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "libs/core/ids.h"
#include "libs/core/status.h"
#include "libs/core/worker_pool.h"
#include "libs/kafka/outbox.h"
#include "libs/pg/migrations.h"
#include "libs/pg/pool.h"
#include "libs/rpc/client.h"
#include "libs/rpc/server.h"
#include "services/rewards/batcher.h"
#include "services/rewards/benefits.h"
#include "services/rewards/benefits_grpc.h"
#include "services/rewards/ledger_grpc.h"
#include "services/rewards/ledger_service.h"
#include "services/rewards/payouts.h"
#include "services/rewards/pg_ledger_store.h"

namespace mkt::testing {

struct InProcessRewards {
  struct Options {
    int pool_size = 12;
    int workers = 16;
    int queue = 20000;
    std::string qr_key = "in-process-rewards-qr-key-of-32-bytes-or-more";
  };

  // Connects to `dsn`, applies the migrations and starts serving.
  absl::Status Start(const std::string& dsn, const Options& options) {
    MKT_ASSIGN_OR_RETURN(pool, pg::Pool::Connect({.dsn = dsn, .size = options.pool_size}));
    MKT_RETURN_IF_ERROR(
        pg::ApplyMigrations(*pool, {&kafka::OutboxMigrations(), &rewards::RewardsMigrations()}));
    store = std::make_unique<rewards::PgLedgerStore>(*pool, SystemClock());
    batcher = std::make_unique<rewards::GrantBatcher>(*store, rewards::BatcherOptions{});
    ledger = std::make_unique<rewards::LedgerService>(*batcher, *store, SystemClock());
    workers = std::make_unique<WorkerPool>("ledger-test", options.workers, options.queue);
    ledger_grpc = rewards::NewLedgerGrpcService(*ledger, *workers);
    benefits = std::make_unique<rewards::Benefits>(
        *pool, *store, SystemClock(), rewards::BenefitsOptions{.qr_key = options.qr_key});
    payouts = std::make_unique<rewards::Payouts>(*pool, *store, SystemClock());
    benefits_grpc = rewards::NewBenefitsGrpcService(*benefits, *payouts, *workers);
    MKT_ASSIGN_OR_RETURN(
        server, rpc::Server::Start(
                    {.service_name = "rewards_test", .address = "127.0.0.1:0", .access_log = false},
                    {ledger_grpc.get(), benefits_grpc.get()}));
    channel = rpc::Connect("127.0.0.1:" + std::to_string(server->port()));
    return absl::OkStatus();
  }

  // Stops serving, lets the workers finish what they hold, then commits what the batcher holds.
  void Stop() {
    if (server) server->Shutdown(absl::Seconds(1));
    workers.reset();
    batcher.reset();
  }

  ~InProcessRewards() { Stop(); }

  std::unique_ptr<pg::Pool> pool;
  std::unique_ptr<rewards::PgLedgerStore> store;
  std::unique_ptr<rewards::GrantBatcher> batcher;
  std::unique_ptr<rewards::LedgerService> ledger;
  std::unique_ptr<WorkerPool> workers;
  std::unique_ptr<grpc::Service> ledger_grpc;
  std::unique_ptr<rewards::Benefits> benefits;
  std::unique_ptr<rewards::Payouts> payouts;
  std::unique_ptr<grpc::Service> benefits_grpc;
  std::unique_ptr<rpc::Server> server;
  std::shared_ptr<grpc::Channel> channel;
};

}  // namespace mkt::testing
