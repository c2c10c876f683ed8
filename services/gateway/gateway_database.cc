#include "services/gateway/gateway_database.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "libs/core/status.h"
#include "spdlog/spdlog.h"

namespace mkt::pg {
const MigrationSet& GatewayMigrationSet();  // embedded by mkt_embed_sql()
}  // namespace mkt::pg

namespace mkt::gateway {

const pg::MigrationSet& GatewayMigrations() { return pg::GatewayMigrationSet(); }

GatewayDatabase::GatewayDatabase(pg::PoolOptions options,
                                 std::function<absl::Status(pg::Pool&)> on_connect)
    : options_(std::move(options)), on_connect_(std::move(on_connect)) {}

absl::StatusOr<pg::Pool*> GatewayDatabase::Get() {
  pg::Pool* pool = nullptr;
  {
    absl::MutexLock lock(&mu_);
    if (pool_ != nullptr) return pool_.get();
    const absl::Time now = absl::Now();
    if (now - last_attempt_ < absl::Seconds(1)) {
      return Unavailable(
          absl::StrCat("the gateway database is unavailable: ", last_error_.message()));
    }
    last_attempt_ = now;
    absl::StatusOr<std::unique_ptr<pg::Pool>> connected = pg::Pool::Connect(options_);
    absl::Status status = connected.status();
    if (status.ok()) status = pg::ApplyMigrations(**connected, {&GatewayMigrations()});
    if (!status.ok()) {
      last_error_ = status;
      spdlog::warn("gateway database not ready: {}", status.ToString());
      return Unavailable(absl::StrCat("the gateway database is unavailable: ", status.message()));
    }
    pool_ = *std::move(connected);
    pool = pool_.get();
    spdlog::info("gateway database connected");
  }
  // Outside the lock: the start-up work uses the stores, which come back here for the pool.
  if (on_connect_) {
    if (absl::Status s = on_connect_(*pool); !s.ok()) {
      spdlog::error("gateway database start-up work failed: {}", s.ToString());
    }
  }
  return pool;
}

}  // namespace mkt::gateway
