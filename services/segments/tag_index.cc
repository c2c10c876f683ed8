#include "services/segments/tag_index.h"

#include <algorithm>
#include <cstring>
#include <iterator>
#include <limits>

#include "libs/tenancy/tenancy.h"

namespace mkt::segments {
namespace {

constexpr int kMaxDepth = 32;

}  // namespace

// ---- Dictionary and customers ------------------------------------------------------------------

void TagIndex::DefineTag(const TagSchema& schema) {
  absl::MutexLock lock(&mu_);
  auto& column = columns_[schema.name];
  if (column == nullptr) {
    column = std::make_unique<Column>();
    if (schema.type == pb::TAG_TYPE_DECIMAL_FEN) {
      column->encoding = Encoding::kSlices;  // amounts: a wide domain, values rarely repeat
      column->slices.resize(64);
    } else if (schema.numeric()) {
      column->encoding = Encoding::kValues;
    }
  }
  column->schema = schema;
}

std::optional<TagSchema> TagIndex::Schema(std::string_view tag) const {
  absl::ReaderMutexLock lock(&mu_);
  const Column* column = ColumnOf(tag);
  if (column == nullptr) return std::nullopt;
  return column->schema;
}

const TagIndex::Column* TagIndex::ColumnOf(std::string_view tag) const {
  auto it = columns_.find(absl::string_view(tag.data(), tag.size()));
  return it == columns_.end() ? nullptr : it->second.get();
}

void TagIndex::PutCustomer(uint32_t dense_id, std::string_view customer_id,
                           std::string_view home_org) {
  absl::MutexLock lock(&mu_);
  directory_.Put(dense_id, customer_id);
  all_customers_.add(dense_id);
  if (home_org_.size() <= dense_id) home_org_.resize(static_cast<size_t>(dense_id) + 1, 0);
  if (org_names_.empty()) {
    org_names_.emplace_back();  // 0: no home org
    customers_by_org_.emplace_back();
  }
  if (home_org.empty() || org_names_[home_org_[dense_id]] == home_org) return;
  auto it = std::find(org_names_.begin(), org_names_.end(), home_org);
  uint16_t org = static_cast<uint16_t>(it - org_names_.begin());
  if (it == org_names_.end()) {
    org_names_.emplace_back(home_org);
    customers_by_org_.emplace_back();
  }
  customers_by_org_[home_org_[dense_id]].remove(dense_id);
  customers_by_org_[org].add(dense_id);
  home_org_[dense_id] = org;
}

std::optional<uint32_t> TagIndex::Find(std::string_view customer_id) const {
  absl::ReaderMutexLock lock(&mu_);
  return directory_.Find(customer_id);
}

std::string TagIndex::CustomerId(uint32_t dense_id) const {
  absl::ReaderMutexLock lock(&mu_);
  return std::string(directory_.CustomerId(dense_id));
}

std::vector<std::string> TagIndex::CustomerIds(const std::vector<uint32_t>& dense_ids) const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<std::string> out;
  out.reserve(dense_ids.size());
  for (uint32_t id : dense_ids) out.emplace_back(directory_.CustomerId(id));
  return out;
}

size_t TagIndex::customer_count() const {
  absl::ReaderMutexLock lock(&mu_);
  return directory_.size();
}

Roaring TagIndex::Scope(std::string_view org) const {
  absl::ReaderMutexLock lock(&mu_);
  if (org == tenancy::kFederation) return all_customers_;
  std::vector<const Roaring*> parts;
  for (size_t i = 1; i < org_names_.size(); ++i) {
    if (tenancy::Covers(org, org_names_[i])) parts.push_back(&customers_by_org_[i]);
  }
  if (parts.empty()) return Roaring();
  return Roaring::fastunion(parts.size(), parts.data());
}

bool TagIndex::InScope(std::string_view org, uint32_t dense_id) const {
  absl::ReaderMutexLock lock(&mu_);
  if (!all_customers_.contains(dense_id)) return false;
  if (org == tenancy::kFederation) return true;
  if (dense_id >= home_org_.size() || home_org_[dense_id] == 0) return false;
  return tenancy::Covers(org, org_names_[home_org_[dense_id]]);
}

// ---- Values ------------------------------------------------------------------------------------

void TagIndex::RemoveFrom(uint32_t dense_id, Column& column) {
  if (!column.exists.removeChecked(dense_id)) return;
  for (auto& [label, bitmap] : column.labels) bitmap.remove(dense_id);
  for (auto it = column.values.begin(); it != column.values.end(); ++it) {
    if (!it->second.customers.removeChecked(dense_id)) continue;
    if (--it->second.count == 0) column.values.erase(it);  // the domain counts live values only
    break;
  }
  for (int i = 0; i < 64 && !column.slices.empty(); ++i) {
    if (column.used_slices >> i & 1) column.slices[i].remove(dense_id);
  }
  for (auto& step : column.steps) step.at_least.remove(dense_id);
}

void TagIndex::SetLocked(uint32_t dense_id, Column& column, const Value& value) {
  if (column.encoding == Encoding::kValues) {
    auto it = column.values.find(value.number);
    if (it != column.values.end() && it->second.customers.contains(dense_id)) return;
    RemoveFrom(dense_id, column);
    ValueBitmap& bitmap = column.values[value.number];
    bitmap.customers.add(dense_id);
    ++bitmap.count;
    column.exists.add(dense_id);
    for (auto& step : column.steps) {
      if (value.number >= step.bound) step.at_least.add(dense_id);
    }
    if (column.values.size() > kMaxValueBitmaps) ConvertToSlices(column);
    return;
  }
  if (column.encoding == Encoding::kSlices) {
    const uint64_t u = SliceEncode(value.number);
    for (int i = 0; i < 64; ++i) {
      if (u >> i & 1) {
        column.slices[i].add(dense_id);
        column.used_slices |= uint64_t{1} << i;
      } else if (column.used_slices >> i & 1) {
        column.slices[i].remove(dense_id);
      }
    }
    for (auto& step : column.steps) {
      if (value.number >= step.bound) {
        step.at_least.add(dense_id);
      } else {
        step.at_least.remove(dense_id);
      }
    }
  } else {
    if (column.exists.contains(dense_id)) {
      for (auto& [label, bitmap] : column.labels) bitmap.remove(dense_id);
    }
    for (const std::string& label : value.labels) column.labels[label].add(dense_id);
  }
  column.exists.add(dense_id);
}

void TagIndex::ConvertToSlices(Column& column) {
  column.slices.resize(64);
  for (auto& [number, bitmap] : column.values) {
    uint64_t u = SliceEncode(number);
    column.used_slices |= u;
    while (u != 0) {
      column.slices[__builtin_ctzll(u)] |= bitmap.customers;
      u &= u - 1;
    }
  }
  column.values.clear();
  column.encoding = Encoding::kSlices;
}

void TagIndex::Set(uint32_t dense_id, std::string_view tag, const Value& value) {
  absl::MutexLock lock(&mu_);
  auto it = columns_.find(absl::string_view(tag.data(), tag.size()));
  if (it == columns_.end()) return;
  SetLocked(dense_id, *it->second, value);
}

void TagIndex::Remove(uint32_t dense_id, std::string_view tag) {
  absl::MutexLock lock(&mu_);
  auto it = columns_.find(absl::string_view(tag.data(), tag.size()));
  if (it == columns_.end()) return;
  RemoveFrom(dense_id, *it->second);
}

void TagIndex::ReplaceCustomer(uint32_t dense_id,
                               const std::vector<std::pair<std::string, Value>>& values) {
  absl::MutexLock lock(&mu_);
  for (auto& [name, column] : columns_) {
    auto it = std::find_if(values.begin(), values.end(),
                           [&name = name](const auto& v) { return v.first == name; });
    if (it == values.end()) {
      RemoveFrom(dense_id, *column);
    } else {
      SetLocked(dense_id, *column, it->second);
    }
  }
}

std::optional<Value> TagIndex::ValueIn(const Column& column, uint32_t dense_id) {
  if (!column.exists.contains(dense_id)) return std::nullopt;
  Value v;
  if (column.encoding == Encoding::kValues) {
    for (const auto& [number, bitmap] : column.values) {
      if (bitmap.customers.contains(dense_id)) {
        v.number = number;
        break;
      }
    }
  } else if (column.encoding == Encoding::kSlices) {
    uint64_t u = 0;
    for (int i = 0; i < 64; ++i) {
      if ((column.used_slices >> i & 1) && column.slices[i].contains(dense_id))
        u |= uint64_t{1} << i;
    }
    v.number = SliceDecode(u);
  } else {
    for (const auto& [label, bitmap] : column.labels) {
      if (bitmap.contains(dense_id)) v.labels.push_back(label);
    }
  }
  return v;
}

int TagIndex::CompareValue(const Column& column, uint32_t dense_id, int64_t x) {
  // Walks the bits from the top and stops at the first one that differs: a few probes instead of
  // reading every slice.
  const uint64_t u = SliceEncode(x);
  for (int i = 63; i >= 0; --i) {
    const bool xb = u >> i & 1;
    const bool cb = (column.used_slices >> i & 1) && column.slices[i].contains(dense_id);
    if (cb != xb) return cb ? 1 : -1;
  }
  return 0;
}

std::optional<Value> TagIndex::ValueOf(uint32_t dense_id, std::string_view tag) const {
  absl::ReaderMutexLock lock(&mu_);
  const Column* column = ColumnOf(tag);
  if (column == nullptr) return std::nullopt;
  return ValueIn(*column, dense_id);
}

// ---- Rules over bitmaps ------------------------------------------------------------------------

namespace {

constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

// The O'Neil-Quass comparison of a bit-sliced column against `x`: walks the slices from the most
// significant bit, keeping the customers still equal so far; returns the bitmap `op` asks for.
Roaring NumericCompare(Roaring eq, const std::vector<Roaring>& slices, uint64_t used_slices,
                       pb::Operator op, int64_t x) {
  const bool want_lt = op == pb::LT || op == pb::LE;
  const bool want_gt = op == pb::GT || op == pb::GE;
  const uint64_t u = SliceEncode(x);
  Roaring lt, gt;
  for (int i = 63; i >= 0 && !eq.isEmpty(); --i) {
    const bool used = used_slices >> i & 1;
    if (u >> i & 1) {
      if (!used) {  // nobody has this bit: everyone still equal is smaller
        if (want_lt) lt |= eq;
        eq = Roaring();
        break;
      }
      if (want_lt) lt |= eq - slices[i];
      eq &= slices[i];
    } else if (used) {
      if (want_gt) gt |= eq & slices[i];
      eq -= slices[i];
    }
  }
  switch (op) {
    case pb::LT:
      return lt;
    case pb::LE:
      lt |= eq;
      return lt;
    case pb::GT:
      return gt;
    case pb::GE:
      gt |= eq;
      return gt;
    default:
      return eq;
  }
}

Roaring Union(std::vector<const Roaring*>& parts) {
  if (parts.empty()) return Roaring();
  if (parts.size() == 1) return *parts[0];
  return Roaring::fastunion(parts.size(), parts.data());
}

}  // namespace

std::optional<TagIndex::Interval> TagIndex::NumericInterval(const pb::Condition& rule,
                                                            const TagSchema& schema,
                                                            int32_t today) {
  switch (rule.kind_case()) {
    case pb::Condition::kCompare: {
      absl::StatusOr<Value> v = FromProto(schema, rule.compare().value(), "");
      if (!v.ok()) return std::nullopt;
      const int64_t x = v->number;
      switch (rule.compare().op()) {
        case pb::EQ:
          return Interval{x, x};
        case pb::NE:
          return Interval{x, x, true};
        case pb::LT:
          return x == kMin ? Interval{} : Interval{kMin, x - 1};
        case pb::LE:
          return Interval{kMin, x};
        case pb::GT:
          return x == kMax ? Interval{} : Interval{x + 1, kMax};
        case pb::GE:
          return Interval{x, kMax};
        default:
          return std::nullopt;
      }
    }
    case pb::Condition::kRange: {
      absl::StatusOr<Value> lo = FromProto(schema, rule.range().low(), "");
      absl::StatusOr<Value> hi = FromProto(schema, rule.range().high(), "");
      if (!lo.ok() || !hi.ok()) return std::nullopt;
      return Interval{lo->number, hi->number};  // low > high: empty
    }
    case pb::Condition::kRelativeDate: {
      const auto& r = rule.relative_date();
      if (schema.type != pb::TAG_TYPE_DATE || r.days() < 0) return std::nullopt;
      const int64_t since = int64_t{today} - r.days();
      if (r.kind() == pb::RelativeDate::WITHIN_LAST_DAYS) return Interval{since, today};
      if (r.kind() == pb::RelativeDate::MORE_THAN_DAYS_AGO) return Interval{kMin, since - 1};
      return std::nullopt;
    }
    default:
      return std::nullopt;
  }
}

Roaring TagIndex::InInterval(const Column& column, int64_t low, int64_t high,
                             const Roaring* within) {
  if (low > high) return Roaring();
  if (column.encoding == Encoding::kValues) {
    // The union of the values inside, or everyone with a value minus the union of the values
    // outside, whichever touches fewer customers.
    std::vector<const Roaring*> inside, outside;
    uint64_t in = 0, out = 0;
    for (auto it = column.values.begin(); it != column.values.end(); ++it) {
      const bool is_in = it->first >= low && it->first <= high;
      (is_in ? inside : outside).push_back(&it->second.customers);
      (is_in ? in : out) += it->second.count;
    }
    Roaring result;
    if (in <= out) {
      result = Union(inside);
    } else {
      result = within == nullptr ? column.exists : column.exists & *within;
      if (!outside.empty()) result -= Union(outside);
      return result;
    }
    if (within != nullptr) result &= *within;
    return result;
  }
  if (column.encoding != Encoding::kSlices) return Roaring();
  Roaring candidates = within == nullptr ? column.exists : column.exists & *within;
  if (low != kMin) {
    candidates =
        NumericCompare(std::move(candidates), column.slices, column.used_slices, pb::GE, low);
  }
  if (high != kMax) {
    candidates =
        NumericCompare(std::move(candidates), column.slices, column.used_slices, pb::LE, high);
  }
  return candidates;
}

namespace {

// In-place AND / ANDNOT of two bitmaps, container by container. Debian's CRoaring is built for
// baseline x86-64, so its dense-container operations count bits with a software popcount
// (several ns per word, about 1 ms per operation on two dense 10M-customer bitmaps); here the
// dense x dense case runs with the popcnt instruction where the CPU has it, and every other
// pairing goes to CRoaring's own container functions (for ANDNOT: the whole operation, see
// AndNotInPlace - CRoaring's inline in-place andnot of other pairings misbehaved here at -O2).
using WordsOp = int (*)(uint64_t*, const uint64_t*);

template <bool kAndNot>
int WordsPlain(uint64_t* a, const uint64_t* b) {
  int cardinality = 0;
  for (int i = 0; i < 1024; ++i) {
    a[i] = kAndNot ? a[i] & ~b[i] : a[i] & b[i];
    cardinality += __builtin_popcountll(a[i]);
  }
  return cardinality;
}

template <bool kAndNot>
__attribute__((target("popcnt,avx2"))) int WordsFast(uint64_t* a, const uint64_t* b) {
  int cardinality = 0;
  for (int i = 0; i < 1024; ++i) {
    a[i] = kAndNot ? a[i] & ~b[i] : a[i] & b[i];
    cardinality += __builtin_popcountll(a[i]);
  }
  return cardinality;
}

template <bool kAndNot>
WordsOp PickWordsOp() {
  __builtin_cpu_init();
  const bool fast = __builtin_cpu_supports("popcnt") && __builtin_cpu_supports("avx2");
  return fast ? &WordsFast<kAndNot> : &WordsPlain<kAndNot>;
}

template <bool kAndNot>
void CombineInPlace(Roaring& acc, const Roaring& other) {
  static const WordsOp words = PickWordsOp<kAndNot>();
  roaring_array_t& ra = acc.roaring.high_low_container;
  const roaring_array_t& rb = other.roaring.high_low_container;
  int32_t w = 0, j = 0;
  for (int32_t i = 0; i < ra.size; ++i) {
    const uint16_t key = ra.keys[i];
    while (j < rb.size && rb.keys[j] < key) ++j;
    void* c1 = ra.containers[i];
    uint8_t t1 = ra.typecodes[i];
    if (j == rb.size || rb.keys[j] != key) {
      if (kAndNot) {  // nothing to take away
        ra.keys[w] = key;
        ra.containers[w] = c1;
        ra.typecodes[w] = t1;
        ++w;
      } else {
        container_free(c1, t1);
      }
      continue;
    }
    uint8_t t2 = rb.typecodes[j];
    const void* c2 = container_unwrap_shared(rb.containers[j], &t2);
    void* c = nullptr;
    uint8_t t = 0;
    if (t1 == BITSET_CONTAINER_TYPE_CODE && t2 == BITSET_CONTAINER_TYPE_CODE) {
      auto* bits = static_cast<bitset_container_t*>(c1);
      const int cardinality = words(bits->array, static_cast<const bitset_container_t*>(c2)->array);
      bits->cardinality = cardinality;
      if (cardinality == 0) {
        container_free(c1, t1);
        continue;
      }
      if (cardinality <= DEFAULT_MAX_SIZE) {
        c = array_container_from_bitset(bits);
        t = ARRAY_CONTAINER_TYPE_CODE;
        container_free(c1, t1);
      } else {
        c = c1;
        t = t1;
      }
    } else if (kAndNot) {
      // A sorted array minus a dense container (AndNotInPlace sends nothing else here).
      auto* array = static_cast<array_container_t*>(c1);
      const uint64_t* bits = static_cast<const bitset_container_t*>(c2)->array;
      int32_t kept = 0;
      for (int32_t k = 0; k < array->cardinality; ++k) {  // branch-free: survivors are random
        const uint16_t v = array->array[k];
        array->array[kept] = v;
        kept += static_cast<int32_t>(~bits[v >> 6] >> (v & 63) & 1);
      }
      array->cardinality = kept;
      if (kept == 0) {
        container_free(c1, t1);
        continue;
      }
      c = c1;
      t = t1;
    } else {
      // As roaring_bitmap_and_inplace: a replaced first container is the caller's to free.
      c = container_iand(c1, t1, c2, t2, &t);
      if (c != c1) container_free(c1, t1);
      if (!container_nonzero_cardinality(c, t)) {
        container_free(c, t);
        continue;
      }
    }
    ra.keys[w] = key;
    ra.containers[w] = c;
    ra.typecodes[w] = t;
    ++w;
  }
  ra.size = w;
}

// acc &= keep & ~drop in one pass over dense containers (a range between two steps): the words
// are read once and the result is converted to an array once. Falls back to the two operations
// unless every container involved is dense.
int WordsRangePlain(uint64_t* a, const uint64_t* keep, const uint64_t* drop) {
  int cardinality = 0;
  for (int i = 0; i < 1024; ++i) {
    a[i] &= keep[i] & ~drop[i];
    cardinality += __builtin_popcountll(a[i]);
  }
  return cardinality;
}
__attribute__((target("popcnt,avx2"))) int WordsRangeFast(uint64_t* a, const uint64_t* keep,
                                                          const uint64_t* drop) {
  int cardinality = 0;
  for (int i = 0; i < 1024; ++i) {
    a[i] &= keep[i] & ~drop[i];
    cardinality += __builtin_popcountll(a[i]);
  }
  return cardinality;
}

void AndInPlace(Roaring& acc, const Roaring& other);
void AndNotInPlace(Roaring& acc, const Roaring& other);

void AndAndNotInPlace(Roaring& acc, const Roaring& keep, const Roaring& drop) {
  static const auto words = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("popcnt") && __builtin_cpu_supports("avx2") ? &WordsRangeFast
                                                                              : &WordsRangePlain;
  }();
  roaring_array_t& ra = acc.roaring.high_low_container;
  const roaring_array_t& rk = keep.roaring.high_low_container;
  const roaring_array_t& rd = drop.roaring.high_low_container;
  // Where each container of acc meets keep and drop (-1: absent), all dense or give up.
  std::vector<std::pair<int32_t, int32_t>> at(static_cast<size_t>(ra.size));
  for (int32_t i = 0, k = 0, d = 0; i < ra.size; ++i) {
    const uint16_t key = ra.keys[i];
    while (k < rk.size && rk.keys[k] < key) ++k;
    while (d < rd.size && rd.keys[d] < key) ++d;
    const int32_t ki = k < rk.size && rk.keys[k] == key ? k : -1;
    const int32_t di = d < rd.size && rd.keys[d] == key ? d : -1;
    if (ra.typecodes[i] != BITSET_CONTAINER_TYPE_CODE ||
        (ki >= 0 && rk.typecodes[ki] != BITSET_CONTAINER_TYPE_CODE) ||
        (di >= 0 && rd.typecodes[di] != BITSET_CONTAINER_TYPE_CODE)) {
      AndNotInPlace(acc, drop);
      if (!acc.isEmpty()) AndInPlace(acc, keep);
      return;
    }
    at[i] = {ki, di};
  }
  static const uint64_t kNone[1024] = {};
  int32_t w = 0;
  for (int32_t i = 0; i < ra.size; ++i) {
    void* c1 = ra.containers[i];
    const uint8_t t1 = ra.typecodes[i];
    const auto [ki, di] = at[i];
    if (ki < 0) {
      container_free(c1, t1);
      continue;
    }
    auto* bits = static_cast<bitset_container_t*>(c1);
    const int cardinality =
        words(bits->array, static_cast<const bitset_container_t*>(rk.containers[ki])->array,
              di < 0 ? kNone : static_cast<const bitset_container_t*>(rd.containers[di])->array);
    bits->cardinality = cardinality;
    void* c = c1;
    uint8_t t = t1;
    if (cardinality == 0) {
      container_free(c1, t1);
      continue;
    }
    if (cardinality <= DEFAULT_MAX_SIZE) {
      c = array_container_from_bitset(bits);
      t = ARRAY_CONTAINER_TYPE_CODE;
      container_free(c1, t1);
    }
    ra.keys[w] = ra.keys[i];
    ra.containers[w] = c;
    ra.typecodes[w] = t;
    ++w;
  }
  ra.size = w;
}

void AndInPlace(Roaring& acc, const Roaring& other) { CombineInPlace<false>(acc, other); }
void AndNotInPlace(Roaring& acc, const Roaring& other) {
  // Only dense x dense and sorted-array x dense pairs are done here (the common case: candidates
  // minus a step); any other pairing (run containers) leaves the whole operation to CRoaring.
  const roaring_array_t& ra = acc.roaring.high_low_container;
  const roaring_array_t& rb = other.roaring.high_low_container;
  for (int32_t i = 0, j = 0; i < ra.size; ++i) {
    while (j < rb.size && rb.keys[j] < ra.keys[i]) ++j;
    if (j == rb.size || rb.keys[j] != ra.keys[i]) continue;
    const uint8_t t1 = ra.typecodes[i], t2 = rb.typecodes[j];
    if (t2 != BITSET_CONTAINER_TYPE_CODE ||
        (t1 != BITSET_CONTAINER_TYPE_CODE && t1 != ARRAY_CONTAINER_TYPE_CODE)) {
      acc -= other;
      return;
    }
  }
  CombineInPlace<true>(acc, other);
}

// A conjunction of whole bitmaps (each taken as is or negated) computed chunk by chunk in one
// 8 KB scratch buffer: no copy of the first operand, no intermediate containers, each operand
// read once word by word (sparse and run containers are spread into words first).
struct Term {
  const Roaring* bitmap;
  bool negate;
};

void AndWordsPlain(uint64_t* acc, const uint64_t* x, uint64_t flip) {
  for (int i = 0; i < 1024; ++i) acc[i] &= x[i] ^ flip;
}
__attribute__((target("avx2"))) void AndWordsFast(uint64_t* acc, const uint64_t* x, uint64_t flip) {
  for (int i = 0; i < 1024; ++i) acc[i] &= x[i] ^ flip;
}
int CountPlain(const uint64_t* words) {
  int n = 0;
  for (int i = 0; i < 1024; ++i) n += __builtin_popcountll(words[i]);
  return n;
}
__attribute__((target("popcnt"))) int CountFast(const uint64_t* words) {
  int n = 0;
  for (int i = 0; i < 1024; ++i) n += __builtin_popcountll(words[i]);
  return n;
}

// The words of a container: a dense one as it is, a sparse or run one spread into `buffer`.
const uint64_t* WordsOf(const void* container, uint8_t type, uint64_t* buffer) {
  container = container_unwrap_shared(container, &type);
  if (type == BITSET_CONTAINER_TYPE_CODE) {
    return static_cast<const bitset_container_t*>(container)->array;
  }
  std::memset(buffer, 0, 1024 * sizeof(uint64_t));
  if (type == ARRAY_CONTAINER_TYPE_CODE) {
    const auto* array = static_cast<const array_container_t*>(container);
    for (int32_t k = 0; k < array->cardinality; ++k) {
      const uint16_t v = array->array[k];
      buffer[v >> 6] |= uint64_t{1} << (v & 63);
    }
  } else {
    const auto* runs = static_cast<const run_container_t*>(container);
    for (int32_t k = 0; k < runs->n_runs; ++k) {
      const uint32_t start = runs->runs[k].value, end = start + runs->runs[k].length;
      for (uint32_t v = start; v <= end; ++v) buffer[v >> 6] |= uint64_t{1} << (v & 63);
    }
  }
  return buffer;
}

void DenseConjunction(const std::vector<std::pair<const Roaring*, bool>>& pairs, Roaring* out) {
  static const bool fast = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("popcnt") && __builtin_cpu_supports("avx2");
  }();
  std::vector<Term> terms;
  for (const auto& [bitmap, negate] : pairs) terms.push_back(Term{bitmap, negate});
  const Term* driver = nullptr;  // the positive term with the fewest chunks
  for (const Term& t : terms) {
    if (!t.negate && (driver == nullptr || t.bitmap->roaring.high_low_container.size <
                                               driver->bitmap->roaring.high_low_container.size)) {
      driver = &t;
    }
  }
  Roaring result;
  if (driver == nullptr) {
    *out = std::move(result);
    return;
  }
  const size_t first = static_cast<size_t>(driver - terms.data());
  const roaring_array_t& rd = driver->bitmap->roaring.high_low_container;
  std::vector<int32_t> cursor(terms.size(), 0);
  std::vector<std::pair<const void*, uint8_t>> at(terms.size());
  std::vector<uint64_t> buffers(terms.size() * 1024);
  alignas(64) uint64_t scratch[1024];
  for (int32_t i = 0; i < rd.size; ++i) {
    const uint16_t key = rd.keys[i];
    bool empty = false;
    for (size_t t = 0; t < terms.size(); ++t) {
      const roaring_array_t& r = terms[t].bitmap->roaring.high_low_container;
      int32_t& j = cursor[t];
      while (j < r.size && r.keys[j] < key) ++j;
      at[t] = {nullptr, 0};
      if (j < r.size && r.keys[j] == key) {
        at[t] = {r.containers[j], r.typecodes[j]};
      } else if (!terms[t].negate) {
        empty = true;
      }
    }
    if (empty) continue;
    std::memcpy(scratch, WordsOf(at[first].first, at[first].second, buffers.data()),
                sizeof(scratch));
    for (size_t t = 0; t < terms.size(); ++t) {
      if (t == first || at[t].first == nullptr) continue;
      const uint64_t* w = WordsOf(at[t].first, at[t].second, &buffers[t * 1024]);
      const uint64_t flip = terms[t].negate ? ~uint64_t{0} : 0;
      fast ? AndWordsFast(scratch, w, flip) : AndWordsPlain(scratch, w, flip);
    }
    const int cardinality = fast ? CountFast(scratch) : CountPlain(scratch);
    if (cardinality == 0) continue;
    bitset_container_t view{cardinality, scratch};
    void* c = nullptr;
    uint8_t type = 0;
    if (cardinality <= DEFAULT_MAX_SIZE) {
      c = array_container_from_bitset(&view);
      type = ARRAY_CONTAINER_TYPE_CODE;
    } else {
      bitset_container_t* bits = bitset_container_create();
      std::memcpy(bits->array, scratch, sizeof(scratch));
      bits->cardinality = cardinality;
      c = bits;
      type = BITSET_CONTAINER_TYPE_CODE;
    }
    ra_append(&result.roaring.high_low_container, key, c, type);
  }
  *out = std::move(result);
}

// Where `x` falls among a column's steps: the last step with bound <= x and the first above it.
template <class Step>
std::pair<const Step*, const Step*> Around(const std::vector<Step>& steps, int64_t x) {
  auto above = std::upper_bound(steps.begin(), steps.end(), x,
                                [](int64_t v, const Step& s) { return v < s.bound; });
  const Step* below = above == steps.begin() ? nullptr : &*(above - 1);
  return {below, above == steps.end() ? nullptr : &*above};
}

}  // namespace

// Whether the interval's low (high) end cuts anything off: a per-value column knows its smallest
// and largest value, so "within 30 days" ending today costs nothing at its upper end.
namespace {
template <class Column>
bool CutsLow(const Column& c, int64_t low, bool per_value) {
  if (low == kMin) return false;
  return !per_value || c.values.empty() || low > c.values.begin()->first;
}
template <class Column>
bool CutsHigh(const Column& c, int64_t high, bool per_value) {
  if (high == kMax) return false;
  return !per_value || c.values.empty() || high < c.values.rbegin()->first;
}
}  // namespace

Roaring TagIndex::AtLeast(const Column& c, int64_t x, const Roaring* within) {
  auto restrict = [within](const Roaring& r) { return within == nullptr ? r : r & *within; };
  auto [below, up] = Around(c.steps, x);
  if (below != nullptr && below->bound == x) return restrict(below->at_least);
  const Roaring& floor = below != nullptr ? below->at_least : c.exists;
  if (c.encoding == Encoding::kValues) {
    // x lies between two steps: add the values in [x, up) to the step above, or take the values
    // in [below, x) away from the step below, whichever touches fewer customers.
    const auto first = c.values.lower_bound(x);
    const auto stop = up != nullptr ? c.values.lower_bound(up->bound) : c.values.end();
    const auto start = below != nullptr ? c.values.lower_bound(below->bound) : c.values.begin();
    uint64_t up_mass = 0, down_mass = 0;
    for (auto it = first; it != stop; ++it) up_mass += it->second.count;
    for (auto it = start; it != first; ++it) down_mass += it->second.count;
    std::vector<const Roaring*> parts;
    if (up_mass <= down_mass) {
      for (auto it = first; it != stop; ++it) parts.push_back(&it->second.customers);
      Roaring r = up != nullptr ? restrict(up->at_least) : Roaring();
      if (!parts.empty()) {
        Roaring edge = Union(parts);
        if (within != nullptr) edge &= *within;
        r |= edge;
      }
      return r;
    }
    for (auto it = start; it != first; ++it) parts.push_back(&it->second.customers);
    Roaring r = restrict(floor);
    if (!parts.empty()) r -= Union(parts);
    return r;
  }
  if (c.encoding != Encoding::kSlices) return Roaring();
  // Bit slices: compare only the customers of the one bucket between the two steps.
  Roaring bucket = restrict(floor);
  if (up != nullptr) bucket -= up->at_least;
  Roaring r = NumericCompare(std::move(bucket), c.slices, c.used_slices, pb::GE, x);
  if (up != nullptr) r |= restrict(up->at_least);
  return r;
}

void TagIndex::RestrictInterval(const Column& c, const Interval& interval, Roaring& acc) {
  if (interval.negate) {
    Roaring in = EvaluateInterval(c, Interval{interval.low, interval.high}, &acc);
    AndInPlace(acc, c.exists);
    acc -= in;
    return;
  }
  if (interval.low > interval.high) {
    acc = Roaring();
    return;
  }
  const bool per_value = c.encoding == Encoding::kValues;
  const bool cuts_low = CutsLow(c, interval.low, per_value);
  const bool cuts_high = CutsHigh(c, interval.high, per_value);
  if (cuts_low && cuts_high) {
    // Both ends are steps: both cuts in one pass (or, with sparse containers, the two in turn).
    const auto* low_step = Around(c.steps, interval.low).first;
    const auto* high_step = Around(c.steps, interval.high + 1).first;
    if (low_step != nullptr && low_step->bound == interval.low && high_step != nullptr &&
        high_step->bound == interval.high + 1) {
      AndAndNotInPlace(acc, low_step->at_least, high_step->at_least);
      return;
    }
  }
  if (cuts_low) {
    auto [below, up] = Around(c.steps, interval.low);
    if (below != nullptr && below->bound == interval.low) {
      AndInPlace(acc, below->at_least);  // in place: no copy of the candidates
    } else {
      acc = AtLeast(c, interval.low, &acc);
    }
  } else {
    AndInPlace(acc, c.exists);
  }
  if (!acc.isEmpty() && cuts_high) DropAtLeast(c, interval.high + 1, acc);
}

void TagIndex::DropAtLeast(const Column& c, int64_t x, Roaring& acc) {
  auto [below, up] = Around(c.steps, x);
  if (below != nullptr && below->bound == x) {
    AndNotInPlace(acc, below->at_least);
  } else {
    acc -= AtLeast(c, x, &acc);
  }
}

Roaring TagIndex::EvaluateInterval(const Column& column, const Interval& interval,
                                   const Roaring* within) {
  if (!column.steps.empty()) {
    const bool per_value = column.encoding == Encoding::kValues;
    if (within == nullptr && !interval.negate && interval.low <= interval.high &&
        CutsLow(column, interval.low, per_value)) {
      // The first condition of a rule: start from the step (a copy) rather than from everyone.
      Roaring r = AtLeast(column, interval.low, nullptr);
      if (!r.isEmpty() && CutsHigh(column, interval.high, per_value)) {
        DropAtLeast(column, interval.high + 1, r);
      }
      return r;
    }
    Roaring r = within == nullptr ? column.exists : *within;
    RestrictInterval(column, interval, r);
    return r;
  }
  if (!interval.negate) return InInterval(column, interval.low, interval.high, within);
  Roaring result = within == nullptr ? column.exists : column.exists & *within;
  result -= InInterval(column, interval.low, interval.high, within);
  return result;
}

bool TagIndex::AtLeastContains(const Column& c, int64_t x, uint32_t id) {
  auto [below, up] = Around(c.steps, x);
  if (below != nullptr && below->bound == x) return below->at_least.contains(id);
  if (c.encoding == Encoding::kValues) {
    const auto first = c.values.lower_bound(x);
    const auto stop = up != nullptr ? c.values.lower_bound(up->bound) : c.values.end();
    const auto start = below != nullptr ? c.values.lower_bound(below->bound) : c.values.begin();
    if (std::distance(first, stop) <= std::distance(start, first)) {
      if (up != nullptr && up->at_least.contains(id)) return true;
      for (auto it = first; it != stop; ++it) {
        if (it->second.customers.contains(id)) return true;
      }
      return false;
    }
    if (!(below != nullptr ? below->at_least : c.exists).contains(id)) return false;
    for (auto it = start; it != first; ++it) {
      if (it->second.customers.contains(id)) return false;
    }
    return true;
  }
  return CompareValue(c, id, x) >= 0;
}

bool TagIndex::MatchesInterval(const Column& column, uint32_t id, const Interval& interval) {
  if (!column.exists.contains(id)) return false;
  bool in = false;
  if (interval.low > interval.high) {
    in = false;
  } else if (!column.steps.empty()) {
    // Two probes of steps (plus the few values between a step and an end that is not one).
    const bool per_value = column.encoding == Encoding::kValues;
    in = (!CutsLow(column, interval.low, per_value) || AtLeastContains(column, interval.low, id)) &&
         (!CutsHigh(column, interval.high, per_value) ||
          !AtLeastContains(column, interval.high + 1, id));
  } else if (column.encoding == Encoding::kValues) {
    // Probes the values on the side of the interval with fewer of them.
    const auto first = column.values.lower_bound(interval.low);
    const auto last = column.values.upper_bound(interval.high);
    const size_t inside = static_cast<size_t>(std::distance(first, last));
    if (inside * 2 <= column.values.size()) {
      for (auto it = first; it != last && !in; ++it) in = it->second.customers.contains(id);
    } else {
      in = true;
      for (auto it = column.values.begin(); it != first && in; ++it) {
        in = !it->second.customers.contains(id);
      }
      for (auto it = last; it != column.values.end() && in; ++it) {
        in = !it->second.customers.contains(id);
      }
    }
  } else if (column.encoding == Encoding::kSlices) {
    in = (interval.low == kMin || CompareValue(column, id, interval.low) >= 0) &&
         (interval.high == kMax || CompareValue(column, id, interval.high) <= 0);
  }
  return in != interval.negate;
}

Roaring TagIndex::Evaluate(const pb::Condition& rule, int32_t today) const {
  absl::ReaderMutexLock lock(&mu_);
  return EvaluateLocked(rule, today, 0, nullptr);
}

bool TagIndex::Matches(const pb::Condition& rule, uint32_t dense_id, int32_t today) const {
  absl::ReaderMutexLock lock(&mu_);
  if (!all_customers_.contains(dense_id)) return false;
  return MatchesLocked(rule, dense_id, today, 0);
}

uint64_t TagIndex::EstimateLocked(const pb::Condition& rule, int32_t today, int depth) const {
  const uint64_t everyone = all_customers_.cardinality();
  if (depth > kMaxDepth) return 0;
  auto column_of = [&](const std::string& tag) { return ColumnOf(tag); };
  switch (rule.kind_case()) {
    case pb::Condition::kAll: {
      uint64_t least = everyone;
      for (const auto& c : rule.all().conditions()) {
        least = std::min(least, EstimateLocked(c, today, depth + 1));
      }
      return least;
    }
    case pb::Condition::kAny: {
      uint64_t sum = 0;
      for (const auto& c : rule.any().conditions()) sum += EstimateLocked(c, today, depth + 1);
      return std::min(sum, everyone);
    }
    case pb::Condition::kNot:
      return everyone;  // rarely selective; evaluated last
    case pb::Condition::kCompare:
    case pb::Condition::kRange:
    case pb::Condition::kRelativeDate: {
      const std::string& tag = rule.kind_case() == pb::Condition::kCompare ? rule.compare().tag()
                               : rule.kind_case() == pb::Condition::kRange
                                   ? rule.range().tag()
                                   : rule.relative_date().tag();
      const Column* c = column_of(tag);
      if (c == nullptr) return 0;
      if (c->encoding == Encoding::kLabels) {
        if (rule.kind_case() != pb::Condition::kCompare) return 0;
        absl::StatusOr<Value> v = FromProto(c->schema, rule.compare().value(), "");
        if (!v.ok() || v->labels.size() != 1) return 0;
        auto it = c->labels.find(v->labels[0]);
        const uint64_t n = it == c->labels.end() ? 0 : it->second.cardinality();
        return rule.compare().op() == pb::NE ? c->exists.cardinality() - n : n;
      }
      std::optional<Interval> interval = NumericInterval(rule, c->schema, today);
      if (!interval) return 0;
      if (c->encoding == Encoding::kSlices) {
        const uint64_t total = c->exists.cardinality();
        if (c->steps.empty() || interval->low > interval->high) return total;  // unknown: all
        // From the steps around the ends: an overestimate, exact when the ends are steps.
        uint64_t in = total;
        if (interval->low != kMin) {
          const auto* below = Around(c->steps, interval->low).first;
          if (below != nullptr) in = below->at_least.cardinality();
        }
        if (interval->high != kMax) {
          const auto* up = Around(c->steps, interval->high).second;
          if (up != nullptr) in -= std::min(in, up->at_least.cardinality());
        }
        return interval->negate ? total - std::min(in, total) : in;
      }
      uint64_t in = 0, total = 0;
      for (const auto& [number, bitmap] : c->values) {
        total += bitmap.count;
        if (number >= interval->low && number <= interval->high) in += bitmap.count;
      }
      return interval->negate ? total - in : in;
    }
    case pb::Condition::kIn: {
      const Column* c = column_of(rule.in().tag());
      return c == nullptr ? 0 : c->exists.cardinality();
    }
    case pb::Condition::kExists: {
      const Column* c = column_of(rule.exists().tag());
      return c == nullptr ? 0 : c->exists.cardinality();
    }
    default:
      return 0;
  }
}

Roaring TagIndex::EvaluateLocked(const pb::Condition& rule, int32_t today, int depth,
                                 const Roaring* within) const {
  if (depth > kMaxDepth) return Roaring();
  auto restrict = [within](const Roaring& r) { return within == nullptr ? r : r & *within; };
  auto label_bitmap = [&](const Column& c, const std::string& label) {
    auto it = c.labels.find(label);
    return it == c.labels.end() ? Roaring() : restrict(it->second);
  };
  switch (rule.kind_case()) {
    case pb::Condition::kAll: {
      const int n = rule.all().conditions_size();
      if (n == 0) return Roaring();
      // The most selective condition first; each later one only looks at what is left.
      std::vector<std::pair<uint64_t, int>> order;
      order.reserve(n);
      for (int i = 0; i < n; ++i) {
        order.emplace_back(EstimateLocked(rule.all().conditions(i), today, depth + 1), i);
      }
      std::stable_sort(order.begin(), order.end());
      // The conditions that are whole bitmaps (ranges between steps, labels, exists) in one
      // dense pass when their containers allow; the others then restrict what is left.
      std::vector<std::pair<const Roaring*, bool>> terms;
      std::vector<bool> done(n, false);
      if (within == nullptr && n > 1) {
        for (int i = 0; i < n; ++i) {
          if (AsTerms(rule.all().conditions(i), today, terms)) done[i] = true;
        }
      }
      Roaring result;
      int next = 0;
      if (std::count(done.begin(), done.end(), true) >= 2) {
        DenseConjunction(terms, &result);
      } else {
        std::fill(done.begin(), done.end(), false);
        result = EvaluateLocked(rule.all().conditions(order[0].second), today, depth + 1, within);
        next = 1;
      }
      for (int k = next; k < n && !result.isEmpty(); ++k) {
        if (!done[order[k].second]) {
          RestrictLocked(rule.all().conditions(order[k].second), today, depth + 1, result);
        }
      }
      return result;
    }
    case pb::Condition::kAny: {
      Roaring result;
      for (const auto& c : rule.any().conditions()) {
        result |= EvaluateLocked(c, today, depth + 1, within);
      }
      return result;
    }
    case pb::Condition::kNot: {
      Roaring result = restrict(all_customers_);
      result -= EvaluateLocked(rule.not_(), today, depth + 1, within);
      return result;
    }
    case pb::Condition::kCompare:
    case pb::Condition::kRange:
    case pb::Condition::kRelativeDate: {
      const std::string& tag = rule.kind_case() == pb::Condition::kCompare ? rule.compare().tag()
                               : rule.kind_case() == pb::Condition::kRange
                                   ? rule.range().tag()
                                   : rule.relative_date().tag();
      const Column* c = ColumnOf(tag);
      if (c == nullptr) return Roaring();
      if (c->encoding == Encoding::kLabels) {
        if (rule.kind_case() != pb::Condition::kCompare) return Roaring();
        absl::StatusOr<Value> v = FromProto(c->schema, rule.compare().value(), "");
        if (!v.ok() || v->labels.size() != 1) return Roaring();
        if (rule.compare().op() == pb::EQ) return label_bitmap(*c, v->labels[0]);
        if (rule.compare().op() == pb::NE) {
          Roaring result = restrict(c->exists);
          result -= label_bitmap(*c, v->labels[0]);
          return result;
        }
        return Roaring();
      }
      std::optional<Interval> interval = NumericInterval(rule, c->schema, today);
      return interval ? EvaluateInterval(*c, *interval, within) : Roaring();
    }
    case pb::Condition::kIn: {
      const Column* c = ColumnOf(rule.in().tag());
      if (c == nullptr) return Roaring();
      Roaring result;
      for (const auto& value : rule.in().values()) {
        absl::StatusOr<Value> v = FromProto(c->schema, value, "");
        if (!v.ok()) continue;
        if (c->schema.numeric()) {
          result |= InInterval(*c, v->number, v->number, within);
        } else {
          for (const auto& label : v->labels) result |= label_bitmap(*c, label);
        }
      }
      return result;
    }
    case pb::Condition::kExists: {
      const Column* c = ColumnOf(rule.exists().tag());
      return c == nullptr ? Roaring() : restrict(c->exists);
    }
    default:
      return Roaring();
  }
}

bool TagIndex::AsTerms(const pb::Condition& rule, int32_t today,
                       std::vector<std::pair<const Roaring*, bool>>& terms) const {
  switch (rule.kind_case()) {
    case pb::Condition::kCompare:
    case pb::Condition::kRange:
    case pb::Condition::kRelativeDate: {
      const std::string& tag = rule.kind_case() == pb::Condition::kCompare ? rule.compare().tag()
                               : rule.kind_case() == pb::Condition::kRange
                                   ? rule.range().tag()
                                   : rule.relative_date().tag();
      const Column* c = ColumnOf(tag);
      if (c == nullptr) return false;
      if (c->encoding == Encoding::kLabels) {
        if (rule.kind_case() != pb::Condition::kCompare) return false;
        const pb::Operator op = rule.compare().op();
        absl::StatusOr<Value> v = FromProto(c->schema, rule.compare().value(), "");
        if ((op != pb::EQ && op != pb::NE) || !v.ok() || v->labels.size() != 1) return false;
        auto it = c->labels.find(v->labels[0]);
        if (it == c->labels.end()) return false;
        if (op == pb::NE) terms.emplace_back(&c->exists, false);
        terms.emplace_back(&it->second, op == pb::NE);
        return true;
      }
      if (c->steps.empty()) return false;
      std::optional<Interval> interval = NumericInterval(rule, c->schema, today);
      if (!interval || interval->negate || interval->low > interval->high) return false;
      const bool per_value = c->encoding == Encoding::kValues;
      const Column::Step* low = nullptr;
      const Column::Step* high = nullptr;
      if (CutsLow(*c, interval->low, per_value)) {
        low = Around(c->steps, interval->low).first;
        if (low == nullptr || low->bound != interval->low) return false;
      }
      if (CutsHigh(*c, interval->high, per_value)) {
        high = Around(c->steps, interval->high + 1).first;
        if (high == nullptr || high->bound != interval->high + 1) return false;
      }
      terms.emplace_back(low != nullptr ? &low->at_least : &c->exists, false);
      if (high != nullptr) terms.emplace_back(&high->at_least, true);
      return true;
    }
    case pb::Condition::kExists: {
      const Column* c = ColumnOf(rule.exists().tag());
      if (c == nullptr) return false;
      terms.emplace_back(&c->exists, false);
      return true;
    }
    default:
      return false;
  }
}

void TagIndex::RestrictLocked(const pb::Condition& rule, int32_t today, int depth,
                              Roaring& acc) const {
  if (depth > kMaxDepth) {
    acc = Roaring();
    return;
  }
  switch (rule.kind_case()) {
    case pb::Condition::kAll:
      if (rule.all().conditions().empty()) {
        acc = Roaring();
        return;
      }
      for (const auto& c : rule.all().conditions()) {
        if (acc.isEmpty()) return;
        RestrictLocked(c, today, depth + 1, acc);
      }
      return;
    case pb::Condition::kCompare:
    case pb::Condition::kRange:
    case pb::Condition::kRelativeDate: {
      const std::string& tag = rule.kind_case() == pb::Condition::kCompare ? rule.compare().tag()
                               : rule.kind_case() == pb::Condition::kRange
                                   ? rule.range().tag()
                                   : rule.relative_date().tag();
      const Column* c = ColumnOf(tag);
      if (c == nullptr) {
        acc = Roaring();
        return;
      }
      if (c->encoding == Encoding::kLabels) {
        if (rule.kind_case() != pb::Condition::kCompare) break;
        const pb::Operator op = rule.compare().op();
        absl::StatusOr<Value> v = FromProto(c->schema, rule.compare().value(), "");
        if ((op != pb::EQ && op != pb::NE) || !v.ok() || v->labels.size() != 1) break;
        auto it = c->labels.find(v->labels[0]);
        if (op == pb::EQ) {
          if (it == c->labels.end()) {
            acc = Roaring();
          } else {
            AndInPlace(acc, it->second);
          }
        } else {
          AndInPlace(acc, c->exists);
          if (it != c->labels.end()) AndNotInPlace(acc, it->second);
        }
        return;
      }
      if (c->steps.empty()) break;
      std::optional<Interval> interval = NumericInterval(rule, c->schema, today);
      if (!interval) {
        acc = Roaring();
        return;
      }
      RestrictInterval(*c, *interval, acc);
      return;
    }
    case pb::Condition::kExists: {
      const Column* c = ColumnOf(rule.exists().tag());
      if (c == nullptr) {
        acc = Roaring();
      } else {
        AndInPlace(acc, c->exists);
      }
      return;
    }
    default:
      break;
  }
  acc = EvaluateLocked(rule, today, depth, &acc);
}

bool TagIndex::MatchesLocked(const pb::Condition& rule, uint32_t id, int32_t today,
                             int depth) const {
  if (depth > kMaxDepth) return false;
  auto has_label = [id](const Column& c, const std::string& label) {
    auto it = c.labels.find(label);
    return it != c.labels.end() && it->second.contains(id);
  };
  switch (rule.kind_case()) {
    case pb::Condition::kAll:
      if (rule.all().conditions().empty()) return false;
      for (const auto& c : rule.all().conditions()) {
        if (!MatchesLocked(c, id, today, depth + 1)) return false;
      }
      return true;
    case pb::Condition::kAny:
      for (const auto& c : rule.any().conditions()) {
        if (MatchesLocked(c, id, today, depth + 1)) return true;
      }
      return false;
    case pb::Condition::kNot:
      return !MatchesLocked(rule.not_(), id, today, depth + 1);
    case pb::Condition::kCompare:
    case pb::Condition::kRange:
    case pb::Condition::kRelativeDate: {
      const std::string& tag = rule.kind_case() == pb::Condition::kCompare ? rule.compare().tag()
                               : rule.kind_case() == pb::Condition::kRange
                                   ? rule.range().tag()
                                   : rule.relative_date().tag();
      const Column* c = ColumnOf(tag);
      if (c == nullptr || !c->exists.contains(id)) return false;
      if (c->encoding == Encoding::kLabels) {
        if (rule.kind_case() != pb::Condition::kCompare) return false;
        absl::StatusOr<Value> v = FromProto(c->schema, rule.compare().value(), "");
        if (!v.ok() || v->labels.size() != 1) return false;
        if (rule.compare().op() == pb::EQ) return has_label(*c, v->labels[0]);
        if (rule.compare().op() == pb::NE) return !has_label(*c, v->labels[0]);
        return false;
      }
      std::optional<Interval> interval = NumericInterval(rule, c->schema, today);
      return interval && MatchesInterval(*c, id, *interval);
    }
    case pb::Condition::kIn: {
      const Column* c = ColumnOf(rule.in().tag());
      if (c == nullptr || !c->exists.contains(id)) return false;
      for (const auto& value : rule.in().values()) {
        absl::StatusOr<Value> v = FromProto(c->schema, value, "");
        if (!v.ok()) continue;
        if (c->schema.numeric()) {
          if (MatchesInterval(*c, id, Interval{v->number, v->number})) return true;
        } else {
          for (const auto& label : v->labels) {
            if (has_label(*c, label)) return true;
          }
        }
      }
      return false;
    }
    case pb::Condition::kExists: {
      const Column* c = ColumnOf(rule.exists().tag());
      return c != nullptr && c->exists.contains(id);
    }
    default:
      return false;
  }
}

// ---- Bulk loading ------------------------------------------------------------------------------

namespace {

// Appends ascending ids to a bitmap in batches.
class Appender {
 public:
  explicit Appender(Roaring* target) : target_(target) { buffer_.reserve(kBatch); }
  ~Appender() { Flush(); }
  void Add(uint32_t id) {
    buffer_.push_back(id);
    if (buffer_.size() == kBatch) Flush();
  }
  void Flush() {
    if (!buffer_.empty()) target_->addMany(buffer_.size(), buffer_.data());
    buffer_.clear();
  }

 private:
  static constexpr size_t kBatch = 8192;
  Roaring* target_;
  std::vector<uint32_t> buffer_;
};

}  // namespace

void TagIndex::LoadNumeric(std::string_view tag, const std::vector<uint32_t>& dense_ids,
                           const std::vector<int64_t>& numbers) {
  absl::MutexLock lock(&mu_);
  auto it = columns_.find(absl::string_view(tag.data(), tag.size()));
  if (it == columns_.end() || !it->second->schema.numeric()) return;
  Column& column = *it->second;
  if (column.encoding == Encoding::kValues) {
    std::map<int64_t, std::vector<uint32_t>> by_value;
    for (size_t k = 0; k < dense_ids.size(); ++k) {
      by_value[numbers[k]].push_back(dense_ids[k]);
      if (by_value.size() > kMaxValueBitmaps) break;
    }
    if (by_value.size() <= kMaxValueBitmaps) {
      column.exists.addMany(dense_ids.size(), dense_ids.data());
      for (auto& [number, ids] : by_value) {
        ValueBitmap& bitmap = column.values[number];
        bitmap.customers.addMany(ids.size(), ids.data());
        bitmap.count = bitmap.customers.cardinality();
      }
      BuildColumnSteps(column, Today());
      return;
    }
    ConvertToSlices(column);  // a wide domain after all
  }
  std::vector<std::unique_ptr<Appender>> slices;
  for (auto& slice : column.slices) slices.push_back(std::make_unique<Appender>(&slice));
  Appender exists(&column.exists);
  uint64_t used = 0;
  for (size_t k = 0; k < dense_ids.size(); ++k) {
    uint64_t u = SliceEncode(numbers[k]);
    used |= u;
    exists.Add(dense_ids[k]);
    while (u != 0) {
      const int bit = __builtin_ctzll(u);
      slices[bit]->Add(dense_ids[k]);
      u &= u - 1;
    }
  }
  column.used_slices |= used;
  for (auto& slice : slices) slice->Flush();
  exists.Flush();
  BuildColumnSteps(column, Today(), &dense_ids, &numbers);
}

void TagIndex::LoadLabels(std::string_view tag, const std::vector<uint32_t>& dense_ids,
                          const std::vector<uint16_t>& label_of,
                          const std::vector<std::string>& labels) {
  absl::MutexLock lock(&mu_);
  auto it = columns_.find(absl::string_view(tag.data(), tag.size()));
  if (it == columns_.end() || it->second->schema.numeric()) return;
  Column& column = *it->second;
  std::vector<std::unique_ptr<Appender>> per_label;
  for (const auto& label : labels)
    per_label.push_back(std::make_unique<Appender>(&column.labels[label]));
  Appender exists(&column.exists);
  for (size_t k = 0; k < dense_ids.size(); ++k) {
    exists.Add(dense_ids[k]);
    per_label[label_of[k]]->Add(dense_ids[k]);
  }
}

// ---- Steps -------------------------------------------------------------------------------------

void TagIndex::BuildColumnSteps(Column& c, int32_t today, const std::vector<uint32_t>* dense_ids,
                                const std::vector<int64_t>* numbers) {
  c.steps.clear();
  if (!c.schema.numeric() || c.encoding == Encoding::kLabels) return;
  std::vector<int64_t> bounds;
  if (c.schema.type == pb::TAG_TYPE_DATE) {
    // Rules on dates are mostly relative to today ("within 30 days", "more than 90 days ago"):
    // steps at the usual distances. They stay exact as days pass (bounds are absolute days);
    // BuildSteps re-anchors them.
    for (int days : {-1, 0, 1, 2, 3, 7, 14, 30, 60, 90, 180, 365, 730}) {
      bounds.push_back(int64_t{today} - days);
    }
  } else if (c.encoding == Encoding::kValues && c.schema.type == pb::TAG_TYPE_INT) {
    if (c.values.size() <= kMaxValueSteps) {
      for (auto it = c.values.begin(); it != c.values.end(); ++it) {
        if (it != c.values.begin()) bounds.push_back(it->first);
      }
    } else {
      uint64_t total = 0, seen = 0;
      for (const auto& [number, bitmap] : c.values) total += bitmap.count;
      size_t next = 1;
      for (const auto& [number, bitmap] : c.values) {
        if (next < kSpreadSteps && seen >= total * next / kSpreadSteps) {
          bounds.push_back(number);
          while (next < kSpreadSteps && seen >= total * next / kSpreadSteps) ++next;
        }
        seen += bitmap.count;
      }
    }
  } else {
    // Amounts (and wide ints): thresholds are round numbers (AUM >= 50,000 yuan); 1 and 5 x 10^k
    // (2 x 10^k too would cost another ~1.25 MB per 10M customers and decade).
    for (int64_t p = c.schema.type == pb::TAG_TYPE_DECIMAL_FEN ? 100 : 1;
         p <= int64_t{1'000'000'000'000'000}; p *= 10) {
      for (int64_t m : {1, 5}) bounds.push_back(p * m);
    }
  }
  std::sort(bounds.begin(), bounds.end());
  bounds.erase(std::unique(bounds.begin(), bounds.end()), bounds.end());
  if (bounds.empty()) return;

  std::vector<Column::Step> built(bounds.size());
  for (size_t k = 0; k < bounds.size(); ++k) built[k].bound = bounds[k];
  if (numbers != nullptr) {
    // One pass: each customer into the bucket of how many bounds it reaches, then suffix unions.
    std::vector<Roaring> buckets(bounds.size() + 1);
    {
      std::vector<std::unique_ptr<Appender>> appenders;
      for (auto& b : buckets) appenders.push_back(std::make_unique<Appender>(&b));
      for (size_t i = 0; i < numbers->size(); ++i) {
        const size_t j = static_cast<size_t>(
            std::upper_bound(bounds.begin(), bounds.end(), (*numbers)[i]) - bounds.begin());
        if (j > 0) appenders[j]->Add((*dense_ids)[i]);
      }
    }
    Roaring acc;
    for (size_t k = bounds.size(); k-- > 0;) {
      acc |= buckets[k + 1];
      built[k].at_least = acc;
    }
  } else if (c.encoding == Encoding::kValues) {
    Roaring acc;
    auto it = c.values.end();
    for (size_t k = bounds.size(); k-- > 0;) {
      std::vector<const Roaring*> parts{&acc};
      while (it != c.values.begin() && std::prev(it)->first >= bounds[k]) {
        --it;
        parts.push_back(&it->second.customers);
      }
      if (parts.size() > 1) acc = Roaring::fastunion(parts.size(), parts.data());
      built[k].at_least = acc;
    }
  } else {
    for (auto& step : built) {
      step.at_least = NumericCompare(c.exists, c.slices, c.used_slices, pb::GE, step.bound);
    }
  }
  // A step holding everyone with a value is the column itself; of the empty ones (above every
  // value) the lowest is enough to say so.
  const uint64_t everyone = c.exists.cardinality();
  bool empty_kept = false;
  for (auto& step : built) {
    const uint64_t n = step.at_least.cardinality();
    if (n == everyone && n != 0) continue;
    if (n == 0) {
      if (empty_kept) continue;
      empty_kept = true;
    }
    step.at_least.runOptimize();
    step.at_least.shrinkToFit();
    c.steps.push_back(std::move(step));
  }
}

void TagIndex::BuildSteps(int32_t today) {
  absl::MutexLock lock(&mu_);
  for (auto& [name, column] : columns_) BuildColumnSteps(*column, today);
}

// ---- Housekeeping ------------------------------------------------------------------------------

bool TagIndex::PerValue(std::string_view tag) const {
  absl::ReaderMutexLock lock(&mu_);
  const Column* column = ColumnOf(tag);
  return column != nullptr && column->encoding == Encoding::kValues;
}

void TagIndex::Optimize() {
  absl::MutexLock lock(&mu_);
  const int32_t today = Today();
  for (auto& [name, column] : columns_) {
    if (column->steps.empty()) BuildColumnSteps(*column, today);
  }
  auto optimize = [](Roaring& r) {
    r.runOptimize();
    r.shrinkToFit();
  };
  for (auto& [name, column] : columns_) {
    optimize(column->exists);
    for (auto& [label, bitmap] : column->labels) optimize(bitmap);
    for (auto& [number, bitmap] : column->values) optimize(bitmap.customers);
    for (auto& slice : column->slices) optimize(slice);
  }
  for (auto& r : customers_by_org_) optimize(r);
  optimize(all_customers_);
}

size_t TagIndex::MemoryBytes() const {
  absl::ReaderMutexLock lock(&mu_);
  size_t bytes = directory_.MemoryBytes() + home_org_.capacity() * sizeof(uint16_t) +
                 all_customers_.getSizeInBytes(false);
  for (const auto& r : customers_by_org_) bytes += r.getSizeInBytes(false);
  for (const auto& [name, column] : columns_) {
    bytes += column->exists.getSizeInBytes(false);
    for (const auto& [label, bitmap] : column->labels) bytes += bitmap.getSizeInBytes(false);
    for (const auto& [number, bitmap] : column->values) {
      bytes += bitmap.customers.getSizeInBytes(false) + sizeof(bitmap) + 48;  // + the map node
    }
    for (const auto& slice : column->slices) bytes += slice.getSizeInBytes(false);
    for (const auto& step : column->steps) bytes += step.at_least.getSizeInBytes(false);
  }
  return bytes;
}

}  // namespace mkt::segments
