// The gateway's own PostgreSQL database, connected on first use rather than at start-up: channel
// authentication and health do not need it, so a gateway whose database is briefly unreachable
// still serves what it can and answers 503 for the rest. The first successful connection applies
// the migrations and runs the start-up work (bootstrap admin); failed connection attempts are
// retried at most once per second.
#pragma once

#include <functional>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "libs/pg/migrations.h"
#include "libs/pg/pool.h"

namespace mkt::gateway {

// The gateway's schema (migrations/V*.sql, component "gateway").
const pg::MigrationSet& GatewayMigrations();

class GatewayDatabase {
 public:
  // `on_connect` runs once, after the migrations, on the first successful connection (outside
  // the lock, so it may use the database through Get); a failure is logged, not retried.
  GatewayDatabase(pg::PoolOptions options, std::function<absl::Status(pg::Pool&)> on_connect);

  // Returns the pool, connecting first if needed; UNAVAILABLE (DEPENDENCY_UNAVAILABLE) when the
  // database cannot be reached now.
  absl::StatusOr<pg::Pool*> Get();

  // A function for stores that take their pool lazily.
  std::function<absl::StatusOr<pg::Pool*>()> Getter() {
    return [this] { return Get(); };
  }

 private:
  const pg::PoolOptions options_;
  std::function<absl::Status(pg::Pool&)> on_connect_;
  absl::Mutex mu_;
  std::unique_ptr<pg::Pool> pool_ ABSL_GUARDED_BY(mu_);
  absl::Time last_attempt_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Status last_error_ ABSL_GUARDED_BY(mu_);
};

}  // namespace mkt::gateway
