#include "services/channels/pg_channel_repository.h"

#include <optional>

#include "libs/core/status.h"
#include "libs/kafka/outbox.h"

namespace mkt::pg {
const MigrationSet& ChannelsMigrationSet();  // embedded by mkt_embed_sql()
}  // namespace mkt::pg

namespace mkt::channels {
namespace {

namespace pb = ::marketing::channels::v1;

#define MKT_CHANNEL_COLUMNS                                           \
  "id, org_id, code, display_name, enabled, version, sealed_secret, " \
  "(extract(epoch from created_at) * 1000000)::bigint, "              \
  "(extract(epoch from updated_at) * 1000000)::bigint, "              \
  "(extract(epoch from secret_rotated_at) * 1000000)::bigint"

constexpr char kInsertChannel[] =
    "INSERT INTO channels (id, org_id, code, display_name, enabled, version, sealed_secret) "
    "VALUES ($1, $2, $3, $4, true, 1, $5) RETURNING " MKT_CHANNEL_COLUMNS;
constexpr char kSelectChannel[] = "SELECT " MKT_CHANNEL_COLUMNS " FROM channels WHERE id = $1";
constexpr char kSelectChannelForUpdate[] =
    "SELECT " MKT_CHANNEL_COLUMNS " FROM channels WHERE id = $1 FOR UPDATE";
constexpr char kListChannels[] = "SELECT " MKT_CHANNEL_COLUMNS
                                 " FROM channels WHERE ($1 = '' OR org_id = $1) AND id > $2 "
                                 "ORDER BY id LIMIT $3";
constexpr char kUpdateChannel[] =
    "UPDATE channels SET display_name = $2, enabled = $3, sealed_secret = $4, "
    "version = version + 1, updated_at = now(), "
    "secret_rotated_at = CASE WHEN sealed_secret <> $4 THEN now() ELSE secret_rotated_at END "
    "WHERE id = $1 RETURNING " MKT_CHANNEL_COLUMNS;

ChannelRecord FromRow(const pqxx::row& row) {
  ChannelRecord r;
  r.id = row[0].as<std::string>();
  r.org_id = row[1].as<std::string>();
  r.code = row[2].as<std::string>();
  r.display_name = row[3].as<std::string>();
  r.enabled = row[4].as<bool>();
  r.version = row[5].as<int64_t>();
  r.sealed_secret = row[6].as<std::string>();
  r.created_at = absl::FromUnixMicros(row[7].as<int64_t>());
  r.updated_at = absl::FromUnixMicros(row[8].as<int64_t>());
  r.secret_rotated_at = absl::FromUnixMicros(row[9].as<int64_t>());
  return r;
}

void AppendChangeFact(pqxx::work& tx, const ChannelRecord& record, Change change,
                      const std::string& request_id) {
  pb::ChannelChanged fact;
  fact.set_change(change);
  *fact.mutable_channel() = ToProto(record);
  kafka::AppendToOutbox(
      tx, kChannelChangesTopic, record.id,
      kafka::MakeEnvelope("channels.ChannelChanged", record.org_id, request_id, fact));
}

}  // namespace

const pg::MigrationSet& ChannelsMigrations() { return pg::ChannelsMigrationSet(); }

absl::StatusOr<ChannelRecord> PgChannelRepository::Insert(const ChannelRecord& record,
                                                          const std::string& request_id) {
  ChannelRecord stored;
  absl::Status s = pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    pqxx::result rows = tx.exec_params(kInsertChannel, record.id, record.org_id, record.code,
                                       record.display_name, record.sealed_secret);
    stored = FromRow(rows[0]);
    AppendChangeFact(tx, stored, pb::ChannelChanged::CREATED, request_id);
    return absl::OkStatus();
  });
  if (s.code() == absl::StatusCode::kAlreadyExists) {
    return Error(absl::StatusCode::kAlreadyExists, ::marketing::common::v1::ALREADY_EXISTS,
                 "org " + record.org_id + " already has a channel with code " + record.code,
                 "code");
  }
  MKT_RETURN_IF_ERROR(s);
  return stored;
}

absl::StatusOr<ChannelRecord> PgChannelRepository::Get(const std::string& id) {
  std::optional<ChannelRecord> found;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    pqxx::result rows = tx.exec_params(kSelectChannel, id);
    if (!rows.empty()) found = FromRow(rows[0]);
    return absl::OkStatus();
  }));
  if (!found) return NotFound("no channel with id \"" + id + "\"");
  return *std::move(found);
}

absl::StatusOr<std::vector<ChannelRecord>> PgChannelRepository::List(const std::string& org_id,
                                                                     const std::string& after_id,
                                                                     int limit) {
  std::vector<ChannelRecord> out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    out.clear();
    for (const auto& row : tx.exec_params(kListChannels, org_id, after_id, limit)) {
      out.push_back(FromRow(row));
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<ChannelRecord> PgChannelRepository::Update(
    const std::string& id, Change change, const std::function<bool(ChannelRecord&)>& mutate,
    const std::string& request_id) {
  ChannelRecord result;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    pqxx::result rows = tx.exec_params(kSelectChannelForUpdate, id);
    if (rows.empty()) return NotFound("no channel with id \"" + id + "\"");
    ChannelRecord record = FromRow(rows[0]);
    if (!mutate(record)) {
      result = std::move(record);
      return absl::OkStatus();
    }
    rows = tx.exec_params(kUpdateChannel, id, record.display_name, record.enabled,
                          record.sealed_secret);
    result = FromRow(rows[0]);
    AppendChangeFact(tx, result, change, request_id);
    return absl::OkStatus();
  }));
  return result;
}

}  // namespace mkt::channels
