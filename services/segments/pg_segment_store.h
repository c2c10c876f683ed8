// PostgreSQL storage of the segments service: the tag dictionary, customers and their tag values
// (the source of truth the index is rebuilt from), segment versions, snapshots and RFM
// aggregates. Every change commits before the caller applies it to the in-memory index, and the
// calls that change tag values return the customers' complete values as committed, so every
// replica's index converges on what the database holds whatever order changes arrive in.
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
  std::vector<std::pair<std::string, std::string>> values;
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
  // Streams every customer, then every tag value (start-up rebuild of the index).
  absl::Status LoadIndex(
      const std::function<void(uint32_t, std::string_view, std::string_view)>& on_customer,
      const std::function<void(uint32_t, std::string_view, std::string_view)>& on_value);
  // Applies one profile message in one transaction with its dedupe record (consumer, event id):
  // the customer is created or moved to the message's org, and values older than the stored
  // profile version are skipped. Returns the customer's values as committed (also for a duplicate).
  absl::StatusOr<CustomerState> ApplyProfile(const ProfileChange& change,
                                             std::string_view consumer);
  // Writes `rows` in one transaction (all or nothing); customers new to the platform get `org_id`
  // as home org. Returns the written customers' values as committed.
  absl::StatusOr<std::vector<CustomerState>> ImportRows(const std::string& org_id,
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

 private:
  pg::Pool& pool_;
};

}  // namespace mkt::segments
