// PostgreSQL storage of the segments service: the tag dictionary, customers and their tag values
// (the source of truth the index is rebuilt from), segment versions, snapshots and RFM
// aggregates. Every change commits before the caller applies it to the in-memory index, and the
// calls that change tag values return the customers' complete values as committed, with the
// customer's revision (bumped by every such change), so an index applies only newer states.
// Every transaction that changes a customer's values or home org, or creates a customer, also
// logs the customer in tag_changes, from which the other replicas catch up (ReadChanges,
// decision 037).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <roaring/roaring.hh>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "libs/pg/migrations.h"
#include "libs/pg/pool.h"
#include "marketing/segments/v1/segments.pb.h"

namespace mkt::segments {

namespace pb = ::marketing::segments::v1;

// The schema of the segments database (component "segments").
const pg::MigrationSet& SegmentsMigrations();

// One version of a segment as stored.
struct SegmentVersion {
  std::string id;
  std::string org_id;
  std::string name;
  std::string description;
  pb::SegmentKind kind = pb::SEGMENT_KIND_UNSPECIFIED;
  int64_t version = 0;
  int64_t latest_version = 0;
  bool archived = false;
  // For list segments the ids are not kept here but in list_members.
  pb::SegmentDefinition definition;
  std::shared_ptr<const Roaring> list_members;
  int64_t list_size = 0;
  std::string created_by;
  absl::Time created_at;
};

// A customer's complete tag values as committed (canonical text per tag).
struct CustomerState {
  uint32_t dense_id = 0;
  std::string customer_id;
  std::string org_id;
  // customers.revision when the state was read: a higher revision is a newer state.
  int64_t revision = 0;
  std::vector<std::pair<std::string, std::string>> values;
};

// What an import wrote, and the rows it did not write.
struct ImportResult {
  // The written customers' values as committed.
  std::vector<CustomerState> states;
  // Rows (indexes into the imported rows) of customers whose home org the importing org does not
  // cover, with that home org (for the caller's message, which must not name it).
  std::vector<std::pair<size_t, std::string>> foreign;
};

// The customers changed since a replica last caught up (PgSegmentStore::ReadChanges).
struct ChangedCustomers {
  // Where the next read starts: every transaction below it has ended.
  uint64_t next = 0;
  // Changes at or after the start were pruned before they were read: dense_ids is then every
  // customer, so the reader re-reads them all.
  bool missed = false;
  // Ascending, distinct.
  std::vector<uint32_t> dense_ids;
  // Sum of the tags' versions: changes whenever a tag is created or updated (names are never
  // deleted, versions only grow).
  int64_t tags_version = 0;
};

// One message of mkt.customer-profiles.v1, values already validated and encoded.
struct ProfileChange {
  std::string event_id;
  std::string customer_id;
  std::string org_id;
  int64_t version = 0;
  std::vector<std::pair<std::string, std::string>> set;
  std::vector<std::string> removed;
};

// One good row of a CSV import: tag → canonical text, or nullopt to remove the value.
struct ImportRow {
  std::string customer_id;
  std::vector<std::pair<std::string, std::optional<std::string>>> cells;
};

// Every stored version of a composed segment, for checking how deep compositions nest: a
// reference with version 0 means the latest version of its segment.
struct StoredCompositions {
  struct Version {
    std::string id;
    int64_t version = 0;
    std::string org_id;
    pb::Composition composed;
  };
  std::vector<Version> versions;
  // Latest version of every segment with a composed version (whatever the latest's kind).
  std::map<std::string, int64_t, std::less<>> latest;
};

// Checks a composed definition against the stored compositions before it is written; an error
// aborts the write.
using CompositionCheck = std::function<absl::Status(const StoredCompositions&)>;

struct RfmAggregate {
  uint32_t dense_id = 0;
  int64_t txn_count = 0;
  int64_t amount_fen = 0;
  int32_t last_txn_day = 0;
};

class PgSegmentStore {
 public:
  explicit PgSegmentStore(pg::Pool& pool) : pool_(pool) {}

  // ---- Tags
  // ALREADY_EXISTS when the name is taken (by any org).
  absl::StatusOr<pb::Tag> InsertTag(const pb::Tag& tag);
  absl::StatusOr<pb::Tag> GetTag(const std::string& name);
  absl::StatusOr<std::vector<pb::Tag>> ListTags();
  // Locks the tag, lets `mutate` change it (an error aborts), stores it with version + 1.
  absl::StatusOr<pb::Tag> UpdateTag(const std::string& name,
                                    const std::function<absl::Status(pb::Tag&)>& mutate);

  // ---- Customers and values
  // Streams every customer (dense id, id, home org, revision), then every tag value, from one
  // snapshot (start-up rebuild of the index). Returns where ReadChanges starts for this index:
  // the snapshot's xmin (every transaction below it is in the snapshot; reading the ones above
  // again is harmless).
  absl::StatusOr<uint64_t> LoadIndex(
      const std::function<void(uint32_t, std::string_view, std::string_view, int64_t)>& on_customer,
      const std::function<void(uint32_t, std::string_view, std::string_view)>& on_value);
  // Applies one profile message in one transaction with its dedupe record (consumer, event id):
  // the customer is created or moved to the message's org, and values older than the stored
  // profile version are skipped. Returns the customer's values as committed (also for a duplicate).
  absl::StatusOr<CustomerState> ApplyProfile(const ProfileChange& change,
                                             std::string_view consumer);
  // Writes `rows` in one transaction (all or nothing); customers new to the platform get `org_id`
  // as home org. A row of a customer whose home org `org_id` does not cover (tenancy::Covers) is
  // not written and is returned in `foreign`: the home org is read under the customer's row lock
  // in this transaction, so a customer another bank creates or takes over meanwhile is seen as
  // theirs. Returns the written customers' values as committed.
  absl::StatusOr<ImportResult> ImportRows(const std::string& org_id,
                                          const std::vector<ImportRow>& rows);
  // Returns the dense ids and home orgs of `customer_ids` (in order), creating missing customers
  // with home org `org_id`. A customer stored before keeps the home org the database holds (which
  // may be another org than `org_id`: the caller decides what to do with those).
  struct EnsuredCustomer {
    uint32_t dense_id = 0;
    std::string org_id;
  };
  absl::StatusOr<std::vector<EnsuredCustomer>> EnsureCustomers(
      const std::vector<std::string>& customer_ids, const std::string& org_id);

  // ---- Segments
  // Stores version 1 of a new segment (id chosen by the caller). With `check`, writes of
  // compositions are serialised (one at a time across replicas) and `check` sees the stored ones
  // first.
  absl::StatusOr<SegmentVersion> CreateSegment(const SegmentVersion& segment,
                                               const CompositionCheck& check = nullptr);
  // Stores the next version; CONFLICT when expected_version (if not 0) is not the latest. `check`
  // as for CreateSegment.
  absl::StatusOr<SegmentVersion> AddSegmentVersion(const SegmentVersion& segment,
                                                   int64_t expected_version,
                                                   const CompositionCheck& check = nullptr);
  // The stored compositions (all versions), without serialising anything.
  absl::StatusOr<StoredCompositions> LoadCompositions();
  // version 0: the latest. NOT_FOUND when absent.
  absl::StatusOr<SegmentVersion> GetSegment(const std::string& id, int64_t version);
  // Latest versions of the segments an actor of `actor_org` may see, id > after_id, in id order.
  absl::StatusOr<std::vector<SegmentVersion>> ListSegments(const std::string& actor_org,
                                                           const std::string& after_id, int limit);
  absl::StatusOr<SegmentVersion> ArchiveSegment(const std::string& id);

  // ---- Snapshots
  absl::Status InsertSnapshot(const pb::Snapshot& snapshot, const std::string& members);
  absl::StatusOr<std::pair<pb::Snapshot, std::string>> GetSnapshot(const std::string& id);

  // ---- RFM
  // Adds one transaction to the customer's aggregate with its dedupe record; false if the event
  // was already counted.
  absl::StatusOr<bool> RecordTransaction(std::string_view consumer, std::string_view event_id,
                                         const std::string& customer_id, const std::string& org_id,
                                         int64_t amount_fen, int32_t day);
  // Gives `amount_fen` of a reversal (refund or cancel) back from the customer's aggregate, with
  // its dedupe record: the sum goes down (not below 0), the count and last day stay. A customer
  // without an aggregate (or unknown) is left alone. False if the event was already applied.
  absl::StatusOr<bool> RecordReversal(std::string_view consumer, std::string_view event_id,
                                      const std::string& customer_id, int64_t amount_fen);
  absl::StatusOr<std::vector<RfmAggregate>> LoadRfmAggregates();
  // Upserts (dense id, tag, canonical value) triples in one transaction, returning the customers'
  // values as committed.
  absl::StatusOr<std::vector<CustomerState>> WriteValues(
      const std::vector<std::tuple<uint32_t, std::string, std::string>>& values);

  // ---- Catching up with other replicas (decision 037)
  // The customers logged in tag_changes by transactions with xid >= `from` that have ended: read
  // up to the xmin of one snapshot (returned as `next`), below which every transaction has ended,
  // so nothing is skipped whatever order transactions commit in. A transaction still running
  // holds `next` back (its changes and every later one's wait for it). With `missed`, rows at or
  // after `from` were pruned and dense_ids lists every customer.
  absl::StatusOr<ChangedCustomers> ReadChanges(uint64_t from);
  // The customers' values as committed now (customers unknown to the database are left out).
  absl::StatusOr<std::vector<CustomerState>> ReadStates(const std::vector<uint32_t>& dense_ids);
  // The xmin of a fresh snapshot: every transaction below it has ended.
  absl::StatusOr<uint64_t> CurrentXmin();
  // Deletes the change rows of transactions below `below` (which must be an xmin returned by
  // ReadChanges or CurrentXmin, old enough that every replica has read past it) and records that
  // rows below it may be gone. Returns how many rows were deleted.
  absl::StatusOr<int64_t> PruneChanges(uint64_t below);

 private:
  pg::Pool& pool_;
};

}  // namespace mkt::segments
