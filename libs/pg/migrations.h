// Versioned schema migrations: numbered SQL files per component (V001__what.sql), embedded in the
// binary by mkt_embed_sql(), applied once each, recorded with a checksum in schema_migrations.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "libs/pg/pool.h"

namespace mkt::pg {

struct Migration {
  int version;
  std::string name;  // file name, e.g. "V001__channels.sql"
  std::string sql;
};

// The migrations of one component (a service, or a library that owns tables like the outbox).
struct MigrationSet {
  std::string component;
  std::vector<Migration> migrations;  // ascending versions
};

// Applies, under a database-wide advisory lock (so replicas starting together take turns), each
// migration of `sets` not yet recorded, one transaction per migration, in order. Fails without
// applying anything further if a recorded migration's checksum differs from the embedded file
// (someone edited an applied migration), or if the database has a version this binary lacks.
absl::Status ApplyMigrations(Pool& pool, const std::vector<const MigrationSet*>& sets);

// Returns the SHA-256 hex checksum recorded for a migration's SQL.
std::string MigrationChecksum(const std::string& sql);

}  // namespace mkt::pg
