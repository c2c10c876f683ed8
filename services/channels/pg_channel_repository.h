// ChannelRepository over PostgreSQL: the channels table and the outbox, in one transaction.
#pragma once

#include "libs/pg/migrations.h"
#include "libs/pg/pool.h"
#include "services/channels/channel_repository.h"

namespace mkt::channels {

// The schema migrations of the channels service (services/channels/migrations).
const pg::MigrationSet& ChannelsMigrations();

class PgChannelRepository final : public ChannelRepository {
 public:
  explicit PgChannelRepository(pg::Pool& pool) : pool_(pool) {}

  absl::StatusOr<ChannelRecord> Insert(const ChannelRecord& record,
                                       const std::string& request_id) override;
  absl::StatusOr<ChannelRecord> Get(const std::string& id) override;
  absl::StatusOr<std::vector<ChannelRecord>> List(const std::string& org_id,
                                                  const std::string& after_id, int limit) override;
  absl::StatusOr<ChannelRecord> Update(const std::string& id, Change change,
                                       const std::function<bool(ChannelRecord&)>& mutate,
                                       const std::string& request_id) override;

 private:
  pg::Pool& pool_;
};

}  // namespace mkt::channels
