// The in-memory index every membership question is answered from: per tag, a CRoaring bitmap of
// the customers that have a value and, for bool and enum tags, one bitmap per value. Int and date
// tags with a small domain (ages, day counts, dates as day numbers: at most kMaxValueBitmaps
// distinct values) also keep one bitmap per value, so a range is the union of the values in it
// (or its complement); fen tags and int/date tags whose domain outgrows that are bit-sliced (one
// bitmap per bit of the order-preserving unsigned encoding: two bitmap operations per used bit).
// Every numeric column can also keep cumulative "value >= bound" bitmaps (steps, BuildSteps) at
// bounds rules use: every value of a small int domain, recent days relative to today for dates,
// round amounts (1, 2, 5 x 10^k) for fen tags. A range whose ends are steps is one copy or one
// in-place AND plus one ANDNOT, whatever the number of values inside; other ends are exact through
// the nearest step and the few value bitmaps (or the bit slices of the one bucket) between.
// Rules evaluate to bitmaps (Evaluate) for counts and materialisation - the conditions of a
// conjunction that are whole bitmaps (ranges between steps, labels) in one pass over their words,
// chunk by chunk; the others, most selective first, restrict the result in place - or for one
// customer (Matches) with a few bitmap probes. Each customer also has a home org, whose bitmaps
// scope what an org may see.
//
// Rebuilt from PostgreSQL at start-up and kept current after each committed change. Thread-safe:
// readers share a lock, writers (the profile consumer, imports) take it exclusively.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <roaring/roaring.hh>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "services/segments/customer_directory.h"
#include "services/segments/tag_value.h"

namespace mkt::segments {

class TagIndex {
 public:
  // A small-domain int/date tag holding more distinct values than this becomes bit-sliced (for
  // good: one bitmap per value stops paying once values are rare and ranges span many of them).
  static constexpr size_t kMaxValueBitmaps = 1024;
  // An int tag with at most this many distinct values gets a step at every value (exact ranges
  // with two bitmap operations); wider ones get kSpreadSteps steps of about equal population.
  static constexpr size_t kMaxValueSteps = 128;
  static constexpr size_t kSpreadSteps = 8;

  TagIndex() = default;
  TagIndex(const TagIndex&) = delete;
  TagIndex& operator=(const TagIndex&) = delete;

  // Adds a tag or updates its schema (its type never changes).
  void DefineTag(const TagSchema& schema);
  std::optional<TagSchema> Schema(std::string_view tag) const;

  // Records a customer at `dense_id` with home org `home_org` (changes the home org if it differs).
  void PutCustomer(uint32_t dense_id, std::string_view customer_id, std::string_view home_org);
  std::optional<uint32_t> Find(std::string_view customer_id) const;
  std::string CustomerId(uint32_t dense_id) const;
  // Returns customer ids for `dense_ids`, in order.
  std::vector<std::string> CustomerIds(const std::vector<uint32_t>& dense_ids) const;
  size_t customer_count() const;

  // Sets (replaces) the customer's value of `tag`; ignored for an unknown tag.
  void Set(uint32_t dense_id, std::string_view tag, const Value& value);
  void Remove(uint32_t dense_id, std::string_view tag);
  // Makes `values` the customer's complete set of tag values (others are removed).
  void ReplaceCustomer(uint32_t dense_id, const std::vector<std::pair<std::string, Value>>& values);
  std::optional<Value> ValueOf(uint32_t dense_id, std::string_view tag) const;

  // Returns the customers matching `rule` (all customers, unscoped) on day `today`.
  Roaring Evaluate(const pb::Condition& rule, int32_t today) const;
  // Returns whether customer `dense_id` matches `rule` on day `today`.
  bool Matches(const pb::Condition& rule, uint32_t dense_id, int32_t today) const;

  // The customers whose home org `org` covers (libs/tenancy): what an actor of `org` may see.
  Roaring Scope(std::string_view org) const;
  bool InScope(std::string_view org, uint32_t dense_id) const;

  // Bulk loading into an empty column (start-up, benchmarks): `dense_ids` ascending and already
  // put, one value each. Much faster than Set() per value because every bitmap is appended to in
  // order, in batches.
  void LoadNumeric(std::string_view tag, const std::vector<uint32_t>& dense_ids,
                   const std::vector<int64_t>& numbers);
  // As LoadNumeric for bool/enum tags: customer i has label labels[label_of[i]].
  void LoadLabels(std::string_view tag, const std::vector<uint32_t>& dense_ids,
                  const std::vector<uint16_t>& label_of, const std::vector<std::string>& labels);
  // Puts customers dense_ids first..first+count-1 with ids from `customer_id(i)` and one home org.
  template <class IdOf>
  void LoadCustomers(uint32_t first, uint32_t count, IdOf customer_id, std::string_view home_org) {
    PutCustomer(first, customer_id(first), home_org);
    absl::MutexLock lock(&mu_);
    directory_.Reserve(count, 12);
    home_org_.resize(static_cast<size_t>(first) + count, home_org_[first]);
    for (uint32_t i = first + 1; i < first + count; ++i) directory_.Put(i, customer_id(i));
    all_customers_.addRange(first, static_cast<uint64_t>(first) + count);
    customers_by_org_[home_org_[first]].addRange(first, static_cast<uint64_t>(first) + count);
  }

  // Whether `tag` is kept as one bitmap per value (false: bit slices, labels or unknown).
  bool PerValue(std::string_view tag) const;

  // (Re)builds the cumulative step bitmaps of every numeric column (anchoring date steps at
  // `today`); kept current by every later change. Optional: without steps ranges are unions.
  void BuildSteps(int32_t today);
  // Builds the steps (anchored at today) and compresses runs in every bitmap (after a bulk load).
  void Optimize();
  size_t MemoryBytes() const;

 private:
  enum class Encoding { kLabels, kValues, kSlices };
  struct ValueBitmap {
    Roaring customers;
    uint64_t count = 0;  // customers.cardinality(), kept so planning costs no container walk
  };
  struct Column {
    TagSchema schema;
    Encoding encoding = Encoding::kLabels;
    Roaring exists;
    std::map<std::string, Roaring, std::less<>> labels;  // kLabels
    std::map<int64_t, ValueBitmap> values;               // kValues: never an empty one
    std::vector<Roaring> slices;                         // kSlices: 64
    uint64_t used_slices = 0;
    // Customers whose value is >= bound, ascending bounds; empty until BuildSteps.
    struct Step {
      int64_t bound = 0;
      Roaring at_least;
    };
    std::vector<Step> steps;
  };
  // A numeric condition as the customers whose value lies in [low, high] (inclusive), or outside
  // it when `negate` (customers with a value only).
  struct Interval {
    int64_t low = 0, high = -1;
    bool negate = false;
  };

  const Column* ColumnOf(std::string_view tag) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void SetLocked(uint32_t dense_id, Column& column, const Value& value)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static void RemoveFrom(uint32_t dense_id, Column& column);
  static std::optional<Value> ValueIn(const Column& column, uint32_t dense_id);
  static void ConvertToSlices(Column& column);
  // The customers of `column` (restricted to `within` unless null) whose value is in [low, high].
  static Roaring InInterval(const Column& column, int64_t low, int64_t high, const Roaring* within);
  // A numeric leaf (compare, range, relative date) as an interval; nullopt for a leaf that
  // selects nobody (bad literal, wrong kind).
  static std::optional<Interval> NumericInterval(const pb::Condition& rule, const TagSchema& schema,
                                                 int32_t today);
  static Roaring EvaluateInterval(const Column& column, const Interval& interval,
                                  const Roaring* within);
  // With steps: the customers of `within` (null: the column's) whose value is >= x, exactly.
  static Roaring AtLeast(const Column& column, int64_t x, const Roaring* within);
  // With steps: `acc` restricted in place to the customers whose value is in the interval.
  static void RestrictInterval(const Column& column, const Interval& interval, Roaring& acc);
  // With steps: removes from `acc` the customers whose value is >= x.
  static void DropAtLeast(const Column& column, int64_t x, Roaring& acc);
  static bool AtLeastContains(const Column& column, int64_t x, uint32_t dense_id);
  // Picks the step bounds and builds the steps from the column's bitmaps, or from `numbers` (one
  // per customer of `dense_ids`) when given (bulk loading).
  static void BuildColumnSteps(Column& column, int32_t today,
                               const std::vector<uint32_t>* dense_ids = nullptr,
                               const std::vector<int64_t>* numbers = nullptr);
  // Appends `rule` as whole bitmaps to intersect (true: negated) when it is one: a range whose
  // ends are steps, a label, exists. False (nothing appended) otherwise.
  bool AsTerms(const pb::Condition& rule, int32_t today,
               std::vector<std::pair<const Roaring*, bool>>& terms) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Restricts `acc` in place to the customers matching `rule` (the later conditions of an `all`).
  void RestrictLocked(const pb::Condition& rule, int32_t today, int depth, Roaring& acc) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  static bool MatchesInterval(const Column& column, uint32_t dense_id, const Interval& interval);
  // Estimated number of customers `rule` selects, to order the conditions of a conjunction.
  uint64_t EstimateLocked(const pb::Condition& rule, int32_t today, int depth) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // `within` (may be null: everyone) restricts the result to a set of candidates.
  Roaring EvaluateLocked(const pb::Condition& rule, int32_t today, int depth,
                         const Roaring* within) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Returns -1, 0 or 1 as the customer's value (which must exist) is below, equal to or above x.
  static int CompareValue(const Column& column, uint32_t dense_id, int64_t x);
  bool MatchesLocked(const pb::Condition& rule, uint32_t dense_id, int32_t today, int depth) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<Column>> columns_ ABSL_GUARDED_BY(mu_);
  CustomerDirectory directory_ ABSL_GUARDED_BY(mu_);
  Roaring all_customers_ ABSL_GUARDED_BY(mu_);
  // Home orgs: names, one bitmap per org, and each customer's org (index into org_names_).
  std::vector<std::string> org_names_ ABSL_GUARDED_BY(mu_);
  std::vector<Roaring> customers_by_org_ ABSL_GUARDED_BY(mu_);
  std::vector<uint16_t> home_org_ ABSL_GUARDED_BY(mu_);
};

// Returns the order-preserving unsigned encoding of `v` that the bit slices hold.
inline uint64_t SliceEncode(int64_t v) { return static_cast<uint64_t>(v) ^ (uint64_t{1} << 63); }
inline int64_t SliceDecode(uint64_t u) { return static_cast<int64_t>(u ^ (uint64_t{1} << 63)); }

}  // namespace mkt::segments
