#include "libs/pg/migrations.h"

#include <map>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "libs/auth/crypto.h"
#include "libs/core/status.h"
#include "spdlog/spdlog.h"

namespace mkt::pg {
namespace {

namespace pb = ::marketing::common::v1;

// Advisory locks are scoped to the current database, so one fixed key serialises the start-up
// of every replica of every component that shares a database, and nothing else.
constexpr int64_t kMigrationLockKey = 0x6d6b745f6d696772;  // "mkt_migr"

constexpr char kCreateTable[] = R"sql(
CREATE TABLE IF NOT EXISTS schema_migrations (
  component  text        NOT NULL,
  version    int         NOT NULL,
  name       text        NOT NULL,
  checksum   text        NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (component, version)
))sql";

constexpr char kSelectApplied[] =
    "SELECT component, version, name, checksum FROM schema_migrations";

constexpr char kInsertApplied[] =
    "INSERT INTO schema_migrations (component, version, name, checksum) VALUES ($1, $2, $3, $4)";

struct Applied {
  std::string name;
  std::string checksum;
};

// component → version → what the database recorded.
using AppliedMigrations = std::map<std::string, std::map<int, Applied>>;

absl::Status WithContext(const absl::Status& status, const std::string& context) {
  return Error(status.code(), ReasonOf(status), absl::StrCat(context, ": ", status.message()));
}

absl::Status CheckSets(const std::vector<const MigrationSet*>& sets) {
  std::set<std::string> components;
  for (const MigrationSet* set : sets) {
    if (set == nullptr || set->component.empty()) {
      return Internal("a migration set without a component was passed to ApplyMigrations");
    }
    if (!components.insert(set->component).second) {
      return Internal(absl::StrCat("migrations of ", set->component, " were passed twice"));
    }
    int previous = 0;
    for (const Migration& m : set->migrations) {
      if (m.version <= previous) {
        return Internal(absl::StrCat("migrations of ", set->component,
                                     " are not in strictly ascending order at V", m.version, " (",
                                     m.name, ")"));
      }
      previous = m.version;
    }
  }
  return absl::OkStatus();
}

// Refuses to go on when the database and this binary disagree about what was applied.
absl::Status CheckRecorded(const std::vector<const MigrationSet*>& sets,
                           const AppliedMigrations& applied) {
  for (const MigrationSet* set : sets) {
    auto recorded = applied.find(set->component);
    if (recorded == applied.end() || recorded->second.empty()) continue;
    const int known = set->migrations.empty() ? 0 : set->migrations.back().version;
    const int newest = recorded->second.rbegin()->first;
    if (newest > known) {
      return Error(absl::StatusCode::kFailedPrecondition, pb::CONFLICT,
                   absl::StrCat("database schema of ", set->component, " is at V", newest,
                                ", newer than this binary knows (V", known, ")"));
    }
    std::map<int, const Migration*> embedded;
    for (const Migration& m : set->migrations) embedded[m.version] = &m;
    for (const auto& [version, record] : recorded->second) {
      auto it = embedded.find(version);
      if (it == embedded.end()) {
        return Error(absl::StatusCode::kFailedPrecondition, pb::CONFLICT,
                     absl::StrCat("migration ", set->component, " V", version, " (", record.name,
                                  ") is recorded in the database but missing from this binary"));
      }
      const std::string checksum = MigrationChecksum(it->second->sql);
      if (checksum != record.checksum) {
        return Error(absl::StatusCode::kFailedPrecondition, pb::CONFLICT,
                     absl::StrCat("migration ", set->component, " V", version, " (",
                                  it->second->name, ") was changed after it was applied: checksum ",
                                  checksum, " differs from the recorded ", record.checksum));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ApplyUnderLock(pqxx::connection& conn, const std::vector<const MigrationSet*>& sets) {
  AppliedMigrations applied;
  try {
    pqxx::work tx(conn);
    tx.exec(kCreateTable);
    for (const auto& row : tx.exec(kSelectApplied)) {
      applied[row[0].as<std::string>()][row[1].as<int>()] =
          Applied{row[2].as<std::string>(), row[3].as<std::string>()};
    }
    tx.commit();
  } catch (const std::exception& e) {
    return WithContext(StatusFromException(e), "reading schema_migrations");
  }
  MKT_RETURN_IF_ERROR(CheckRecorded(sets, applied));

  for (const MigrationSet* set : sets) {
    const auto& recorded = applied[set->component];
    for (const Migration& m : set->migrations) {
      if (recorded.contains(m.version)) continue;
      try {
        pqxx::work tx(conn);
        tx.exec(m.sql);
        tx.exec_params(kInsertApplied, set->component, m.version, m.name, MigrationChecksum(m.sql));
        tx.commit();
      } catch (const std::exception& e) {
        return WithContext(StatusFromException(e),
                           absl::StrCat("applying migration ", set->component, " V", m.version,
                                        " (", m.name, ")"));
      }
      spdlog::info("applied migration {} V{} ({})", set->component, m.version, m.name);
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ApplyMigrations(Pool& pool, const std::vector<const MigrationSet*>& sets) {
  MKT_RETURN_IF_ERROR(CheckSets(sets));
  // Everything runs on this one connection: the lock is held by its session, and a pool of
  // size one must not deadlock waiting for a second connection.
  MKT_ASSIGN_OR_RETURN(Lease lease, pool.Acquire());
  const std::string key = std::to_string(kMigrationLockKey);
  try {
    pqxx::nontransaction(*lease).exec("SELECT pg_advisory_lock(" + key + ")");
  } catch (const std::exception& e) {
    return WithContext(StatusFromException(e), "taking the migration lock");
  }
  absl::Status status = ApplyUnderLock(*lease, sets);
  try {
    // A broken connection has released the lock with its session already.
    if (lease->is_open())
      pqxx::nontransaction(*lease).exec("SELECT pg_advisory_unlock(" + key + ")");
  } catch (const std::exception& e) {
    // Closing the session releases the lock; a pooled connection must never keep holding it.
    lease->disconnect();
    if (status.ok()) status = WithContext(StatusFromException(e), "releasing the migration lock");
  }
  return status;
}

std::string MigrationChecksum(const std::string& sql) { return auth::Sha256Hex(sql); }

}  // namespace mkt::pg
