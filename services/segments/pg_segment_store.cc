#include "services/segments/pg_segment_store.h"

#include <algorithm>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "libs/core/status.h"
#include "libs/kafka/outbox.h"
#include "libs/pg/arrays.h"
#include "libs/tenancy/tenancy.h"

namespace mkt::pg {
const MigrationSet& SegmentsMigrationSet();  // embedded by mkt_embed_sql()
}  // namespace mkt::pg

namespace mkt::segments {

const pg::MigrationSet& SegmentsMigrations() { return pg::SegmentsMigrationSet(); }

namespace {

#define MKT_TAG_COLUMNS                                                                 \
  "name, org_id, type, description, source, array_to_string(allowed_values, chr(31)), " \
  "multi_valued, version, (extract(epoch from updated_at) * 1000000)::bigint"

constexpr char kInsertTag[] =
    "INSERT INTO tags (name, org_id, type, description, source, allowed_values, multi_valued) "
    "VALUES ($1, $2, $3, $4, $5, $6::text[], $7) RETURNING " MKT_TAG_COLUMNS;
constexpr char kSelectTag[] = "SELECT " MKT_TAG_COLUMNS " FROM tags WHERE name = $1";
constexpr char kSelectTagForUpdate[] =
    "SELECT " MKT_TAG_COLUMNS " FROM tags WHERE name = $1 FOR UPDATE";
constexpr char kSelectTags[] = "SELECT " MKT_TAG_COLUMNS " FROM tags ORDER BY name";
constexpr char kUpdateTag[] =
    "UPDATE tags SET description = $2, source = $3, allowed_values = $4::text[], "
    "version = version + 1, updated_at = now() WHERE name = $1 RETURNING " MKT_TAG_COLUMNS;

constexpr char kUpsertProfileCustomer[] =
    "INSERT INTO customers (customer_id, org_id, profile_version) VALUES ($1, $2, $3) "
    "ON CONFLICT (customer_id) DO UPDATE SET org_id = EXCLUDED.org_id, "
    "profile_version = GREATEST(customers.profile_version, EXCLUDED.profile_version), "
    "revision = customers.revision + 1, updated_at = now() "
    "WHERE EXCLUDED.profile_version = 0 OR customers.profile_version <= EXCLUDED.profile_version "
    "RETURNING dense_id";
// Returns the customers it created (the others existed).
constexpr char kInsertCustomers[] =
    "INSERT INTO customers (customer_id, org_id) SELECT unnest($1::text[]), $2 "
    "ON CONFLICT (customer_id) DO NOTHING RETURNING dense_id";
constexpr char kSelectCustomerIds[] =
    "SELECT dense_id, customer_id, org_id FROM customers WHERE customer_id = ANY($1::text[])";
// The same, locking the rows (in dense id order, as every writer locks them): the home orgs read
// stay true until the transaction ends.
constexpr char kLockCustomerIds[] =
    "SELECT dense_id, customer_id, org_id FROM customers WHERE customer_id = ANY($1::text[]) "
    "ORDER BY dense_id FOR UPDATE";
// Locks the rows in dense id order (so two writers of overlapping customers do not deadlock, and
// before any tag value, as the profile upsert does) and bumps their revisions.
constexpr char kBumpRevisions[] =
    "UPDATE customers SET revision = revision + 1, updated_at = now() WHERE dense_id IN "
    "(SELECT dense_id FROM customers WHERE dense_id = ANY($1::int[]) ORDER BY dense_id "
    "FOR UPDATE)";
// The xid column defaults to this transaction's id.
constexpr char kLogChanges[] =
    "INSERT INTO tag_changes (dense_id) SELECT DISTINCT unnest($1::int[]) "
    "ON CONFLICT DO NOTHING";
constexpr char kUpsertValues[] =
    "INSERT INTO tag_values (dense_id, tag, value) "
    "SELECT * FROM unnest($1::int[], $2::text[], $3::text[]) "
    "ON CONFLICT (dense_id, tag) DO UPDATE SET value = EXCLUDED.value, updated_at = now()";
constexpr char kDeleteValues[] =
    "DELETE FROM tag_values t USING unnest($1::int[], $2::text[]) AS d(dense_id, tag) "
    "WHERE t.dense_id = d.dense_id AND t.tag = d.tag";
constexpr char kSelectStates[] =
    "SELECT c.dense_id, c.customer_id, c.org_id, c.revision, v.tag, v.value FROM customers c "
    "LEFT JOIN tag_values v USING (dense_id) WHERE c.dense_id = ANY($1::int[]) "
    "ORDER BY c.dense_id, v.tag";
constexpr char kSelectStateByCustomer[] =
    "SELECT c.dense_id, c.customer_id, c.org_id, c.revision, v.tag, v.value FROM customers c "
    "LEFT JOIN tag_values v USING (dense_id) WHERE c.customer_id = $1 ORDER BY v.tag";

// Catching up (decision 037). In one repeatable-read snapshot: its xmin, how far changes were
// pruned and the dictionary's version, then the changed customers below that xmin.
constexpr char kSnapshotXmin[] = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text";
constexpr char kChangesHead[] =
    "SELECT pg_snapshot_xmin(pg_current_snapshot())::text, "
    "(SELECT pruned_below::text FROM tag_changes_horizon), "
    "(SELECT coalesce(sum(version), 0) FROM tags)";
constexpr char kSelectChanges[] =
    "SELECT DISTINCT dense_id FROM tag_changes WHERE xid >= $1::xid8 AND xid < $2::xid8 "
    "ORDER BY dense_id";
constexpr char kSelectAllDenseIds[] = "SELECT dense_id FROM customers ORDER BY dense_id";
constexpr char kRaiseHorizon[] =
    "UPDATE tag_changes_horizon SET pruned_below = GREATEST(pruned_below, $1::xid8)";
constexpr char kPruneChanges[] = "DELETE FROM tag_changes WHERE xid < $1::xid8";

#define MKT_SEGMENT_COLUMNS                                                      \
  "s.id, s.org_id, v.name, v.description, v.kind, v.version, s.latest_version, " \
  "s.archived, v.definition, v.list_members, v.list_size, v.created_by, "        \
  "(extract(epoch from v.created_at) * 1000000)::bigint"

constexpr char kInsertSegment[] =
    "INSERT INTO segments (id, org_id, latest_version) VALUES ($1, $2, 1)";
constexpr char kInsertSegmentVersion[] =
    "INSERT INTO segment_versions (segment_id, version, name, description, kind, definition, "
    "list_members, list_size, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
constexpr char kLockSegment[] =
    "SELECT latest_version, archived FROM segments WHERE id = $1 FOR UPDATE";
constexpr char kBumpSegment[] = "UPDATE segments SET latest_version = $2 WHERE id = $1";
constexpr char kArchiveSegment[] = "UPDATE segments SET archived = true WHERE id = $1";
constexpr char kSelectSegment[] =
    "SELECT " MKT_SEGMENT_COLUMNS
    " FROM segments s JOIN segment_versions v ON v.segment_id = s.id "
    "AND v.version = CASE WHEN $2 = 0 THEN s.latest_version ELSE $2 END WHERE s.id = $1";
// For a composition stored before operands were pinned on write (an operand at version 0): the
// operand's version that was current when this version was written (the newest one created no
// later than it). NULL when there is none (the operand then stays at 0, its latest version).
constexpr char kOperandVersionAt[] =
    "SELECT max(o.version) FROM segment_versions o, segment_versions v WHERE o.segment_id = $1 "
    "AND v.segment_id = $2 AND v.version = $3 AND o.created_at <= v.created_at";
constexpr char kListSegments[] =
    "SELECT " MKT_SEGMENT_COLUMNS
    " FROM segments s JOIN segment_versions v ON v.segment_id = s.id "
    "AND v.version = s.latest_version WHERE s.id > $2 AND ($1 = 'fed' OR s.org_id = 'fed' OR "
    "s.org_id = $1 OR s.org_id LIKE $1 || '.%') ORDER BY s.id LIMIT $3";

constexpr char kSelectCompositions[] =
    "SELECT v.segment_id, v.version, s.org_id, s.latest_version, v.definition, "
    "(extract(epoch from v.created_at) * 1000000)::bigint "
    "FROM segment_versions v JOIN segments s ON s.id = v.segment_id WHERE v.kind = $1";
// When every version was written, for pinning the operands of compositions stored unpinned.
constexpr char kSelectVersionTimes[] =
    "SELECT segment_id, version, (extract(epoch from created_at) * 1000000)::bigint "
    "FROM segment_versions ORDER BY segment_id, version";
// Taken (for the transaction) by every write of a composition, so two concurrent writes cannot
// each pass the nesting check and together nest too deeply. The key is "segcomp" in ASCII.
constexpr char kLockCompositions[] = "SELECT pg_advisory_xact_lock(32481117046009200)";

constexpr char kInsertSnapshot[] =
    "INSERT INTO snapshots (id, org_id, segment_id, version, purpose, count, members) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7)";
constexpr char kSelectSnapshot[] =
    "SELECT id, org_id, segment_id, version, purpose, count, members, "
    "(extract(epoch from created_at) * 1000000)::bigint FROM snapshots WHERE id = $1";

// Returns the dense id and whether the row was created here (xmax = 0 on a fresh insert).
constexpr char kEnsureCustomer[] =
    "INSERT INTO customers (customer_id, org_id) VALUES ($1, $2) "
    "ON CONFLICT (customer_id) DO UPDATE SET updated_at = customers.updated_at "
    "RETURNING dense_id, xmax = 0";
constexpr char kAddTransaction[] =
    "INSERT INTO rfm_aggregates (dense_id, txn_count, amount_fen, last_txn_day) "
    "VALUES ($1, 1, $2, $3) ON CONFLICT (dense_id) DO UPDATE SET "
    "txn_count = rfm_aggregates.txn_count + 1, "
    // Held at the bigint maximum rather than failing (22003) and retrying forever.
    "amount_fen = LEAST(rfm_aggregates.amount_fen::numeric + EXCLUDED.amount_fen, "
    "9223372036854775807)::bigint, "
    "last_txn_day = GREATEST(rfm_aggregates.last_txn_day, EXCLUDED.last_txn_day), "
    "updated_at = now()";
constexpr char kSubtractReversal[] =
    "UPDATE rfm_aggregates a SET amount_fen = GREATEST(a.amount_fen - $2, 0), updated_at = now() "
    "FROM customers c WHERE c.customer_id = $1 AND a.dense_id = c.dense_id";
constexpr char kSelectAggregates[] =
    "SELECT dense_id, txn_count, amount_fen, last_txn_day FROM rfm_aggregates";

google::protobuf::Timestamp Timestamp(int64_t micros) {
  google::protobuf::Timestamp ts;
  ts.set_seconds(micros / 1000000);
  ts.set_nanos(static_cast<int32_t>(micros % 1000000) * 1000);
  return ts;
}

pb::Tag TagFromRow(const pqxx::row& row) {
  pb::Tag tag;
  tag.set_name(row[0].as<std::string>());
  tag.set_org_id(row[1].as<std::string>());
  tag.set_type(static_cast<pb::TagType>(row[2].as<int>()));
  tag.set_description(row[3].as<std::string>());
  tag.set_source(row[4].as<std::string>());
  for (absl::string_view v : absl::StrSplit(row[5].as<std::string>(), '\x1f', absl::SkipEmpty())) {
    tag.add_allowed_values(std::string(v));
  }
  tag.set_multi_valued(row[6].as<bool>());
  tag.set_version(row[7].as<int64_t>());
  *tag.mutable_updated_at() = Timestamp(row[8].as<int64_t>());
  return tag;
}

SegmentVersion SegmentFromRow(const pqxx::row& row) {
  SegmentVersion s;
  s.id = row[0].as<std::string>();
  s.org_id = row[1].as<std::string>();
  s.name = row[2].as<std::string>();
  s.description = row[3].as<std::string>();
  s.kind = static_cast<pb::SegmentKind>(row[4].as<int>());
  s.version = row[5].as<int64_t>();
  s.latest_version = row[6].as<int64_t>();
  s.archived = row[7].as<bool>();
  s.definition.ParseFromString(pqxx::binarystring(row[8]).str());
  if (s.kind == pb::SEGMENT_KIND_LIST) {
    std::string bytes = pqxx::binarystring(row[9]).str();
    s.list_members = std::make_shared<const Roaring>(Roaring::readSafe(bytes.data(), bytes.size()));
  }
  s.list_size = row[10].as<int64_t>();
  s.created_by = row[11].as<std::string>();
  s.created_at = absl::FromUnixMicros(row[12].as<int64_t>());
  return s;
}

// Collects rows of kSelectStates / kSelectStateByCustomer into per-customer states.
std::vector<CustomerState> StatesFromResult(const pqxx::result& result) {
  std::vector<CustomerState> states;
  for (const pqxx::row& row : result) {
    const uint32_t dense_id = row[0].as<uint32_t>();
    if (states.empty() || states.back().dense_id != dense_id) {
      states.push_back({.dense_id = dense_id,
                        .customer_id = row[1].as<std::string>(),
                        .org_id = row[2].as<std::string>(),
                        .revision = row[3].as<int64_t>()});
    }
    if (!row[4].is_null()) {
      states.back().values.emplace_back(row[4].as<std::string>(), row[5].as<std::string>());
    }
  }
  return states;
}

template <class Ids>
std::vector<CustomerState> ReadStatesInTx(pqxx::work& tx, const Ids& dense_ids) {
  return StatesFromResult(tx.exec_params(kSelectStates, pg::IntArrayLiteral(dense_ids)));
}

// Logs `dense_ids` as changed by this transaction, for the other replicas.
template <class Ids>
void LogChanges(pqxx::work& tx, const Ids& dense_ids) {
  if (dense_ids.empty()) return;
  tx.exec_params(kLogChanges, pg::IntArrayLiteral(dense_ids));
}

// Marks `dense_ids` as changed by this transaction before their values are written: bumps their
// revisions (locking their rows, in dense id order) and logs them.
template <class Ids>
void MarkChanged(pqxx::work& tx, const Ids& dense_ids) {
  if (dense_ids.empty()) return;
  tx.exec_params(kBumpRevisions, pg::IntArrayLiteral(dense_ids));
  LogChanges(tx, dense_ids);
}

// The dense ids a statement returned in its first column.
std::vector<uint32_t> DenseIds(const pqxx::result& result) {
  std::vector<uint32_t> ids;
  ids.reserve(result.size());
  for (const pqxx::row& row : result) ids.push_back(row[0].as<uint32_t>());
  return ids;
}

// Upserts and deletes values with one statement each.
void WriteValuesInTx(pqxx::work& tx, const std::vector<uint32_t>& set_ids,
                     const std::vector<std::string>& set_tags,
                     const std::vector<std::string>& set_values,
                     const std::vector<uint32_t>& del_ids,
                     const std::vector<std::string>& del_tags) {
  if (!set_ids.empty()) {
    tx.exec_params(kUpsertValues, pg::IntArrayLiteral(set_ids), pg::TextArrayLiteral(set_tags),
                   pg::TextArrayLiteral(set_values));
  }
  if (!del_ids.empty()) {
    tx.exec_params(kDeleteValues, pg::IntArrayLiteral(del_ids), pg::TextArrayLiteral(del_tags));
  }
}

std::string AllowedLiteral(const pb::Tag& tag) {
  return pg::TextArrayLiteral(tag.allowed_values());
}

// The portable CRoaring serialization of a list segment's members; empty for other kinds.
std::string ListBytes(const SegmentVersion& s) {
  if (s.list_members == nullptr) return {};
  std::string bytes(s.list_members->getSizeInBytes(true), '\0');
  s.list_members->write(bytes.data(), true);
  return bytes;
}

void InsertVersion(pqxx::work& tx, const SegmentVersion& s) {
  tx.exec_params(kInsertSegmentVersion, s.id, s.version, s.name, s.description,
                 static_cast<int>(s.kind), pqxx::binarystring(s.definition.SerializeAsString()),
                 pqxx::binarystring(ListBytes(s)), s.list_size, s.created_by);
}

StoredCompositions CompositionsIn(pqxx::work& tx) {
  StoredCompositions out;
  std::vector<int64_t> written_at;  // of out.versions[i]
  bool unpinned = false;
  for (const pqxx::row& row :
       tx.exec_params(kSelectCompositions, static_cast<int>(pb::SEGMENT_KIND_COMPOSED))) {
    pb::SegmentDefinition definition;
    definition.ParseFromString(pqxx::binarystring(row[4]).str());
    out.versions.push_back({.id = row[0].as<std::string>(),
                            .version = row[1].as<int64_t>(),
                            .org_id = row[2].as<std::string>(),
                            .composed = definition.composed()});
    out.latest[out.versions.back().id] = row[3].as<int64_t>();
    written_at.push_back(row[5].as<int64_t>());
    for (const auto& op : definition.composed().operands()) unpinned |= op.version() == 0;
  }
  if (!unpinned) return out;
  // Versions stored before operands were pinned on write: an operand at version 0 means the
  // version current when the composition was written, as GetSegment reads it.
  std::map<std::string, std::vector<std::pair<int64_t, int64_t>>> times;  // id -> (micros, version)
  for (const pqxx::row& row : tx.exec(kSelectVersionTimes)) {
    times[row[0].as<std::string>()].emplace_back(row[2].as<int64_t>(), row[1].as<int64_t>());
  }
  for (size_t i = 0; i < out.versions.size(); ++i) {
    for (pb::SegmentRef& ref : *out.versions[i].composed.mutable_operands()) {
      if (ref.version() != 0) continue;
      auto it = times.find(ref.segment_id());
      if (it == times.end()) continue;
      int64_t version = 0;
      for (const auto& [micros, v] : it->second) {
        if (micros <= written_at[i]) version = std::max(version, v);
      }
      if (version != 0) ref.set_version(version);
    }
  }
  return out;
}

// Serialises writes of compositions and runs `check` on the stored ones (no-op without check).
absl::Status CheckCompositions(pqxx::work& tx, const CompositionCheck& check) {
  if (!check) return absl::OkStatus();
  tx.exec(kLockCompositions);
  return check(CompositionsIn(tx));
}

}  // namespace

// ---- Tags --------------------------------------------------------------------------------------

absl::StatusOr<pb::Tag> PgSegmentStore::InsertTag(const pb::Tag& tag) {
  pb::Tag out;
  absl::Status s = pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    out = TagFromRow(tx.exec_params1(kInsertTag, tag.name(), tag.org_id(),
                                     static_cast<int>(tag.type()), tag.description(), tag.source(),
                                     AllowedLiteral(tag), tag.multi_valued()));
    return absl::OkStatus();
  });
  if (absl::IsAlreadyExists(s)) {
    return Error(absl::StatusCode::kAlreadyExists, marketing::common::v1::ALREADY_EXISTS,
                 absl::StrCat("a tag named ", tag.name(), " exists"), "tag.name");
  }
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<pb::Tag> PgSegmentStore::GetTag(const std::string& name) {
  std::optional<pb::Tag> out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    pqxx::result r = tx.exec_params(kSelectTag, name);
    if (!r.empty()) out = TagFromRow(r[0]);
    return absl::OkStatus();
  }));
  if (!out) return NotFound(absl::StrCat("no tag named ", name));
  return *out;
}

absl::StatusOr<std::vector<pb::Tag>> PgSegmentStore::ListTags() {
  std::vector<pb::Tag> out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    out.clear();
    for (const pqxx::row& row : tx.exec(kSelectTags)) out.push_back(TagFromRow(row));
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<pb::Tag> PgSegmentStore::UpdateTag(
    const std::string& name, const std::function<absl::Status(pb::Tag&)>& mutate) {
  pb::Tag out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    pqxx::result r = tx.exec_params(kSelectTagForUpdate, name);
    if (r.empty()) return NotFound(absl::StrCat("no tag named ", name));
    pb::Tag tag = TagFromRow(r[0]);
    MKT_RETURN_IF_ERROR(mutate(tag));
    out = TagFromRow(
        tx.exec_params1(kUpdateTag, name, tag.description(), tag.source(), AllowedLiteral(tag)));
    return absl::OkStatus();
  }));
  return out;
}

// ---- Customers and values ----------------------------------------------------------------------

absl::StatusOr<uint64_t> PgSegmentStore::LoadIndex(
    const std::function<void(uint32_t, std::string_view, std::string_view, int64_t)>& on_customer,
    const std::function<void(uint32_t, std::string_view, std::string_view)>& on_value) {
  // Read-only and possibly long: no retry loop around callbacks that already ran.
  absl::StatusOr<pg::Lease> lease = pool_.Acquire();
  if (!lease.ok()) return lease.status();
  try {
    pqxx::work tx(**lease);
    // One snapshot for the customers, their values and the xmin catching up starts from.
    tx.exec("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY");
    const uint64_t xmin = tx.exec1(kSnapshotXmin)[0].as<uint64_t>();
    {
      // Every column, in table order (libpqxx 6.4's stream_from with a column list leaves a
      // member uninitialised): dense_id, customer_id, org_id, profile_version, updated_at,
      // revision (V003).
      pqxx::stream_from customers(tx, "customers");
      std::tuple<int64_t, std::string, std::string, int64_t, std::string, int64_t> row;
      while (customers >> row) {
        on_customer(static_cast<uint32_t>(std::get<0>(row)), std::get<1>(row), std::get<2>(row),
                    std::get<5>(row));
      }
      customers.complete();
    }
    {
      pqxx::stream_from values(tx, "tag_values");
      std::tuple<int64_t, std::string, std::string, std::string> row;
      while (values >> row) {
        on_value(static_cast<uint32_t>(std::get<0>(row)), std::get<1>(row), std::get<2>(row));
      }
      values.complete();
    }
    tx.commit();
    return xmin;
  } catch (const std::exception& e) {
    return pg::StatusFromException(e);
  }
}

absl::StatusOr<CustomerState> PgSegmentStore::ApplyProfile(const ProfileChange& change,
                                                           std::string_view consumer) {
  std::vector<CustomerState> states;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    if (kafka::MarkProcessed(tx, consumer, change.event_id)) {
      pqxx::result r =
          tx.exec_params(kUpsertProfileCustomer, change.customer_id, change.org_id, change.version);
      if (!r.empty()) {  // else an older version than the one stored: nothing to apply
        const uint32_t dense_id = r[0][0].as<uint32_t>();
        // The upsert bumped the revision under the row's lock (or created the row).
        LogChanges(tx, std::vector<uint32_t>{dense_id});
        std::vector<uint32_t> set_ids(change.set.size(), dense_id);
        std::vector<std::string> set_tags, set_values;
        for (const auto& [tag, value] : change.set) {
          set_tags.push_back(tag);
          set_values.push_back(value);
        }
        std::vector<uint32_t> del_ids(change.removed.size(), dense_id);
        WriteValuesInTx(tx, set_ids, set_tags, set_values, del_ids, change.removed);
      }
    }
    states = StatesFromResult(tx.exec_params(kSelectStateByCustomer, change.customer_id));
    return absl::OkStatus();
  }));
  if (states.empty()) return NotFound("customer not stored");
  return states.front();
}

absl::StatusOr<std::vector<PgSegmentStore::EnsuredCustomer>> PgSegmentStore::EnsureCustomers(
    const std::vector<std::string>& customer_ids, const std::string& org_id) {
  std::vector<EnsuredCustomer> out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    const std::string ids = pg::TextArrayLiteral(customer_ids);
    // New customers (no values yet) still change other replicas' answers: lists name them, and
    // a `not` rule counts every customer.
    LogChanges(tx, DenseIds(tx.exec_params(kInsertCustomers, ids, org_id)));
    std::map<std::string, EnsuredCustomer> stored;
    for (const pqxx::row& row : tx.exec_params(kSelectCustomerIds, ids)) {
      stored[row[1].as<std::string>()] = {.dense_id = row[0].as<uint32_t>(),
                                          .org_id = row[2].as<std::string>()};
    }
    out.clear();
    for (const auto& id : customer_ids) out.push_back(stored.at(id));
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<ImportResult> PgSegmentStore::ImportRows(const std::string& org_id,
                                                        const std::vector<ImportRow>& rows) {
  ImportResult out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    out = ImportResult();
    std::vector<std::string> customer_ids;
    for (const auto& row : rows) customer_ids.push_back(row.customer_id);
    const std::string ids = pg::TextArrayLiteral(customer_ids);
    tx.exec_params(kInsertCustomers, ids, org_id);
    // Home orgs are read under the rows' locks: one another bank created after this transaction
    // began (the insert above waited for it and skipped it) or moves to itself meanwhile is seen
    // as that bank's, and stays so until the values are written.
    std::map<std::string, uint32_t> dense;
    std::map<std::string, std::string> foreign;  // customer id -> home org
    for (const pqxx::row& r : tx.exec_params(kLockCustomerIds, ids)) {
      std::string home = r[2].as<std::string>();
      if (tenancy::Covers(org_id, home)) {
        dense[r[1].as<std::string>()] = r[0].as<uint32_t>();
      } else {
        foreign[r[1].as<std::string>()] = std::move(home);
      }
    }
    // A later row for the same customer and tag wins; one statement may touch a key once.
    std::map<std::pair<uint32_t, std::string>, std::optional<std::string>> cells;
    for (size_t i = 0; i < rows.size(); ++i) {
      auto it = dense.find(rows[i].customer_id);
      if (it == dense.end()) {
        out.foreign.emplace_back(i, foreign.at(rows[i].customer_id));
        continue;
      }
      for (const auto& [tag, value] : rows[i].cells) cells[{it->second, tag}] = value;
    }
    std::set<uint32_t> touched;
    for (const auto& [id, d] : dense) touched.insert(d);
    MarkChanged(tx, touched);
    std::vector<uint32_t> set_ids, del_ids;
    std::vector<std::string> set_tags, set_values, del_tags;
    for (const auto& [key, value] : cells) {
      if (value) {
        set_ids.push_back(key.first);
        set_tags.push_back(key.second);
        set_values.push_back(*value);
      } else {
        del_ids.push_back(key.first);
        del_tags.push_back(key.second);
      }
    }
    WriteValuesInTx(tx, set_ids, set_tags, set_values, del_ids, del_tags);
    out.states = ReadStatesInTx(tx, touched);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<CustomerState>> PgSegmentStore::WriteValues(
    const std::vector<std::tuple<uint32_t, std::string, std::string>>& values) {
  std::vector<CustomerState> states;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    std::vector<uint32_t> ids;
    std::vector<std::string> tags, texts;
    std::set<uint32_t> touched;
    for (const auto& [id, tag, value] : values) {
      ids.push_back(id);
      tags.push_back(tag);
      texts.push_back(value);
      touched.insert(id);
    }
    MarkChanged(tx, touched);
    WriteValuesInTx(tx, ids, tags, texts, {}, {});
    states = ReadStatesInTx(tx, touched);
    return absl::OkStatus();
  }));
  return states;
}

// ---- Catching up with other replicas ----------------------------------------------------------

absl::StatusOr<ChangedCustomers> PgSegmentStore::ReadChanges(uint64_t from) {
  ChangedCustomers out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(
      pool_,
      [&](pqxx::work& tx) {
        out = ChangedCustomers();
        // The head and the rows from one snapshot: a prune that commits after it deleted nothing
        // this snapshot sees, and one that committed before it moved the horizon it reads.
        const pqxx::row head = tx.exec1(kChangesHead);
        out.next = head[0].as<uint64_t>();
        out.missed = head[1].as<uint64_t>() > from;
        out.tags_version = head[2].as<int64_t>();
        out.dense_ids =
            DenseIds(out.missed ? tx.exec(kSelectAllDenseIds)
                                : tx.exec_params(kSelectChanges, std::to_string(from),
                                                 std::to_string(std::max(from, out.next))));
        return absl::OkStatus();
      },
      {.isolation = pg::Isolation::kRepeatableRead}));
  return out;
}

absl::StatusOr<std::vector<CustomerState>> PgSegmentStore::ReadStates(
    const std::vector<uint32_t>& dense_ids) {
  std::vector<CustomerState> states;
  if (dense_ids.empty()) return states;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    states = ReadStatesInTx(tx, dense_ids);
    return absl::OkStatus();
  }));
  return states;
}

absl::StatusOr<uint64_t> PgSegmentStore::CurrentXmin() {
  uint64_t xmin = 0;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    xmin = tx.exec1(kSnapshotXmin)[0].as<uint64_t>();
    return absl::OkStatus();
  }));
  return xmin;
}

absl::StatusOr<int64_t> PgSegmentStore::PruneChanges(uint64_t below) {
  int64_t deleted = 0;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    // The horizon first: a reader that has not reached `below` learns it missed rows.
    tx.exec_params(kRaiseHorizon, std::to_string(below));
    deleted = tx.exec_params(kPruneChanges, std::to_string(below)).affected_rows();
    return absl::OkStatus();
  }));
  return deleted;
}

// ---- Segments ----------------------------------------------------------------------------------

absl::StatusOr<SegmentVersion> PgSegmentStore::CreateSegment(const SegmentVersion& segment,
                                                             const CompositionCheck& check) {
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    MKT_RETURN_IF_ERROR(CheckCompositions(tx, check));
    tx.exec_params(kInsertSegment, segment.id, segment.org_id);
    SegmentVersion v = segment;
    v.version = 1;
    InsertVersion(tx, v);
    return absl::OkStatus();
  }));
  return GetSegment(segment.id, 1);
}

absl::StatusOr<SegmentVersion> PgSegmentStore::AddSegmentVersion(const SegmentVersion& segment,
                                                                 int64_t expected_version,
                                                                 const CompositionCheck& check) {
  int64_t version = 0;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    // The compositions' lock before the segment's row, in every writer.
    if (check) tx.exec(kLockCompositions);
    pqxx::result r = tx.exec_params(kLockSegment, segment.id);
    if (r.empty()) return NotFound(absl::StrCat("no segment ", segment.id));
    const int64_t latest = r[0][0].as<int64_t>();
    if (r[0][1].as<bool>()) {
      return Error(absl::StatusCode::kFailedPrecondition, marketing::common::v1::CONFLICT,
                   "the segment is archived");
    }
    if (expected_version != 0 && expected_version != latest) {
      return Error(absl::StatusCode::kAborted, marketing::common::v1::CONFLICT,
                   absl::StrCat("the segment is at version ", latest, ", not ", expected_version),
                   "expected_version");
    }
    if (check) MKT_RETURN_IF_ERROR(check(CompositionsIn(tx)));
    version = latest + 1;
    SegmentVersion v = segment;
    v.version = version;
    InsertVersion(tx, v);
    tx.exec_params(kBumpSegment, segment.id, version);
    return absl::OkStatus();
  }));
  return GetSegment(segment.id, version);
}

absl::StatusOr<StoredCompositions> PgSegmentStore::LoadCompositions() {
  StoredCompositions out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    out = CompositionsIn(tx);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<SegmentVersion> PgSegmentStore::GetSegment(const std::string& id, int64_t version) {
  std::optional<SegmentVersion> out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    pqxx::result r = tx.exec_params(kSelectSegment, id, version);
    if (r.empty()) return absl::OkStatus();
    out = SegmentFromRow(r[0]);
    if (out->kind == pb::SEGMENT_KIND_COMPOSED) {
      for (pb::SegmentRef& ref : *out->definition.mutable_composed()->mutable_operands()) {
        if (ref.version() != 0) continue;
        pqxx::row at = tx.exec_params1(kOperandVersionAt, ref.segment_id(), out->id, out->version);
        if (!at[0].is_null()) ref.set_version(at[0].as<int64_t>());
      }
    }
    return absl::OkStatus();
  }));
  if (!out) return NotFound(absl::StrCat("no segment ", id, version ? " at that version" : ""));
  return *std::move(out);
}

absl::StatusOr<std::vector<SegmentVersion>> PgSegmentStore::ListSegments(
    const std::string& actor_org, const std::string& after_id, int limit) {
  std::vector<SegmentVersion> out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    out.clear();
    for (const pqxx::row& row : tx.exec_params(kListSegments, actor_org, after_id, limit)) {
      out.push_back(SegmentFromRow(row));
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<SegmentVersion> PgSegmentStore::ArchiveSegment(const std::string& id) {
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    if (tx.exec_params(kArchiveSegment, id).affected_rows() == 0) {
      return NotFound(absl::StrCat("no segment ", id));
    }
    return absl::OkStatus();
  }));
  return GetSegment(id, 0);
}

// ---- Snapshots ---------------------------------------------------------------------------------

absl::Status PgSegmentStore::InsertSnapshot(const pb::Snapshot& snapshot,
                                            const std::string& members) {
  return pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    tx.exec_params(kInsertSnapshot, snapshot.id(), snapshot.org_id(),
                   snapshot.segment().segment_id(), snapshot.segment().version(),
                   snapshot.purpose(), snapshot.count(), pqxx::binarystring(members));
    return absl::OkStatus();
  });
}

absl::StatusOr<std::pair<pb::Snapshot, std::string>> PgSegmentStore::GetSnapshot(
    const std::string& id) {
  std::optional<std::pair<pb::Snapshot, std::string>> out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    pqxx::result r = tx.exec_params(kSelectSnapshot, id);
    if (r.empty()) return absl::OkStatus();
    pb::Snapshot s;
    s.set_id(r[0][0].as<std::string>());
    s.set_org_id(r[0][1].as<std::string>());
    s.mutable_segment()->set_segment_id(r[0][2].as<std::string>());
    s.mutable_segment()->set_version(r[0][3].as<int64_t>());
    s.set_purpose(r[0][4].as<std::string>());
    s.set_count(r[0][5].as<int64_t>());
    *s.mutable_created_at() = Timestamp(r[0][7].as<int64_t>());
    out.emplace(std::move(s), pqxx::binarystring(r[0][6]).str());
    return absl::OkStatus();
  }));
  if (!out) return NotFound(absl::StrCat("no snapshot ", id));
  return *std::move(out);
}

// ---- RFM ---------------------------------------------------------------------------------------

absl::StatusOr<bool> PgSegmentStore::RecordTransaction(std::string_view consumer,
                                                       std::string_view event_id,
                                                       const std::string& customer_id,
                                                       const std::string& org_id,
                                                       int64_t amount_fen, int32_t day) {
  bool counted = false;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    counted = kafka::MarkProcessed(tx, consumer, event_id);
    if (!counted) return absl::OkStatus();
    const pqxx::row customer = tx.exec_params1(kEnsureCustomer, customer_id, org_id);
    const uint32_t dense_id = customer[0].as<uint32_t>();
    // A customer first seen here exists for the other replicas' rules too (`not`, lists).
    if (customer[1].as<bool>()) LogChanges(tx, std::vector<uint32_t>{dense_id});
    tx.exec_params(kAddTransaction, dense_id, amount_fen, day);
    return absl::OkStatus();
  }));
  return counted;
}

absl::StatusOr<bool> PgSegmentStore::RecordReversal(std::string_view consumer,
                                                    std::string_view event_id,
                                                    const std::string& customer_id,
                                                    int64_t amount_fen) {
  bool applied = false;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    applied = kafka::MarkProcessed(tx, consumer, event_id);
    if (applied && amount_fen > 0) tx.exec_params(kSubtractReversal, customer_id, amount_fen);
    return absl::OkStatus();
  }));
  return applied;
}

absl::StatusOr<std::vector<RfmAggregate>> PgSegmentStore::LoadRfmAggregates() {
  std::vector<RfmAggregate> out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    out.clear();
    for (const pqxx::row& row : tx.exec(kSelectAggregates)) {
      out.push_back({.dense_id = row[0].as<uint32_t>(),
                     .txn_count = row[1].as<int64_t>(),
                     .amount_fen = row[2].as<int64_t>(),
                     .last_txn_day = row[3].as<int32_t>()});
    }
    return absl::OkStatus();
  }));
  return out;
}

}  // namespace mkt::segments
